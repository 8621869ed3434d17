"""Training of the VAE on TEMPO L1B granules: data, loop, checkpoints and the run summary.

A run directory holds ``config.json`` (the :class:`TrainConfig`), ``normalization.npz`` (``mu``, ``sigma`` from
the training granules), ``last.pt`` and ``best.pt`` (checkpoints), ``summary.json`` (metrics on the validation
granules) and ``cache/`` (the tiles as float16 normalized arrays, reused on resume).

Data: every ``TEMPO_RAD_L1_*.nc`` under the data directory. Granules are split into training and validation
*by granule*. Tiles of 64×64 pixels whose valid-pixel fraction is below ``min_valid`` are skipped; invalid values
are stored as normalized 0 and invalid pixels are masked out of the loss. Batches are drawn in an order that
depends only on (seed, epoch), and the sampling noise only on (seed, step), so a resumed run repeats an
uninterrupted one on the CPU.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np
import torch
from rich.console import Console
from rich.progress import TextColumn

from tempocodec.atomic import ANY_FILE, atomic_file
from tempocodec.errors import TempocodecError
from tempocodec.granule.l1b import open_l1b
from tempocodec.prepare.normalize import LogStats, is_valid, normalize
from tempocodec.progress import progress_bar
from tempocodec.prepare.tiles import cut_tiles
from tempocodec.training.vae import VAE, VAEConfig

L1B_PATTERN = "TEMPO_RAD_L1_*.nc"
BLOCK_STEPS = 64
KL_ACTIVE_NATS = 0.01  # a latent channel is active above this mean KL per latent cell (nats)
STRUCTURE_RATIO = 0.5  # band structure counts as lost when the model's error exceeds this share of the mean's
WINDOWS_NM = {"NO2_405_465": (405.0, 465.0), "O3_310_330": (310.0, 330.0)}
MEDIAN_PIXELS = 20000
MEDIAN_PIXELS_PER_TILE = 64
MIN_VAL_EVERY = 100
PROVENANCE_ATTRS = ("title", "source", "institution", "history", "comment", "project")


@dataclass
class TrainConfig:
    """Everything a run depends on; saved as ``config.json`` in the run directory."""

    data: str
    band: str = "band_290_490_nm"
    epochs: int = 20
    batch_size: int = 8
    lr: float = 5e-4
    weight_decay: float = 0.0
    warmup_steps: int = 200
    grad_clip: float = 1.0
    seed: int = 0
    max_steps: int | None = None
    device: str = "cpu"
    val_fraction: float = 0.2
    val_every: int = 0
    patience: int = 5
    checkpoint_every: int = 200
    crop: int = 64
    min_valid: float = 0.5
    pca_init: bool = True
    memory_gb: float = 8.0
    gpu_cache_gb: float = 40.0
    model: dict = field(default_factory=lambda: VAEConfig().to_dict())

    def vae_config(self) -> VAEConfig:
        """The model configuration."""
        return VAEConfig.from_dict(self.model)

    @classmethod
    def from_dict(cls, data: dict) -> TrainConfig:
        """Build from ``asdict`` output; unknown keys are an error."""
        unknown = set(data) - {f.name for f in fields(cls)}
        if unknown:
            raise TempocodecError(f"training config: unknown keys {sorted(unknown)}")
        return cls(**data)


@dataclass
class TileSet:
    """Normalized tiles in memory (or memory-mapped): ``x`` float16 ``(N, C, T, T)``, ``mask`` bool ``(N, T, T)``."""

    x: np.ndarray
    mask: np.ndarray

    def __len__(self) -> int:
        return int(self.x.shape[0])


# ----------------------------------------------------------------------------------------------- data


def find_granules(data_dir: Path) -> list[Path]:
    """Every L1B granule (``TEMPO_RAD_L1_*.nc``) under ``data_dir``, sorted by name."""
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise TempocodecError(f"{data_dir}: data directory not found")
    paths = sorted(data_dir.rglob(L1B_PATTERN), key=lambda p: (p.name, str(p)))
    if not paths:
        raise TempocodecError(f"{data_dir}: no L1B granules ({L1B_PATTERN})")
    return paths


def split_granules(paths: list[Path], val_fraction: float, seed: int) -> tuple[list[Path], list[Path]]:
    """Split granules into (train, validation) at random by ``seed``; at least one of each."""
    if len(paths) < 2:
        raise TempocodecError(f"{paths[0].parent}: training needs at least 2 granules (one for validation)")
    order = np.random.default_rng(seed).permutation(len(paths))
    n_val = min(len(paths) - 1, max(1, round(val_fraction * len(paths))))
    val = sorted(paths[i] for i in order[:n_val])
    train = sorted(paths[i] for i in order[n_val:])
    return train, val


def iter_blocks(path: Path, band: str, steps: int = BLOCK_STEPS) -> Iterator[tuple[int, np.ndarray]]:
    """Yield ``(first_step, radiance)`` blocks of ``steps`` mirror steps, radiance float32 ``(steps, xtrack, C)``."""
    with open_l1b(path) as granule:
        n_steps = granule.band(band)["radiance"].shape[0]
        for start in range(0, n_steps, steps):
            yield start, granule.radiance_block(band, slice(start, min(start + steps, n_steps)), slice(None))


def band_wavelengths(path: Path, band: str) -> np.ndarray | None:
    """Median over cross-track of the band's ``nominal_wavelength`` (nm), ``(C,)``; None if the file lacks it."""
    with open_l1b(path) as granule:
        dataset = granule.band(band, radiance=False)
        if "nominal_wavelength" not in dataset:
            return None
        wavelength = dataset["nominal_wavelength"]
        other = [dim for dim in wavelength.dims if dim != "spectral_channel"]
        return np.asarray(wavelength.median(dim=other) if other else wavelength, np.float64)


def granule_provenance(path: Path) -> dict:
    """The descriptive global attributes of a granule (title, source, institution, history, comment) as short
    strings, and ``simulated``: whether any of them mentions simulation."""
    with open_l1b(path) as granule:
        attrs = {key: str(granule.attrs[key])[:200] for key in PROVENANCE_ATTRS if key in granule.attrs}
    return {"attrs": attrs, "simulated": any("simulat" in value.lower() for value in attrs.values())}


def compute_stats(paths: list[Path], band: str, n_channels: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel ``mu``, ``sigma`` of log radiance over ``paths``, streamed block by block."""
    stats = LogStats(n_channels)
    for path in paths:
        for _, block in iter_blocks(path, band):
            stats.update(block)
    return stats.result()


def _cache_key(paths: list[Path], config: TrainConfig, mu: np.ndarray, sigma: np.ndarray) -> dict:
    """What a tile cache depends on."""
    digest = hashlib.sha256(mu.tobytes() + sigma.tobytes()).hexdigest()
    return {"granules": [str(p) for p in paths], "band": config.band, "min_valid": config.min_valid,
            "tile": config.vae_config().tile, "stats": digest}


def load_tiles(paths: list[Path], config: TrainConfig, mu: np.ndarray, sigma: np.ndarray, cache: Path) -> TileSet:
    """Cut, normalize and store the tiles of ``paths`` under ``cache`` (``<name>.x.f16``, ``.mask.u8``, ``.json``).

    Reuses a cache written for the same granules and statistics. The arrays are read into memory when they fit
    in ``config.memory_gb``, else memory-mapped.
    """
    tile, n_channels = config.vae_config().tile, len(mu)
    key = _cache_key(paths, config, mu, sigma)
    meta_path = cache.with_suffix(".json")
    x_path, mask_path = cache.with_suffix(".x.f16"), cache.with_suffix(".mask.u8")
    meta = json.loads(meta_path.read_text()) if meta_path.exists() else {}
    if meta.get("key") != key:
        cache.parent.mkdir(parents=True, exist_ok=True)
        meta_path.unlink(missing_ok=True)
        count = 0
        with open(x_path, "wb") as x_file, open(mask_path, "wb") as mask_file:
            for path in paths:
                for start, block in iter_blocks(path, config.band, tile):
                    tiles = cut_tiles(block, tile, config.min_valid, step_offset=start)
                    for radiance, mask in zip(tiles.radiance, tiles.mask):
                        x = normalize(radiance, mu, sigma).transpose(2, 0, 1)
                        x_file.write(np.ascontiguousarray(x, np.float16).tobytes())
                        mask_file.write(mask.astype(np.uint8).tobytes())
                        count += 1
        meta = {"key": key, "count": count}
        meta_path.write_text(json.dumps(meta))
    count = meta["count"]
    if count == 0:
        raise TempocodecError(f"{paths[0].parent}: no tile with enough valid pixels in {len(paths)} granules")
    shape = (count, n_channels, tile, tile)
    in_memory = count * n_channels * tile * tile * 2 <= config.memory_gb * 1e9
    x = np.fromfile(x_path, np.float16).reshape(shape) if in_memory else np.memmap(x_path, np.float16, "r", shape=shape)
    mask = np.fromfile(mask_path, np.uint8).reshape(count, tile, tile).astype(bool)
    return TileSet(x, mask)


def spectral_basis(tiles: TileSet, width: int, seed: int, n_pixels: int = 20000) -> torch.Tensor:
    """Leading ``width`` principal directions of normalized spectra of up to ``n_pixels`` random valid pixels:
    ``(width, C)`` with orthonormal rows; rows beyond ``C`` (when ``width > C``) are random unit vectors."""
    rng = np.random.default_rng(seed)
    n, c, t, _ = tiles.x.shape
    picks = np.sort(rng.choice(n * t * t, size=min(n_pixels, n * t * t), replace=False))
    tile_index, rest = np.divmod(picks, t * t)
    rows, cols = np.divmod(rest, t)
    keep = tiles.mask[tile_index, rows, cols]
    spectra = np.asarray(tiles.x[tile_index[keep], :, rows[keep], cols[keep]], np.float64)  # (K, C)
    spectra -= spectra.mean(axis=0)
    _, vectors = np.linalg.eigh(spectra.T @ spectra)  # ascending eigenvalues
    basis = vectors[:, ::-1][:, : min(width, c)].T
    if width > c:
        extra = rng.standard_normal((width - c, c))
        basis = np.vstack([basis, extra / np.linalg.norm(extra, axis=1, keepdims=True)])
    return torch.from_numpy(np.ascontiguousarray(basis, np.float32))


# ----------------------------------------------------------------------------------------------- loop


def _device(name: str) -> torch.device:
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
        x, mask = torch.from_numpy(np.ascontiguousarray(x)), torch.from_numpy(np.ascontiguousarray(mask))
    return x.to(device, non_blocking=True).float(), mask.to(device, non_blocking=True)


def _autocast(device: torch.device):
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
        with _autocast(device):
            recon, mean, logvar = model(x, sample=False)
        error = (recon.float() - x).abs() * mask.unsqueeze(1)
        totals["l1_sum"] = totals.get("l1_sum", 0.0) + float(error.sum())
        totals["count"] = totals.get("count", 0.0) + float(mask.sum()) * x.shape[1]
        totals["kl_sum"] = totals.get("kl_sum", 0.0) + float(model.kl_per_channel(mean.float(), logvar.float()).sum())
    model.train()
    return {"l1": totals["l1_sum"] / max(totals["count"], 1.0), "kl": totals["kl_sum"] / len(tiles)}


def _save(path: Path, payload: dict) -> None:
    """Write a checkpoint atomically (temporary file in the same directory, then rename)."""
    with atomic_file(path, replace=ANY_FILE) as tmp:
        torch.save(payload, tmp)


def _write_json(path: Path, data: dict) -> None:
    """Write JSON atomically."""
    with atomic_file(path, replace=ANY_FILE) as tmp:
        tmp.write_text(json.dumps(data, indent=2))


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


def _on_device(tiles: TileSet, device: torch.device, budget_gb: float) -> tuple[np.ndarray | torch.Tensor, ...]:
    """The tile arrays as tensors on a CUDA ``device`` when they fit in ``budget_gb``, else the numpy arrays."""
    if device.type != "cuda" or tiles.x.nbytes > budget_gb * 1e9:
        return tiles.x, tiles.mask
    return torch.from_numpy(np.asarray(tiles.x)).to(device), torch.from_numpy(tiles.mask).to(device)


def total_steps(n_train_tiles: int, config: TrainConfig) -> int:
    """Steps of the whole run: ``epochs`` full passes over the training tiles, capped at ``max_steps``."""
    steps = config.epochs * len(batch_indices(n_train_tiles, config.batch_size, config.seed, 0))
    return min(steps, config.max_steps) if config.max_steps is not None else steps


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
                batches = batch_indices(len(train_tiles), config.batch_size, config.seed, state.epoch)
                rng = np.random.default_rng([config.seed, state.epoch, state.batch_in_epoch, 1])
                x, mask = make_batch(x_source, mask_source, batches[state.batch_in_epoch], config.crop, rng, device)
                torch.manual_seed(config.seed * 1_000_003 + state.step)
                for group in optimizer.param_groups:
                    group["lr"] = learning_rate(config, state.step, total)
                with _autocast(device):
                    terms = model.loss(x, mask)
                optimizer.zero_grad(set_to_none=True)
                terms["loss"].backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
                optimizer.step()
                state.step += 1
                state.batch_in_epoch += 1
                if state.batch_in_epoch == len(batches):
                    state.epoch, state.batch_in_epoch = state.epoch + 1, 0
                values = {name: float(value.detach()) for name, value in terms.items()}
                bar.update(task, completed=state.step, terms=f"loss {values['loss']:.4f} l1 {values['l1']:.4f} "
                           f"kl {values['kl']:.1f} log_b {values['log_scale']:.2f}")
                state.seconds = time.perf_counter() - started
                if state.step % val_every == 0 or state.step == total:
                    _evaluate_and_checkpoint(model, optimizer, val_tiles, config, run_dir, state, values)
                    state.stopped_early = state.bad_evals >= config.patience
                elif state.step % config.checkpoint_every == 0:
                    _checkpoint(run_dir / "last.pt", model, optimizer, config, state)
    finally:
        state.seconds = time.perf_counter() - started
        _checkpoint(run_dir / "last.pt", model, optimizer, config, state)
    return state


def _evaluate_and_checkpoint(model: VAE, optimizer: torch.optim.Optimizer, val_tiles: TileSet, config: TrainConfig,
                             run_dir: Path, state: LoopState, train_terms: dict[str, float]) -> None:
    """Validate, update best/early-stop bookkeeping and history, write ``best.pt`` when improved and ``last.pt``."""
    device = next(model.parameters()).device
    val = validate(model, val_tiles, config.batch_size, device)
    state.history.append({"step": state.step, "epoch": state.epoch, "seconds": round(state.seconds, 2),
                          "train": train_terms, "val": val})
    if val["l1"] < state.best_val:
        state.best_val, state.best_step, state.bad_evals = val["l1"], state.step, 0
        _checkpoint(run_dir / "best.pt", model, optimizer, config, state)
    else:
        state.bad_evals += 1
    _checkpoint(run_dir / "last.pt", model, optimizer, config, state)


def _checkpoint(path: Path, model: VAE, optimizer: torch.optim.Optimizer, config: TrainConfig, state: LoopState) -> None:
    """Save model, optimizer, config and loop state to ``path``."""
    _save(path, {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "config": asdict(config),
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


def make_optimizer(model: VAE, config: TrainConfig) -> torch.optim.Optimizer:
    """AdamW over all parameters."""
    return torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)


# ----------------------------------------------------------------------------------------------- metrics


def _differential(log_spectra: np.ndarray, wavelength: np.ndarray) -> np.ndarray:
    """``(P, W)`` log spectra minus their least-squares quadratic in wavelength: the absorption band structure."""
    t = (wavelength - wavelength.mean()) / max(np.ptp(wavelength), 1e-9)
    design = np.stack([np.ones_like(t), t, t * t], axis=1)
    coef, *_ = np.linalg.lstsq(design, log_spectra.T, rcond=None)
    return log_spectra - (design @ coef).T


class _Metrics:
    """Streaming reconstruction metrics over validation pixels (radiance space)."""

    def __init__(self, mu: np.ndarray, wavelength: np.ndarray | None, latent_channels: int, latent_cells: int,
                 seed: int) -> None:
        c = len(mu)
        self.latent_cells = latent_cells
        self.mu, self.wavelength = mu.astype(np.float64), wavelength
        self.abs_rel_sum, self.count = np.zeros(c), np.zeros(c)
        self.median_sample: list[np.ndarray] = []
        self.rrmse, self.rrmse_mean_predictor = [], []
        self.kl_sum, self.tiles = np.zeros(latent_channels), 0
        self.structure = {name: ([], []) for name in WINDOWS_NM}
        self.rng = np.random.default_rng(seed)

    def add(self, truth: np.ndarray, recon: np.ndarray, pixel_mask: np.ndarray, kl: np.ndarray) -> None:
        """One tile: radiance ``truth``, ``recon`` ``(T, T, C)``, ``pixel_mask`` ``(T, T)``, ``kl`` ``(Z,)`` nats."""
        self.kl_sum += kl
        self.tiles += 1
        spectra, recon = truth[pixel_mask].astype(np.float64), recon[pixel_mask].astype(np.float64)
        usable = is_valid(spectra) & (spectra >= 1.0)
        spectra, recon, usable = spectra[usable.any(axis=1)], recon[usable.any(axis=1)], usable[usable.any(axis=1)]
        if not len(spectra):
            return
        rel = np.where(usable, (recon - spectra) / np.where(usable, spectra, 1.0), np.nan)
        self.abs_rel_sum += np.nansum(np.abs(rel), axis=0)
        self.count += usable.sum(axis=0)
        take = self.rng.permutation(len(rel))[:MEDIAN_PIXELS_PER_TILE]
        self.median_sample.append(rel[take].astype(np.float32))
        self.rrmse.append(np.sqrt(np.nanmean(rel**2, axis=1)))
        mean_rel = np.where(usable, (np.exp(self.mu) - spectra) / np.where(usable, spectra, 1.0), np.nan)
        self.rrmse_mean_predictor.append(np.sqrt(np.nanmean(mean_rel**2, axis=1)))
        if self.wavelength is not None:
            self._add_structure(spectra, recon, usable)

    def _add_structure(self, spectra: np.ndarray, recon: np.ndarray, usable: np.ndarray) -> None:
        """RMS error of the differential log spectrum in each window, for the model and the mean spectrum."""
        for name, (low, high) in WINDOWS_NM.items():
            channels = (self.wavelength >= low) & (self.wavelength <= high)
            rows = usable[:, channels].all(axis=1) & (recon[:, channels] > 0).all(axis=1)
            if channels.sum() < 4 or not rows.any():
                continue
            wl = self.wavelength[channels]
            truth_d = _differential(np.log(spectra[rows][:, channels]), wl)
            model_d = _differential(np.log(recon[rows][:, channels]), wl)
            mean_d = _differential(self.mu[channels][None, :], wl)
            self.structure[name][0].append(np.sqrt(np.mean((model_d - truth_d) ** 2, axis=1)))
            self.structure[name][1].append(np.sqrt(np.mean((mean_d - truth_d) ** 2, axis=1)))

    def result(self) -> dict:
        """The metrics as JSON-able data."""
        if self.tiles == 0 or not self.rrmse:
            raise TempocodecError("evaluation: no validation tile with valid pixels")
        sample = np.concatenate(self.median_sample)
        sample = sample[self.rng.permutation(len(sample))[:MEDIAN_PIXELS]]
        kl = self.kl_sum / self.tiles
        rrmse, rrmse_mean = np.concatenate(self.rrmse), np.concatenate(self.rrmse_mean_predictor)
        result = {
            "tiles": self.tiles,
            "pixels": int(rrmse.size),
            "relative_error_mean_per_channel": _rounded(self.abs_rel_sum / np.maximum(self.count, 1)),
            "relative_error_median_per_channel": _rounded(np.nanmedian(np.abs(sample), axis=0)),
            "relative_error_median_pixels": int(sample.shape[0]),
            "relative_rmse_per_spectrum": {"mean": float(np.nanmean(rrmse)), "median": float(np.nanmedian(rrmse))},
            "relative_rmse_per_spectrum_mean_predictor": {"mean": float(np.nanmean(rrmse_mean)),
                                                          "median": float(np.nanmedian(rrmse_mean))},
            "kl_per_latent_channel": _rounded(kl),
            "active_latent_channels": int((kl > KL_ACTIVE_NATS * self.latent_cells).sum()),
            "wavelength_nm": None if self.wavelength is None else _rounded(self.wavelength),
        }
        result["posterior_collapse"] = result["active_latent_channels"] == 0
        result["spectral_structure"] = self._structure_result()
        return result

    def _structure_result(self) -> dict:
        """Per window: median RMS differential error of the model and of the mean spectrum, their ratio, and
        ``structure_lost`` when the ratio exceeds 0.5 (the model does not resolve the band structure: smoothing or
        spurious structure)."""
        out = {}
        for name, (model_err, mean_err) in self.structure.items():
            if not model_err:
                out[name] = None
                continue
            model_median = float(np.median(np.concatenate(model_err)))
            mean_median = float(np.median(np.concatenate(mean_err)))
            ratio = model_median / mean_median if mean_median > 0 else float("nan")
            out[name] = {"window_nm": list(WINDOWS_NM[name]), "model_rms_log_error": model_median,
                         "mean_spectrum_rms_log_error": mean_median, "ratio": ratio,
                         "structure_lost": bool(ratio > STRUCTURE_RATIO)}
        return out


def _rounded(values: np.ndarray) -> list[float]:
    """A float array as a list with 6 significant digits (NaN becomes None)."""
    return [None if not np.isfinite(v) else float(f"{v:.6g}") for v in np.asarray(values, np.float64)]


@torch.no_grad()
def evaluate(model: VAE, paths: list[Path], config: TrainConfig, mu: np.ndarray, sigma: np.ndarray,
             wavelength: np.ndarray | None) -> dict:
    """Reconstruction metrics of ``model`` on the tiles of ``paths``, against the radiance read from the files.

    Relative error ``(L_hat - L) / L`` per channel over valid values with ``L >= 1`` of valid pixels: the mean of
    its absolute value over all pixels, and the median over a random sample of up to 20000 pixels (at most 64 per
    tile). Relative RMSE per spectrum: the RMS over channels of the relative error, averaged over pixels (also for
    the mean-spectrum predictor ``exp(mu)``). KL per latent channel in nats per tile. Spectral structure: RMS error
    of the log spectrum after removing a quadratic in wavelength, in the NO2 (405-465 nm) and O3 (310-330 nm)
    windows, for the model and for the mean spectrum.
    """
    device = next(model.parameters()).device
    vae_config = model.config
    cells = (vae_config.tile // vae_config.downsample) ** 2
    metrics = _Metrics(mu, wavelength, vae_config.latent_channels, cells, config.seed)
    sigma_t, mu_t = torch.from_numpy(sigma).to(device), torch.from_numpy(mu).to(device)
    model.eval()
    for path in paths:
        for start, block in iter_blocks(path, config.band, vae_config.tile):
            tiles = cut_tiles(block, vae_config.tile, config.min_valid, step_offset=start)
            for radiance, mask in zip(tiles.radiance, tiles.mask):
                x = torch.from_numpy(np.ascontiguousarray(normalize(radiance, mu, sigma).transpose(2, 0, 1)))
                with _autocast(device):
                    recon, mean, logvar = model(x[None].to(device), sample=False)
                recon_radiance = torch.exp(recon[0].float().permute(1, 2, 0) * sigma_t + mu_t).cpu().numpy()
                kl = model.kl_per_channel(mean.float(), logvar.float())[0].cpu().numpy()
                metrics.add(radiance, recon_radiance, mask, kl)
    return metrics.result()


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
    _write_json(config_path, asdict(config))
    stats_path = run_dir / "normalization.npz"
    if not stats_path.exists():
        if progress:
            Console(stderr=True).print(f"statistics over {len(train_paths)} training granules")
        mu, sigma = compute_stats(train_paths, config.band, config.vae_config().n_channels)
        with atomic_file(stats_path, replace=ANY_FILE) as tmp, tmp.open("wb") as f:
            np.savez(f, mu=mu, sigma=sigma)
    return train_paths, val_paths


def train_run(config: TrainConfig, run_dir: Path, *, resume: bool = False, progress: bool = True,
              time_limit: float | None = None, stop_at: int | None = None) -> dict:
    """Train a VAE as ``config`` says, in ``run_dir``; returns the run summary.

    A finished run (last step or early stop) is evaluated on the validation granules and its summary written to
    ``summary.json``. A run paused by ``time_limit`` (seconds) or ``stop_at`` (step) returns ``finished: False``
    and the training part of the summary only; ``resume=True`` continues it.
    """
    run_dir = Path(run_dir)
    device = _device(config.device)
    train_paths, val_paths = _prepare(config, run_dir, resume, progress)
    with np.load(run_dir / "normalization.npz") as stats:
        mu, sigma = stats["mu"], stats["sigma"]
    train_tiles = load_tiles(train_paths, config, mu, sigma, run_dir / "cache" / "train")
    val_tiles = load_tiles(val_paths, config, mu, sigma, run_dir / "cache" / "val")
    torch.manual_seed(config.seed)
    model = VAE(config.vae_config())
    state = LoopState()
    if resume:
        checkpoint = torch.load(run_dir / "last.pt", map_location="cpu", weights_only=False)
        model.load_state_dict(checkpoint["model"])
        model.to(device)
        optimizer = make_optimizer(model, config)
        optimizer.load_state_dict(checkpoint["optimizer"])
        state = LoopState(**checkpoint["state"])
    else:
        if config.pca_init:
            model.init_spectral_basis(spectral_basis(train_tiles, model.config.widths[0], config.seed))
        model.to(device)
        optimizer = make_optimizer(model, config)
    state = fit(model, optimizer, train_tiles, val_tiles, config, run_dir, state, progress=progress,
                stop_at=stop_at, time_limit=time_limit)
    finished = state.stopped_early or state.step >= total_steps(len(train_tiles), config)
    summary = {
        "finished": finished,
        "data": {"dir": config.data, "band": config.band, "provenance": granule_provenance(train_paths[0]),
                 "train_granules": [p.name for p in train_paths],
                 "val_granules": [p.name for p in val_paths], "train_tiles": len(train_tiles),
                 "val_tiles": len(val_tiles), "tile": model.config.tile},
        "training": {"steps": state.step, "total_steps": total_steps(len(train_tiles), config),
                     "epochs_completed": state.epoch, "batch_size": config.batch_size, "crop": config.crop,
                     "lr": config.lr, "seconds": round(state.seconds, 1), "device": device.type,
                     "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
                     "torch": torch.__version__, "seed": config.seed, "best_step": state.best_step,
                     "best_val_l1": state.best_val, "stopped_early": state.stopped_early,
                     "parameters": model.n_parameters()},
        "model": model.config.to_dict(),
        "history": state.history,
    }
    if finished:
        best, _ = load_checkpoint(run_dir / "best.pt", config.device)
        wavelength = band_wavelengths(val_paths[0], config.band)
        summary["validation"] = evaluate(best, val_paths, config, mu, sigma, wavelength)
        _write_json(run_dir / "summary.json", summary)
    return summary
