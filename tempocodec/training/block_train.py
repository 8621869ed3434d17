"""Training of the basis-block VAE (:mod:`tempocodec.training.blockvae`) on cached basis coefficients.

Inputs: a data directory written by ``scripts/make_training_data.py`` (``basis.npz``, ``train.npz``,
``valid.npz``). A run directory holds ``last.pt`` (model, optimizer, step, best validation), ``best.pt`` and
``log.jsonl``; ``--resume`` continues from ``last.pt``. Batches depend only on (seed, rank, step), so a resumed run
draws what the uninterrupted one would have.

Under ``torchrun`` (``WORLD_SIZE`` > 1) the run is data-parallel (DistributedDataParallel; gloo on the CPU, NCCL on
GPUs): every rank draws its own batches, gradients are averaged, and rank 0 validates, checkpoints and logs.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from tempocodec.errors import TempocodecError
from tempocodec.prepare.basis import SpectralBasis
from tempocodec.training.blockvae import BlockVAE, BlockVAEConfig
from tempocodec.training.checkpoints import write_checkpoint


@dataclass(frozen=True)
class BlockTrainConfig:
    """Optimisation settings; ``crop`` pixels per side (a multiple of the model's downsample), ``steps`` in all;
    ``linear_lr_scale``: the linear block transform learns this much slower than the correction networks (it starts
    at its optimum for squared error, and full-rate steps on it undo that faster than the networks learn)."""

    steps: int = 3000
    batch_size: int = 32
    crop: int = 32
    lr: float = 1e-3
    warmup: int = 100
    seed: int = 0
    eval_every: int = 200
    init_scenes: int = 400
    linear_lr_scale: float = 0.05


@dataclass
class CoefficientSet:
    """Coefficients float32 ``(N, K, H, W)`` and pixel masks bool ``(N, H, W)`` as tensors."""

    coefficients: torch.Tensor
    mask: torch.Tensor

    @classmethod
    def load(cls, path: Path) -> CoefficientSet:
        """Read ``train.npz`` / ``valid.npz`` of a data directory."""
        with np.load(_existing(path)) as data:
            return cls(torch.from_numpy(data["coefficients"].astype(np.float32)), torch.from_numpy(data["mask"]))


def _existing(path: Path) -> Path:
    if not path.is_file():
        raise TempocodecError(f"{path}: missing (make the data directory with scripts/make_training_data.py)")
    return path


def load_basis(data_dir: Path) -> dict[str, np.ndarray]:
    """``basis.npz`` of a data directory as arrays (mu, sigma, components, weights, scales, explained, band)."""
    with np.load(_existing(data_dir / "basis.npz")) as data:
        return {key: data[key] for key in data.files}


def build_model(model_config: BlockVAEConfig, basis: dict[str, np.ndarray]) -> BlockVAE:
    """A model with the data directory's spectral basis (:func:`load_basis`) installed."""
    model = BlockVAE(model_config)
    model.set_spectral_basis(SpectralBasis(components=basis["components"], weights=basis["weights"],
                                           scales=basis["scales"], explained=basis["explained"]))
    return model


def _batch(data: CoefficientSet, config: BlockTrainConfig, step: int, rank: int, down: int):
    """A deterministic batch of random crops for (seed, rank, step): coefficients and masks."""
    rng = np.random.default_rng([config.seed, rank, step])
    n, _, height, width = data.coefficients.shape
    scenes = rng.integers(0, n, config.batch_size)
    rows = rng.integers(0, (height - config.crop) // down + 1, config.batch_size) * down
    cols = rng.integers(0, (width - config.crop) // down + 1, config.batch_size) * down
    c = config.crop
    p = torch.stack([data.coefficients[s, :, r:r + c, q:q + c] for s, r, q in zip(scenes, rows, cols, strict=True)])
    m = torch.stack([data.mask[s, r:r + c, q:q + c] for s, r, q in zip(scenes, rows, cols, strict=True)])
    return p, m


@torch.no_grad()
def validate(model: BlockVAE, data: CoefficientSet, batch: int = 8) -> float:
    """Mean over valid pixels of the per-pixel RMS log-radiance error on whole scenes (latent mean, no sampling)."""
    was = model.training
    model.eval()
    total, weight = 0.0, 0.0
    for start in range(0, data.coefficients.shape[0], batch):
        p, m = data.coefficients[start:start + batch], data.mask[start:start + batch]
        count = float(m.sum())
        total += float(model.loss(p, m)["rms"]) * count
        weight += count
    model.train(was)
    return total / max(weight, 1.0)


def _optimizer(model: BlockVAE, config: BlockTrainConfig) -> torch.optim.Optimizer:
    """AdamW with two groups: the linear block transform (slow) and everything else."""
    linear = [*model.enc_linear.parameters(), *model.dec_linear.parameters()]
    ids = {id(p) for p in linear}
    rest = [p for p in model.parameters() if id(p) not in ids]
    return torch.optim.AdamW([{"params": rest, "scale": 1.0}, {"params": linear, "scale": config.linear_lr_scale}],
                             lr=config.lr, weight_decay=1e-5)


def _learning_rate(config: BlockTrainConfig, step: int) -> float:
    """Linear warm-up, then cosine decay to 5 % of ``lr`` at ``steps``."""
    if step < config.warmup:
        return config.lr * (step + 1) / config.warmup
    progress = min(1.0, (step - config.warmup) / max(1, config.steps - config.warmup))
    return config.lr * (0.05 + 0.95 * 0.5 * (1.0 + math.cos(math.pi * progress)))


def _distributed() -> tuple[int, int]:
    """(rank, world size), initialising the process group under torchrun."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return (dist.get_rank(), world) if world > 1 else (0, 1)


def _start(run_dir: Path, model: BlockVAE, optimizer: torch.optim.Optimizer, resume: bool, train: CoefficientSet,
           config: BlockTrainConfig) -> dict:
    """Resume from ``last.pt`` or initialise the linear paths from the block KLT; returns the loop state."""
    last = run_dir / "last.pt"
    if resume:
        if not last.is_file():
            raise TempocodecError(f"{run_dir}: nothing to resume (no last.pt)")
        saved = torch.load(last, map_location="cpu", weights_only=False)
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        return saved["state"]
    if last.exists():
        raise TempocodecError(f"{run_dir}: holds a run already (pass resume to continue it)")
    subset = slice(0, min(config.init_scenes, train.coefficients.shape[0]))
    explained = model.init_block_transform(train.coefficients[subset], train.mask[subset])
    return {"step": 0, "best": math.inf, "klt_explained": float(explained.sum())}


def train_block(data_dir: Path, run_dir: Path, model_config: BlockVAEConfig, config: BlockTrainConfig, *,
                resume: bool = False, time_limit: float | None = None) -> dict:
    """Train (or continue) a run; stops at ``config.steps`` or after ``time_limit`` seconds. Returns the state:
    ``step``, ``best`` (validation figure of ``best.pt``), ``finished``."""
    rank, world = _distributed()
    run_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(config.seed)
    train, valid = CoefficientSet.load(data_dir / "train.npz"), CoefficientSet.load(data_dir / "valid.npz")
    model = build_model(model_config, load_basis(data_dir))
    optimizer = _optimizer(model, config)
    state = _start(run_dir, model, optimizer, resume, train, config)
    if world > 1:  # every rank starts from rank 0's weights
        for tensor in model.state_dict().values():
            dist.broadcast(tensor, 0)
    net = DistributedDataParallel(model) if world > 1 else model
    if rank == 0 and state["step"] == 0:  # step 0 is the linear block transform (KLT): the figure to beat
        _checkpoint(run_dir, model, optimizer, state, valid, math.nan, config, model_config)
    started = time.perf_counter()
    while state["step"] < config.steps:
        step = state["step"]
        for group in optimizer.param_groups:
            group["lr"] = _learning_rate(config, step) * group["scale"]
        p, m = _batch(train, config, step, rank, model_config.downsample)
        torch.manual_seed(hash((config.seed, rank, step)) & 0x7FFF_FFFF)  # posterior samples depend on the step only
        out = net(p, m)  # forward = loss, so DDP averages the gradients across ranks
        optimizer.zero_grad(set_to_none=True)
        out["loss"].backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        state["step"] = step + 1
        out_of_time = time_limit is not None and time.perf_counter() - started > time_limit
        if rank == 0 and (state["step"] % config.eval_every == 0 or state["step"] == config.steps or out_of_time):
            _checkpoint(run_dir, model, optimizer, state, valid, float(out["rms"]), config, model_config)
        if _agree(out_of_time, world):
            break
    if world > 1:
        dist.barrier()
    state["finished"] = state["step"] >= config.steps
    return state


def _agree(flag: bool, world: int) -> bool:
    """True on every rank when any rank says so (all ranks stop together on a time limit)."""
    if world == 1:
        return flag
    value = torch.tensor([1.0 if flag else 0.0])
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item())


def _checkpoint(run_dir: Path, model: BlockVAE, optimizer: torch.optim.Optimizer, state: dict, valid: CoefficientSet,
                train_rms: float, config: BlockTrainConfig, model_config: BlockVAEConfig) -> None:
    """Validate, log, write ``last.pt`` and (when better) ``best.pt``."""
    score = validate(model, valid)
    payload = {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "state": state,
               "config": asdict(config), "model_config": asdict(model_config)}
    if score < state["best"]:
        state["best"] = score
        write_checkpoint(run_dir / "best.pt", {**payload, "state": dict(state)})
    write_checkpoint(run_dir / "last.pt", payload)
    _log(run_dir, {"step": state["step"], "train_rms": train_rms, "valid_rms": score, "best": state["best"]})


def _log(run_dir: Path, record: dict) -> None:
    with open(run_dir / "log.jsonl", "a", encoding="utf-8") as f:
        f.write(json.dumps({"time": time.time(), **record}) + "\n")
    print(json.dumps(record), flush=True)


def load_block_checkpoint(path: Path) -> BlockVAE:
    """The model saved in a checkpoint (``best.pt`` / ``last.pt``), in eval mode."""
    saved = torch.load(path, map_location="cpu", weights_only=False)
    model = BlockVAE(BlockVAEConfig(**saved["model_config"]))
    model.load_state_dict(saved["model"])
    return model.eval()
