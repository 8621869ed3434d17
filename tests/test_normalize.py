"""Tests for tempocodec.prepare.normalize: streaming statistics and the forward / inverse transform."""

import numpy as np
import pytest

from tempocodec.errors import TempocodecError
from tempocodec.prepare.normalize import LogStats, denormalize, is_valid, normalize

FILL = np.float32(-9.96921e36)


def _radiance(rng, shape, channels=6):
    """Radiance with per-channel levels around 1e12, sprinkled with fill, NaN, inf and values below 1."""
    levels = np.logspace(11, 13, channels)
    data = (levels * rng.lognormal(0.0, 0.3, size=(*shape, channels))).astype(np.float32)
    flat = data.reshape(-1)
    spots = rng.choice(flat.size, size=flat.size // 20, replace=False)
    flat[spots[0::4]] = FILL
    flat[spots[1::4]] = np.nan
    flat[spots[2::4]] = np.inf
    flat[spots[3::4]] = 0.25
    return data


def _one_shot(blocks):
    """Reference mean and population std of log(max(L, 1)) per channel over valid values, in float64."""
    rows = np.concatenate([b.reshape(-1, b.shape[-1]) for b in blocks]).astype(np.float64)
    valid = np.isfinite(rows) & (np.abs(rows) < 1e30)
    logs = np.where(valid, np.log(np.maximum(np.where(valid, rows, 1.0), 1.0)), np.nan)
    return np.nanmean(logs, axis=0), np.nanstd(logs, axis=0)


def test_is_valid_rule():
    values = np.array([1.0, -3.0, np.nan, np.inf, -np.inf, FILL, 1e30, -1e30, 2e30, 9.9e29], np.float32)
    assert is_valid(values).tolist() == [True, True, False, False, False, False, False, False, False, True]


def test_streaming_equals_one_shot_for_any_split():
    rng = np.random.default_rng(1)
    blocks = [_radiance(rng, shape) for shape in [(7, 5), (1, 1), (30, 20), (3,)]]
    mu_ref, sigma_ref = _one_shot(blocks)
    stats = LogStats(6)
    for block in blocks:
        stats.update(block)
    mu, sigma = stats.result()
    assert mu.dtype == sigma.dtype == np.float32 and mu.shape == (6,)
    np.testing.assert_allclose(mu, mu_ref, rtol=1e-6)
    np.testing.assert_allclose(sigma, sigma_ref, rtol=1e-4)
    merged = LogStats(6).update(blocks[2]).merge(LogStats(6).update(blocks[0]).update(blocks[1]).update(blocks[3]))
    np.testing.assert_allclose(merged.result()[0], mu_ref, rtol=1e-6)
    np.testing.assert_allclose(merged.result()[1], sigma_ref, rtol=1e-4)


def test_statistics_refuse_bad_input():
    with pytest.raises(TempocodecError, match="channels"):
        LogStats(6).update(np.ones((4, 5), np.float32))
    with pytest.raises(TempocodecError, match="no valid radiance"):
        LogStats(2).update(np.array([[1e12, FILL]], np.float32)).result()


def test_normalize_round_trip_and_conventions():
    rng = np.random.default_rng(2)
    radiance = _radiance(rng, (4, 5))
    mu, sigma = LogStats(6).update(radiance).result()
    x = normalize(radiance, mu, sigma)
    assert x.dtype == np.float32 and x.shape == radiance.shape
    valid = is_valid(radiance)
    assert np.all(x[~valid] == 0.0)
    assert np.abs(x).max() <= 10.0
    restored = denormalize(x, mu, sigma)
    ordinary = valid & (radiance >= 1)
    np.testing.assert_allclose(restored[ordinary], radiance[ordinary], rtol=2e-5)
    expected = np.clip((np.log(np.maximum(radiance.astype(np.float64), 1.0)) - mu) / sigma, -10, 10)
    np.testing.assert_allclose(x[valid], expected[valid], atol=1e-4)


def test_channel_axis_and_clipping():
    mu = np.array([0.0, 10.0], np.float32)
    sigma = np.array([1.0, 0.5], np.float32)
    channels_first = np.array([[[np.e**3]], [[1e-3]]], np.float32)  # (C=2, 1, 1)
    x = normalize(channels_first, mu, sigma, axis=0)
    assert x[0, 0, 0] == pytest.approx(3.0, abs=1e-5)
    assert x[1, 0, 0] == -10.0  # (log(1) - 10) / 0.5 = -20, clipped
    np.testing.assert_allclose(denormalize(x, mu, sigma, axis=0)[0, 0, 0], np.e**3, rtol=1e-5)
    with pytest.raises(TempocodecError, match="does not match"):
        normalize(channels_first, mu, sigma)


def test_out_may_be_a_transposed_view():
    rng = np.random.default_rng(3)
    radiance = _radiance(rng, (4, 5))
    mu, sigma = LogStats(6).update(radiance).result()
    channels_first = np.empty((6, 4, 5), np.float32)
    result = normalize(radiance, mu, sigma, out=channels_first.transpose(1, 2, 0))
    np.testing.assert_array_equal(channels_first.transpose(1, 2, 0), normalize(radiance, mu, sigma))
    assert result.base is channels_first
    back = np.empty((4, 5, 6), np.float32)
    denormalize(channels_first, mu, sigma, axis=0, out=back.transpose(2, 0, 1))
    np.testing.assert_array_equal(back, denormalize(normalize(radiance, mu, sigma), mu, sigma))
    with pytest.raises(TempocodecError, match="out array"):
        normalize(radiance, mu, sigma, out=np.empty((4, 5, 6), np.float64))
