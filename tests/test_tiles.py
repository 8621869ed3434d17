"""Tests for tempocodec.prepare.tiles: tile cutting with edge tiles and fill, and pooling onto the latent grid."""

import numpy as np
import pytest

from tempocodec.errors import TempocodecError
from tempocodec.prepare.normalize import RADIANCE_FILL
from tempocodec.prepare.tiles import (
    cut_tiles,
    grid_shape,
    pixel_mask,
    pool_tiles,
    pool_to_latent,
)


def _band(steps, xtrack, channels=3):
    """Radiance whose value encodes its position: L = 1000*step + xtrack + 1 (+ channel / 10)."""
    s, x, c = np.meshgrid(np.arange(steps), np.arange(xtrack), np.arange(channels), indexing="ij")
    return (1000.0 * s + x + 1 + c / 10).astype(np.float32)


def test_grid_covers_edges():
    assert grid_shape(64, 64, 64) == (1, 1)
    assert grid_shape(65, 130, 64) == (2, 3)


def test_cut_tiles_edge_padding_and_origins():
    band = _band(20, 10)
    tiles = cut_tiles(band, tile=8, min_valid=0.0, step_offset=100)
    assert len(tiles) == 3 * 2
    assert tiles.radiance.shape == (6, 8, 8, 3) and tiles.mask.shape == (6, 8, 8)
    assert tiles.origins.tolist() == [[100, 0], [100, 8], [108, 0], [108, 8], [116, 0], [116, 8]]
    np.testing.assert_array_equal(tiles.radiance[3], np.pad(band[8:16, 8:10], ((0, 0), (0, 6), (0, 0)),
                                                           constant_values=RADIANCE_FILL))
    assert tiles.mask[3, :, :2].all() and not tiles.mask[3, :, 2:].any()
    assert tiles.mask[5].sum() == 4 * 2  # steps 16..19, xtracks 8..9


def test_tiles_dominated_by_fill_are_skipped():
    band = _band(16, 16)
    band[:8, :8] = RADIANCE_FILL  # tile (0, 0): all fill
    band[8:16, 0:8, :2] = np.nan  # tile (1, 0): two of three channels invalid -> pixels invalid
    band[0:3, 8:16, 0] = RADIANCE_FILL  # tile (0, 1): one of three channels invalid -> pixels stay valid
    tiles = cut_tiles(band, tile=8, min_valid=0.5)
    assert tiles.origins.tolist() == [[0, 8], [8, 8]]
    assert tiles.mask.all()
    assert len(cut_tiles(band, tile=8, min_valid=0.0)) == 4
    assert len(cut_tiles(np.full((4, 4, 3), RADIANCE_FILL), tile=8)) == 0


def test_pixel_mask_threshold():
    spectrum = np.array([[1.0, np.nan, RADIANCE_FILL, 2.0]], np.float32)
    assert pixel_mask(spectrum).tolist() == [True]
    assert pixel_mask(spectrum, 0.75).tolist() == [False]


def test_pool_to_latent_means_finite_values_and_nan_where_none():
    field = np.arange(6 * 5, dtype=np.float64).reshape(6, 5)
    field[0:4, 0:4][0, 0] = np.nan
    field[4:6, 0:4] = np.nan
    pooled = pool_to_latent(field, downsample=4)
    assert pooled.shape == (2, 2) and pooled.dtype == np.float32
    block = field[0:4, 0:4]
    assert pooled[0, 0] == pytest.approx(np.nanmean(block))
    assert pooled[0, 1] == pytest.approx(field[0:4, 4].mean())
    assert np.isnan(pooled[1, 0])
    assert pooled[1, 1] == pytest.approx(field[4:6, 4].mean())


def test_pool_tiles_aligns_with_tile_origins():
    field = np.arange(12 * 8, dtype=np.float32).reshape(12, 8)
    pooled = pool_tiles(field, np.array([[0, 0], [8, 4]]), tile=8, downsample=4)
    assert pooled.shape == (2, 2, 2)
    assert pooled[0, 0, 0] == pytest.approx(field[0:4, 0:4].mean())
    assert pooled[1, 0, 0] == pytest.approx(field[8:12, 4:8].mean())
    assert np.isnan(pooled[1, 1]).all() and np.isnan(pooled[1, 0, 1])
    with pytest.raises(TempocodecError, match="multiples"):
        pool_tiles(field, np.array([[2, 0]]), tile=8, downsample=4)
