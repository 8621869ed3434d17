"""Cut a band's radiance into square tiles, and pool Level-2 fields onto the latent grid (numpy only).

Tiles lie on a regular grid anchored at pixel (0, 0) of ``(mirror_step, xtrack)``: tile ``(i, j)`` covers
steps ``[i*T, (i+1)*T)`` and xtracks ``[j*T, (j+1)*T)``. Edge tiles that run past the granule are padded with the
L1B fill value, and their padded pixels are invalid. A pixel is *valid* when at least half of its spectral
channels hold valid radiance (see :func:`tempocodec.prepare.normalize.is_valid`).

The latent grid has one cell per ``d × d`` block of pixels (``d = 4``): latent cell ``(a, b)`` of a tile at origin
``(s0, x0)`` covers steps ``s0 + d*a ...`` and xtracks ``x0 + d*b ...``. A Level-2 field is pooled to it as the
mean over the finite values of each block, NaN where the block has none.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tempocodec.errors import TempocodecError
from tempocodec.prepare.normalize import RADIANCE_FILL, is_valid

TILE = 64
DOWNSAMPLE = 4
MIN_VALID_CHANNELS = 0.5


@dataclass(frozen=True)
class Tiles:
    """A stack of tiles from one band.

    ``radiance``: float32 ``(N, T, T, C)`` in TEMPO order (padding holds the fill value);
    ``mask``: bool ``(N, T, T)``, true for valid pixels; ``origins``: int64 ``(N, 2)``, the (mirror_step, xtrack)
    index of each tile's first pixel in the granule.
    """

    radiance: np.ndarray
    mask: np.ndarray
    origins: np.ndarray

    def __len__(self) -> int:
        return int(self.origins.shape[0])


def pixel_mask(radiance: np.ndarray, min_valid_channels: float = MIN_VALID_CHANNELS) -> np.ndarray:
    """``(..., C)`` radiance -> bool ``(...)``: true where at least ``min_valid_channels`` of the channels are valid."""
    valid = is_valid(radiance)
    return valid.mean(axis=-1) >= min_valid_channels


def grid_shape(n_steps: int, n_xtrack: int, tile: int = TILE) -> tuple[int, int]:
    """Number of tiles along (mirror_step, xtrack) that cover ``n_steps × n_xtrack`` pixels (edge tiles partial)."""
    return -(-n_steps // tile), -(-n_xtrack // tile)


def cut_tiles(radiance: np.ndarray, tile: int = TILE, min_valid: float = 0.5, step_offset: int = 0) -> Tiles:
    """Cut radiance ``(mirror_step, xtrack, C)`` into tiles of ``tile × tile`` pixels.

    Keeps the tiles whose fraction of valid pixels (padding counts as invalid) is at least ``min_valid``; use
    ``min_valid=0`` to keep every tile. ``step_offset`` is added to the mirror-step origins (for a block read
    from the middle of a granule). Tiles come out in row-major grid order.
    """
    radiance = np.asarray(radiance)
    if radiance.ndim != 3:
        raise TempocodecError(f"tiles: radiance must be (mirror_step, xtrack, channel), got shape {radiance.shape}")
    n_steps, n_xtrack, n_channels = radiance.shape
    rows, cols = grid_shape(n_steps, n_xtrack, tile)
    mask = pixel_mask(radiance)
    kept_radiance, kept_mask, origins = [], [], []
    for i in range(rows):
        for j in range(cols):
            steps, xtracks = slice(i * tile, (i + 1) * tile), slice(j * tile, (j + 1) * tile)
            tile_mask = np.zeros((tile, tile), bool)
            part = mask[steps, xtracks]
            tile_mask[: part.shape[0], : part.shape[1]] = part
            if tile_mask.mean() < min_valid:
                continue
            tile_radiance = np.full((tile, tile, n_channels), RADIANCE_FILL, np.float32)
            tile_radiance[: part.shape[0], : part.shape[1]] = radiance[steps, xtracks]
            kept_radiance.append(tile_radiance)
            kept_mask.append(tile_mask)
            origins.append((step_offset + i * tile, j * tile))
    if not origins:
        return Tiles(np.zeros((0, tile, tile, n_channels), np.float32), np.zeros((0, tile, tile), bool),
                     np.zeros((0, 2), np.int64))
    return Tiles(np.stack(kept_radiance), np.stack(kept_mask), np.asarray(origins, np.int64))


def pool_to_latent(field: np.ndarray, downsample: int = DOWNSAMPLE) -> np.ndarray:
    """Pool a field ``(mirror_step, xtrack)`` to ``(ceil(S/d), ceil(X/d))`` float32: the mean of the finite values
    of each ``d × d`` block (partial edge blocks use the pixels they have), NaN where a block has none."""
    field = np.asarray(field, np.float64)
    if field.ndim != 2:
        raise TempocodecError(f"pooling: field must be (mirror_step, xtrack), got shape {field.shape}")
    rows, cols = grid_shape(field.shape[0], field.shape[1], downsample)
    padded = np.full((rows * downsample, cols * downsample), np.nan)
    padded[: field.shape[0], : field.shape[1]] = field
    blocks = padded.reshape(rows, downsample, cols, downsample)
    finite = np.isfinite(blocks)
    count = finite.sum(axis=(1, 3))
    total = np.where(finite, blocks, 0.0).sum(axis=(1, 3))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / count, np.nan).astype(np.float32)


def pool_tiles(field: np.ndarray, origins: np.ndarray, tile: int = TILE, downsample: int = DOWNSAMPLE) -> np.ndarray:
    """Pool a field ``(mirror_step, xtrack)`` onto the latent grid of each tile: ``(N, tile/d, tile/d)`` float32.

    ``origins`` ``(N, 2)`` are tile origins as in :class:`Tiles` (multiples of ``d``); cells outside the field are NaN.
    """
    origins = np.asarray(origins, np.int64).reshape(-1, 2)
    if tile % downsample or (origins % downsample).any():
        raise TempocodecError(f"pooling: tile {tile} and origins must be multiples of downsample {downsample}")
    pooled = pool_to_latent(field, downsample)
    cells = tile // downsample
    out = np.full((origins.shape[0], cells, cells), np.nan, np.float32)
    for n, (step, xtrack) in enumerate(origins // downsample):
        part = pooled[step : step + cells, xtrack : xtrack + cells]
        out[n, : part.shape[0], : part.shape[1]] = part
    return out
