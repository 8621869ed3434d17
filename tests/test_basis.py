"""Tests for tempocodec.prepare.basis: log-radiance moments, the principal basis and its project/expand maps."""

import numpy as np
import pytest

from tempocodec.errors import TempocodecError
from tempocodec.prepare.basis import LogMoments
from tempocodec.prepare.normalize import RADIANCE_FILL, normalize


def _spectra(n: int, channels: int, rank: int, seed: int = 0) -> np.ndarray:
    """Radiance whose log is a mean spectrum plus ``rank`` random directions (exactly rank-limited)."""
    rng = np.random.default_rng(seed)
    mean = 28.0 + np.linspace(0.0, 2.0, channels)
    directions = np.linalg.qr(rng.normal(size=(channels, rank)))[0].T
    amplitudes = rng.normal(size=(n, rank)) * np.linspace(1.0, 0.1, rank)
    return np.exp(mean + amplitudes @ directions).astype(np.float32)


def test_moments_give_the_normalization_of_log_radiance():
    radiance = _spectra(500, 12, 3)
    mu, sigma = LogMoments(12).update(radiance).mean_std()
    logs = np.log(radiance.astype(np.float64))
    np.testing.assert_allclose(mu, logs.mean(0), rtol=1e-6)
    np.testing.assert_allclose(sigma, logs.std(0), rtol=1e-4)


def test_basis_spans_a_rank_limited_set_and_maps_round_trip():
    radiance = _spectra(800, 20, 4)
    moments = LogMoments(20).update(radiance[:400]).merge(LogMoments(20).update(radiance[400:]))
    mu, sigma = moments.mean_std()
    basis = moments.basis(4)
    assert basis.explained.sum() == pytest.approx(1.0, abs=1e-6)
    np.testing.assert_allclose(basis.components @ basis.components.T, np.eye(4), atol=1e-5)
    x = normalize(radiance, mu, sigma)
    p = x @ basis.project.T
    np.testing.assert_allclose(p.std(0), 1.0, rtol=0.05)  # whitened
    np.testing.assert_allclose(p @ basis.expand.T, x, atol=2e-4)  # the set lies in the span


def test_invalid_spectra_are_left_out():
    radiance = _spectra(50, 8, 2)
    spoiled = radiance.copy()
    spoiled[::2, 3] = RADIANCE_FILL
    spoiled[1, 0] = -5.0
    moments = LogMoments(8).update(spoiled)
    assert moments.count == 24
    np.testing.assert_allclose(moments.mean_std()[0], np.log(radiance[3::2].astype(np.float64)).mean(0), rtol=1e-6)


def test_bad_requests_are_one_line_errors():
    with pytest.raises(TempocodecError, match="spectra must be"):
        LogMoments(8).update(np.ones((3, 7), np.float32))
    with pytest.raises(TempocodecError, match="components"):
        LogMoments(8).update(_spectra(10, 8, 2)).basis(9)
