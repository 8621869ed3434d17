"""Checkpoints of a training run: ``last.pt`` and ``best.pt`` hold the model, the optimizer, the config and the
:class:`LoopState`."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from tempocodec.atomic import ANY_FILE, atomic_file
from tempocodec.errors import TempocodecError
from tempocodec.training.config import TrainConfig
from tempocodec.training.vae import VAE


@dataclass
class LoopState:
    """Where a run stands; saved in every checkpoint."""

    step: int = 0
    epoch: int = 0
    batch_in_epoch: int = 0
    best_val: float = float("inf")
    best_step: int = -1
    bad_evals: int = 0
    stopped_early: bool = False
    seconds: float = 0.0
    history: list = field(default_factory=list)


def save_checkpoint(path: Path, model: VAE, optimizer: torch.optim.Optimizer, config: TrainConfig,
                    state: LoopState) -> None:
    """Save model, optimizer, config and loop state to ``path``."""
    write_checkpoint(path, {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "config": asdict(config),
                 "state": asdict(state)})


def load_checkpoint(path: Path, device: str = "cpu") -> tuple[VAE, dict]:
    """The model of a checkpoint (on ``device``, eval mode) and the raw checkpoint dict."""
    if not path.exists():
        raise TempocodecError(f"{path}: checkpoint not found")
    try:
        checkpoint = torch.load(path, map_location=device, weights_only=False)
        model = VAE(TrainConfig.from_dict(checkpoint["config"]).vae_config())
        model.load_state_dict(checkpoint["model"])
    except (RuntimeError, KeyError, EOFError) as err:
        raise TempocodecError(f"{path}: unreadable checkpoint ({err})") from err
    return model.to(device).eval(), checkpoint


def write_checkpoint(path: Path, payload: dict) -> None:
    """Write a checkpoint atomically (:func:`tempocodec.atomic.atomic_file`)."""
    with atomic_file(path, replace=ANY_FILE) as tmp:
        torch.save(payload, tmp)
