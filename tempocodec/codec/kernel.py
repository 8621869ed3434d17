"""The VAE codec: one numpy kernel behind a Zarr v3 array→bytes codec and a numcodecs (Zarr v2) codec.

A chunk is float32 radiance ``(tile_rows, tile_cols, n_channels)`` in TEMPO order ``(mirror_step, xtrack,
spectral_channel)``. Encoding marks invalid elements (not finite, ``|L| > 1e30``, or equal to the fill value),
normalizes (``tempocodec.prepare.normalize``, invalid -> 0), transposes to the model's ``(N, n_channels, rows, cols)``,
replicates the last valid row and column into the padding beyond the valid extent, runs the encoder once per
mini-batch and stores each chunk's latent mean over its valid extent with its validity mask (``tempocodec.codec.payload``).
Decoding replicates the stored latent rows and columns back to the full latent grid, runs the decoder once per
mini-batch, inverts the normalization and writes the fill value into every invalid element.

The codec configuration names the model and embeds its sha256 and normalization statistics, so a store says exactly
how to decode it; the model is looked up by name (:func:`tempocodec.runtime.artifacts.resolve_model`) and must match both.
"""

from __future__ import annotations

import asyncio
import math
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING, Any

import numpy as np
from numcodecs.abc import Codec
from numcodecs.compat import ensure_contiguous_ndarray, ndarray_copy
from zarr.abc.codec import ArrayBytesCodec
from zarr.core.buffer import Buffer, NDBuffer
from zarr.core.chunk_grids import RegularChunkGrid
from zarr.core.common import parse_named_configuration

from tempocodec.codec import payload
from tempocodec.runtime.artifacts import (
    ModelArtifacts,
    find_model,
    load_model,
    resolve_model,
    session,
)
from tempocodec.errors import TempocodecError
from tempocodec.prepare.normalize import RADIANCE_FILL as L1B_RADIANCE_FILL
from tempocodec.prepare.normalize import denormalize, is_valid, normalize

if TYPE_CHECKING:
    from typing import Self

    from zarr.core.array_spec import ArraySpec
    from zarr.core.chunk_grids import ChunkGrid
    from zarr.core.dtype.wrapper import TBaseDType, TBaseScalar, ZDType

CODEC_NAME = "tempocodec.vae"
CODEC_ID = "tempocodec_vae"
LATENT_DTYPES = {"float16": np.dtype("<f2"), "float32": np.dtype("<f4")}
RADIANCE_FILL = float(L1B_RADIANCE_FILL)
MAX_BATCH = 16
"""Most chunks per ONNX Runtime call (a 64×64×1028 chunk is 16.8 MB of float32 model input)."""
_SWAP_BLOCK = 64


# --------------------------------------------------------------------------------------------------- configuration


def _f32(value: float) -> float:
    """``value`` rounded to float32, as the shortest Python float that rounds back to the same float32."""
    return float(str(np.float32(value)))


@dataclass(frozen=True)
class CodecConfig:
    """What both codec faces store in the array metadata (JSON-able once lists replace tuples).

    ``mu``, ``sigma``: the model's float32 normalization ``(n_channels,)``; ``tile``: chunk ``(rows, cols)`` in pixels;
    ``fill_value``: the value invalid elements decode to (None: the array's fill value, v3 only).
    """

    model: str
    model_sha256: str
    mu: tuple[float, ...]
    sigma: tuple[float, ...]
    latent_dtype: str
    tile: tuple[int, int]
    fill_value: float | None

    @classmethod
    def parse(cls, *, model: str, model_sha256: str, mu: Sequence[float], sigma: Sequence[float],
              latent_dtype: str = "float16", tile: Sequence[int] = (64, 64),
              fill_value: float | None = None) -> CodecConfig:
        """Check and normalize raw configuration values (from JSON or from Python)."""
        where = f"{CODEC_NAME} codec configuration"
        if not isinstance(model, str) or not model:
            raise TempocodecError(f"{where}: 'model' must be a model name, got {model!r}")
        if not (isinstance(model_sha256, str) and len(model_sha256) == 64 and set(model_sha256) <= set("0123456789abcdef")):
            raise TempocodecError(f"{where}: 'model_sha256' must be 64 lowercase hex digits, got {model_sha256!r}")
        mu32 = np.asarray(mu, dtype=np.float32)
        sigma32 = np.asarray(sigma, dtype=np.float32)
        if mu32.ndim != 1 or mu32.size == 0 or mu32.shape != sigma32.shape:
            raise TempocodecError(f"{where}: 'mu' {mu32.shape} and 'sigma' {sigma32.shape} must be equal-length lists")
        if not (np.isfinite(mu32).all() and np.isfinite(sigma32).all() and (sigma32 > 0).all()):
            raise TempocodecError(f"{where}: 'mu' and 'sigma' must be finite and 'sigma' > 0")
        if latent_dtype not in LATENT_DTYPES:
            raise TempocodecError(f"{where}: 'latent_dtype' {latent_dtype!r} is not one of {sorted(LATENT_DTYPES)}")
        tile_t = tuple(int(t) for t in tile)
        if len(tile_t) != 2 or not all(0 < t < 2**16 for t in tile_t):
            raise TempocodecError(f"{where}: 'tile' must be two sizes in 1..65535, got {tile!r}")
        if fill_value is not None and not math.isfinite(float(fill_value)):
            raise TempocodecError(f"{where}: 'fill_value' must be a finite number, got {fill_value!r}")
        return cls(
            model=model,
            model_sha256=model_sha256,
            mu=tuple(_f32(v) for v in mu32),
            sigma=tuple(_f32(v) for v in sigma32),
            latent_dtype=latent_dtype,
            tile=(tile_t[0], tile_t[1]),
            fill_value=None if fill_value is None else _f32(fill_value),
        )

    @property
    def n_channels(self) -> int:
        """Spectral channels per pixel."""
        return len(self.mu)

    @property
    def chunk_shape(self) -> tuple[int, int, int]:
        """The chunk shape the codec accepts: ``(tile_rows, tile_cols, n_channels)``."""
        return (*self.tile, self.n_channels)

    def to_json(self) -> dict[str, Any]:
        """JSON-able configuration (``fill_value`` left out when None)."""
        data: dict[str, Any] = {
            "model": self.model,
            "model_sha256": self.model_sha256,
            "mu": list(self.mu),
            "sigma": list(self.sigma),
            "latent_dtype": self.latent_dtype,
            "tile": list(self.tile),
        }
        if self.fill_value is not None:
            data["fill_value"] = self.fill_value
        return data

    def artifacts(self) -> ModelArtifacts:
        """The model this configuration names, checked to have its sha256 and statistics (cached per process)."""
        return _verified_model(self.model, self.model_sha256, self.mu, self.sigma)


@lru_cache(maxsize=16)
def _verified_model(name: str, sha256: str, mu: tuple[float, ...], sigma: tuple[float, ...]) -> ModelArtifacts:
    """Load model ``name`` and check its sha256, channel count and normalization against a codec configuration."""
    wanted = f"this array needs model {name!r} (sha256 {sha256})"
    try:
        art = find_model(name, sha256)
    except TempocodecError as err:
        raise TempocodecError(f"{err}; {wanted}") from None
    if art.sha256 != sha256:
        raise TempocodecError(f"{art.path}: model {art.name!r} has sha256 {art.sha256}, but {wanted}")
    if not (np.array_equal(art.mu, np.asarray(mu, np.float32)) and np.array_equal(art.sigma, np.asarray(sigma, np.float32))):
        raise TempocodecError(f"{art.path}: normalization differs from the array's codec configuration; {wanted}")
    return art


# --------------------------------------------------------------------------------------------------- kernel


def _check_tiles(tiles: np.ndarray, config: CodecConfig) -> None:
    """Raise unless ``tiles`` is float32 ``(N, *config.chunk_shape)``."""
    if tiles.dtype != np.float32 or tiles.shape[1:] != config.chunk_shape:
        raise TempocodecError(
            f"{CODEC_NAME}: chunks of model {config.model!r} must be float32 {config.chunk_shape} "
            f"(mirror_step, xtrack, spectral_channel), got {tiles.dtype} {tiles.shape[1:]}"
        )


def _run(art: ModelArtifacts, which: str, inputs: np.ndarray, name: str, output: str) -> np.ndarray:
    """Run graph ``which`` on ``inputs`` in slices of :data:`MAX_BATCH`, concatenating output ``output``."""
    graph = session(art, which)
    parts = [graph.run([output], {name: inputs[i : i + MAX_BATCH]})[0] for i in range(0, len(inputs), MAX_BATCH)]
    return np.concatenate(parts) if len(parts) > 1 else parts[0]


def _swap_last_axes(src: np.ndarray, dst: np.ndarray) -> None:
    """``dst[n, j, i] = src[n, i, j]`` for ``src`` ``(N, a, b)`` and ``dst`` ``(N, b, a)``, copied in blocks of rows.

    Blocks of :data:`_SWAP_BLOCK` rows keep the strided side in cache: 2-3 times faster than a plain transposed copy
    for a 4096 × 1028 tile.
    """
    for n in range(src.shape[0]):
        for r in range(0, src.shape[1], _SWAP_BLOCK):
            dst[n, :, r : r + _SWAP_BLOCK] = src[n, r : r + _SWAP_BLOCK].T


def encode_tiles(tiles: np.ndarray, fills: Sequence[float], config: CodecConfig) -> list[bytes]:
    """Compress radiance chunks float32 ``(N, rows, cols, n_channels)`` to N payloads.

    ``fills[i]``: a value that marks invalid elements of chunk ``i`` besides non-finite and ``|L| > 1e30`` ones
    (the array's fill value, with which zarr pads edge chunks).
    """
    _check_tiles(tiles, config)
    art = config.artifacts()
    n, rows, cols, channels = tiles.shape
    if rows % art.downsample or cols % art.downsample:
        raise TempocodecError(f"{CODEC_NAME}: tile {config.tile} is not a multiple of model {art.name}'s downsample {art.downsample}")
    raw = np.empty((n, channels, rows, cols), dtype=np.float32)
    _swap_last_axes(tiles.reshape(n, rows * cols, channels), raw.reshape(n, channels, rows * cols))
    fill = np.asarray(fills, dtype=np.float32)
    valid = is_valid(raw)
    x = normalize(raw, art.mu, art.sigma, axis=1)
    extents = []
    for i in range(n):
        if is_valid(fill[i]):  # a fill value that is valid radiance (0.0, say) marks invalid elements too
            valid[i] &= raw[i] != fill[i]
            x[i][~valid[i]] = 0.0
        h, w = payload.valid_extent(valid[i])
        if h:
            x[i, :, h:, :] = x[i, :, h - 1 : h, :]
            x[i, :, :, w:] = x[i, :, :, w - 1 : w]
        extents.append((h, w))
    present = [i for i, (h, _) in enumerate(extents) if h]
    means = _run(art, "encoder", x[present], "x", "mean") if present else None
    dtype = LATENT_DTYPES[config.latent_dtype]
    limit = np.finfo(dtype).max
    out = []
    for i, extent in enumerate(extents):
        lat_rows, lat_cols = payload.latent_extent(extent, art.downsample)
        if extent[0]:
            latent = np.clip(means[present.index(i), :, :lat_rows, :lat_cols], -limit, limit).astype(dtype)
            mask = payload.compact_mask(valid[i, :, : extent[0], : extent[1]])
        else:
            latent, mask = np.zeros((art.latent_channels, 0, 0), dtype), None
        out.append(payload.pack(payload.Payload(latent, mask, (rows, cols), extent, channels, art.downsample)))
    return out


def decode_tiles(chunks: Sequence[Any], fills: Sequence[float], config: CodecConfig) -> np.ndarray:
    """Decompress N payloads (bytes-like) to radiance float32 ``(N, rows, cols, n_channels)``.

    Invalid elements, and everything outside each chunk's valid extent, become ``fills[i]``.
    """
    art = config.artifacts()
    rows, cols, channels = config.chunk_shape
    parsed = [payload.unpack(chunk, where=f"{CODEC_NAME} chunk of model {config.model!r}") for chunk in chunks]
    lat_shape = (art.latent_channels, rows // art.downsample, cols // art.downsample)
    for p in parsed:
        if (p.tile, p.n_channels, p.downsample, p.latent.shape[0]) != (config.tile, channels, art.downsample, lat_shape[0]):
            raise TempocodecError(
                f"{CODEC_NAME}: chunk holds tile {p.tile}, {p.n_channels} channels, downsample {p.downsample}, "
                f"{p.latent.shape[0]} latent channels; model {art.name!r} and the array expect {config.tile}, "
                f"{channels}, {art.downsample}, {lat_shape[0]}"
            )
    present = [i for i, p in enumerate(parsed) if p.extent[0]]
    z = np.empty((len(present), *lat_shape), dtype=np.float32)
    for j, i in enumerate(present):
        lat = parsed[i].latent
        z[j] = np.pad(lat, ((0, 0), (0, lat_shape[1] - lat.shape[1]), (0, lat_shape[2] - lat.shape[2])), mode="edge")
    radiance = denormalize(_run(art, "decoder", z, "z", "x"), art.mu, art.sigma, axis=1) if present else None
    out = np.empty((len(parsed), rows, cols, channels), dtype=np.float32)
    for i, p in enumerate(parsed):
        fill = np.float32(fills[i])
        if i not in present:
            out[i] = fill
            continue
        j = present.index(i)
        _swap_last_axes(radiance[j : j + 1].reshape(1, channels, rows * cols), out[i : i + 1].reshape(1, rows * cols, channels))
        h, w = p.extent
        out[i, h:] = fill
        out[i, :h, w:] = fill
        if p.mask is not None:
            inner = out[i, :h, :w]
            inner[~(p.mask if p.mask.ndim == 2 else p.mask.transpose(1, 2, 0))] = fill
    return out


# --------------------------------------------------------------------------------------------------- Zarr v3


@dataclass(frozen=True)
class VAECodec(ArrayBytesCodec):
    """Zarr v3 array→bytes codec ``"tempocodec.vae"``: float32 ``(rows, cols, n_channels)`` chunks <-> VAE payloads.

    ``fill_value`` is what invalid elements decode to; None (the default) uses the array's fill value. Each
    mini-batch of chunks (``codec_pipeline.batch_size``) goes through the model in one call, in a worker thread.
    """

    is_fixed_size = False

    config: CodecConfig

    def __init__(self, *, model: str, model_sha256: str, mu: Sequence[float], sigma: Sequence[float],
                 latent_dtype: str = "float16", tile: Sequence[int] = (64, 64), fill_value: float | None = None) -> None:
        config = CodecConfig.parse(model=model, model_sha256=model_sha256, mu=mu, sigma=sigma,
                                   latent_dtype=latent_dtype, tile=tile, fill_value=fill_value)
        object.__setattr__(self, "config", config)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Self:
        """Codec from its ``zarr.json`` entry ``{"name": "tempocodec.vae", "configuration": {...}}``."""
        _, configuration = parse_named_configuration(data, CODEC_NAME)
        return cls(**configuration)

    def to_dict(self) -> dict[str, Any]:
        """The ``zarr.json`` entry of this codec."""
        return {"name": CODEC_NAME, "configuration": self.config.to_json()}

    def validate(self, *, shape: tuple[int, ...], dtype: ZDType[TBaseDType, TBaseScalar], chunk_grid: ChunkGrid) -> None:
        """Raise unless the array is float32 ``(mirror_step, xtrack, n_channels)`` in chunks of the codec's shape."""
        native = dtype.to_native_dtype()
        if native != np.dtype("float32"):
            raise TempocodecError(f"{CODEC_NAME}: array dtype is {native}, the codec takes float32 radiance")
        chunks = chunk_grid.chunk_shape if isinstance(chunk_grid, RegularChunkGrid) else None
        if len(shape) != 3 or chunks != self.config.chunk_shape:
            raise TempocodecError(
                f"{CODEC_NAME}: array {tuple(shape)} in chunks {chunks} does not fit model {self.config.model!r}: it needs "
                f"(mirror_step, xtrack, {self.config.n_channels}) chunked {self.config.chunk_shape}"
            )

    def compute_encoded_size(self, input_byte_length: int, chunk_spec: ArraySpec) -> int:
        """Payload sizes vary with the valid extent and the mask."""
        raise NotImplementedError

    def _fill(self, spec: ArraySpec) -> float:
        """The value invalid elements of a chunk with ``spec`` decode to."""
        return float(spec.fill_value) if self.config.fill_value is None else self.config.fill_value

    def _encode_sync(self, chunk_array: NDBuffer, chunk_spec: ArraySpec) -> Buffer:
        """Encode one chunk (see :meth:`encode` for a batch)."""
        return self._encode_batch([(chunk_array, chunk_spec)])[0]

    def _decode_sync(self, chunk_bytes: Buffer, chunk_spec: ArraySpec) -> NDBuffer:
        """Decode one chunk (see :meth:`decode` for a batch)."""
        return self._decode_batch([(chunk_bytes, chunk_spec)])[0]

    async def _encode_single(self, chunk_array: NDBuffer, chunk_spec: ArraySpec) -> Buffer:
        return await asyncio.to_thread(self._encode_sync, chunk_array, chunk_spec)

    async def _decode_single(self, chunk_bytes: Buffer, chunk_spec: ArraySpec) -> NDBuffer:
        return await asyncio.to_thread(self._decode_sync, chunk_bytes, chunk_spec)

    def _encode_batch(self, items: list[tuple[NDBuffer, ArraySpec]]) -> list[Buffer]:
        """Encode chunks with one model call per :data:`MAX_BATCH`; extra marks invalid: the array's fill value."""
        tiles = np.stack([np.asarray(chunk.as_numpy_array()) for chunk, _ in items])
        fills = [float(spec.fill_value) for _, spec in items]
        blobs = encode_tiles(tiles, fills, self.config)
        return [spec.prototype.buffer.from_bytes(blob) for blob, (_, spec) in zip(blobs, items, strict=True)]

    def _decode_batch(self, items: list[tuple[Buffer, ArraySpec]]) -> list[NDBuffer]:
        """Decode chunks with one model call per :data:`MAX_BATCH`."""
        for _, spec in items:
            if spec.shape != self.config.chunk_shape:
                raise TempocodecError(f"{CODEC_NAME}: chunk shape {spec.shape} is not the codec's {self.config.chunk_shape}")
        tiles = decode_tiles([buf.as_numpy_array() for buf, _ in items], [self._fill(spec) for _, spec in items], self.config)
        return [spec.prototype.nd_buffer.from_numpy_array(tile) for tile, (_, spec) in zip(tiles, items, strict=True)]

    async def encode(self, chunks_and_specs: Iterable[tuple[NDBuffer | None, ArraySpec]]) -> Iterable[Buffer | None]:
        """Encode a mini-batch of chunks in one worker-thread call; None entries pass through."""
        return await _batched(self._encode_batch, list(chunks_and_specs))

    async def decode(self, chunks_and_specs: Iterable[tuple[Buffer | None, ArraySpec]]) -> Iterable[NDBuffer | None]:
        """Decode a mini-batch of chunks in one worker-thread call; None entries pass through."""
        return await _batched(self._decode_batch, list(chunks_and_specs))


async def _batched(kernel: Any, items: list[tuple[Any, Any]]) -> list[Any]:
    """Run ``kernel`` on the non-None ``(data, spec)`` items in a thread; results in place, None where data was None."""
    present = [i for i, (data, _) in enumerate(items) if data is not None]
    results: list[Any] = [None] * len(items)
    if present:
        done = await asyncio.to_thread(kernel, [items[i] for i in present])
        for i, value in zip(present, done, strict=True):
            results[i] = value
    return results


# --------------------------------------------------------------------------------------------------- Zarr v2


class VAENumcodec(Codec):
    """numcodecs codec ``"tempocodec_vae"`` (Zarr v2 compressor) on the same kernel as :class:`VAECodec`.

    ``encode`` takes a float32 chunk ``(rows, cols, n_channels)`` as an array or as raw bytes; ``decode`` returns
    float32 ``(rows, cols, n_channels)``. Elements equal to ``fill_value`` count as invalid, and every invalid element
    decodes to it: create the array with the same fill value so that zarr's edge padding is recognised.
    """

    codec_id = CODEC_ID

    def __init__(self, model: str, model_sha256: str, mu: Sequence[float], sigma: Sequence[float],
                 latent_dtype: str = "float16", tile: Sequence[int] = (64, 64), fill_value: float = RADIANCE_FILL) -> None:
        self._config = CodecConfig.parse(model=model, model_sha256=model_sha256, mu=mu, sigma=sigma,
                                         latent_dtype=latent_dtype, tile=tile, fill_value=fill_value)

    @property
    def config(self) -> CodecConfig:
        """The parsed configuration."""
        return self._config

    def get_config(self) -> dict[str, Any]:
        """``.zarray`` compressor entry: ``{"id": "tempocodec_vae", ...}``."""
        return {"id": self.codec_id, **self._config.to_json()}

    def __repr__(self) -> str:
        params = ", ".join(f"{key}={value!r}" for key, value in self._config.to_json().items())
        return f"{type(self).__name__}({params})"

    def encode(self, buf: Any) -> bytes:
        """One chunk (float32 array of the chunk shape, or its raw bytes) -> payload bytes."""
        arr = ensure_contiguous_ndarray(buf) if not isinstance(buf, np.ndarray) else np.ascontiguousarray(buf)
        if arr.dtype.itemsize == 1 and arr.dtype.kind in "uib":
            arr = arr.reshape(-1).view(np.float32)
        shape = self._config.chunk_shape
        if arr.dtype != np.float32 or arr.size != math.prod(shape):
            raise TempocodecError(
                f"{CODEC_ID}: chunk must be float32 {shape} of model {self._config.model!r}, got {arr.dtype} {arr.shape}"
            )
        return encode_tiles(arr.reshape(1, *shape), [self._config.fill_value], self._config)[0]

    def decode(self, buf: Any, out: Any = None) -> Any:
        """Payload bytes -> float32 ``(rows, cols, n_channels)`` (copied into ``out`` when given)."""
        data = ensure_contiguous_ndarray(buf).reshape(-1).view(np.uint8)
        tile = decode_tiles([data], [self._config.fill_value], self._config)[0]
        return ndarray_copy(tile, out)


# --------------------------------------------------------------------------------------------------- factories


def _artifacts(model: ModelArtifacts | str | os.PathLike) -> ModelArtifacts:
    """Artifacts given directly, or loaded from a model name or directory."""
    return model if isinstance(model, ModelArtifacts) else load_model(resolve_model(model))


def _factory_config(art: ModelArtifacts, latent_dtype: str) -> dict[str, Any]:
    """Codec keyword arguments for model ``art``."""
    return {"model": art.name, "model_sha256": art.sha256, "mu": art.mu, "sigma": art.sigma,
            "latent_dtype": latent_dtype, "tile": (art.tile, art.tile)}


def make_codec(model: ModelArtifacts | str | os.PathLike, latent_dtype: str = "float16",
               fill_value: float | None = None) -> VAECodec:
    """The Zarr v3 codec for ``model``; ``fill_value`` None decodes invalid elements to the array's fill value."""
    art = _artifacts(model)
    return VAECodec(**_factory_config(art, latent_dtype), fill_value=None if fill_value is None else float(fill_value))


def make_numcodec(model: ModelArtifacts | str | os.PathLike, latent_dtype: str = "float16",
                  fill_value: float = RADIANCE_FILL) -> VAENumcodec:
    """The Zarr v2 (numcodecs) codec for ``model``; create the array with the same ``fill_value``."""
    art = _artifacts(model)
    return VAENumcodec(**_factory_config(art, latent_dtype), fill_value=float(fill_value))
