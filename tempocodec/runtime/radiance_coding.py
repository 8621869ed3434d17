"""How compress codes one band's radiance: the VAE codec's zarr encoding, quantized latents' step, and the residual
layer of an error-bounded or rate-controlled store (fitted on a sample of the granule's first stripe, written by
:func:`tempocodec.runtime.streaming.radiance_writer` so that its bound sees each value's ``radiance_error``), and
``radiance_error`` coded from the latents (:mod:`tempocodec.codec.noise`), written by the same sink."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import xarray as xr
import zarr

from tempocodec.codec.config import CodecConfig, model_config
from tempocodec.codec.kernel import encode_tiles, pool
from tempocodec.codec.noise import MAX_DIGITS, NoiseCoding, grid_fraction
from tempocodec.codec.noise import encode as noise_encode
from tempocodec.codec.noise_codec import NoiseCodec, NoiseConfig, NoiseNumcodec, decoded_radiance
from tempocodec.codec.numcodec import make_numcodec
from tempocodec.codec.residual import ResidualSpec
from tempocodec.codec.residual_fit import (
    Sample,
    fit_noise,
    fit_residual,
    latent_only_ratio,
    latent_step,
    sample_starts,
    step_for_ratio,
)
from tempocodec.codec.zarr3 import make_codec
from tempocodec.defaults import RELATIVE_LATENT_STEP
from tempocodec.errors import TempocodecError
from tempocodec.granule.l1b import RADIANCE_DIMS
from tempocodec.prepare.tiles import TILE
from tempocodec.runtime.artifacts import ModelArtifacts
from tempocodec.runtime.auxcodecs import rounded_size
from tempocodec.runtime.streaming import Coder, Sink, Stripes, radiance_writer

SHARD_XTRACK = 512
"""Cross-track pixels per radiance shard (Zarr v3)."""
ZarrFormat = Literal[2, 3]


@dataclass(frozen=True)
class ResidualRequest:
    """What the user asked of the residual layer: an error bound K (units of σ) or a target ratio, or neither."""

    bound: float | None = None
    ratio: float | None = None

    @classmethod
    def parse(cls, bound: float | None, ratio: float | None) -> ResidualRequest | None:
        """The request, None for latent only; a one-line error for both, or for a non-positive value."""
        if bound is not None and ratio is not None:
            raise TempocodecError("give --error-bound or --ratio, not both")
        if bound is not None and not 0 < bound < float("inf"):
            raise TempocodecError(f"--error-bound must be a positive number of radiance_error units, got {bound}")
        if ratio is not None and not 1 < ratio < float("inf"):
            raise TempocodecError(f"--ratio must be a number above 1, got {ratio}")
        return None if bound is None and ratio is None else cls(bound, ratio)


@dataclass(frozen=True)
class BandCoding:
    """How one band's radiance is coded: its model (None: lossless), latent dtype, residual request, the band's
    ``radiance_error`` (what a bound refers to; kept here even when the store drops it), the step of quantized
    latents (None: the default), and how a stored ``radiance_error`` is coded (``error_mode``, one of
    :data:`ERROR_MODES`)."""

    model: ModelArtifacts | None
    latent_dtype: str
    residual: ResidualRequest | None
    noise: xr.DataArray | None
    latent_step: float | None = None
    error_mode: str = "rounded"


ERROR_MODES = ("auto", "exact", "rounded")
"""How compress codes ``radiance_error``: ``exact`` from the radiance's latents (:mod:`tempocodec.codec.noise`),
``rounded`` bit-rounded (:mod:`tempocodec.runtime.auxcodecs`, any zarr reader decodes it), ``auto`` whichever of the
two is smaller on the compress sample."""


@dataclass(frozen=True)
class RadianceCoding:
    """What compress writes for a VAE-coded band: its entry of the ``tempocodec.bands`` attribute, the zarr encoding
    keys of ``radiance`` (and of ``radiance_error`` when coded from the latents), and the sinks that fill arrays
    themselves (:data:`~tempocodec.runtime.streaming.Coder`; None: filled by another's)."""

    entry: dict[str, Any]
    encodings: dict[str, dict[str, Any]]
    coders: dict[str, Coder | None]


def vae_radiance(stripes: Stripes, coding: BandCoding, fill: np.float32, valid: tuple[float | None, float | None],
                  zarr_format: ZarrFormat) -> RadianceCoding:
    """How a VAE-coded radiance is written (``stripes`` holds the band's ``radiance`` and, for a residual layer or
    a predicted ``radiance_error``, that too): quantized latents get their step from a sample of the granule unless
    one is given; the residual layer, when asked, and the noise model of a predicted ``radiance_error`` are fitted
    on the same sample."""
    assert coding.model is not None
    model = coding.model
    if coding.residual is not None and coding.noise is None:
        raise TempocodecError("--error-bound and --ratio need the granule's radiance_error, which this band lacks")
    predicts = coding.error_mode != "rounded" and stripes.noise == "radiance_error"
    needs_step = coding.latent_dtype == "quantized" and coding.latent_step is None
    sample = (_band_sample(stripes, coding.residual is not None or predicts, fill)
              if needs_step or coding.residual is not None or predicts else None)
    if needs_step:
        assert sample is not None
        plain = CodecConfig.parse(**model_config(model, "float32", float(fill), *valid))
        coding = dataclasses.replace(coding, latent_step=latent_step(sample, plain, RELATIVE_LATENT_STEP))
    spec, request, entry = None, coding.residual, _latent_entry(model, coding)
    config = CodecConfig.parse(**model_config(model, coding.latent_dtype, float(fill), *valid, coding.latent_step))
    if request is not None:
        assert sample is not None
        target = request.ratio
        if target is not None and config.latent_step is not None and target > 0.95 * latent_only_ratio(sample, config):
            # beyond the latent at its step: coarser latents, no residual layer and no bound
            coding = dataclasses.replace(coding, latent_step=step_for_ratio(sample, config, target))
            config = dataclasses.replace(config, latent_step=coding.latent_step)
            entry = _latent_entry(model, coding) | {"mode": "ratio", "target_ratio": target}
        else:
            spec = fit_residual(sample, config, bound=request.bound, ratio=target)
            entry |= _residual_entry(spec, request)
    encodings = {"radiance": radiance_encoding(model, coding, fill, valid, zarr_format, spec)}
    codec = encodings["radiance"]["serializer"] if zarr_format == 3 else encodings["radiance"]["compressors"][0]
    error = _error_config(sample, codec.config, coding) if predicts and sample is not None else None
    if error is not None:
        encodings["radiance_error"] = error_encoding(error, zarr_format)
        entry |= {"radiance_error": "predicted", "radiance_error_digits": error.coding.digits}
    writer = _writer(codec.config, fill, zarr_format, stripes.noise if spec else None, error)
    coders: dict[str, Coder | None] = {"radiance": writer} | ({"radiance_error": None} if error else {})
    return RadianceCoding(entry, encodings, coders)


def _error_config(sample: Sample, config: CodecConfig, coding: BandCoding) -> NoiseConfig | None:
    """The coding of ``radiance_error`` from the latents of ``config`` (the noise model fitted to what the sample's
    radiance decodes to, on the decimal grid the source declares, else the one the sample's values lie on), or None
    where the ``auto`` mode finds bit rounding smaller on the sample, or too few usable values to fit on."""
    values = sample.noise
    declared = declared_digits(coding.noise)
    digits = declared if declared in range(1, MAX_DIGITS + 1) else _sample_digits(values)
    latent = dataclasses.replace(config, residual=None, decode_only=False)
    fills = [sample.fill] * len(values)
    radiance, held = decoded_radiance(encode_tiles(sample.radiance, fills, latent), latent)
    channels = config.n_channels
    step = max(1, radiance[..., 0].size // FIT_PIXELS)
    fit_l, fit_s = radiance.reshape(-1, channels)[::step], values.reshape(-1, channels)[::step]
    fit_held = np.stack(held).transpose(0, 2, 3, 1).reshape(-1, channels)[::step]
    with np.errstate(invalid="ignore"):
        usable = fit_held & np.isfinite(fit_s) & (fit_s > 0) & (fit_s < 1e30)
    try:
        model = fit_noise(np.where(usable, fit_l, np.nan), np.where(usable, fit_s, np.nan), quantile=0.5)
    except TempocodecError:  # too few usable values to fit on
        return None
    error = NoiseConfig(latent, NoiseCoding(model, digits or 2))
    if coding.error_mode == "auto":
        def size(i: int) -> int:
            return len(noise_encode(values[i].transpose(2, 0, 1), radiance[i].transpose(2, 0, 1), held[i], error.coding))

        if sum(pool().map(size, range(len(values)))) >= rounded_size(values):
            return None
    return error


FIT_PIXELS = 4096
"""Spectra of the sample the noise model is fitted on (every n-th): one chunk's worth, 4 M values."""


def declared_digits(noise: xr.DataArray | None) -> int | None:
    """The significant digits a TEMPO writer declares for ``radiance_error`` (``number_of_significant_digits``)."""
    value = None if noise is None else noise.attrs.get("number_of_significant_digits")
    try:
        return None if value is None else int(value)
    except (TypeError, ValueError):
        return None


def _sample_digits(values: np.ndarray) -> int | None:
    """The fewest significant digits (1 to 3) on whose grid nearly all real values of ``values`` lie, else None."""
    with np.errstate(invalid="ignore"):
        real = values[np.abs(values) < 1e30]  # fill values are not the noise estimate
    return next((d for d in range(1, MAX_DIGITS + 1) if grid_fraction(real, d) >= 0.99), None)


def error_encoding(config: NoiseConfig, zarr_format: ZarrFormat) -> dict[str, Any]:
    """Zarr encoding keys of a ``radiance_error`` coded from the latents (chunked and sharded as the radiance)."""
    chunks = config.radiance.chunk_shape
    if zarr_format == 3:
        return {"serializer": NoiseCodec(**config.to_json()), "compressors": None, "filters": None, "chunks": chunks,
                "shards": (chunks[0], SHARD_XTRACK, chunks[2])}
    return {"compressors": [NoiseNumcodec(**config.to_json())], "filters": None, "chunks": chunks}


def _writer(config: CodecConfig, fill: np.float32, zarr_format: ZarrFormat, noise: str | None,
            error: NoiseConfig | None) -> Coder:
    """What fills the radiance array itself (:func:`radiance_writer`): with the residual layer's noise array
    ``noise`` of the stripes, and the sibling ``radiance_error`` array when ``error`` codes it."""
    cols = SHARD_XTRACK if zarr_format == 3 else TILE

    def coder(target: zarr.Array) -> Sink:
        sibling = None
        if error is not None:
            group = target.path.rpartition("/")[0]
            sibling = (zarr.open_array(store=target.store, path=f"{group}/radiance_error", mode="r+",
                                       zarr_format=zarr_format), error)
        return radiance_writer(target, config, float(fill), cols, noise, sibling)

    return coder


def band_stripes(ds: xr.Dataset, noise: xr.DataArray | None) -> Stripes:
    """The spectral variables of band group ``ds`` to stream, and the band's ``radiance_error`` as read (``noise``,
    what a bound refers to): the stored variable where that is it unchanged, else an array of its own."""
    arrays = {str(n): v.data for n, v in ds.data_vars.items() if v.dims == RADIANCE_DIMS}
    if noise is None:
        return Stripes(arrays)
    if arrays.get("radiance_error") is noise.data:
        return Stripes(arrays, noise="radiance_error")
    return Stripes(arrays | {"noise": noise.data}, noise="noise")


def _latent_entry(model: ModelArtifacts, coding: BandCoding) -> dict[str, Any]:
    """The band entry of a VAE-coded radiance: model, identity, latent dtype and step."""
    entry: dict[str, Any] = {"radiance": "vae", "model": model.name, "model_sha256": model.sha256,
                             "latent_dtype": coding.latent_dtype}
    if coding.latent_step is not None:
        entry["latent_step"] = coding.latent_step
    return entry


SAMPLE_CHUNKS = 4
"""Chunks of the first stripe that compress fits quantized latents and the residual layer on."""


def _band_sample(stripes: Stripes, with_noise: bool, fill: np.float32) -> Sample:
    """:data:`SAMPLE_CHUNKS` chunks spread across the first stripe of the granule (:func:`sample_starts`; the stripe
    the writer reads first, kept for it) with their noise when ``with_noise`` (else NaN), edges padded as zarr pads
    them (radiance with ``fill``, noise with NaN)."""
    block = stripes.first("radiance")
    err = stripes.first(stripes.noise) if with_noise and stripes.noise else None
    starts = sample_starts(block.shape[1], TILE, SAMPLE_CHUNKS)
    shape = (len(starts), TILE, TILE, block.shape[2])
    tiles, sigma = np.full(shape, fill, np.float32), np.full(shape, np.nan, np.float32)
    covered = 0
    for k, first in enumerate(starts):
        part = block[:, first : first + TILE]
        tiles[k, : part.shape[0], : part.shape[1]] = part
        if err is not None:
            sigma[k, : part.shape[0], : part.shape[1]] = err[:, first : first + TILE]
        covered += part.nbytes
    return Sample(tiles, sigma, float(fill), covered)


def _residual_entry(spec: ResidualSpec, request: ResidualRequest) -> dict[str, Any]:
    """The band entry's description of its residual layer: mode, bound (units of radiance_error), settings."""
    mode = {"mode": "ratio", "target_ratio": request.ratio} if request.ratio else {"mode": "error-bound"}
    return mode | {"error_bound": spec.bound, "residual": spec.describe()}


def radiance_encoding(model: ModelArtifacts, coding: BandCoding, fill: np.float32, valid: tuple[float | None, float | None],
                       zarr_format: ZarrFormat, residual: ResidualSpec | None = None) -> dict[str, Any]:
    """Zarr encoding of a radiance array through the VAE codec (sharded on v3), given the source's fill value and
    valid range ``(valid_min, valid_max)``: the codec takes both, and the zarr array's own fill value is the source's
    too, so that zarr's padding and chunks it never stores read as that fill. The codec is decode only: the store
    writer fills the array itself (:func:`~tempocodec.runtime.streaming.radiance_writer`), and the codec that
    ``xr.open_zarr`` keeps in ``.encoding`` then refuses to code the store's decoded values a second time."""
    chunks = (TILE, TILE, model.n_channels)
    if zarr_format == 3:
        return {
            "serializer": make_codec(model, latent_dtype=coding.latent_dtype, fill_value=float(fill), valid_min=valid[0],
                                     valid_max=valid[1], residual=residual, latent_step=coding.latent_step,
                                     decode_only=True),
            "compressors": None,
            "filters": None,
            "chunks": chunks,
            "shards": (TILE, SHARD_XTRACK, model.n_channels),
            "_FillValue": fill,
            "fill_value": fill,
        }
    return {
        "compressors": [make_numcodec(model, latent_dtype=coding.latent_dtype, fill_value=float(fill), valid_min=valid[0],
                                      valid_max=valid[1], residual=residual, latent_step=coding.latent_step,
                                      decode_only=True)],
        "filters": None,
        "chunks": chunks,
        "_FillValue": fill,
    }
