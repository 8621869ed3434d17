"""The residual layer: what a chunk's latent misses, coded to a requested bound (layout in docs/format.md).

The latent alone reconstructs radiance ``P0`` (float32 ``(C, h, w)`` over a chunk's valid extent) some 2× the
instrument noise away from the original. Two optional stages follow, configured per array by :class:`ResidualSpec`:

1. **Spectral stage** (``n_pc > 0``): the whitened log residual ``d = (x − x̂0) / w`` (``x`` the normalized log
   radiance, ``x̂0`` the decoder's output, ``w`` ``(C,)`` the typical noise of ``x`` per channel) is projected on
   ``n_pc`` basis spectra ``B`` ``(n_pc, C)`` fitted per granule; the coefficients are rounded to multiples of
   ``pc_step`` and stored, and ``P1 = exp((x̂0 + w·Bᵀâ)·σₙ + μ)``. This removes most of the model's error at a small
   cost (the spectra are low-dimensional) and leaves mostly instrument noise.
2. **Pointwise stage** (``bound`` K set): each valid value is quantized on a grid of step ``s = 2·K·MARGIN·σ̃(P1)``
   centred on ``P1``, where ``σ̃`` is the stored noise model (:class:`NoiseModel`), so the reconstruction is within
   ``K·MARGIN·σ̃`` of the original. The encoder then checks every value against ``K·σ`` with ``σ`` the granule's own
   ``radiance_error`` (``σ̃`` when none is given) and stores each value that misses it exactly (an *exception*):
   the bound holds for every valid value whatever the noise model's accuracy; a poor model costs size, never the
   bound. ``MARGIN`` leaves room for last-bit differences of ``exp`` and the decoder between machines.

The residual bytes of one chunk: ``<B stages> <H n_pc>``, the ``n_pc`` coefficient planes (one entropy-coded
stream each, :mod:`tempocodec.codec.entropy`), the pointwise stream over the valid elements (C order of
``(C, h, w)``), then ``<I n_exceptions>`` and, when any, the zstd-compressed uint32 gaps between their flat indices
and their exact float32 values.
"""

from __future__ import annotations

import base64
import struct
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numcodecs
import numpy as np

from tempocodec.codec import entropy
from tempocodec.errors import TempocodecError

MARGIN = 0.99
"""Share of the bound the quantization grid may use (the rest absorbs last-bit differences between machines)."""
QMAX = entropy.MAX_SYMBOLS // 2 - 1
"""Largest |quantized value| stored in a stream; larger residuals (spikes) are exceptions, coefficients clipped."""
_STAGE_PC, _STAGE_POINTWISE = 1, 2
_HEAD = struct.Struct("<BH")
_COUNT = struct.Struct("<I")
_ZSTD = numcodecs.Zstd(level=9)
_VAR_FLOOR = np.float32(1e-30)
_WHERE = "tempocodec.vae residual configuration"


def f32(value: float) -> float:
    """``value`` rounded to float32, as the shortest Python float that rounds back to the same float32 (what a JSON
    round trip keeps)."""
    return float(str(np.float32(value)))


@dataclass(frozen=True)
class NoiseModel:
    """The granule's noise as a function of radiance: ``σ̃(L) = envelope[c]·scale·sqrt(a + b·u + c·u²)`` with
    ``u = L / scale`` (shot noise, read noise and an SNR ceiling, as a detector has). ``scale`` (radiance units)
    keeps the fit well conditioned; ``envelope`` ``(C,)`` scales each channel to just under its observed noise,
    so that few values need exceptions. Evaluated in float32 only (the same bits on every machine)."""

    coef: tuple[float, float, float]
    scale: float
    envelope: tuple[float, ...]

    def sigma(self, radiance: np.ndarray, first: int = 0) -> np.ndarray:
        """``σ̃`` float32 of radiance float32 ``(C, ...)`` (channel first; channels ``first`` on), in radiance units."""
        u = radiance / np.float32(self.scale)
        a, b, c = (np.float32(v) for v in self.coef)
        var = a + u * (b + u * c)
        np.maximum(var, _VAR_FLOOR, out=var)
        env = np.asarray(self.envelope[first : first + radiance.shape[0]], np.float32)
        env = env.reshape(-1, *([1] * (radiance.ndim - 1)))
        return np.sqrt(var) * np.float32(self.scale) * env

    def to_json(self) -> dict[str, Any]:
        """JSON-able form."""
        return {"coef": list(self.coef), "scale": self.scale, "envelope": list(self.envelope)}

    @classmethod
    def parse(cls, data: object, n_channels: int) -> NoiseModel:
        """From its JSON form; raise a one-line error naming the fault."""
        if not isinstance(data, dict):
            raise TempocodecError(f"{_WHERE}: 'noise' must be a mapping")
        coef = _floats(data.get("coef"), "noise.coef", 3)
        scale = _floats([data.get("scale")], "noise.scale", 1)[0]
        envelope = _floats(data.get("envelope"), "noise.envelope", n_channels)
        if scale <= 0 or min(envelope) <= 0:
            raise TempocodecError(f"{_WHERE}: 'noise.scale' and 'noise.envelope' must be positive")
        return cls((coef[0], coef[1], coef[2]), scale, envelope)


def _floats(data: object, key: str, n: int) -> tuple[float, ...]:
    """``n`` finite float32 numbers from a JSON list."""
    try:
        values = np.asarray(data, dtype=np.float32)
    except (TypeError, ValueError):
        values = np.zeros(0, np.float32)
    if values.shape != (n,) or not np.isfinite(values).all():
        raise TempocodecError(f"{_WHERE}: '{key}' must be {n} finite numbers")
    return tuple(f32(v) for v in values)


@dataclass(frozen=True)
class ResidualSpec:
    """How an array's chunks code their residual (the ``residual`` key of the codec configuration).

    ``bound``: K, in units of each value's noise (None: no pointwise stage); ``n_pc``, ``pc_step``, ``weights``
    ``(C,)``, ``basis`` (float16 ``(n_pc, C)`` bytes): the spectral stage; ``noise``: the noise model (needed with a
    bound).
    """

    bound: float | None
    n_pc: int
    pc_step: float
    weights: tuple[float, ...]
    basis: bytes
    noise: NoiseModel | None

    @cached_property
    def basis_matrix(self) -> np.ndarray:
        """The basis float32 ``(n_pc, C)``."""
        return np.frombuffer(self.basis, dtype="<f2").astype(np.float32).reshape(self.n_pc, -1)

    def describe(self) -> str:
        """A few words for ``info`` and ``repr``."""
        parts = [f"within {self.bound:g} σ" if self.bound is not None else "no pointwise bound"]
        if self.n_pc:
            parts.append(f"{self.n_pc} spectral components, step {self.pc_step:g}")
        return ", ".join(parts)

    def to_json(self) -> dict[str, Any]:
        """JSON-able form; the basis as base64 of its zstd-compressed float16 bytes."""
        data: dict[str, Any] = {"bound": self.bound, "n_pc": self.n_pc, "pc_step": self.pc_step}
        if self.n_pc:
            data["weights"] = list(self.weights)
            data["basis"] = base64.b64encode(bytes(_ZSTD.encode(self.basis))).decode("ascii")
        if self.noise is not None:
            data["noise"] = self.noise.to_json()
        return data

    @classmethod
    def parse(cls, data: object, n_channels: int) -> ResidualSpec:
        """From its JSON form; raise a one-line error naming the fault."""
        if not isinstance(data, dict):
            raise TempocodecError(f"{_WHERE}: 'residual' must be a mapping")
        bound = data.get("bound")
        if bound is not None:
            bound = _floats([bound], "bound", 1)[0]
            if bound <= 0:
                raise TempocodecError(f"{_WHERE}: 'bound' must be positive, got {bound}")
        n_pc = data.get("n_pc", 0)
        if not isinstance(n_pc, int) or not 0 <= n_pc <= n_channels:
            raise TempocodecError(f"{_WHERE}: 'n_pc' must be an integer in 0..{n_channels}")
        step = _floats([data.get("pc_step", 1.0)], "pc_step", 1)[0]
        weights: tuple[float, ...] = ()
        basis = b""
        if n_pc:
            weights = _floats(data.get("weights"), "weights", n_channels)
            basis = _basis_bytes(data.get("basis"), n_pc * n_channels)
            if step <= 0 or min(weights) <= 0:
                raise TempocodecError(f"{_WHERE}: 'pc_step' and 'weights' must be positive")
        noise = None if data.get("noise") is None else NoiseModel.parse(data["noise"], n_channels)
        if bound is not None and noise is None:
            raise TempocodecError(f"{_WHERE}: a 'bound' needs a 'noise' model")
        return cls(bound, n_pc, step, weights, basis, noise)


def _basis_bytes(text: object, count: int) -> bytes:
    """float16 basis bytes from base64 of zstd; exactly ``count`` values."""
    try:
        raw = bytes(_ZSTD.decode(base64.b64decode(str(text), validate=True)))
    except Exception:  # binascii and zstd raise several types on a damaged string
        raw = b""
    values = np.frombuffer(raw, dtype="<f2") if len(raw) % 2 == 0 else np.zeros(0)
    if values.size != count or not np.isfinite(values).all():
        raise TempocodecError(f"{_WHERE}: 'basis' is not {count} finite float16 values in base64 of zstd")
    return raw


def make_spec(bound: float | None, basis: np.ndarray, weights: np.ndarray, pc_step: float,
              noise: NoiseModel | None) -> ResidualSpec:
    """A spec from fitted parts: ``basis`` float ``(n_pc, C)`` (rounded to float16 here), ``weights`` ``(C,)``."""
    n_pc = int(basis.shape[0])
    return ResidualSpec(
        bound=None if bound is None else f32(bound),
        n_pc=n_pc,
        pc_step=f32(pc_step),
        weights=tuple(f32(v) for v in weights) if n_pc else (),
        basis=np.ascontiguousarray(basis, dtype="<f2").tobytes() if n_pc else b"",
        noise=None if noise is None else noise_model(noise.coef, noise.scale, noise.envelope),
    )


def noise_model(coef: tuple[float, ...] | np.ndarray, scale: float, envelope: tuple[float, ...] | np.ndarray) -> NoiseModel:
    """A :class:`NoiseModel` with every number rounded to float32 (so it survives the JSON round trip unchanged)."""
    a, b, c = (f32(v) for v in coef)
    return NoiseModel((a, b, c), f32(scale), tuple(f32(v) for v in envelope))


# --------------------------------------------------------------------------------------------------- arithmetic


def _denormalize(x: np.ndarray, mu: np.ndarray, sigma: np.ndarray) -> np.ndarray:
    """Radiance float32 ``(C, h, w)`` of normalized log ``x`` ``(C, h, w)``."""
    return np.exp(x * sigma[:, None, None] + mu[:, None, None]).astype(np.float32, copy=False)


def prediction(xhat0: np.ndarray, coeffs: np.ndarray | None, spec: ResidualSpec, mu: np.ndarray,
               sigma: np.ndarray) -> np.ndarray:
    """``P1`` float32 ``(C, h, w)``: the decoder's normalized output ``xhat0`` ``(C, h, w)`` plus the spectral stage's
    quantized coefficients ``coeffs`` int ``(n_pc, h, w)`` (None: no spectral stage), as radiance. Encoder and
    decoder both call this, so both see the same bits."""
    if coeffs is None or not spec.n_pc:
        return _denormalize(xhat0, mu, sigma)
    c, h, w = xhat0.shape
    scaled = coeffs.reshape(spec.n_pc, h * w).astype(np.float32) * np.float32(spec.pc_step)
    delta = (spec.basis_matrix.T @ scaled).reshape(c, h, w)
    delta *= np.asarray(spec.weights, np.float32)[:, None, None]
    return _denormalize(xhat0 + delta, mu, sigma)


def _grid_step(p1: np.ndarray, spec: ResidualSpec) -> np.ndarray:
    """Quantization step float32 of the pointwise stage at prediction ``p1``."""
    assert spec.noise is not None and spec.bound is not None  # parse() enforces both
    return spec.noise.sigma(p1) * np.float32(2 * spec.bound * MARGIN)


# --------------------------------------------------------------------------------------------------- encode


def encode(raw: np.ndarray, valid: np.ndarray, x: np.ndarray, xhat0: np.ndarray, spec: ResidualSpec,
           mu: np.ndarray, sigma: np.ndarray, noise: np.ndarray | None) -> bytes:
    """Residual bytes of one chunk's valid extent.

    ``raw``: original radiance float32 ``(C, h, w)``; ``valid``: bool ``(C, h, w)``; ``x``: its normalized log (valid
    elements); ``xhat0``: the decoder's output for the stored latent; ``mu``, ``sigma``: the model's normalization;
    ``noise``: the granule's 1-σ noise (``radiance_error``) float32 ``(C, h, w)`` or None (then the bound is in units
    of the noise model at the original value, ``σ̃(L)``). A valid value whose noise is not a positive finite number
    is kept exactly.
    """
    out = [b""]
    stages = 0
    coeffs = None
    if spec.n_pc:
        stages |= _STAGE_PC
        coeffs = _coefficients(x, xhat0, valid, spec)
        out.extend(entropy.encode_ints(plane) for plane in coeffs)
    if spec.bound is not None:
        stages |= _STAGE_POINTWISE
        p1 = prediction(xhat0, coeffs, spec, mu, sigma)
        out.append(_pointwise(raw, valid, p1, spec, noise))
    out[0] = _HEAD.pack(stages, spec.n_pc)
    return b"".join(out)


def _coefficients(x: np.ndarray, xhat0: np.ndarray, valid: np.ndarray, spec: ResidualSpec) -> np.ndarray:
    """Quantized spectral-stage coefficients int32 ``(n_pc, h, w)`` of the whitened residual (0 where no valid value)."""
    c, h, w = x.shape
    d = np.where(valid, x - xhat0, np.float32(0)) / np.asarray(spec.weights, np.float32)[:, None, None]
    a = spec.basis_matrix @ d.reshape(c, h * w)
    q = np.clip(np.rint(a / np.float32(spec.pc_step)), -QMAX, QMAX).astype(np.int32)
    q[:, ~valid.any(axis=0).ravel()] = 0
    return q.reshape(spec.n_pc, h, w)


def _pointwise(raw: np.ndarray, valid: np.ndarray, p1: np.ndarray, spec: ResidualSpec, noise: np.ndarray | None) -> bytes:
    """The pointwise stream and the exceptions of one chunk."""
    assert spec.bound is not None
    step = _grid_step(p1, spec)
    q = np.rint((raw - p1) / step)
    recon = p1 + np.clip(q, -QMAX, QMAX) * step
    with np.errstate(invalid="ignore", over="ignore"):
        if noise is None:
            assert spec.noise is not None
            noise = spec.noise.sigma(np.where(valid, raw, np.float32(1)))
        ok = (np.abs(recon - raw) <= np.float32(spec.bound) * noise) & (np.abs(q) <= QMAX) & np.isfinite(recon)
        ok &= np.isfinite(noise) & (noise > 0)
    missed = valid & ~ok
    q = np.where(valid & ok, q, 0).astype(np.int32)
    flat = np.flatnonzero(missed.ravel())
    parts = [entropy.encode_ints(q[valid]), _COUNT.pack(flat.size)]
    if flat.size:
        gaps = np.diff(flat, prepend=0).astype("<u4")
        parts += [_sized(bytes(_ZSTD.encode(gaps.tobytes()))), raw.ravel()[flat].astype("<f4").tobytes()]
    return b"".join(parts)


def _sized(blob: bytes) -> bytes:
    """``blob`` prefixed with its length."""
    return _COUNT.pack(len(blob)) + blob


# --------------------------------------------------------------------------------------------------- decode


def decode(blob: memoryview, xhat0: np.ndarray, valid: np.ndarray, spec: ResidualSpec, mu: np.ndarray,
           sigma: np.ndarray, where: str) -> np.ndarray:
    """Radiance float32 ``(C, h, w)`` of one chunk's valid extent from its residual bytes ``blob``, the decoder's
    output ``xhat0`` ``(C, h, w)`` and the chunk's validity ``valid`` bool ``(C, h, w)``; raise naming ``where``."""
    if len(blob) < _HEAD.size:
        raise TempocodecError(f"{where}: truncated residual")
    stages, n_pc = _HEAD.unpack(blob[: _HEAD.size])
    wanted = (_STAGE_PC if spec.n_pc else 0) | (_STAGE_POINTWISE if spec.bound is not None else 0)
    if stages != wanted or n_pc != spec.n_pc:
        raise TempocodecError(f"{where}: residual stages {stages}/{n_pc} do not match the array's configuration")
    at = _HEAD.size
    _, h, w = xhat0.shape
    coeffs = None
    if n_pc:
        planes = []
        for _ in range(n_pc):
            plane, size = entropy.decode_ints(blob[at:], where)
            if plane.size != h * w:
                raise TempocodecError(f"{where}: residual coefficients hold {plane.size} values, not {h * w}")
            planes.append(plane.reshape(h, w))
            at += size
        coeffs = np.stack(planes)
    p1 = prediction(xhat0, coeffs, spec, mu, sigma)
    if spec.bound is not None:
        at += _apply_pointwise(blob[at:], p1, valid, spec, where)
    if at != len(blob):
        raise TempocodecError(f"{where}: residual has {len(blob) - at} trailing bytes")
    return p1


def _apply_pointwise(blob: memoryview, p1: np.ndarray, valid: np.ndarray, spec: ResidualSpec, where: str) -> int:
    """Add the pointwise stage and the exceptions to ``p1`` in place; return the bytes read."""
    q, at = entropy.decode_ints(blob, where)
    n_valid = int(np.count_nonzero(valid))
    if q.size != n_valid or len(blob) < at + _COUNT.size:
        raise TempocodecError(f"{where}: residual holds {q.size} values for {n_valid} valid elements")
    step = _grid_step(p1, spec)
    p1[valid] += q.astype(np.float32) * step[valid]
    (count,) = _COUNT.unpack(blob[at : at + _COUNT.size])
    at += _COUNT.size
    if not count:
        return at
    if count > p1.size or len(blob) < at + _COUNT.size:
        raise TempocodecError(f"{where}: residual declares {count} exceptions for {p1.size} values")
    (size,) = _COUNT.unpack(blob[at : at + _COUNT.size])
    at += _COUNT.size
    flat = _exception_index(blob[at : at + size], count, p1.size, where)
    at += size
    values = np.frombuffer(blob[at : at + 4 * count], dtype="<f4")
    if values.size != count:
        raise TempocodecError(f"{where}: truncated residual exceptions")
    p1.reshape(-1)[flat] = values
    return at + 4 * count


def _exception_index(blob: memoryview, count: int, n_values: int, where: str) -> np.ndarray:
    """Flat indices of ``count`` exceptions from their zstd-compressed gaps; each must be inside the chunk."""
    gaps = np.empty(count, dtype="<u4")
    try:
        _ZSTD.decode(blob, out=gaps)
    except (RuntimeError, ValueError) as err:
        raise TempocodecError(f"{where}: residual exception index does not decompress ({err})") from None
    flat = np.cumsum(gaps, dtype=np.int64)
    if flat.size and (flat[-1] >= n_values or (count > 1 and (np.diff(flat) <= 0).any())):
        raise TempocodecError(f"{where}: residual exception index points outside the chunk")
    return flat

