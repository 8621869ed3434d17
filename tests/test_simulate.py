"""The granule simulator: determinism, physics (ozone, NO2, clouds, magnitudes), noise, fills, files and CLI."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from click.testing import CliRunner

from tempocodec.cli import main
from tempocodec.errors import TempocodecError
from tempocodec.granule.l1b import BANDS, RADIANCE_FILL, open_l1b
from tempocodec.granule.l2 import FLOAT_FILL, l2_truth, read_l2
from tempocodec.science.spectroscopy import band_spectra, nominal_wavelength
from tempocodec.simulator import SceneConfig, simulate_granule, write_simulated
from tempocodec.simulator.atmosphere import reference_reflectance, slant_columns
from tempocodec.simulator.physics import SURFACES
from tempocodec.simulator.radiance import FLAG_BAD, FLAG_MISSING, FLAG_TRANSIENT, band_radiance
from tempocodec.simulator.scene import correlated_field, make_scene

UV, VIS = BANDS
ROWS, COLS, SEED = 16, 24, 9  # partly cloudy, NO2 plumes, one missing mirror step


@pytest.fixture(scope="module")
def granule():
    return simulate_granule(ROWS, COLS, SEED)


@pytest.fixture(scope="module")
def scene():
    return make_scene(SceneConfig(ROWS, COLS, SEED))


def channel(band: str, nm: float) -> int:
    return int(np.argmin(np.abs(nominal_wavelength(band) - nm)))


def valid(values: np.ndarray) -> np.ndarray:
    return np.abs(values) < 1e30


def doas_no2(radiance: np.ndarray, cols: int) -> np.ndarray:
    """Slant columns from a DOAS fit of ln(L/F0) over 405-465 nm: NO2, O2-O2, H2O, O3, Ring, cubic polynomial."""
    spectra = band_spectra(UV, cols)
    wl = nominal_wavelength(UV)
    window = (wl >= 405.0) & (wl <= 465.0)
    x = (wl[window] - 435.0) / 30.0
    out = np.full(radiance.shape[:2], np.nan)
    for j in range(cols):
        basis = [spectra.cross_section(n)[j][window] for n in ("no2", "o4", "h2o", "o3")] + [spectra.ring[j][window]]
        scale = [np.abs(b).max() for b in basis]
        design = np.column_stack([b / s for b, s in zip(basis, scale, strict=True)] + [x**k for k in range(4)])
        for i in range(radiance.shape[0]):
            y = radiance[i, j, window]
            if np.all(valid(y)):
                coef, *_ = np.linalg.lstsq(design, np.log(y / spectra.solar[j][window]), rcond=None)
                out[i, j] = -coef[0] / scale[0]
    return out


def test_deterministic_for_a_seed(granule):
    l1b, l2 = granule
    again, again_l2 = simulate_granule(ROWS, COLS, SEED)
    for band in BANDS:
        assert l1b.bands[band]["radiance"].values.tobytes() == again.bands[band]["radiance"].values.tobytes()
    assert l2["NO2"].groups["product"]["vertical_column_troposphere"].equals(
        again_l2["NO2"].groups["product"]["vertical_column_troposphere"])
    other, _ = simulate_granule(ROWS, COLS, SEED + 1)
    assert not np.array_equal(other.bands[UV]["radiance"].values, l1b.bands[UV]["radiance"].values)


def test_band_choice_does_not_change_the_scene(granule):
    l1b, l2 = granule
    uv_only, uv_l2 = simulate_granule(ROWS, COLS, SEED, bands="uv")
    assert list(uv_only.bands) == [UV]
    np.testing.assert_array_equal(uv_only.bands[UV]["radiance"].values, l1b.bands[UV]["radiance"].values)
    np.testing.assert_array_equal(uv_l2["HCHO"].groups["product"]["vertical_column"].values,
                                  l2["HCHO"].groups["product"]["vertical_column"].values)


def test_layout_of_the_l1b_granule(granule):
    l1b, _ = granule
    band = l1b.bands[UV]
    assert band["radiance"].dims == ("mirror_step", "xtrack", "spectral_channel")
    assert band["radiance"].shape == (ROWS, COLS, 1028) and band["radiance"].dtype == np.float32
    assert band["radiance_error"].dtype == np.float32 and band["pixel_quality_flag"].dtype == np.int16
    assert band["terrain_height"].dtype == np.int16 and band["ground_pixel_quality_flag"].dtype == np.int32
    assert band["nominal_wavelength"].dims == ("xtrack", "spectral_channel")
    smile = band["nominal_wavelength"].values - nominal_wavelength(UV)[None, :]
    assert 0.005 < np.ptp(smile[:, 0]) < 0.06  # per-xtrack spectral smile
    assert band["latitude_bounds"].shape == (ROWS, COLS, 4)
    root = l1b.root
    np.testing.assert_array_equal(root["mirror_step"].values, 2 + np.arange(ROWS))
    np.testing.assert_allclose(np.diff(root["time"].values), 3.0)
    assert root["time"].dtype == np.float64 and 1.2e9 < root["time"].values[0] < 1.5e9  # 2018..2027 in TEMPO seconds
    assert l1b.attrs["local_granule_id"].startswith("TEMPO_RAD_L1_V03_")


def test_geometry_is_a_plausible_geostationary_scan(scene):
    geo = scene.geometry
    assert 20 < geo.latitude.min() and geo.latitude.max() < 55
    assert -130 < geo.longitude.min() and geo.longitude.max() < -65
    assert np.all(np.diff(geo.longitude, axis=0) < 0)  # mirror steps scan east to west
    assert np.all(np.diff(geo.latitude, axis=1) > 0)  # xtrack runs south to north
    assert 1.5 < geo.spacing_km[1] < 3.0 and 3.5 < geo.spacing_km[0] < 6.5
    assert np.all(geo.solar_zenith < 85) and np.all((geo.viewing_zenith > 20) & (geo.viewing_zenith < 75))
    lat_b = geo.latitude_bounds
    assert np.all(lat_b[..., 2] < geo.latitude) and np.all(lat_b[..., 0] > geo.latitude)  # SW below, NE above
    granule_seven, _ = simulate_granule(2, 2, 0, granule_index=7, bands="uv")
    assert granule_seven.root["mirror_step"].values[0] == 788


def test_ozone_absorption_deepens_with_ozone(scene):
    columns = slant_columns(scene)
    base = band_radiance(scene, UV, columns).radiance
    more = band_radiance(dataclasses.replace(scene, o3=scene.o3 + 100.0), UV, columns).radiance
    ok = valid(base[..., 0])

    def ratio(rad: np.ndarray) -> np.ndarray:
        return rad[..., channel(UV, 311.0)] / rad[..., channel(UV, 319.0)]

    assert np.all(ratio(more)[ok] < 0.9 * ratio(base)[ok])
    assert np.all(more[..., channel(UV, 440.0)][ok] > 0.9 * base[..., channel(UV, 440.0)][ok])


def test_doas_recovers_the_no2_slant_column_within_its_uncertainty(granule):
    l1b, l2 = granule
    support = l2["NO2"].groups["support_data"]
    truth = support["fitted_slant_column"].values
    sigma = support["fitted_slant_column_uncertainty"].values
    estimate = doas_no2(l1b.bands[UV]["radiance"].values, COLS)
    ok = np.isfinite(estimate) & (np.abs(truth) < 1e29)
    normalized = (estimate[ok] - truth[ok]) / sigma[ok]
    assert ok.sum() > 0.9 * ROWS * COLS
    assert abs(normalized.mean()) < 0.4
    assert 0.7 < normalized.std() < 1.4


def test_no2_differential_structure_scales_with_the_column(scene):
    columns = slant_columns(scene)
    boosted_scene = dataclasses.replace(scene, no2_troposphere=scene.no2_troposphere * 4.0)
    boosted_columns = slant_columns(boosted_scene)
    base = doas_no2(band_radiance(scene, UV, columns).radiance, COLS)
    boosted = doas_no2(band_radiance(boosted_scene, UV, boosted_columns).radiance, COLS)
    expected = boosted_columns.scd["no2"] - columns.scd["no2"]
    ok = np.isfinite(base) & np.isfinite(boosted)
    assert np.allclose(boosted_columns.amf["no2_troposphere"], columns.amf["no2_troposphere"])
    assert np.median((boosted - base)[ok] / expected[ok]) == pytest.approx(1.0, abs=0.1)
    # the added differential structure of one pixel is sigma_NO2 times the added slant column (same noise draw)
    i, j = np.unravel_index(np.argmax(np.where(ok, expected, 0)), ok.shape)
    wl = nominal_wavelength(UV)
    window = (wl >= 405.0) & (wl <= 465.0)
    x = (wl[window] - 435.0) / 30.0
    spectra = band_spectra(UV, COLS)
    added = (np.log(band_radiance(boosted_scene, UV, boosted_columns).radiance[i, j, window])
             - np.log(band_radiance(scene, UV, columns).radiance[i, j, window]))

    def highpass(y: np.ndarray) -> np.ndarray:
        return y - np.polyval(np.polyfit(x, y, 3), x)

    sigma = highpass(spectra.cross_section("no2")[j][window])
    assert np.corrcoef(highpass(added), sigma)[0, 1] < -0.99
    assert -np.polyfit(sigma, highpass(added), 1)[0] == pytest.approx(expected[i, j], rel=0.05)


def test_clouds_are_brighter_and_shield_the_boundary_layer():
    cloudy_scene = make_scene(SceneConfig(24, 24, 1, cloud_cover=0.5))  # a deck edge crosses this granule
    radiance = band_radiance(cloudy_scene, UV).radiance[..., channel(UV, 440.0)]
    f = cloudy_scene.cloud_fraction
    ok = valid(radiance)
    assert (ok & (f > 0.8)).sum() > 10 and (ok & (f < 0.1)).sum() > 10
    assert np.median(radiance[ok & (f > 0.8)]) > 1.5 * np.median(radiance[ok & (f < 0.1)])
    amf = slant_columns(cloudy_scene).amf["no2_troposphere"]
    assert np.median(amf[f > 0.8]) < 0.5 * np.median(amf[f < 0.1])


def test_boundary_layer_amf_falls_with_clouds_and_rises_with_albedo(scene):
    clear = dataclasses.replace(scene, cloud_fraction=np.zeros(scene.shape))
    half = dataclasses.replace(scene, cloud_fraction=np.full(scene.shape, 0.5))
    bright = dataclasses.replace(clear, albedo_texture=scene.albedo_texture * 3.0)
    amf = {name: slant_columns(s).amf["hcho"] for name, s in (("clear", clear), ("half", half), ("bright", bright))}
    assert np.all(amf["half"] < amf["clear"]) and np.all(amf["bright"] > amf["clear"])
    ref = reference_reflectance(half, 440.0)
    assert np.all((ref.cloud_radiance_fraction > 0.5) & (ref.cloud_radiance_fraction < 1.0))


@pytest.mark.parametrize("band, nm, expected, factor", [
    (UV, 300.0, 8e10, 3.0), (UV, 330.0, 1.5e13, 3.0), (UV, 440.0, 1.6e13, 3.0), (VIS, 740.0, 8e12, 6.0),
])
def test_clear_sky_magnitudes(band, nm, expected, factor):
    values = []
    for seed in (0, 1, 3):
        clear_scene = make_scene(SceneConfig(12, 12, seed, cloud_cover=0.0))
        radiance = band_radiance(clear_scene, band).radiance[..., channel(band, nm)]
        clear = valid(radiance) & (clear_scene.cloud_fraction < 0.05)
        values.append(radiance[clear])
    median = np.median(np.concatenate(values))
    assert expected / factor < median < expected * factor


def test_noise_matches_radiance_error(scene):
    columns = slant_columns(scene)
    first = band_radiance(scene, UV, columns)
    other_seeds = {b: tuple(np.random.SeedSequence(12345 + k).spawn(2)) for k, b in enumerate(BANDS)}
    second = band_radiance(dataclasses.replace(scene, band_seeds=other_seeds), UV, columns)
    ok = (first.pixel_quality_flag == 0) & (second.pixel_quality_flag == 0)
    z = (first.radiance - second.radiance)[ok] / (np.sqrt(2.0) * first.radiance_error[ok])
    assert z.size > 100_000
    assert abs(z.mean()) < 0.01 and z.std() == pytest.approx(1.0, abs=0.02)
    np.testing.assert_allclose(first.radiance_error[ok], second.radiance_error[ok], rtol=1e-5)


def test_snr_is_hundreds_at_typical_radiance_and_above_100_near_300nm(granule):
    l1b, _ = granule
    band = l1b.bands[UV]
    rad, err = band["radiance"].values, band["radiance_error"].values
    ok = valid(rad[..., 0])
    snr = {nm: np.median((rad[..., channel(UV, nm)] / err[..., channel(UV, nm)])[ok]) for nm in (300.0, 330.0, 440.0)}
    assert snr[300.0] > 100
    assert 300 < snr[330.0] < 1000 and 300 < snr[440.0] < 1000
    assert snr[300.0] < snr[330.0]


def test_fill_pixels_carry_fill_values_and_flags():
    config = SceneConfig(12, 16, 5, missing_step_probability=1.0, dropout_fraction=0.02,
                         bad_detector_fraction=0.002, transient_fraction=1e-4)
    l1b, l2 = simulate_granule(12, 16, 5, bands="vis", config=config)
    band = l1b.bands[VIS]
    rad, err, flag = band["radiance"].values, band["radiance_error"].values, band["pixel_quality_flag"].values
    missing = (flag & FLAG_MISSING) != 0
    bad = (flag & FLAG_BAD) != 0
    assert missing.all(axis=(1, 2)).sum() == 1  # one whole mirror step
    assert missing.all(axis=2).sum() > 1  # plus dropout pixels
    assert bad.any() and np.all(bad.all(axis=0) == bad.any(axis=0))  # a bad detector pixel is bad in every step
    assert np.all(rad[missing | bad] == RADIANCE_FILL) and np.all(err[missing | bad] == RADIANCE_FILL)
    assert np.all(valid(rad[(flag == 0)]))
    transient = (flag & FLAG_TRANSIENT) != 0
    assert transient.any() and np.all(valid(rad[transient & ~missing & ~bad]))
    row = int(np.flatnonzero(missing.all(axis=(1, 2)))[0])
    product = l2["NO2"].groups["product"]
    assert np.all(product["vertical_column_troposphere"].values[row] == FLOAT_FILL["NO2"])
    assert np.all(product["main_data_quality_flag"].values[row] == 2)
    assert np.all(l2["CLDO4"].groups["product"]["cloud_fraction"].values[row] == np.float32(FLOAT_FILL["CLDO4"]))


def test_spatial_structure_of_the_scene():
    big = make_scene(SceneConfig(96, 96, 21, cloud_cover=0.3))
    assert big.no2_troposphere.max() > 5 * np.median(big.no2_troposphere)  # plumes and cities above background
    assert 2e14 < np.median(big.no2_troposphere) < 3e15
    assert 1.5e15 < big.hcho.min() and big.hcho.max() < 4e16
    assert 250 <= big.o3.min() and big.o3.max() <= 450
    np.testing.assert_allclose(big.surface_weights.sum(axis=-1), 1.0, atol=1e-9)
    f = big.cloud_fraction
    assert ((f > 0.8).mean() > 0.05) and ((f < 0.1).mean() > 0.2)
    edges = np.abs(np.diff(f, axis=1))
    assert edges.max() > 0.4  # sharp deck edges
    assert set(np.unique(np.argmax(big.surface_weights, axis=-1))) <= set(range(len(SURFACES)))


def test_correlated_field_statistics():
    rng = np.random.default_rng(0)
    field = correlated_field(rng, (256, 256), (2.0, 2.0), 10.0)
    assert abs(field.mean()) < 0.3 and field.std() == pytest.approx(1.0, abs=0.2)

    def lag(k: int) -> float:
        return float(np.corrcoef(field[:, :-k].ravel(), field[:, k:].ravel())[0, 1])

    assert lag(1) > 0.95 and lag(25) < 0.3  # correlated over ~10 km, not over 50 km


def test_write_and_read_back(tmp_path):
    paths = write_simulated(tmp_path / "out", 6, 5, 40, scenes=2, bands="all")
    assert len(paths) == 10 and all(p.exists() for p in paths)
    names = [p.name for p in paths]
    assert names[0].startswith("TEMPO_RAD_L1_V03_") and names[5].startswith("TEMPO_RAD_L1_V03_")
    assert {n.split("_")[1] for n in names} == {"RAD", "NO2", "HCHO", "O3TOT", "CLDO4"}
    assert names[5].endswith("_S001G02.nc")
    expected, expected_l2 = simulate_granule(6, 5, 41, scan=1, granule_index=2)
    with open_l1b(paths[5]) as f:
        assert f.band_names == list(BANDS)
        for band in BANDS:
            np.testing.assert_array_equal(f.band(band)["radiance"].values, expected.bands[band]["radiance"].values)
        np.testing.assert_array_equal(f.root["mirror_step"].values, expected.root["mirror_step"].values)
    for path in paths[6:]:
        l2 = read_l2(path)
        truth = l2_truth(l2).values
        reference = l2_truth(expected_l2[l2.product]).values
        np.testing.assert_allclose(truth, reference)
        assert set(l2.groups) >= {"product", "geolocation", "support_data", "qa_statistics"}
        assert "fitted_slant_column" in l2.groups["support_data"] or l2.product == "O3TOT"


def test_bad_arguments_raise():
    with pytest.raises(TempocodecError, match="rows"):
        simulate_granule(0, 4, 1)
    with pytest.raises(TempocodecError, match="seed"):
        SceneConfig(4, 4, -1)
    with pytest.raises(TempocodecError, match="band"):
        simulate_granule(2, 2, 1, bands="ir")
    with pytest.raises(TempocodecError, match="config"):
        simulate_granule(2, 2, 1, config=SceneConfig(3, 2, 1))


def test_cli_simulate(tmp_path):
    runner = CliRunner()
    out = tmp_path / "sim"
    result = runner.invoke(main, ["simulate", str(out), "--rows", "4", "--cols", "3", "--seed", "2", "--band", "vis", "--quiet"])
    assert result.exit_code == 0, result.output
    l1 = sorted(out.glob("TEMPO_RAD_L1_*.nc"))
    assert len(l1) == 1 and len(list(out.glob("TEMPO_*_L2_*.nc"))) == 4
    with open_l1b(l1[0]) as f:
        assert f.band_names == [VIS]
    result = runner.invoke(main, ["simulate", str(out), "--rows", "0", "--cols", "3", "--seed", "2"])
    assert result.exit_code == 2 and "rows must be a positive integer" in result.output
    blocker = tmp_path / "file"
    blocker.write_text("x")
    result = runner.invoke(main, ["simulate", str(blocker / "sub"), "--rows", "2", "--cols", "2", "--seed", "2"])
    assert result.exit_code == 2 and str(blocker / "sub") in result.output
