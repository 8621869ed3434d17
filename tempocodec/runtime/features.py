"""Product features: DOAS slant columns per latent cell, fitted at compress time on the full-resolution spectra.

The latents of a CPU-sized VAE do not carry the trace gases (their differential optical depths, 1e-3 to 1e-2, lie
below the reconstruction error in their windows), so :class:`FeatureFit` fits NO₂ (405–465 nm) and HCHO
(328.5–356.5 nm) slant columns on every pixel of the original radiance (:func:`tempocodec.science.doas.gas_setup`)
and averages them over each latent cell (one ``d × d`` block of pixels, ``d`` the model's downsample, 4). The probes
read them beside the latents (:mod:`tempocodec.runtime.probes`).

Stored in the subgroup ``<band>/features`` of the store (:data:`FEATURES_GROUP`; outside the band group's own
variables, so ``decompress`` writes the L1B file without them), dims ``(latent_row, latent_col)``, each Blosc-zstd +
CRC-32C, plain zarr arrays:

- ``no2_scd``, ``hcho_scd``: float16, the cell's mean slant column in units of 1e15 molecules cm⁻² (NaN: no pixel
  of the cell was fitted);
- ``no2_scd_error``, ``hcho_scd_error``: uint8 with CF ``scale_factor`` (molecules cm⁻² per count, see
  :data:`ERROR_STEP`) and ``_FillValue`` 255: the 1-σ fit uncertainty of the cell mean, ``sqrt(Σ σ²) / n`` over its
  ``n`` fitted pixels, clipped at 254 counts.

That is 6 bytes per cell (before Blosc), against 64 of the float16 latent (32 channels): 9.4 %.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

import numpy as np
import xarray as xr
import zarr

from tempocodec.errors import TempocodecError
from tempocodec.prepare.tiles import TILE, pool_to_latent
from tempocodec.runtime.auxcodecs import blosc_lossless
from tempocodec.science.doas import GAS_FITS, DoasSetup, fit_doas, gas_setup

FEATURES_GROUP = "features"
GASES = ("no2", "hcho")
SCD_UNIT = 1e15
"""Molecules cm⁻² per stored slant column unit."""
ERROR_STEP = {"no2": 2e13, "hcho": 1e14}
"""Molecules cm⁻² per count of the stored uncertainty (up to 254 counts: 5.1e15 and 2.5e16)."""
ERROR_FILL = 255
XTRACK_BLOCK = 256
"""Cross-track pixels fitted at once (bounds the fit's float64 buffers to ~40 MB per array for a stripe)."""
DIMS = ("latent_row", "latent_col")


@dataclass(frozen=True)
class CellColumns:
    """Slant columns on the latent grid, float64 ``(rows, cols)`` molecules cm⁻²: gas -> cell mean, gas -> its 1-σ."""

    scd: dict[str, np.ndarray]
    error: dict[str, np.ndarray]


def feature_names() -> tuple[str, ...]:
    """The probe input names of the stored features, in input order (slant columns, then their uncertainties)."""
    return tuple(f"{g}_scd" for g in GASES) + tuple(f"{g}_scd_error" for g in GASES)


DERIVED = ("no2_scd_excess", "no2_scd_3x3", "hcho_scd_3x3", "no2_scd_excess_9x9", "hcho_scd_9x9")
"""Inputs derived at query time from the stored columns of one band (:func:`derived_columns`)."""
BACKGROUND_PERCENTILE = 10.0


def input_names() -> tuple[str, ...]:
    """Every column input a probe may read: the stored features, then the derived ones."""
    return feature_names() + DERIVED


def box_mean(values: np.ndarray, size: int = 3) -> np.ndarray:
    """NaN-aware mean of ``values`` ``(rows, cols)`` over the ``size × size`` cells centred on each cell (clipped at
    the edges), float32; NaN where the window has no finite value."""
    finite = np.isfinite(values)
    pad = size // 2
    total = np.pad(np.where(finite, values, 0.0).astype(np.float64), pad)
    count = np.pad(finite.astype(np.float64), pad)
    rows, cols = values.shape
    sums = sum(total[i : i + rows, j : j + cols] for i in range(size) for j in range(size))
    counts = sum(count[i : i + rows, j : j + cols] for i in range(size) for j in range(size))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts > 0, sums / counts, np.nan).astype(np.float32)


def derived_columns(columns: dict[str, np.ndarray], air_mass: np.ndarray) -> dict[str, np.ndarray]:
    """The :data:`DERIVED` inputs of one band from its stored ``columns`` (:func:`decode`) and the cells' geometric
    air mass ``1/cos SZA + 1/cos VZA`` ``(rows, cols)``, float32 ``(rows, cols)`` each, 1e15 molecules cm⁻²:

    - ``no2_scd_excess``: the NO₂ slant column less the band's background, its :data:`BACKGROUND_PERCENTILE` th
      percentile of ``no2_scd / air_mass`` times the cell's air mass (the stratosphere is smooth over a granule, so
      this removes most of it: the reference-sector idea of operational retrievals);
    - ``no2_scd_3x3``, ``hcho_scd_3x3``: 3 × 3 cell box means (noise down by up to 3; HCHO's fit noise per cell is
      about 60 % of the field's spread);
    - ``no2_scd_excess_9x9``, ``hcho_scd_9x9``: 9 × 9 cell box means, the regional level (under a thick cloud the
      column below it leaves no trace in the cell's own spectrum).
    """
    ratio = columns["no2_scd"] / air_mass
    finite = ratio[np.isfinite(ratio)]
    background = float(np.percentile(finite, BACKGROUND_PERCENTILE)) if finite.size else np.nan
    excess = (columns["no2_scd"] - background * air_mass).astype(np.float32)
    return {"no2_scd_excess": excess, "no2_scd_3x3": box_mean(columns["no2_scd"]),
            "hcho_scd_3x3": box_mean(columns["hcho_scd"]), "no2_scd_excess_9x9": box_mean(excess, 9),
            "hcho_scd_9x9": box_mean(columns["hcho_scd"], 9)}


def covers_windows(wavelength: np.ndarray) -> bool:
    """Whether a band with this ``nominal_wavelength`` (nm) holds every gas window (the UV band does)."""
    low, high = float(np.nanmin(wavelength)), float(np.nanmax(wavelength))
    return all(low <= GAS_FITS[g][0][0] and GAS_FITS[g][0][1] <= high for g in GASES)


def _pooled_error(error: np.ndarray, d: int) -> np.ndarray:
    """``sqrt(Σ σ²) / n`` of the finite ``error`` ``(rows, cols)`` in each ``d × d`` block, float64, NaN where none."""
    finite = np.isfinite(error)
    mean_square = pool_to_latent(np.where(finite, error**2, np.nan), d).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.sqrt(mean_square / _block_sums(finite, d))


def _block_sums(mask: np.ndarray, d: int) -> np.ndarray:
    """Number of true values of ``mask`` ``(rows, cols)`` per ``d × d`` block, float64 ``(ceil(rows/d), ceil(cols/d))``."""
    rows, cols = mask.shape
    padded = np.pad(mask, ((0, -rows % d), (0, -cols % d)))
    return padded.reshape(padded.shape[0] // d, d, padded.shape[1] // d, d).sum(axis=(1, 3)).astype(np.float64)


def fit_stripe(radiance: np.ndarray, setups: dict[str, DoasSetup]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per-pixel slant column and 1-σ (molecules cm⁻², float64 ``(rows, X)``, NaN where not fitted) of each gas in
    ``setups`` for a stripe of radiance ``(rows, X, C)``, fitted :data:`XTRACK_BLOCK` pixels across at a time."""
    rows, width = radiance.shape[:2]
    out = {g: (np.full((rows, width), np.nan), np.full((rows, width), np.nan)) for g in setups}
    for first in range(0, width, XTRACK_BLOCK):
        cols = slice(first, min(first + XTRACK_BLOCK, width))
        for gas, setup in setups.items():
            sub = setup if setup.n_xtrack == 1 else _columns(setup, cols)
            result = fit_doas(radiance[:, cols], sub)
            out[gas][0][:, cols], out[gas][1][:, cols] = result.scd, result.scd_error
    return out


def _columns(setup: DoasSetup, cols: slice) -> DoasSetup:
    """``setup`` restricted to the cross-track positions ``cols``."""
    return replace(setup, design=setup.design[cols], gram=setup.gram[cols], log_solar=setup.log_solar[cols])


class FeatureFit:
    """The slant columns of one band fitted stripe by stripe (:meth:`add`, one stripe of :data:`TILE` mirror steps
    at a time, as the store writer streams the radiance), then gathered on the latent grid (:meth:`columns`)."""

    def __init__(self, wavelength: np.ndarray, band: str, downsample: int) -> None:
        """``wavelength``: the band's ``nominal_wavelength`` ``(xtrack, C)``; ``downsample``: pixels per latent cell."""
        if TILE % downsample:
            raise TempocodecError(f"features: the downsample {downsample} does not divide the stripe height {TILE}")
        self.downsample = downsample
        self.setups = {g: gas_setup(wavelength, g, band) for g in GASES}
        self._scd: dict[str, list[np.ndarray]] = {g: [] for g in GASES}
        self._error: dict[str, list[np.ndarray]] = {g: [] for g in GASES}

    def add(self, stripe: np.ndarray) -> None:
        """Fit the next stripe of radiance ``(rows, xtrack, C)``."""
        for gas, (values, sigma) in fit_stripe(stripe, self.setups).items():
            self._scd[gas].append(pool_to_latent(values, self.downsample).astype(np.float64))
            self._error[gas].append(_pooled_error(sigma, self.downsample))

    def columns(self) -> CellColumns:
        """The columns of every stripe added so far, in order."""
        return CellColumns(scd={g: np.concatenate(v) for g, v in self._scd.items()},
                           error={g: np.concatenate(v) for g, v in self._error.items()})


def encode(columns: CellColumns) -> xr.Dataset:
    """The stored form of ``columns`` (see the module docstring): float16 slant columns, uint8 uncertainties."""
    data: dict[str, tuple] = {}
    for gas in GASES:
        data[f"{gas}_scd"] = (DIMS, (columns.scd[gas] / SCD_UNIT).astype(np.float16),
                              {"units": "1e15 molecules/cm^2", "long_name": f"{gas.upper()} DOAS slant column, cell mean"})
        counts = np.round(columns.error[gas] / ERROR_STEP[gas])
        packed = np.where(np.isfinite(counts), np.clip(counts, 0, ERROR_FILL - 1), ERROR_FILL).astype(np.uint8)
        data[f"{gas}_scd_error"] = (DIMS, packed, {
            "units": "molecules/cm^2", "scale_factor": ERROR_STEP[gas], "_FillValue": ERROR_FILL,
            "long_name": f"1-sigma DOAS fit uncertainty of {gas}_scd (counts; value = count * scale_factor)"})
    return xr.Dataset(data)


def decode(group: zarr.Group, where: str | os.PathLike) -> dict[str, np.ndarray]:
    """The features of a store's ``<band>/features`` group as float32 ``(rows, cols)`` probe inputs: slant columns in
    units of 1e15 molecules cm⁻², uncertainties in the same units; NaN where not fitted."""
    out = {}
    for name in feature_names():
        array = group[name] if name in group else None
        if not isinstance(array, zarr.Array):
            raise TempocodecError(f"{where}: damaged store: {FEATURES_GROUP}/{name} is missing or not an array")
        raw = np.asarray(array[...])
        if name.endswith("_error"):
            step = ERROR_STEP[name.removesuffix("_scd_error")] / SCD_UNIT
            values = np.where(raw == ERROR_FILL, np.nan, raw.astype(np.float64) * step)
        else:
            values = raw.astype(np.float64)
        out[name] = values.astype(np.float32)
    return out


def feature_fit(ds: xr.Dataset, band: str, downsample: int) -> FeatureFit | None:
    """The :class:`FeatureFit` of one band group ``ds`` (L1B variables; ``radiance`` and ``nominal_wavelength``), or
    None for a band that lacks the gas windows."""
    if "nominal_wavelength" not in ds or "radiance" not in ds:
        return None
    wavelength = np.asarray(ds["nominal_wavelength"].values, np.float64)
    return FeatureFit(wavelength, band, downsample) if covers_windows(wavelength) else None


def _encoding(var: xr.DataArray, zarr_format: Literal[2, 3]) -> dict:
    """Blosc-zstd (byte shuffle) and a CRC-32C, as the store's other lossless arrays; the fill value of ``var``."""
    fill = var.attrs.get("_FillValue", np.nan if var.dtype.kind == "f" else None)
    return {"_FillValue": fill} | blosc_lossless(zarr_format, var.dtype.itemsize)


def write_features(store: Path, band: str, fit: FeatureFit, zarr_format: Literal[2, 3]) -> None:
    """Write the columns ``fit`` gathered as ``<band>/features`` of the store being written at ``store``. The hook of
    :mod:`tempocodec.runtime.store`, which feeds ``fit`` the radiance it streams."""
    features = encode(fit.columns())
    encoding = {name: _encoding(var, zarr_format) for name, var in features.data_vars.items()}
    for var in features.data_vars.values():
        var.attrs.pop("_FillValue", None)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Consolidated metadata", category=UserWarning)
        features.to_zarr(store, group=f"{band}/{FEATURES_GROUP}", mode="w", encoding=encoding,
                         zarr_format=zarr_format, consolidated=False)
