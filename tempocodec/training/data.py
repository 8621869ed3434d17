"""The data of a training run: L1B granules, their split by granule, normalization statistics and the tile cache.

Data: every ``TEMPO_RAD_L1_*.nc`` under the data directory. Granules are split into training and validation
*by granule*. Tiles of 64×64 pixels whose valid-pixel fraction is below ``min_valid`` are skipped; invalid values
are stored as normalized 0 and invalid pixels are masked out of the loss. The tiles of a run are cached under its
``cache/`` as float16 normalized arrays, reused on resume.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from tempocodec.atomic import ANY_FILE, atomic_file
from tempocodec.errors import TempocodecError
from tempocodec.granule.l1b import open_l1b
from tempocodec.prepare.normalize import LogStats, normalize
from tempocodec.prepare.tiles import cut_tiles
from tempocodec.training.config import TrainConfig

L1B_PATTERN = "TEMPO_RAD_L1_*.nc"
BLOCK_STEPS = 64
PROVENANCE_ATTRS = ("title", "source", "institution", "history", "comment", "project")


@dataclass
class TileSet:
    """Normalized tiles in memory (or memory-mapped): ``x`` float16 ``(N, C, T, T)``, ``mask`` bool ``(N, T, T)``."""

    x: np.ndarray
    mask: np.ndarray

    def __len__(self) -> int:
        return int(self.x.shape[0])


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
        count = _write_tiles(paths, config, mu, sigma, x_path, mask_path)
        meta = {"key": key, "count": count}
        with atomic_file(meta_path, replace=ANY_FILE) as tmp:  # the cache counts only once its meta is whole
            tmp.write_text(json.dumps(meta))
    count = meta["count"]
    if count == 0:
        raise TempocodecError(f"{paths[0].parent}: no tile with enough valid pixels in {len(paths)} granules")
    shape = (count, n_channels, tile, tile)
    in_memory = count * n_channels * tile * tile * 2 <= config.memory_gb * 1e9
    x = np.fromfile(x_path, np.float16).reshape(shape) if in_memory else np.memmap(x_path, np.float16, "r", shape=shape)
    mask = np.fromfile(mask_path, np.uint8).reshape(count, tile, tile).astype(bool)
    return TileSet(x, mask)


def _write_tiles(paths: list[Path], config: TrainConfig, mu: np.ndarray, sigma: np.ndarray, x_path: Path,
                 mask_path: Path) -> int:
    """Append the normalized tiles of ``paths`` to ``x_path`` (float16 ``(C, T, T)`` each) and their masks to
    ``mask_path`` (uint8 ``(T, T)``); returns the number of tiles."""
    tile, count = config.vae_config().tile, 0
    with open(x_path, "wb") as x_file, open(mask_path, "wb") as mask_file:
        for path in paths:
            for start, block in iter_blocks(path, config.band, tile):
                tiles = cut_tiles(block, tile, config.min_valid, step_offset=start)
                for radiance, mask in zip(tiles.radiance, tiles.mask, strict=True):
                    x = normalize(radiance, mu, sigma).transpose(2, 0, 1)
                    x_file.write(np.ascontiguousarray(x, np.float16).tobytes())
                    mask_file.write(mask.astype(np.uint8).tobytes())
                    count += 1
    return count


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
