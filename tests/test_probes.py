"""Tests for tempocodec.runtime.probes: latent grid and geometry inputs, target transforms, products, metrics (no torch;
probe training is in test_probe_training.py)."""

import numpy as np
import pytest

from tempocodec.errors import TempocodecError
from tempocodec.runtime.probes import (
    GEOMETRY_INPUTS,
    PRODUCTS,
    TargetTransform,
    check_products,
    latent_grid,
    r2_rmse_bias,
)

pytest_plugins = ["probe_fixture"]
ROWS = 64


def test_latent_grid_geometry_is_the_block_mean_of_the_pixels(probe_store):
    import xarray as xr

    grid = latent_grid(probe_store)
    assert grid.shape == (ROWS // 4, ROWS // 4) and grid.latent.shape[0] == 32
    ds = xr.open_zarr(probe_store, group="band_290_490_nm")
    sza = ds["solar_zenith_angle"].values.astype(np.float64)
    expected = np.cos(np.radians(sza[:4, :4])).mean()
    assert grid.geometry["cos_solar_zenith"][0, 0] == pytest.approx(expected, rel=1e-5)
    assert grid.latitude[1, 2] == pytest.approx(ds["latitude"].values[4:8, 8:12].mean(), abs=1e-4)
    features, usable = grid.features(GEOMETRY_INPUTS)
    assert features.shape == (usable.sum(), 35) and np.isfinite(features).all()
    np.testing.assert_array_equal(features[:, :32], grid.latent.values[:, usable].T)


def test_target_transform_round_trip_and_scale():
    values = np.array([-3e14, 0.0, 5e14, 3e16])
    transform = TargetTransform.fit(PRODUCTS["no2"], values)
    np.testing.assert_allclose(transform.inverse(transform.forward(values)), values, rtol=1e-12, atol=1.0)
    assert transform.forward(values).mean() == pytest.approx(0.0, abs=1e-12)
    ozone = TargetTransform.fit(PRODUCTS["ozone"], np.array([300.0, 320.0, np.nan]))
    assert (ozone.mean, ozone.std) == (310.0, 10.0)


def test_check_products():
    assert check_products("all") == tuple(PRODUCTS)
    assert check_products("hcho, no2") == ("no2", "hcho")
    assert check_products(["ozone"]) == ("ozone",)
    with pytest.raises(TempocodecError, match=r"unknown product 'so2' \(known: cloud_fraction, ozone, no2, hcho, all\)"):
        check_products("no2,so2")


def test_r2_rmse_bias():
    truth = np.array([1.0, 2.0, 3.0, 4.0])
    assert r2_rmse_bias(truth, truth) == (1.0, 0.0, 0.0)
    r2, rmse, bias = r2_rmse_bias(truth + 1.0, truth)
    assert (r2, rmse, bias) == (1.0 - 4.0 / 5.0, 1.0, 1.0)
    assert r2_rmse_bias(np.full(4, truth.mean()), truth)[0] == 0.0


