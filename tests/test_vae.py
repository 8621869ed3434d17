"""Tests for tempocodec.training.vae: shapes, config checks, loss terms and the spectral-basis initialisation."""

import pytest

# Skip this module, with this reason, where torch is not installed (before the imports below need it).
pytest.importorskip("torch", reason="needs torch: pip install -e '.[train]'")

import torch

from tempocodec.errors import TempocodecError
from tempocodec.training.vae import VAE, VAEConfig

pytestmark = pytest.mark.torch

TINY = VAEConfig(n_channels=12, latent_channels=4, widths=(8, 8, 16), res_blocks=(1, 0, 1))


def test_shapes_follow_downsample_for_any_size():
    model = VAE(TINY).eval()
    x = torch.randn(2, 12, 32, 48)
    mean, logvar = model.encode(x)
    assert mean.shape == logvar.shape == (2, 4, 8, 12)
    assert model.decode(mean).shape == (2, 12, 32, 48)


def test_forward_samples_only_in_training():
    torch.manual_seed(0)
    model = VAE(TINY)
    x = torch.randn(1, 12, 16, 16)
    model.eval()
    first, second = model(x)[0], model(x)[0]
    assert torch.equal(first, second)
    model.train()
    assert not torch.equal(model(x)[0], model(x)[0])


def test_config_round_trip_and_validation():
    assert VAEConfig.from_dict(TINY.to_dict()) == TINY
    with pytest.raises(TempocodecError, match="downsample"):
        VAEConfig(widths=(8, 8))
    with pytest.raises(TempocodecError, match="res_blocks"):
        VAEConfig(widths=(8, 8, 8), res_blocks=(1, 1))
    with pytest.raises(TempocodecError, match="unknown keys"):
        VAEConfig.from_dict({"width": 3})


def test_loss_ignores_masked_pixels():
    torch.manual_seed(0)
    model = VAE(TINY).eval()
    x = torch.randn(2, 12, 16, 16)
    mask = torch.ones(2, 16, 16, dtype=torch.bool)
    mask[:, :, 8:] = False
    with torch.no_grad():
        recon, _, _ = model(x)
        terms = model.loss(x, mask)
        expected = (recon - x).abs()[..., :8].mean()
    assert torch.allclose(terms["l1"], expected, rtol=1e-5)
    assert terms["kl"] > 0
    assert torch.isfinite(terms["loss"])


def test_spectral_basis_initialisation_projects_and_restores():
    model = VAE(TINY)
    basis = torch.linalg.qr(torch.randn(12, 8))[0].T  # (8, 12), orthonormal rows
    model.init_spectral_basis(basis)
    spectrum = basis[3] * 2.0
    projected = model.encoder.stem(spectrum[None, :, None, None])
    assert torch.allclose(projected.flatten(), torch.eye(8)[3] * 2.0, atol=1e-5)
    with pytest.raises(TempocodecError, match="spectral basis"):
        model.init_spectral_basis(torch.zeros(3, 12))
