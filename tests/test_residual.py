"""Tests for the residual layer (tempocodec.codec.residual, entropy, residual_fit) and the error-bounded store:
the bound holds for every valid value on random and simulated inputs, fill values stay fill, edge tiles and odd
sizes, damaged residuals are refused, and latent-only stores are unchanged."""

import dataclasses

import numpy as np
import pytest
import xarray as xr
from helpers_cli import assert_one_line_error, run_cli
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tiny_model import SMALL_CHANNELS, radiance

from tempocodec.codec import entropy, kernel, payload
from tempocodec.codec.config import RADIANCE_FILL, CodecConfig, model_config
from tempocodec.codec.residual import MARGIN, NoiseModel, ResidualSpec, make_spec
from tempocodec.codec.residual_fit import Sample, fit_noise, fit_residual
from tempocodec.errors import TempocodecError
from tempocodec.granule.l1b import read_l1b
from tempocodec.runtime.store import compress_granule, store_info
from tempocodec.simulator import write_simulated

pytest_plugins = ["tiny_model_fixture"]  # the session fixture tiny_models

UV = "band_290_490_nm"
FILL = float(RADIANCE_FILL)


def noisy_tiles(n: int, seed: int, channels: int = SMALL_CHANNELS) -> tuple[np.ndarray, np.ndarray]:
    """``n`` chunks ``(n, 64, 64, channels)`` of smooth radiance plus shot-like noise, and that noise's σ."""
    rng = np.random.default_rng(seed)
    clean = radiance((64, 64 * n, channels), seed=seed).reshape(64, n, 64, channels).swapaxes(0, 1)
    sigma = (np.sqrt(clean * 1e8) + 1e9).astype(np.float32)  # SNR ~300 at 1e13, as TEMPO's
    noisy = (clean + sigma * rng.standard_normal(clean.shape, dtype=np.float32)).astype(np.float32)
    return np.ascontiguousarray(noisy), np.ascontiguousarray(sigma)


def config_for(model: str = "tiny") -> CodecConfig:
    return CodecConfig.parse(**model_config(model, "float16", FILL))


def check_bound(original: np.ndarray, decoded: np.ndarray, sigma: np.ndarray, bound: float, valid: np.ndarray) -> None:
    """Every valid value within ``bound``·σ (exact where σ is not a positive number); every invalid value is fill."""
    usable = valid & np.isfinite(sigma) & (sigma > 0)
    assert np.all(np.abs(decoded[usable] - original[usable]) <= bound * sigma[usable])
    assert np.array_equal(decoded[valid & ~usable], original[valid & ~usable])
    assert np.all(decoded[~valid] == np.float32(FILL))


# --------------------------------------------------------------------------------------------------- entropy coder


@given(st.lists(st.integers(-2047, 2047), min_size=0, max_size=300))
def test_entropy_coder_round_trips_any_small_ints(values):
    blob = entropy.encode_ints(np.asarray(values, dtype=np.int32))
    decoded, size = entropy.decode_ints(blob + b"tail", "test")
    assert size == len(blob) and decoded.tolist() == values


def test_entropy_coder_is_near_the_entropy_and_refuses_damage():
    q = np.rint(np.random.default_rng(0).normal(0, 1, 100_000) / 2).astype(np.int32)
    counts = np.unique(q, return_counts=True)[1] / q.size
    bits = -(counts * np.log2(counts)).sum() * q.size
    blob = entropy.encode_ints(q)
    assert len(blob) * 8 < bits * 1.01 + 512
    with pytest.raises(TempocodecError, match="residual stream"):
        entropy.decode_ints(blob[:20], "test")
    with pytest.raises(TempocodecError, match="wider than"):
        entropy.encode_ints(np.array([0, entropy.MAX_SYMBOLS]))


# --------------------------------------------------------------------------------------------------- kernel


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    bound=st.floats(0.05, 30.0),
    n_pc=st.sampled_from([0, 3, 16]),
    seed=st.integers(0, 2**16),
    extent=st.tuples(st.integers(1, 64), st.integers(1, 64)),
    spikes=st.integers(0, 20),
)
def test_every_valid_value_is_within_the_bound(tiny_models, bound, n_pc, seed, extent, spikes):
    """Random noisy chunks with an edge extent, fill and NaN values, spikes, unusable σ and a noise model that
    fits badly: every valid value still decodes within K·σ of the original."""
    rng = np.random.default_rng(seed)
    tiles, sigma = noisy_tiles(2, seed)
    tiles[0, extent[0] :] = FILL
    tiles[0, :, extent[1] :] = FILL
    tiles[1, 3, 5] = np.nan
    tiles[1, 7, 9, 2] = FILL
    flat = tiles.reshape(-1)
    hit = rng.choice(np.flatnonzero(flat > 0), spikes)
    flat[hit] *= 50  # transients, far off any prediction
    sigma[1, 10:20, 10:20] *= rng.uniform(0.2, 5)  # noise the model does not follow
    sigma[1, 0, 0, 0] = 0.0
    sigma[1, 0, 1, 0] = np.nan
    config = config_for()
    noise_model = NoiseModel((1e-6, 3e-9, 0.0), float(np.median(tiles[tiles > 0])), (1.0,) * SMALL_CHANNELS)
    basis = np.linalg.qr(rng.standard_normal((SMALL_CHANNELS, SMALL_CHANNELS)))[0][:n_pc]
    spec = make_spec(bound, basis, np.full(SMALL_CHANNELS, 0.01), 2.0, noise_model)
    coded = dataclasses.replace(config, residual=spec)
    blobs = kernel.encode_tiles(tiles, [FILL, FILL], coded, noise=sigma)
    decoded = kernel.decode_tiles(blobs, [FILL, FILL], coded)
    valid = kernel.valid_radiance(tiles, [FILL, FILL], config)
    check_bound(tiles, decoded, sigma, bound, valid)


def test_without_noise_the_bound_refers_to_the_noise_model(tiny_models):
    tiles, sigma = noisy_tiles(1, 3)
    config = config_for()
    model = fit_noise(tiles.reshape(-1, SMALL_CHANNELS), sigma.reshape(-1, SMALL_CHANNELS))
    coded = dataclasses.replace(config, residual=make_spec(2.0, np.zeros((0, SMALL_CHANNELS)), np.ones(0), 1.0, model))
    decoded = kernel.decode_tiles(kernel.encode_tiles(tiles, [FILL], coded), [FILL], coded)
    reference = model.sigma(tiles[0].transpose(2, 0, 1)).transpose(1, 2, 0)
    assert np.all(np.abs(decoded[0] - tiles[0]) <= 2.0 * reference)


def test_noise_model_fits_shot_and_read_noise_and_sits_under_it():
    rng = np.random.default_rng(1)
    radiance_values = rng.uniform(1e10, 4e13, (20_000, 4)).astype(np.float32)
    sigma = np.sqrt(radiance_values / 3e-7 + 1e16 + (radiance_values / 800) ** 2).astype(np.float32)
    sigma = np.float32(1.0 + rng.uniform(-0.04, 0.04, sigma.shape)) * sigma  # 2-significant-digit rounding
    model = fit_noise(radiance_values, sigma)
    ratio = sigma.T / model.sigma(radiance_values.T)
    assert 0.995 < np.quantile(ratio, 0.5) / 1.04 < 1.01  # the envelope sits ~4 % under the median
    assert np.mean(ratio < 1) < 0.01


@pytest.mark.parametrize("bound", [1.0, 5.0])
def test_fit_chooses_a_spec_that_holds_and_beats_no_spectral_stage(tiny_models, bound):
    tiles, sigma = noisy_tiles(3, 4)
    config = config_for()
    spec = fit_residual(Sample(tiles[:2], sigma[:2], FILL), config, bound=bound)
    coded = dataclasses.replace(config, residual=spec)
    blobs = kernel.encode_tiles(tiles, [FILL] * 3, coded, noise=sigma)
    check_bound(tiles, kernel.decode_tiles(blobs, [FILL] * 3, coded), sigma, bound, np.ones(tiles.shape, bool))
    plain = dataclasses.replace(spec, n_pc=0, basis=b"", weights=())
    assert sum(map(len, blobs)) <= sum(map(len, kernel.encode_tiles(tiles, [FILL] * 3, dataclasses.replace(
        config, residual=plain), noise=sigma))) * 1.02


def test_ratio_mode_finds_a_bound_near_the_target(tiny_models):
    tiles, sigma = noisy_tiles(2, 5)
    config = config_for()
    sample = Sample(tiles, sigma, FILL)
    spec = fit_residual(sample, config, ratio=8.0)
    size = sum(map(len, kernel.encode_tiles(tiles, [FILL] * 2, dataclasses.replace(config, residual=spec), noise=sigma)))
    assert spec.bound is not None and 6.5 <= tiles.nbytes / size <= 12
    with pytest.raises(TempocodecError, match="out of reach"):
        fit_residual(sample, config, ratio=1e6)


def test_spec_round_trips_through_json_and_refuses_damage(tiny_models):
    tiles, sigma = noisy_tiles(1, 6)
    spec = fit_residual(Sample(tiles, sigma, FILL), config_for(), bound=1.0)
    assert ResidualSpec.parse(spec.to_json(), SMALL_CHANNELS) == spec
    for damage in ({"bound": -1}, {"basis": "not base64"}, {"noise": None}, {"n_pc": 99}):
        with pytest.raises(TempocodecError, match="residual configuration"):
            ResidualSpec.parse(spec.to_json() | damage, SMALL_CHANNELS)


def test_chunk_and_configuration_must_agree_on_the_residual_and_damage_is_refused(tiny_models):
    tiles, sigma = noisy_tiles(1, 7)
    config = config_for()
    coded = dataclasses.replace(config, residual=fit_residual(Sample(tiles, sigma, FILL), config, bound=1.0))
    blob = kernel.encode_tiles(tiles, [FILL], coded, noise=sigma)[0]
    with pytest.raises(TempocodecError, match="holds a residual"):
        kernel.decode_tiles([blob], [FILL], config)
    with pytest.raises(TempocodecError, match="lacks the residual"):
        kernel.decode_tiles(kernel.encode_tiles(tiles, [FILL], config), [FILL], coded)
    p = payload.unpack(blob)
    cut = payload.pack(dataclasses.replace(p, residual=p.residual[: len(p.residual) // 2]))
    with pytest.raises(TempocodecError):
        kernel.decode_tiles([cut], [FILL], coded)
    assert payload.unpack(blob).residual == p.residual and MARGIN < 1


# --------------------------------------------------------------------------------------------------- store


@pytest.fixture(scope="module")
def odd_granule(tmp_path_factory):
    """A 70×90 simulated UV granule: sides not multiples of 64, fill and flagged pixels."""
    return write_simulated(tmp_path_factory.mktemp("odd"), 70, 90, seed=11, bands="uv")[0]


@pytest.mark.parametrize("zarr_format", [3, 2])
def test_bounded_store_holds_the_bound_through_xarray(tiny_models, odd_granule, tmp_path, zarr_format):
    out = tmp_path / "bounded.zarr"
    compress_granule(odd_granule, out, model="tiny1028", error_bound=1.5, zarr_format=zarr_format, progress=False)
    original = read_l1b(odd_granule).bands[UV]
    decoded = xr.open_zarr(out, group=UV).radiance.values
    values, sigma = original.radiance.values, original.radiance_error.values
    valid = np.isfinite(values) & (values > 0) & (np.abs(values) < 1e30)
    usable = valid & np.isfinite(sigma) & (sigma > 0)
    assert np.all(np.abs(decoded[usable] - values[usable]) <= 1.5 * sigma[usable])
    assert np.isnan(decoded[~valid]).all()
    entry = store_info(out).bands[UV]
    assert entry["mode"] == "error-bound" and entry["error_bound"] == 1.5


def test_cli_ratio_mode_reports_its_bound_and_bad_requests_fail_in_one_line(tiny_models, odd_granule, tmp_path):
    out = tmp_path / "ratio.zarr"
    result = run_cli("compress", odd_granule, out, "--model", "tiny1028", "--ratio", "3", "--quiet")  # a poor model
    assert result.exit_code == 0, result.output
    entry = store_info(out).bands[UV]
    assert entry["mode"] == "ratio" and entry["error_bound"] > 0
    ratio = store_info(out).radiance(UV).ratio
    assert 2 < ratio < 6
    assert_one_line_error(run_cli("compress", odd_granule, tmp_path / "a.zarr", "--model", "tiny1028",
                                  "--error-bound", "1", "--ratio", "5"), "not both")
    assert_one_line_error(run_cli("compress", odd_granule, tmp_path / "b.zarr", "--model", "tiny1028",
                                  "--error-bound", "-1"), "--error-bound")
    assert not (tmp_path / "a.zarr").exists() and not (tmp_path / "b.zarr").exists()


# --------------------------------------------------------------------------------------------------- quantized latents


def test_quantized_latent_payload_round_trips_and_refuses_damage():
    rng = np.random.default_rng(2)
    latent = (rng.standard_normal((4, 3, 5)) * np.array([10, 1, 0.1, 0.01])[:, None, None]).astype(np.float32)
    step = 0.05
    p = payload.Payload(latent, None, (12, 20), (12, 20), 16, 4, (1, 2), b"", step)
    blob = payload.pack(p)
    q = payload.unpack(blob)
    assert q.latent.dtype == np.float32 and np.abs(q.latent - latent).max() <= step / 2 * 1.0001
    assert np.allclose(q.latent / np.float32(step), np.rint(q.latent / np.float32(step)), atol=1e-3)
    assert payload.unpack(payload.with_position(blob, (3, 4))).position == (3, 4)
    with pytest.raises(TempocodecError):
        payload.unpack(blob[:-3])


def test_quantized_latents_need_a_step_and_decode_to_their_multiples(tiny_models):
    with pytest.raises(TempocodecError, match="latent_step"):
        CodecConfig.parse(**model_config("tiny", "quantized", FILL))
    with pytest.raises(TempocodecError, match="only for 'quantized'"):
        CodecConfig.parse(**model_config("tiny", "float16", FILL, latent_step=0.1))
    tiles, _ = noisy_tiles(1, 8)
    coarse = CodecConfig.parse(**model_config("tiny", "quantized", FILL, latent_step=0.5))
    fine = CodecConfig.parse(**model_config("tiny", "quantized", FILL, latent_step=0.001))
    sizes = [len(kernel.encode_tiles(tiles, [FILL], c)[0]) for c in (coarse, fine)]
    assert sizes[0] < sizes[1]
    latent = payload.unpack(kernel.encode_tiles(tiles, [FILL], coarse)[0]).latent
    assert np.allclose(latent / 0.5, np.rint(latent / 0.5), atol=1e-4)


def test_default_store_quantizes_latents_at_a_step_set_from_the_granule(tiny_models, odd_granule, tmp_path):
    out = tmp_path / "default.zarr"
    compress_granule(odd_granule, out, model="tiny1028", progress=False)
    entry = store_info(out).bands[UV]
    assert entry["latent_dtype"] == "quantized" and entry["latent_step"] > 0 and "error_bound" not in entry
    plain = tmp_path / "float16.zarr"
    compress_granule(odd_granule, plain, model="tiny1028", latent_dtype="float16", progress=False)
    assert store_info(out).radiance(UV).stored_bytes < store_info(plain).radiance(UV).stored_bytes
    a, b = (xr.open_zarr(p, group=UV).radiance.values for p in (out, plain))
    original = read_l1b(odd_granule).bands[UV].radiance.values
    valid = np.isfinite(b)
    err_q, err_f = (np.sqrt(np.nanmean(((x - original)[valid] / original[valid]) ** 2)) for x in (a, b))
    assert err_q < 1.05 * err_f


def test_ratio_beyond_the_latent_coarsens_the_latents_without_a_bound(tiny_models, odd_granule, tmp_path):
    out = tmp_path / "high.zarr"
    latent_only = tmp_path / "latent.zarr"
    compress_granule(odd_granule, latent_only, model="tiny1028", progress=False)
    base = store_info(latent_only).radiance(UV).ratio
    compress_granule(odd_granule, out, model="tiny1028", ratio=2 * base, progress=False)
    entry = store_info(out).bands[UV]
    assert entry["mode"] == "ratio" and "error_bound" not in entry
    assert entry["latent_step"] > store_info(latent_only).bands[UV]["latent_step"]
    assert store_info(out).radiance(UV).ratio > 1.5 * base


def test_evaluate_checks_the_bound_on_the_original_and_info_names_the_mode(tiny_models, odd_granule, tmp_path):
    from tempocodec.evaluation.run import evaluate_store
    from tempocodec.evaluation.summary import bound_line

    out = tmp_path / "checked.zarr"
    compress_granule(odd_granule, out, model="tiny1028", error_bound=2.0, progress=False)
    evaluation = evaluate_store(odd_granule, out, band=UV, progress=False)
    assert evaluation.bound is not None and evaluation.bound.bound == 2.0
    assert evaluation.bound.violations == 0 and 0 < evaluation.bound.worst <= 2.0
    assert "holds for every value" in bound_line(evaluation)
    evaluation.bound.add(np.array([1e13], np.float32), np.array([1.1e13], np.float32), np.array([1e9], np.float32))
    assert evaluation.bound.violations == 1 and "violated by 1 values" in bound_line(evaluation)
    result = run_cli("info", out)
    assert result.exit_code == 0 and "within 2 × its radiance_error" in result.output
