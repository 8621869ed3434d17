"""Writing a band group into a Zarr store in bounded memory.

A band's spectral variables (``radiance``, ``radiance_error``, ``pixel_quality_flag``: dims ``(mirror_step, xtrack,
spectral_channel)``) come from netCDF one mirror step per dask chunk. Rechunking them to the store's 64-row shards
inside one dask graph kept many source rows of every variable alive at once, and xarray's encoding copied each
135 MB shard several times over, so peak memory grew with the granule (2.2 GB for a two-band 64×1024 granule,
2.6 GB for a real 131×2048 one on 2 CPUs, more with more threads). Here each spectral variable is written one stripe
of :data:`~tempocodec.prepare.tiles.TILE` mirror steps at a time: the stripe is read chunk by chunk into one buffer
(64 × xtrack × channels: 540 MB of float32 for a real band, the least that reads each netCDF chunk only once), then
written into the zarr array one shard column at a time. Every other variable is small and is written in one xarray
call, as before. The stored bytes are the same either way (``tests/test_streaming.py``).
"""

from __future__ import annotations

import contextlib
import os
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Literal

import dask
import numpy as np
import xarray as xr
import zarr

from tempocodec.codec.config import CodecConfig
from tempocodec.codec.kernel import MAX_BATCH, encode_tiles
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


Filler = Callable[[zarr.Array], None]
"""Fills one created array of a group (see ``fillers`` of :func:`write_group`)."""


def write_group(ds: xr.Dataset, path: Path, group: str, encoding: dict[str, dict], zarr_format: Literal[2, 3],
                chunks: dict[str, int], column: int, fillers: dict[str, Filler] | None = None) -> None:
    """Write ``ds`` as the new group ``group`` of the store at ``path`` with the per-variable ``encoding``.

    Variables other than the spectral ones are chunked by ``chunks`` (dim -> size) and written in one call; the
    spectral arrays are then created by xarray (metadata only) and filled stripe by stripe (:func:`write_stripes`),
    ``column`` pixels across at a time (a multiple of their chunks across: a whole number of shards or chunks),
    except those named in ``fillers``, which fill their own array.
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
    for name in spectral:
        var = ds[name].variable
        target = zarr.open_array(store=path, path=f"{group}/{name}", mode="r+", zarr_format=zarr_format)
        if fillers and name in fillers:
            fillers[name](target)
            continue
        write_stripes(var.data, target, encoding.get(name, {}).get("_FillValue", var.attrs.get("_FillValue")),
                      column)


def _each_shard(arrays: tuple[Any, ...], stripe_rows: int, cols: int,
                write: Callable[[slice, int, list[np.ndarray]], None]) -> None:
    """Call ``write(rows, first column, blocks)`` over arrays of one shape ``(mirror_step, xtrack, ...)`` (numpy or
    dask): each stripe of ``stripe_rows`` mirror steps read once (:func:`materialise`), then its blocks ``cols``
    pixels across. A callback rather than a generator, so that no block of a stripe is still referenced when the next
    stripe is read (one stripe in memory at a time)."""
    steps, width = arrays[0].shape[:2]
    for start in range(0, steps, stripe_rows):
        rows = slice(start, min(start + stripe_rows, steps))
        stripes = [materialise(a[rows]) for a in arrays]
        for first in range(0, width, cols):
            write(rows, first, [stripe[:, first : first + cols] for stripe in stripes])
        del stripes  # freed before the next stripe is read


def write_stripes(data: Any, target: zarr.Array, fill: Any, cols: int) -> None:
    """Fill the zarr array ``target`` with ``data`` ``(mirror_step, xtrack, spectral_channel)`` (numpy or dask), one
    stripe of :data:`TILE` mirror steps at a time, each stripe ``cols`` pixels (one shard) at a time.

    NaN becomes ``fill`` (when not None) in float data (:func:`_nan_to_fill`): all that xarray's encoding would do
    to these variables, whose encoding sets no dtype, scale or offset.
    """

    def write(rows: slice, first: int, blocks: list[np.ndarray]) -> None:
        target[rows, first : first + cols] = _nan_to_fill(blocks[0], fill)

    _each_shard((data,), TILE, cols, write)


def write_bounded(radiance: Any, noise: Any, target: zarr.Array, config: CodecConfig, fill: float, cols: int) -> None:
    """Fill the VAE-coded radiance array ``target`` with ``radiance`` ``(mirror_step, xtrack, spectral_channel)``,
    encoding here, with ``noise`` (``radiance_error``, same shape), rather than through zarr's codec pipeline: the
    residual layer's bound refers to each value's own noise, which a zarr codec cannot see. One stripe of chunk rows
    at a time, ``cols`` pixels (one shard) at a time; each payload records its position.
    """
    tile_rows, tile_cols = config.tile

    def write(rows: slice, first: int, blocks: list[np.ndarray]) -> None:
        origin = (rows.start // tile_rows, first // tile_cols)
        tiles, positions = tiles_of(_nan_to_fill(blocks[0], fill), origin, config.tile, fill)
        noise_tiles, _ = tiles_of(blocks[1], origin, config.tile, np.nan)
        blobs: list[bytes] = []
        for i in range(0, len(tiles), MAX_BATCH):
            part = slice(i, i + MAX_BATCH)
            blobs += encode_tiles(tiles[part], [fill] * len(tiles[part]), config, noise_tiles[part], positions[part])
        write_chunks(target, dict(zip(positions, blobs, strict=True)))

    _each_shard((radiance, noise), tile_rows, cols, write)


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
