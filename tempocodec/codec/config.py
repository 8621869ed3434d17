"""The codec configuration both faces store in the array metadata, and the model it names.

:class:`CodecConfig` is a typed, frozen spec built from raw JSON (or Python) values by one ``parse_*`` helper per
key, in zarr's manner: each helper checks one value and returns it normalized, or raises a one-line
:class:`~tempocodec.errors.TempocodecError` naming the key. The configuration names the model and embeds its sha256
and normalization statistics, so a store says exactly how to decode it; the model is looked up by name
(:func:`tempocodec.runtime.artifacts.find_model`) and must match both.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np

from tempocodec.codec.residual import ResidualSpec, f32
from tempocodec.errors import TempocodecError
from tempocodec.prepare.normalize import RADIANCE_FILL as L1B_RADIANCE_FILL
from tempocodec.runtime.artifacts import (
    ModelArtifacts,
    find_model,
    load_model,
    resolve_model,
)

CODEC_NAME = "tempocodec.vae"
CODEC_ID = "tempocodec_vae"
LATENT_DTYPES: dict[str, np.dtype[np.floating]] = {"float16": np.dtype("<f2"), "float32": np.dtype("<f4"),
                                                   "quantized": np.dtype("<f4")}
"""How latents are stored: float16, float32, or quantized to multiples of ``latent_step`` and entropy coded."""

RADIANCE_FILL = float(L1B_RADIANCE_FILL)
_WHERE = f"{CODEC_NAME} codec configuration"
_HEX = frozenset("0123456789abcdef")
_F32_MAX = float(np.finfo(np.float32).max)


# --------------------------------------------------------------------------------------------------- parse helpers


def parse_model(data: object) -> str:
    """A model name: a non-empty string."""
    if not isinstance(data, str) or not data:
        raise TempocodecError(f"{_WHERE}: 'model' must be a model name, got {data!r}")
    return data


def parse_sha256(data: object) -> str:
    """A model identity: 64 lowercase hex digits."""
    if not (isinstance(data, str) and len(data) == 64 and set(data) <= _HEX):
        raise TempocodecError(f"{_WHERE}: 'model_sha256' must be 64 lowercase hex digits, got {data!r}")
    return data


def parse_statistics(mu: Sequence[float], sigma: Sequence[float]) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """``mu``, ``sigma``: equal-length float32 ``(n_channels,)``, finite, ``sigma > 0``; as tuples of floats."""
    try:
        mu32, sigma32 = np.asarray(mu, dtype=np.float32), np.asarray(sigma, dtype=np.float32)
    except (TypeError, ValueError):
        raise TempocodecError(f"{_WHERE}: 'mu' and 'sigma' must be lists of numbers") from None
    if mu32.ndim != 1 or mu32.size == 0 or mu32.shape != sigma32.shape:
        raise TempocodecError(f"{_WHERE}: 'mu' {mu32.shape} and 'sigma' {sigma32.shape} must be equal-length lists")
    if not (np.isfinite(mu32).all() and np.isfinite(sigma32).all() and (sigma32 > 0).all()):
        raise TempocodecError(f"{_WHERE}: 'mu' and 'sigma' must be finite and 'sigma' > 0")
    return tuple(f32(v) for v in mu32), tuple(f32(v) for v in sigma32)


def parse_latent_step(latent_dtype: str, data: object) -> float | None:
    """The quantization step of ``quantized`` latents: a positive float32, which they need; None for float latents,
    which take none."""
    if latent_dtype != "quantized":
        if data is not None:
            raise TempocodecError(f"{_WHERE}: 'latent_step' is only for 'quantized' latents, not {latent_dtype!r}")
        return None
    step = parse_optional_float(data, "latent_step")
    if step is None or step <= 0:
        raise TempocodecError(f"{_WHERE}: 'latent_step' must be a positive number, got {data!r}")
    return step


def parse_latent_dtype(data: object) -> str:
    """The stored latent dtype: one of :data:`LATENT_DTYPES`."""
    if data not in LATENT_DTYPES:
        raise TempocodecError(f"{_WHERE}: 'latent_dtype' {data!r} is not one of {sorted(LATENT_DTYPES)}")
    return str(data)


def parse_tile(data: Sequence[int]) -> tuple[int, int]:
    """The chunk ``(rows, cols)`` in pixels, each in 1..65535."""
    try:
        tile = tuple(int(t) for t in data)
    except (TypeError, ValueError):
        tile = ()
    if len(tile) != 2 or not all(0 < t < 2**16 for t in tile):
        raise TempocodecError(f"{_WHERE}: 'tile' must be two sizes in 1..65535, got {data!r}")
    return tile[0], tile[1]


def parse_optional_float(data: object, key: str) -> float | None:
    """None, or a finite number rounded to float32 (``key`` names it in the error)."""
    if data is None:
        return None
    try:
        value = float(data)  # type: ignore[arg-type]  # any JSON value: what float() refuses is caught below
    except (TypeError, ValueError):
        value = math.nan
    if not abs(value) <= _F32_MAX:  # NaN, infinities and what float32 would make infinite
        raise TempocodecError(f"{_WHERE}: '{key}' must be a finite float32 number, got {data!r}")
    return f32(value)


def parse_valid_range(valid_min: object, valid_max: object) -> tuple[float | None, float | None]:
    """The source's declared valid radiance range: each bound None or a finite float32, ``valid_min <= valid_max``."""
    lo, hi = parse_optional_float(valid_min, "valid_min"), parse_optional_float(valid_max, "valid_max")
    if lo is not None and hi is not None and lo > hi:
        raise TempocodecError(f"{_WHERE}: 'valid_min' {lo} is above 'valid_max' {hi}")
    return lo, hi


def parse_flag(value: object, key: str) -> bool:
    """A JSON boolean."""
    if not isinstance(value, bool):
        raise TempocodecError(f"{_WHERE}: {key!r} must be true or false, got {value!r}")
    return value


SECOND_GENERATION = (
    f"{CODEC_NAME}: this radiance was decoded from a store written by tempocodec compress; its codec (kept in "
    f".encoding by xr.open_zarr) would code the decoded values a second time, adding error; drop it to save them "
    f"losslessly (ds.radiance.encoding = {{}}; tempocodec.open_store does), or pass a new codec "
    f"(tempocodec.codec.zarr3.make_codec) to code them again on purpose"
)
"""Why a decode-only codec refuses to encode."""


# --------------------------------------------------------------------------------------------------- the spec


@dataclass(frozen=True)
class CodecConfig:
    """What both codec faces store in the array metadata (JSON-able once lists replace tuples).

    ``mu``, ``sigma``: the model's float32 normalization ``(n_channels,)``; ``tile``: chunk ``(rows, cols)`` in pixels;
    ``fill_value``: the source's fill value, which marks invalid elements on encode and which every invalid element
    decodes to (None: the array's fill value, v3 only); ``valid_min``, ``valid_max``: the source's declared valid range
    in radiance units (None: no bound beyond ``0 < L < 1e30``); ``residual``: the residual layer of an error-bounded
    or rate-controlled array (:class:`~tempocodec.codec.residual.ResidualSpec`, None: latent only); ``latent_step``:
    the quantization step of ``quantized`` latents; ``decode_only``: the configuration ``tempocodec compress``
    records on the radiance it writes, whose values are already decoded output: a codec built from it decodes and
    refuses to encode (:data:`SECOND_GENERATION`). The last six are optional keys in the JSON (stores written before
    they existed decode as before).
    """

    model: str
    model_sha256: str
    mu: tuple[float, ...]
    sigma: tuple[float, ...]
    latent_dtype: str
    tile: tuple[int, int]
    fill_value: float | None
    valid_min: float | None = None
    valid_max: float | None = None
    residual: ResidualSpec | None = None
    latent_step: float | None = None
    decode_only: bool = False

    @classmethod
    def parse(cls, *, model: str, model_sha256: str, mu: Sequence[float], sigma: Sequence[float],
              latent_dtype: str = "float16", tile: Sequence[int] = (64, 64), fill_value: float | None = None,
              valid_min: float | None = None, valid_max: float | None = None,
              residual: ResidualSpec | dict[str, Any] | None = None, latent_step: float | None = None,
              decode_only: bool = False) -> CodecConfig:
        """Check and normalize raw configuration values (from JSON or from Python)."""
        mu_t, sigma_t = parse_statistics(mu, sigma)
        lo, hi = parse_valid_range(valid_min, valid_max)
        if residual is not None and not isinstance(residual, ResidualSpec):
            residual = ResidualSpec.parse(residual, len(mu_t))
        return cls(
            model=parse_model(model),
            model_sha256=parse_sha256(model_sha256),
            mu=mu_t,
            sigma=sigma_t,
            latent_dtype=parse_latent_dtype(latent_dtype),
            tile=parse_tile(tile),
            fill_value=parse_optional_float(fill_value, "fill_value"),
            valid_min=lo,
            valid_max=hi,
            residual=residual,
            latent_step=parse_latent_step(parse_latent_dtype(latent_dtype), latent_step),
            decode_only=parse_flag(decode_only, "decode_only"),
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
        """JSON-able configuration (optional keys left out when None, ``decode_only`` when False)."""
        data: dict[str, Any] = {
            "model": self.model,
            "model_sha256": self.model_sha256,
            "mu": list(self.mu),
            "sigma": list(self.sigma),
            "latent_dtype": self.latent_dtype,
            "tile": list(self.tile),
        }
        optional = {"fill_value": self.fill_value, "valid_min": self.valid_min, "valid_max": self.valid_max,
                    "latent_step": self.latent_step,
                    "residual": None if self.residual is None else self.residual.to_json(),
                    "decode_only": self.decode_only or None}
        return data | {key: value for key, value in optional.items() if value is not None}

    def summary(self) -> str:
        """The configuration in a few words for a codec's ``repr``: model, abbreviated sha256, tile, latent dtype, and
        the fill value and valid range when set (the statistics, 2 × ``n_channels`` floats, are left out)."""
        text = f"model={self.model!r}, sha256='{self.model_sha256[:8]}…', tile={self.tile}, latent_dtype={self.latent_dtype!r}"
        optional = {"fill_value": self.fill_value, "valid_min": self.valid_min, "valid_max": self.valid_max}
        residual = [] if self.residual is None else [f", residual={self.residual.describe()!r}"]
        return "".join([text, *(f", {key}={value!r}" for key, value in optional.items() if value is not None), *residual])

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


# --------------------------------------------------------------------------------------------------- factories


def model_config(model: ModelArtifacts | str | os.PathLike, latent_dtype: str = "float16",
                 fill_value: float | None = None, valid_min: float | None = None,
                 valid_max: float | None = None, latent_step: float | None = None) -> dict[str, Any]:
    """Codec keyword arguments for ``model`` (artifacts given directly, or loaded from a model name or directory), the
    source's fill value and valid range, and the step of ``quantized`` latents."""
    art = model if isinstance(model, ModelArtifacts) else load_model(resolve_model(model))
    return {"model": art.name, "model_sha256": art.sha256, "mu": art.mu, "sigma": art.sigma,
            "latent_dtype": latent_dtype, "tile": (art.tile, art.tile), "fill_value": fill_value,
            "valid_min": valid_min, "valid_max": valid_max, "latent_step": latent_step}
