"""Tests for tempocodec.runtime.query: products from a store's latents, the netCDF output, the CLI, and no decoder."""

import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import xarray as xr
from click.testing import CliRunner
from helpers_cli import NEVER_FOR_SHORT_COMMANDS, assert_one_line_error, loaded, modules_after_cli

from tempocodec.cli import main
from tempocodec.codec import kernel
from tempocodec.errors import TempocodecError
from tempocodec.runtime import artifacts
from tempocodec.runtime.artifacts import load_model
from tempocodec.runtime.probes import PRODUCTS, latent_grid, load_probes
from tempocodec.runtime.query import query_store, write_products
from tempocodec.runtime.store import compress_granule
from tempocodec.simulator import write_simulated

pytest_plugins = ["tiny_model_fixture", "probe_fixture"]


@pytest.fixture(autouse=True)
def no_decoding(monkeypatch):
    """Any decoder run in these tests fails them."""

    def refuse(*args, **kwargs):
        raise AssertionError("the decoder ran")

    monkeypatch.setattr(kernel, "decode_tiles", refuse)


def test_query_returns_products_on_the_latent_grid(probed_model, probe_store):
    ds = query_store(probe_store, model=probed_model.path)
    assert list(ds.data_vars) == list(PRODUCTS)
    assert dict(ds.sizes) == {"latent_row": 16, "latent_col": 16}
    assert [ds[p].attrs["units"] for p in PRODUCTS] == ["1", "DU", "molecules/cm^2", "molecules/cm^2"]
    assert all(ds[p].dtype == np.float32 and ds[p].dims == ("latent_row", "latent_col") for p in PRODUCTS)
    grid = latent_grid(probe_store)
    _, usable = grid.features(load_probes(load_model(probed_model.path)).geometry)
    for p in PRODUCTS:
        assert np.isfinite(ds[p].values[usable]).all() and np.isnan(ds[p].values[~usable]).all()
    np.testing.assert_array_equal(ds["latitude"].values, grid.latitude)
    assert ds["latitude"].attrs["units"] == "degrees_north"
    assert int(ds["pixel_row_stop"][-1]) == 64 and ds.attrs["model_sha256"] == probed_model.identity
    ozone = ds["ozone"].values[usable]
    assert 150 < np.median(ozone) < 600
    cloud = ds["cloud_fraction"]
    assert cloud.attrs["heldout_r2"] == next(m["r2"] for m in probed_model.metrics
                                             if (m["product"], m["probe"]) == ("cloud_fraction", "mlp"))


def test_kinds_and_product_subsets(probed_model, probe_store):
    linear = query_store(probe_store, "no2,cloud_fraction", kind="linear", model=probed_model.path)
    mlp = query_store(probe_store, ["cloud_fraction"], model=probed_model.path)
    assert list(linear.data_vars) == ["cloud_fraction", "no2"] and list(mlp.data_vars) == ["cloud_fraction"]
    assert linear["cloud_fraction"].attrs["probe"] == "linear"
    assert not np.allclose(linear["cloud_fraction"].values, mlp["cloud_fraction"].values, equal_nan=True)
    with pytest.raises(TempocodecError, match="unknown probe kind 'forest'"):
        query_store(probe_store, kind="forest", model=probed_model.path)


def test_netcdf_output_matches_the_python_api(probed_model, probe_store, tmp_path):
    out = tmp_path / "products.nc"
    result = CliRunner().invoke(main, ["query", str(probe_store), "--product", "all", "-o", str(out),
                                       "--model", str(probed_model.path)])
    assert result.exit_code == 0, result.output
    expected = query_store(probe_store, model=probed_model.path)
    with xr.open_dataset(out, group="product") as product, xr.open_dataset(out, group="geolocation") as geo:
        for p in PRODUCTS:
            np.testing.assert_array_equal(product[p].values, expected[p].values)
            assert product[p].attrs["units"] == expected[p].attrs["units"]
        np.testing.assert_array_equal(geo["latitude"].values, expected["latitude"].values)
        np.testing.assert_array_equal(geo["pixel_col_start"].values, expected["pixel_col_start"].values)
    with xr.open_dataset(out) as root:
        assert root.attrs["model"] == expected.attrs["model"] and list(root["latent_row"].values) == list(range(16))
    again = CliRunner().invoke(main, ["query", str(probe_store), "-o", str(out), "--model", str(probed_model.path)])
    assert again.exit_code == 2 and "exists: pass --overwrite" in again.output
    assert [p.name for p in tmp_path.iterdir()] == ["products.nc"]


def test_summary_table_without_output(probed_model, probe_store):
    result = CliRunner().invoke(main, ["query", str(probe_store), "--product", "ozone", "--model", str(probed_model.path)],
                                terminal_width=200)
    assert result.exit_code == 0, result.output
    assert "ozone" in result.output and "DU" in result.output and "no2" not in result.output


def test_query_runs_without_a_decoder(probed_model, probe_store, tmp_path):
    """A fresh process whose only copy of the model has no decoder.onnx still answers (the decoder is never run)."""
    root = tmp_path / "models"
    model = shutil.copytree(probed_model.path, root / probed_model.path.name)
    (model / "decoder.onnx").unlink()
    out = tmp_path / "p.nc"
    env = {**os.environ, "TEMPOCODEC_MODELS": str(root)}
    done = subprocess.run([sys.executable, "-m", "tempocodec", "query", str(probe_store), "-o", str(out)],
                          check=False, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    expected = query_store(probe_store, model=probed_model.path)
    with xr.open_dataset(out, group="product") as product:
        np.testing.assert_array_equal(product["hcho"].values, expected["hcho"].values)


def test_query_creates_sessions_for_its_probes_only(probed_model, probe_store):
    art = load_model(probed_model.path)
    made = []
    real = artifacts.ort.InferenceSession

    def recording(data, **kwargs):
        made.append(data)
        return real(data, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(artifacts, "_sessions", {})  # as in a new process
        patch.setattr(artifacts.ort, "InferenceSession", recording)
        query_store(probe_store, "cloud_fraction,ozone", kind="linear", model=probed_model.path)
    graphs = {(art.path / f"{name}.onnx").read_bytes(): name for name in ("encoder", "decoder")}
    graphs |= {(art.path / name).read_bytes(): name.removesuffix(".onnx") for name in art.files if "probes/" in name}
    assert sorted(graphs[data] for data in made) == ["probes/cloud_fraction_linear", "probes/ozone_linear"]


def test_query_imports_no_plotting_training_or_cluster_library(probed_model, probe_store, tmp_path):
    modules = modules_after_cli(["query", str(probe_store), "--product", "cloud_fraction", "-o", str(tmp_path / "q.nc"),
                                 "--model", str(probed_model.path)])
    assert "onnxruntime" in modules and loaded(modules, NEVER_FOR_SHORT_COMMANDS) == []
    assert (tmp_path / "q.nc").is_file()


def test_an_unknown_provider_is_a_one_line_error(probed_model, probe_store, monkeypatch):
    monkeypatch.setattr(artifacts, "_sessions", {})  # sessions made by earlier tests would answer without a provider
    monkeypatch.setenv(artifacts.PROVIDERS_ENV, "NoSuchExecutionProvider")
    result = CliRunner().invoke(main, ["query", str(probe_store), "--model", str(probed_model.path)])
    assert_one_line_error(result, "TEMPOCODEC_PROVIDERS='NoSuchExecutionProvider'", "not in this onnxruntime build")


def test_one_line_errors(probed_model, probe_store, tiny_models, tmp_path):
    runner = CliRunner()
    bad = runner.invoke(main, ["query", str(probe_store), "--product", "so2", "--model", str(probed_model.path)])
    assert bad.exit_code == 2 and bad.output.count("\n") == 1 and "unknown product 'so2'" in bad.output
    bare = tmp_path / "bare"
    shutil.copytree(probed_model.path, bare, ignore=shutil.ignore_patterns("probes"))
    manifest = (bare / "manifest.json").read_text()
    (bare / "manifest.json").write_text("\n".join(line for line in manifest.splitlines() if "probes/" not in line))
    with pytest.raises(TempocodecError, match="has no probes: run tempocodec train-probes first"):
        query_store(probe_store, model=bare)
    with pytest.raises(TempocodecError, match="has sha256 .*, but the store's latents come from model 'spectral1028'"):
        query_store(probe_store, model=tiny_models.full)
    with pytest.raises(TempocodecError, match="no band band_540_740_nm"):
        query_store(probe_store, band="band_540_740_nm", model=probed_model.path)


def test_a_band_without_latents_is_refused(probed_model, tmp_path):
    granule = write_simulated(tmp_path, 8, 8, seed=5, bands="all")[0]
    # a model given for UV only: the VIS band is kept lossless, so it has no latents
    compress_granule(granule, tmp_path / "vis.zarr", bands="all", model=probed_model.path, radiance_error="rounded",
                     progress=False)  # (exact would run the decoder to fit its noise model)
    with pytest.raises(TempocodecError, match=r"band band_540_740_nm has no latents \(radiance kept lossless"):
        query_store(tmp_path / "vis.zarr", band="band_540_740_nm")
    result = CliRunner().invoke(main, ["query", str(tmp_path / "vis.zarr"), "--band", "band_540_740_nm"])
    assert result.exit_code == 2 and result.output.startswith("error: ") and result.output.count("\n") == 1


def test_write_products_is_atomic_and_keeps_nan(probed_model, probe_store, tmp_path):
    ds = query_store(probe_store, "cloud_fraction", model=probed_model.path)
    ds["cloud_fraction"][0, :3] = np.nan
    path = write_products(ds, tmp_path / "c.nc")
    with xr.open_dataset(path, group="product") as product:
        assert np.isnan(product["cloud_fraction"].values[0, :3]).all()
        assert product["cloud_fraction"].encoding["_FillValue"] == np.float32(-1.2676506e30)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.nc"]
