"""Tests for tempocodec.codec.latents: the latent grid read from stored chunk bytes equals the encoder's means."""

import numpy as np
import pytest
import zarr
from tiny_model import SMALL_CHANNELS, radiance, reference_latent

from tempocodec.codec import payload
from tempocodec.codec.config import RADIANCE_FILL
from tempocodec.codec.numcodec import make_numcodec
from tempocodec.codec.zarr3 import make_codec
from tempocodec.errors import TempocodecError
from tempocodec.codec.latents import read_latents
from tempocodec.prepare.normalize import is_valid

pytest_plugins = ["tiny_model_fixture"]  # the session fixture tiny_models

SHAPE = (131, 200, SMALL_CHANNELS)


def granule():
    """Radiance with a NaN pixel, a block of fill pixels, one bad element and one chunk with nothing valid."""
    x = radiance(SHAPE, seed=2)
    x[10, 20] = np.nan
    x[70:74, 5:9] = RADIANCE_FILL
    x[100, 195, 3] = np.inf
    x[64:128, 128:192] = np.nan
    return x


def write(path, x, zarr_format=3, shards=None, latent_dtype="float16"):
    if zarr_format == 3:
        coding = {"serializer": make_codec("tiny", latent_dtype=latent_dtype), "compressors": None, "shards": shards}
    else:
        coding = {"compressors": [make_numcodec("tiny", latent_dtype=latent_dtype)], "filters": None}
    arr = zarr.create_array(store=path, shape=x.shape, dtype="float32", chunks=(64, 64, x.shape[2]),
                            fill_value=RADIANCE_FILL, zarr_format=zarr_format, **coding)
    arr[:] = x
    return zarr.open_array(path, mode="r")


def expected_latents(model_dir, x, dtype="float16"):
    """Encoder means of every chunk's valid extent laid on the latent grid (NaN where no chunk covers a cell)."""
    rows, cols, channels = x.shape
    grid = np.full((4, -(-rows // 4), -(-cols // 4)), np.nan, np.float32)
    for r in range(0, rows, 64):
        for c in range(0, cols, 64):
            block = np.full((64, 64, channels), np.nan, np.float32)
            part = x[r : r + 64, c : c + 64]
            block[: part.shape[0], : part.shape[1]] = part
            extent = payload.valid_extent(is_valid(block).transpose(2, 0, 1))
            if extent[0]:
                lat = reference_latent(model_dir, block, extent, dtype)
                grid[:, r // 4 : r // 4 + lat.shape[1], c // 4 : c // 4 + lat.shape[2]] = lat
    return grid


@pytest.mark.parametrize(("zarr_format", "shards"), [(3, None), (3, (128, 128, SMALL_CHANNELS)), (2, None)],
                         ids=["v3", "v3-sharded", "v2"])
def test_latents_equal_the_encoder_means(tiny_models, tmp_path, zarr_format, shards):
    x = granule()
    lat = read_latents(write(tmp_path / "a.zarr", x, zarr_format, shards))
    assert lat.dims == ("latent_channel", "latent_row", "latent_col") and lat.shape == (4, 33, 50)
    assert lat.dtype == np.float32
    assert (lat.attrs["model"], lat.attrs["downsample"], lat.attrs["latent_dtype"]) == ("tiny", 4, "float16")
    expected = expected_latents(tiny_models.small, x)
    np.testing.assert_allclose(lat.values, expected, rtol=2e-3, atol=2e-3)
    assert np.isnan(lat.values[:, 16:32, 32:48]).all()
    assert np.isfinite(lat.values[:, :16, :32]).all()


def test_latent_grid_coordinates_and_valid_fraction(tiny_models, tmp_path):
    lat = read_latents(write(tmp_path / "a.zarr", granule()))
    np.testing.assert_array_equal(lat["pixel_row_start"][[0, 1, 32]], [0, 4, 128])
    np.testing.assert_array_equal(lat["pixel_row_stop"][[0, 32]], [4, 131])
    np.testing.assert_array_equal(lat["pixel_col_stop"][[0, 49]], [4, 200])
    fraction = lat["valid_fraction"].values
    assert fraction.shape == (33, 50) and fraction.dtype == np.float32
    assert fraction[2, 5] == pytest.approx(15 / 16)  # pixel (10, 20) NaN in every channel
    assert fraction[17, 1] == pytest.approx(10 / 16)  # fill pixels rows 70-71, cols 5-7
    assert fraction[25, 48] == pytest.approx(1 - 1 / (16 * SMALL_CHANNELS))  # one element (100, 195, 3)
    assert fraction[32, 49] == 1.0  # edge cell: 3 × 4 pixels inside the array, all valid
    assert (fraction[16:32, 32:48] == 0).all()
    assert (fraction[:16, :16][np.arange(16) != 2] == 1).all()


def test_float32_latents_are_stored_exactly(tiny_models, tmp_path):
    x = radiance((64, 70, SMALL_CHANNELS), seed=4)
    lat = read_latents(write(tmp_path / "a.zarr", x, latent_dtype="float32"))
    assert lat.shape == (4, 16, 18) and lat.attrs["latent_dtype"] == "float32"
    np.testing.assert_allclose(lat.values, expected_latents(tiny_models.small, x, "float32"), rtol=1e-5, atol=1e-6)


def test_chunks_never_stored_give_nan_and_zero_fraction(tiny_models, tmp_path):
    x = np.full((64, 128, SMALL_CHANNELS), RADIANCE_FILL, np.float32)
    x[:, :64] = radiance((64, 64, SMALL_CHANNELS))
    lat = read_latents(write(tmp_path / "a.zarr", x, shards=(64, 128, SMALL_CHANNELS)))
    assert np.isnan(lat.values[:, :, 16:]).all() and (lat["valid_fraction"].values[:, 16:] == 0).all()
    assert np.isfinite(lat.values[:, :, :16]).all()


def test_an_array_without_the_vae_codec_is_refused(tmp_path):
    arr = zarr.create_array(store=tmp_path / "plain.zarr", shape=(64, 64, 4), dtype="float32", chunks=(64, 64, 4))
    with pytest.raises(TempocodecError, match="not coded by the tempocodec VAE codec"):
        read_latents(arr)
