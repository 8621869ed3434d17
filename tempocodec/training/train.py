"""A training run of the VAE on TEMPO L1B granules, from an empty run directory to its summary.

A run directory holds ``config.json`` (the :class:`~tempocodec.training.config.TrainConfig`), ``split.json`` (the
training and validation granules), ``normalization.npz`` (``mu``, ``sigma`` from the training granules),
``last.pt`` and ``best.pt`` (checkpoints), ``summary.json`` (metrics on the validation granules) and ``cache/``
(the tiles as float16 normalized arrays, reused on resume). Data: :mod:`tempocodec.training.data`; loop:
:mod:`tempocodec.training.loop`; validation metrics: :mod:`tempocodec.training.validation`.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from rich.console import Console

from tempocodec.atomic import ANY_FILE, atomic_file
from tempocodec.errors import TempocodecError
from tempocodec.training.checkpoints import LoopState, load_checkpoint
from tempocodec.training.config import TrainConfig
from tempocodec.training.data import (
    TileSet,
    band_wavelengths,
    compute_stats,
    find_granules,
    granule_provenance,
    load_tiles,
    spectral_basis,
    split_granules,
)
from tempocodec.training.loop import fit, make_optimizer, torch_device, total_steps
from tempocodec.training.vae import VAE
from tempocodec.training.validation import validation_metrics


def train_run(config: TrainConfig, run_dir: Path, *, resume: bool = False, progress: bool = True,
              time_limit: float | None = None, stop_at: int | None = None) -> dict:
    """Train a VAE as ``config`` says, in ``run_dir``; returns the run summary.

    A finished run (last step or early stop) is evaluated on the validation granules and its summary written to
    ``summary.json``. A run paused by ``time_limit`` (seconds) or ``stop_at`` (step) returns ``finished: False``
    and the training part of the summary only; ``resume=True`` continues it.
    """
    run_dir = Path(run_dir)
    device = torch_device(config.device)
    train_paths, val_paths = _prepare(config, run_dir, resume, progress)
    with np.load(run_dir / "normalization.npz") as stats:
        mu, sigma = stats["mu"], stats["sigma"]
    train_tiles = load_tiles(train_paths, config, mu, sigma, run_dir / "cache" / "train")
    val_tiles = load_tiles(val_paths, config, mu, sigma, run_dir / "cache" / "val")
    model, optimizer, state = _start(config, run_dir, resume, train_tiles, device)
    state = fit(model, optimizer, train_tiles, val_tiles, config, run_dir, state, progress=progress,
                stop_at=stop_at, time_limit=time_limit)
    summary = _summary(config, model, state, device, (train_paths, val_paths), (len(train_tiles), len(val_tiles)))
    if summary["finished"]:
        best, _ = load_checkpoint(run_dir / "best.pt", config.device)
        wavelength = band_wavelengths(val_paths[0], config.band)
        summary["validation"] = validation_metrics(best, val_paths, config, mu, sigma, wavelength)
        _write_json(run_dir / "summary.json", summary)
    return summary


def _start(config: TrainConfig, run_dir: Path, resume: bool, train_tiles: TileSet,
           device: torch.device) -> tuple[VAE, torch.optim.Optimizer, LoopState]:
    """The model on ``device``, its optimizer and the loop state: from ``last.pt`` on resume, else new (with the
    spectral basis of the training tiles when ``pca_init``)."""
    torch.manual_seed(config.seed)
    model = VAE(config.vae_config())
    if resume:
        checkpoint = torch.load(run_dir / "last.pt", map_location="cpu", weights_only=False)
        model.load_state_dict(checkpoint["model"])
        model.to(device)
        optimizer = make_optimizer(model, config)
        optimizer.load_state_dict(checkpoint["optimizer"])
        return model, optimizer, LoopState(**checkpoint["state"])
    if config.pca_init:
        model.init_spectral_basis(spectral_basis(train_tiles, model.config.widths[0], config.seed))
    model.to(device)
    return model, make_optimizer(model, config), LoopState()


def _summary(config: TrainConfig, model: VAE, state: LoopState, device: torch.device,
             paths: tuple[list[Path], list[Path]], n_tiles: tuple[int, int]) -> dict:
    """The run summary but its validation metrics: data, training budget and outcome, model, history.

    ``paths``, ``n_tiles``: the (train, validation) granules and their tile counts."""
    (train_paths, val_paths), (n_train, n_val) = paths, n_tiles
    total = total_steps(n_train, config)
    return {
        "finished": state.stopped_early or state.step >= total,
        "data": {"dir": config.data, "band": config.band, "provenance": granule_provenance(train_paths[0]),
                 "train_granules": [p.name for p in train_paths],
                 "val_granules": [p.name for p in val_paths], "train_tiles": n_train,
                 "val_tiles": n_val, "tile": model.config.tile},
        "training": {"steps": state.step, "total_steps": total,
                     "epochs_completed": state.epoch, "batch_size": config.batch_size, "crop": config.crop,
                     "lr": config.lr, "seconds": round(state.seconds, 1), "device": device.type,
                     "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
                     "torch": torch.__version__, "seed": config.seed, "best_step": state.best_step,
                     "best_val_l1": state.best_val, "stopped_early": state.stopped_early,
                     "parameters": model.n_parameters()},
        "model": model.config.to_dict(),
        "history": state.history,
    }


def _prepare(config: TrainConfig, run_dir: Path, resume: bool, progress: bool) -> tuple[list[Path], list[Path]]:
    """Check the run directory, write ``config.json`` and ``normalization.npz`` (new run) or check them (resume).

    Returns the (train, validation) granules.
    """
    config_path = run_dir / "config.json"
    if resume:
        if not (run_dir / "last.pt").exists() or not config_path.exists():
            raise TempocodecError(f"{run_dir}: nothing to resume (no last.pt / config.json)")
        saved = TrainConfig.from_dict(json.loads(config_path.read_text()))
        if saved.model != config.model or saved.data != config.data or saved.band != config.band:
            raise TempocodecError(f"{run_dir}: resume with a different model, data or band than the saved run")
    elif run_dir.exists() and any(run_dir.iterdir()):
        raise TempocodecError(f"{run_dir}: run directory is not empty (use --resume to continue it)")
    run_dir.mkdir(parents=True, exist_ok=True)
    train_paths, val_paths = _split(config, run_dir, resume)
    _write_json(config_path, asdict(config))
    stats_path = run_dir / "normalization.npz"
    if not stats_path.exists():
        if progress:
            Console(stderr=True).print(f"statistics over {len(train_paths)} training granules")
        mu, sigma = compute_stats(train_paths, config.band, config.vae_config().n_channels)
        with atomic_file(stats_path, replace=ANY_FILE) as tmp, tmp.open("wb") as f:
            np.savez(f, mu=mu, sigma=sigma)
    return train_paths, val_paths


def _split(config: TrainConfig, run_dir: Path, resume: bool) -> tuple[list[Path], list[Path]]:
    """The (train, validation) granules: those of ``split.json`` on resume (each must still exist), else a new
    split of the data directory, written to ``split.json``."""
    split_path = run_dir / "split.json"
    if resume and split_path.exists():
        split = json.loads(split_path.read_text())
        train_paths, val_paths = [Path(p) for p in split["train"]], [Path(p) for p in split["val"]]
        missing = [p for p in train_paths + val_paths if not p.exists()]
        if missing:
            raise TempocodecError(f"{missing[0]}: granule of the saved split is missing")
    else:
        train_paths, val_paths = split_granules(find_granules(Path(config.data)), config.val_fraction, config.seed)
        _write_json(split_path, {"train": [str(p) for p in train_paths], "val": [str(p) for p in val_paths]})
    return train_paths, val_paths


def _write_json(path: Path, data: dict) -> None:
    """Write JSON atomically (:func:`tempocodec.atomic.atomic_file`)."""
    with atomic_file(path, replace=ANY_FILE) as tmp:
        tmp.write_text(json.dumps(data, indent=2))
