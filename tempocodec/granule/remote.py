"""Granules that are not local files: fsspec URLs and open file objects (what ``earthaccess.open`` returns).

netCDF-4 files are HDF5, which the ``netCDF4`` library reads from a local file or from one contiguous buffer in
memory (``netCDF4.Dataset(name, memory=...)``), not from a Python file object. A TEMPO L1B granule is 0.5-2 GB, so
holding it in memory would multiply the peak memory of ``compress`` (about 1 GB now, bounded by the 64-row
stripes it streams); instead a remote granule is streamed, :data:`COPY_BLOCK` bytes at a time, into a private
temporary directory (``TMPDIR``), compressed from there like a local file, and removed afterwards: memory stays
bounded, disk holds one granule per running compress. A ``file://`` URL on the local file system is read in place.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from tempocodec.errors import TempocodecError
from tempocodec.granule.netcdf import one_line

COPY_BLOCK = 16 * 2**20
"""Bytes read from a remote granule at a time (memory held by the copy)."""
GranuleSource = str | os.PathLike | IO[bytes]
"""What ``compress`` accepts as a granule: a local path, an fsspec URL or a binary file object."""


def is_url(text: str) -> bool:
    """Whether ``text`` is an fsspec URL (``proto://...`` or a chain ``a::b://...``) rather than a local path."""
    head = text.split("::", 1)[0]
    return "::" in text or ("://" in head and head.split("://", 1)[0].replace("+", "").isalnum())


def granule_name(src: Any) -> str:
    """How messages name the granule ``src``: its path, URL, or a file object's ``path``/``name``."""
    if isinstance(src, (str, os.PathLike)):
        return os.fsdecode(src)
    for attr in ("full_name", "path", "name"):
        value = getattr(src, attr, None)
        if isinstance(value, str) and value:
            return value
    return type(src).__name__


@contextlib.contextmanager
def local_granule(src: GranuleSource) -> Iterator[Path]:
    """A local path to read the granule ``src`` from, for the duration of the block.

    A local path is yielded as it is; a ``file://`` URL as its path; any other URL, and a file object, are copied
    into a temporary directory (keeping the granule's file name, which the store records) and removed at the end.
    Errors naming the temporary copy name ``src`` instead. A URL fsspec cannot open, or an object that is neither
    a path nor a readable binary file, is a one-line :class:`TempocodecError`.
    """
    if isinstance(src, (str, os.PathLike)):
        text = os.fsdecode(src)
        if not is_url(text):
            yield Path(text)
            return
        local = _local_path(text)
        if local is not None:
            yield local
            return
    elif not callable(getattr(src, "read", None)):
        raise TempocodecError(f"{type(src).__name__} is not a granule: give a path, an fsspec URL or a binary file object")
    name = granule_name(src)
    with tempfile.TemporaryDirectory(prefix="tempocodec-granule-") as tmp:
        copy = Path(tmp) / (Path(name.split("::")[-1].rstrip("/")).name or "granule.nc")
        _copy(src, copy, name)
        try:
            yield copy
        except TempocodecError as err:
            raise TempocodecError(str(err).replace(str(copy), name)) from None


def _local_path(url: str) -> Path | None:
    """The local path of a URL on fsspec's local file system (``file://...``), else None (also for chained URLs)."""
    fsspec = _fsspec()
    try:
        fs, path = fsspec.core.url_to_fs(url)
    except ImportError as err:
        raise TempocodecError(f"{url}: its protocol needs a package that is not installed ({err})") from None
    except Exception as err:  # fsspec raises ValueError, KeyError, ... for a URL it cannot resolve
        raise TempocodecError(f"{url}: not a URL fsspec can open ({type(err).__name__}: {one_line(err)})") from None
    if isinstance(fs, fsspec.implementations.local.LocalFileSystem):
        return Path(path)
    return None


def _copy(src: Any, dst: Path, name: str) -> None:
    """Stream the granule ``src`` (a URL or a file object) into the new file ``dst``."""
    try:
        with _opened(src) as f, dst.open("wb") as out:
            shutil.copyfileobj(f, out, COPY_BLOCK)
    except TempocodecError:
        raise
    except FileNotFoundError:
        raise TempocodecError(f"{name}: no such file") from None
    except Exception as err:  # the remote end: OSError, aiohttp, botocore, ... errors
        raise TempocodecError(f"{name}: cannot read the granule ({type(err).__name__}: {one_line(err)})") from None


@contextlib.contextmanager
def _opened(src: Any) -> Iterator[IO[bytes]]:
    """``src`` as a binary file from its start: a URL opened with fsspec (closed at the end), a file object
    rewound where it can be (left open: the caller owns it)."""
    if isinstance(src, (str, os.PathLike)):
        try:
            opened = _fsspec().open(os.fsdecode(src), "rb")
        except ImportError as err:
            raise TempocodecError(f"{os.fsdecode(src)}: its protocol needs a package that is not installed ({err})") from None
        with opened as f:
            yield f
        return
    if getattr(src, "seekable", lambda: False)():
        src.seek(0)
    yield src


def _fsspec() -> Any:
    """The fsspec module (a dependency of dask), imported where a URL needs it."""
    import fsspec
    import fsspec.implementations.local

    return fsspec
