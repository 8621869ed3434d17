"""Tests for tempocodec.training: the loop learns, resume is exact, and a run on simulated granules gives a summary."""

import pytest

# Skip this module, with this reason, where torch is not installed (before the imports below need it).
pytest.importorskip("torch", reason="needs torch: pip install -e '.[train]'")

import json
from dataclasses import asdict

import numpy as np
import torch

from tempocodec.errors import TempocodecError
from tempocodec.training.checkpoints import LoopState, load_checkpoint
from tempocodec.training.config import TrainConfig
from tempocodec.training.data import TileSet, spectral_basis, split_granules
from tempocodec.training.loop import batch_indices, fit, make_optimizer, validate
from tempocodec.training.vae import VAE, VAEConfig
from tempocodec.training.validation import ValidationMetrics

pytestmark = pytest.mark.torch

CHANNELS = 16
MODEL = VAEConfig(n_channels=CHANNELS, latent_channels=4, widths=(8, 8, 16), res_blocks=(0, 1, 1))


def _tiles(n: int, seed: int) -> TileSet:
    """Tiles whose spectra mix three smooth spectral shapes with smooth random spatial weights, float16."""
    rng = np.random.default_rng(seed)
    yy, xx = np.meshgrid(np.linspace(0, 1, 64), np.linspace(0, 1, 64), indexing="ij")
    shapes = np.stack([np.sin(np.arange(CHANNELS) * k / 3) for k in (1, 2, 3)])
    x = []
    for _ in range(n):
        a = rng.normal(size=3)
        weights = np.stack([np.sin(3 * yy * a[0] + xx), np.cos(2 * xx * a[1] + yy), yy * a[2]])
        x.append(np.einsum("fhw,fc->chw", weights, shapes))
    mask = np.ones((n, 64, 64), bool)
    mask[0, :8] = False
    return TileSet(np.asarray(x, np.float16), mask)


def _config(**overrides) -> TrainConfig:
    values = dict(data="unused", epochs=100, batch_size=4, lr=3e-3, warmup_steps=5, max_steps=30, crop=32,
                  val_every=10, checkpoint_every=1000, model=MODEL.to_dict())
    return TrainConfig(**{**values, **overrides})


def _start(config: TrainConfig):
    torch.manual_seed(config.seed)
    model = VAE(config.vae_config())
    return model, make_optimizer(model, config)


def test_loss_falls_on_a_tiny_set(tmp_path):
    train, val = _tiles(16, 0), _tiles(4, 1)
    config = _config()
    model, optimizer = _start(config)
    before = validate(model, val, 4, torch.device("cpu"))["l1"]
    state = fit(model, optimizer, train, val, config, tmp_path, LoopState(), progress=False)
    assert state.step == 30 and [h["step"] for h in state.history] == [10, 20, 30]
    assert state.history[-1]["val"]["l1"] < 0.9 * before
    assert (tmp_path / "best.pt").exists() and (tmp_path / "last.pt").exists()
    best, checkpoint = load_checkpoint(tmp_path / "best.pt")
    assert checkpoint["state"]["step"] == state.best_step
    assert validate(best, val, 4, torch.device("cpu"))["l1"] == pytest.approx(state.best_val, rel=1e-5)


def test_resume_repeats_an_uninterrupted_run(tmp_path):
    train, val = _tiles(12, 0), _tiles(3, 1)
    config = _config(max_steps=12, val_every=5, batch_size=4)
    straight, optimizer = _start(config)
    fit(straight, optimizer, train, val, config, tmp_path / "a", LoopState(), progress=False)

    paused, optimizer = _start(config)
    state = fit(paused, optimizer, train, val, config, tmp_path / "b", LoopState(), progress=False, stop_at=7)
    assert state.step == 7 and (state.epoch, state.batch_in_epoch) == (2, 1)
    checkpoint = torch.load(tmp_path / "b" / "last.pt", weights_only=False)
    resumed = VAE(config.vae_config())
    resumed.load_state_dict(checkpoint["model"])
    optimizer = make_optimizer(resumed, config)
    optimizer.load_state_dict(checkpoint["optimizer"])
    state = fit(resumed, optimizer, train, val, config, tmp_path / "b", LoopState(**checkpoint["state"]),
                progress=False)
    assert state.step == 12
    for name, value in straight.state_dict().items():
        assert torch.equal(value, resumed.state_dict()[name]), name


def test_batches_depend_on_seed_and_epoch_only():
    first = batch_indices(10, 4, seed=3, epoch=1)
    assert [len(b) for b in first] == [4, 4]
    assert all(np.array_equal(a, b) for a, b in zip(first, batch_indices(10, 4, seed=3, epoch=1), strict=True))
    assert not all(np.array_equal(a, b) for a, b in zip(first, batch_indices(10, 4, seed=3, epoch=2), strict=True))
    assert [len(b) for b in batch_indices(3, 8, seed=0, epoch=0)] == [3]


def test_split_is_by_granule(tmp_path):
    paths = [tmp_path / f"g{i}.nc" for i in range(10)]
    train, val = split_granules(paths, 0.2, seed=1)
    assert len(val) == 2 and len(train) == 8 and not set(train) & set(val)
    with pytest.raises(TempocodecError, match="at least 2 granules"):
        split_granules(paths[:1], 0.2, seed=1)


def test_config_round_trip():
    config = _config()
    assert TrainConfig.from_dict(json.loads(json.dumps(asdict(config)))) == config
    with pytest.raises(TempocodecError, match="unknown keys"):
        TrainConfig.from_dict({"data": "x", "epoch": 3})


def test_validation_metrics_are_the_evaluation_engine_s():
    rng = np.random.default_rng(0)
    mu = np.full(12, 28.0)
    truth = np.exp(rng.normal(28, 0.3, (2, 16, 16, 12))).astype(np.float32)
    recon = (truth * (1 + 0.03 * rng.normal(size=truth.shape))).astype(np.float32)
    truth[0, 0, 0, :5] = 0.5  # below the signal floor: left out
    recon[1, 2, 3, 4] = np.inf  # decoded as invalid: counted, left out
    masks = np.ones((2, 16, 16), bool)
    masks[1, 15] = False
    metrics = ValidationMetrics(mu, None, latent_channels=3, latent_cells=4)
    for t, r, m in zip(truth, recon, masks, strict=True):
        metrics.add(t, r, m, np.array([0.0, 0.1, 1.0]))
    result = metrics.result()

    o, d = truth[masks].astype(np.float64), recon[masks].astype(np.float64)
    used = (o >= 1) & np.isfinite(d)
    rel = np.where(used, (d - o) / o, np.nan)
    assert result["decoded_fill"] == 1 and result["pixels"] == masks.sum() and result["tiles"] == 2
    np.testing.assert_allclose(result["relative_error_mean_per_channel"], np.nanmean(np.abs(rel), axis=0), rtol=1e-5)
    np.testing.assert_allclose(result["relative_error_median_per_channel"], np.nanmedian(np.abs(rel), axis=0),
                               rtol=0.025)  # the engine's histograms, over every pixel
    rrmse = np.sqrt(np.nanmean(rel**2, axis=1))
    assert result["relative_rmse_per_spectrum"]["mean"] == pytest.approx(np.nanmean(rrmse), rel=1e-5)
    assert result["relative_rmse_per_spectrum"]["median"] == pytest.approx(np.nanmedian(rrmse), rel=1e-5)
    mean_rel = np.where(o >= 1, (np.exp(mu) - o) / o, np.nan)
    baseline = np.sqrt(np.nanmean(mean_rel**2, axis=1))
    assert result["relative_rmse_per_spectrum_mean_predictor"]["mean"] == pytest.approx(np.nanmean(baseline), rel=1e-5)
    assert result["active_latent_channels"] == 2 and not result["posterior_collapse"]  # KL above 0.01 nat × 4 cells
    with pytest.raises(TempocodecError, match="no validation tile"):
        ValidationMetrics(mu, None, 3, 4).result()


def _write_granules(directory, n: int, steps: int = 64, xtrack: int = 72) -> None:
    """Tiny L1B files of 1028 channels: smooth spectra times smooth fields, one fill row, linear wavelengths."""
    from datetime import UTC, datetime

    import xarray as xr

    from tempocodec.granule.l1b import L1BGranule, write_l1b
    from tempocodec.granule.naming import l1b_filename

    wavelength = np.linspace(290, 490, 1028)
    shape = 1e12 * (1 + 0.5 * np.sin(wavelength / 7.0)) * (wavelength / 400) ** 2
    for g in range(n):
        rng = np.random.default_rng(g)
        yy, xx = np.meshgrid(np.linspace(0, 1, steps), np.linspace(0, 1, xtrack), indexing="ij")
        field = 1 + 0.5 * np.sin(4 * yy + rng.normal()) * np.cos(3 * xx)
        tilt = 0.3 * (xx - 0.5)[..., None] * (wavelength - 390)[None, None, :] / 100
        radiance = (field[..., None] * shape * (1 + tilt)).astype(np.float32)
        radiance[5] = -9.96921e36
        band = xr.Dataset({"radiance": (("mirror_step", "xtrack", "spectral_channel"), radiance),
                           "nominal_wavelength": (("xtrack", "spectral_channel"),
                                                  np.tile(wavelength, (xtrack, 1)).astype(np.float32))})
        name = l1b_filename(datetime(2025, 4, 6, 12, g, tzinfo=UTC), scan=1, granule=g + 1)
        write_l1b(directory / name, L1BGranule(attrs={"title": "tempocodec simulated test granule"},
                                               root=xr.Dataset(), bands={"band_290_490_nm": band}))


def test_train_run_and_export_on_granules(tmp_path):
    from tempocodec.training.export import export_run
    from tempocodec.training.train import train_run

    data = tmp_path / "data"
    data.mkdir()
    _write_granules(data, 3)
    model = VAEConfig(n_channels=1028, latent_channels=4, widths=(8, 8, 16), res_blocks=(0, 1, 1))
    config = TrainConfig(data=str(data), epochs=50, batch_size=2, lr=3e-3, warmup_steps=2, max_steps=6, crop=32,
                         val_fraction=0.34, val_every=3, model=model.to_dict())
    run = tmp_path / "run"
    paused = train_run(config, run, progress=False, stop_at=4)
    assert not paused["finished"] and paused["training"]["steps"] == 4 and not (run / "summary.json").exists()
    summary = train_run(config, run, resume=True, progress=False)
    assert summary["finished"] and summary["training"]["steps"] == 6
    assert summary["data"]["train_tiles"] == 2 and summary["data"]["val_tiles"] == 1
    assert summary["data"]["provenance"]["simulated"]
    validation = summary["validation"]
    assert len(validation["relative_error_mean_per_channel"]) == 1028
    assert validation["pixels"] == 63 * 64 and validation["decoded_fill"] == 0  # the fill row is left out
    assert 0 < validation["relative_rmse_per_spectrum"]["mean"] < 10
    assert len(validation["kl_per_latent_channel"]) == 4
    assert set(validation["spectral_structure"]) == {"NO2_405_465", "O3_310_330"}
    assert validation["spectral_structure"]["NO2_405_465"]["mean_spectrum_rms_log_error"] > 0
    with np.load(run / "normalization.npz") as stats:
        assert stats["mu"].shape == (1028,) and 25 < stats["mu"].mean() < 30
    with pytest.raises(TempocodecError, match="not empty"):
        train_run(config, run, progress=False)

    out = export_run(run, tmp_path / "models" / "tiny", name="tiny")
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["n_channels"] == 1028 and manifest["band"] == "band_290_490_nm"
    card = (out / "model_card.md").read_text()
    assert "simulated data" in card and "relative RMSE per spectrum" in card
    assert json.loads((out / "training_config.json").read_text())["max_steps"] == 6


def test_spectral_basis_finds_the_spectral_subspace():
    tiles = _tiles(4, 0)
    basis = spectral_basis(tiles, 5, seed=0).double()
    assert basis.shape == (5, CHANNELS)
    assert torch.allclose(basis @ basis.T, torch.eye(5, dtype=torch.float64), atol=1e-5)
    shapes = torch.from_numpy(np.stack([np.sin(np.arange(CHANNELS) * k / 3) for k in (1, 2, 3)]))
    projected = shapes @ basis[:3].T @ basis[:3]  # the data's three shapes lie in the leading three directions
    assert torch.allclose(projected, shapes, atol=0.02 * shapes.abs().max())
    assert spectral_basis(tiles, CHANNELS + 2, seed=0).shape == (CHANNELS + 2, CHANNELS)


def test_cli_train_then_export(tmp_path):
    from click.testing import CliRunner

    from tempocodec.cli import main

    data = tmp_path / "data"
    data.mkdir()
    _write_granules(data, 2)
    runner = CliRunner()
    args = ["train", "--data", str(data), "--out", str(tmp_path / "run"), "--batch-size", "1", "--crop", "16",
            "--max-steps", "2", "--latent-channels", "8", "--quiet"]
    result = runner.invoke(main, args)
    assert result.exit_code == 0, result.output
    assert "done: 2 steps" in result.output
    assert json.loads((tmp_path / "run" / "config.json").read_text())["model"]["latent_channels"] == 8
    result = runner.invoke(main, ["export", str(tmp_path / "run"), str(tmp_path / "model"), "--name", "m"])
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "model" / "manifest.json").read_text())["latent_channels"] == 8
    bad = runner.invoke(main, ["train", "--data", str(data), "--out", str(tmp_path / "r2"), "--crop", "30"])
    assert bad.exit_code == 2 and "--crop 30" in bad.output
