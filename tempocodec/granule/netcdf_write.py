"""The netCDF-4 writer of the TEMPO products: Datasets in a product's :class:`NetCDFLayout`, atomic and streamed.

Variables of two or more dimensions are deflated (level 1 + shuffle by default, as in the original TEMPO files; any
level 0..9, 0 leaving them uncompressed and contiguous); those of three or more dimensions led by ``mirror_step``
are chunked one mirror step at a time, and their chunks are deflated on every CPU and written with h5py
(:mod:`tempocodec.granule.h5chunks`) after netCDF4 has defined them and closed the file, since netCDF4 deflates
one chunk at a time in one thread under the HDF5 lock.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator, Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import netCDF4
import numpy as np
import xarray as xr

from tempocodec.atomic import Replaceable, atomic_file
from tempocodec.errors import TempocodecError
from tempocodec.granule.netcdf import NETCDF_FILE, TEMPO_EPOCH, VarSpec, hdf5_lock, is_dask, materialise, one_line

BLOCK_BYTES = 64 * 2**20
DEFAULT_DEFLATE = 1
"""The deflate level of the original TEMPO files (with shuffle)."""
MAX_DEFLATE = 9

# attributes that name other variables: a default one is written only when those variables are in the group
_REFERENCE_ATTRS = {"bounds": 1, "coordinates": 2, "ancillary_variables": 1}

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
    *,
    replace: Replaceable | None = NETCDF_FILE,
    deflate: int | None = None,
) -> None:
    """Write global ``attrs``, the ``root`` variables and one top-level group per entry of ``groups`` to ``path``.

    Variables with two or more dimensions are compressed with deflate level ``deflate`` + shuffle (None: the
    original files' :data:`DEFAULT_DEFLATE`; 0: not compressed, and contiguous); when compressed, those of three or
    more dimensions led by ``mirror_step`` are chunked one mirror step at a time, ``(1, ...)``, and deflated on
    every CPU (module docstring). Variables led by ``mirror_step`` are streamed in blocks of about
    :data:`BLOCK_BYTES` that follow the dask chunks, so a dask-backed array is never held whole. The file is
    written next to ``path`` and moved into place only when complete (:func:`tempocodec.atomic.atomic_file`); an
    existing ``path`` is replaced only as ``replace`` allows (default: when it is a netCDF-4 file; None: never).
    """
    path = Path(path)
    level = deflate_level(deflate)
    root, groups = _with_coords(path, layout, root, groups)
    root_dims = _root_dims(path, layout, root, groups)
    with atomic_file(path, replace=replace) as tmp:
        try:
            _write_file(path, tmp, layout, attrs, root_dims, root, groups, level)
        except (OSError, RuntimeError) as err:
            raise TempocodecError(f"{path}: cannot write: {one_line(err)}") from None


def deflate_level(level: Any) -> int:
    """The deflate level to write: ``level``, or :data:`DEFAULT_DEFLATE` for None; raise unless an integer 0..9."""
    if level is None:
        return DEFAULT_DEFLATE
    if isinstance(level, (bool, np.bool_)) or not isinstance(level, (int, np.integer)) or not 0 <= level <= MAX_DEFLATE:
        raise TempocodecError(f"deflate level must be an integer from 0 (uncompressed) to {MAX_DEFLATE}, got {level!r}")
    return int(level)


class _Deferred(NamedTuple):
    """A variable netCDF4 defines but leaves empty, for :func:`_write_chunks`: ``where`` is its path in the file."""

    where: str
    var: xr.Variable
    dtype: np.dtype


def _write_file(path: Path, tmp: Path, layout: NetCDFLayout, attrs: Mapping[str, Any], root_dims: dict[str, int],
                root: xr.Dataset, groups: Mapping[str, xr.Dataset], level: int) -> None:
    """The body of :func:`write_netcdf`: the netCDF-4 file ``tmp`` (``path`` names it in errors), written by netCDF4
    but for the variables :func:`_by_chunks` picks, filled once netCDF4 has closed the file."""
    with hdf5_lock():
        nc = _create(path, tmp)
    deferred: list[_Deferred] = []
    try:
        with hdf5_lock():
            _set_attrs(path, nc, attrs, "global attributes")
            for name, size in root_dims.items():
                nc.createDimension(name, size)
        deferred += _write_group(path, layout, nc, "", root, level)
        for gname, ds in groups.items():
            with hdf5_lock():
                ncg = nc.createGroup(gname)
                _set_attrs(path, ncg, ds.attrs, f"group {gname}")
                for dim, size in ds.sizes.items():
                    if dim not in root_dims:
                        ncg.createDimension(str(dim), size)
            deferred += _write_group(path, layout, ncg, gname, ds, level)
    finally:
        with hdf5_lock():
            nc.close()
    if deferred:
        _write_chunks(path, tmp, deferred)


def _create(path: Path, tmp: Path) -> netCDF4.Dataset:
    """A new netCDF-4 file at ``tmp``, the atomic writer's empty partial (the caller holds the HDF5 lock)."""
    try:
        return netCDF4.Dataset(tmp, "w", format="NETCDF4")
    except (OSError, RuntimeError) as err:
        raise TempocodecError(f"{path}: cannot create {tmp.name}: {one_line(err)}") from None


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
        for dim in [str(d) for d in root.variables if d in ds.variables and ds[d].dims == (d,) and d in root.dims]:
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
        for name, size in ds.sizes.items():
            dim = str(name)
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


def _write_group(
    path: Path, layout: NetCDFLayout, nc: netCDF4.Dataset, gname: str, ds: xr.Dataset, level: int
) -> list[_Deferred]:
    """Create every variable of ``ds`` in ``nc``, in the Dataset's variable order, and fill those that
    :func:`_by_chunks` leaves to netCDF4; return the others."""
    deferred = []
    for name, var in ds.variables.items():
        where = f"{gname}/{name}" if gname else str(name)
        spec = layout.spec(gname, str(name))
        dtype = target_dtype(path, where, var.dtype, spec)
        with hdf5_lock():
            ncvar = _create_variable(path, nc, str(name), var, dtype, spec, layout, ds, where, level)
        if _by_chunks(var, dtype, level):
            deferred.append(_Deferred(where, var, dtype))
        else:
            _write_values(path, ncvar, var, dtype, where)
    return deferred


def _step_chunked(var: xr.Variable, level: int) -> bool:
    """Whether ``var`` is chunked one mirror step at a time: deflated, three or more dimensions led by mirror_step."""
    return level > 0 and var.ndim >= 3 and var.dims[0] == "mirror_step"


def _by_chunks(var: xr.Variable, dtype: np.dtype, level: int) -> bool:
    """Whether ``var`` is written chunk by chunk (:func:`_write_chunks`): a step-chunked array of numbers."""
    return _step_chunked(var, level) and dtype.kind in "biuf"


def target_dtype(path: Path, where: str, dtype: np.dtype, spec: VarSpec | None) -> np.dtype:
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
    nc: netCDF4.Dataset,
    name: str,
    var: xr.Variable,
    dtype: np.dtype,
    spec: VarSpec | None,
    layout: NetCDFLayout,
    ds: xr.Dataset,
    where: str,
    level: int,
) -> netCDF4.Variable:
    """Define one variable with its fill, compression (deflate ``level``), chunking and attributes (the caller holds
    the HDF5 lock)."""
    kwargs: dict[str, Any] = {}
    if level and var.ndim >= 2:
        kwargs.update(compression="zlib", complevel=level, shuffle=True)
    if _step_chunked(var, level):
        kwargs["chunksizes"] = (1, *var.shape[1:])
    try:
        ncvar = nc.createVariable(
            name,
            str if dtype == np.dtype(object) else dtype,
            tuple(str(d) for d in var.dims),
            fill_value=_fill_value(var, dtype, spec, layout),
            **kwargs,
        )
    except (OSError, RuntimeError, ValueError, TypeError, KeyError) as err:
        raise TempocodecError(f"{path}: cannot define {where}: {one_line(err)}") from None
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
            raise TempocodecError(f"{path}: cannot write attribute {where}:{key}: {one_line(err)}") from None


def _step_blocks(data: Any, n: int, step_bytes: int) -> Iterator[slice]:
    """Slices along the first axis of about :data:`BLOCK_BYTES` each, on dask chunk boundaries for dask arrays."""
    target = max(1, BLOCK_BYTES // max(1, step_bytes))
    if is_dask(data):
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


def _blocks(var: xr.Variable, dtype: np.dtype) -> list[slice]:
    """The blocks ``var`` is written in: :func:`_step_blocks` along a leading ``mirror_step``, else all at once."""
    if var.ndim >= 1 and var.dims[0] == "mirror_step":
        step_bytes = int(np.prod(var.shape[1:], dtype=np.int64)) * max(var.dtype.itemsize, dtype.itemsize)
        return list(_step_blocks(var.data, var.shape[0], step_bytes))
    return [slice(None)]


_ON_WRITE: ContextVar[Callable[[int], None] | None] = ContextVar("tempocodec_on_write", default=None)


@contextlib.contextmanager
def on_write(callback: Callable[[int], None]) -> Iterator[None]:
    """Call ``callback(nbytes)`` after each block of variable values written inside the block (a progress bar)."""
    token = _ON_WRITE.set(callback)
    try:
        yield
    finally:
        _ON_WRITE.reset(token)


def _written(values: np.ndarray) -> None:
    """Tell the :func:`on_write` callback, if any, of a block just written."""
    callback = _ON_WRITE.get()
    if callback is not None:
        callback(values.nbytes)


def _write_values(path: Path, ncvar: netCDF4.Variable, var: xr.Variable, dtype: np.dtype, where: str) -> None:
    """Write the values of ``var`` through netCDF4, streaming along a leading ``mirror_step`` in blocks."""
    data = var.data
    for block in _blocks(var, dtype):
        values = _cast(path, where, materialise(data[block] if var.ndim else data), dtype)
        with hdf5_lock():
            try:
                if var.ndim:
                    ncvar[block] = values
                else:
                    ncvar.assignValue(values)
            except (OSError, RuntimeError, ValueError, TypeError, IndexError) as err:
                raise TempocodecError(f"{path}: cannot write {where}: {one_line(err)}") from None
        _written(values)


def _write_chunks(path: Path, tmp: Path, deferred: list[_Deferred]) -> None:
    """Fill the ``deferred`` variables of ``tmp`` (closed by netCDF4) block by block, each chunk deflated in parallel
    and written with h5py (:class:`~tempocodec.granule.h5chunks.ChunkWriter`)."""
    from tempocodec.granule.h5chunks import ChunkWriter  # here: h5py is loaded only by a writer that needs it

    with ChunkWriter(tmp) as out:
        for where, var, dtype in deferred:
            for block in _blocks(var, dtype):
                values = _cast(path, where, materialise(var.data[block]), dtype)
                out.write(f"/{where}", block.start, values)
                _written(values)
