"""The Zarr v3 face of the VAE codec: array→bytes codec ``"tempocodec.vae"`` on the numpy kernel.

The ``zarr.codecs`` entry point names it as ``tempocodec.codec:VAECodec``. Only public zarr APIs are used at run
time (``zarr.abc``); zarr's private types appear in annotations only.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from zarr.abc.buffer import Buffer, NDBuffer
from zarr.abc.codec import ArrayBytesCodec

from tempocodec.codec import kernel
from tempocodec.codec.config import CODEC_NAME, SECOND_GENERATION, CodecConfig, model_config
from tempocodec.codec.residual import ResidualSpec
from tempocodec.errors import TempocodecError
from tempocodec.runtime.artifacts import ModelArtifacts

if TYPE_CHECKING:
    from typing import Self

    from zarr.core.array_spec import ArraySpec
    from zarr.core.chunk_grids import ChunkGrid
    from zarr.core.dtype.wrapper import TBaseDType, TBaseScalar, ZDType


@dataclass(frozen=True)
class VAECodec(ArrayBytesCodec):
    """Zarr v3 array→bytes codec ``"tempocodec.vae"``: float32 ``(rows, cols, n_channels)`` chunks <-> VAE payloads.

    ``fill_value`` (the source's fill) marks invalid elements on encode, besides the array's fill value, and is what
    they decode to; None (the default) uses the array's fill value. ``valid_min``, ``valid_max``: the source's valid
    range; ``decode_only``: it refuses to encode (:class:`~tempocodec.codec.config.CodecConfig`). Each mini-batch
    of chunks (``codec_pipeline.batch_size``) goes through the model in one call, in a worker thread.
    """

    is_fixed_size = False

    config: CodecConfig

    def __init__(self, *, model: str, model_sha256: str, mu: Sequence[float], sigma: Sequence[float],
                 latent_dtype: str = "float16", tile: Sequence[int] = (64, 64), fill_value: float | None = None,
                 valid_min: float | None = None, valid_max: float | None = None,
                 residual: ResidualSpec | dict[str, Any] | None = None, latent_step: float | None = None,
                 decode_only: bool = False) -> None:
        config = CodecConfig.parse(model=model, model_sha256=model_sha256, mu=mu, sigma=sigma, latent_dtype=latent_dtype,
                                   tile=tile, fill_value=fill_value, valid_min=valid_min, valid_max=valid_max,
                                   residual=residual, latent_step=latent_step, decode_only=decode_only)
        object.__setattr__(self, "config", config)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Self:
        """Codec from its ``zarr.json`` entry ``{"name": "tempocodec.vae", "configuration": {...}}``."""
        if not isinstance(data, dict) or data.get("name") != CODEC_NAME or not isinstance(data.get("configuration"), dict):
            raise TempocodecError(f"{CODEC_NAME}: codec metadata must be {{'name': {CODEC_NAME!r}, 'configuration': {{...}}}}")
        return cls(**data["configuration"])

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.config.summary()})"

    def to_dict(self) -> dict[str, Any]:
        """The ``zarr.json`` entry of this codec."""
        return {"name": CODEC_NAME, "configuration": self.config.to_json()}

    def validate(self, *, shape: tuple[int, ...], dtype: ZDType[TBaseDType, TBaseScalar], chunk_grid: ChunkGrid) -> None:
        """Raise unless the array is float32 ``(mirror_step, xtrack, n_channels)`` in chunks of the codec's shape."""
        native = dtype.to_native_dtype()
        if native != np.dtype("float32"):
            raise TempocodecError(f"{CODEC_NAME}: array dtype is {native}, the codec takes float32 radiance")
        chunks = getattr(chunk_grid, "chunk_shape", None)  # a regular grid; None for any other kind
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
        """Encode chunks with one model call per :data:`~tempocodec.codec.kernel.MAX_BATCH`; the array's fill value
        (zarr's edge padding) marks invalid elements too."""
        if self.config.decode_only:
            raise TempocodecError(SECOND_GENERATION)
        tiles = np.stack([np.asarray(chunk.as_numpy_array()) for chunk, _ in items])
        fills = [float(spec.fill_value) for _, spec in items]
        blobs = kernel.encode_tiles(tiles, fills, self.config)
        return [spec.prototype.buffer.from_bytes(blob) for blob, (_, spec) in zip(blobs, items, strict=True)]

    def _decode_batch(self, items: list[tuple[Buffer, ArraySpec]]) -> list[NDBuffer]:
        """Decode chunks with one model call per :data:`~tempocodec.codec.kernel.MAX_BATCH`."""
        for _, spec in items:
            if spec.shape != self.config.chunk_shape:
                raise TempocodecError(f"{CODEC_NAME}: chunk shape {spec.shape} is not the codec's {self.config.chunk_shape}")
        chunks = [buf.as_numpy_array() for buf, _ in items]
        tiles = kernel.decode_tiles(chunks, [self._fill(spec) for _, spec in items], self.config)
        return [spec.prototype.nd_buffer.from_numpy_array(tile) for tile, (_, spec) in zip(tiles, items, strict=True)]

    async def encode(self, chunks_and_specs: Iterable[tuple[NDBuffer | None, ArraySpec]]) -> Iterable[Buffer | None]:
        """Encode a mini-batch of chunks in one worker-thread call; None entries pass through."""
        return await batched(self._encode_batch, list(chunks_and_specs))

    async def decode(self, chunks_and_specs: Iterable[tuple[Buffer | None, ArraySpec]]) -> Iterable[NDBuffer | None]:
        """Decode a mini-batch of chunks in one worker-thread call; None entries pass through."""
        return await batched(self._decode_batch, list(chunks_and_specs))


async def batched(run: Any, items: list[tuple[Any, Any]]) -> list[Any]:
    """Run ``run`` on the non-None ``(data, spec)`` items in a thread; results in place, None where data was None."""
    present = [i for i, (data, _) in enumerate(items) if data is not None]
    results: list[Any] = [None] * len(items)
    if present:
        done = await asyncio.to_thread(run, [items[i] for i in present])
        for i, value in zip(present, done, strict=True):
            results[i] = value
    return results


def make_codec(model: ModelArtifacts | str | os.PathLike, latent_dtype: str = "float16", fill_value: float | None = None,
               valid_min: float | None = None, valid_max: float | None = None,
               residual: ResidualSpec | None = None, latent_step: float | None = None,
               decode_only: bool = False) -> VAECodec:
    """The Zarr v3 codec for ``model`` and a source with ``fill_value`` and valid range ``[valid_min, valid_max]``,
    with the residual layer ``residual`` (None: latent only); ``fill_value`` None decodes invalid elements to the
    array's fill value; ``decode_only``: the codec a store writer records, which refuses to encode."""
    return VAECodec(**model_config(model, latent_dtype, fill_value, valid_min, valid_max, latent_step), residual=residual,
                    decode_only=decode_only)
