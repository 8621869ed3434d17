"""The numcodecs face of the VAE codec (a Zarr v2 compressor), ``"tempocodec_vae"``, on the numpy kernel.

The ``numcodecs.codecs`` entry point names it as ``tempocodec.codec:VAENumcodec``.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from typing import Any

import numpy as np
from numcodecs.abc import Codec
from numcodecs.compat import ensure_contiguous_ndarray, ndarray_copy

from tempocodec.codec import kernel
from tempocodec.codec.config import CODEC_ID, RADIANCE_FILL, SECOND_GENERATION, CodecConfig, model_config
from tempocodec.codec.residual import ResidualSpec
from tempocodec.errors import TempocodecError
from tempocodec.runtime.artifacts import ModelArtifacts


class VAENumcodec(Codec):
    """numcodecs codec ``"tempocodec_vae"`` (Zarr v2 compressor) on the same kernel as the Zarr v3 ``VAECodec``.

    ``encode`` takes a float32 chunk ``(rows, cols, n_channels)`` as an array or as raw bytes; ``decode`` returns
    float32 ``(rows, cols, n_channels)``. Elements equal to ``fill_value`` count as invalid, and every invalid element
    decodes to it: create the array with the same fill value so that zarr's edge padding is recognised.
    ``valid_min``, ``valid_max``: the source's valid range; ``decode_only``: it refuses to encode
    (:class:`~tempocodec.codec.config.CodecConfig`).
    """

    codec_id = CODEC_ID

    def __init__(self, model: str, model_sha256: str, mu: Sequence[float], sigma: Sequence[float],
                 latent_dtype: str = "float16", tile: Sequence[int] = (64, 64), fill_value: float = RADIANCE_FILL,
                 valid_min: float | None = None, valid_max: float | None = None,
                 residual: ResidualSpec | dict[str, Any] | None = None, latent_step: float | None = None,
                 decode_only: bool = False) -> None:
        self._config = CodecConfig.parse(model=model, model_sha256=model_sha256, mu=mu, sigma=sigma,
                                         latent_dtype=latent_dtype, tile=tile, fill_value=fill_value,
                                         valid_min=valid_min, valid_max=valid_max, residual=residual,
                                         latent_step=latent_step, decode_only=decode_only)
        fill = self._config.fill_value
        if fill is None:  # a v2 array's fill value is what every invalid element decodes to
            raise TempocodecError(f"{CODEC_ID}: 'fill_value' must be a number, got None")
        self._fill = fill

    @property
    def config(self) -> CodecConfig:
        """The parsed configuration."""
        return self._config

    def get_config(self) -> dict[str, Any]:
        """``.zarray`` compressor entry: ``{"id": "tempocodec_vae", ...}``."""
        return {"id": self.codec_id, **self._config.to_json()}

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._config.summary()})"

    def encode(self, buf: Any) -> bytes:
        """One chunk (float32 array of the chunk shape, or its raw bytes) -> payload bytes."""
        if self._config.decode_only:
            raise TempocodecError(SECOND_GENERATION)
        arr = ensure_contiguous_ndarray(buf) if not isinstance(buf, np.ndarray) else np.ascontiguousarray(buf)
        if arr.dtype.itemsize == 1 and arr.dtype.kind in "uib":
            arr = arr.reshape(-1).view(np.float32)
        shape = self._config.chunk_shape
        if arr.dtype != np.float32 or arr.size != math.prod(shape):
            raise TempocodecError(
                f"{CODEC_ID}: chunk must be float32 {shape} of model {self._config.model!r}, got {arr.dtype} {arr.shape}"
            )
        return kernel.encode_tiles(arr.reshape(1, *shape), [self._fill], self._config)[0]

    def decode(self, buf: Any, out: Any = None) -> Any:
        """Payload bytes -> float32 ``(rows, cols, n_channels)`` (copied into ``out`` when given)."""
        data = ensure_contiguous_ndarray(buf).reshape(-1).view(np.uint8)
        tile = kernel.decode_tiles([data], [self._fill], self._config)[0]
        return ndarray_copy(tile, out)


def make_numcodec(model: ModelArtifacts | str | os.PathLike, latent_dtype: str = "float16",
                  fill_value: float = RADIANCE_FILL, valid_min: float | None = None,
                  valid_max: float | None = None, residual: ResidualSpec | None = None,
                  latent_step: float | None = None, decode_only: bool = False) -> VAENumcodec:
    """The Zarr v2 (numcodecs) codec for ``model`` and a source with ``fill_value`` and valid range
    ``[valid_min, valid_max]``, with the residual layer ``residual``; create the array with the same ``fill_value``.
    ``decode_only``: the codec a store writer records, which refuses to encode."""
    return VAENumcodec(**model_config(model, latent_dtype, float(fill_value), valid_min, valid_max, latent_step),
                       residual=residual, decode_only=decode_only)
