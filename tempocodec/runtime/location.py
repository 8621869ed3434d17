"""Where a store lies: a local directory, an fsspec URL, or a zarr store object.

Readers (``info``, ``query``, ``decompress``, ``verify``, ``evaluate``) take any of

- a local path (``str`` or ``os.PathLike``): read as before, a :class:`~pathlib.Path`; a local zip file (a store
  zipped as it is, ``zip -r0 ../g.zarr.zip .`` inside it) is read through :class:`zarr.storage.ZipStore`;
- an fsspec URL (``file:///data/g.zarr``, ``zip::file:///data/g.zarr.zip``, ``s3://bucket/g.zarr``, ...): opened
  read-only through :class:`zarr.storage.FsspecStore` (the protocol's own package must be installed: ``s3fs``, ...);
- a zarr store object (``zarr.storage.ZipStore``, ``FsspecStore``, ``MemoryStore``, ...) or an fsspec mapper
  (``fsspec.get_mapper(...)``), used as it is.

A path stays a :class:`~pathlib.Path`, so the local behaviour (messages, sizes on disk) is unchanged; everything
else becomes a :class:`StoreLocation`, which zarr and xarray open and messages name by its URL.
"""

from __future__ import annotations

import os
import zipfile
from collections.abc import MutableMapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import zarr
from zarr.abc.store import Store
from zarr.core.sync import sync
from zarr.storage import FsspecStore, ZipStore

from tempocodec.errors import TempocodecError
from tempocodec.granule.netcdf import one_line
from tempocodec.granule.remote import is_url

METADATA_DOCS = ("zarr.json", ".zarray", ".zattrs", ".zgroup", ".zmetadata")
"""Names of zarr's metadata documents (v3 and v2)."""


@dataclass(frozen=True)
class StoreLocation:
    """A store that is not a local path: ``store`` is what zarr and xarray open, ``url`` names it in messages."""

    store: Store
    url: str

    @property
    def name(self) -> str:
        """The last component of the URL (``g.zarr`` of ``s3://bucket/g.zarr``), like :attr:`Path.name`."""
        return self.url.rstrip("/").rsplit("/", 1)[-1] or self.url

    def __str__(self) -> str:
        return self.url


Where = Path | StoreLocation
"""A store a reader opens (see the module docstring)."""
StoreTarget = str | os.PathLike | Store | MutableMapping | StoreLocation
"""What the readers' Python API accepts as a store."""


def locate_store(target: Any) -> Where:
    """The store ``target`` (see the module docstring) as a :class:`Path` or a :class:`StoreLocation`; a one-line
    :class:`TempocodecError` for a URL fsspec cannot open or an object that is no store."""
    if isinstance(target, StoreLocation):
        return target
    if isinstance(target, Store):
        return StoreLocation(target, _store_name(target))  # readers open it with mode="r"
    if isinstance(target, MutableMapping):  # an fsspec mapper (FSMap)
        return StoreLocation(_from_mapper(target), getattr(target, "root", type(target).__name__))
    if isinstance(target, (str, os.PathLike)):
        text = os.fsdecode(target)
        if is_url(text):
            return StoreLocation(_from_url(text), text)
        return StoreLocation(ZipStore(text, mode="r"), text) if zipfile.is_zipfile(text) else Path(text)
    raise TempocodecError(f"{type(target).__name__} is not a store: give a path, an fsspec URL or a zarr store")


def _from_url(url: str) -> Store:
    """A read-only :class:`FsspecStore` for ``url``, or a one-line error saying why there is none."""
    try:
        return FsspecStore.from_url(url, read_only=True)
    except ImportError as err:
        raise TempocodecError(f"{url}: its protocol needs a package that is not installed ({err})") from None
    except Exception as err:  # fsspec raises ValueError, KeyError, OSError, ... for a URL it cannot resolve
        raise TempocodecError(f"{url}: not a store URL fsspec can open ({type(err).__name__}: {one_line(err)})") from None


def _from_mapper(mapper: MutableMapping) -> Store:
    """A read-only zarr store over an fsspec mapper."""
    try:
        return FsspecStore.from_mapper(mapper, read_only=True)
    except Exception as err:  # not an FSMap: zarr has no store for a plain dict-like
        raise TempocodecError(f"{type(mapper).__name__} is not a store: give a path, an fsspec URL or a zarr "
                              f"store ({one_line(err)})") from None


def _store_name(store: Store) -> str:
    """How messages name a store object: its path or URL where it has one, else its type."""
    for attr in ("path", "root"):
        value = getattr(store, attr, None)
        if value:
            return str(value)
    return type(store).__name__


def exists(where: Where) -> bool:
    """Whether anything is at ``where``: a local path that exists, or a store with a root metadata document."""
    if isinstance(where, Path):
        return where.exists()
    try:
        return any(sync(where.store.exists(doc)) for doc in ("zarr.json", ".zgroup", ".zattrs"))
    except Exception:  # the remote end refused or is unreachable: opening it will name the fault
        return True


def zarr_target(where: Where) -> Path | Store:
    """What ``zarr.open_group`` and ``xr.open_zarr`` take for ``where``."""
    return where if isinstance(where, Path) else where.store


def array_stored_bytes(arr: zarr.Array) -> int:
    """Bytes of the chunk (or shard) objects of one array, its metadata documents not counted, on any store."""
    store, prefix = arr.store_path.store, f"{arr.path}/" if arr.path else ""  # the slash: not radiance_error/
    chunk_keys = [key for key in sync(_keys(store, prefix)) if not _is_metadata(key)]  # an array has no sub-nodes
    return sum(sync(_sizes(store, chunk_keys)))


def total_stored_bytes(where: Where) -> int:
    """Bytes of every object of the store, metadata included."""
    if isinstance(where, Path):
        return sum(f.stat().st_size for f in where.rglob("*") if f.is_file())
    return sum(sync(_sizes(where.store, sync(_keys(where.store, "")))))


def _is_metadata(key: str) -> bool:
    return key.rsplit("/", 1)[-1] in METADATA_DOCS


async def _keys(store: Store, prefix: str) -> list[str]:
    """The object keys under ``prefix`` (not a zip's directory entries, which end in ``/``)."""
    return [key async for key in store.list_prefix(prefix) if not key.endswith("/")]


async def _sizes(store: Store, keys: list[str]) -> list[int]:
    return [await store.getsize(key) for key in keys]
