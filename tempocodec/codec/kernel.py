"""The numpy kernel of the VAE codec: radiance chunks <-> chunk payloads, one model call per mini-batch.

A chunk is float32 radiance ``(tile_rows, tile_cols, n_channels)`` in TEMPO order ``(mirror_step, xtrack,
spectral_channel)``. Encoding marks invalid elements (:func:`valid_radiance`: not finite, not positive, ``>= 1e30``,
outside the configuration's ``[valid_min, valid_max]``, or equal to a fill value), normalizes
(``tempocodec.prepare.normalize``) with every invalid element set to 0, so none reaches the encoder, transposes to
the model's ``(N, n_channels, rows, cols)``, replicates the last valid row and column into the padding beyond the
valid extent, runs the encoder once per mini-batch and stores each chunk's latent mean over its valid extent with its
validity mask (``tempocodec.codec.payload``).
Decoding replicates the stored latent rows and columns back to the full latent grid, runs the decoder once per
mini-batch, inverts the normalization, clips to ``[valid_min, valid_max]`` where the configuration has them and
writes the fill value into every invalid element.

The Zarr v3 face (:mod:`tempocodec.codec.zarr3`) and the numcodecs face (:mod:`tempocodec.codec.numcodec`) both call
:func:`encode_tiles` and :func:`decode_tiles` through this module, so a test can replace them in one place.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from tempocodec.codec import payload, residual
from tempocodec.codec.config import CODEC_NAME, LATENT_DTYPES, CodecConfig
from tempocodec.cpus import cpu_count
from tempocodec.errors import TempocodecError
from tempocodec.prepare.normalize import INVALID_ABOVE, denormalize, normalize
from tempocodec.runtime.artifacts import ModelArtifacts, session

MAX_BATCH = 16
"""Most chunks per ONNX Runtime call (a 64×64×1028 chunk is 16.8 MB of float32 model input)."""
_SWAP_BLOCK = 64


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


def in_range(radiance: np.ndarray, config: CodecConfig) -> np.ndarray:
    """Bool of ``radiance``'s shape: true inside the radiance range, ``0 < L < 1e30`` narrowed to the configuration's
    ``[valid_min, valid_max]`` (false for NaN and infinities)."""
    lo, hi = config.valid_min, config.valid_max
    valid = radiance > 0 if lo is None or lo <= 0 else radiance >= np.float32(lo)
    upper = radiance < np.float32(INVALID_ABOVE) if hi is None or hi >= INVALID_ABOVE else radiance <= np.float32(hi)
    return valid & upper


def valid_radiance(raw: np.ndarray, fills: Sequence[float], config: CodecConfig) -> np.ndarray:
    """Bool ``(N, ...)`` for chunks ``raw`` float32 ``(N, ...)``: true where an element is valid radiance, that is
    :func:`in_range` and equal to neither ``fills[i]`` nor the configuration's ``fill_value``."""
    valid = in_range(raw, config)
    for i in range(raw.shape[0]):
        for fill in {fills[i], config.fill_value} - {None}:
            if in_range(np.asarray(fill, np.float32), config):  # a fill inside the range (1.0, say) marks elements too
                valid[i] &= raw[i] != np.float32(fill)
    return valid


def encode_tiles(tiles: np.ndarray, fills: Sequence[float], config: CodecConfig, noise: np.ndarray | None = None,
                 positions: Sequence[tuple[int, int]] | None = None) -> list[bytes]:
    """Compress radiance chunks float32 ``(N, rows, cols, n_channels)`` to N payloads.

    ``fills[i]``: a value that marks invalid elements of chunk ``i`` (the array's fill value, with which zarr pads
    edge chunks), besides those :func:`valid_radiance` always marks. ``noise``: the chunks' 1-σ noise
    (``radiance_error``) float32 of the same shape, which the bound of a residual layer refers to (None: the
    configuration's noise model); ``positions``: each chunk's ``(row, col)`` in the array's chunk grid, recorded in
    its payload (None: not recorded).
    """
    _check_tiles(tiles, config)
    art = config.artifacts()
    n, rows, cols, channels = tiles.shape
    if rows % art.downsample or cols % art.downsample:
        raise TempocodecError(f"{CODEC_NAME}: tile {config.tile} is not a multiple of model {art.name}'s downsample "
                              f"{art.downsample}")
    x = np.empty((n, channels, rows, cols), np.float32)
    prepared = list(pool().map(lambda i: _prepare(tiles[i], fills[i], config, art, x[i]), range(n)))
    valid = [v for v, _ in prepared]
    extents = [e for _, e in prepared]
    present = [i for i, (h, _) in enumerate(extents) if h]
    empty = np.zeros((0, art.latent_channels, rows // art.downsample, cols // art.downsample), np.float32)
    means = _run(art, "encoder", x if len(present) == n else x[present], "x", "mean") if present else empty
    dtype = LATENT_DTYPES[config.latent_dtype]
    limit = np.finfo(dtype).max
    out = []
    for i, extent in enumerate(extents):
        lat_rows, lat_cols = payload.latent_extent(extent, art.downsample)
        if extent[0]:
            latent = np.clip(means[present.index(i), :, :lat_rows, :lat_cols], -limit, limit).astype(dtype)
            if config.latent_step is not None:  # stored as multiples of the step: what decoding will see
                latent = np.rint(latent / np.float32(config.latent_step)) * np.float32(config.latent_step)
            mask = payload.compact_mask(valid[i][:, : extent[0], : extent[1]])
        else:
            latent, mask = np.zeros((art.latent_channels, 0, 0), dtype), None
        position = None if positions is None else positions[i]
        out.append(payload.Payload(latent, mask, (rows, cols), extent, channels, art.downsample, position,
                                   latent_step=config.latent_step))
    if config.residual is not None and present:
        out = _with_residuals(out, present, _channels_first(tiles), valid, x,
                              None if noise is None else _channels_first(noise), config)
    return [payload.pack(p) for p in out]


@functools.cache
def pool() -> ThreadPoolExecutor:
    """The threads that prepare and finish chunks side by side (numpy releases the GIL in its loops), one per CPU."""
    return ThreadPoolExecutor(max_workers=cpu_count(), thread_name_prefix="tempocodec-kernel")


def _prepare(tile: np.ndarray, fill: float, config: CodecConfig, art: ModelArtifacts, x: np.ndarray
             ) -> tuple[np.ndarray, tuple[int, int]]:
    """Normalize one chunk ``tile`` float32 ``(rows, cols, C)`` into the encoder's input ``x`` ``(C, rows, cols)``:
    invalid elements 0, the last valid row and column replicated into the padding beyond the valid extent. Returns
    the chunk's validity (bool ``(C, rows, cols)``, a view) and its valid extent."""
    valid = valid_radiance(tile[None], [fill], config)[0]
    y = normalize(tile, art.mu, art.sigma, axis=-1, valid=valid)
    rows, cols, channels = tile.shape
    _swap_last_axes(y.reshape(1, rows * cols, channels), x.reshape(1, channels, rows * cols))
    valid_cf = valid.transpose(2, 0, 1)
    h, w = payload.valid_extent(valid_cf)
    if h:
        x[:, h:, :] = x[:, h - 1 : h, :]
        x[:, :, w:] = x[:, :, w - 1 : w]
    return valid_cf, (h, w)


def _channels_first(tiles: np.ndarray) -> np.ndarray:
    """``(N, rows, cols, C)`` float32 chunks as a new ``(N, C, rows, cols)`` float32 array."""
    n, rows, cols, channels = tiles.shape
    out = np.empty((n, channels, rows, cols), dtype=np.float32)
    _swap_last_axes(np.asarray(tiles, np.float32).reshape(n, rows * cols, channels), out.reshape(n, channels, rows * cols))
    return out


def _latent_grid(parsed: Sequence[payload.Payload], lat_shape: tuple[int, int, int]) -> np.ndarray:
    """The decoder's input float32 ``(N, *lat_shape)``: each payload's stored latent, its last row and column
    repeated over the rest of the latent grid."""
    z = np.empty((len(parsed), *lat_shape), dtype=np.float32)
    for j, p in enumerate(parsed):
        lat = p.latent
        z[j] = np.pad(lat, ((0, 0), (0, lat_shape[1] - lat.shape[1]), (0, lat_shape[2] - lat.shape[2])), mode="edge")
    return z


def _with_residuals(payloads: list[payload.Payload], present: list[int], raw: np.ndarray, valid: Sequence[np.ndarray],
                    x: np.ndarray, noise: np.ndarray | None, config: CodecConfig) -> list[payload.Payload]:
    """``payloads`` with the residual of each chunk in ``present`` added: the decoder runs on the stored latents, as
    it will when decoding, and :func:`tempocodec.codec.residual.encode` codes what it misses."""
    assert config.residual is not None
    art = config.artifacts()
    _, _, rows, cols = raw.shape
    lat_shape = (art.latent_channels, rows // art.downsample, cols // art.downsample)
    xhat = _run(art, "decoder", _latent_grid([payloads[i] for i in present], lat_shape), "z", "x")
    out = list(payloads)
    for j, i in enumerate(present):
        h, w = payloads[i].extent
        part = (slice(None), slice(0, h), slice(0, w))
        blob = residual.encode(raw[i][part], valid[i][part], x[i][part], xhat[j][part], config.residual, art.mu,
                               art.sigma, None if noise is None else noise[i][part])
        out[i] = dataclasses.replace(payloads[i], residual=blob)
    return out


def decode_tiles(chunks: Sequence[Any], fills: Sequence[float], config: CodecConfig) -> np.ndarray:
    """Decompress N payloads (bytes-like) to radiance float32 ``(N, rows, cols, n_channels)``.

    Valid elements are clipped to the configuration's ``[valid_min, valid_max]``; invalid elements, and everything
    outside each chunk's valid extent, become ``fills[i]``.
    """
    where = f"{CODEC_NAME} chunk of model {config.model!r}"
    return decode_payloads([payload.unpack(chunk, where=where, chunk_shape=config.chunk_shape) for chunk in chunks],
                           fills, config)


def decode_payloads(parsed: Sequence[payload.Payload], fills: Sequence[float], config: CodecConfig) -> np.ndarray:
    """:func:`decode_tiles` of payloads already unpacked (:func:`tempocodec.codec.payload.unpack`)."""
    art = config.artifacts()
    rows, cols, channels = config.chunk_shape
    where = f"{CODEC_NAME} chunk of model {config.model!r}"
    lat_shape = (art.latent_channels, rows // art.downsample, cols // art.downsample)
    for p in parsed:
        if (p.tile, p.n_channels, p.downsample, p.latent.shape[0]) != (config.tile, channels, art.downsample, lat_shape[0]):
            raise TempocodecError(
                f"{CODEC_NAME}: chunk holds tile {p.tile}, {p.n_channels} channels, downsample {p.downsample}, "
                f"{p.latent.shape[0]} latent channels; model {art.name!r} and the array expect {config.tile}, "
                f"{channels}, {art.downsample}, {lat_shape[0]}"
            )
    present = [i for i, p in enumerate(parsed) if p.extent[0]]
    empty = np.zeros((0, channels, rows, cols), np.float32)
    xhat = _run(art, "decoder", _latent_grid([parsed[i] for i in present], lat_shape), "z", "x") if present else empty
    out = np.empty((len(parsed), rows, cols, channels), dtype=np.float32)
    slot = {i: j for j, i in enumerate(present)}

    def finish(i: int) -> None:
        if i in slot:
            _finish(out[i], xhat[slot[i]], parsed[i], np.float32(fills[i]), config, f"{where} {i}")
        else:
            out[i] = np.float32(fills[i])

    list(pool().map(finish, range(len(parsed))))
    return out


def _finish(out: np.ndarray, xhat: np.ndarray, p: payload.Payload, fill: np.float32, config: CodecConfig, where: str
            ) -> None:
    """One decoded chunk into ``out`` float32 ``(rows, cols, C)`` from the decoder's output ``xhat`` ``(C, rows,
    cols)``: denormalized (or the residual layer's reconstruction), clipped to the configuration's valid range, the
    fill value outside the valid extent and at invalid elements."""
    art = config.artifacts()
    channels, rows, cols = xhat.shape
    # with a residual layer, the extent comes from it (the rest becomes fill below): no exp here twice
    radiance = denormalize(xhat, art.mu, art.sigma, axis=0) if config.residual is None else np.empty_like(xhat)
    _apply_residual(radiance, xhat, p, config, where)
    if config.valid_min is not None or config.valid_max is not None:
        np.clip(radiance, config.valid_min, config.valid_max, out=radiance)
    _swap_last_axes(radiance.reshape(1, channels, rows * cols), out.reshape(1, rows * cols, channels))
    h, w = p.extent
    out[h:] = fill
    out[:h, w:] = fill
    if p.mask is not None:
        np.copyto(out[:h, :w], fill, where=~(p.mask[..., None] if p.mask.ndim == 2 else p.mask.transpose(1, 2, 0)))


def _apply_residual(radiance: np.ndarray, xhat: np.ndarray, p: payload.Payload, config: CodecConfig, where: str) -> None:
    """Replace the valid extent of one chunk's ``radiance`` float32 ``(C, rows, cols)`` by its residual layer's
    reconstruction from the decoder's output ``xhat`` (same shape); raise unless the payload and the configuration
    agree on having one."""
    if bool(p.residual) != (config.residual is not None):
        has = "holds a residual" if p.residual else "lacks the residual"
        raise TempocodecError(f"{where}: chunk {has} that the array's codec configuration "
                              f"{'does not name' if p.residual else 'names'}")
    if config.residual is None:
        return
    h, w = p.extent
    valid = np.ones((p.n_channels, h, w), dtype=bool) if p.mask is None else np.broadcast_to(p.mask, (p.n_channels, h, w))
    art = config.artifacts()
    radiance[:, :h, :w] = residual.decode(memoryview(p.residual), xhat[:, :h, :w], valid, config.residual, art.mu,
                                          art.sigma, where)
