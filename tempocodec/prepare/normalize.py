"""Normalization of radiance for the VAE (numpy only).

The paper's transform, per spectral channel ``c``: ``x = clip((log(max(L, 1)) - mu[c]) / sigma[c], -10, 10)``,
with ``mu``, ``sigma`` float32 ``(n_channels,)`` the mean and (population) standard deviation of ``log(max(L, 1))``
over the training data. Radiance ``L`` is in photons s⁻¹ cm⁻² nm⁻¹ sr⁻¹. A value is *invalid* when it is not
finite or ``|L| >= 1e30`` (the L1B fill is -9.96921e36, a common other fill -1e30); invalid values are skipped by the
statistics and map to ``x = 0`` (the channel mean) in :func:`normalize`.

:class:`LogStats` accumulates the statistics over any number of blocks, in any order (Chan et al. pairwise merge
of count, mean and sum of squared deviations, in float64).
"""

from __future__ import annotations

import numpy as np

from tempocodec.errors import TempocodecError

INVALID_ABOVE = 1e30
RADIANCE_FILL = np.float32(-9.96921e36)
"""TEMPO L1B radiance fill value (float32 of -NC_FILL_FLOAT), invalid by ``INVALID_ABOVE``."""
CLIP = 10.0
SIGMA_FLOOR = 1e-6
_ROWS_PER_PASS = 8192


def is_valid(radiance: np.ndarray) -> np.ndarray:
    """Boolean array of ``radiance``'s shape: true where the value is finite and ``|value| < 1e30`` (strictly, so that
    a fill of ±1e30, which float32 rounds to just above 1e30 and compares equal to it, is invalid)."""
    return np.abs(radiance) < INVALID_ABOVE


def _log_radiance(radiance: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """``log(max(L, 1))`` as float32 where ``valid``, 0 elsewhere (a new array of the same shape)."""
    out = np.where(valid, radiance, np.float32(1.0)).astype(np.float32, copy=False)
    np.maximum(out, np.float32(1.0), out=out)
    return np.log(out, out=out)


class LogStats:
    """Streaming per-channel mean and standard deviation of ``log(max(L, 1))`` over valid radiance values."""

    def __init__(self, n_channels: int) -> None:
        self.n_channels = n_channels
        self.count = np.zeros(n_channels, np.float64)
        self.mean = np.zeros(n_channels, np.float64)
        self.m2 = np.zeros(n_channels, np.float64)

    def update(self, radiance: np.ndarray) -> LogStats:
        """Add a block of radiance ``(..., n_channels)`` (any leading shape, channel last); returns ``self``."""
        radiance = np.asarray(radiance)
        if radiance.ndim < 1 or radiance.shape[-1] != self.n_channels:
            raise TempocodecError(f"statistics: radiance block {radiance.shape} does not end in {self.n_channels} channels")
        rows = radiance.reshape(-1, self.n_channels)
        for start in range(0, rows.shape[0], _ROWS_PER_PASS):
            self._add_rows(rows[start : start + _ROWS_PER_PASS])
        return self

    def _add_rows(self, rows: np.ndarray) -> None:
        """Merge the statistics of ``rows`` ``(n, n_channels)`` (two passes within the rows, then Chan's merge)."""
        valid = is_valid(rows)
        logs = _log_radiance(rows, valid)
        count = valid.sum(axis=0, dtype=np.float64)
        mean = logs.sum(axis=0, dtype=np.float64) / np.maximum(count, 1.0)
        deviation = np.where(valid, logs - mean.astype(np.float32), np.float32(0.0))
        m2 = np.square(deviation).sum(axis=0, dtype=np.float64)
        self._merge(count, mean, m2)

    def _merge(self, count: np.ndarray, mean: np.ndarray, m2: np.ndarray) -> None:
        """Chan et al. pairwise combination of (count, mean, M2) into the running totals."""
        total = self.count + count
        safe = np.maximum(total, 1.0)
        delta = mean - self.mean
        self.mean = self.mean + delta * count / safe
        self.m2 = self.m2 + m2 + delta**2 * self.count * count / safe
        self.count = total

    def merge(self, other: LogStats) -> LogStats:
        """Fold another accumulator (for example from a second worker) into this one; returns ``self``."""
        if other.n_channels != self.n_channels:
            raise TempocodecError(f"statistics: cannot merge {other.n_channels} channels into {self.n_channels}")
        self._merge(other.count, other.mean, other.m2)
        return self

    def result(self) -> tuple[np.ndarray, np.ndarray]:
        """``(mu, sigma)`` float32 ``(n_channels,)``; sigma is floored at 1e-6. Raises if a channel saw no value."""
        if (self.count == 0).any():
            missing = np.flatnonzero(self.count == 0)
            raise TempocodecError(f"statistics: {missing.size} channels (first {missing[0]}) have no valid radiance")
        sigma = np.sqrt(self.m2 / self.count)
        return self.mean.astype(np.float32), np.maximum(sigma, SIGMA_FLOOR).astype(np.float32)


def _channel_shape(ndim: int, axis: int) -> tuple[int, ...]:
    """Broadcast shape that puts a ``(C,)`` vector on ``axis`` of an ``ndim``-dimensional array."""
    shape = [1] * ndim
    shape[axis] = -1
    return tuple(shape)


def _check(array: np.ndarray, mu: np.ndarray, sigma: np.ndarray, axis: int) -> tuple[np.ndarray, np.ndarray]:
    """``mu``, ``sigma`` as float32 shaped to broadcast along ``axis`` of ``array``; raise on a channel mismatch."""
    mu = np.asarray(mu, np.float32)
    sigma = np.asarray(sigma, np.float32)
    if array.ndim == 0 or mu.shape != (array.shape[axis],) or sigma.shape != mu.shape:
        raise TempocodecError(
            f"normalization: array {array.shape} axis {axis} does not match mu {mu.shape} / sigma {sigma.shape}"
        )
    shape = _channel_shape(array.ndim, axis)
    return mu.reshape(shape), sigma.reshape(shape)


def _output(shape: tuple[int, ...], out: np.ndarray | None) -> np.ndarray:
    """``out`` checked to be float32 of ``shape`` (any strides), or a new float32 array."""
    if out is None:
        return np.empty(shape, np.float32)
    if out.shape != shape or out.dtype != np.float32:
        raise TempocodecError(f"normalization: out array is {out.dtype} {out.shape}, expected float32 {shape}")
    return out


def normalize(radiance: np.ndarray, mu: np.ndarray, sigma: np.ndarray, axis: int = -1,
              out: np.ndarray | None = None, valid: np.ndarray | None = None) -> np.ndarray:
    """Radiance (any shape, channels on ``axis``) -> normalized float32 of the same shape.

    ``x = clip((log(max(L, 1)) - mu) / sigma, -10, 10)``; invalid values give 0: those outside ``valid`` (bool of
    the same shape, a caller's stricter test) when given, else those :func:`is_valid` rejects. ``out``, if given, is
    a float32 array of the same shape that receives the result (it may be a strided view, for example a transposed
    view of a channels-first buffer) and is returned.
    """
    radiance = np.asarray(radiance)
    mu, sigma = _check(radiance, mu, sigma, axis)
    x = _output(radiance.shape, out)
    np.maximum(radiance, np.float32(1.0), out=x, casting="same_kind")
    np.log(x, out=x)
    x -= mu
    x *= np.float32(1.0) / sigma
    np.clip(x, -CLIP, CLIP, out=x)
    if valid is not None:
        if not valid.all():
            np.copyto(x, np.float32(0.0), where=~valid)
    elif radiance.size and not (radiance.min() > -INVALID_ABOVE and radiance.max() < INVALID_ABOVE):
        np.copyto(x, np.float32(0.0), where=~is_valid(radiance))
    return x


def denormalize(x: np.ndarray, mu: np.ndarray, sigma: np.ndarray, axis: int = -1,
                out: np.ndarray | None = None) -> np.ndarray:
    """Normalized values (any shape, channels on ``axis``) -> radiance float32 ``exp(x * sigma + mu)``.

    The inverse of :func:`normalize` for valid radiance ``>= 1`` whose normalized value lies inside [-10, 10].
    ``out`` works as in :func:`normalize`.
    """
    x = np.asarray(x)
    mu, sigma = _check(x, mu, sigma, axis)
    radiance = _output(x.shape, out)
    np.multiply(x, sigma, out=radiance, casting="same_kind")
    radiance += mu
    return np.exp(radiance, out=radiance)
