"""Fitting a granule's residual layer (:mod:`tempocodec.codec.residual`) on a sample of its chunks, and choosing it.

Compress calls :func:`fit_residual` once per band, before any chunk is written, on a few chunks spread over the
granule (:func:`sample_starts`): the noise model from their radiance and ``radiance_error``, the spectral basis from
what the latent misses there, then the spectral-stage setting (:data:`CANDIDATES`) that makes those chunks
smallest at the requested bound. With a target ratio instead of a bound, the bound is bisected on the same chunks.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from tempocodec.codec import kernel, payload
from tempocodec.codec.config import CodecConfig
from tempocodec.codec.residual import NoiseModel, ResidualSpec, make_spec, noise_model
from tempocodec.errors import TempocodecError
from tempocodec.prepare.normalize import normalize

CANDIDATES: tuple[tuple[int, float], ...] = ((0, 1.0), (8, 4.0), (16, 4.0), (16, 2.0))
"""Spectral-stage settings tried, ``(n_pc, pc_step)`` (step in units of the whitened noise): more components pay
off at tight bounds, none at loose ones (measured on training-distribution granules, see docs/benchmarks.md)."""
N_PC_FIT = max(n for n, _ in CANDIDATES)
ENVELOPE_QUANTILE = 0.002
"""Share of values whose noise may fall below the noise model (they become exceptions); lower costs bits on all."""
MIN_SAMPLES = 200
BOUND_RANGE = (0.05, 200.0)
"""Bounds (units of σ) a target ratio is searched between."""
_MAX_FIT_VALUES = 400_000


@dataclass(frozen=True)
class Sample:
    """Chunks of a granule to fit on: radiance and its ``radiance_error``, float32 ``(N, rows, cols, C)``; ``fill``:
    the value that marks invalid radiance; ``granule_bytes``: bytes of the granule's radiance the chunks cover (edge
    chunks are padded beyond it; None: all of them)."""

    radiance: np.ndarray
    noise: np.ndarray
    fill: float
    granule_bytes: int | None = None

    @property
    def raw_bytes(self) -> int:
        """Bytes of granule radiance the sample stands for (what a ratio is measured on)."""
        return self.radiance.nbytes if self.granule_bytes is None else self.granule_bytes

    @property
    def fills(self) -> list[float]:
        """The fill of each chunk (for :func:`tempocodec.codec.kernel.encode_tiles`)."""
        return [self.fill] * len(self.radiance)


def sample_starts(n: int, tile: int, count: int = 2) -> list[int]:
    """Starts (pixels along one axis of ``n``) of up to ``count`` chunks of ``tile`` spread evenly from the first
    chunk to the last: the stripes (mirror steps) or chunk columns (cross-track) compress fits on."""
    stripes = max(1, -(-n // tile))
    picks = sorted({round(k * (stripes - 1) / max(1, count - 1)) if count > 1 else 0 for k in range(count)})
    return [p * tile for p in picks[: max(1, min(count, stripes))]]


def _usable(sample: Sample, config: CodecConfig) -> np.ndarray:
    """Bool ``(N, rows, cols, C)``: valid radiance with a positive finite noise."""
    valid = kernel.in_range(sample.radiance, config) & (sample.radiance != np.float32(sample.fill))
    with np.errstate(invalid="ignore"):
        return valid & np.isfinite(sample.noise) & (sample.noise > 0)


def fit_noise(radiance: np.ndarray, noise: np.ndarray, quantile: float = ENVELOPE_QUANTILE) -> NoiseModel:
    """The noise model of valid values ``radiance`` and their 1-σ ``noise``, both ``(M, C)`` with NaN where unusable.

    A relative least-squares fit of ``σ² = a + b·u + c·u²`` (``u = L / median L``), then each channel's envelope: the
    ``quantile`` of σ over the fit (the whole sample's where a channel has too few values). The default, just under
    the observed noise, suits the residual layer's grid; 0.5 predicts ``radiance_error`` (:mod:`tempocodec.codec.noise`).
    """
    ok = np.isfinite(radiance) & np.isfinite(noise)
    if ok.sum() < MIN_SAMPLES:
        raise TempocodecError("residual layer: too few valid values with a radiance_error to fit the noise model")
    rng = np.random.default_rng(0)
    flat = np.flatnonzero(ok)
    pick = flat if flat.size <= _MAX_FIT_VALUES else rng.choice(flat, _MAX_FIT_VALUES, replace=False)
    lv, sv = radiance.ravel()[pick].astype(np.float64), noise.ravel()[pick].astype(np.float64)
    scale = float(np.median(lv))
    u, y = lv / scale, (sv / scale) ** 2
    design = np.stack([np.ones_like(u), u, u * u], axis=1) / y[:, None]
    coef = np.linalg.lstsq(design, np.ones_like(u), rcond=None)[0]
    raw_model = NoiseModel((float(coef[0]), float(coef[1]), float(coef[2])), scale, (1.0,) * radiance.shape[1])
    with np.errstate(invalid="ignore"):
        ratio = noise / raw_model.sigma(np.where(ok, radiance, np.float32(scale)).T.astype(np.float32)).T
    ratio[~ok] = np.nan
    overall = float(np.nanquantile(ratio, quantile))
    counts = ok.sum(axis=0)
    per_channel = np.full(radiance.shape[1], overall)
    enough = counts >= MIN_SAMPLES
    if enough.any():
        per_channel[enough] = np.nanquantile(ratio[:, enough], quantile, axis=0)
    envelope = np.clip(per_channel, 1e-3, None)
    return noise_model(raw_model.coef, raw_model.scale, envelope)


def fit_basis(x: np.ndarray, xhat: np.ndarray, weights: np.ndarray, n_pc: int) -> np.ndarray:
    """The ``n_pc`` leading principal directions float32 ``(n_pc, C)`` of the whitened residual ``(x − xhat) / weights``
    (``x``, ``xhat`` ``(M, C)`` normalized log radiance, NaN where unusable)."""
    import scipy.linalg  # here: info imports this module (store) and fits nothing

    d = np.nan_to_num((x - xhat) / weights, nan=0.0).astype(np.float64)
    c = d.shape[1]
    _, vectors = scipy.linalg.eigh(d.T @ d, subset_by_index=[c - n_pc, c - 1])
    return vectors[:, ::-1].T.astype(np.float32)


def _channel_rows(tiles: np.ndarray) -> np.ndarray:
    """``(N, rows, cols, C)`` as ``(N·rows·cols, C)``."""
    return tiles.reshape(-1, tiles.shape[-1])


def _fit_parts(sample: Sample, config: CodecConfig) -> tuple[NoiseModel, np.ndarray, np.ndarray]:
    """Noise model, whitening weights ``(C,)`` and basis ``(N_PC_FIT, C)`` of ``sample`` under latent-only ``config``."""
    art = config.artifacts()
    usable = _usable(sample, config)
    radiance = np.where(usable, sample.radiance, np.nan)
    noise = np.where(usable, sample.noise, np.nan)
    model = fit_noise(_channel_rows(radiance), _channel_rows(noise))
    latent_only = dataclasses.replace(config, residual=None)
    decoded = kernel.decode_tiles(kernel.encode_tiles(sample.radiance, sample.fills, latent_only), sample.fills, latent_only)
    x = normalize(np.where(usable, sample.radiance, 1.0), art.mu, art.sigma, axis=-1)
    xhat = normalize(np.where(usable, decoded, 1.0), art.mu, art.sigma, axis=-1)
    x[~usable] = np.nan
    with np.errstate(invalid="ignore", divide="ignore"):
        relative = noise / (radiance * art.sigma)  # the noise of x per value
    weights = np.nanmedian(_channel_rows(relative), axis=0)
    weights = np.where(np.isfinite(weights), weights, np.nanmedian(relative)).astype(np.float32)
    basis = fit_basis(_channel_rows(x), _channel_rows(xhat), weights, min(N_PC_FIT, config.n_channels))
    return model, weights, basis


def _size(sample: Sample, config: CodecConfig, spec: ResidualSpec) -> int:
    """Bytes of ``sample``'s payloads under ``spec``."""
    coded = dataclasses.replace(config, residual=spec)
    return sum(len(b) for b in kernel.encode_tiles(sample.radiance, sample.fills, coded, noise=sample.noise))


def _best(sample: Sample, config: CodecConfig, bound: float, parts: tuple[NoiseModel, np.ndarray, np.ndarray],
          candidates: Sequence[tuple[int, float]]) -> tuple[ResidualSpec, int]:
    """The candidate spec at ``bound`` that makes ``sample`` smallest, and that size in bytes."""
    model, weights, basis = parts
    specs = [make_spec(bound, basis[:n], weights, step, model) for n, step in candidates]
    sizes = [_size(sample, config, spec) for spec in specs]
    best = int(np.argmin(sizes))
    return specs[best], sizes[best]


def latent_step(sample: Sample, config: CodecConfig, relative: float) -> float:
    """The quantization step of ``sample``'s latents under ``config``: ``relative`` times the RMS over latent
    channels of their standard deviation over the sample's chunks (so the step follows the model's latent scale),
    rounded to 2 significant digits."""
    float_config = dataclasses.replace(config, latent_dtype="float32", latent_step=None, residual=None)
    latents = [payload.unpack(b).latent for b in kernel.encode_tiles(sample.radiance, sample.fills, float_config)]
    cells = np.concatenate([lat.reshape(lat.shape[0], -1) for lat in latents], axis=1)
    if cells.shape[1] < 2:
        raise TempocodecError("quantized latents: the sample has no valid pixel to set the quantization step from")
    step = relative * float(np.sqrt(np.mean(cells.var(axis=1))))
    return float(np.float32(float(f"{step:.2g}")))  # 2 significant digits: last-bit differences of the encoder between
    # machines or thread counts must not change the step, hence every stored latent


def latent_only_ratio(sample: Sample, config: CodecConfig) -> float:
    """The ratio of ``sample``'s payloads under ``config`` without a residual layer."""
    plain = dataclasses.replace(config, residual=None)
    return sample.raw_bytes / sum(len(b) for b in kernel.encode_tiles(sample.radiance, sample.fills, plain))


def step_for_ratio(sample: Sample, config: CodecConfig, ratio: float) -> float:
    """The smallest latent quantization step (to ~5 %) at which ``sample``'s latent-only payloads reach ``ratio``
    under the quantized-latent ``config``: for targets beyond what the latent gives at the default step."""
    lo, hi = config.latent_step or 1e-3, 100 * (config.latent_step or 1e-3)
    at = lambda step: latent_only_ratio(sample, dataclasses.replace(config, latent_step=float(np.float32(step))))  # noqa: E731
    if at(hi) < ratio:
        raise TempocodecError(f"--ratio {ratio:g}: out of reach (the coarsest latents give about {at(hi):.0f}× on this "
                              "granule)")
    while hi / lo > 1.05:
        mid = float(np.sqrt(lo * hi))
        lo, hi = (lo, mid) if at(mid) >= ratio else (mid, hi)
    return float(np.float32(hi))


def fit_residual(sample: Sample, config: CodecConfig, *, bound: float | None = None,
                 ratio: float | None = None) -> ResidualSpec:
    """The residual layer for a granule of which ``sample`` is a part, at error ``bound`` (K, units of σ) or at
    about the compression ``ratio`` (then the smallest bound whose sample payloads reach it)."""
    if (bound is None) == (ratio is None):
        raise TempocodecError("residual layer: give either an error bound or a target ratio")
    parts = _fit_parts(sample, config)
    if bound is not None:
        return _best(sample, config, bound, parts, CANDIDATES)[0]
    assert ratio is not None
    return _bisect_bound(sample, config, ratio, parts)


def _bisect_bound(sample: Sample, config: CodecConfig, ratio: float,
                  parts: tuple[NoiseModel, np.ndarray, np.ndarray]) -> ResidualSpec:
    """The spec with the smallest bound (to ~5 %) whose sample payloads are at most ``raw / ratio`` bytes."""
    budget = sample.raw_bytes / ratio
    lo, hi = BOUND_RANGE
    probe = CANDIDATES[1:2]  # one setting while searching; the best at the found bound at the end
    spec, size = _best(sample, config, hi, parts, probe)
    if size > budget:
        latent_only = dataclasses.replace(config, residual=None)
        latent = sum(len(b) for b in kernel.encode_tiles(sample.radiance, sample.fills, latent_only))
        raise TempocodecError(f"--ratio {ratio:g}: out of reach with a bound (at most about "
                              f"{sample.raw_bytes / size:.0f}× on this granule; the latent alone gives "
                              f"{sample.raw_bytes / latent:.0f}× without a bound)")
    while hi / lo > 1.05:
        mid = float(np.sqrt(lo * hi))
        if _best(sample, config, mid, parts, probe)[1] <= budget:
            hi = mid
        else:
            lo = mid
    return _best(sample, config, hi, parts, CANDIDATES)[0]
