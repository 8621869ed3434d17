"""Where a VAE-coded radiance array keeps its chunks, read (and given their positions) as raw bytes, no decoder run.

Chunks are read through public zarr APIs only: the array's metadata document and its chunk (or shard) objects come
from the store's ``get``, and chunk keys and the sharding index are parsed here as the Zarr v2 / v3 specifications
(core, ``sharding_indexed``) lay them out. A shard index with a CRC-32C (zarr's default) is checked.

Every payload found at chunk grid ``(row, col)`` that records a position (:mod:`tempocodec.codec.payload`, version 2)
must record that one: a chunk moved or swapped to another place is refused. :func:`place_chunks` writes the
positions into the payloads of an array just written (the codec cannot know them while encoding).
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
import zarr
from numcodecs.checksum32 import CRC32C
from zarr.abc.store import Store
from zarr.buffer import default_buffer_prototype

from tempocodec.codec import payload
from tempocodec.codec.config import CODEC_ID, CODEC_NAME, CodecConfig
from tempocodec.codec.noise_codec import NOISE_CODEC_ID, NOISE_CODEC_NAME, NoiseConfig
from tempocodec.errors import TempocodecError

ChunkBytes = dict[tuple[int, int], bytes]
_NO_CHUNK = 2**64 - 1
"""Offset and length of an inner chunk that a shard does not hold (sharding spec)."""
_T = TypeVar("_T")


@dataclass(frozen=True)
class Layout:
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
    return TempocodecError(f"{where}: array is not coded by the tempocodec VAE codec alone (codecs {codecs!s:.200})")


def _vae_config(codec: Any, where: str, codecs: Any) -> CodecConfig:
    """The configuration of a v3 ``tempocodec.vae`` codec entry or a v2 ``tempocodec_vae`` compressor entry; for a
    ``radiance_error`` coded from the latents (``tempocodec.noise`` / ``tempocodec_noise``), that of its latents."""
    name = codec.get("name", codec.get("id")) if isinstance(codec, dict) else None
    if name not in (CODEC_NAME, CODEC_ID, NOISE_CODEC_NAME, NOISE_CODEC_ID):
        raise _not_vae(where, codecs)
    configuration = codec.get("configuration") if "name" in codec else {k: v for k, v in codec.items() if k != "id"}
    if not isinstance(configuration, dict):
        raise TempocodecError(f"{where}: bad {name} codec configuration ({configuration!r:.80})")
    try:
        if name in (NOISE_CODEC_NAME, NOISE_CODEC_ID):
            return NoiseConfig.parse(configuration.get("radiance"), configuration.get("noise"),
                                     configuration.get("digits")).radiance
        return CodecConfig.parse(**configuration)
    except TypeError as err:
        raise TempocodecError(f"{where}: bad {name} codec configuration ({err})") from None


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


def _v2_layout(meta: dict[str, Any], key: Callable[[tuple[int, ...]], str], where: str) -> Layout:
    """A v2 array: the VAE codec as its compressor, no filters."""
    if meta.get("filters"):
        raise _not_vae(where, [*meta["filters"], meta.get("compressor")])
    config = _vae_config(meta.get("compressor"), where, [meta.get("compressor")])
    _check_chunks(meta, meta["chunks"], config, where)
    return Layout(config, key, config.tile)


def _v3_layout(meta: dict[str, Any], key: Callable[[tuple[int, ...]], str], where: str) -> Layout:
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
        return Layout(config, key, config.tile)
    chunks = tuple(sharding["chunk_shape"])
    _check_chunks(meta, chunks, config, where)
    if block[0] % chunks[0] or block[1] % chunks[1] or block[2] != chunks[2]:
        raise TempocodecError(f"{where}: shards {block} are not whole chunks {chunks} along the pixel axes")
    order, crc = _index_codecs(sharding, where)
    return Layout(config, key, (block[0], block[1]), (block[0] // chunks[0], block[1] // chunks[1]),
                   sharding.get("index_location", "end") == "end", crc, order)


def array_layout(array: zarr.Array) -> Layout:
    """Codec configuration, chunk keys and sharding of ``array``; raise unless it is VAE-coded radiance."""
    where = str(array.store_path)
    prefix = f"{array.path}/" if array.path else ""
    meta = _metadata(array.store, prefix, where)
    key = _chunk_key(meta, prefix, where)
    return _v2_layout(meta, key, where) if meta.get("zarr_format") == 2 else _v3_layout(meta, key, where)


def _shard_index(data: bytes, layout: Layout, where: str) -> dict[tuple[int, int], tuple[int, int]]:
    """``(offset, nbytes)`` of each inner chunk a shard holds, keyed by its ``(row, col)`` inside the shard (sharding
    spec index: ``(offset, nbytes)`` uint64 per inner chunk in C order, at the start or end of the shard, then its
    CRC-32C when the index codecs say so)."""
    assert layout.per_shard is not None  # only a sharded layout's objects are split
    rows, cols = layout.per_shard
    size = rows * cols * 16 + (4 if layout.index_crc else 0)
    if len(data) < size:
        raise TempocodecError(f"{where}: shard of {len(data)} bytes is shorter than its {size}-byte index")
    raw = data[len(data) - size :] if layout.index_at_end else data[:size]
    if layout.index_crc:
        try:
            CRC32C().decode(raw)
        except RuntimeError:
            raise TempocodecError(f"{where}: shard index is corrupt (CRC-32C mismatch)") from None
    index = np.frombuffer(raw, dtype=f"{layout.index_order}u8", count=rows * cols * 2).reshape(rows, cols, 2)
    out = {}
    for a, b in np.ndindex(rows, cols):
        offset, nbytes = (int(v) for v in index[a, b])
        if offset == _NO_CHUNK and nbytes == _NO_CHUNK:
            continue
        if offset + nbytes > len(data):
            raise TempocodecError(f"{where}: shard index points past the end of the shard (chunk {(a, b)})")
        out[(a, b)] = (offset, nbytes)
    return out


def _grid(shape: Iterable[int], block: Iterable[int]) -> list[tuple[int, int]]:
    """All ``(i, j)`` indices of a grid of ``block`` over the first two axes of ``shape``."""
    counts = [math.ceil(s / b) for s, b in zip(shape, block, strict=False)][:2]
    return [(i, j) for i in range(counts[0]) for j in range(counts[1])]


def stored_objects(array: zarr.Array, layout: Layout) -> list[tuple[tuple[int, int], str, bytes | None]]:
    """``(grid index, key, bytes)`` of every chunk (or shard) object ``array``'s grid has; bytes None where absent."""
    blocks = _grid(array.shape, layout.block)
    keys = [layout.key((i, j, 0)) for i, j in blocks]
    return list(zip(blocks, keys, fetch(array.store, keys), strict=True))


def object_chunks(array: zarr.Array, layout: Layout, index: tuple[int, int], data: bytes) -> ChunkBytes:
    """The chunks inside ``array`` that the object (chunk, or shard) at grid ``index`` holds, keyed by chunk grid
    ``(row, col)``; raise when the shard index is damaged or a payload records another position than its own."""
    where = f"{array.store_path} {'shard' if layout.per_shard else 'chunk'} {index}"
    if layout.per_shard is None:
        chunks = {index: data}
    else:
        rows, cols = layout.per_shard
        inside = set(_grid(array.shape, layout.config.tile))  # edge shards reach past the array
        chunks = {}
        for (a, b), (offset, nbytes) in _shard_index(data, layout, where).items():
            if (index[0] * rows + a, index[1] * cols + b) in inside:
                chunks[(index[0] * rows + a, index[1] * cols + b)] = data[offset : offset + nbytes]
    for at, chunk in chunks.items():
        recorded = payload.recorded_position(chunk)
        if recorded is not None and recorded != at:
            raise TempocodecError(f"{array.store_path} chunk {at}: holds the payload of chunk {recorded} (moved or swapped)")
    return chunks


def read_stored_chunks(array: zarr.Array) -> tuple[CodecConfig, ChunkBytes]:
    """The codec configuration of ``array`` and the bytes of each stored chunk, keyed by chunk grid ``(row, col)``."""
    layout = array_layout(array)
    chunks: ChunkBytes = {}
    for index, _, data in stored_objects(array, layout):
        if data is not None:
            chunks.update(object_chunks(array, layout, index, data))
    return layout.config, chunks


def place_chunks(array: zarr.Array) -> None:
    """Record in each payload of ``array`` (open for writing) its chunk grid position, in place: the payloads keep
    their lengths, so shard indexes stay valid."""
    layout = array_layout(array)
    written = {}
    for index, key, data in stored_objects(array, layout):
        if data is not None:
            written[key] = _placed(layout, index, data, f"{array.store_path} {key}")
    _run(_set_all(array.store, written))


def _placed(layout: Layout, index: tuple[int, int], data: bytes, where: str) -> bytes:
    """The object ``data`` at grid ``index`` with every payload in it recording its chunk grid position."""
    if layout.per_shard is None:
        return payload.with_position(data, index, where)
    rows, cols = layout.per_shard
    out = bytearray(data)
    for (a, b), (offset, nbytes) in _shard_index(data, layout, where).items():
        position = (index[0] * rows + a, index[1] * cols + b)
        out[offset : offset + nbytes] = payload.with_position(data[offset : offset + nbytes], position, where)
    return bytes(out)


def write_chunks(array: zarr.Array, chunks: ChunkBytes) -> None:
    """Store payloads (chunk grid ``(row, col)`` -> bytes) into ``array`` (created, open for writing) as its chunk
    objects, or as the shards that hold them: every chunk of each shard touched must be given (a shard is written
    whole; chunks beyond the array's edge are absent, as zarr leaves them)."""
    layout = array_layout(array)
    if layout.per_shard is None:
        objects = {layout.key((r, c, 0)): data for (r, c), data in chunks.items()}
    else:
        rows, cols = layout.per_shard
        shards: dict[tuple[int, int], dict[tuple[int, int], bytes]] = {}
        for (r, c), data in chunks.items():
            shards.setdefault((r // rows, c // cols), {})[(r % rows, c % cols)] = data
        objects = {layout.key((i, j, 0)): _shard_object(layout, inner) for (i, j), inner in shards.items()}
    _run(_set_all(array.store, objects))


def _shard_object(layout: Layout, inner: dict[tuple[int, int], bytes]) -> bytes:
    """The bytes of one shard holding the chunks ``inner`` (keyed by ``(row, col)`` inside the shard), laid out as
    :func:`_shard_index` reads them."""
    assert layout.per_shard is not None
    rows, cols = layout.per_shard
    index = np.full((rows, cols, 2), _NO_CHUNK, dtype=f"{layout.index_order}u8")
    index_size = rows * cols * 16 + (4 if layout.index_crc else 0)
    offset = 0 if layout.index_at_end else index_size
    parts = []
    for a, b in sorted(inner):
        index[a, b] = offset, len(inner[(a, b)])
        parts.append(inner[(a, b)])
        offset += len(inner[(a, b)])
    head = index.tobytes()
    if layout.index_crc:
        head = bytes(CRC32C().encode(head))
    return b"".join(parts) + head if layout.index_at_end else head + b"".join(parts)


async def _set_all(store: Store, objects: dict[str, bytes]) -> None:
    """Store each of ``objects`` (key -> bytes), at most ``async.concurrency`` writes at a time."""
    limit = asyncio.Semaphore(int(zarr.config.get("async.concurrency")))
    prototype = default_buffer_prototype()

    async def put(key: str, data: bytes) -> None:
        async with limit:
            await store.set(key, prototype.buffer.from_bytes(data))

    await asyncio.gather(*(put(key, data) for key, data in objects.items()))


def fetch(store: Store, keys: list[str]) -> list[bytes | None]:
    """The bytes stored under each of ``keys`` in ``store`` (None where absent)."""
    return _run(_get_all(store, keys))


def list_keys(store: Store, prefix: str) -> list[str]:
    """Every key of ``store`` that starts with ``prefix``; not the directory entries (``c/0/``) that a zip made by
    ``zip -r`` lists, which are no objects."""

    async def collect() -> list[str]:
        return [key async for key in store.list_prefix(prefix) if not key.endswith("/")]

    return _run(collect())
