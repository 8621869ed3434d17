"""Tests for tempocodec.train: the loop learns, resume is exact, and a run on simulated granules gives a summary."""

import json
from dataclasses import asdict

import numpy as np
import pytest
import torch

from tempocodec.errors import TempocodecError
from tempocodec.train import (
    LoopState,
    TileSet,
    TrainConfig,
    batch_indices,
    fit,
    load_checkpoint,
    make_optimizer,
    split_granules,
    validate,
)
from tempocodec.vae import VAE, VAEConfig

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
    assert all(np.array_equal(a, b) for a, b in zip(first, batch_indices(10, 4, seed=3, epoch=1)))
    assert not all(np.array_equal(a, b) for a, b in zip(first, batch_indices(10, 4, seed=3, epoch=2)))
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
