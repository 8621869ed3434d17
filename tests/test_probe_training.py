"""Tests for tempocodec.training.probe_training (torch): probes trained on simulated granules, exported into the model
directory with their held-out table and card section; the L2 truth files a granule's probes train on."""

import pytest

# Skip this module, with this reason, where torch is not installed (before the imports below need it).
pytest.importorskip("torch", reason="needs torch: pip install -e '.[train]'")

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from torch_models import SPECTRAL_NAME, train_spectral

from tempocodec.errors import TempocodecError
from tempocodec.runtime.artifacts import load_model, sha256_bytes, write_card_section
from tempocodec.runtime.features import input_names
from tempocodec.runtime.probes import GEOMETRY_INPUTS, PRODUCTS, load_probes
from tempocodec.runtime.query import query_store
from tempocodec.runtime.store import compress_granule
from tempocodec.training.probe_training import ProbeConfig, fit_mlp, truth_paths

pytestmark = pytest.mark.torch
pytest_plugins = ["probe_fixture"]  # the session fixture probe_granules


@dataclass(frozen=True)
class Trained:
    """A model directory with probes trained here, its held-out table, the held-out granules and the model identity."""

    path: Path
    metrics: list[dict]
    heldout: Path
    identity: str


@pytest.fixture(scope="module")
def trained(probe_granules, tmp_path_factory) -> Trained:
    """The spectral-encoder model with probes trained here on ``probe_granules.train``, measured on ``.heldout``."""
    model, metrics = train_spectral(tmp_path_factory.mktemp("trained") / SPECTRAL_NAME, probe_granules.train,
                                    probe_granules.heldout)
    return Trained(model, metrics, probe_granules.heldout, load_model(model).sha256)


def rows_of(metrics, product):
    return {m["probe"]: m for m in metrics if m["product"] == product}


def test_probes_beat_the_mean_predictor_on_held_out_granules(trained):
    cloud = rows_of(trained.metrics, "cloud_fraction")
    assert cloud["mean"]["cells"] == cloud["mlp"]["cells"] > 200
    assert cloud["mean"]["r2"] <= 0.0
    assert cloud["linear"]["r2"] > 0.8 and cloud["linear"]["rmse"] < 0.5 * cloud["mean"]["rmse"], cloud
    assert cloud["mlp"]["r2"] > 0.3 and cloud["mlp"]["rmse"] < 0.8 * cloud["mean"]["rmse"], cloud
    ozone = rows_of(trained.metrics, "ozone")
    assert ozone["linear"]["rmse"] < 0.5 * ozone["mean"]["rmse"], ozone
    assert {m["product"] for m in trained.metrics} == set(PRODUCTS)
    assert all(np.isfinite(m["r2_fit_scale"]) for m in trained.metrics)


def test_probe_files_are_recorded_without_changing_the_identity(trained):
    art = load_model(trained.path)
    assert art.sha256 == trained.identity
    names = {f"probes/{p}_{k}.onnx" for p in PRODUCTS for k in ("linear", "mlp")} | {"probes/probes.json"}
    assert names <= set(art.files)
    for name in names | {"model_card.md"}:
        assert art.files[name] == sha256_bytes((trained.path / name).read_bytes())
    assert not [p for p in trained.path.iterdir() if p.name.startswith(".")]


def test_probes_json_and_loaded_probes(trained):
    description = json.loads((trained.path / "probes" / "probes.json").read_text())
    assert description["inputs"] == {"latent_channels": 32, "geometry": list(GEOMETRY_INPUTS),
                                     "columns": list(input_names()), "n_features": 35 + len(input_names())}
    reads = {p: entry["reads"] for p, entry in description["products"].items()}
    assert reads["no2"] == reads["hcho"] == list(GEOMETRY_INPUTS) + list(input_names())  # no latents for the gases
    assert reads["cloud_fraction"] == [f"latent_{i}" for i in range(32)] + list(GEOMETRY_INPUTS)
    held, train = description["granules"]["heldout"], description["granules"]["train"]
    assert len(held) == 1 and len(train) == 2 and not set(held) & set(train + description["granules"]["validation"])
    assert description["granules"]["heldout_source"] == f"directory {trained.heldout}"
    probes = load_probes(load_model(trained.path))
    assert probes.geometry == GEOMETRY_INPUTS and probes.transforms["no2"].kind == "asinh"
    x = np.zeros((5, 35 + len(input_names())), np.float32)
    for product in PRODUCTS:
        for kind in ("linear", "mlp"):
            assert probes.predict(product, kind, x).shape == (5,)
    assert probes.columns == input_names()
    with pytest.raises(TempocodecError, match="unknown probe kind"):
        probes.predict("no2", "forest", x)


def test_query_gives_gas_uncertainties_and_heldout_scores(trained, tmp_path):
    granule = next(trained.heldout.glob("TEMPO_RAD_L1_*.nc"))
    store = tmp_path / "g.zarr"
    compress_granule(granule, store, model=trained.path, progress=False)
    (trained.path / "decoder.onnx").rename(tmp_path / "decoder.onnx")  # query never runs the decoder
    try:
        ds = query_store(store, model=trained.path)
    finally:
        (tmp_path / "decoder.onnx").rename(trained.path / "decoder.onnx")
    mlp = rows_of(trained.metrics, "no2")["mlp"]
    assert ds["no2"].attrs["heldout_r2"] == mlp["r2"] and ds["no2"].attrs["heldout_rmse"] == mlp["rmse"]
    for gas in ("no2", "hcho"):
        sigma = ds[f"{gas}_uncertainty"].values
        assert np.isfinite(sigma).sum() == np.isfinite(ds[gas].values).sum() > 0 and np.nanmin(sigma) >= 0
    assert "cloud_fraction_uncertainty" not in ds


def test_store_without_features_answers_cloud_and_ozone_only(trained, tmp_path, monkeypatch):
    import tempocodec.runtime.store as store_module

    monkeypatch.setattr(store_module, "write_features", lambda *args: None)  # a store as written before features
    store = tmp_path / "old.zarr"
    compress_granule(next(trained.heldout.glob("TEMPO_RAD_L1_*.nc")), store, model=trained.path, progress=False)
    ds = query_store(store, products="cloud_fraction,ozone", model=trained.path)
    assert np.isfinite(ds["cloud_fraction"].values).any() and np.isfinite(ds["ozone"].values).any()
    with pytest.raises(TempocodecError, match="compress the granule again"):
        query_store(store, products="no2", model=trained.path)


def test_model_card_gets_one_probes_section(trained, tmp_path):
    model = shutil.copytree(trained.path, tmp_path / "m")
    card = (model / "model_card.md").read_text()
    assert card.count("## Probes") == 1 and "| cloud_fraction | mlp |" in card
    write_card_section(model, "Probes", "replaced body")
    write_card_section(model, "Extra", "new section")
    text = (model / "model_card.md").read_text()
    assert text.count("## Probes") == 1 and "replaced body" in text and "| cloud_fraction |" not in text
    assert text.index("## Probes") < text.index("## Extra") and text.startswith(card.split("## Probes")[0])
    assert load_model(model).files["model_card.md"] == sha256_bytes(text.encode())


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


def test_mlp_probe_whose_validation_loss_is_never_finite_is_a_one_line_error():
    x = np.random.default_rng(0).normal(size=(32, 3)).astype(np.float32)
    y = np.full(32, np.nan, np.float32)
    with pytest.raises(TempocodecError, match=r"^MLP probe NO2: the validation loss never became finite$"):
        fit_mlp(x, y, x, y, ProbeConfig(hidden=4, epochs=2), "MLP probe NO2", progress=False)
