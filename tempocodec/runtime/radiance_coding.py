"""How compress codes one band's radiance: the VAE codec's zarr encoding, quantized latents' step, and the residual
layer of an error-bounded or rate-controlled store (fitted on a sample of the granule's first stripe, written by
:func:`tempocodec.runtime.streaming.bounded_writer` so that its bound sees each value's ``radiance_error``)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import xarray as xr

from tempocodec.codec.config import CodecConfig, model_config
from tempocodec.codec.numcodec import make_numcodec
from tempocodec.codec.residual import ResidualSpec
from tempocodec.codec.residual_fit import (
    Sample,
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
from tempocodec.runtime.streaming import Coder, Stripes, bounded_writer

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
    ``radiance_error`` (what a bound refers to; kept here even when the store drops it) and the step of quantized
    latents (None: the default)."""

    model: ModelArtifacts | None
    latent_dtype: str
    residual: ResidualRequest | None
    noise: xr.DataArray | None
    latent_step: float | None = None


def vae_radiance(stripes: Stripes, coding: BandCoding, fill: np.float32, valid: tuple[float | None, float | None],
                  zarr_format: ZarrFormat) -> tuple[dict[str, Any], dict[str, Any], dict[str, Coder]]:
    """The band entry, zarr encoding and coders of a VAE-coded radiance (``stripes`` holds the band's ``radiance``
    and, for a residual layer, its ``radiance_error``): quantized latents get their step from a sample of the
    granule unless one is given, and the residual layer, when asked, is fitted on the same sample."""
    assert coding.model is not None
    model = coding.model
    if coding.residual is not None and coding.noise is None:
        raise TempocodecError("--error-bound and --ratio need the granule's radiance_error, which this band lacks")
    needs_step = coding.latent_dtype == "quantized" and coding.latent_step is None
    sample = _band_sample(stripes, coding.residual is not None, fill) if needs_step or coding.residual is not None else None
    if needs_step:
        assert sample is not None
        plain = CodecConfig.parse(**model_config(model, "float32", float(fill), *valid))
        coding = dataclasses.replace(coding, latent_step=latent_step(sample, plain, RELATIVE_LATENT_STEP))
    spec, request = None, coding.residual
    if request is not None:
        assert sample is not None
        config = CodecConfig.parse(**model_config(model, coding.latent_dtype, float(fill), *valid, coding.latent_step))
        target = request.ratio
        if target is not None and config.latent_step is not None and target > 0.95 * latent_only_ratio(sample, config):
            # beyond the latent at its step: coarser latents, no residual layer and no bound
            coding = dataclasses.replace(coding, latent_step=step_for_ratio(sample, config, target))
            return _latent_entry(model, coding) | {"mode": "ratio", "target_ratio": target}, radiance_encoding(
                model, coding, fill, valid, zarr_format, None), {}
        spec = fit_residual(sample, config, bound=request.bound, ratio=target)
    encoding = radiance_encoding(model, coding, fill, valid, zarr_format, spec)
    entry = _latent_entry(model, coding)
    if spec is None or request is None:
        return entry, encoding, {}
    assert stripes.noise is not None
    coder = _bounded_coder(encoding, fill, zarr_format, stripes.noise)
    return entry | _residual_entry(spec, request), encoding, {"radiance": coder}


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


def _bounded_coder(encoding: dict[str, Any], fill: np.float32, zarr_format: ZarrFormat, noise: str) -> Coder:
    """What fills an error-bounded radiance array: :func:`bounded_writer` with the array's codec configuration and
    the band's noise (array ``noise`` of the stripes)."""
    codec = encoding["serializer"] if zarr_format == 3 else encoding["compressors"][0]
    cols = SHARD_XTRACK if zarr_format == 3 else TILE
    return lambda target: bounded_writer(target, codec.config, float(fill), cols, noise)


def radiance_encoding(model: ModelArtifacts, coding: BandCoding, fill: np.float32, valid: tuple[float | None, float | None],
                       zarr_format: ZarrFormat, residual: ResidualSpec | None = None) -> dict[str, Any]:
    """Zarr encoding of a radiance array through the VAE codec (sharded on v3), given the source's fill value and
    valid range ``(valid_min, valid_max)``: the codec takes both, and the zarr array's own fill value is the source's
    too, so that zarr's padding and chunks it never stores read as that fill."""
    chunks = (TILE, TILE, model.n_channels)
    if zarr_format == 3:
        return {
            "serializer": make_codec(model, latent_dtype=coding.latent_dtype, fill_value=float(fill), valid_min=valid[0],
                                     valid_max=valid[1], residual=residual, latent_step=coding.latent_step),
            "compressors": None,
            "filters": None,
            "chunks": chunks,
            "shards": (TILE, SHARD_XTRACK, model.n_channels),
            "_FillValue": fill,
            "fill_value": fill,
        }
    return {
        "compressors": [make_numcodec(model, latent_dtype=coding.latent_dtype, fill_value=float(fill), valid_min=valid[0],
                                      valid_max=valid[1], residual=residual, latent_step=coding.latent_step)],
        "filters": None,
        "chunks": chunks,
        "_FillValue": fill,
    }
