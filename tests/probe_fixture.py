"""pytest plugin: session fixtures for the probe and query tests (load with ``pytest_plugins = ["probe_fixture"]``).

- ``probe_granules``: one simulated scene (40% cloud cover) written as 4 consecutive UV granules of one scan, 64×64
  pixels each, with their L2 truth: the first 3 in ``train``, the last in ``heldout``;
- ``probed_model``: a 1028-channel model with a *spectral* encoder and probes trained on ``train`` (small MLP, few
  epochs), with the held-out table ``train_probes`` returned;
- ``probe_store``: the held-out granule compressed with that model.

Why a spectral encoder: a random-init VAE's GroupNorm layers standardize every tile, so its latents lose the
tile-level brightness and spectral shape that a trained encoder keeps, and no probe can generalize from them across
granules. The stand-in encoder keeps them: latent channel k of a cell is the 4×4 block mean of the k-th cosine
(DCT-II) coefficient of the normalized spectrum, a fixed linear map like a PCA codec's. The decoder is the tiny
random-init one (the probes never use it).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest
import torch
from tiny_model import LOG_RADIANCE
from torch import nn

from tempocodec.runtime.artifacts import load_model
from tempocodec.training.export import export_model
from tempocodec.granule.l1b import L1BGranule, write_l1b
from tempocodec.granule.naming import l1b_filename, parse_tempo_filename
from tempocodec.granule.l2 import L2Granule, l2_filename, write_l2
from tempocodec.training.probe_training import ProbeConfig, train_probes
from tempocodec.simulator import STEP_SECONDS, SceneConfig, simulate_granule
from tempocodec.runtime.store import compress_granule
from tempocodec.training.vae import VAE, VAEConfig

ROWS = COLS = 64
SCAN_GRANULES = 4
SEED = 35
TEST_CONFIG = ProbeConfig(hidden=64, epochs=20, patience=5, batch_size=32)
MODEL_NAME = "spectral1028"


class SpectralEncoder(nn.Module):
    """``(N, C, H, W)`` -> mean ``(N, Z, H/4, W/4)``: 4×4 block means of the first ``Z`` DCT-II coefficients of each
    spectrum (divided by ``C``); logvar zero."""

    def __init__(self, n_channels: int, latent_channels: int) -> None:
        super().__init__()
        k, c = np.arange(latent_channels)[:, None], np.arange(n_channels)[None]
        basis = np.cos(np.pi * k * (c + 0.5) / n_channels) / n_channels
        self.project = nn.Conv2d(n_channels, latent_channels, 1, bias=False)
        with torch.no_grad():
            self.project.weight.copy_(torch.as_tensor(basis[:, :, None, None], dtype=torch.float32))
        self.pool = nn.AvgPool2d(4)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mean = self.pool(self.project(x))
        return mean, torch.zeros_like(mean)


def export_spectral(out_dir: Path) -> Path:
    """A 1028-channel, 32-latent model directory with :class:`SpectralEncoder` (stats as ``tiny_model``'s)."""
    model = VAE(VAEConfig(n_channels=1028, latent_channels=32, widths=(8, 8, 8), res_blocks=(0, 0, 0),
                          attention=False)).eval()
    model.encoder = SpectralEncoder(1028, 32)
    channel = np.arange(1028, dtype=np.float32)
    mu = (LOG_RADIANCE + 0.5 * np.sin(channel / 7.0)).astype(np.float32)
    sigma = (0.3 + 0.1 * np.cos(channel / 5.0)).astype(np.float32)
    return export_model(model, mu, sigma, out_dir, name=MODEL_NAME, band="band_290_490_nm")


@dataclass(frozen=True)
class ProbeGranules:
    """Directories of the training and the held-out granules."""

    train: Path
    heldout: Path


@dataclass(frozen=True)
class ProbedModel:
    """A model directory with trained probes, its held-out table, and the granules they came from."""

    path: Path
    metrics: list[dict]
    granules: ProbeGranules
    identity: str


def write_scan(out_dirs: list[Path], seed: int, cloud_cover: float = 0.4) -> list[Path]:
    """Simulate one scene of ``len(out_dirs)`` × 64 mirror steps by 64 pixels and write it as consecutive granules
    of one scan (granule ``k + 1`` into ``out_dirs[k]``, with its four L2 truth files); returns the L1B paths."""
    rows = ROWS * len(out_dirs)
    config = SceneConfig(rows=rows, cols=COLS, seed=seed, cloud_cover=cloud_cover)
    l1b, l2 = simulate_granule(rows, COLS, seed, bands="uv", config=config)
    start = parse_tempo_filename(l1b.attrs["local_granule_id"]).time
    paths = []
    for k, out in enumerate(out_dirs):
        steps = {"mirror_step": slice(k * ROWS, (k + 1) * ROWS)}
        time = start + timedelta(seconds=STEP_SECONDS * ROWS * k)
        name = l1b_filename(time, 1, k + 1)
        part = L1BGranule(attrs={**l1b.attrs, "local_granule_id": name}, root=l1b.root.isel(steps),
                          bands={b: ds.isel(steps) for b, ds in l1b.bands.items()})
        write_l1b(out / name, part)
        paths.append(out / name)
        for product, granule in l2.items():
            l2_name = l2_filename(product, time, 1, k + 1)
            groups = {g: ds.isel({d: v for d, v in steps.items() if d in ds.dims}) for g, ds in granule.groups.items()}
            write_l2(out / l2_name, L2Granule(product, {**granule.attrs, "local_granule_id": l2_name}, groups))
    return paths


@pytest.fixture(scope="session")
def probe_granules(tmp_path_factory: pytest.TempPathFactory) -> ProbeGranules:
    """The simulated training and held-out granules."""
    root = tmp_path_factory.mktemp("probe_granules")
    granules = ProbeGranules(root / "train", root / "heldout")
    granules.train.mkdir()
    granules.heldout.mkdir()
    write_scan([granules.train] * (SCAN_GRANULES - 1) + [granules.heldout], SEED)
    return granules


@pytest.fixture(scope="session")
def probed_model(probe_granules: ProbeGranules, tmp_path_factory: pytest.TempPathFactory) -> ProbedModel:
    """The spectral-encoder model with probes trained on ``probe_granules.train``, measured on ``.heldout``."""
    model = export_spectral(tmp_path_factory.mktemp("probed") / MODEL_NAME)
    identity = load_model(model).sha256
    metrics = train_probes(probe_granules.train, model, heldout=probe_granules.heldout, config=TEST_CONFIG,
                           progress=False)
    return ProbedModel(model, metrics, probe_granules, identity)


@pytest.fixture(scope="session")
def probe_store(probed_model: ProbedModel, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The held-out granule compressed with the probed model (radiance_error kept)."""
    granule = next(probed_model.granules.heldout.glob("TEMPO_RAD_L1_*.nc"))
    store = tmp_path_factory.mktemp("probe_store") / "granule.zarr"
    compress_granule(granule, store, model=probed_model.path, progress=False)
    return store
