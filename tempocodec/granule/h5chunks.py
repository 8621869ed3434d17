"""Chunks of a netCDF-4 file deflated on every CPU and written into it as they are, with h5py.

netCDF-C and HDF5 deflate each chunk in the thread that writes it, under one library-wide lock, so a file is written
at one core's zlib speed (about 50 MB/s of float32 radiance at level 1). :class:`ChunkWriter` takes a file in which
netCDF4 has defined the variables (one leading step per chunk, shuffle + deflate filters, fill values, attributes)
without writing their data, and closed it; it reopens the file with h5py, shuffles and deflates each chunk in a
pool of one thread per usable CPU (libdeflate, which releases the GIL) and stores the bytes with
``write_direct_chunk``, in order, exactly as HDF5's own filters will read them back. netCDF4 and h5py each bring
their own HDF5 library, so a file must never be open in both at once: the caller closes its netCDF4 handle first.
Every h5py call also holds the HDF5 lock of :mod:`tempocodec.granule.netcdf`, for builds where both share one
(not thread-safe) library; the deflating never does.
"""

from __future__ import annotations

from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from types import TracebackType

import deflate
import h5py
import numpy as np

from tempocodec.cpus import cpu_count
from tempocodec.errors import TempocodecError
from tempocodec.granule.netcdf import hdf5_lock

FILTERS = (h5py.h5z.FILTER_SHUFFLE, h5py.h5z.FILTER_DEFLATE)
"""The filter pipeline chunks are encoded for, in HDF5's order (shuffle first, then deflate)."""


def shuffle(chunk: np.ndarray) -> np.ndarray:
    """HDF5's shuffle filter on one chunk: byte 0 of every element, then byte 1, ... (uint8, ``chunk.nbytes`` long)."""
    return np.ascontiguousarray(chunk.reshape(-1).view(np.uint8).reshape(-1, chunk.itemsize).T)


def encode_chunk(chunk: np.ndarray, level: int) -> bytearray:
    """One chunk as HDF5 stores it behind shuffle + deflate at ``level``: a zlib stream of the shuffled bytes."""
    return deflate.zlib_compress(shuffle(chunk), level)


class ChunkWriter:
    """Writes the chunks of datasets chunked one leading step at a time in the HDF5 file ``path`` (a context manager).

    Each chunk is encoded for the dataset's own filters (:data:`FILTERS`, its deflate level) in a thread pool; the
    chunks of one :meth:`write` call are written during the next call (or on leaving the block), so the pool
    deflates one block while the caller computes the next, and at most two blocks are held.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._file: h5py.File | None = None
        self._pool: ThreadPoolExecutor | None = None
        self._levels: dict[str, int] = {}
        self._pending: deque[tuple[h5py.Dataset, int, Future[bytearray]]] = deque()

    def __enter__(self) -> ChunkWriter:
        with hdf5_lock():
            self._file = h5py.File(self.path, "r+")
        self._pool = ThreadPoolExecutor(cpu_count(), thread_name_prefix="tempocodec-deflate")
        return self

    def write(self, name: str, start: int, values: np.ndarray) -> None:
        """Queue ``values`` ``(steps, *chunk shape)`` as the chunks ``start, start + 1, ...`` of the dataset ``name``
        (its full path), then write the chunks queued by the previous call."""
        assert self._file is not None and self._pool is not None, "ChunkWriter used outside its with block"
        with hdf5_lock():
            dataset = self._file[name]
            level, dtype = self._level(name, dataset), dataset.dtype
        values = values.astype(dtype, copy=False)  # the file's byte order
        queued = len(self._pending)
        for i, step in enumerate(values):
            self._pending.append((dataset, start + i, self._pool.submit(encode_chunk, step, level)))
        self._drain(keep=len(self._pending) - queued)

    def _level(self, name: str, dataset: h5py.Dataset) -> int:
        """The deflate level of ``dataset``; raise unless it is chunked one leading step at a time behind
        :data:`FILTERS` (the caller holds the HDF5 lock)."""
        if name not in self._levels:
            plist = dataset.id.get_create_plist()
            filters = [plist.get_filter(i) for i in range(plist.get_nfilters())]
            if tuple(f[0] for f in filters) != FILTERS or dataset.chunks != (1, *dataset.shape[1:]):
                raise TempocodecError(f"{self.path}: {name} is not chunked one step at a time behind shuffle + deflate")
            self._levels[name] = int(filters[1][2][0])
        return self._levels[name]

    def _drain(self, keep: int) -> None:
        """Write queued chunks, oldest first, until ``keep`` are left."""
        while len(self._pending) > keep:
            dataset, step, chunk = self._pending.popleft()
            data = chunk.result()
            with hdf5_lock():
                dataset.id.write_direct_chunk((step, *(0,) * (dataset.ndim - 1)), data, filter_mask=0)

    def __exit__(self, kind: type[BaseException] | None, err: BaseException | None, tb: TracebackType | None) -> None:
        assert self._file is not None and self._pool is not None
        try:
            if kind is None:
                self._drain(keep=0)
        finally:
            self._pending.clear()
            self._pool.shutdown(wait=True, cancel_futures=True)
            with hdf5_lock():
                self._file.close()
