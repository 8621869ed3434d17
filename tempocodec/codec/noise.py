"""``radiance_error`` coded exactly from the decoded radiance: TEMPO's noise estimate is a smooth function of the
signal (shot noise, read noise, an SNR ceiling) written with a few significant decimal digits, so a noise model fitted
per granule, run on the radiance the latent decodes to, predicts each value's digits; only where the prediction
misses is anything stored.

Each value ``s`` of a chunk is coded against the prediction ``p = σ̃(L̂)`` (:class:`~tempocodec.codec.residual.NoiseModel`
on the decoded radiance ``L̂``, float32) on the *decimal grid* of ``digits`` significant digits (every float32
``m·10^k``, ``10^(digits-1) ≤ m < 10^digits``): the symbol is the grid index of ``s`` minus that of the grid value
nearest ``p``, in ``[-RANGE, RANGE]``. Two more symbols: ``FRAGILE``, where ``p`` lies within :data:`MARGIN`
(relative) of the midpoint between two grid values (there a decoder whose ``L̂`` differs in its last bits, another
CPU say, could round ``p`` the other way), followed by the index of ``s`` relative to the grid value just below that
midpoint in a second stream; ``RAW``, followed by the exact float32 value (anything off the grid, a fill value, a
prediction too far off, an element the radiance leaves invalid). Both streams are ANS-coded
(:mod:`tempocodec.codec.entropy`), the raw values zstd-compressed. Decoding is exact: a chunk records the CRC-32 of
the values it decodes to, and a decoder that gets others raises instead of returning them.

Chunk body layout: ``<I n>`` + symbols, ``<I n>`` + fragile offsets, ``<I n>`` + zstd raw float32 values.
"""

from __future__ import annotations

import functools
import struct
from dataclasses import dataclass
from typing import Any

import numcodecs
import numpy as np

from tempocodec.codec import entropy
from tempocodec.codec.residual import NoiseModel
from tempocodec.errors import TempocodecError

RANGE = 15
"""Largest grid step between a value and its prediction that is coded as a symbol (further: ``RAW``)."""
FRAGILE = RANGE + 1
RAW = RANGE + 2
MARGIN = 2e-5
"""Relative distance of a prediction from a rounding midpoint below which it is ``FRAGILE``: 20× the last-bit
differences of a float32 decoder output (~1e-6 relative)."""
MAX_DIGITS = 3
_LEN = struct.Struct("<I")
_RAW_ZSTD = numcodecs.Zstd(level=9)


@dataclass(frozen=True)
class NoiseCoding:
    """How an array's chunks code ``radiance_error``: the granule's noise model and the decimal ``digits`` of its grid."""

    model: NoiseModel
    digits: int

    @classmethod
    def parse(cls, noise: object, digits: object, n_channels: int) -> NoiseCoding:
        """From the codec configuration's ``noise`` (:meth:`NoiseModel.to_json`) and ``digits``; a one-line error
        naming the fault."""
        if not isinstance(digits, int) or isinstance(digits, bool) or not 1 <= digits <= MAX_DIGITS:
            raise TempocodecError(f"radiance_error codec: 'digits' must be an integer 1..{MAX_DIGITS}, got {digits!r}")
        return cls(NoiseModel.parse(noise, n_channels), digits)

    def to_json(self) -> dict[str, Any]:
        """The ``noise`` and ``digits`` keys of the codec configuration."""
        return {"noise": self.model.to_json(), "digits": self.digits}


_BUCKET_SHIFT = 12
"""Positive float32 values sharing their top 20 bits (a relative width under 2⁻¹¹) form one bucket of the
:class:`Grid`'s lookup table; for up to 3 digits no bucket holds two midpoints (theirs are ≥ 1/999 apart)."""


@dataclass(frozen=True, eq=False)
class Grid:
    """The positive float32 values with ``digits`` significant decimal digits, ascending (``values``), and
    ``upper[j]``: the largest float32 at or below the midpoint between ``values[j]`` and ``values[j + 1]``, so that
    for a float32 ``p``, ``upper[j-1] < p <= upper[j]`` exactly when ``values[j]`` is the grid value nearest ``p``
    (decided in float32 alone, the same on every machine). ``base``: the nearest index at the bottom of each bucket
    of float32 bit patterns."""

    digits: int
    values: np.ndarray
    upper: np.ndarray
    base: np.ndarray

    def nearest(self, p: np.ndarray) -> np.ndarray:
        """Index (int32) of the grid value nearest each positive finite float32 ``p``."""
        bucket = np.ascontiguousarray(p, np.float32).view(np.uint32) >> _BUCKET_SHIFT
        j = self.base[np.minimum(bucket, self.base.size - 1)]
        j += p > self.upper[j]
        return j

    def fragile(self, p: np.ndarray, j: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Whether each ``p`` (nearest grid value ``j``) lies within :data:`MARGIN` of the midpoint below or above."""
        below = self.upper[np.maximum(j - 1, 0)] >= p * np.float32(1 - MARGIN)
        above = self.upper[np.minimum(j, self.upper.size - 1)] <= p * np.float32(1 + MARGIN)
        return below, above

    def lower_midpoint(self, p: np.ndarray, j: np.ndarray) -> np.ndarray:
        """For ``p`` near a midpoint (nearest grid value ``j``): the index of the grid value just below it."""
        below = self.upper[np.maximum(j - 1, 0)].astype(np.float64)
        above = self.upper[np.minimum(j, self.upper.size - 1)].astype(np.float64)
        p64 = p.astype(np.float64)
        return np.where(p64 - below < above - p64, j - 1, j)

    def index_of(self, values: np.ndarray) -> np.ndarray:
        """Grid index (int32) of each float32 value that lies exactly on the grid, -1 elsewhere."""
        with np.errstate(invalid="ignore"):
            usable = (values >= self.values[0]) & (values <= self.values[-1])
        j = self.nearest(np.where(usable, values, self.values[0]))
        return np.where(usable & (self.values[j] == values), j, -1)


@functools.cache
def decimal_grid(digits: int) -> Grid:
    """The :class:`Grid` of ``digits`` significant digits over float32's normal range (from 1e-37)."""
    lo, hi = 10 ** (digits - 1), 10**digits
    decimals = np.array([float(f"{m}e{k}") for k in range(-37 - (digits - 1), 39) for m in range(lo, hi)])
    decimals = decimals[decimals <= np.finfo(np.float32).max]
    mids = (decimals[:-1] + decimals[1:]) / 2
    upper = mids.astype(np.float32)
    upper = np.where(upper.astype(np.float64) > mids, np.nextafter(upper, np.float32(0)), upper)
    bottoms = (np.arange(np.float32(np.inf).view(np.uint32) >> _BUCKET_SHIFT, dtype=np.uint32) << _BUCKET_SHIFT)
    base = np.searchsorted(upper, bottoms.view(np.float32), side="left").astype(np.int32)
    return Grid(digits, decimals.astype(np.float32), upper, np.minimum(base, upper.size - 1))


def grid_fraction(values: np.ndarray, digits: int) -> float:
    """Share of the finite positive ``values`` that lie on the grid of ``digits`` digits (0 when there are none)."""
    with np.errstate(invalid="ignore"):
        usable = values[np.isfinite(values) & (values > 0)]
    return float((decimal_grid(digits).index_of(usable) >= 0).mean()) if usable.size else 0.0


def predict(radiance: np.ndarray, predicted: np.ndarray, model: NoiseModel, first: int = 0) -> np.ndarray:
    """``σ̃`` float32 of the decoded ``radiance`` float32 ``(C, ...)`` (channels ``first`` on) where ``predicted``
    (bool, same shape), 1 elsewhere."""
    with np.errstate(over="ignore", invalid="ignore"):  # absurd radiance: no prediction, the value is stored raw
        p = model.sigma(np.where(predicted, radiance, np.float32(model.scale)), first)
        return np.where(predicted & np.isfinite(p) & (p > 0) & (p < np.float32(1e37)), p, np.float32(1))


BLOCK = 32
"""Channels coded at a time: a chunk's intermediate arrays stay a few MB (in cache, and little memory per thread)."""


def encode(sigma: np.ndarray, radiance: np.ndarray, predicted: np.ndarray, coding: NoiseCoding) -> bytes:
    """The body of one chunk: ``sigma`` float32 ``(C, rows, cols)`` against the decoded ``radiance`` (same shape),
    predicted where ``predicted`` (bool, same shape: the elements the radiance payload holds)."""
    parts = [_encode_block(sigma[c : c + BLOCK], radiance[c : c + BLOCK], predicted[c : c + BLOCK], coding, c)
             for c in range(0, sigma.shape[0], BLOCK)]
    symbols, offsets, exact = (np.concatenate([part[k] for part in parts]) if parts else np.zeros(0) for k in range(3))
    raw = _RAW_ZSTD.encode(exact.astype("<f4")) if exact.size else b""
    body = (entropy.encode_ints(symbols), entropy.encode_ints(offsets), raw)
    return b"".join(_LEN.pack(len(part)) + part for part in body)


def _encode_block(sigma: np.ndarray, radiance: np.ndarray, predicted: np.ndarray, coding: NoiseCoding, first: int
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One block of channels (from channel ``first``): the symbols of its predicted values (int8, C order), the
    offsets of its fragile ones and the values it stores raw (float32)."""
    grid = decimal_grid(coding.digits)
    s = sigma.ravel()
    mask = predicted.ravel()
    p = predict(radiance, predicted, coding.model, first).ravel()
    nearest = grid.nearest(p)
    below, above = grid.fragile(p, nearest)
    fragile = below | above
    target = grid.index_of(s)
    d = target - np.where(below, nearest - 1, nearest)
    np.subtract(target, nearest, out=d, where=~fragile)
    coded = mask & (target >= 0) & (d >= -RANGE) & (d <= np.where(fragile, RANGE + 1, RANGE))
    symbols = np.where(coded, np.where(fragile, FRAGILE, d), RAW).astype(np.int8)
    return symbols[mask], d[coded & fragile].astype(np.int8), s[~coded]


def decode(body: memoryview, radiance: np.ndarray, predicted: np.ndarray, coding: NoiseCoding, where: str) -> np.ndarray:
    """``sigma`` float32 ``(C, rows, cols)`` of one chunk :func:`encode` wrote, given the same decoded ``radiance`` and
    ``predicted`` (up to the decoder's last bits)."""
    parts = _parts(body, where)
    symbols, _ = entropy.decode_ints(parts[0], where)
    offsets, _ = entropy.decode_ints(parts[1], where)
    raw = _raw_values(parts[2], where)
    n_predicted, n_fragile = int(predicted.sum()), int((symbols == FRAGILE).sum())
    n_raw = predicted.size - n_predicted + int((symbols == RAW).sum())
    if symbols.size != n_predicted or symbols.size and (symbols.min() < -RANGE or symbols.max() > RAW):
        raise TempocodecError(f"{where}: damaged radiance_error chunk ({symbols.size} symbols for {n_predicted} values)")
    if offsets.size != n_fragile or raw.size != n_raw:
        raise TempocodecError(f"{where}: damaged radiance_error chunk ({offsets.size} offsets for {n_fragile} fragile "
                              f"values, {raw.size} raw values for {n_raw})")
    out = np.empty(predicted.shape, np.float32)
    at = [0, 0, 0]  # where the next block starts in symbols, offsets and raw
    for c in range(0, predicted.shape[0], BLOCK):
        out[c : c + BLOCK] = _decode_block(symbols, offsets, raw, at, radiance[c : c + BLOCK], predicted[c : c + BLOCK],
                                           coding, c, where)
    return out


def _decode_block(symbols: np.ndarray, offsets: np.ndarray, raw: np.ndarray, at: list[int], radiance: np.ndarray,
                  predicted: np.ndarray, coding: NoiseCoding, first: int, where: str) -> np.ndarray:
    """One block of channels (from channel ``first``) from the streams, starting at ``at`` (advanced past it)."""
    grid = decimal_grid(coding.digits)
    mask = predicted.ravel()
    n = int(mask.sum())
    sym = symbols[at[0] : at[0] + n]
    p = predict(radiance, predicted, coding.model, first).ravel()[mask]
    index = grid.nearest(p) + sym
    fragile = np.flatnonzero(sym == FRAGILE)
    index[fragile] = grid.lower_midpoint(p[fragile], index[fragile] - FRAGILE) + offsets[at[1] : at[1] + fragile.size]
    coded = sym != RAW
    if coded.any() and (index[coded].min() < 0 or index[coded].max() >= grid.values.size):
        raise TempocodecError(f"{where}: damaged radiance_error chunk (a value off the decimal grid)")
    out = np.empty(mask.size, np.float32)
    values = np.empty(n, np.float32)
    values[coded] = grid.values[index[coded]]
    out[mask] = values
    holes = np.ones(mask.size, dtype=bool)
    holes[np.flatnonzero(mask)[coded]] = False
    n_raw = int(holes.sum())
    out[holes] = raw[at[2] : at[2] + n_raw]
    at[0] += n
    at[1] += fragile.size
    at[2] += n_raw
    return out.reshape(predicted.shape)


def _raw_values(part: memoryview, where: str) -> np.ndarray:
    """The float32 values stored as they are (zstd), none for an empty part."""
    if not len(part):
        return np.zeros(0, np.float32)
    try:
        data = _RAW_ZSTD.decode(bytes(part))
    except RuntimeError as err:  # numcodecs' error for a damaged zstd frame
        raise TempocodecError(f"{where}: damaged radiance_error chunk ({err})") from None
    if len(data) % 4:
        raise TempocodecError(f"{where}: damaged radiance_error chunk (raw values of {len(data)} bytes)")
    return np.frombuffer(data, dtype="<f4")


def _parts(body: memoryview, where: str) -> list[memoryview]:
    """The three length-prefixed parts of a chunk body."""
    parts, at = [], 0
    for _ in range(3):
        if len(body) < at + _LEN.size:
            raise TempocodecError(f"{where}: truncated radiance_error chunk")
        (n,) = _LEN.unpack(body[at : at + _LEN.size])
        at += _LEN.size
        if len(body) < at + n:
            raise TempocodecError(f"{where}: truncated radiance_error chunk")
        parts.append(body[at : at + n])
        at += n
    return parts
