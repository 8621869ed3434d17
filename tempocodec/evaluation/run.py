"""How faithful a compressed store is to its original granule: :func:`evaluate_store` and its :class:`Evaluation`.

:func:`evaluate_store` streams over the band in blocks of :data:`BLOCK_STEPS` mirror steps × :data:`BLOCK_XTRACK`
cross-track pixels (one shard of the store), reading the original L1B radiance and the store's decoded radiance
block by block, so two copies of a large granule are never in memory at once. The metrics are those of
:mod:`tempocodec.evaluation.metrics`.

When the band covers 405–465 nm, a DOAS fit of the NO₂ slant column (:mod:`tempocodec.evaluation.doas_check`) runs
on both copies; when the L2 truth files of the granule lie beside the original, the products read from the latents
are scored against them (:mod:`tempocodec.evaluation.probe_scores`).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import xarray as xr

from tempocodec.errors import TempocodecError
from tempocodec.evaluation.doas_check import (
    DoasComparison,
    DoasFits,
    doas_truth,
    setup_or_reason,
)
from tempocodec.evaluation.metrics import BLOCK_STEPS, Metrics, MetricsAccumulator
from tempocodec.evaluation.probe_scores import ProbeScore, probe_scores
from tempocodec.evaluation.variables import VariableCheck, check_variables
from tempocodec.granule.l1b import open_l1b
from tempocodec.prepare.normalize import is_valid
from tempocodec.progress import progress_bar
from tempocodec.runtime.auxcodecs import within_bound
from tempocodec.runtime.store import open_store, store_info
from tempocodec.science.doas import DoasSetup
from tempocodec.science.spectroscopy import BAND_GRIDS, nominal_wavelength

BLOCK_XTRACK = 512
EXAMPLE_QUANTILES = (("median", 50.0), ("99th percentile", 99.0), ("worst", 100.0))


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
class PixelGrid:
    """The band's pixel coordinates as the store has them: ``mirror_step`` ``(S,)`` and ``xtrack`` ``(X,)`` values
    (the coordinate variables, not 0-based positions), ``latitude``/``longitude`` ``(S, X)`` in degrees_north /
    degrees_east (NaN where the granule has fill), None where the granule has none."""

    mirror_step: np.ndarray
    xtrack: np.ndarray
    latitude: np.ndarray | None = None
    longitude: np.ndarray | None = None

    def describe(self, step: int, xtrack: int) -> str:
        """The pixel at 0-based position ``(step, xtrack)`` in these coordinates, e.g. ``mirror_step 1204,
        xtrack 37 (40.12°N, 95.30°W)``."""
        text = f"mirror_step {self.mirror_step[step]}, xtrack {self.xtrack[xtrack]}"
        if self.latitude is None or self.longitude is None or not np.isfinite(self.latitude[step, xtrack]):
            return text
        lat, lon = float(self.latitude[step, xtrack]), float(self.longitude[step, xtrack])
        return text + f" ({abs(lat):.2f}°{'N' if lat >= 0 else 'S'}, {abs(lon):.2f}°{'E' if lon >= 0 else 'W'})"


def pixel_grid(source: xr.Dataset) -> PixelGrid:
    """The :class:`PixelGrid` of a band group read from an L1B file (values raw: geolocation fill becomes NaN)."""
    n_steps, n_xtrack = source["radiance"].shape[:2]

    def coordinate(name: str, n: int) -> np.ndarray:
        return np.asarray(source[name].values) if name in source.variables else np.arange(n)

    def degrees(name: str, limit: float) -> np.ndarray | None:
        if name not in source.variables or source[name].shape != (n_steps, n_xtrack):
            return None
        values = np.asarray(source[name].values, np.float64)
        return np.where(np.abs(values) <= limit, values, np.nan)

    return PixelGrid(coordinate("mirror_step", n_steps), coordinate("xtrack", n_xtrack), degrees("latitude", 90),
                     degrees("longitude", 180))


@dataclass(frozen=True)
class Evaluation:
    """Everything :func:`evaluate_store` measured: the metrics, the store's compression ratios (raw bytes over
    stored bytes: of the band's radiance, and of every array against every file of the store), the DOAS
    comparison and the probe scores (each None/empty with the reason when skipped), example spectra, and every other
    variable of the band checked against its stored bound."""

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
    grid: PixelGrid | None = None
    bound: BoundCheck | None = None
    variables: tuple[VariableCheck, ...] = ()


@dataclass
class BoundCheck:
    """The store's error bound K (units of ``radiance_error``; None: it has none) checked on the original: the
    largest ``|decoded − original| / radiance_error`` over valid values with a positive noise, and how many values
    exceed K (a valid value whose noise is not positive must come back exactly: counted when it does not)."""

    bound: float | None
    worst: float = 0.0
    violations: int = 0
    values: int = 0

    def add(self, original: np.ndarray, decoded: np.ndarray, noise: np.ndarray) -> None:
        """One block of original and decoded radiance and the original's noise, all ``(..., C)``."""
        valid = is_valid(original) & (original > 0)
        with np.errstate(invalid="ignore", divide="ignore"):
            usable = valid & np.isfinite(noise) & (noise > 0)
            over = np.abs(decoded[usable] - original[usable]) / noise[usable]
        self.values += int(valid.sum())
        if over.size:
            self.worst = max(self.worst, float(np.nanmax(np.where(np.isfinite(over), over, np.inf))))
        if self.bound is not None:
            self.violations += int(np.count_nonzero(~(over <= self.bound)))
            self.violations += int(np.count_nonzero(decoded[valid & ~usable] != original[valid & ~usable]))


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
            if a.shape != b.shape or not within_bound(name, stored[name].attrs, a, b):
                raise TempocodecError(f"{store}: its {name} differs from {original.name}'s: not the same granule")


def _wavelength(band: str, source: xr.Dataset) -> np.ndarray:
    """The band's wavelength grid, ``(X, C)`` from ``nominal_wavelength`` or ``(C,)`` from the nominal grid (nm)."""
    if "nominal_wavelength" in source:
        return np.asarray(source["nominal_wavelength"].values, np.float64)
    if band in BAND_GRIDS:
        return nominal_wavelength(band)
    raise TempocodecError(f"{band}: no nominal_wavelength in the granule and no known grid for the band")


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
        wavelength = _wavelength(band, source)
        setup, doas_skipped = setup_or_reason(band, wavelength)
        check = BoundCheck(summary.bands[band].get("error_bound")) if "radiance_error" in source else None
        acc, fits = _compare_blocks(granule, band, source, stored, setup, progress, check)
        metrics = acc.result(wavelength if wavelength.ndim == 1 else wavelength.mean(axis=0))
        examples = _examples(granule, band, stored, metrics)
        grid = pixel_grid(source)
        variables = check_variables(source, stored)
    doas = None if fits is None else fits.result(doas_truth(original, acc.shape))
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
        grid=grid,
        bound=check,
        variables=variables,
    )


def _compare_blocks(granule, band: str, source: xr.Dataset, stored: xr.Dataset, setup: DoasSetup | None,
                    progress: bool, check: BoundCheck | None = None) -> tuple[MetricsAccumulator, DoasFits | None]:
    """Stream every block of the open L1B ``granule``'s band (``source``, its dataset) and of the store's
    (``stored``) through the metrics, the bound ``check`` and, with a ``setup``, the NO₂ fits."""
    n_steps, n_xtrack, n_channels = source["radiance"].shape
    acc = MetricsAccumulator((n_steps, n_xtrack), n_channels)
    fits = None if setup is None else DoasFits(setup, (n_steps, n_xtrack))
    blocks = list(_blocks((n_steps, n_xtrack)))
    with progress_bar(enabled=progress) as bar:
        task = bar.add_task(f"evaluate {band}", total=len(blocks))
        for steps, xtrack in blocks:
            orig = granule.radiance_block(band, steps, xtrack)
            dec = np.asarray(stored["radiance"][steps, xtrack].values)
            noise = np.asarray(source["radiance_error"][steps, xtrack].values) if "radiance_error" in source else None
            acc.add(steps, xtrack, orig, dec, noise)
            if check is not None and noise is not None:
                check.add(orig, dec, noise)
            if fits is not None:
                fits.add(steps, xtrack, orig, dec)
            bar.advance(task)
    return acc, fits


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
