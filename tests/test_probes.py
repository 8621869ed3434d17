"""Tests for tempocodec.runtime.probes and tempocodec.training.probe_training: inputs, transforms, training, export, model card."""

import json
import shutil

import numpy as np
import pytest

from tempocodec.runtime.artifacts import load_model, sha256_bytes, write_card_section
from tempocodec.errors import TempocodecError
from tempocodec.training.probe_training import truth_paths
from tempocodec.runtime.probes import (
    GEOMETRY_INPUTS,
    PRODUCTS,
    TargetTransform,
    check_products,
    latent_grid,
    load_probes,
    r2_rmse_bias,
)

pytest_plugins = ["probe_fixture"]
ROWS = 64


def rows_of(metrics, product):
    return {m["probe"]: m for m in metrics if m["product"] == product}


def test_probes_beat_the_mean_predictor_on_held_out_granules(probed_model):
    cloud = rows_of(probed_model.metrics, "cloud_fraction")
    assert cloud["mean"]["cells"] == cloud["mlp"]["cells"] > 200
    assert cloud["mean"]["r2"] <= 0.0
    assert cloud["linear"]["r2"] > 0.8 and cloud["linear"]["rmse"] < 0.5 * cloud["mean"]["rmse"], cloud
    assert cloud["mlp"]["r2"] > 0.3 and cloud["mlp"]["rmse"] < 0.8 * cloud["mean"]["rmse"], cloud
    ozone = rows_of(probed_model.metrics, "ozone")
    assert ozone["linear"]["rmse"] < 0.5 * ozone["mean"]["rmse"], ozone
    assert {m["product"] for m in probed_model.metrics} == set(PRODUCTS)
    assert all(np.isfinite(m["r2_fit_scale"]) for m in probed_model.metrics)


def test_probe_files_are_recorded_without_changing_the_identity(probed_model):
    art = load_model(probed_model.path)
    assert art.sha256 == probed_model.identity
    names = {f"probes/{p}_{k}.onnx" for p in PRODUCTS for k in ("linear", "mlp")} | {"probes/probes.json"}
    assert names <= set(art.files)
    for name in names | {"model_card.md"}:
        assert art.files[name] == sha256_bytes((probed_model.path / name).read_bytes())
    assert not [p for p in probed_model.path.iterdir() if p.name.startswith(".")]


def test_probes_json_and_loaded_probes(probed_model):
    description = json.loads((probed_model.path / "probes" / "probes.json").read_text())
    assert description["inputs"] == {"latent_channels": 32, "geometry": list(GEOMETRY_INPUTS), "n_features": 35}
    held, train = description["granules"]["heldout"], description["granules"]["train"]
    assert len(held) == 1 and len(train) == 2 and not set(held) & set(train + description["granules"]["validation"])
    assert description["granules"]["heldout_source"] == f"directory {probed_model.granules.heldout}"
    probes = load_probes(load_model(probed_model.path))
    assert probes.geometry == GEOMETRY_INPUTS and probes.transforms["no2"].kind == "asinh"
    x = np.zeros((5, 35), np.float32)
    for product in PRODUCTS:
        for kind in ("linear", "mlp"):
            assert probes.predict(product, kind, x).shape == (5,)
    with pytest.raises(TempocodecError, match="unknown probe kind"):
        probes.predict("no2", "forest", x)


def test_model_card_gets_one_probes_section(probed_model, tmp_path):
    model = shutil.copytree(probed_model.path, tmp_path / "m")
    card = (model / "model_card.md").read_text()
    assert card.count("## Probes") == 1 and "| cloud_fraction | mlp |" in card
    write_card_section(model, "Probes", "replaced body")
    write_card_section(model, "Extra", "new section")
    text = (model / "model_card.md").read_text()
    assert text.count("## Probes") == 1 and "replaced body" in text and "| cloud_fraction |" not in text
    assert text.index("## Probes") < text.index("## Extra") and text.startswith(card.split("## Probes")[0])
    assert load_model(model).files["model_card.md"] == sha256_bytes(text.encode())


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


def test_truth_files_are_found_by_time_scan_and_granule(tmp_path):
    stamp = "20240501T150000Z_S002G03"
    l1b = tmp_path / f"TEMPO_RAD_L1_V03_{stamp}.nc"
    for name in ("RAD_L1_V03", "NO2_L2_V03", "HCHO_L2_V03", "O3TOT_L2_V04", "CLDO4_L2_V03"):
        (tmp_path / f"TEMPO_{name}_{stamp}.nc").touch()
    (tmp_path / "TEMPO_NO2_L2_V03_20240501T150000Z_S002G04.nc").touch()
    found = truth_paths(l1b)
    assert set(found) == set(PRODUCTS) and found["no2"].name == f"TEMPO_NO2_L2_V03_{stamp}.nc"
    assert found["ozone"].name == f"TEMPO_O3TOT_L2_V04_{stamp}.nc"
    next(tmp_path.glob("TEMPO_HCHO_L2_*.nc")).unlink()
    with pytest.raises(TempocodecError, match=r"no L2 truth file TEMPO_HCHO_L2_V\*_.*beside it"):
        truth_paths(l1b)
