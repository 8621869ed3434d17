"""TEMPO Level-1B radiance files (``TEMPO_RAD_L1``): read lazily, write back in the real layout.

The layout follows ``docs/format-tempo.md``: netCDF-4/HDF5, root dimensions ``mirror_step``, ``corner`` and
``cov``; one group per band (``band_290_490_nm``, ``band_540_740_nm``) that defines its own ``xtrack`` and
``spectral_channel`` dimensions; ``radiance`` float32 ``(mirror_step, xtrack, spectral_channel)`` in
photons/s/cm^2/nm/sr with fill ``-9.96921e36``.

Values are kept *raw* (see :mod:`tempocodec.granule.netcdf` and :mod:`~tempocodec.granule.netcdf_write`, which
read and write them), so a file read and written again is bitwise the same.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import netCDF4
import numpy as np
import xarray as xr

from tempocodec.atomic import Replaceable
from tempocodec.bands import BANDS, N_CHANNELS
from tempocodec.errors import TempocodecError
from tempocodec.granule.netcdf import (
    INT16_FILL,
    INT32_FILL,
    NETCDF_FILE,
    TIME_UNITS,
    NetCDFSource,
    VarSpec,
    hdf5_lock,
    one_line,
    plain_dtype,
    read_group,
    var_spec,
)
from tempocodec.granule.netcdf_write import NetCDFLayout, target_dtype, write_netcdf
from tempocodec.prepare.normalize import RADIANCE_FILL

RADIANCE_DIMS = ("mirror_step", "xtrack", "spectral_channel")
GEO_FILL = np.float32(9.96921e36)
RADIANCE_UNITS = "photons/s/cm^2/nm/sr"
L1B_ROOT_DIMS = frozenset({"mirror_step", "corner", "cov"})

# ------------------------------------------------------------------------------------------------ layout tables

_F4 = np.float32
_PIXEL_FLAG_MEANINGS = (
    "missing_data bad_pixel processing_error transient_pixel rts_pixel saturated noise_underflow "
    "dark_corr_error offset_corr_error smear_corr_error straylight_corr_error nonlinear_range"
)


def _angle(lo: float, hi: float) -> VarSpec:
    return var_spec("f4", GEO_FILL, units="degrees", valid_min=_F4(lo), valid_max=_F4(hi))


L1B_ROOT_VARS: dict[str, VarSpec] = {
    "mirror_step": var_spec("i4"),
    "time": var_spec("f8", units=TIME_UNITS),
    "exposure_time": var_spec("f4", units="s", valid_min=_F4(0), valid_max=_F4(10)),
    "granule_flag": var_spec("i4", flag_masks=np.array([1, 2, 4], dtype=np.int32)),
    "earth_sun_distance": var_spec("f4", units="m"),
}
L1B_BAND_VARS: dict[str, VarSpec] = {
    "xtrack": var_spec("i4"),
    "radiance": var_spec(
        "f4",
        RADIANCE_FILL,
        units=RADIANCE_UNITS,
        coordinates="longitude latitude spectral_channel",
        ancillary_variables="radiance_error",
    ),
    "radiance_error": var_spec("f4", RADIANCE_FILL, units=RADIANCE_UNITS),
    "pixel_quality_flag": var_spec(
        "i2",
        INT16_FILL,
        flag_masks=np.array([1 << b for b in range(12)], dtype=np.int16),
        flag_meanings=_PIXEL_FLAG_MEANINGS,
    ),
    "nominal_wavelength": var_spec("f4", units="nm"),
    "latitude": var_spec(
        "f4", GEO_FILL, units="degrees_north", valid_min=_F4(-90), valid_max=_F4(90), bounds="latitude_bounds"
    ),
    "longitude": var_spec(
        "f4", GEO_FILL, units="degrees_east", valid_min=_F4(-180), valid_max=_F4(180), bounds="longitude_bounds"
    ),
    "latitude_bounds": var_spec("f4", GEO_FILL, units="degrees_north"),
    "longitude_bounds": var_spec("f4", GEO_FILL, units="degrees_east"),
    "solar_zenith_angle": _angle(0, 90),
    "viewing_zenith_angle": _angle(0, 90),
    "solar_azimuth_angle": _angle(-180, 180),
    "viewing_azimuth_angle": _angle(-180, 180),
    "viewing_zenith_angle_bounds": var_spec("f4", GEO_FILL, units="degrees"),
    "viewing_azimuth_angle_bounds": var_spec("f4", GEO_FILL, units="degrees"),
    "terrain_height": var_spec("i2", INT16_FILL, units="m"),
    "terrain_height_stddev": var_spec("i2", INT16_FILL, units="m"),
    "ground_pixel_quality_flag": var_spec("i4", INT32_FILL),
    "inr_quality_flag": var_spec("i4"),
    "inr_covariance": var_spec("f4", units="km^2"),
    "snow_ice_fraction": var_spec("f4", GEO_FILL),
    "cloud_top_height": var_spec("f4", GEO_FILL, units="m"),
    "wavecal_params": var_spec("f4"),
    "wavecal_par": var_spec("i4"),
    "wavecal_opt_status": var_spec("i4"),
    "wavecal_niter": var_spec("i4"),
}

# ------------------------------------------------------------------------------------------------ L1B API


@dataclass
class L1BGranule:
    """A whole L1B granule, in memory or lazily (dask-backed variables are fine).

    ``attrs``: global attributes. ``root``: root variables ``mirror_step`` (int32, absolute mirror positions),
    ``time`` (float64 s since 1980-01-06, TAI-like), ``exposure_time`` (float32 s), ``granule_flag``,
    ``earth_sun_distance`` (float32 m). ``bands``: band group name → all variables of the group (``radiance``
    float32 (mirror_step, xtrack, 1028) in photons/s/cm^2/nm/sr, ``radiance_error``, ``pixel_quality_flag``,
    ``nominal_wavelength``, geolocation, angles, ...). ``other_groups``: further top-level groups kept verbatim
    (e.g. ``cloud_mask_group``). Fill values are raw values with ``_FillValue`` in each variable's attrs.
    """

    attrs: dict[str, Any]
    root: xr.Dataset
    bands: dict[str, xr.Dataset]
    other_groups: dict[str, xr.Dataset] = field(default_factory=dict)


def _is_spectral(name: str, dims: tuple[str, ...]) -> bool:
    """True for the 3-D spectral variables of a band, (mirror_step, ..., spectral_channel): radiance and its kin."""
    return len(dims) >= 3 and dims[0] == "mirror_step" and dims[-1] == "spectral_channel"


class L1BFile:
    """An open L1B file (context manager); band groups are read lazily.

    Attributes: ``path``; ``attrs`` (global attributes); ``root`` (root variables, read now); ``band_names``
    (band groups present, in :data:`BANDS` order); ``group_names`` (every top-level group); ``skipped``
    (``group/variable`` and ``group/variable:attribute`` paths this reader cannot represent and leaves out:
    compound, enum and non-string vlen types).
    """

    def __init__(self, path: str | os.PathLike) -> None:
        """Open and validate ``path`` (see :func:`open_l1b`)."""
        self._source = NetCDFSource(path)
        self.path = self._source.path
        self.skipped: list[str] = []
        try:
            self.group_names = self._source.group_names()
            self.band_names = [b for b in BANDS if b in self.group_names]
            with hdf5_lock():
                _check_bands(self.path, self._source.group(None), self.band_names)
            root = read_group(self._source, None, skipped=self.skipped)
        except TempocodecError:  # before ValueError, which it is
            self._source.close()
            raise
        except (OSError, RuntimeError, KeyError, ValueError, AttributeError) as err:
            self._source.close()
            raise TempocodecError(f"{self.path}: cannot read the L1B layout: {one_line(err)}") from None
        self.attrs = dict(root.attrs)
        root.attrs = {}
        self.root = root

    def _coords(self) -> dict[str, xr.Variable]:
        """Root coordinate variables that band groups use (``mirror_step``)."""
        return {str(d): self.root[d].variable for d in self.root.dims if d in self.root.variables}

    def band(self, name: str, *, radiance: bool = True) -> xr.Dataset:
        """One band group with the root ``mirror_step`` coordinate; 2-D and larger variables are lazy dask arrays.

        With ``radiance=False`` the spectral variables (dims ``(mirror_step, xtrack, spectral_channel)``:
        ``radiance``, ``radiance_error``, ``pixel_quality_flag``, ...) are left out.
        """
        if name not in self.band_names:
            raise TempocodecError(f"{self.path}: no band group {name} (present: {', '.join(self.band_names)})")
        drop = None if radiance else _is_spectral
        return read_group(self._source, name, coords=self._coords(), drop=drop, skipped=self.skipped)

    def other_group(self, name: str) -> xr.Dataset:
        """A top-level group that is not a band (e.g. ``cloud_mask_group``), lazily, nested groups not included."""
        if name not in self.group_names or name in BANDS:
            raise TempocodecError(f"{self.path}: no non-band group {name}")
        return read_group(self._source, name, coords=self._coords(), skipped=self.skipped)

    def radiance_block(self, name: str, steps: slice, xtrack: slice) -> np.ndarray:
        """Raw radiance, fill values included: float32 ``(steps, xtrack, 1028)``; slices are 0-based array positions."""
        if name not in self.band_names:
            raise TempocodecError(f"{self.path}: no band group {name} (present: {', '.join(self.band_names)})")
        return self._source.read(name, "radiance", (steps, xtrack, slice(None)))

    def close(self) -> None:
        """Close the file handle (lazy arrays already handed out reopen it when computed)."""
        self._source.close()

    def __enter__(self) -> L1BFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _check_bands(path: Path, nc: netCDF4.Dataset, bands: list[str]) -> None:
    """Raise unless at least one band group exists and each has a float32 (mirror_step, xtrack, 1028) radiance."""
    if not bands:
        found = ", ".join(nc.groups) or "none"
        raise TempocodecError(f"{path}: no band group ({' or '.join(BANDS)}); groups found: {found}")
    for band in bands:
        var = nc[band].variables.get("radiance")
        if var is None:
            raise TempocodecError(f"{path}: {band} has no radiance variable")
        _check_radiance(path, band, tuple(var.dimensions), tuple(var.shape), plain_dtype(var))


def _check_radiance(
    path: Path, band: str, dims: tuple[str, ...], shape: tuple[int, ...], dtype: np.dtype | None
) -> None:
    """Raise unless a band's radiance is float32 with dims (mirror_step, xtrack, spectral_channel) and 1028 channels."""
    if dims != RADIANCE_DIMS:
        raise TempocodecError(f"{path}: {band}/radiance has dims {dims}, expected {RADIANCE_DIMS}")
    if shape[2] != N_CHANNELS:
        raise TempocodecError(f"{path}: {band}/radiance has {shape[2]} spectral channels, expected {N_CHANNELS}")
    if dtype != np.float32:
        raise TempocodecError(f"{path}: {band}/radiance is {dtype}, expected float32")


def open_l1b(path: str | os.PathLike) -> L1BFile:
    """Open an L1B radiance file; raises :class:`TempocodecError` for a missing, non-netCDF, truncated or
    corrupt file, no band group, or a radiance that is not float32 ``(mirror_step, xtrack, 1028)``."""
    return L1BFile(path)


def read_l1b(path: str | os.PathLike) -> L1BGranule:
    """The whole granule, lazily: bands and other top-level groups as dask-backed Datasets."""
    with open_l1b(path) as f:
        bands = {b: f.band(b) for b in f.band_names}
        others = {g: f.other_group(g) for g in f.group_names if g not in BANDS}
        return L1BGranule(attrs=dict(f.attrs), root=f.root, bands=bands, other_groups=others)


def _l1b_spec(group: str, name: str) -> VarSpec | None:
    """The layout of a known L1B variable: root variables at the root, band variables in band groups."""
    if group == "":
        return L1B_ROOT_VARS.get(name)
    return L1B_BAND_VARS.get(name) if group in BANDS else None


L1B_LAYOUT = NetCDFLayout(
    root_dims=L1B_ROOT_DIMS,
    root_coords=("mirror_step",),
    group_coords={b: ("xtrack", "wavecal_par") for b in BANDS},
    spec=_l1b_spec,
    default_fill=lambda dtype: None,
)


def write_l1b(
    path: str | os.PathLike, granule: L1BGranule, *, replace: Replaceable | None = NETCDF_FILE, deflate: int | None = None
) -> None:
    """Write ``granule`` as an L1B file in the real layout (see the module docstring and ``docs/format-tempo.md``).

    Attributes of ``granule.root`` are merged under ``granule.attrs`` as global attributes. A band without an
    ``xtrack`` (or ``wavecal_par``) variable for that dimension gets ``0..n-1`` (int32; ``wavecal_par`` is the
    dummy variable of the real files), and a root without ``mirror_step`` takes it from a band or ``0..n-1``.
    Known variables get the real fills, units and flags when the Dataset gives none. Raises
    :class:`TempocodecError` (naming ``path``) for a granule the reader would refuse; an existing ``path`` is
    replaced only as ``replace`` allows (see :func:`~tempocodec.granule.netcdf_write.write_netcdf`) and only once the
    new file is complete. ``deflate``: the deflate level (+ shuffle) of the 2-D and larger variables, 0..9; None
    gives the real files' level 1.
    """
    path = Path(path)
    unknown = [b for b in granule.bands if b not in BANDS]
    if unknown:
        raise TempocodecError(f"{path}: unknown band group(s) {', '.join(unknown)}; bands are {', '.join(BANDS)}")
    clash = [g for g in granule.other_groups if g in BANDS]
    if clash:
        raise TempocodecError(f"{path}: band group(s) {', '.join(clash)} given as other_groups")
    if not granule.bands:
        raise TempocodecError(f"{path}: the granule has no band group")
    bands: dict[str, xr.Dataset] = {}
    for band, ds in granule.bands.items():
        if "radiance" not in ds.variables:
            raise TempocodecError(f"{path}: {band} has no radiance variable")
        rad = ds["radiance"]
        dtype = target_dtype(path, f"{band}/radiance", rad.dtype, L1B_BAND_VARS["radiance"])
        _check_radiance(path, band, tuple(map(str, rad.dims)), rad.shape, dtype)
        bands[band] = ds
    attrs = {**granule.root.attrs, **granule.attrs}
    root = granule.root.copy()
    root.attrs = {}
    write_netcdf(path, L1B_LAYOUT, attrs, root, {**bands, **granule.other_groups}, replace=replace, deflate=deflate)
