"""Exporters of the test models (torch): the tiny random-init VAEs and the spectral-encoder model with trained probes.

``tests/fixture/make_fixtures.py`` ran them once to make the committed fixture models; the torch tests (probe
training) run them again. Torch-free tests read the committed models (``tiny_model``, ``probe_fixture``).

Why a spectral encoder for the probes: a random-init VAE's GroupNorm layers standardize every tile, so its latents
lose the tile-level brightness and spectral shape that a trained encoder keeps, and no probe can generalize from them
across granules. The stand-in encoder keeps them: latent channel k of a cell is the 4×4 block mean of the k-th cosine
(DCT-II) coefficient of the normalized spectrum, a fixed linear map like a PCA codec's. The decoder is a tiny
random-init one (the probes never use it).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from tiny_model import tiny_stats
from torch import nn

from tempocodec.training.export import export_model
from tempocodec.training.probe_training import ProbeConfig, train_probes
from tempocodec.training.vae import VAE, VAEConfig

PROBE_CONFIG = ProbeConfig(hidden=64, epochs=20, patience=5, batch_size=32)
"""Probe training small enough for tests (small MLP, few epochs)."""
SPECTRAL_NAME = "spectral1028"


def export_tiny(out_dir: Path, name: str, n_channels: int, latent_channels: int, seed: int) -> Path:
    """Export a random-init VAE (widths 8, 8, 8; no attention) with :func:`tiny_model.tiny_stats`."""
    torch.manual_seed(seed)
    config = VAEConfig(n_channels=n_channels, latent_channels=latent_channels, widths=(8, 8, 8),
                       res_blocks=(0, 0, 1), attention=False)
    model = VAE(config).eval()
    mu, sigma = tiny_stats(n_channels)
    return export_model(model, mu, sigma, out_dir, name=name, band="band_290_490_nm")


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


def export_spectral(out_dir: Path, seed: int = 0) -> Path:
    """A 1028-channel, 32-latent model directory with :class:`SpectralEncoder` (stats as the tiny models')."""
    torch.manual_seed(seed)
    model = VAE(VAEConfig(n_channels=1028, latent_channels=32, widths=(8, 8, 8), res_blocks=(0, 0, 0),
                          attention=False)).eval()
    model.encoder = SpectralEncoder(1028, 32)
    mu, sigma = tiny_stats(1028)
    return export_model(model, mu, sigma, out_dir, name=SPECTRAL_NAME, band="band_290_490_nm")


def train_spectral(out_dir: Path, train: Path, heldout: Path) -> tuple[Path, list[dict]]:
    """Export the spectral model to ``out_dir`` and train its probes on the granules of ``train``, measured on
    ``heldout``; returns the model directory and the held-out table."""
    model = export_spectral(out_dir)
    return model, train_probes(train, model, heldout=heldout, config=PROBE_CONFIG, progress=False)
