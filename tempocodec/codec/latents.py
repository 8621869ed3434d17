"""The latent grid of a VAE-coded radiance array, read straight from the stored chunk bytes (no decoder run).

Every stored chunk holds the encoder's latent mean over its valid extent (``tempocodec.codec.payload``). Laid side by side
they form one latent grid over the whole array: latent cell ``(a, b)`` covers pixel rows ``[d*a, d*a + d)`` and
columns ``[d*b, d*b + d)`` of ``(mirror_step, xtrack)`` (``d`` = downsample, 4), clipped to the array.

Chunks are read through public zarr APIs only: the array's metadata document and its chunk (or shard) objects come
from the store's ``get``, and chunk keys and the sharding index are parsed here as the Zarr v2 / v3 specifications
(core, ``sharding_indexed``) lay them out.
"""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import Callable, Coroutine, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
import xarray as xr
import zarr
from zarr.abc.store import Store
from zarr.buffer import default_buffer_prototype

from tempocodec.codec import payload
from tempocodec.codec.config import CODEC_ID, CODEC_NAME, CodecConfig
from tempocodec.errors import TempocodecError

ChunkBytes = dict[tuple[int, int], bytes]
_NO_CHUNK = 2**64 - 1
"""Offset and length of an inner chunk that a shard does not hold (sharding spec)."""
_T = TypeVar("_T")


@dataclass(frozen=True)
class _Layout:
    """Where a VAE-coded array keeps its chunks.

    ``key``: chunk (or shard) grid indices -> store key; ``block``: the ``(rows, cols)`` of each stored object
    (chunk, or shard when sharded); ``per_shard``: inner chunks per shard ``(rows, cols)``, None when not sharded;
    ``index_at_end``, ``index_crc``, ``index_order``: the shard index's location, trailing CRC-32C and byte order.
    """

    config: CodecConfig
    key: Callable[[tuple[int, ...]], str]
    block: tuple[int, int]
    per_shard: tuple[int, int] | None = None
    index_at_end: bool = True
    index_crc: bool = True
    index_order: str = "<"


def _run(coroutine: Coroutine[Any, Any, _T]) -> _T:
    """Run ``coroutine`` to completion on a private event loop in a worker thread (so it also works where the
    caller's thread already runs one): the stores' API is async."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coroutine).result()


async def _get_all(store: Store, keys: list[str]) -> list[bytes | None]:
    """The bytes stored under each of ``keys`` (None where absent), at most ``async.concurrency`` reads at a time."""
    limit = asyncio.Semaphore(int(zarr.config.get("async.concurrency")))

    async def get(key: str) -> bytes | None:
        async with limit:
            buf = await store.get(key, prototype=default_buffer_prototype())
        return None if buf is None else buf.to_bytes()

    return list(await asyncio.gather(*(get(key) for key in keys)))


def _metadata(store: Store, prefix: str, where: str) -> dict[str, Any]:
    """The metadata document of the array at key ``prefix``: ``zarr.json`` (v3) or ``.zarray`` (v2), parsed."""
    for data in _run(_get_all(store, [f"{prefix}zarr.json", f"{prefix}.zarray"])):
        if data is not None:
            try:
                return json.loads(data)
            except ValueError as err:
                raise TempocodecError(f"{where}: unreadable array metadata ({err})") from None
    raise TempocodecError(f"{where}: no array metadata (zarr.json or .zarray) in the store")


def _chunk_key(meta: dict[str, Any], prefix: str, where: str) -> Callable[[tuple[int, ...]], str]:
    """The store key of a chunk of the array at key ``prefix`` from its grid indices, by its chunk key encoding."""
    if meta.get("zarr_format") == 2:
        sep, start = meta.get("dimension_separator") or ".", ""
    else:
        encoding = meta.get("chunk_key_encoding") or {}
        name, conf = encoding.get("name"), encoding.get("configuration") or {}
        if name not in ("default", "v2"):
            raise TempocodecError(f"{where}: unknown chunk key encoding {name!r}")
        sep = conf.get("separator", "/" if name == "default" else ".")
        start = f"c{sep}" if name == "default" else ""
    return lambda index: f"{prefix}{start}{sep.join(str(i) for i in index)}"


def _not_vae(where: str, codecs: Any) -> TempocodecError:
    return TempocodecError(f"{where}: array is not coded by the tempocodec VAE codec alone (codecs {codecs})")


def _vae_config(codec: Any, where: str, codecs: Any) -> CodecConfig:
    """The configuration of a v3 ``tempocodec.vae`` codec entry or a v2 ``tempocodec_vae`` compressor entry."""
    if isinstance(codec, dict) and codec.get("name") == CODEC_NAME:
        configuration = codec.get("configuration")
    elif isinstance(codec, dict) and codec.get("id") == CODEC_ID:
        configuration = {k: v for k, v in codec.items() if k != "id"}
    else:
        raise _not_vae(where, codecs)
    try:
        return CodecConfig.parse(**configuration)
    except TypeError as err:
        raise TempocodecError(f"{where}: bad {CODEC_NAME} codec configuration ({err})") from None


def _index_codecs(conf: dict[str, Any], where: str) -> tuple[str, bool]:
    """Byte order and trailing CRC-32C of a sharding index: its codecs must be ``bytes`` then optionally ``crc32c``."""
    names = [c.get("name") if isinstance(c, dict) else c for c in conf.get("index_codecs", [])]
    if names not in (["bytes"], ["bytes", "crc32c"]):
        raise TempocodecError(f"{where}: unsupported sharding index codecs {names} (expected bytes[, crc32c])")
    endian = (conf["index_codecs"][0].get("configuration") or {}).get("endian", "little")
    return ("<" if endian == "little" else ">"), len(names) == 2


def _check_chunks(meta: dict[str, Any], chunks: Iterable[int], config: CodecConfig, where: str) -> None:
    """Raise unless the array is 3-D radiance in chunks of the codec's shape."""
    if len(meta["shape"]) != 3 or tuple(chunks) != config.chunk_shape:
        raise TempocodecError(
            f"{where}: array {tuple(meta['shape'])} in chunks {tuple(chunks)} is not radiance in chunks {config.chunk_shape}"
        )


def _v2_layout(meta: dict[str, Any], key: Callable[[tuple[int, ...]], str], where: str) -> _Layout:
    """A v2 array: the VAE codec as its compressor, no filters."""
    if meta.get("filters"):
        raise _not_vae(where, [*meta["filters"], meta.get("compressor")])
    config = _vae_config(meta.get("compressor"), where, [meta.get("compressor")])
    _check_chunks(meta, meta["chunks"], config, where)
    return _Layout(config, key, config.tile)


def _v3_layout(meta: dict[str, Any], key: Callable[[tuple[int, ...]], str], where: str) -> _Layout:
    """A v3 array: the VAE codec alone, or alone inside ``sharding_indexed``."""
    codecs = meta.get("codecs") or []
    outer = codecs[0] if len(codecs) == 1 and isinstance(codecs[0], dict) else {}
    sharding = outer.get("configuration") if outer.get("name") == "sharding_indexed" else None
    inner = codecs if sharding is None else sharding.get("codecs", [])
    if len(inner) != 1:
        raise _not_vae(where, codecs)
    config = _vae_config(inner[0], where, codecs)
    block = tuple(meta["chunk_grid"]["configuration"]["chunk_shape"])
    if sharding is None:
        _check_chunks(meta, block, config, where)
        return _Layout(config, key, config.tile)
    chunks = tuple(sharding["chunk_shape"])
    _check_chunks(meta, chunks, config, where)
    if block[0] % chunks[0] or block[1] % chunks[1] or block[2] != chunks[2]:
        raise TempocodecError(f"{where}: shards {block} are not whole chunks {chunks} along the pixel axes")
    order, crc = _index_codecs(sharding, where)
    return _Layout(config, key, (block[0], block[1]), (block[0] // chunks[0], block[1] // chunks[1]),
                   sharding.get("index_location", "end") == "end", crc, order)


def _layout(array: zarr.Array, where: str) -> _Layout:
    """Codec configuration, chunk keys and sharding of ``array``; raise unless it is VAE-coded radiance."""
    prefix = f"{array.path}/" if array.path else ""
    meta = _metadata(array.store, prefix, where)
    key = _chunk_key(meta, prefix, where)
    return _v2_layout(meta, key, where) if meta.get("zarr_format") == 2 else _v3_layout(meta, key, where)


def _split_shard(data: bytes, layout: _Layout, where: str) -> dict[tuple[int, int], bytes]:
    """The inner chunks a shard holds, keyed by their ``(row, col)`` inside the shard (sharding spec index:
    ``(offset, nbytes)`` uint64 per inner chunk in C order, at the start or end of the shard)."""
    rows, cols = layout.per_shard
    size = rows * cols * 16 + (4 if layout.index_crc else 0)
    if len(data) < size:
        raise TempocodecError(f"{where}: shard of {len(data)} bytes is shorter than its {size}-byte index")
    raw = data[len(data) - size :] if layout.index_at_end else data[:size]
    index = np.frombuffer(raw, dtype=f"{layout.index_order}u8", count=rows * cols * 2).reshape(rows, cols, 2)
    out = {}
    for a, b in np.ndindex(rows, cols):
        offset, nbytes = (int(v) for v in index[a, b])
        if offset == _NO_CHUNK and nbytes == _NO_CHUNK:
            continue
        if offset + nbytes > len(data):
            raise TempocodecError(f"{where}: shard index points past the end of the shard (chunk {(a, b)})")
        out[(a, b)] = data[offset : offset + nbytes]
    return out


def _grid(shape: Iterable[int], block: Iterable[int]) -> list[tuple[int, int]]:
    """All ``(i, j)`` indices of a grid of ``block`` over the first two axes of ``shape``."""
    counts = [math.ceil(s / b) for s, b in zip(shape, block, strict=False)][:2]
    return [(i, j) for i in range(counts[0]) for j in range(counts[1])]


def read_stored_chunks(array: zarr.Array) -> tuple[CodecConfig, ChunkBytes]:
    """The codec configuration of ``array`` and the bytes of each stored chunk, keyed by chunk grid ``(row, col)``."""
    where = str(array.store_path)
    layout = _layout(array, where)
    blocks = _grid(array.shape, layout.block)
    found = _run(_get_all(array.store, [layout.key((i, j, 0)) for i, j in blocks]))
    stored = {ij: data for ij, data in zip(blocks, found, strict=True) if data is not None}
    if layout.per_shard is None:
        return layout.config, stored
    rows, cols = layout.per_shard
    inside = set(_grid(array.shape, layout.config.tile))  # edge shards reach past the array
    chunks: ChunkBytes = {}
    for (i, j), data in stored.items():
        for (a, b), chunk in _split_shard(data, layout, f"{where} shard {(i, j)}").items():
            if (i * rows + a, j * cols + b) in inside:
                chunks[(i * rows + a, j * cols + b)] = chunk
    return layout.config, chunks


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
