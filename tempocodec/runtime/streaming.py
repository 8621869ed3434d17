"""Writing a band group into a Zarr store in bounded memory, reading and coding at once.

A band's spectral variables (``radiance``, ``radiance_error``, ``pixel_quality_flag``: dims ``(mirror_step, xtrack,
spectral_channel)``) come from netCDF one mirror step per dask chunk. Rechunking them to the store's 64-row shards
inside one dask graph kept many source rows of every variable alive at once, and xarray's encoding copied each
135 MB shard several times over, so peak memory grew with the granule (2.2 GB for a two-band 64×1024 granule,
2.6 GB for a real 131×2048 one on 2 CPUs, more with more threads). Here the spectral variables are written in one
:func:`stream` over stripes of :data:`~tempocodec.prepare.tiles.TILE` mirror steps: each stripe of each variable is
read chunk by chunk into one buffer (64 × xtrack × channels: 540 MB of float32 for a real band, the least that
reads each netCDF chunk only once) by a reader thread, while the sinks code the block read before it (the VAE, the
product features, the auxiliary codecs), so reading and coding overlap and at most one block more than the coding
needs is held. Every other variable is small and is written in one xarray call, as before. The stored bytes are the
same either way (``tests/test_streaming.py``).
"""

from __future__ import annotations

import contextlib
import os
import queue
import threading
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import dask
import numpy as np
import xarray as xr
import zarr

from tempocodec.codec.config import CodecConfig
from tempocodec.codec.kernel import MAX_BATCH, encode_tiles
from tempocodec.codec.noise_codec import NoiseConfig, encode_chunks, latent_only
from tempocodec.codec.stored import write_chunks
from tempocodec.granule.l1b import RADIANCE_DIMS
from tempocodec.granule.netcdf import materialise
from tempocodec.prepare.tiles import TILE

MAX_WORKERS = 2
"""Most dask threads a store read or write uses. A thread decoding a shard (``decompress``) holds its 135 MB of
float32 radiance and the decoder's buffers; more threads add memory, not speed: zarr already decodes a shard's
chunks concurrently and ONNX Runtime runs each model call on every CPU."""


def worker_count() -> int:
    """Dask threads for store I/O: dask's configured ``num_workers`` (else one per CPU), at most :data:`MAX_WORKERS`."""
    return max(1, min(MAX_WORKERS, dask.config.get("num_workers", None) or os.cpu_count() or 1))


@contextlib.contextmanager
def bounded_workers() -> Iterator[None]:
    """Run the dask computations of the block on at most :func:`worker_count` threads of this process, also where a
    ``dask.distributed`` client is the default scheduler (a granule's graph is memory-bound and fine-grained: shipping
    its stripes to a cluster costs more than it gains; many granules go to a cluster one task each,
    :mod:`tempocodec.runtime.batch`)."""
    with dask.config.set(num_workers=worker_count(), scheduler="threads"):
        yield


def to_zarr(ds: xr.Dataset, path: Path, group: str | None, encoding: dict | None, zarr_format: Literal[2, 3],
            mode: Literal["w", "a"], **kwargs: Any) -> None:
    """``ds.to_zarr`` without consolidation (done once at the end), v3 warnings about it silenced; ``kwargs`` go
    to ``to_zarr`` (``compute``, ``region``, ...)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Consolidated metadata", category=UserWarning)
        ds.to_zarr(path, group=group, mode=mode, encoding=encoding, zarr_format=zarr_format, consolidated=False,
                   **kwargs)


@dataclass(frozen=True)
class Sink:
    """One consumer of a band's stripes: ``write(rows, blocks)`` gets the stripe ``rows`` of each array it ``needs``
    (name -> numpy ``(rows, xtrack, ...)``), in stripe order."""

    needs: tuple[str, ...]
    write: Callable[[slice, dict[str, np.ndarray]], None]


Coder = Callable[[zarr.Array], Sink]
"""What fills one created spectral array of a group (see ``coders`` of :func:`write_group`): the sink that writes it
(None in ``coders``: another array's sink fills it)."""


class Stripes:
    """The spectral arrays of a band group (name -> numpy or dask ``(mirror_step, xtrack, ...)``), read one stripe of
    :data:`TILE` mirror steps at a time. The first stripe of an array, read early (:meth:`first`: the compress sample),
    is kept until the writer takes it (:meth:`read`), so no stripe is read twice."""

    def __init__(self, arrays: dict[str, Any], noise: str | None = None) -> None:
        """``noise``: the name in ``arrays`` of the band's ``radiance_error`` as read (None: the band has none)."""
        self.arrays, self.noise = arrays, noise
        self._kept: dict[str, np.ndarray] = {}
        self.steps = next(iter(arrays.values())).shape[0] if arrays else 0

    def first(self, name: str) -> np.ndarray:
        """The first stripe of array ``name``, kept for :meth:`read`."""
        if name not in self._kept:
            self._kept[name] = materialise(self.arrays[name][:TILE])
        return self._kept[name]

    def read(self, name: str, rows: slice) -> np.ndarray:
        """Stripe ``rows`` of array ``name`` (the kept first stripe, given up here, when ``rows`` starts at 0)."""
        kept = self._kept.pop(name, None) if rows.start == 0 else None
        return kept if kept is not None else materialise(self.arrays[name][rows])


def stream(stripes: Stripes, sinks: list[Sink], progress: Callable[[float], None] | None = None) -> None:
    """Feed every stripe of ``stripes`` to ``sinks`` (in list order within a stripe), reading in a background thread
    so that the next array's stripe is read while the current one is coded. ``progress(steps)`` is told the mirror
    steps of each stripe once all its sinks ran (for a progress bar).

    Reading and coding overlap (netCDF reads hold the HDF5 lock, so only this thread reads); memory stays bounded:
    a block is dropped once the last sink of its stripe that needs it has run, and at most one block more than the
    coding holds (:func:`_schedule`) is alive.
    """
    order = list(dict.fromkeys(name for sink in sinks for name in sink.needs))
    if not order:
        return
    steps, peak = _schedule(order, sinks)
    slots = threading.Semaphore(peak + 1)  # one read ahead of the coding
    ready: queue.Queue[tuple[slice, np.ndarray] | BaseException] = queue.Queue()
    stop = threading.Event()

    def read_all() -> None:
        try:
            for rows in _stripe_rows(stripes.steps):
                for name in order:
                    slots.acquire()
                    if stop.is_set():
                        return
                    ready.put((rows, stripes.read(name, rows)))
        except BaseException as err:  # handed to the coding thread, which raises it
            ready.put(err)

    reader = threading.Thread(target=read_all, name="tempocodec-stripe-reader", daemon=True)
    reader.start()
    try:
        for rows in _stripe_rows(stripes.steps):
            _code_stripe(rows, order, steps, ready, slots)
            if progress is not None:
                progress(rows.stop - rows.start)
    finally:
        stop.set()
        slots.release(len(order) + 1)  # wakes a reader waiting for a slot, which then stops
        reader.join()


Step = tuple[list[Sink], list[str]]
"""What follows the arrival of one array's block in a stripe: the sinks that can run now, then the blocks no sink
left in the stripe needs."""


def _schedule(order: list[str], sinks: list[Sink]) -> tuple[list[Step], int]:
    """One :data:`Step` per array of ``order`` (the order blocks arrive in), and the most blocks held at once."""
    held: set[str] = set()
    pending, steps, peak = list(sinks), [], 0
    for name in order:
        held.add(name)
        peak = max(peak, len(held))
        ready = []
        while pending and all(n in held for n in pending[0].needs):
            ready.append(pending.pop(0))
        done = [n for n in held if all(n not in sink.needs for sink in pending)]
        held -= set(done)
        steps.append((ready, done))
    return steps, peak


def _stripe_rows(steps: int) -> list[slice]:
    """The stripes of :data:`TILE` mirror steps of ``steps``."""
    return [slice(start, min(start + TILE, steps)) for start in range(0, steps, TILE)]


def _code_stripe(rows: slice, order: list[str], steps: list[Step], ready: queue.Queue, slots: threading.Semaphore
                 ) -> None:
    """Run the sinks of one stripe as its blocks arrive from ``ready``, following ``steps`` (:func:`_schedule`), and
    release a slot for each block dropped."""
    blocks: dict[str, np.ndarray] = {}
    for name, (sinks, done) in zip(order, steps, strict=True):
        item = ready.get()
        if isinstance(item, BaseException):
            raise item
        blocks[name] = item[1]
        for sink in sinks:
            sink.write(rows, {n: blocks[n] for n in sink.needs})
        for n in done:
            del blocks[n]
            slots.release()


def write_group(ds: xr.Dataset, path: Path, group: str, encoding: dict[str, dict], zarr_format: Literal[2, 3],
                chunks: dict[str, int], column: int, *, stripes: Stripes | None = None,
                coders: dict[str, Coder | None] | None = None, observers: tuple[Sink, ...] = (),
                progress: Callable[[float], None] | None = None) -> None:
    """Write ``ds`` as the new group ``group`` of the store at ``path`` with the per-variable ``encoding``.

    Variables other than the spectral ones are chunked by ``chunks`` (dim -> size) and written in one call; the
    spectral arrays are then created by xarray (metadata only) and filled in one :func:`stream` over ``stripes``
    (default: the spectral variables of ``ds``), ``column`` pixels across at a time (a multiple of their chunks
    across: a whole number of shards or chunks), except those named in ``coders``, whose sinks fill their own
    array (or, for None, another's sink: ``radiance_error`` coded from the radiance's latents). ``observers`` also
    see the stripes (the product features); ``progress`` as for :func:`stream`.
    """
    spectral = [str(name) for name, var in ds.data_vars.items() if var.dims == RADIANCE_DIMS]
    rest = ds.drop_vars(spectral)
    rest = rest.chunk({d: c for d, c in chunks.items() if d in rest.dims})
    to_zarr(rest, path, group, {k: v for k, v in encoding.items() if k in rest.variables}, zarr_format, mode="w")
    if not spectral:
        return
    arrays = xr.Dataset({name: ds[name].variable for name in spectral}, attrs=ds.attrs)
    to_zarr(arrays, path, group, {k: v for k, v in encoding.items() if k in spectral}, zarr_format, mode="a",
            compute=False, safe_chunks=False)  # creates the arrays; their data follows stripe by stripe
    sinks: list[Sink] = []
    for name in spectral:
        target = zarr.open_array(store=path, path=f"{group}/{name}", mode="r+", zarr_format=zarr_format)
        if coders and name in coders:
            coder = coders[name]
            if coder is not None:
                sinks.append(coder(target))
        else:
            fill = encoding.get(name, {}).get("_FillValue", ds[name].attrs.get("_FillValue"))
            sinks.append(stripe_writer(name, target, fill, column))
        if name == "radiance":
            sinks += observers
    stream(stripes or Stripes({name: ds[name].data for name in spectral}), sinks, progress)


def stripe_writer(name: str, target: zarr.Array, fill: Any, cols: int) -> Sink:
    """The sink that writes array ``name``'s stripes into the zarr array ``target`` through its codec pipeline,
    ``cols`` pixels (one shard) at a time.

    NaN becomes ``fill`` (when not None) in float data (:func:`_nan_to_fill`): all that xarray's encoding would do
    to these variables, whose encoding sets no dtype, scale or offset.
    """

    def write(rows: slice, blocks: dict[str, np.ndarray]) -> None:
        stripe = blocks[name]
        for first in range(0, stripe.shape[1], cols):
            target[rows, first : first + cols] = _nan_to_fill(stripe[:, first : first + cols], fill)

    return Sink((name,), write)


def radiance_writer(target: zarr.Array, config: CodecConfig, fill: float, cols: int, noise: str | None = None,
                    error: tuple[zarr.Array, NoiseConfig] | None = None) -> Sink:
    """The sink that fills the VAE-coded radiance array ``target`` itself rather than through zarr's codec pipeline,
    ``cols`` pixels (one shard) at a time, each payload recording its position: with ``noise``, the name in the
    stripes of the ``radiance_error`` that the residual layer's bound refers to (which a zarr codec cannot see);
    with ``error``, it also fills that ``radiance_error`` array, coded from the latents just made
    (:mod:`tempocodec.codec.noise_codec`).
    """
    tile_rows, tile_cols = config.tile
    needs = tuple(dict.fromkeys(["radiance", *([noise] if noise else []), *(["radiance_error"] if error else [])]))

    def write(rows: slice, blocks: dict[str, np.ndarray]) -> None:
        for first in range(0, blocks["radiance"].shape[1], cols):
            origin = (rows.start // tile_rows, first // tile_cols)
            part = {name: blocks[name][:, first : first + cols] for name in needs}
            tiles, positions = tiles_of(_nan_to_fill(part["radiance"], fill), origin, config.tile, fill)
            noise_tiles = tiles_of(part[noise], origin, config.tile, np.nan)[0] if noise else None
            error_tiles = tiles_of(part["radiance_error"], origin, config.tile, np.nan)[0] if error else None
            chunks: dict[tuple[int, int], bytes] = {}
            errors: dict[tuple[int, int], bytes] = {}
            for i in range(0, len(tiles), MAX_BATCH):
                batch = slice(i, i + MAX_BATCH)
                blobs = encode_tiles(tiles[batch], [fill] * len(tiles[batch]), config,
                                     None if noise_tiles is None else noise_tiles[batch], positions[batch])
                chunks.update(zip(positions[batch], blobs, strict=True))
                if error is not None and error_tiles is not None:
                    latents = [latent_only(blob) for blob in blobs]
                    errors.update(zip(positions[batch], encode_chunks(error_tiles[batch], latents, error[1]), strict=True))
            write_chunks(target, chunks)
            if error is not None:
                write_chunks(error[0], errors)

    return Sink(needs, write)


def tiles_of(block: np.ndarray, origin: tuple[int, int], tile: tuple[int, int], pad: float
             ) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """The chunks of ``block`` ``(rows, cols, C)`` as float32 ``(N, *tile, C)`` (edges padded with ``pad``, as zarr
    pads edge chunks) and their chunk grid positions, counted from ``origin``."""
    rows, cols, channels = block.shape
    n_r, n_c = -(-rows // tile[0]), -(-cols // tile[1])
    padded = np.full((n_r * tile[0], n_c * tile[1], channels), pad, dtype=np.float32)
    padded[:rows, :cols] = block
    tiles = padded.reshape(n_r, tile[0], n_c, tile[1], channels).swapaxes(1, 2).reshape(-1, *tile, channels)
    return tiles, [(origin[0] + r, origin[1] + c) for r in range(n_r) for c in range(n_c)]


def _nan_to_fill(values: np.ndarray, fill: Any) -> np.ndarray:
    """``values`` with NaN replaced by ``fill`` cast to their dtype (a copy only where there is a NaN), as xarray's
    ``_FillValue`` encoding does; integer values, and any values when ``fill`` is None, unchanged."""
    if fill is None or values.dtype.kind != "f":
        return values
    nan = np.isnan(values)
    return np.where(nan, values.dtype.type(fill), values) if nan.any() else values
