"""The latent grid of a VAE-coded radiance array, read straight from the stored chunk bytes (no decoder run).

Every stored chunk holds the encoder's latent mean over its valid extent (``tempocodec.codec.payload``). Laid side by side
they form one latent grid over the whole array: latent cell ``(a, b)`` covers pixel rows ``[d*a, d*a + d)`` and
columns ``[d*b, d*b + d)`` of ``(mirror_step, xtrack)`` (``d`` = downsample, 4), clipped to the array. Chunks are
read through zarr's own store and, for sharded arrays, zarr's own shard index reader.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np
import xarray as xr
import zarr
from zarr.codecs.sharding import ShardingCodec
from zarr.core.buffer import default_buffer_prototype
from zarr.core.common import concurrent_map
from zarr.core.sync import sync
from zarr.storage._common import StorePath

from tempocodec.codec import payload
from tempocodec.codec.config import CodecConfig
from tempocodec.codec.numcodec import VAENumcodec
from tempocodec.codec.zarr3 import VAECodec
from tempocodec.errors import TempocodecError

ChunkBytes = dict[tuple[int, int], bytes]


def _coding(array: zarr.Array) -> tuple[CodecConfig, ShardingCodec | None]:
    """The VAE codec configuration of ``array`` and its sharding codec (None when not sharded); raise otherwise."""
    meta = array.metadata
    if meta.zarr_format == 2:
        codecs: tuple = (*(meta.filters or ()), *((meta.compressor,) if meta.compressor is not None else ()))
        sharding = None
    else:
        codecs = meta.codecs
        sharding = codecs[0] if len(codecs) == 1 and isinstance(codecs[0], ShardingCodec) else None
        codecs = sharding.codecs if sharding is not None else codecs
    if len(codecs) != 1 or not isinstance(codecs[0], (VAECodec, VAENumcodec)):
        names = [type(c).__name__ for c in codecs]
        raise TempocodecError(f"{array.store_path}: array is not coded by the tempocodec VAE codec alone (codecs {names})")
    config = codecs[0].config
    if len(array.shape) != 3 or array.chunks != config.chunk_shape:
        raise TempocodecError(
            f"{array.store_path}: array {array.shape} in chunks {array.chunks} is not radiance in chunks {config.chunk_shape}"
        )
    return config, sharding


async def _read_plain(store_path: StorePath, meta, coords: list[tuple[int, int]]) -> ChunkBytes:
    """Bytes of the stored chunks among ``coords`` (chunk grid indices along the two pixel axes)."""

    async def get(i: int, j: int) -> tuple[tuple[int, int], bytes | None]:
        buf = await (store_path / meta.encode_chunk_key((i, j, 0))).get(prototype=default_buffer_prototype())
        return (i, j), None if buf is None else buf.to_bytes()

    found = await concurrent_map(coords, get, zarr.config.get("async.concurrency"))
    return {key: data for key, data in found if data is not None}


async def _read_sharded(store_path: StorePath, meta, sharding: ShardingCodec, shards: list[tuple[int, int]]) -> ChunkBytes:
    """Bytes of the stored inner chunks of the shards ``shards`` (shard grid indices), keyed by chunk grid indices."""
    shard_shape = meta.chunk_grid.chunk_shape
    per_shard = tuple(s // c for s, c in zip(shard_shape, sharding.chunk_shape, strict=True))

    async def get(i: int, j: int) -> ChunkBytes:
        getter = store_path / meta.encode_chunk_key((i, j, 0))
        reader = await sharding._load_full_shard_maybe(getter, default_buffer_prototype(), per_shard)
        if reader is None:
            return {}
        out: ChunkBytes = {}
        for a in range(per_shard[0]):
            for b in range(per_shard[1]):
                buf = reader.get((a, b, 0))
                if buf is not None:
                    out[(i * per_shard[0] + a, j * per_shard[1] + b)] = buf.to_bytes()
        return out

    parts = await concurrent_map(shards, get, zarr.config.get("async.concurrency"))
    return {key: data for part in parts for key, data in part.items()}


def _grid(shape: Iterable[int], block: Iterable[int]) -> list[tuple[int, int]]:
    """All ``(i, j)`` indices of a grid of ``block`` over the first two axes of ``shape``."""
    counts = [math.ceil(s / b) for s, b in zip(shape, block, strict=False)][:2]
    return [(i, j) for i in range(counts[0]) for j in range(counts[1])]


def read_stored_chunks(array: zarr.Array) -> tuple[CodecConfig, ChunkBytes]:
    """The codec configuration of ``array`` and the bytes of each stored chunk, keyed by chunk grid ``(row, col)``."""
    config, sharding = _coding(array)
    meta = array.metadata
    if sharding is None:
        chunks = sync(_read_plain(array.store_path, meta, _grid(array.shape, config.chunk_shape)))
    else:
        chunks = sync(_read_sharded(array.store_path, meta, sharding, _grid(array.shape, meta.chunk_grid.chunk_shape)))
    return config, chunks


def _pool(counts: np.ndarray, d: int) -> np.ndarray:
    """Sum int ``(h, w)`` over ``d × d`` blocks -> ``(ceil(h/d), ceil(w/d))``."""
    h, w = counts.shape
    padded = np.pad(counts, ((0, -h % d), (0, -w % d)))
    return padded.reshape(padded.shape[0] // d, d, padded.shape[1] // d, d).sum(axis=(1, 3))


def read_latents(array: zarr.Array) -> xr.DataArray:
    """Latent means of a VAE-coded radiance array ``(mirror_step, xtrack, spectral_channel)``, without decoding.

    Returns float32 ``(latent_channel, latent_row, latent_col)`` on the latent grid covering the array
    (``ceil(rows/d) × ceil(cols/d)``), NaN in cells with no valid pixel (also cells of chunks never stored).
    Coordinates: ``pixel_row_start``/``pixel_row_stop`` along ``latent_row`` and ``pixel_col_start``/``pixel_col_stop``
    along ``latent_col`` (the pixel block of each cell, stop exclusive, clipped to the array), and ``valid_fraction``
    ``(latent_row, latent_col)``: valid elements of the cell's block over all of its elements (pixels × channels).
    """
    config, chunks = read_stored_chunks(array)
    rows, cols, channels = array.shape
    where = str(array.store_path)
    parsed = {key: payload.unpack(data, where=f"{where} chunk {key}") for key, data in chunks.items()}
    geometry = {(p.downsample, p.latent.shape[0], p.tile, p.n_channels) for p in parsed.values()}
    if not geometry:
        art = config.artifacts()
        geometry = {(art.downsample, art.latent_channels, config.tile, channels)}
    if len(geometry) != 1 or next(iter(geometry))[2:] != (config.tile, channels):
        raise TempocodecError(f"{where}: chunks disagree with each other or with the array on tile, channels or latent size")
    d, n_latent, (tile_rows, tile_cols), _ = geometry.pop()
    grid_rows, grid_cols = math.ceil(rows / d), math.ceil(cols / d)
    latent = np.full((n_latent, grid_rows, grid_cols), np.nan, dtype=np.float32)
    counts = np.zeros((grid_rows, grid_cols), dtype=np.int64)
    for (i, j), p in parsed.items():
        r0, c0 = i * tile_rows // d, j * tile_cols // d
        lat_rows, lat_cols = p.latent_extent
        nr, nc = min(lat_rows, grid_rows - r0), min(lat_cols, grid_cols - c0)
        inside = p.valid_channels()[: rows - i * tile_rows, : cols - j * tile_cols]
        counts[r0 : r0 + nr, c0 : c0 + nc] = _pool(inside, d)[:nr, :nc]
        latent[:, r0 : r0 + nr, c0 : c0 + nc] = p.latent[:, :nr, :nc]
    row_start, col_start = np.arange(grid_rows) * d, np.arange(grid_cols) * d
    row_stop, col_stop = np.minimum(row_start + d, rows), np.minimum(col_start + d, cols)
    block_pixels = np.outer(row_stop - row_start, col_stop - col_start)
    fraction = (counts / (block_pixels * channels)).astype(np.float32)
    latent[:, counts == 0] = np.nan
    return xr.DataArray(
        latent,
        dims=("latent_channel", "latent_row", "latent_col"),
        coords={
            "latent_channel": np.arange(n_latent),
            "latent_row": np.arange(grid_rows),
            "latent_col": np.arange(grid_cols),
            "pixel_row_start": ("latent_row", row_start),
            "pixel_row_stop": ("latent_row", row_stop),
            "pixel_col_start": ("latent_col", col_start),
            "pixel_col_stop": ("latent_col", col_stop),
            "valid_fraction": (("latent_row", "latent_col"), fraction),
        },
        name="latent",
        attrs={"model": config.model, "model_sha256": config.model_sha256, "downsample": d,
               "latent_dtype": config.latent_dtype},
    )
