"""netCDF-4 machinery shared by the TEMPO readers and writers (:mod:`~tempocodec.granule.l1b`, :mod:`~tempocodec.granule.l2`).

:class:`NetCDFSource` is a read-only file behind lazy dask arrays, :func:`read_group` turns one group into an
xarray Dataset of raw values, and :func:`write_netcdf` writes Datasets in a product's :class:`NetCDFLayout`
(atomic, streamed). Values are kept *raw*: nothing is masked or scaled, ``_FillValue`` stays in each variable's
``attrs``, and attributes keep their numpy types, so a file read and written again is bitwise the same.
"""

from __future__ import annotations

import contextlib
import os
import sys
import uuid
import weakref
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import netCDF4
import numpy as np
import xarray as xr
from xarray.backends.locks import HDF5_LOCK

from tempocodec.atomic import Replaceable, atomic_file
from tempocodec.errors import TempocodecError

INT16_FILL = np.int16(-32767)
INT32_FILL = np.int32(-2147483647)
TEMPO_EPOCH = datetime(1980, 1, 6, tzinfo=UTC)
TIME_UNITS = "seconds since 1980-01-06T00:00:00Z"
BLOCK_BYTES = 64 * 2**20
HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"


def is_netcdf4(path: Path) -> bool:
    """Whether ``path`` is a regular file that starts with the HDF5 signature, as every netCDF-4 file does."""
    try:
        with path.open("rb") as f:
            return path.is_file() and f.read(len(HDF5_SIGNATURE)) == HDF5_SIGNATURE
    except OSError:
        return False


NETCDF_FILE = Replaceable(is_netcdf4, "a netCDF-4 file")
"""What a netCDF writer may replace (``decompress --overwrite``, ``query -o ... --overwrite``, rewriting a granule)."""

# ------------------------------------------------------------------------------------------------ variable specs


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


# attributes that name other variables: a default one is written only when those variables are in the group
_REFERENCE_ATTRS = {"bounds": 1, "coordinates": 2, "ancillary_variables": 1}

# ------------------------------------------------------------------------------------------------ reading


def one_line(err: BaseException) -> str:
    """An exception's message on one line."""
    return " ".join(str(err).split()) or type(err).__name__


_UNCLOSED: list[netCDF4.Dataset] = []
"""Handles a finalizer found the HDF5 lock taken for: netCDF4 would close them when they are deallocated, in
whatever thread that happens and outside the lock, racing another thread's read; the next holder closes them."""


@contextlib.contextmanager
def hdf5_lock() -> Iterator[None]:
    """Hold xarray's process-wide HDF5 lock (netCDF-C and HDF5 are not thread-safe), first closing handles left by
    :func:`_close_quietly`."""
    with HDF5_LOCK:
        while _UNCLOSED:
            ds = _UNCLOSED.pop()
            if ds.isopen():
                ds.close()
        yield


def _close_quietly(state: dict[str, Any]) -> None:
    """Close the netCDF handle in ``state``, now if the HDF5 lock is free, else on the lock's next use (a finalizer
    must never wait for the lock: the thread holding it may be the one collecting garbage)."""
    ds, state["ds"] = state.get("ds"), None
    if ds is None:
        return
    if HDF5_LOCK.acquire(blocking=False):
        try:
            if ds.isopen():
                ds.close()
        finally:
            HDF5_LOCK.release()
    else:
        _UNCLOSED.append(ds)


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
        if not is_netcdf4(self.path):  # a foreign file never reaches netCDF-C/HDF5 (their error for one varies by build)
            raise TempocodecError(f"{self.path}: not a readable netCDF-4/HDF5 file (no HDF5 signature at its start)")
        self._state: dict[str, Any] = {"ds": None}
        weakref.finalize(self, _close_quietly, self._state)
        with hdf5_lock():
            self._open()

    def _open(self) -> netCDF4.Dataset:
        """The open handle (opened now if needed); the caller holds the HDF5 lock."""
        ds = self._state["ds"]
        if ds is None or not ds.isopen():
            try:
                ds = netCDF4.Dataset(self.path, "r")
            except (OSError, RuntimeError, ValueError) as err:
                raise TempocodecError(
                    f"{self.path}: not a readable netCDF-4/HDF5 file (truncated or corrupt?): {one_line(err)}"
                ) from None
            ds.set_auto_maskandscale(False)
            ds.set_auto_chartostring(False)
            self._state["ds"] = ds
        return ds

    def group(self, name: str | None) -> netCDF4.Dataset:
        """The root (``name`` None or "") or a top-level group (a ``netCDF4.Group``, a kind of Dataset); the caller holds
        the HDF5 lock."""
        ds = self._open()
        return ds[name] if name else ds

    def group_names(self) -> list[str]:
        """Names of the top-level groups, in file order."""
        with hdf5_lock():
            return list(self._open().groups)

    def read(self, group: str | None, name: str, key: Any = Ellipsis) -> np.ndarray:
        """Raw values of ``group/name`` at ``key`` (slices), fill values included."""
        with hdf5_lock():
            try:
                var = self.group(group).variables[name]
                var.set_auto_maskandscale(False)
                var.set_auto_chartostring(False)
                return np.asarray(var[key])
            except TempocodecError:  # the file would not open: already one line naming it
                raise
            except (OSError, RuntimeError, KeyError, IndexError, ValueError) as err:
                where = f"{group}/{name}" if group else name
                raise TempocodecError(f"{self.path}: cannot read {where}: {one_line(err)}") from None

    def close(self) -> None:
        """Close the handle now (a later read reopens the file)."""
        with hdf5_lock():
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


def plain_dtype(var: netCDF4.Variable) -> np.dtype | None:
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
    with hdf5_lock():
        nc = source.group(group)
        attrs = _attrs(nc, group or "/", skipped)
        for name, var in nc.variables.items():
            dims = tuple(var.dimensions)
            where = f"{group}/{name}" if group else name
            if drop is not None and drop(name, dims):
                continue
            dtype = plain_dtype(var)
            if dtype is None:
                _note(skipped, where)
                continue
            variables[name] = (dims, tuple(var.shape), dtype, _attrs(var, where, skipped))
    import dask.array as da  # here: info reads no granule and needs no dask.array

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
        raise TempocodecError(f"{source.path}: {where} cannot be represented as a Dataset: {one_line(err)}") from None


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
    *,
    replace: Replaceable | None = NETCDF_FILE,
) -> None:
    """Write global ``attrs``, the ``root`` variables and one top-level group per entry of ``groups`` to ``path``.

    Variables with two or more dimensions are deflate-1 + shuffle compressed; those of three or more dimensions
    led by ``mirror_step`` are chunked one mirror step at a time, ``(1, ...)``. Variables led by ``mirror_step``
    are streamed in blocks of about :data:`BLOCK_BYTES` that follow the dask chunks, so a dask-backed array is
    never held whole. The file is written next to ``path`` and moved into place only when complete
    (:func:`tempocodec.atomic.atomic_file`); an existing ``path`` is replaced only as ``replace`` allows
    (default: when it is a netCDF-4 file; None: never).
    """
    path = Path(path)
    root, groups = _with_coords(path, layout, root, groups)
    root_dims = _root_dims(path, layout, root, groups)
    with atomic_file(path, replace=replace) as tmp:
        try:
            _write_file(path, tmp, layout, attrs, root_dims, root, groups)
        except (OSError, RuntimeError) as err:
            raise TempocodecError(f"{path}: cannot write: {one_line(err)}") from None


def _write_file(path: Path, tmp: Path, layout: NetCDFLayout, attrs: Mapping[str, Any], root_dims: dict[str, int],
                root: xr.Dataset, groups: Mapping[str, xr.Dataset]) -> None:
    """The body of :func:`write_netcdf`: the netCDF-4 file ``tmp`` (``path`` names it in errors)."""
    with hdf5_lock():
        nc = _create(path, tmp)
    try:
        with hdf5_lock():
            _set_attrs(path, nc, attrs, "global attributes")
            for name, size in root_dims.items():
                nc.createDimension(name, size)
        _write_group(path, layout, nc, "", root)
        for gname, ds in groups.items():
            with hdf5_lock():
                ncg = nc.createGroup(gname)
                _set_attrs(path, ncg, ds.attrs, f"group {gname}")
                for dim, size in ds.sizes.items():
                    if dim not in root_dims:
                        ncg.createDimension(str(dim), size)
            _write_group(path, layout, ncg, gname, ds)
    finally:
        with hdf5_lock():
            nc.close()


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


def _write_group(path: Path, layout: NetCDFLayout, nc: netCDF4.Dataset, gname: str, ds: xr.Dataset) -> None:
    """Create and fill every variable of ``ds`` in ``nc``, in the Dataset's variable order."""
    for name, var in ds.variables.items():
        where = f"{gname}/{name}" if gname else str(name)
        spec = layout.spec(gname, str(name))
        dtype = target_dtype(path, where, var.dtype, spec)
        with hdf5_lock():
            ncvar = _create_variable(path, nc, str(name), var, dtype, spec, layout, ds, where)
        _write_values(path, ncvar, var, dtype, where)


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
    if _is_dask(data):
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


def materialise(data: Any) -> np.ndarray:
    """``data`` as one numpy array; a dask array is computed chunk by chunk into a buffer of its size, so its chunks
    and their concatenation are never all held at once. Always on local threads: under a ``dask.distributed``
    default client the workers would fill copies of the buffer, and this one would stay uninitialised."""
    if not _is_dask(data):
        return np.asarray(data)
    out = np.empty(data.shape, data.dtype)
    sys.modules["dask.array"].store(data, out, lock=False, scheduler="threads")
    return out


def _is_dask(data: Any) -> bool:
    """Whether ``data`` is a dask array (there is none while dask.array is not imported, and this does not import it)."""
    da = sys.modules.get("dask.array")
    return da is not None and isinstance(data, da.Array)


def _write_values(path: Path, ncvar: netCDF4.Variable, var: xr.Variable, dtype: np.dtype, where: str) -> None:
    """Write the values of ``var``, streaming along a leading ``mirror_step`` in blocks."""
    data = var.data
    if var.ndim >= 1 and var.dims[0] == "mirror_step":
        step_bytes = int(np.prod(var.shape[1:], dtype=np.int64)) * max(var.dtype.itemsize, dtype.itemsize)
        blocks = list(_step_blocks(data, var.shape[0], step_bytes))
    else:
        blocks = [slice(None)]
    for block in blocks:
        values = _cast(path, where, materialise(data[block] if var.ndim else data), dtype)
        with hdf5_lock():
            try:
                if var.ndim:
                    ncvar[block] = values
                else:
                    ncvar.assignValue(values)
            except (OSError, RuntimeError, ValueError, TypeError, IndexError) as err:
                raise TempocodecError(f"{path}: cannot write {where}: {one_line(err)}") from None
