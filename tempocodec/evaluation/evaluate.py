"""How faithful a compressed store is to its original granule: metrics, plots and a short report (numpy only).

:func:`evaluate_store` streams over the band in blocks of :data:`BLOCK_STEPS` mirror steps × :data:`BLOCK_XTRACK`
cross-track pixels (one shard of the store), reading the original L1B radiance and the store's decoded radiance
block by block, so two copies of a large granule are never in memory at once.

Definitions (radiance ``L`` of the original, ``L̂`` decoded, photons/s/cm^2/nm/sr):

- a value is *used* when the original is valid (:func:`tempocodec.prepare.normalize.is_valid`) and ``L ≥ 1`` (the
  normalization's floor); used values whose decoded value is invalid are counted in ``decoded_fill`` (it must
  be 0) and left out of every other metric;
- error ``e = L̂ − L``, relative error ``r = e / L``;
- per channel: median signal ``L``, median and 99th percentile of ``|e|``, median ``|r|``, relative RMSE
  ``sqrt(mean r²)``, RMSE ``sqrt(mean e²)``, median instrument noise (the original's ``radiance_error``) and
  the noise ratio RMSE / median noise;
- per pixel (spectrum): relative RMSE ``sqrt(mean_λ r²)`` (the paper's "relative RMSE per spectrum", as the
  training summary computes it) and spectral angle ``∠(L, L̂)`` in mrad;
- scalars: mean and median of the per-spectrum relative RMSE, 99th percentile and maximum of ``|r|`` over all
  used values, maximum ``|e|``, median and 99th percentile of the spectral angle.

Medians and percentiles over pixels per channel come from per-channel histograms of ``log10`` values with
:data:`BINS_PER_DEX` bins per decade, interpolated within the bin (relative precision better than 2.3 %); the
per-pixel quantities and every mean are exact.

When the band covers 405–465 nm, a DOAS fit of the NO₂ slant column (:mod:`tempocodec.science.doas`) runs on both
copies; when the L2 truth files of the granule lie beside the original, the products read from the latents
(:func:`tempocodec.runtime.query.query_store`) are scored against them (R²) on the latent grid.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import xarray as xr

from tempocodec.atomic import Replaceable, atomic_dir, is_empty_dir
from tempocodec.science.doas import DoasSetup, doas_setup, fit_doas
from tempocodec.errors import TempocodecError
from tempocodec.granule.l1b import open_l1b
from tempocodec.granule.l2 import l2_files_beside, l2_truth, read_l2
from tempocodec.prepare.normalize import is_valid
from tempocodec.runtime.probes import PRODUCTS, r2_rmse_bias
from tempocodec.progress import progress_bar
from tempocodec.science.spectroscopy import BAND_GRIDS, nominal_wavelength
from tempocodec.runtime.store import open_store, store_info
from tempocodec.prepare.tiles import pool_to_latent

BLOCK_STEPS = 64
BLOCK_XTRACK = 512
PIXELS_PER_PASS = 4096
BINS_PER_DEX = 100
MIN_SIGNAL = 1.0
EXAMPLE_QUANTILES = (("median", 50.0), ("99th percentile", 99.0), ("worst", 100.0))
REPORT_TITLE = "# Evaluation of "

# --------------------------------------------------------------------------------------------------- metrics


class _LogHistogram:
    """Per-channel counts of ``log10`` values in bins of ``1/bins_per_dex`` decade over ``[10**low, 10**high)``,
    plus an underflow bin (values below ``10**low``, zero included) and an overflow bin.

    ``counts`` is ``(n_bins, C)``, bin-major, so that one spectrum's values fall close together in memory.
    """

    def __init__(self, n_channels: int, low: float, high: float, bins_per_dex: int = BINS_PER_DEX) -> None:
        self.low, self.high, self.bins_per_dex = low, high, bins_per_dex
        self.n_bins = round((high - low) * bins_per_dex) + 2
        self.counts = np.zeros((self.n_bins, n_channels), np.int64)

    def add_log10(self, log10_values: np.ndarray, mask: np.ndarray) -> None:
        """Count values given as their ``log10`` ``(P, C)`` (-inf for zero, never NaN) where ``mask``."""
        position = (log10_values - np.float32(self.low)) * np.float32(self.bins_per_dex)
        position += np.float32(1.0)
        np.clip(position, 0, self.n_bins - 1, out=position)
        index = position.astype(np.int64)  # floor, as position >= 0
        index *= log10_values.shape[1]
        index += np.arange(log10_values.shape[1], dtype=np.int64)
        index[~mask] = self.counts.size  # one extra bin for the values left out
        self.counts += np.bincount(index.ravel(), minlength=self.counts.size + 1)[:-1].reshape(self.counts.shape)

    def quantile(self, q: float, counts: np.ndarray | None = None) -> np.ndarray:
        """The ``q``-quantile (0–1) of each column of ``counts`` ``(n_bins, K)`` (default: each channel), like
        ``np.quantile``'s linear rule up to the bin width; NaN for an empty column, 0 in the underflow bin,
        ``10**high`` in the overflow bin."""
        counts = (self.counts if counts is None else counts.reshape(self.n_bins, -1)).T
        total = counts.sum(axis=1)
        rank = q * np.maximum(total - 1, 0)
        cumulative = np.cumsum(counts, axis=1)
        bins = np.argmax(cumulative > rank[:, None], axis=1)
        rows = np.arange(counts.shape[0])
        inside = counts[rows, bins]
        frac = (rank - (cumulative[rows, bins] - inside) + 0.5) / np.maximum(inside, 1)
        value = 10.0 ** (self.low + (bins - 1 + frac) / self.bins_per_dex)
        value = np.where(bins == 0, 0.0, np.where(bins == self.n_bins - 1, 10.0**self.high, value))
        return np.where(total > 0, value, np.nan)


@dataclass(frozen=True)
class Metrics:
    """Reconstruction metrics of one band (see the module docstring for the definitions).

    Per channel, float64 ``(C,)``: ``wavelength`` (nm), ``median_signal``, ``median_abs_error``, ``p99_abs_error``,
    ``rmse`` (radiance units), ``median_relative_error``, ``relative_rmse`` (fractions), ``median_noise``
    (radiance units; None without ``radiance_error``). Per pixel, float64 ``(mirror_step, xtrack)``, NaN where no
    value is used: ``relative_rmse_map`` (fraction), ``spectral_angle_map`` (mrad). Counts: ``values`` used,
    ``pixels`` with at least one used value, ``decoded_fill`` (used values decoded as fill or non-finite).
    """

    wavelength: np.ndarray
    median_signal: np.ndarray
    median_abs_error: np.ndarray
    p99_abs_error: np.ndarray
    rmse: np.ndarray
    median_relative_error: np.ndarray
    relative_rmse: np.ndarray
    median_noise: np.ndarray | None
    relative_rmse_map: np.ndarray
    spectral_angle_map: np.ndarray
    values: int
    pixels: int
    decoded_fill: int
    p99_relative_error: float
    max_relative_error: float
    max_abs_error: float

    @property
    def mean_relative_rmse(self) -> float:
        """Mean over pixels of the relative RMSE per spectrum (fraction)."""
        return float(np.nanmean(self.relative_rmse_map))

    @property
    def median_relative_rmse(self) -> float:
        """Median over pixels of the relative RMSE per spectrum (fraction)."""
        return float(np.nanmedian(self.relative_rmse_map))

    @property
    def spectral_angle_median(self) -> float:
        """Median spectral angle over pixels, mrad."""
        return float(np.nanmedian(self.spectral_angle_map))

    @property
    def spectral_angle_p99(self) -> float:
        """99th percentile of the spectral angle over pixels, mrad."""
        return float(np.nanpercentile(self.spectral_angle_map, 99))

    @property
    def noise_ratio(self) -> np.ndarray | None:
        """Per channel RMSE over the median instrument noise ``(C,)`` (None without noise)."""
        if self.median_noise is None:
            return None
        with np.errstate(divide="ignore", invalid="ignore"):
            return self.rmse / self.median_noise

    @property
    def worst_channel(self) -> int:
        """Index of the channel with the largest relative RMSE."""
        return int(np.nanargmax(self.relative_rmse))


class MetricsAccumulator:
    """Streams blocks of one band into :class:`Metrics`: ``add`` each block, then ``result``."""

    def __init__(self, shape: tuple[int, int], n_channels: int) -> None:
        """``shape``: the band's ``(mirror_step, xtrack)``; ``n_channels``: spectral channels."""
        c = n_channels
        self.shape, self.n_channels = shape, c
        self.signal = _LogHistogram(c, 0.0, 30.0)  # valid radiance is at most 1e30
        self.abs_error = _LogHistogram(c, 0.0, 30.0)
        self.rel_error = _LogHistogram(c, -10.0, 6.0)
        self.noise = _LogHistogram(c, 0.0, 30.0)
        self.has_noise = False
        self.sum_sq_error = np.zeros(c)
        self.sum_sq_rel = np.zeros(c)
        self.count = np.zeros(c, np.int64)
        self.rrmse_map = np.full(shape, np.nan)
        self.angle_map = np.full(shape, np.nan)
        self.decoded_fill = 0
        self.max_rel = 0.0
        self.max_abs = 0.0

    def add(self, steps: slice, xtrack: slice, original: np.ndarray, decoded: np.ndarray,
            noise: np.ndarray | None = None) -> None:
        """One block: ``original``, ``decoded`` (and the original's ``radiance_error`` ``noise``) float
        ``(s, x, C)`` covering ``[steps, xtrack]`` of the band."""
        s, x, c = original.shape
        if decoded.shape != original.shape or (noise is not None and noise.shape != original.shape):
            raise TempocodecError(f"evaluate: block shapes differ: original {original.shape}, decoded {decoded.shape}")
        flat = [None if a is None else a.reshape(s * x, c) for a in (original, decoded, noise)]
        rrmse, angle = np.empty(s * x), np.empty(s * x)
        for start in range(0, s * x, PIXELS_PER_PASS):
            part = slice(start, start + PIXELS_PER_PASS)
            rrmse[part], angle[part] = self._add_pixels(*(None if a is None else a[part] for a in flat))
        self.rrmse_map[steps, xtrack] = rrmse.reshape(s, x)
        self.angle_map[steps, xtrack] = angle.reshape(s, x)

    def _add_pixels(self, original: np.ndarray, decoded: np.ndarray,
                    noise: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        """Accumulate ``(P, C)`` spectra; return their relative RMSE and spectral angle (mrad), ``(P,)`` each."""
        original = original.astype(np.float32, copy=False)
        decoded = decoded.astype(np.float32, copy=False)
        used = is_valid(original) & (original >= MIN_SIGNAL)
        decoded_ok = is_valid(decoded)
        self.decoded_fill += int(np.count_nonzero(used & ~decoded_ok))
        used &= decoded_ok
        o = np.where(used, original, np.float32(0))
        d = np.where(used, decoded, np.float32(0))
        error = d - o
        rel = error / np.where(used, o, np.float32(1))
        abs_error = np.abs(error)
        with np.errstate(divide="ignore"):
            log_signal = np.log10(np.where(used, o, np.float32(1)))
            log_error = np.log10(abs_error)
        self.signal.add_log10(log_signal, used)
        self.abs_error.add_log10(log_error, used)
        self.rel_error.add_log10(log_error - log_signal, used)
        if noise is not None:
            self.has_noise = True
            noise_used = used & is_valid(noise) & (noise > 0)
            self.noise.add_log10(np.log10(np.where(noise_used, noise, np.float32(1)), dtype=np.float32), noise_used)
        rel_sq = np.square(rel)
        self.sum_sq_error += np.sum(np.square(error), axis=0, dtype=np.float64)
        self.sum_sq_rel += np.sum(rel_sq, axis=0, dtype=np.float64)
        self.count += used.sum(axis=0)
        self.max_rel = max(self.max_rel, float(np.abs(rel).max(initial=0.0)))
        self.max_abs = max(self.max_abs, float(abs_error.max(initial=0.0)))
        n = used.sum(axis=1)
        dots = [np.einsum("pc,pc->p", a, b, dtype=np.float64) for a, b in ((o, d), (o, o), (d, d))]
        with np.errstate(divide="ignore", invalid="ignore"):
            rrmse = np.sqrt(np.sum(rel_sq, axis=1, dtype=np.float64) / n)
            angle = 1e3 * np.arccos(np.clip(dots[0] / np.sqrt(dots[1] * dots[2]), -1.0, 1.0))
        return np.where(n > 0, rrmse, np.nan), np.where(n > 0, angle, np.nan)

    def result(self, wavelength: np.ndarray) -> Metrics:
        """The metrics so far; ``wavelength`` ``(C,)`` nm labels the channels."""
        if not self.count.any():
            raise TempocodecError("evaluate: no valid radiance value to compare")
        with np.errstate(divide="ignore", invalid="ignore"):
            rmse = np.sqrt(self.sum_sq_error / self.count)
            relative_rmse = np.sqrt(self.sum_sq_rel / self.count)
        return Metrics(
            wavelength=np.asarray(wavelength, np.float64),
            median_signal=self.signal.quantile(0.5),
            median_abs_error=self.abs_error.quantile(0.5),
            p99_abs_error=self.abs_error.quantile(0.99),
            rmse=rmse,
            median_relative_error=self.rel_error.quantile(0.5),
            relative_rmse=relative_rmse,
            median_noise=self.noise.quantile(0.5) if self.has_noise else None,
            relative_rmse_map=self.rrmse_map,
            spectral_angle_map=self.angle_map,
            values=int(self.count.sum()),
            pixels=int(np.count_nonzero(np.isfinite(self.rrmse_map))),
            decoded_fill=self.decoded_fill,
            p99_relative_error=float(self.rel_error.quantile(0.99, self.rel_error.counts.sum(axis=1))[0]),
            max_relative_error=self.max_rel,
            max_abs_error=self.max_abs,
        )


def compare_arrays(original: np.ndarray, decoded: np.ndarray, wavelength: np.ndarray,
                   noise: np.ndarray | None = None) -> Metrics:
    """:class:`Metrics` of two in-memory radiance arrays ``(mirror_step, xtrack, C)`` (and the original's noise)."""
    original, decoded = np.asarray(original), np.asarray(decoded)
    if original.ndim != 3 or decoded.shape != original.shape:
        raise TempocodecError(f"evaluate: arrays must both be (mirror_step, xtrack, C); got {original.shape} and {decoded.shape}")
    acc = MetricsAccumulator(original.shape[:2], original.shape[2])
    for steps in range(0, original.shape[0], BLOCK_STEPS):
        block = slice(steps, steps + BLOCK_STEPS)
        acc.add(block, slice(None), original[block], decoded[block], None if noise is None else noise[block])
    return acc.result(wavelength)


# --------------------------------------------------------------------------------------------------- DOAS


@dataclass(frozen=True)
class DoasComparison:
    """NO₂ slant columns fitted on the original and on the decoded spectra, float64 ``(mirror_step, xtrack)``
    (NaN where the fit did not run): ``scd_original``, ``scd_decoded``, ``scd_error`` (the original fit's 1-σ
    uncertainty), and ``scd_truth`` (the L2 file's ``fitted_slant_column``, when at hand); molecules/cm^2."""

    scd_original: np.ndarray
    scd_decoded: np.ndarray
    scd_error: np.ndarray
    scd_truth: np.ndarray | None = None

    @property
    def _both(self) -> np.ndarray:
        return np.isfinite(self.scd_original) & np.isfinite(self.scd_decoded) & np.isfinite(self.scd_error)

    @property
    def pixels(self) -> int:
        """Pixels fitted in both copies."""
        return int(np.count_nonzero(self._both))

    @property
    def difference(self) -> np.ndarray:
        """Decoded minus original slant column over the pixels fitted in both, ``(pixels,)``."""
        return (self.scd_decoded - self.scd_original)[self._both]

    @property
    def bias(self) -> float:
        """Mean of decoded − original, molecules/cm^2."""
        return float(np.mean(self.difference)) if self.pixels else float("nan")

    @property
    def scatter(self) -> float:
        """Standard deviation of decoded − original, molecules/cm^2."""
        return float(np.std(self.difference)) if self.pixels else float("nan")

    @property
    def median_error(self) -> float:
        """Median 1-σ fit uncertainty of the original's fit (its own noise), molecules/cm^2."""
        return float(np.median(self.scd_error[self._both])) if self.pixels else float("nan")

    @property
    def median_scd(self) -> float:
        """Median slant column of the original's fit, molecules/cm^2."""
        return float(np.median(self.scd_original[self._both])) if self.pixels else float("nan")

    def truth_rms(self) -> tuple[float, float, float] | None:
        """Against the truth, over the pixels where both fits and the truth are finite (molecules/cm^2): RMS of the
        original's fit − truth, RMS of the decoded's fit − truth, and the truth's standard deviation (the RMS of a
        method that returns the mean column everywhere). None without truth or such pixels."""
        if self.scd_truth is None:
            return None
        ok = self._both & np.isfinite(self.scd_truth)
        if not ok.any():
            return None
        truth = self.scd_truth[ok]
        return (float(np.sqrt(np.mean((self.scd_original[ok] - truth) ** 2))),
                float(np.sqrt(np.mean((self.scd_decoded[ok] - truth) ** 2))), float(np.std(truth)))


# --------------------------------------------------------------------------------------------------- probes


@dataclass(frozen=True)
class ProbeScore:
    """One product read from the latents against its L2 truth pooled to the latent grid.

    ``truth``, ``predicted``: float64 ``(n,)`` over the latent cells where both are finite; ``units`` of both."""

    name: str
    product: str
    units: str
    truth: np.ndarray
    predicted: np.ndarray

    @property
    def r2(self) -> float:
        """Coefficient of determination ``1 − Σ(p − t)² / Σ(t − mean t)²`` (NaN for fewer than 2 cells)."""
        return r2_rmse_bias(self.predicted, self.truth)[0]


def _pooled_truth(path: Path, shape: tuple[int, int]) -> np.ndarray:
    """The headline field of an L2 file pooled to the latent grid and cut to ``shape``, float64."""
    truth = pool_to_latent(np.asarray(l2_truth(read_l2(path)).values, np.float64))
    out = np.full(shape, np.nan)
    rows, cols = min(shape[0], truth.shape[0]), min(shape[1], truth.shape[1])
    out[:rows, :cols] = truth[:rows, :cols]
    return out


def probe_scores(original: Path, store: Path, band: str) -> tuple[tuple[ProbeScore, ...], str | None]:
    """Products read from the store's latents (:func:`tempocodec.runtime.query.query_store`) scored against the L2 truth
    files beside ``original``; or an empty tuple and the reason they were skipped."""
    truths = l2_files_beside(original)
    if not truths:
        return (), f"no L2 truth files (TEMPO_<product>_L2_...) beside {original.name}"
    try:
        from tempocodec.runtime.query import query_store

        names = tuple(n for n, p in PRODUCTS.items() if p.l2_product in truths)
        queried = query_store(store, products=names, band=band)
    except (TempocodecError, ImportError) as err:
        return (), f"products could not be read from the latents: {err}"
    scores = []
    for name in names:
        product = PRODUCTS[name]
        predicted = np.asarray(queried[name].values, np.float64)
        truth = _pooled_truth(truths[product.l2_product], predicted.shape)
        ok = np.isfinite(truth) & np.isfinite(predicted)
        scores.append(ProbeScore(name, product.l2_product, product.units, truth[ok], predicted[ok]))
    return tuple(scores), None


# --------------------------------------------------------------------------------------------------- the store


@dataclass(frozen=True)
class ExampleSpectrum:
    """One pixel's spectrum in both copies: ``original``, ``decoded`` float64 ``(C,)``; its relative RMSE (fraction)."""

    label: str
    step: int
    xtrack: int
    relative_rmse: float
    original: np.ndarray
    decoded: np.ndarray


@dataclass(frozen=True)
class Evaluation:
    """Everything :func:`evaluate_store` measured: the metrics, the store's compression ratios (raw bytes over
    stored bytes: of the band's radiance, and of every array against every file of the store), the DOAS
    comparison and the probe scores (each None/empty with the reason when skipped), and example spectra."""

    original: Path
    store: Path
    band: str
    metrics: Metrics
    ratio_radiance: float
    ratio_store: float
    doas: DoasComparison | None
    doas_skipped: str | None
    probes: tuple[ProbeScore, ...]
    probes_skipped: str | None
    examples: tuple[ExampleSpectrum, ...] = field(default_factory=tuple)


def _blocks(shape: tuple[int, int]) -> Iterator[tuple[slice, slice]]:
    """``(steps, xtrack)`` slices of :data:`BLOCK_STEPS` × :data:`BLOCK_XTRACK` covering ``shape``."""
    for s in range(0, shape[0], BLOCK_STEPS):
        for x in range(0, shape[1], BLOCK_XTRACK):
            yield slice(s, min(shape[0], s + BLOCK_STEPS)), slice(x, min(shape[1], x + BLOCK_XTRACK))


def _check_same_granule(original: Path, store: Path, source: xr.Dataset, stored: xr.Dataset) -> None:
    """Raise unless the store's band holds the original's granule: the same radiance shape and geolocation."""
    shape, stored_shape = source["radiance"].shape, stored["radiance"].shape
    if shape != stored_shape:
        raise TempocodecError(
            f"{store}: radiance is {stored_shape}, {original.name} has {shape}: not the same granule"
        )
    for name in ("latitude", "longitude"):
        if name in source and name in stored:
            a, b = np.asarray(source[name].values), np.asarray(stored[name].values)
            if a.shape != b.shape or not np.array_equal(a, b, equal_nan=True):
                raise TempocodecError(f"{store}: its {name} differs from {original.name}'s: not the same granule")


def _wavelength(band: str, source: xr.Dataset) -> np.ndarray:
    """The band's wavelength grid, ``(X, C)`` from ``nominal_wavelength`` or ``(C,)`` from the nominal grid (nm)."""
    if "nominal_wavelength" in source:
        return np.asarray(source["nominal_wavelength"].values, np.float64)
    if band in BAND_GRIDS:
        return nominal_wavelength(band)
    raise TempocodecError(f"{band}: no nominal_wavelength in the granule and no known grid for the band")


def _doas_setup(band: str, wavelength: np.ndarray) -> tuple[DoasSetup | None, str | None]:
    """The NO₂ fit's setup for the band, or None and why not."""
    try:
        return doas_setup(wavelength, band), None
    except TempocodecError as err:
        return None, str(err)


def doas_truth(original: Path, shape: tuple[int, int]) -> np.ndarray | None:
    """The NO₂ L2 file's ``support_data/fitted_slant_column`` beside the original, float64 ``shape`` with fill as NaN;
    None when there is no such file or its shape differs."""
    path = l2_files_beside(original).get("NO2")
    if path is None:
        return None
    support = read_l2(path).groups.get("support_data")
    if support is None or "fitted_slant_column" not in support:
        return None
    values = np.asarray(support["fitted_slant_column"].values, np.float64)
    if values.shape != shape:
        return None
    return np.where(np.abs(values) < 1e29, values, np.nan)


def evaluate_store(original: str | os.PathLike, store: str | os.PathLike, *, band: str = "band_290_490_nm",
                   progress: bool = True) -> Evaluation:
    """Compare the band ``band`` of the store ``store`` (written by ``compress``) with the L1B file ``original``."""
    original, store = Path(original), Path(store)
    summary = store_info(store)
    if band not in summary.bands:
        raise TempocodecError(f"{store}: no band {band} (the store holds {', '.join(summary.bands)})")
    stored = open_store(store, band)
    with open_l1b(original) as granule:
        source = granule.band(band)
        _check_same_granule(original, store, source, stored)
        n_steps, n_xtrack, n_channels = source["radiance"].shape
        wavelength = _wavelength(band, source)
        setup, doas_skipped = _doas_setup(band, wavelength)
        acc = MetricsAccumulator((n_steps, n_xtrack), n_channels)
        scd = {k: np.full((n_steps, n_xtrack), np.nan) for k in ("original", "decoded", "error")}
        blocks = list(_blocks((n_steps, n_xtrack)))
        with progress_bar(enabled=progress) as bar:
            task = bar.add_task(f"evaluate {band}", total=len(blocks))
            for steps, xtrack in blocks:
                orig = granule.radiance_block(band, steps, xtrack)
                dec = np.asarray(stored["radiance"][steps, xtrack].values)
                noise = np.asarray(source["radiance_error"][steps, xtrack].values) if "radiance_error" in source else None
                acc.add(steps, xtrack, orig, dec, noise)
                if setup is not None:
                    sub = setup if setup.n_xtrack == 1 else _xtrack_setup(setup, xtrack)
                    fit_o, fit_d = fit_doas(orig, sub), fit_doas(dec, sub)
                    scd["original"][steps, xtrack] = fit_o.scd
                    scd["error"][steps, xtrack] = fit_o.scd_error
                    scd["decoded"][steps, xtrack] = fit_d.scd
                bar.advance(task)
        metrics = acc.result(wavelength if wavelength.ndim == 1 else wavelength.mean(axis=0))
        examples = _examples(granule, band, stored, metrics)
    doas = None
    if setup is not None:
        doas = DoasComparison(scd["original"], scd["decoded"], scd["error"], doas_truth(original, (n_steps, n_xtrack)))
    probes, probes_skipped = probe_scores(original, store, band)
    return Evaluation(
        original=original,
        store=store,
        band=band,
        metrics=metrics,
        ratio_radiance=summary.radiance(band).ratio,
        ratio_store=summary.total_raw / summary.total_stored,
        doas=doas,
        doas_skipped=doas_skipped,
        probes=probes,
        probes_skipped=probes_skipped,
        examples=examples,
    )


def _xtrack_setup(setup: DoasSetup, xtrack: slice) -> DoasSetup:
    """``setup`` restricted to the cross-track positions ``xtrack``."""
    return replace(setup, design=setup.design[xtrack], gram=setup.gram[xtrack], log_solar=setup.log_solar[xtrack])


def _examples(granule, band: str, stored: xr.Dataset, metrics: Metrics) -> tuple[ExampleSpectrum, ...]:
    """The pixels at the median, 99th percentile and maximum of the per-spectrum relative RMSE, read again."""
    rrmse = metrics.relative_rmse_map
    out = []
    for label, q in EXAMPLE_QUANTILES:
        target = np.nanpercentile(rrmse, q)
        step, xtrack = np.unravel_index(np.nanargmin(np.abs(rrmse - target)), rrmse.shape)
        orig = granule.radiance_block(band, slice(step, step + 1), slice(xtrack, xtrack + 1))[0, 0]
        dec = np.asarray(stored["radiance"][step, xtrack].values)
        out.append(ExampleSpectrum(label, int(step), int(xtrack), float(rrmse[step, xtrack]),
                                   orig.astype(np.float64), dec.astype(np.float64)))
    return tuple(out)


# --------------------------------------------------------------------------------------------------- report


def _pct(fraction: float) -> str:
    """A fraction as a percentage with three significant digits."""
    return f"{100 * fraction:.3g} %"


def _sci(value: float) -> str:
    """A number in compact scientific notation."""
    return f"{value:.3g}"


def headline(evaluation: Evaluation) -> list[str]:
    """The report's first lines: ratio, mean relative RMSE, 99th percentile, worst channel, DOAS, decoded fill."""
    m = evaluation.metrics
    worst = m.worst_channel
    lines = [
        (f"- **Compression ratio {evaluation.ratio_radiance:,.0f}×** for the radiance "
         f"({evaluation.ratio_store:,.1f}× for the whole store, every variable and file included)."),
        (f"- **Mean relative RMSE per spectrum {_pct(m.mean_relative_rmse)}** (median {_pct(m.median_relative_rmse)}); "
         f"99th percentile of |relative error| {_pct(m.p99_relative_error)}, maximum {_pct(m.max_relative_error)}."),
        f"- Worst channel: {m.wavelength[worst]:.2f} nm (channel {worst}), relative RMSE {_pct(m.relative_rmse[worst])}.",
    ]
    if m.noise_ratio is not None:
        lines.append(f"- Error over instrument noise (RMSE / median radiance_error, median over channels): "
                     f"{np.nanmedian(m.noise_ratio):.3g}×.")
    d = evaluation.doas
    if d is not None and d.pixels:
        lines.append(
            f"- DOAS NO₂ slant column, decoded − original over {d.pixels:,} pixels: bias {_sci(d.bias)}, scatter "
            f"{_sci(d.scatter)} molecules/cm² = {d.bias / d.median_error:+.2g} and {d.scatter / d.median_error:.2g} × "
            f"the fit's own 1-σ noise ({_sci(d.median_error)}; median slant column {_sci(d.median_scd)})."
        )
    else:
        lines.append(f"- DOAS NO₂ fit skipped: {evaluation.doas_skipped or 'no pixel could be fitted'}.")
    if m.decoded_fill:
        lines.append(f"- **{m.decoded_fill:,} valid original values came back as fill or non-finite** (left out of the metrics).")
    else:
        lines.append("- Decoded fill where the original was valid: 0 values.")
    return lines


def summary_rows(evaluation: Evaluation) -> list[tuple[str, str]]:
    """``(metric, value)`` rows shared by the report's table and the command line's."""
    m = evaluation.metrics
    rows = [
        ("band", evaluation.band),
        ("compression ratio (radiance)", f"{evaluation.ratio_radiance:,.1f}"),
        ("compression ratio (whole store)", f"{evaluation.ratio_store:,.1f}"),
        ("pixels / values compared", f"{m.pixels:,} / {m.values:,}"),
        ("decoded fill where original valid", f"{m.decoded_fill:,}"),
        ("mean relative RMSE per spectrum", _pct(m.mean_relative_rmse)),
        ("median relative RMSE per spectrum", _pct(m.median_relative_rmse)),
        ("99th percentile |relative error|", _pct(m.p99_relative_error)),
        ("max |relative error|", _pct(m.max_relative_error)),
        ("max |error| (photons/s/cm²/nm/sr)", _sci(m.max_abs_error)),
        ("spectral angle median / p99 (mrad)", f"{m.spectral_angle_median:.3g} / {m.spectral_angle_p99:.3g}"),
        ("worst channel (relative RMSE)", f"{m.wavelength[m.worst_channel]:.2f} nm ({_pct(m.relative_rmse[m.worst_channel])})"),
    ]
    if m.noise_ratio is not None:
        ratio = m.noise_ratio
        rows.append(("RMSE / median noise: median (min–max) over channels",
                     f"{np.nanmedian(ratio):.3g} ({np.nanmin(ratio):.3g}–{np.nanmax(ratio):.3g})"))
    d = evaluation.doas
    if d is not None and d.pixels:
        rows += [
            ("DOAS NO₂ SCD pixels fitted", f"{d.pixels:,}"),
            ("DOAS NO₂ SCD bias (decoded − original)", f"{_sci(d.bias)} ({d.bias / d.median_error:+.2g} σ)"),
            ("DOAS NO₂ SCD scatter (decoded − original)", f"{_sci(d.scatter)} ({d.scatter / d.median_error:.2g} σ)"),
            ("DOAS NO₂ SCD fit noise σ (median)", _sci(d.median_error)),
        ]
        truth = d.truth_rms()
        if truth is not None:
            rows.append(("DOAS NO₂ SCD RMS vs L2 truth: original / decoded / truth spread",
                         " / ".join(f"{v / d.median_error:.3g} σ" for v in truth)))
    else:
        rows.append(("DOAS NO₂ fit", f"skipped: {evaluation.doas_skipped or 'no pixel fitted'}"))
    for p in evaluation.probes:
        rows.append((f"probe {p.name} R² ({p.truth.size:,} cells)", f"{p.r2:.3f}"))
    if evaluation.probes_skipped:
        rows.append(("probes", f"skipped: {evaluation.probes_skipped}"))
    return rows


def _md_cell(text: str) -> str:
    """``text`` safe inside a markdown table cell (pipes escaped)."""
    return text.replace("|", "\\|")


def _save(fig, path: Path) -> None:
    """Save a matplotlib figure as PNG, then close it."""
    fig.savefig(path, format="png", dpi=100)
    import matplotlib.pyplot as plt

    plt.close(fig)


def _plot_error_vs_signal(m: Metrics, path: Path) -> None:
    """The paper's figure: median signal, median and 99th-percentile |error|, and noise, per channel (log scale)."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 4.5), layout="constrained")
    ax.semilogy(m.wavelength, m.median_signal, color="black", lw=1.0, label="signal (median)")
    ax.semilogy(m.wavelength, m.median_abs_error, color="tab:red", lw=0.8, label="|error| (median)")
    ax.semilogy(m.wavelength, m.p99_abs_error, color="tab:orange", lw=0.6, label="|error| (99th percentile)")
    if m.median_noise is not None:
        ax.semilogy(m.wavelength, m.median_noise, color="tab:blue", lw=0.8, ls="--", label="instrument noise (median)")
    ax.set_xlabel("wavelength (nm)")
    ax.set_ylabel("radiance (photons/s/cm²/nm/sr)")
    ax.set_title(f"Error against signal across the {m.wavelength.size} channels")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3, which="both")
    _save(fig, path)


def _plot_relative_error(m: Metrics, path: Path) -> None:
    """Median |relative error| and relative RMSE per channel, in percent."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 4), layout="constrained")
    ax.semilogy(m.wavelength, 100 * m.relative_rmse, color="tab:red", lw=0.8, label="relative RMSE")
    ax.semilogy(m.wavelength, 100 * m.median_relative_error, color="black", lw=0.8, label="median |relative error|")
    if m.median_noise is not None:
        ax.semilogy(m.wavelength, 100 * m.median_noise / m.median_signal, color="tab:blue", lw=0.8, ls="--",
                    label="noise / signal (medians)")
    ax.set_xlabel("wavelength (nm)")
    ax.set_ylabel("%")
    ax.set_title("Relative error per wavelength")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3, which="both")
    _save(fig, path)


def _plot_error_map(m: Metrics, path: Path) -> None:
    """Relative RMSE per spectrum over the granule (mirror step × cross-track)."""
    import matplotlib.pyplot as plt

    values = 100 * m.relative_rmse_map
    finite = values[np.isfinite(values)]
    fig, ax = plt.subplots(figsize=(8, 4.5), layout="constrained")
    image = ax.imshow(values.T, origin="lower", aspect="auto", cmap="magma",
                      vmin=np.percentile(finite, 1), vmax=np.percentile(finite, 99))
    fig.colorbar(image, ax=ax, label="relative RMSE per spectrum (%)")
    ax.set_xlabel("mirror step")
    ax.set_ylabel("cross-track pixel")
    ax.set_title("Error map")
    _save(fig, path)


def _plot_spectral_angle(m: Metrics, path: Path) -> None:
    """Histogram of the per-pixel spectral angle (mrad)."""
    import matplotlib.pyplot as plt

    angles = m.spectral_angle_map[np.isfinite(m.spectral_angle_map)]
    fig, ax = plt.subplots(figsize=(6, 4), layout="constrained")
    ax.hist(angles, bins=100, color="tab:gray")
    ax.axvline(m.spectral_angle_median, color="black", lw=1, label=f"median {m.spectral_angle_median:.3g}")
    ax.axvline(m.spectral_angle_p99, color="tab:red", lw=1, label=f"99th percentile {m.spectral_angle_p99:.3g}")
    ax.set_xlabel("spectral angle (mrad)")
    ax.set_ylabel("pixels")
    ax.legend(fontsize=8)
    _save(fig, path)


def _plot_examples(examples: tuple[ExampleSpectrum, ...], wavelength: np.ndarray, path: Path) -> None:
    """Original and decoded spectra of the example pixels, with their relative difference."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(examples), 2, figsize=(12, 3 * len(examples)), squeeze=False, layout="constrained")
    for (spectrum_ax, error_ax), ex in zip(axes, examples, strict=True):
        used = is_valid(ex.original) & (ex.original >= MIN_SIGNAL) & is_valid(ex.decoded)
        o, d = np.where(used, ex.original, np.nan), np.where(used, ex.decoded, np.nan)
        spectrum_ax.semilogy(wavelength, o, color="black", lw=0.7, label="original")
        spectrum_ax.semilogy(wavelength, d, color="tab:red", lw=0.7, label="decoded")
        spectrum_ax.set_title(f"{ex.label}: step {ex.step}, xtrack {ex.xtrack}, relative RMSE {_pct(ex.relative_rmse)}",
                              fontsize=9)
        spectrum_ax.set_ylabel("radiance")
        spectrum_ax.legend(fontsize=7)
        error_ax.plot(wavelength, 100 * (d - o) / o, color="tab:red", lw=0.5)
        error_ax.axhline(0, color="black", lw=0.5)
        error_ax.set_ylabel("decoded / original − 1 (%)")
    for ax in axes[-1]:
        ax.set_xlabel("wavelength (nm)")
    _save(fig, path)


def _plot_doas(d: DoasComparison, path: Path) -> None:
    """Decoded against original NO₂ slant columns, and their difference in units of the fit's own noise."""
    import matplotlib.pyplot as plt

    both = np.isfinite(d.scd_original) & np.isfinite(d.scd_decoded) & np.isfinite(d.scd_error)
    o, dec, sigma = d.scd_original[both], d.scd_decoded[both], d.scd_error[both]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.5), layout="constrained")
    left.scatter(o, dec, s=1, alpha=0.3, color="tab:blue")
    span = [np.percentile(o, 0.5), np.percentile(o, 99.5)]
    left.plot(span, span, color="black", lw=0.8)
    left.set_xlabel("NO₂ SCD from the original (molecules/cm²)")
    left.set_ylabel("NO₂ SCD from the decoded (molecules/cm²)")
    left.set_title(f"DOAS 405–465 nm, {both.sum():,} pixels")
    right.hist((dec - o) / sigma, bins=100, color="tab:gray")
    right.set_xlabel("(decoded − original) / fit 1-σ")
    right.set_ylabel("pixels")
    right.set_title(f"bias {d.bias / d.median_error:+.2g} σ, scatter {d.scatter / d.median_error:.2g} σ")
    _save(fig, path)


def _plot_probes(probes: tuple[ProbeScore, ...], path: Path) -> None:
    """Product read from the latents against the pooled L2 truth, one panel per product, with R²."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(probes), figsize=(4.2 * len(probes), 4), squeeze=False, layout="constrained")
    for ax, p in zip(axes[0], probes, strict=True):
        ax.scatter(p.truth, p.predicted, s=2, alpha=0.4)
        span = [np.min(p.truth), np.max(p.truth)] if p.truth.size else [0, 1]
        ax.plot(span, span, color="black", lw=0.8)
        ax.set_title(f"{p.name}: R² = {p.r2:.3f} ({p.truth.size:,} cells)", fontsize=9)
        ax.set_xlabel(f"L2 {p.product} truth ({p.units})")
        ax.set_ylabel(f"from latents ({p.units})")
    _save(fig, path)


def write_report(evaluation: Evaluation, out_dir: str | os.PathLike, *, overwrite: bool = False) -> Path:
    """Write the directory ``out_dir`` holding ``report.md`` and its PNG figures; returns the report's path.

    The directory is built under a temporary name and renamed into place when complete
    (:func:`tempocodec.atomic.atomic_dir`); an existing ``out_dir`` is replaced only with ``overwrite`` and only
    when it holds an earlier report (or nothing).
    """
    import matplotlib

    matplotlib.use("Agg")
    out = Path(out_dir)
    m = evaluation.metrics
    figures = [
        ("Error against signal", "error_vs_signal.png", lambda p: _plot_error_vs_signal(m, p)),
        ("Relative error per wavelength", "relative_error.png", lambda p: _plot_relative_error(m, p)),
        ("Error map (relative RMSE per spectrum)", "error_map.png", lambda p: _plot_error_map(m, p)),
        ("Spectral angle", "spectral_angle.png", lambda p: _plot_spectral_angle(m, p)),
        ("Example spectra (median, 99th percentile and worst pixel by relative RMSE)", "spectra.png",
         lambda p: _plot_examples(evaluation.examples, m.wavelength, p)),
    ]
    if evaluation.doas is not None and evaluation.doas.pixels:
        figures.append(("DOAS NO₂ slant columns", "doas_no2.png", lambda p: _plot_doas(evaluation.doas, p)))
    if evaluation.probes:
        figures.append(("Products from the latents against L2 truth", "probes.png",
                        lambda p: _plot_probes(evaluation.probes, p)))
    lines = [f"{REPORT_TITLE}`{evaluation.store.name}` against `{evaluation.original.name}`", "",
             *headline(evaluation), "", "| metric | value |", "|---|---|"]
    lines += [f"| {_md_cell(k)} | {_md_cell(v)} |" for k, v in summary_rows(evaluation)]
    lines += ["", _doas_section(evaluation), "", _probe_section(evaluation), "", "## Figures", ""]
    for title, name, _ in figures:
        lines += [f"### {title}", "", f"![{title}]({name})", ""]
    lines += ["## Definitions", "",
              ("Relative error r = (decoded − original) / original over the values valid in the original (≥ 1); "
              "relative RMSE per spectrum = sqrt(mean over channels of r²), averaged over pixels; spectral angle = "
              "angle between the two spectra as vectors; per-channel medians and percentiles are read from "
              f"histograms with {BINS_PER_DEX} bins per decade. Noise is the original's radiance_error."), ""]
    with atomic_dir(out, replace=REPORT_DIR if overwrite else None) as tmp:
        for _, name, plot in figures:
            plot(tmp / name)
        (tmp / "report.md").write_text("\n".join(lines), encoding="utf-8")
    return out / "report.md"


def _is_report_dir(path: Path) -> bool:
    """Whether ``path`` holds a ``report.md`` written by :func:`write_report`."""
    try:
        with (path / "report.md").open(encoding="utf-8") as f:
            return f.readline().startswith(REPORT_TITLE)
    except (OSError, UnicodeDecodeError):
        return False


REPORT_DIR = Replaceable(lambda path: is_empty_dir(path) or _is_report_dir(path), "an evaluation report directory")
"""What ``evaluate --report DIR --overwrite`` may replace."""


def _doas_section(evaluation: Evaluation) -> str:
    """The report's DOAS section."""
    d = evaluation.doas
    head = "## DOAS NO₂ slant column (405–465 nm)\n\n"
    if d is None or not d.pixels:
        return head + f"Skipped: {evaluation.doas_skipped or 'no pixel could be fitted'}."
    text = (head + "ln(L/F₀) fitted with NO₂, O₃, O₂–O₂, H₂O cross sections, a Ring spectrum and a cubic polynomial "
            "(tempocodec.science.doas), on the original and on the decoded spectra of every pixel. "
            f"Over {d.pixels:,} pixels, decoded − original: bias {_sci(d.bias)}, scatter {_sci(d.scatter)} "
            f"molecules/cm²; the fit's own 1-σ noise on the original is {_sci(d.median_error)} (median), "
            f"the median slant column {_sci(d.median_scd)}.")
    truth = d.truth_rms()
    if truth is not None:
        original, decoded, spread = truth
        text += (f" Against the L2 file's fitted_slant_column (the truth), the fit's RMS error is {_sci(original)} on the "
                 f"original and {_sci(decoded)} on the decoded spectra ({original / d.median_error:.2g} and "
                 f"{decoded / d.median_error:.2g} σ); the truth itself spreads by {_sci(spread)} "
                 f"({spread / d.median_error:.2g} σ), the RMS of a codec that keeps no NO₂ signal.")
    return text


def _probe_section(evaluation: Evaluation) -> str:
    """The report's section on products read from the latents."""
    head = "## Products from the latents\n\n"
    if not evaluation.probes:
        return head + f"Skipped: {evaluation.probes_skipped}."
    rows = ["| product | L2 truth | R² | cells |", "|---|---|---|---|"]
    rows += [f"| {p.name} | {p.product} | {p.r2:.3f} | {p.truth.size:,} |" for p in evaluation.probes]
    return head + "Truth pooled to the latent grid (mean of each 4×4 block).\n\n" + "\n".join(rows)
