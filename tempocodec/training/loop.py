"""The training loop: learning-rate schedule, batches, validation loss, and :func:`fit`.

Batches are drawn in an order that depends only on (seed, epoch), and the sampling noise only on (seed, step), so
a resumed run repeats an uninterrupted one on the CPU.
"""

from __future__ import annotations

import contextlib
import math
import time
from pathlib import Path

import numpy as np
import torch
from rich.progress import TextColumn

from tempocodec.errors import TempocodecError
from tempocodec.progress import progress_bar
from tempocodec.training.checkpoints import LoopState, save_checkpoint
from tempocodec.training.config import TrainConfig
from tempocodec.training.data import TileSet
from tempocodec.training.vae import VAE

MIN_VAL_EVERY = 100


def torch_device(name: str) -> torch.device:
    """The torch device; raise when CUDA is asked for and absent."""
    if name == "cuda" and not torch.cuda.is_available():
        raise TempocodecError("--device cuda: no CUDA device is available")
    if name not in ("cpu", "cuda"):
        raise TempocodecError(f"--device {name}: expected cpu or cuda")
    return torch.device(name)


def learning_rate(config: TrainConfig, step: int, total_steps: int) -> float:
    """Linear warm-up over ``warmup_steps``, then cosine decay to 10% of ``lr`` at ``total_steps``."""
    if step < config.warmup_steps:
        return config.lr * (step + 1) / config.warmup_steps
    progress = min(1.0, (step - config.warmup_steps) / max(1, total_steps - config.warmup_steps))
    return config.lr * (0.1 + 0.9 * 0.5 * (1.0 + math.cos(math.pi * progress)))


def batch_indices(n_tiles: int, batch_size: int, seed: int, epoch: int) -> list[np.ndarray]:
    """The batches of one epoch: a permutation fixed by (seed, epoch), cut into full batches (at least one)."""
    order = np.random.default_rng([seed, epoch]).permutation(n_tiles)
    size = min(batch_size, n_tiles)
    return [np.sort(order[i : i + size]) for i in range(0, n_tiles - size + 1, size)]


def make_batch(x_source: np.ndarray | torch.Tensor, mask_source: np.ndarray | torch.Tensor, index: np.ndarray,
               crop: int, rng: np.random.Generator, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Tiles ``index`` of ``x_source`` ``(N, C, T, T)`` (float16, numpy or a torch tensor already on ``device``) as
    float32 ``(B, C, crop, crop)`` on ``device``, with their mask ``(B, crop, crop)``; all tiles of the batch are
    cropped at one random offset (a multiple of 4)."""
    tile = x_source.shape[-1]
    row, col = (int(v) * 4 for v in rng.integers(0, (tile - crop) // 4 + 1, size=2))
    x = x_source[index, :, row : row + crop, col : col + crop]
    mask = mask_source[index, row : row + crop, col : col + crop]
    if isinstance(x, np.ndarray):
        x = torch.from_numpy(np.ascontiguousarray(x))
    if isinstance(mask, np.ndarray):
        mask = torch.from_numpy(np.ascontiguousarray(mask))
    return x.to(device, non_blocking=True).float(), mask.to(device, non_blocking=True)


def autocast(device: torch.device):
    """bfloat16 autocast on CUDA (where supported), nothing on the CPU."""
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


@torch.no_grad()
def validate(model: VAE, tiles: TileSet, batch_size: int, device: torch.device) -> dict[str, float]:
    """Mean of the loss terms over all validation tiles (posterior mean, no sampling)."""
    model.eval()
    totals: dict[str, float] = {}
    for start in range(0, len(tiles), batch_size):
        index = np.arange(start, min(start + batch_size, len(tiles)))
        x = torch.from_numpy(np.asarray(tiles.x[index], np.float32)).to(device)
        mask = torch.from_numpy(tiles.mask[index]).to(device)
        with autocast(device):
            recon, mean, logvar = model(x, sample=False)
        error = (recon.float() - x).abs() * mask.unsqueeze(1)
        totals["l1_sum"] = totals.get("l1_sum", 0.0) + float(error.sum())
        totals["count"] = totals.get("count", 0.0) + float(mask.sum()) * x.shape[1]
        totals["kl_sum"] = totals.get("kl_sum", 0.0) + float(model.kl_per_channel(mean.float(), logvar.float()).sum())
    model.train()
    return {"l1": totals["l1_sum"] / max(totals["count"], 1.0), "kl": totals["kl_sum"] / len(tiles)}


def _on_device(tiles: TileSet, device: torch.device, budget_gb: float) -> tuple[np.ndarray | torch.Tensor, ...]:
    """The tile arrays as tensors on a CUDA ``device`` when they fit in ``budget_gb``, else the numpy arrays."""
    if device.type != "cuda" or tiles.x.nbytes > budget_gb * 1e9:
        return tiles.x, tiles.mask
    return torch.from_numpy(np.asarray(tiles.x)).to(device), torch.from_numpy(tiles.mask).to(device)


def total_steps(n_train_tiles: int, config: TrainConfig) -> int:
    """Steps of the whole run: ``epochs`` full passes over the training tiles, capped at ``max_steps``."""
    steps = config.epochs * len(batch_indices(n_train_tiles, config.batch_size, config.seed, 0))
    return min(steps, config.max_steps) if config.max_steps is not None else steps


def make_optimizer(model: VAE, config: TrainConfig) -> torch.optim.Optimizer:
    """AdamW over all parameters."""
    return torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)


def fit(model: VAE, optimizer: torch.optim.Optimizer, train_tiles: TileSet, val_tiles: TileSet, config: TrainConfig,
        run_dir: Path, state: LoopState, *, progress: bool = True, stop_at: int | None = None,
        time_limit: float | None = None) -> LoopState:
    """Run the training loop from ``state`` until the run's last step or an early stop; returns the final state.

    Validation runs every ``val_every`` steps (0: once per epoch, no more often than every 100 steps) and at the
    last step; the best model by validation L1 goes to ``best.pt``, the latest state to ``last.pt`` (also every
    ``checkpoint_every`` steps, on Ctrl-C and at the end).
    ``stop_at`` (a step) and ``time_limit`` (seconds of this call) pause the run early; resume continues it.
    """
    device = next(model.parameters()).device
    run_dir.mkdir(parents=True, exist_ok=True)
    x_source, mask_source = _on_device(train_tiles, device, config.gpu_cache_gb)
    batches_per_epoch = len(batch_indices(len(train_tiles), config.batch_size, config.seed, 0))
    total = total_steps(len(train_tiles), config)
    last = min(total, stop_at) if stop_at is not None else total
    val_every = config.val_every or max(batches_per_epoch, MIN_VAL_EVERY)
    model.train()
    call_started = time.perf_counter()
    started = call_started - state.seconds
    try:
        with progress_bar(TextColumn("{task.fields[terms]}"), enabled=progress) as bar:
            task = bar.add_task("train", total=total, completed=state.step, terms="")
            while state.step < last and not state.stopped_early:
                if time_limit is not None and time.perf_counter() - call_started > time_limit:
                    break
                values = _train_step(model, optimizer, x_source, mask_source, config, state, total)
                bar.update(task, completed=state.step, terms=f"loss {values['loss']:.4f} l1 {values['l1']:.4f} "
                           f"kl {values['kl']:.1f} log_b {values['log_scale']:.2f}")
                state.seconds = time.perf_counter() - started
                if state.step % val_every == 0 or state.step == total:
                    _evaluate_and_checkpoint(model, optimizer, val_tiles, config, run_dir, state, values)
                    state.stopped_early = state.bad_evals >= config.patience
                elif state.step % config.checkpoint_every == 0:
                    save_checkpoint(run_dir / "last.pt", model, optimizer, config, state)
    finally:
        state.seconds = time.perf_counter() - started
        save_checkpoint(run_dir / "last.pt", model, optimizer, config, state)
    return state


def _train_step(model: VAE, optimizer: torch.optim.Optimizer, x_source: np.ndarray | torch.Tensor,
                mask_source: np.ndarray | torch.Tensor, config: TrainConfig, state: LoopState,
                total: int) -> dict[str, float]:
    """One optimizer step on the batch ``state`` points at (of the training tiles ``x_source``, ``mask_source``,
    see :func:`make_batch`), of a run of ``total`` steps; advances ``state`` and returns the loss terms."""
    device = next(model.parameters()).device
    batches = batch_indices(int(x_source.shape[0]), config.batch_size, config.seed, state.epoch)
    rng = np.random.default_rng([config.seed, state.epoch, state.batch_in_epoch, 1])
    x, mask = make_batch(x_source, mask_source, batches[state.batch_in_epoch], config.crop, rng, device)
    torch.manual_seed(config.seed * 1_000_003 + state.step)
    for group in optimizer.param_groups:
        group["lr"] = learning_rate(config, state.step, total)
    with autocast(device):
        terms = model.loss(x, mask)
    optimizer.zero_grad(set_to_none=True)
    terms["loss"].backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
    optimizer.step()
    state.step += 1
    state.batch_in_epoch += 1
    if state.batch_in_epoch == len(batches):
        state.epoch, state.batch_in_epoch = state.epoch + 1, 0
    return {name: float(value.detach()) for name, value in terms.items()}


def _evaluate_and_checkpoint(model: VAE, optimizer: torch.optim.Optimizer, val_tiles: TileSet, config: TrainConfig,
                             run_dir: Path, state: LoopState, train_terms: dict[str, float]) -> None:
    """Validate, update best/early-stop bookkeeping and history, write ``best.pt`` when improved and ``last.pt``."""
    device = next(model.parameters()).device
    val = validate(model, val_tiles, config.batch_size, device)
    state.history.append({"step": state.step, "epoch": state.epoch, "seconds": round(state.seconds, 2),
                          "train": train_terms, "val": val})
    if val["l1"] < state.best_val:
        state.best_val, state.best_step, state.bad_evals = val["l1"], state.step, 0
        save_checkpoint(run_dir / "best.pt", model, optimizer, config, state)
    else:
        state.bad_evals += 1
    save_checkpoint(run_dir / "last.pt", model, optimizer, config, state)
