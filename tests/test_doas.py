"""The DOAS fit recovers slant columns from spectra built from the same cross sections."""

from __future__ import annotations

import numpy as np
import pytest

from tempocodec.errors import TempocodecError
from tempocodec.science.doas import MIN_VALID_FRACTION, doas_setup, fit_doas, gas_setup
from tempocodec.science.spectroscopy import fine_wavelength, instrument_wavelength, load_table

BAND = "band_290_490_nm"
TRUE = {"no2": 1.2e16, "o3": 300 * 2.687e16 * 2.5, "o4": 4e42, "h2o": 1e22}
RING = 0.03


def spectrum(name: str, wavelength: np.ndarray) -> np.ndarray:
    """A slit-convolved table spectrum at ``wavelength``."""
    return np.interp(wavelength, fine_wavelength(BAND), load_table().spectra[BAND][name])


def synthetic(wavelength: np.ndarray, pixels: int, noise: float, seed: int = 0) -> np.ndarray:
    """Radiance ``(pixels, X, C)`` = F0 · exp(smooth − Σ S σ + r ring) with relative Gaussian noise ``noise``."""
    log = np.log(spectrum("solar", wavelength)) + 0.2 - 0.4 * (wavelength - 435) / 60 + 0.1 * ((wavelength - 435) / 60) ** 2
    log = log - sum(s * spectrum(g, wavelength) for g, s in TRUE.items()) + RING * spectrum("ring", wavelength)
    radiance = np.repeat(np.exp(log)[None], pixels, axis=0) * 1e-3
    rng = np.random.default_rng(seed)
    return radiance * (1 + noise * rng.standard_normal(radiance.shape))


def test_noise_free_spectra_give_every_coefficient() -> None:
    wavelength = instrument_wavelength(BAND, 3)
    setup = doas_setup(wavelength, BAND)
    result = fit_doas(synthetic(wavelength, 2, 0.0), setup)
    assert result.scd.shape == (2, 3)
    np.testing.assert_allclose(result.scd, TRUE["no2"], rtol=1e-6)
    coefficients = dict(zip(setup.names, np.moveaxis(result.coefficients, -1, 0), strict=True))
    for gas in ("o3", "o4", "h2o"):
        np.testing.assert_allclose(coefficients[gas], TRUE[gas], rtol=1e-4)
    np.testing.assert_allclose(coefficients["ring"], RING, rtol=1e-5)
    assert np.all(result.rms_residual < 1e-9)


def test_noisy_spectra_unbiased_and_uncertainty_matches_scatter() -> None:
    wavelength = instrument_wavelength(BAND, 4)
    result = fit_doas(synthetic(wavelength, 500, 1 / 700, seed=1), doas_setup(wavelength, BAND))
    scd, error = result.scd.ravel(), result.scd_error.ravel()
    assert abs(scd.mean() - TRUE["no2"]) < 4 * scd.std() / np.sqrt(scd.size)
    assert scd.std() == pytest.approx(np.median(error), rel=0.1)
    assert np.median(result.rms_residual) == pytest.approx(1 / 700, rel=0.05)


def test_invalid_channels_are_left_out_and_sparse_pixels_not_fitted() -> None:
    wavelength = instrument_wavelength(BAND, 2)
    setup = doas_setup(wavelength, BAND)
    radiance = synthetic(wavelength, 3, 0.0)
    window = setup.channels
    radiance[0, 0, window[[3, 50, 200]]] = np.float32(-9.96921e36)
    radiance[0, 1, window[10]] = np.nan
    too_many = int((1 - MIN_VALID_FRACTION) * window.size) + 2
    radiance[1, 0, window[:too_many]] = 0.0
    result = fit_doas(radiance, setup)
    np.testing.assert_allclose(result.scd[0], TRUE["no2"], rtol=1e-6)
    assert np.isnan(result.scd[1, 0]) and np.isnan(result.scd_error[1, 0])
    np.testing.assert_allclose(result.scd[2], TRUE["no2"], rtol=1e-6)


def test_units_of_radiance_do_not_matter_and_one_grid_serves_all_xtracks() -> None:
    wavelength = instrument_wavelength(BAND, 1)
    radiance = synthetic(wavelength, 4, 1 / 500, seed=2)
    setup = doas_setup(wavelength[0], BAND)
    assert setup.n_xtrack == 1
    a, b = fit_doas(radiance, setup), fit_doas(radiance * 1e9, setup)
    np.testing.assert_allclose(a.scd, b.scd, rtol=1e-6)


def test_bad_inputs_raise_one_line_errors() -> None:
    wavelength = instrument_wavelength(BAND, 2)
    with pytest.raises(TempocodecError, match="too few"):
        doas_setup(wavelength, BAND, window_nm=(600.0, 650.0))
    with pytest.raises(TempocodecError, match="target"):
        doas_setup(wavelength, BAND, absorbers=("o3",))
    setup = doas_setup(wavelength, BAND)
    with pytest.raises(TempocodecError, match="cross-track"):
        fit_doas(np.ones((2, 5, 1028), np.float32), setup)
    with pytest.raises(TempocodecError, match="all channels"):
        fit_doas(np.ones((2, 2, 100), np.float32), setup)


def test_hcho_fit_recovers_its_slant_column() -> None:
    wavelength = instrument_wavelength(BAND, 2)
    setup = gas_setup(wavelength, "hcho")
    truth = {"hcho": 2e16, "o3": 3e19, "o3_dt": 1e20, "no2": 1e16, "o4": 4e42}
    log = np.log(spectrum("solar", wavelength)) + 0.1 - 0.3 * (wavelength - 342) / 30
    log = log - sum(s * spectrum(g, wavelength) for g, s in truth.items()) + RING * spectrum("ring", wavelength)
    result = fit_doas(np.exp(log)[None], setup)
    assert setup.window_nm == (328.5, 356.5) and setup.target == "hcho"
    np.testing.assert_allclose(result.scd, truth["hcho"], rtol=1e-5)
    with pytest.raises(TempocodecError, match="no fit for 'so2'"):
        gas_setup(wavelength, "so2")


def test_shared_and_own_solves_agree_with_a_direct_least_squares() -> None:
    """Pixels with the column's usual channels share one pseudo-inverse, pixels with other gaps get their own: both
    equal an explicit least-squares fit of the valid channels."""
    wavelength = instrument_wavelength(BAND, 2)
    setup = doas_setup(wavelength, BAND)
    radiance = synthetic(wavelength, 3, 1e-3, seed=4)
    radiance[:, 1, setup.channels[5]] = -1e30  # a bad detector pixel: every pixel of column 1 lacks it
    radiance[2, 0, setup.channels[[7, 9]]] = np.nan  # one pixel with gaps of its own
    result = fit_doas(radiance, setup)
    for p in range(3):
        for x in range(2):
            window = radiance[p, x, setup.channels]
            ok = np.isfinite(window) & (np.abs(window) < 1e30)
            y = np.log(window[ok]) - setup.log_solar[x, ok]
            coef = np.linalg.lstsq(setup.design[x][ok], y, rcond=None)[0] / setup.scale
            np.testing.assert_allclose(result.coefficients[p, x], coef, rtol=1e-7, atol=1e-30)
