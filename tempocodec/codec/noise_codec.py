"""The ``radiance_error`` codec: Zarr v3 ``"tempocodec.noise"`` and numcodecs ``"tempocodec_noise"`` (decode only).

A chunk holds a copy of its radiance chunk's latent (the radiance payload without any residual layer, a few kB)
and the coded ``radiance_error`` (:mod:`tempocodec.codec.noise`): decoding runs the VAE decoder on that latent, then
the noise model. Writing needs the radiance, which a codec does not see, so the store writer encodes
(:func:`encode_chunks`) and the codec faces only decode; asked to encode (``to_zarr`` of decoded values with the
encoding kept), they refuse with a one-line error instead of coding a second generation.

Chunk layout: ``<4s magic "TPCN"> <B version> <B reserved> <H reserved> <I latent bytes> <I CRC-32 of the decoded
float32 chunk>``, the radiance payload, the noise body.
"""

from __future__ import annotations

import asyncio
import struct
import zlib
from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import numpy as np
from numcodecs.abc import Codec
from numcodecs.compat import ensure_contiguous_ndarray, ndarray_copy
from zarr.abc.buffer import Buffer, NDBuffer
from zarr.abc.codec import ArrayBytesCodec

from tempocodec.codec import kernel, noise, payload
from tempocodec.codec.config import CodecConfig
from tempocodec.codec.zarr3 import batched
from tempocodec.errors import TempocodecError

if TYPE_CHECKING:
    from typing import Self

    from zarr.core.array_spec import ArraySpec
    from zarr.core.chunk_grids import ChunkGrid
    from zarr.core.dtype.wrapper import TBaseDType, TBaseScalar, ZDType

NOISE_CODEC_NAME = "tempocodec.noise"
NOISE_CODEC_ID = "tempocodec_noise"
MAGIC = b"TPCN"
VERSION = 1
HEADER = struct.Struct("<4sBBHII")


@dataclass(frozen=True)
class NoiseConfig:
    """What both faces store in the array metadata: the radiance codec configuration the latents decode with
    (``radiance``, latent only) and the noise coding (model and decimal digits)."""

    radiance: CodecConfig
    coding: noise.NoiseCoding

    @classmethod
    def parse(cls, radiance: object, noise_model: object, digits: object) -> NoiseConfig:
        """From the JSON keys ``radiance``, ``noise`` and ``digits``; a one-line error naming the fault."""
        if not isinstance(radiance, dict):
            raise TempocodecError(f"{NOISE_CODEC_NAME}: 'radiance' must be a radiance codec configuration")
        try:
            config = CodecConfig.parse(**radiance)
        except TypeError as err:
            raise TempocodecError(f"{NOISE_CODEC_NAME}: bad 'radiance' configuration ({err})") from None
        if config.residual is not None or config.fill_value is None:
            raise TempocodecError(f"{NOISE_CODEC_NAME}: 'radiance' must be latent only, with a fill value")
        return cls(config, noise.NoiseCoding.parse(noise_model, digits, config.n_channels))

    def to_json(self) -> dict[str, Any]:
        """JSON-able configuration."""
        return {"radiance": self.radiance.to_json(), **self.coding.to_json()}


def latent_only(chunk: bytes) -> bytes:
    """Radiance payload ``chunk`` without its residual layer (unchanged when it has none)."""
    parsed = payload.unpack(chunk)
    return chunk if not parsed.residual else payload.pack(replace(parsed, residual=b""))


def _predicted(parsed: payload.Payload) -> np.ndarray:
    """Bool ``(C, rows, cols)``: the elements a radiance payload holds (its valid extent and mask)."""
    out = np.zeros((parsed.n_channels, *parsed.tile), dtype=bool)
    h, w = parsed.extent
    out[:, :h, :w] = True if parsed.mask is None else parsed.mask
    return out


DECODE_BATCH = 2
"""Chunks per decoder run here: ONNX Runtime keeps the buffers of the largest batch it ran for the session's life,
and compress runs this decoder beside its encoder."""


def decoded_radiance(latents: list[bytes], config: CodecConfig) -> tuple[np.ndarray, list[np.ndarray]]:
    """Radiance float32 ``(N, rows, cols, C)`` the latent payloads decode to, and which elements each holds."""
    parsed = [payload.unpack(blob, where=f"{NOISE_CODEC_NAME} latent", chunk_shape=config.chunk_shape)
              for blob in latents]
    radiance = np.empty((len(parsed), *config.chunk_shape), np.float32)
    for i in range(0, len(parsed), DECODE_BATCH):
        part = parsed[i : i + DECODE_BATCH]
        radiance[i : i + len(part)] = kernel.decode_payloads(part, [config.fill_value or 0.0] * len(part), config)
    return radiance, [_predicted(p) for p in parsed]


def encode_chunks(sigma: np.ndarray, latents: list[bytes], config: NoiseConfig) -> list[bytes]:
    """Chunks of ``radiance_error`` float32 ``(N, rows, cols, C)`` given the latent-only payloads of their radiance
    chunks (:func:`latent_only`, positions recorded)."""
    radiance, predicted = decoded_radiance(latents, config.radiance)

    def one(i: int) -> bytes:
        body = noise.encode(sigma[i].transpose(2, 0, 1), radiance[i].transpose(2, 0, 1), predicted[i], config.coding)
        crc = zlib.crc32(np.ascontiguousarray(sigma[i], dtype="<f4").tobytes())
        return HEADER.pack(MAGIC, VERSION, 0, 0, len(latents[i]), crc) + latents[i] + body

    return list(kernel.pool().map(one, range(len(latents))))


def decode_chunks(chunks: list[Any], config: NoiseConfig, where: str) -> np.ndarray:
    """``radiance_error`` float32 ``(N, rows, cols, C)`` of N chunks (bytes-like) :func:`encode_chunks` wrote."""
    views = [memoryview(bytes(chunk)) for chunk in chunks]
    heads = [_header(view, f"{where} {i}") for i, view in enumerate(views)]
    latents = [bytes(view[HEADER.size : HEADER.size + n]) for view, (n, _) in zip(views, heads, strict=True)]
    radiance, predicted = decoded_radiance(latents, config.radiance)
    out = np.empty_like(radiance)

    def one(i: int) -> None:
        body = views[i][HEADER.size + heads[i][0] :]
        values = noise.decode(body, radiance[i].transpose(2, 0, 1), predicted[i], config.coding, f"{where} {i}")
        out[i] = values.transpose(1, 2, 0)
        if zlib.crc32(out[i].tobytes()) != heads[i][1]:
            raise TempocodecError(f"{where} {i}: radiance_error decodes to other values than were written (the decoded "
                                  f"radiance differs here beyond {noise.MARGIN:g}); read it where it was written")

    list(kernel.pool().map(one, range(len(views))))
    return out


def _header(view: memoryview, where: str) -> tuple[int, int]:
    """Latent length and CRC-32 of a chunk's checked header."""
    if len(view) < HEADER.size:
        raise TempocodecError(f"{where}: truncated radiance_error chunk")
    magic, version, _, _, n_latent, crc = HEADER.unpack(view[: HEADER.size])
    if magic != MAGIC or version != VERSION:
        raise TempocodecError(f"{where}: not a version {VERSION} radiance_error chunk (magic {magic!r}, version {version})")
    if len(view) < HEADER.size + n_latent:
        raise TempocodecError(f"{where}: truncated radiance_error chunk")
    return n_latent, crc


_NO_ENCODE = (f"radiance_error coded by {NOISE_CODEC_NAME} is written by tempocodec compress, which sees the radiance; "
              f"to save decoded values, drop the codec from .encoding (tempocodec.open_store does)")


@dataclass(frozen=True)
class NoiseCodec(ArrayBytesCodec):
    """Zarr v3 array→bytes codec ``"tempocodec.noise"``: chunks of ``radiance_error`` decode from their own latent."""

    is_fixed_size = False

    config: NoiseConfig

    def __init__(self, *, radiance: dict[str, Any], noise: dict[str, Any], digits: int) -> None:
        object.__setattr__(self, "config", NoiseConfig.parse(radiance, noise, digits))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Self:
        """Codec from its ``zarr.json`` entry."""
        if not isinstance(data, dict) or data.get("name") != NOISE_CODEC_NAME or not isinstance(data.get("configuration"), dict):
            raise TempocodecError(f"{NOISE_CODEC_NAME}: codec metadata must be a name and a configuration mapping")
        return cls(**data["configuration"])

    def to_dict(self) -> dict[str, Any]:
        """The ``zarr.json`` entry of this codec."""
        return {"name": NOISE_CODEC_NAME, "configuration": self.config.to_json()}

    def validate(self, *, shape: tuple[int, ...], dtype: ZDType[TBaseDType, TBaseScalar], chunk_grid: ChunkGrid) -> None:
        """Raise unless the array is float32 ``(mirror_step, xtrack, n_channels)`` in the radiance's chunks."""
        chunks = getattr(chunk_grid, "chunk_shape", None)
        if dtype.to_native_dtype() != np.dtype("float32") or len(shape) != 3 or chunks != self.config.radiance.chunk_shape:
            raise TempocodecError(f"{NOISE_CODEC_NAME}: array {tuple(shape)} {dtype.to_native_dtype()} in chunks {chunks} "
                                  f"is not radiance_error in chunks {self.config.radiance.chunk_shape}")

    def compute_encoded_size(self, input_byte_length: int, chunk_spec: ArraySpec) -> int:
        """Chunk sizes vary."""
        raise NotImplementedError

    async def _encode_single(self, chunk_array: NDBuffer, chunk_spec: ArraySpec) -> Buffer:
        raise TempocodecError(_NO_ENCODE)

    def _decode_batch(self, items: list[tuple[Buffer, ArraySpec]]) -> list[NDBuffer]:
        tiles = decode_chunks([buf.as_numpy_array() for buf, _ in items], self.config, NOISE_CODEC_NAME + " chunk")
        return [spec.prototype.nd_buffer.from_numpy_array(tile) for tile, (_, spec) in zip(tiles, items, strict=True)]

    async def _decode_single(self, chunk_bytes: Buffer, chunk_spec: ArraySpec) -> NDBuffer:
        return (await asyncio.to_thread(self._decode_batch, [(chunk_bytes, chunk_spec)]))[0]

    async def decode(self, chunks_and_specs: Iterable[tuple[Buffer | None, ArraySpec]]) -> Iterable[NDBuffer | None]:
        """Decode a mini-batch of chunks in one worker-thread call (one decoder run); None entries pass through."""
        return await batched(self._decode_batch, list(chunks_and_specs))


class NoiseNumcodec(Codec):
    """numcodecs codec ``"tempocodec_noise"`` (Zarr v2 compressor), decode only, as :class:`NoiseCodec`."""

    codec_id = NOISE_CODEC_ID

    def __init__(self, radiance: dict[str, Any], noise: dict[str, Any], digits: int) -> None:
        self._config = NoiseConfig.parse(radiance, noise, digits)

    @property
    def config(self) -> NoiseConfig:
        """The parsed configuration."""
        return self._config

    def get_config(self) -> dict[str, Any]:
        """``.zarray`` compressor entry."""
        return {"id": self.codec_id, **self._config.to_json()}

    def encode(self, buf: Any) -> bytes:
        raise TempocodecError(_NO_ENCODE)

    def decode(self, buf: Any, out: Any = None) -> Any:
        """Chunk bytes -> float32 ``(rows, cols, n_channels)`` (copied into ``out`` when given)."""
        data = ensure_contiguous_ndarray(buf).reshape(-1).view(np.uint8)
        return ndarray_copy(decode_chunks([data], self._config, NOISE_CODEC_ID + " chunk")[0], out)
