"""radiance_error coded from the decoded radiance (tempocodec.codec.noise): the decimal grid, exact round trips
whatever the values and the prediction, decoders whose radiance differs in its last bits, damaged chunks."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tempocodec.codec import noise
from tempocodec.codec.residual import noise_model
from tempocodec.errors import TempocodecError
from tempocodec.simulator.radiance import round_significant

C = 40  # more than one block of channels (noise.BLOCK)


def coding(digits: int = 2) -> noise.NoiseCoding:
    return noise.NoiseCoding(noise_model((0.2, 1.0, 0.05), 1e12, np.full(C, 1.0)), digits)


def scene(seed: int, digits: int = 2, shape: tuple[int, int] = (5, 7)) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Decoded radiance ``(C, rows, cols)``, its elements held, and a radiance_error near the model on the grid."""
    rng = np.random.default_rng(seed)
    radiance = (1e12 * 10 ** rng.uniform(-1.5, 1.5, (C, *shape))).astype(np.float32)
    predicted = rng.random((C, *shape)) > 0.1
    truth = coding(digits).model.sigma(radiance) * (1 + 0.003 * rng.standard_normal(radiance.shape)).astype(np.float32)
    return radiance, predicted, round_significant(truth.astype(np.float64), digits).astype(np.float32)


def round_trip(sigma, radiance, predicted, digits=2, decoder_radiance=None):
    c = coding(digits)
    body = noise.encode(sigma, radiance, predicted, c)
    back = noise.decode(memoryview(body), radiance if decoder_radiance is None else decoder_radiance, predicted, c, "t")
    return back, body


@pytest.mark.parametrize("digits", [1, 2, 3])
def test_the_grid_finds_the_nearest_value_as_a_brute_force_search(digits):
    grid = noise.decimal_grid(digits)
    rng = np.random.default_rng(digits)
    p = (10.0 ** rng.uniform(-30, 30, 20000)).astype(np.float32)
    p = np.concatenate([p, grid.values[::97], np.nextafter(grid.upper[::89], np.float32(np.inf)), grid.upper[::89]])
    j = grid.nearest(p)
    near = np.searchsorted(grid.values.astype(np.float64), p.astype(np.float64))
    lo, hi = np.clip(near - 1, 0, grid.values.size - 1), np.clip(near, 0, grid.values.size - 1)
    dist = np.abs(grid.values[j].astype(np.float64) - p)
    best = np.minimum(np.abs(grid.values[lo].astype(np.float64) - p), np.abs(grid.values[hi].astype(np.float64) - p))
    np.testing.assert_array_equal(dist, best)
    assert (grid.index_of(grid.values) == np.arange(grid.values.size)).all()
    assert (grid.index_of(np.nextafter(grid.values[1:-1], np.float32(np.inf))) == -1).all()


@pytest.mark.parametrize("digits", [1, 2, 3])
def test_values_on_the_grid_near_the_model_round_trip_exactly_and_cheaply(digits):
    radiance, _, sigma = scene(1, digits, (32, 32))
    back, body = round_trip(sigma, radiance, np.ones(radiance.shape, dtype=bool), digits)
    np.testing.assert_array_equal(back.view(np.uint32), sigma.view(np.uint32))
    if digits == 2:
        assert len(body) < 0.25 * sigma.nbytes / 4  # under 0.25 byte a value: the prediction does the work


finite = st.floats(min_value=float(np.float32(-3e38)), max_value=float(np.float32(3e38)), allow_nan=False, width=32)
special = st.sampled_from([np.nan, np.inf, -np.inf, 0.0, -0.0, 9.96921e36, -9.96921e36, 1e-40, 1e-45, 3.4e38])


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**31), digits=st.integers(1, 3), values=st.lists(st.one_of(finite, special), max_size=40),
       scale=st.floats(1e-3, 1e3))
def test_any_values_round_trip_bit_for_bit(seed, digits, values, scale):
    """Off the grid, fills, NaN, infinities, zeros, negatives, subnormals, a prediction off by any factor: exact."""
    radiance, predicted, sigma = scene(seed, digits)
    sigma = (sigma * np.float32(scale)).astype(np.float32)
    rng = np.random.default_rng(seed)
    where = rng.choice(sigma.size, size=len(values), replace=False)
    sigma.flat[where] = np.asarray(values, dtype=np.float32)
    radiance.flat[rng.choice(radiance.size, size=5, replace=False)] = np.float32(-9.96921e36)
    back, _ = round_trip(sigma, radiance, predicted, digits)
    np.testing.assert_array_equal(back.view(np.uint32), sigma.view(np.uint32))


def test_a_decoder_whose_radiance_differs_in_its_last_bits_still_decodes_exactly():
    """Another CPU's decoder output: every value moved by up to 2e-6 relative (10× float32's last bit)."""
    radiance, predicted, sigma = scene(7, 2, (40, 40))
    rng = np.random.default_rng(8)
    moved = (radiance * (1 + rng.uniform(-2e-6, 2e-6, radiance.shape))).astype(np.float32)
    back, _ = round_trip(sigma, radiance, predicted, 2, decoder_radiance=moved)
    np.testing.assert_array_equal(back.view(np.uint32), sigma.view(np.uint32))


def test_damaged_bodies_are_refused_in_one_line():
    radiance, predicted, sigma = scene(9)
    body = noise.encode(sigma, radiance, predicted, coding())
    for bad in (body[:3], body[:-5], body[:8] + b"\xff" * 16):
        with pytest.raises(TempocodecError) as err:
            noise.decode(memoryview(bad), radiance, predicted, coding(), "chunk")
        assert "\n" not in str(err.value) and str(err.value).startswith("chunk")


def test_the_configuration_round_trips_and_checks_digits():
    c = coding(3)
    again = noise.NoiseCoding.parse(c.to_json()["noise"], c.to_json()["digits"], C)
    assert again == c
    for digits in (0, 4, "2", True):
        with pytest.raises(TempocodecError, match="digits"):
            noise.NoiseCoding.parse(c.to_json()["noise"], digits, C)


def test_grid_fraction_tells_a_rounded_product_from_raw_floats():
    _, _, sigma = scene(3)
    assert noise.grid_fraction(sigma, 2) == 1.0
    assert noise.grid_fraction(sigma * np.float32(1.0001234), 2) < 0.1
