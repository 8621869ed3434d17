"""The committed spectroscopy table and the spectral grid helpers: magnitudes against published values."""

from __future__ import annotations

import numpy as np
import pytest

from tempocodec.errors import TempocodecError
from tempocodec.science.spectroscopy import (
    BAND_GRIDS,
    CROSS_SECTIONS,
    FINE_STEP_NM,
    N_CHANNELS,
    O3_REFERENCE_TEMPERATURE_K,
    SLIT_FWHM_NM,
    band_spectra,
    fine_wavelength,
    instrument_wavelength,
    load_table,
    nominal_wavelength,
    rayleigh_optical_depth,
    slit_convolve,
    smile_shift,
)

UV, VIS = tuple(BAND_GRIDS)


@pytest.fixture(scope="module")
def table():
    return load_table()


def at(table, band: str, name: str, nm: float, half_width: float = 0.0) -> float:
    """A table spectrum at ``nm`` (median over ±half_width nm when given)."""
    wl = fine_wavelength(band)
    if half_width:
        return float(np.median(table.spectra[band][name][np.abs(wl - nm) <= half_width]))
    return float(np.interp(nm, wl, table.spectra[band][name]))


def test_provenance_names_every_source(table):
    text = table.provenance
    for needle in ("SAO2010", "Malicet", "Brion", "JPL-2011", "JPL-2006", "sha256=", "ANALYTIC", "Thalman", "0.6 nm"):
        assert needle in text
    assert table.slit_fwhm_nm == SLIT_FWHM_NM


@pytest.mark.parametrize("band, nm, expected", [
    (UV, 300.0, 7.5e13), (UV, 330.0, 2.0e14), (UV, 440.0, 4.2e14), (UV, 490.0, 5.2e14),
    (VIS, 540.0, 4.9e14), (VIS, 740.0, 4.9e14),
])
def test_solar_irradiance_magnitudes(table, band, nm, expected):
    value = at(table, band, "solar", nm, half_width=1.0)
    assert expected / 1.25 < value < expected * 1.25


@pytest.mark.parametrize("nm, expected", [(300.0, 3.9e-19), (310.0, 1.0e-19), (320.0, 3.3e-20), (330.0, 4.7e-21)])
def test_ozone_huggins_magnitudes_and_temperature_dependence(table, nm, expected):
    cold = at(table, UV, "o3", nm)
    warm = cold + (295.0 - O3_REFERENCE_TEMPERATURE_K) * at(table, UV, "o3_dt", nm)
    assert expected / 1.5 < cold < expected * 1.5
    assert expected / 1.3 < warm < expected * 1.3  # the recipe quotes room temperature; the fit is linear over 218-243 K
    assert warm > cold  # Huggins band absorption grows with temperature


def test_ozone_chappuis_and_no_temperature_dependence_in_the_visible(table):
    assert 3e-21 < at(table, VIS, "o3", 600.0) < 7e-21
    assert np.all(table.spectra[VIS]["o3_dt"] == 0)


def test_no2_band_structure_405_465(table):
    wl = fine_wavelength(UV)
    window = (wl >= 405) & (wl <= 465)
    sigma = table.spectra[UV]["no2"][window]
    assert 2e-19 < sigma.min() and sigma.max() < 8e-19
    assert 3e-19 < sigma.mean() < 6e-19
    x = (wl[window] - 435.0) / 30.0
    differential = sigma - np.polyval(np.polyfit(x, sigma, 3), x)
    spread = np.percentile(differential, 97.5) - np.percentile(differential, 2.5)
    assert 1e-19 < spread < 2.5e-19
    # vibronic structure on the ~1-2 nm scale: many sign changes of the differential cross section
    assert np.count_nonzero(np.diff(np.sign(differential))) > 30


def test_o4_h2o_o2_band_models(table):
    assert at(table, UV, "o4", 477.3) == pytest.approx(6.5e-46, rel=0.1)
    assert at(table, VIS, "o4", 577.2) > at(table, VIS, "o4", 600.0) * 5
    assert at(table, UV, "o4", 420.0) < 1e-48
    h2o = table.spectra[VIS]["h2o"]
    wl = fine_wavelength(VIS)
    assert 700 < wl[np.argmax(h2o)] < 740
    assert h2o.max() == pytest.approx(1.5e-24, rel=0.05)
    o2 = table.spectra[VIS]["o2"]
    assert 686 < wl[np.argmax(o2)] < 690
    assert np.all(o2[(wl < 680) | (wl > 700)] < 1e-30)
    assert np.all(table.spectra[VIS]["hcho"] == 0)


def test_hcho_magnitudes(table):
    assert 4e-20 < at(table, UV, "hcho", 339.0, half_width=1.0) < 8e-20
    assert at(table, UV, "hcho", 400.0) < 1e-21


def test_ring_fills_in_fraunhofer_lines(table):
    wl = fine_wavelength(UV)
    ring = table.spectra[UV]["ring"]
    calcium = (wl > 392) & (wl < 398)
    assert ring[calcium].max() > 0.5
    assert abs(np.median(ring)) < 0.1


def test_slit_convolution_of_a_line_has_the_slit_width_and_unit_area():
    step = 0.01
    line = np.zeros(2001)
    line[1000] = 1.0 / step
    out = slit_convolve(line, step)
    assert out.sum() * step == pytest.approx(1.0, rel=1e-6)
    above_half = np.count_nonzero(out >= out.max() / 2) * step
    assert above_half == pytest.approx(SLIT_FWHM_NM, abs=2 * step)


def test_rayleigh_optical_depth():
    assert float(rayleigh_optical_depth(np.array(550.0))) == pytest.approx(0.097, rel=0.02)
    assert float(rayleigh_optical_depth(np.array(300.0))) == pytest.approx(1.22, rel=0.05)
    tau = rayleigh_optical_depth(np.array([400.0, 800.0]))
    assert 15 < tau[0] / tau[1] < 18  # ~lambda^-4.05


def test_grids_and_smile():
    uv = nominal_wavelength(UV)
    assert uv.shape == (N_CHANNELS,) and 292 < uv[0] < 293 and 494 < uv[-1] < 496
    assert 538 < nominal_wavelength(VIS)[0] and nominal_wavelength(VIS)[-1] < 742
    shift = smile_shift(64)
    assert 0.01 < np.ptp(shift) < 0.06 and np.abs(shift).max() < 0.05
    assert smile_shift(1).shape == (1,)
    grid = instrument_wavelength(UV, 5)
    assert grid.shape == (5, N_CHANNELS)
    np.testing.assert_allclose(grid - uv, np.broadcast_to(smile_shift(5)[:, None], grid.shape))
    fine = fine_wavelength(UV)
    assert np.allclose(np.diff(fine), FINE_STEP_NM) and fine[0] < uv[0] - 1 and fine[-1] > uv[-1] + 1


def test_band_spectra_follow_the_smile(table):
    spectra = band_spectra(UV, 7)
    assert spectra.cross_sections.shape == (len(CROSS_SECTIONS), 7, N_CHANNELS)
    assert spectra.solar.dtype == np.float32 and not spectra.solar.flags.writeable
    for j in (0, 6):
        expected = np.interp(spectra.wavelength[j], fine_wavelength(UV), table.spectra[UV]["no2"])
        np.testing.assert_allclose(spectra.cross_section("no2")[j], expected, rtol=1e-5)
    # the Fraunhofer lines move with the smile: different xtracks see different solar values
    assert not np.allclose(spectra.solar[0], spectra.solar[6], rtol=1e-3)


def test_bad_tables_raise(tmp_path):
    broken = tmp_path / "broken.npz"
    broken.write_bytes(b"not a zip file")
    with pytest.raises(TempocodecError, match="broken.npz"):
        load_table(broken)
    partial = tmp_path / "partial.npz"
    np.savez(partial, provenance=np.array("x"))
    with pytest.raises(TempocodecError, match="lacks"):
        load_table(partial)
    with pytest.raises(TempocodecError, match="unknown band"):
        band_spectra("band_1_2_nm", 3)
