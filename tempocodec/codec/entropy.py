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
