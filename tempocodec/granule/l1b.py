"""TEMPO Level-1B radiance files (``TEMPO_RAD_L1``): read lazily, write back in the real layout.

The layout follows ``docs/format-tempo.md``: netCDF-4/HDF5, root dimensions ``mirror_step``, ``corner`` and
``cov``; one group per band (``band_290_490_nm``, ``band_540_740_nm``) that defines its own ``xtrack`` and
``spectral_channel`` dimensions; ``radiance`` float32 ``(mirror_step, xtrack, spectral_channel)`` in
photons/s/cm^2/nm/sr with fill ``-9.96921e36``.

Values are kept *raw*: nothing is masked or scaled, ``_FillValue`` stays in each variable's ``attrs``, and
attributes keep their numpy types, so a file read and written again is bitwise the same.

This module also holds the netCDF machinery that :mod:`tempocodec.granule.l2` shares: :class:`NetCDFSource`
(a read-only file behind lazy dask arrays), :func:`read_group` and :func:`write_netcdf` (atomic, streamed).
"""

from __future__ import annotations

import os
import re
import uuid
import weakref
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import dask.array as da
import netCDF4
import numpy as np
import xarray as xr
from xarray.backends.locks import HDF5_LOCK

from tempocodec.errors import TempocodecError
from tempocodec.prepare.normalize import RADIANCE_FILL

BANDS: tuple[str, str] = ("band_290_490_nm", "band_540_740_nm")
N_CHANNELS = 1028
RADIANCE_DIMS = ("mirror_step", "xtrack", "spectral_channel")
GEO_FILL = np.float32(9.96921e36)
INT16_FILL = np.int16(-32767)
INT32_FILL = np.int32(-2147483647)
RADIANCE_UNITS = "photons/s/cm^2/nm/sr"
TEMPO_EPOCH = datetime(1980, 1, 6, tzinfo=UTC)
TIME_UNITS = "seconds since 1980-01-06T00:00:00Z"
L1B_ROOT_DIMS = frozenset({"mirror_step", "corner", "cov"})
BLOCK_BYTES = 64 * 2**20

# ------------------------------------------------------------------------------------------------ layout tables


@dataclass(frozen=True)
class VarSpec:
    """The real layout of one known variable: dtype on disk, default ``_FillValue`` (None: none), default attributes.

    The writer uses it only to fill in what a dataset leaves out: attributes a dataset gives win, and a dtype is
    changed only from numpy's defaults (float64 → a float spec, int64 → an integer spec).
    """

    dtype: np.dtype
    fill: Any = None
    attrs: Mapping[str, Any] = field(default_factory=dict)


def var_spec(dtype: str, fill: Any = None, **attrs: Any) -> VarSpec:
    """A :class:`VarSpec` from a dtype string and keyword attributes."""
    return VarSpec(np.dtype(dtype), fill, attrs)


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

# attributes that name other variables: a default one is written only when those variables are in the group
_REFERENCE_ATTRS = {"bounds": 1, "coordinates": 2, "ancillary_variables": 1}

# ------------------------------------------------------------------------------------------------ file names

_NAME_RE = re.compile(
    r"^TEMPO_(?P<product>[A-Z0-9]+)_L(?P<level>\d)_V(?P<version>\d{2})_(?P<time>\d{8}T\d{6}Z)"
    r"(?:_S(?P<scan>\d{3})(?:G(?P<granule>\d{2}))?)?\.nc$"
)


@dataclass(frozen=True)
class TempoName:
    """The parts of a TEMPO file name ``TEMPO_<product>_L<level>_V<vv>_<YYYYMMDDThhmmssZ>[_S<sss>[G<gg>]].nc``."""

    product: str
    level: int
    version: int
    time: datetime
    scan: int | None = None
    granule: int | None = None


def tempo_filename(
    product: str, level: int, time: datetime, scan: int | None = None, granule: int | None = None, version: int = 3
) -> str:
    """The TEMPO file name for ``product`` at level ``level``, e.g. ``TEMPO_RAD_L1_V03_20250406T215103Z_S012G07.nc``.

    ``time`` is the granule start (a naive datetime is taken as UTC); ``scan`` 0–999 and ``granule`` 0–99 are
    left out when None (irradiance files have neither, L3 files only a scan).
    """
    if not re.fullmatch(r"[A-Z0-9]+", product):
        raise TempocodecError(f"TEMPO file name: product {product!r} must be upper-case letters and digits")
    for label, value, top in (
        ("level", level, 9),
        ("version", version, 99),
        ("scan", scan, 999),
        ("granule", granule, 99),
    ):
        if value is not None and not 0 <= value <= top:
            raise TempocodecError(f"TEMPO file name: {label} {value} is outside 0..{top}")
    if granule is not None and scan is None:
        raise TempocodecError("TEMPO file name: a granule number needs a scan number")
    utc = time.astimezone(UTC) if time.tzinfo else time
    name = f"TEMPO_{product}_L{level}_V{version:02d}_{utc:%Y%m%dT%H%M%SZ}"
    if scan is not None:
        name += f"_S{scan:03d}" + (f"G{granule:02d}" if granule is not None else "")
    return name + ".nc"


def l1b_filename(time: datetime, scan: int, granule: int, version: int = 3, product: str = "RAD") -> str:
    """The L1B radiance file name, e.g. ``TEMPO_RAD_L1_V03_20250406T215103Z_S012G07.nc`` ("RADT": twilight)."""
    return tempo_filename(product, 1, time, scan, granule, version)


def parse_tempo_filename(name: str | os.PathLike) -> TempoName | None:
    """The parts of a TEMPO file name (directories ignored), or None when ``name`` does not follow the pattern."""
    match = _NAME_RE.match(Path(name).name)
    if match is None:
        return None
    parts = match.groupdict()
    return TempoName(
        product=parts["product"],
        level=int(parts["level"]),
        version=int(parts["version"]),
        time=datetime.strptime(parts["time"], "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC),
        scan=None if parts["scan"] is None else int(parts["scan"]),
        granule=None if parts["granule"] is None else int(parts["granule"]),
    )


# ------------------------------------------------------------------------------------------------ reading


def _one_line(err: BaseException) -> str:
    """An exception's message on one line."""
    return " ".join(str(err).split()) or type(err).__name__


def _close_quietly(state: dict[str, Any]) -> None:
    """Close the netCDF handle in ``state`` if the HDF5 lock is free now (a finalizer must never wait for it)."""
    ds = state.get("ds")
    if ds is not None and HDF5_LOCK.acquire(blocking=False):
        try:
            if ds.isopen():
                ds.close()
        finally:
            HDF5_LOCK.release()
        state["ds"] = None


class NetCDFSource:
    """A netCDF-4 file opened read-only, shared by the lazy arrays of the Datasets read from it.

    Every call into netCDF/HDF5 holds xarray's process-wide HDF5 lock, so dask threads, xarray's own netCDF
    reads and this module never enter the (not thread-safe) HDF5 library together. After :meth:`close`, a
    later read opens the file again; the handle is closed when the last array using it is garbage-collected.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        """Open ``path``; a missing, unreadable, truncated or non-netCDF file raises :class:`TempocodecError`."""
        self.path = Path(path)
        if not self.path.exists():
            raise TempocodecError(f"{self.path}: no such file")
        if not self.path.is_file():
            raise TempocodecError(f"{self.path}: not a file")
        self._state: dict[str, Any] = {"ds": None}
        weakref.finalize(self, _close_quietly, self._state)
        with HDF5_LOCK:
            self._open()

    def _open(self) -> netCDF4.Dataset:
        """The open handle (opened now if needed); the caller holds the HDF5 lock."""
        ds = self._state["ds"]
        if ds is None or not ds.isopen():
            try:
                ds = netCDF4.Dataset(self.path, "r")
            except (OSError, RuntimeError, ValueError) as err:
                raise TempocodecError(
                    f"{self.path}: not a readable netCDF-4/HDF5 file (truncated or corrupt?): {_one_line(err)}"
                ) from None
            ds.set_auto_maskandscale(False)
            ds.set_auto_chartostring(False)
            self._state["ds"] = ds
        return ds

    def group(self, name: str | None) -> netCDF4.Group:
        """The root (``name`` None or "") or a top-level group; the caller holds the HDF5 lock."""
        ds = self._open()
        return ds[name] if name else ds

    def group_names(self) -> list[str]:
        """Names of the top-level groups, in file order."""
        with HDF5_LOCK:
            return list(self._open().groups)

    def read(self, group: str | None, name: str, key: Any = Ellipsis) -> np.ndarray:
        """Raw values of ``group/name`` at ``key`` (slices), fill values included."""
        with HDF5_LOCK:
            try:
                var = self.group(group).variables[name]
                var.set_auto_maskandscale(False)
                var.set_auto_chartostring(False)
                return np.asarray(var[key])
            except TempocodecError:  # the file would not open: already one line naming it
                raise
            except (OSError, RuntimeError, KeyError, IndexError, ValueError) as err:
                where = f"{group}/{name}" if group else name
                raise TempocodecError(f"{self.path}: cannot read {where}: {_one_line(err)}") from None

    def close(self) -> None:
        """Close the handle now (a later read reopens the file)."""
        with HDF5_LOCK:
            ds = self._state["ds"]
            if ds is not None and ds.isopen():
                ds.close()
            self._state["ds"] = None

    def __enter__(self) -> NetCDFSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _LazyVariable:
    """A netCDF variable as a duck array for :func:`dask.array.from_array` (reads raw slices through the source)."""

    def __init__(
        self, source: NetCDFSource, group: str | None, name: str, shape: tuple[int, ...], dtype: np.dtype
    ) -> None:
        self.source, self.group_name, self.name, self.shape, self.dtype = source, group, name, shape, dtype
        self.ndim = len(shape)

    def __getitem__(self, key: Any) -> np.ndarray:
        return self.source.read(self.group_name, self.name, key)


def _plain_dtype(var: netCDF4.Variable) -> np.dtype | None:
    """A variable's numpy dtype (object for variable-length strings), or None for compound, enum and vlen types."""
    if isinstance(var.datatype, (netCDF4.CompoundType, netCDF4.EnumType)):
        return None
    if isinstance(var.datatype, netCDF4.VLType):
        return np.dtype(object) if var.dtype is str else None
    return np.dtype(var.dtype)


def _note(skipped: list[str] | None, item: str) -> None:
    """Append ``item`` to ``skipped`` once (when a list is given)."""
    if skipped is not None and item not in skipped:
        skipped.append(item)


def _attrs(
    obj: netCDF4.Dataset | netCDF4.Group | netCDF4.Variable, where: str, skipped: list[str] | None
) -> dict[str, Any]:
    """The attributes of a group or variable with the types netCDF4 reads them as (an enum attribute: its integer).

    Attributes netCDF4 cannot read (compound types) are left out and named ``where:key`` in ``skipped``.
    """
    out: dict[str, Any] = {}
    for key in obj.ncattrs():
        try:
            out[key] = obj.getncattr(key)
        except KeyError:
            _note(skipped, f"{where}:{key}")
    return out


def _dask_chunks(dims: tuple[str, ...], shape: tuple[int, ...]) -> tuple[int, ...]:
    """Dask chunks for a variable: one mirror step per chunk for 3-D and larger, else one chunk."""
    if len(shape) >= 3 and dims[0] == "mirror_step":
        return (1, *shape[1:])
    return shape


def read_group(
    source: NetCDFSource,
    group: str | None,
    *,
    coords: Mapping[str, xr.Variable] | None = None,
    drop: Callable[[str, tuple[str, ...]], bool] | None = None,
    skipped: list[str] | None = None,
) -> xr.Dataset:
    """The variables and attributes of one group (root when ``group`` is None) as an xarray Dataset of raw values.

    Variables with two or more dimensions are dask arrays read on demand (3-D ones one mirror step per chunk);
    smaller ones are read now. ``coords`` adds coordinates defined outside the group (e.g. the root
    ``mirror_step``) for the dimensions the group uses; ``drop(name, dims)`` leaves variables out; variables of
    compound, enum or non-string vlen types are left out and their paths appended to ``skipped``.
    """
    variables: dict[str, tuple[tuple[str, ...], tuple[int, ...], np.dtype, dict[str, Any]]] = {}
    with HDF5_LOCK:
        nc = source.group(group)
        attrs = _attrs(nc, group or "/", skipped)
        for name, var in nc.variables.items():
            dims = tuple(var.dimensions)
            where = f"{group}/{name}" if group else name
            if drop is not None and drop(name, dims):
                continue
            dtype = _plain_dtype(var)
            if dtype is None:
                _note(skipped, where)
                continue
            variables[name] = (dims, tuple(var.shape), dtype, _attrs(var, where, skipped))
    out: dict[str, xr.Variable] = {}
    for name, (dims, shape, dtype, var_attrs) in variables.items():
        if len(dims) >= 2:
            lazy = _LazyVariable(source, group, name, shape, dtype)
            data = da.from_array(
                lazy,
                chunks=_dask_chunks(dims, shape),
                name=f"tempocodec-nc-{uuid.uuid4().hex}",
                asarray=True,
                fancy=False,
                meta=np.empty((0,) * len(dims), dtype=dtype),
            )
        else:
            data = source.read(group, name)
        out[name] = xr.Variable(dims, data, var_attrs)
    used = {d for v in out.values() for d in v.dims}
    extra = {d: v for d, v in (coords or {}).items() if d in used and d not in out}
    try:
        return xr.Dataset(out, coords=extra, attrs=attrs)
    except (ValueError, KeyError) as err:
        where = f"group {group}" if group else "root group"
        raise TempocodecError(f"{source.path}: {where} cannot be represented as a Dataset: {_one_line(err)}") from None


# ------------------------------------------------------------------------------------------------ writing


@dataclass(frozen=True)
class NetCDFLayout:
    """How a product's Datasets map onto a netCDF-4 file.

    ``root_dims``: dimensions defined in the root group (plus any a root variable uses); every other dimension is
    defined in each group that uses it; None puts every dimension at the root. ``root_coords``: 1-D coordinate
    variables written at the root, taken from the Datasets or made ``0..n-1`` (int32). ``group_coords``: per
    group, coordinate variables made ``0..n-1`` (int32) when missing. ``spec(group, name)``: the layout of a
    known variable ("" is the root). ``default_fill(dtype)``: ``_FillValue`` of a variable whose attributes,
    encoding and spec give none (None: no ``_FillValue``).
    """

    root_dims: frozenset[str] | None
    root_coords: tuple[str, ...]
    group_coords: Mapping[str, tuple[str, ...]]
    spec: Callable[[str, str], VarSpec | None]
    default_fill: Callable[[np.dtype], Any]


def write_netcdf(
    path: str | os.PathLike,
    layout: NetCDFLayout,
    attrs: Mapping[str, Any],
    root: xr.Dataset,
    groups: Mapping[str, xr.Dataset],
) -> None:
    """Write global ``attrs``, the ``root`` variables and one top-level group per entry of ``groups`` to ``path``.

    Variables with two or more dimensions are deflate-1 + shuffle compressed; those of three or more dimensions
    led by ``mirror_step`` are chunked one mirror step at a time, ``(1, ...)``. Variables led by ``mirror_step``
    are streamed in blocks of about :data:`BLOCK_BYTES` that follow the dask chunks, so a dask-backed array is
    never held whole. The file is written next to ``path`` and moved over it only when complete.
    """
    path = Path(path)
    root, groups = _with_coords(path, layout, root, groups)
    root_dims = _root_dims(path, layout, root, groups)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise TempocodecError(f"{path}: cannot create its directory: {_one_line(err)}") from None
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    try:
        with HDF5_LOCK:
            nc = _create(path, tmp)
        try:
            with HDF5_LOCK:
                _set_attrs(path, nc, attrs, "global attributes")
                for name, size in root_dims.items():
                    nc.createDimension(name, size)
            _write_group(path, layout, nc, "", root)
            for gname, ds in groups.items():
                with HDF5_LOCK:
                    ncg = nc.createGroup(gname)
                    _set_attrs(path, ncg, ds.attrs, f"group {gname}")
                    for dim, size in ds.sizes.items():
                        if dim not in root_dims:
                            ncg.createDimension(dim, size)
                _write_group(path, layout, ncg, gname, ds)
        finally:
            with HDF5_LOCK:
                nc.close()
        os.replace(tmp, path)
    except (OSError, RuntimeError) as err:
        tmp.unlink(missing_ok=True)
        raise TempocodecError(f"{path}: cannot write: {_one_line(err)}") from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _create(path: Path, tmp: Path) -> netCDF4.Dataset:
    """A new empty netCDF-4 file at ``tmp`` (the caller holds the HDF5 lock)."""
    try:
        return netCDF4.Dataset(tmp, "w", format="NETCDF4")
    except (OSError, RuntimeError) as err:
        raise TempocodecError(f"{path}: cannot create {tmp.name}: {_one_line(err)}") from None


def _arange(n: int) -> np.ndarray:
    return np.arange(n, dtype=np.int32)


def _with_coords(
    path: Path, layout: NetCDFLayout, root: xr.Dataset, groups: Mapping[str, xr.Dataset]
) -> tuple[xr.Dataset, dict[str, xr.Dataset]]:
    """The root with its coordinate variables (from the groups or 0..n-1); the groups without root coordinates.

    A group's copy of a root coordinate must equal the root's; group coordinates the layout asks for are added.
    """
    root = root.copy()
    for dim in layout.root_coords:
        if dim in root.variables:
            continue
        donor = next(
            (ds[dim].variable for ds in groups.values() if dim in ds.variables and ds[dim].dims == (dim,)), None
        )
        size = next((ds.sizes[dim] for ds in groups.values() if dim in ds.sizes), None)
        if donor is not None:
            root = root.assign_coords({dim: donor.copy()})
        elif size is not None:
            root = root.assign_coords({dim: (dim, _arange(size))})
    out: dict[str, xr.Dataset] = {}
    for gname, ds in groups.items():
        for dim in [d for d in root.variables if d in ds.variables and ds[d].dims == (d,) and d in root.dims]:
            if not np.array_equal(np.asarray(ds[dim].values), np.asarray(root[dim].values)):
                raise TempocodecError(f"{path}: {gname}/{dim} differs from the root {dim} coordinate")
            ds = ds.drop_vars(dim)
        for dim in layout.group_coords.get(gname, ()):
            if dim in ds.sizes and dim not in ds.variables:
                ds = ds.assign_coords({dim: (dim, _arange(ds.sizes[dim]))})
        out[gname] = ds
    return root, out


def _root_dims(path: Path, layout: NetCDFLayout, root: xr.Dataset, groups: Mapping[str, xr.Dataset]) -> dict[str, int]:
    """Sizes of the dimensions defined at the root, checked to agree across every Dataset; no dimension may be empty."""
    sizes: dict[str, int] = {}
    for where, ds in [("the root", root), *groups.items()]:
        for dim, size in ds.sizes.items():
            if size == 0:
                raise TempocodecError(f"{path}: dimension {dim} has size 0 in {where}")
            if (
                where != "the root"
                and layout.root_dims is not None
                and dim not in layout.root_dims
                and dim not in root.sizes
            ):
                continue
            if sizes.setdefault(dim, size) != size:
                raise TempocodecError(f"{path}: dimension {dim} is {size} in {where} but {sizes[dim]} elsewhere")
    ordered = [d for d in ("mirror_step", "xtrack") if d in sizes] + sorted(
        d for d in sizes if d not in ("mirror_step", "xtrack")
    )
    return {d: sizes[d] for d in ordered}


def _write_group(path: Path, layout: NetCDFLayout, nc: netCDF4.Group, gname: str, ds: xr.Dataset) -> None:
    """Create and fill every variable of ``ds`` in ``nc``, in the Dataset's variable order."""
    for name, var in ds.variables.items():
        where = f"{gname}/{name}" if gname else str(name)
        spec = layout.spec(gname, str(name))
        dtype = _target_dtype(path, where, var.dtype, spec)
        with HDF5_LOCK:
            ncvar = _create_variable(path, nc, str(name), var, dtype, spec, layout, ds, where)
        _write_values(path, ncvar, var, dtype, where)


def _target_dtype(path: Path, where: str, dtype: np.dtype, spec: VarSpec | None) -> np.dtype:
    """The on-disk dtype: the spec's in place of numpy's float64/int64 defaults, else the dtype given."""
    if dtype.kind in "mM":
        raise TempocodecError(
            f"{path}: {where} is {dtype}; write times as float64 seconds since {TEMPO_EPOCH:%Y-%m-%dT%H:%M:%SZ}"
        )
    if dtype.kind == "U":
        return np.dtype(object)
    if spec is None:
        return dtype
    if (dtype == np.float64 and spec.dtype.kind == "f") or (dtype == np.int64 and spec.dtype.kind in "iu"):
        return spec.dtype
    return dtype


def _fill_value(var: xr.Variable, dtype: np.dtype, spec: VarSpec | None, layout: NetCDFLayout) -> Any:
    """``_FillValue`` for a new variable: the attribute, else the encoding, else the spec's (when the dtype is the
    spec's), else the layout default."""
    if "_FillValue" in var.attrs:
        fill = var.attrs["_FillValue"]
    elif var.encoding.get("_FillValue") is not None:
        fill = var.encoding["_FillValue"]
    elif spec is not None and spec.fill is not None and dtype == spec.dtype:
        fill = spec.fill
    else:
        fill = layout.default_fill(dtype)
    if fill is None or dtype.kind not in "biuf":
        return None
    return np.asarray(fill).astype(dtype)[()]


def _default_attrs(spec: VarSpec | None, ds: xr.Dataset) -> dict[str, Any]:
    """The spec's default attributes, without references to variables that ``ds`` lacks."""
    if spec is None:
        return {}
    out = {}
    for key, value in spec.attrs.items():
        if key in _REFERENCE_ATTRS and not all(n in ds.variables for n in value.split()[: _REFERENCE_ATTRS[key]]):
            continue
        out[key] = value
    return out


def _create_variable(
    path: Path,
    nc: netCDF4.Group,
    name: str,
    var: xr.Variable,
    dtype: np.dtype,
    spec: VarSpec | None,
    layout: NetCDFLayout,
    ds: xr.Dataset,
    where: str,
) -> netCDF4.Variable:
    """Define one variable with its fill, compression, chunking and attributes (the caller holds the HDF5 lock)."""
    kwargs: dict[str, Any] = {}
    if var.ndim >= 2:
        kwargs.update(compression="zlib", complevel=1, shuffle=True)
    if var.ndim >= 3 and var.dims[0] == "mirror_step":
        kwargs["chunksizes"] = (1, *var.shape[1:])
    try:
        ncvar = nc.createVariable(
            name,
            str if dtype == np.dtype(object) else dtype,
            var.dims,
            fill_value=_fill_value(var, dtype, spec, layout),
            **kwargs,
        )
    except (OSError, RuntimeError, ValueError, TypeError, KeyError) as err:
        raise TempocodecError(f"{path}: cannot define {where}: {_one_line(err)}") from None
    ncvar.set_auto_maskandscale(False)
    ncvar.set_auto_chartostring(False)
    attrs = {**_default_attrs(spec, ds), **var.attrs}
    attrs.pop("_FillValue", None)
    _set_attrs(path, ncvar, attrs, where)
    return ncvar


def _attr_value(path: Path, where: str, key: str, value: Any) -> Any:
    """``value`` as netCDF4 should store it: Python ints as int32 where they fit, bools refused."""
    if isinstance(value, (bool, np.bool_)):
        raise TempocodecError(f"{path}: attribute {where}:{key} is a boolean, which netCDF cannot store; use 0 or 1")
    if isinstance(value, int) and not isinstance(value, np.integer):
        return np.int32(value) if -(2**31) < value < 2**31 else np.int64(value)
    if isinstance(value, (list, tuple)):
        if all(isinstance(v, str) for v in value):
            return list(value)
        arr = np.asarray(value)
        if arr.dtype == np.int64 and arr.size and np.abs(arr).max() < 2**31:
            return arr.astype(np.int32)
        return arr
    return value


def _set_attrs(
    path: Path, obj: netCDF4.Dataset | netCDF4.Group | netCDF4.Variable, attrs: Mapping[str, Any], where: str
) -> None:
    """Set every attribute, keeping numpy types (the caller holds the HDF5 lock)."""
    for key, value in attrs.items():
        try:
            obj.setncattr(str(key), _attr_value(path, where, str(key), value))
        except TempocodecError:  # already one line naming the attribute
            raise
        except (OSError, RuntimeError, ValueError, TypeError, KeyError) as err:
            raise TempocodecError(f"{path}: cannot write attribute {where}:{key}: {_one_line(err)}") from None


def _step_blocks(data: Any, n: int, step_bytes: int) -> Iterator[slice]:
    """Slices along the first axis of about :data:`BLOCK_BYTES` each, on dask chunk boundaries for dask arrays."""
    target = max(1, BLOCK_BYTES // max(1, step_bytes))
    if isinstance(data, da.Array):
        start = stop = 0
        for size in data.chunks[0]:
            if stop > start and stop + size - start > target:
                yield slice(start, stop)
                start = stop
            stop += size
        if stop > start:
            yield slice(start, stop)
    else:
        for start in range(0, n, target):
            yield slice(start, min(n, start + target))


def _cast(path: Path, where: str, block: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """``block`` as ``dtype``; an integer narrowing that would change a value raises."""
    if block.dtype == dtype:
        return block
    if dtype == np.dtype(object):
        return block.astype(object)
    if dtype.kind in "iu" and block.dtype.kind in "iu" and block.size:
        info = np.iinfo(dtype)
        if block.min() < info.min or block.max() > info.max:
            raise TempocodecError(f"{path}: {where} has values outside the {dtype} range")
    return block.astype(dtype)


def _write_values(path: Path, ncvar: netCDF4.Variable, var: xr.Variable, dtype: np.dtype, where: str) -> None:
    """Write the values of ``var``, streaming along a leading ``mirror_step`` in blocks."""
    data = var.data
    if var.ndim >= 1 and var.dims[0] == "mirror_step":
        step_bytes = int(np.prod(var.shape[1:], dtype=np.int64)) * max(var.dtype.itemsize, dtype.itemsize)
        blocks = list(_step_blocks(data, var.shape[0], step_bytes))
    else:
        blocks = [slice(None)]
    for block in blocks:
        values = _cast(path, where, np.asarray(data[block] if var.ndim else data), dtype)
        with HDF5_LOCK:
            try:
                if var.ndim:
                    ncvar[block] = values
                else:
                    ncvar.assignValue(values)
            except (OSError, RuntimeError, ValueError, TypeError, IndexError) as err:
                raise TempocodecError(f"{path}: cannot write {where}: {_one_line(err)}") from None


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
            with HDF5_LOCK:
                _check_bands(self.path, self._source.group(None), self.band_names)
            root = read_group(self._source, None, skipped=self.skipped)
        except TempocodecError:  # before ValueError, which it is
            self._source.close()
            raise
        except (OSError, RuntimeError, KeyError, ValueError, AttributeError) as err:
            self._source.close()
            raise TempocodecError(f"{self.path}: cannot read the L1B layout: {_one_line(err)}") from None
        self.attrs = dict(root.attrs)
        root.attrs = {}
        self.root = root

    def _coords(self) -> dict[str, xr.Variable]:
        """Root coordinate variables that band groups use (``mirror_step``)."""
        return {d: self.root[d].variable for d in self.root.dims if d in self.root.variables}

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
        _check_radiance(path, band, tuple(var.dimensions), tuple(var.shape), _plain_dtype(var))


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


def write_l1b(path: str | os.PathLike, granule: L1BGranule) -> None:
    """Write ``granule`` as an L1B file in the real layout (see the module docstring and ``docs/format-tempo.md``).

    Attributes of ``granule.root`` are merged under ``granule.attrs`` as global attributes. A band without an
    ``xtrack`` (or ``wavecal_par``) variable for that dimension gets ``0..n-1`` (int32; ``wavecal_par`` is the
    dummy variable of the real files), and a root without ``mirror_step`` takes it from a band or ``0..n-1``.
    Known variables get the real fills, units and flags when the Dataset gives none. Raises
    :class:`TempocodecError` (naming ``path``) for a granule the reader would refuse; ``path`` is replaced only
    once the new file is complete.
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
        dtype = _target_dtype(path, f"{band}/radiance", rad.dtype, L1B_BAND_VARS["radiance"])
        _check_radiance(path, band, tuple(map(str, rad.dims)), rad.shape, dtype)
        bands[band] = ds
    attrs = {**granule.root.attrs, **granule.attrs}
    root = granule.root.copy()
    root.attrs = {}
    write_netcdf(path, L1B_LAYOUT, attrs, root, {**bands, **granule.other_groups})
