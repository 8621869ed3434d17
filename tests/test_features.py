"""Tests for tempocodec.runtime.features: DOAS slant columns per latent cell, stored beside the latents at compress
time, read back as probe inputs, left out of decompressed L1B files."""

import netCDF4
import numpy as np
import pytest
import xarray as xr
import zarr

from tempocodec.errors import TempocodecError
from tempocodec.granule.l1b import open_l1b
from tempocodec.prepare.tiles import pool_to_latent
from tempocodec.runtime.features import (
    ERROR_FILL,
    ERROR_STEP,
    FEATURES_GROUP,
    SCD_UNIT,
    feature_names,
    fit_stripe,
    input_names,
)
from tempocodec.runtime.probes import GEOMETRY_INPUTS, latent_grid
from tempocodec.runtime.store import decompress_store
from tempocodec.science.doas import gas_setup

pytest_plugins = ["probe_fixture"]
BAND = "band_290_490_nm"


@pytest.fixture(scope="module")
def pixel_fits(probed_model):
    """Per-pixel NO2 and HCHO fits on the held-out granule's original radiance, and the granule path."""
    granule = next(probed_model.granules.heldout.glob("TEMPO_RAD_L1_*.nc"))
    with open_l1b(granule) as g:
        ds = g.band(BAND)
        radiance, wavelength = ds["radiance"].values, ds["nominal_wavelength"].values
    return fit_stripe(radiance, {gas: gas_setup(wavelength, gas) for gas in ("no2", "hcho")}), granule


def test_store_holds_the_cell_means_of_the_pixel_fits(probe_store, pixel_fits):
    fits, _ = pixel_fits
    group = zarr.open_group(probe_store, mode="r")[f"{BAND}/{FEATURES_GROUP}"]  # plain zarr reads them
    assert sorted(name for name, _ in group.arrays()) == sorted(feature_names())
    for gas in ("no2", "hcho"):
        scd, error = group[f"{gas}_scd"], group[f"{gas}_scd_error"]
        assert scd.shape == error.shape == (16, 16) and scd.dtype == np.float16 and error.dtype == np.uint8
        expected = pool_to_latent(fits[gas][0], 4) / SCD_UNIT
        np.testing.assert_allclose(scd[...].astype(np.float64), expected, rtol=2e-3, atol=2e-3)
        n = pool_to_latent(np.isfinite(fits[gas][1]) * 1.0, 4) * 16  # all 16 pixels fitted in these cells
        sigma = np.sqrt(pool_to_latent(fits[gas][1] ** 2, 4) * 16) / n
        counts = error[...]
        assert (counts != ERROR_FILL).all() and error.attrs["scale_factor"] == ERROR_STEP[gas]
        np.testing.assert_allclose(counts * ERROR_STEP[gas], sigma, atol=ERROR_STEP[gas] / 2 + 1)
    decoded = xr.open_zarr(probe_store, group=f"{BAND}/{FEATURES_GROUP}")  # CF decoding gives physical units
    assert float(decoded["no2_scd_error"][0, 0]) == pytest.approx(group["no2_scd_error"][0, 0] * ERROR_STEP["no2"])


def test_features_cost_under_a_tenth_of_the_latent_bytes(probe_store):
    band = zarr.open_group(probe_store, mode="r")[BAND]
    features = sum(a.nbytes_stored() for _, a in band[FEATURES_GROUP].arrays())
    assert features <= 0.10 * band["radiance"].nbytes_stored()


def test_probe_inputs_read_the_stored_columns(probe_store):
    grid = latent_grid(probe_store)
    assert tuple(grid.columns) == input_names()  # the stored ones, then the derived ones
    features, usable = grid.features(GEOMETRY_INPUTS, feature_names())
    assert features.shape == (usable.sum(), 32 + 3 + 4)
    group = zarr.open_group(probe_store, mode="r")[f"{BAND}/{FEATURES_GROUP}"]
    np.testing.assert_array_equal(features[:, 35], group["no2_scd"][...][usable].astype(np.float32))
    np.testing.assert_allclose(features[:, 38], group["hcho_scd_error"][...][usable] * ERROR_STEP["hcho"] / SCD_UNIT,
                               rtol=1e-6)
    excess = grid.columns["no2_scd"] - grid.columns["no2_scd_excess"]  # background: one column per unit air mass
    air_mass = 1 / grid.geometry["cos_solar_zenith"] + 1 / grid.geometry["cos_viewing_zenith"]
    np.testing.assert_allclose(excess / air_mass, np.nanpercentile(grid.columns["no2_scd"] / air_mass, 10), rtol=1e-4)
    assert grid.columns["hcho_scd_3x3"][5, 5] == pytest.approx(grid.columns["hcho_scd"][4:7, 4:7].mean(), rel=1e-5)
    no_columns = grid.__class__(grid.latent, grid.geometry, grid.latitude, grid.longitude)
    with pytest.raises(TempocodecError, match="lacks .*compress the granule again"):
        no_columns.features(GEOMETRY_INPUTS, feature_names())


def test_decompressed_granule_has_no_feature_variables(probe_store, pixel_fits, tmp_path):
    _, granule = pixel_fits
    back = decompress_store(probe_store, tmp_path / "back.nc", progress=False)
    with netCDF4.Dataset(back) as out, netCDF4.Dataset(granule) as src:
        assert set(out[BAND].variables) == set(src[BAND].variables)
        assert set(out[BAND].groups) == set(src[BAND].groups)
