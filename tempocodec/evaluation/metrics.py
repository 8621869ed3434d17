"""The reconstruction-error engine shared by evaluation and training: streamed spectra in, :class:`Metrics` out.

Definitions (radiance ``L`` of the original, ``L̂`` decoded, photons/s/cm^2/nm/sr):

- a value is *used* when the original is valid (:func:`tempocodec.prepare.normalize.is_valid`) and
  ``L ≥`` :data:`MIN_SIGNAL` (the normalization's floor); used values whose decoded value is invalid are counted
  in ``decoded_fill`` (it must be 0) and left out of every other metric;
- error ``e = L̂ − L``, relative error ``r = e / L``;
- per channel: median signal ``L``, median and 99th percentile of ``|e|``, mean and median ``|r|``, relative
  RMSE ``sqrt(mean r²)``, RMSE ``sqrt(mean e²)``, median instrument noise (the original's ``radiance_error``)
  and the noise ratio RMSE / median noise;
- per pixel (spectrum): relative RMSE ``sqrt(mean_λ r²)`` (the paper's "relative RMSE per spectrum") and
  spectral angle ``∠(L, L̂)`` in mrad;
- scalars: mean and median of the per-spectrum relative RMSE, 99th percentile and maximum of ``|r|`` over all
  used values, maximum ``|e|``, median and 99th percentile of the spectral angle.

Medians and percentiles over pixels per channel come from per-channel histograms of ``log10`` values with
:data:`BINS_PER_DEX` bins per decade, interpolated within the bin (relative precision better than 2.3 %); the
per-pixel quantities and every mean are exact.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from tempocodec.errors import TempocodecError
from tempocodec.prepare.normalize import is_valid

BLOCK_STEPS = 64
PIXELS_PER_PASS = 4096
BINS_PER_DEX = 100
MIN_SIGNAL = 1.0


def used_values(original: np.ndarray, decoded: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(used, lost)``, bool like the inputs: *used* values (valid in the original, at least :data:`MIN_SIGNAL`,
    valid decoded) and *lost* ones (would be used, but the decoded value is invalid)."""
    counted = is_valid(original) & (original >= MIN_SIGNAL)
    decoded_ok = is_valid(decoded)
    return counted & decoded_ok, counted & ~decoded_ok


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
    """Reconstruction metrics of a set of spectra (see the module docstring for the definitions).

    Per channel, float64 ``(C,)``: ``wavelength`` (nm; NaN where unknown), ``median_signal``, ``median_abs_error``,
    ``p99_abs_error``, ``rmse`` (radiance units), ``median_relative_error``, ``mean_abs_relative_error``,
    ``relative_rmse`` (fractions), ``median_noise`` (radiance units; None without ``radiance_error``). Per pixel,
    float64 in the layout of the spectra (``(mirror_step, xtrack)`` for a band), NaN where no value is used:
    ``relative_rmse_map`` (fraction), ``spectral_angle_map`` (mrad). Counts: ``values`` used, ``pixels`` with at
    least one used value, ``decoded_fill`` (used values decoded as fill or non-finite).
    """

    wavelength: np.ndarray
    median_signal: np.ndarray
    median_abs_error: np.ndarray
    p99_abs_error: np.ndarray
    rmse: np.ndarray
    median_relative_error: np.ndarray
    mean_abs_relative_error: np.ndarray
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


class SpectraAccumulator:
    """Streams spectra ``(P, C)`` into per-channel sums and histograms. :meth:`add` returns each spectrum's
    relative RMSE and spectral angle; the caller keeps them in its own layout and hands them to :meth:`result`."""

    def __init__(self, n_channels: int) -> None:
        c = n_channels
        self.n_channels = c
        self.signal = _LogHistogram(c, 0.0, 30.0)  # valid radiance is at most 1e30
        self.abs_error = _LogHistogram(c, 0.0, 30.0)
        self.rel_error = _LogHistogram(c, -10.0, 6.0)
        self.noise = _LogHistogram(c, 0.0, 30.0)
        self.has_noise = False
        self.sum_sq_error = np.zeros(c)
        self.sum_sq_rel = np.zeros(c)
        self.sum_abs_rel = np.zeros(c)
        self.count = np.zeros(c, np.int64)
        self.decoded_fill = 0
        self.max_rel = 0.0
        self.max_abs = 0.0

    def add(self, original: np.ndarray, decoded: np.ndarray,
            noise: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Accumulate spectra ``original``, ``decoded`` (and the original's ``radiance_error`` ``noise``) float
        ``(P, C)``; return their relative RMSE and spectral angle (mrad), float64 ``(P,)`` each, NaN for a
        spectrum without a used value."""
        rrmse, angle = np.empty(original.shape[0]), np.empty(original.shape[0])
        for part in _passes(original.shape[0]):
            rrmse[part], angle[part] = self._add_pass(original[part], decoded[part],
                                                      None if noise is None else noise[part])
        return rrmse, angle

    def _add_pass(self, original: np.ndarray, decoded: np.ndarray,
                  noise: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`add` on at most :data:`PIXELS_PER_PASS` spectra."""
        used, lost, o, d, error, rel = _masked_errors(original, decoded)
        self.decoded_fill += int(np.count_nonzero(lost))
        abs_error, abs_rel = np.abs(error), np.abs(rel)
        self._add_histograms(o, abs_error, noise, used)
        rel_sq = np.square(rel)
        self.sum_sq_error += np.sum(np.square(error), axis=0, dtype=np.float64)
        self.sum_sq_rel += np.sum(rel_sq, axis=0, dtype=np.float64)
        self.sum_abs_rel += np.sum(abs_rel, axis=0, dtype=np.float64)
        self.count += used.sum(axis=0)
        self.max_rel = max(self.max_rel, float(abs_rel.max(initial=0.0)))
        self.max_abs = max(self.max_abs, float(abs_error.max(initial=0.0)))
        return _per_spectrum(o, d, rel_sq, used.sum(axis=1))

    def _add_histograms(self, o: np.ndarray, abs_error: np.ndarray, noise: np.ndarray | None,
                        used: np.ndarray) -> None:
        """Count the used signal ``o``, ``|e|``, ``|r|`` and the valid positive noise, ``(P, C)`` each."""
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

    def result(self, wavelength: np.ndarray, relative_rmse_map: np.ndarray, spectral_angle_map: np.ndarray) -> Metrics:
        """The metrics so far; ``wavelength`` ``(C,)`` nm labels the channels; the maps are what :meth:`add`
        returned, in the caller's layout."""
        if not self.count.any():
            raise TempocodecError("evaluate: no valid radiance value to compare")
        with np.errstate(divide="ignore", invalid="ignore"):
            rmse = np.sqrt(self.sum_sq_error / self.count)
            relative_rmse = np.sqrt(self.sum_sq_rel / self.count)
            mean_abs_relative_error = self.sum_abs_rel / self.count
        return Metrics(
            wavelength=np.asarray(wavelength, np.float64),
            median_signal=self.signal.quantile(0.5),
            median_abs_error=self.abs_error.quantile(0.5),
            p99_abs_error=self.abs_error.quantile(0.99),
            rmse=rmse,
            median_relative_error=self.rel_error.quantile(0.5),
            mean_abs_relative_error=mean_abs_relative_error,
            relative_rmse=relative_rmse,
            median_noise=self.noise.quantile(0.5) if self.has_noise else None,
            relative_rmse_map=relative_rmse_map,
            spectral_angle_map=spectral_angle_map,
            values=int(self.count.sum()),
            pixels=int(np.count_nonzero(np.isfinite(relative_rmse_map))),
            decoded_fill=self.decoded_fill,
            p99_relative_error=float(self.rel_error.quantile(0.99, self.rel_error.counts.sum(axis=1))[0]),
            max_relative_error=self.max_rel,
            max_abs_error=self.max_abs,
        )


def spectrum_errors(original: np.ndarray, decoded: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """What :meth:`SpectraAccumulator.add` returns for spectra ``(P, C)``, without accumulating anything (for a
    baseline that needs only the per-spectrum relative RMSE and spectral angle)."""
    rrmse, angle = np.empty(original.shape[0]), np.empty(original.shape[0])
    for part in _passes(original.shape[0]):
        used, _, o, d, _, rel = _masked_errors(original[part], decoded[part])
        rrmse[part], angle[part] = _per_spectrum(o, d, np.square(rel), used.sum(axis=1))
    return rrmse, angle


def _passes(n: int) -> Iterator[slice]:
    """Slices of at most :data:`PIXELS_PER_PASS` spectra covering ``n`` (bounds the float32 temporaries)."""
    for start in range(0, n, PIXELS_PER_PASS):
        yield slice(start, start + PIXELS_PER_PASS)


def _masked_errors(original: np.ndarray, decoded: np.ndarray) -> tuple[np.ndarray, ...]:
    """``(used, lost, o, d, e, r)`` of spectra ``(P, C)``: the masks of :func:`used_values`, the float32 spectra
    ``o``, ``d``, the error ``e = d − o`` and the relative error ``r = e / o``, all zero where not used."""
    original = original.astype(np.float32, copy=False)
    decoded = decoded.astype(np.float32, copy=False)
    used, lost = used_values(original, decoded)
    o = np.where(used, original, np.float32(0))
    d = np.where(used, decoded, np.float32(0))
    error = d - o
    return used, lost, o, d, error, error / np.where(used, o, np.float32(1))


def _per_spectrum(o: np.ndarray, d: np.ndarray, rel_sq: np.ndarray, n: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Relative RMSE and spectral angle (mrad) of spectra ``o``, ``d`` ``(P, C)`` (zero where not used) from their
    squared relative errors ``rel_sq`` ``(P, C)`` and used-value counts ``n`` ``(P,)``; NaN where ``n`` is 0."""
    dots = [np.einsum("pc,pc->p", a, b, dtype=np.float64) for a, b in ((o, d), (o, o), (d, d))]
    with np.errstate(divide="ignore", invalid="ignore"):
        rrmse = np.sqrt(np.sum(rel_sq, axis=1, dtype=np.float64) / n)
        angle = 1e3 * np.arccos(np.clip(dots[0] / np.sqrt(dots[1] * dots[2]), -1.0, 1.0))
    return np.where(n > 0, rrmse, np.nan), np.where(n > 0, angle, np.nan)


class MetricsAccumulator:
    """Streams blocks of one band into :class:`Metrics` with per-pixel maps: ``add`` each block, then ``result``."""

    def __init__(self, shape: tuple[int, int], n_channels: int) -> None:
        """``shape``: the band's ``(mirror_step, xtrack)``; ``n_channels``: spectral channels."""
        self.shape, self.n_channels = shape, n_channels
        self.spectra = SpectraAccumulator(n_channels)
        self.rrmse_map = np.full(shape, np.nan)
        self.angle_map = np.full(shape, np.nan)

    def add(self, steps: slice, xtrack: slice, original: np.ndarray, decoded: np.ndarray,
            noise: np.ndarray | None = None) -> None:
        """One block: ``original``, ``decoded`` (and the original's ``radiance_error`` ``noise``) float
        ``(s, x, C)`` covering ``[steps, xtrack]`` of the band."""
        s, x, c = original.shape
        if decoded.shape != original.shape or (noise is not None and noise.shape != original.shape):
            raise TempocodecError(f"evaluate: block shapes differ: original {original.shape}, decoded {decoded.shape}")
        rrmse, angle = self.spectra.add(original.reshape(s * x, c), decoded.reshape(s * x, c),
                                        None if noise is None else noise.reshape(s * x, c))
        self.rrmse_map[steps, xtrack] = rrmse.reshape(s, x)
        self.angle_map[steps, xtrack] = angle.reshape(s, x)

    def result(self, wavelength: np.ndarray) -> Metrics:
        """The metrics so far; ``wavelength`` ``(C,)`` nm labels the channels."""
        return self.spectra.result(wavelength, self.rrmse_map, self.angle_map)


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

