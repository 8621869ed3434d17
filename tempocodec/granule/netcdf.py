"""netCDF-4 machinery shared by the TEMPO readers and writers (:mod:`~tempocodec.granule.l1b`, :mod:`~tempocodec.granule.l2`).

:class:`NetCDFSource` is a read-only file behind lazy dask arrays, :func:`read_group` turns one group into an
xarray Dataset of raw values, and :func:`materialise` computes a (dask) block into one buffer; the writer of
Datasets in a product's layout is :mod:`tempocodec.granule.netcdf_write`. Values are kept *raw*: nothing is masked
or scaled, ``_FillValue`` stays in each variable's ``attrs``, and attributes keep their numpy types, so a file read
and written again is bitwise the same.
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

from tempocodec.atomic import Replaceable
from tempocodec.errors import TempocodecError

INT16_FILL = np.int16(-32767)
INT32_FILL = np.int32(-2147483647)
TEMPO_EPOCH = datetime(1980, 1, 6, tzinfo=UTC)
TIME_UNITS = "seconds since 1980-01-06T00:00:00Z"
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


def materialise(data: Any) -> np.ndarray:
    """``data`` as one numpy array; a dask array is computed chunk by chunk into a buffer of its size, so its chunks
    and their concatenation are never all held at once. Always on local threads: under a ``dask.distributed``
    default client the workers would fill copies of the buffer, and this one would stay uninitialised."""
    if not is_dask(data):
        return np.asarray(data)
    out = np.empty(data.shape, data.dtype)
    sys.modules["dask.array"].store(data, out, lock=False, scheduler="threads")
    return out


def is_dask(data: Any) -> bool:
    """Whether ``data`` is a dask array (there is none while dask.array is not imported, and this does not import it)."""
    da = sys.modules.get("dask.array")
    return da is not None and isinstance(data, da.Array)

