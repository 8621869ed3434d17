"""Entropy coding of small integers for the residual layer: one adaptive-free categorical model per stream.

A stream of integers ``q`` is stored as its value range, the count of each value in that range (the model, exact,
so encoder and decoder build the same probabilities) and the ANS code of the values under that model
(``constriction``). For the near-Gaussian residuals of :mod:`tempocodec.codec.residual` the code length is within a
fraction of a percent of the stream's empirical entropy.

Layout: ``<i lo> <I n_values> <H n_symbols> <I code_words>``, ``n_symbols`` uint32 counts, ``code_words`` uint32
words of ANS code.
"""

from __future__ import annotations

import struct

import constriction
import numpy as np

from tempocodec.errors import TempocodecError

MAX_SYMBOLS = 4096
"""Widest value range one stream may take; the residual layer stores values beyond it as exceptions."""
_HEAD = struct.Struct("<iIHI")


def _model(counts: np.ndarray) -> constriction.stream.model.Categorical:
    """The categorical model of value counts ``counts`` (float64 probabilities, the same on every machine)."""
    return constriction.stream.model.Categorical(counts / counts.sum(), perfect=False)


def encode_ints(values: np.ndarray) -> bytes:
    """Code int ``values`` (any shape, read in C order) whose range spans at most :data:`MAX_SYMBOLS` values."""
    flat = np.ascontiguousarray(values, dtype=np.int32).ravel()
    if flat.size == 0:
        return _HEAD.pack(0, 0, 0, 0)
    lo, hi = int(flat.min()), int(flat.max())
    if hi - lo + 1 > MAX_SYMBOLS:
        raise TempocodecError(f"entropy coder: value range {lo}..{hi} is wider than {MAX_SYMBOLS} symbols")
    symbols = flat - np.int32(lo)
    counts = np.bincount(symbols, minlength=hi - lo + 1).astype(np.uint32)
    if counts.size == 1:  # a constant stream needs no code
        return _HEAD.pack(lo, flat.size, 1, 0) + counts.tobytes()
    coder = constriction.stream.stack.AnsCoder()
    coder.encode_reverse(symbols, _model(counts.astype(np.float64)))
    words = coder.get_compressed()
    return _HEAD.pack(lo, flat.size, counts.size, words.size) + counts.tobytes() + words.tobytes()


def decode_ints(blob: memoryview | bytes, where: str) -> tuple[np.ndarray, int]:
    """The int32 values of one stream at the start of ``blob`` and the stream's length in bytes."""
    blob = memoryview(blob).cast("B")
    if len(blob) < _HEAD.size:
        raise TempocodecError(f"{where}: truncated residual stream")
    lo, n, n_symbols, n_words = _HEAD.unpack(blob[: _HEAD.size])
    size = _HEAD.size + 4 * (n_symbols + n_words)
    if len(blob) < size or n_symbols > MAX_SYMBOLS or (n and not n_symbols):
        raise TempocodecError(f"{where}: damaged residual stream ({n} values, {n_symbols} symbols, {len(blob)} bytes)")
    counts = np.frombuffer(blob[_HEAD.size : _HEAD.size + 4 * n_symbols], dtype="<u4").astype(np.float64)
    if n == 0:
        return np.zeros(0, dtype=np.int32), size
    if n_symbols == 1:
        return np.full(n, lo, dtype=np.int32), size
    if counts.sum() != n:
        raise TempocodecError(f"{where}: damaged residual stream (counts do not add up to {n} values)")
    words = np.frombuffer(blob[_HEAD.size + 4 * n_symbols : size], dtype="<u4").astype(np.uint32)
    try:
        symbols = constriction.stream.stack.AnsCoder(words).decode(_model(counts), n)
    except Exception as err:  # constriction raises its own error types on a damaged code
        raise TempocodecError(f"{where}: damaged residual stream ({err})") from None
    return symbols.astype(np.int32) + np.int32(lo), size


# --------------------------------------------------------------------------------------------------- latents

_GAUSS_HEAD = struct.Struct("<iiI")
STD_FLOOR = 0.25
"""Smallest per-row standard deviation of the Gaussian model (symbols): a constant row still codes in ~0.1 bit."""


def encode_rows_gaussian(values: np.ndarray) -> bytes:
    """Code int ``values`` ``(R, n)`` with one quantized Gaussian per row (its mean and standard deviation, float16,
    stored): for latent channels, whose spreads differ by orders of magnitude, where count tables would cost more
    than the code. Layout: ``<i lo> <i hi> <I code_words>``, R float16 means, R float16 standard deviations, the code."""
    q = np.ascontiguousarray(values, dtype=np.int32)
    rows, n = q.shape
    mean = q.mean(axis=1).astype(np.float16) if n else np.zeros(rows, np.float16)
    std = np.maximum(q.std(axis=1), STD_FLOOR).astype(np.float16) if n else np.ones(rows, np.float16)
    lo, hi = (int(q.min()), int(q.max())) if q.size else (0, 0)
    words = np.zeros(0, np.uint32)
    if q.size and hi > lo:
        coder = constriction.stream.stack.AnsCoder()
        means, stds = _per_symbol(mean, std, n)
        coder.encode_reverse(q.ravel(), constriction.stream.model.QuantizedGaussian(lo, hi), means, stds)
        words = coder.get_compressed()
    return _GAUSS_HEAD.pack(lo, hi, words.size) + mean.tobytes() + std.tobytes() + words.astype("<u4").tobytes()


def _per_symbol(mean: np.ndarray, std: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Each row's float16 mean and standard deviation repeated over its ``n`` symbols, as float64."""
    return np.repeat(mean.astype(np.float64), n), np.repeat(std.astype(np.float64), n)


def decode_rows_gaussian(blob: memoryview | bytes, rows: int, n: int, where: str) -> tuple[np.ndarray, int]:
    """The int32 ``(rows, n)`` values of :func:`encode_rows_gaussian` at the start of ``blob``, and its length."""
    blob = memoryview(blob).cast("B")
    if len(blob) < _GAUSS_HEAD.size + 4 * rows:
        raise TempocodecError(f"{where}: truncated latent code")
    lo, hi, n_words = _GAUSS_HEAD.unpack(blob[: _GAUSS_HEAD.size])
    at = _GAUSS_HEAD.size
    mean = np.frombuffer(blob[at : at + 2 * rows], dtype="<f2")
    std = np.frombuffer(blob[at + 2 * rows : at + 4 * rows], dtype="<f2")
    at += 4 * rows
    size = at + 4 * n_words
    if len(blob) < size or hi < lo or not (np.isfinite(mean).all() and np.isfinite(std).all() and (std > 0).all()):
        raise TempocodecError(f"{where}: damaged latent code")
    if hi == lo or rows * n == 0:
        return np.full((rows, n), lo, dtype=np.int32), size
    words = np.frombuffer(blob[at:size], dtype="<u4").astype(np.uint32)
    means, stds = _per_symbol(mean, std, n)
    try:
        q = constriction.stream.stack.AnsCoder(words).decode(constriction.stream.model.QuantizedGaussian(lo, hi), means, stds)
    except Exception as err:  # constriction raises its own error types on a damaged code
        raise TempocodecError(f"{where}: damaged latent code ({err})") from None
    return q.astype(np.int32).reshape(rows, n), size
