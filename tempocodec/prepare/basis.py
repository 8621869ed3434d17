"""A spectral basis for normalized radiance: principal components of log radiance (numpy only).

Normalized radiance ``x`` (``tempocodec.prepare.normalize``, ``(…, C)`` with ``C`` channels) is weighted per channel
into ``u = weights ⊙ x``; with ``weights = sigma`` (the default), ``u = log L − mu`` is in log-radiance units, so an
error in ``u`` is a relative radiance error. The basis holds the leading ``K`` orthonormal principal directions of
``u`` (rows of ``components``, ``(K, C)``) and the standard deviation of each coefficient over the fit data
(``scales``, ``(K,)``), so that the whitened coefficients ``p = (components @ u) / scales`` have unit variance.

Both maps are linear and are folded into the model's ONNX graphs as 1×1 convolutions:
``p = project @ x`` with ``project = components ⊙ weights / scales`` ``(K, C)`` and ``x̂ = expand @ p`` with
``expand = (components ⊙ scales)ᵀ / weights`` ``(C, K)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tempocodec.errors import TempocodecError
from tempocodec.prepare.normalize import SIGMA_FLOOR, is_valid


@dataclass(frozen=True)
class SpectralBasis:
    """``components`` float32 ``(K, C)`` orthonormal rows; ``weights`` float32 ``(C,)``; ``scales`` float32 ``(K,)``;
    ``explained`` float64 ``(K,)``: share of the fit data's total variance of ``u`` per component."""

    components: np.ndarray
    weights: np.ndarray
    scales: np.ndarray
    explained: np.ndarray

    @property
    def project(self) -> np.ndarray:
        """float32 ``(K, C)``: normalized radiance ``x`` -> whitened coefficients ``p``."""
        return (self.components * self.weights[None, :] / self.scales[:, None]).astype(np.float32)

    @property
    def expand(self) -> np.ndarray:
        """float32 ``(C, K)``: whitened coefficients ``p`` -> normalized radiance ``x̂`` (in the basis' span)."""
        return ((self.components * self.scales[:, None]).T / self.weights[:, None]).astype(np.float32)


class LogMoments:
    """Count, sum ``(C,)`` and outer-product sum ``(C, C)`` of ``log(max(L, 1))`` over fully valid spectra (float64),
    mergeable in any order; radiance ``L`` in photons s⁻¹ cm⁻² nm⁻¹ sr⁻¹."""

    def __init__(self, n_channels: int) -> None:
        self.count = 0
        self.total = np.zeros(n_channels)
        self.outer = np.zeros((n_channels, n_channels))

    def update(self, radiance: np.ndarray) -> LogMoments:
        """Add the spectra ``radiance`` ``(n, C)`` whose every channel is valid (:func:`is_valid`, ``L > 0``)."""
        if radiance.ndim != 2 or radiance.shape[1] != self.total.shape[0]:
            raise TempocodecError(f"basis: spectra must be (n, {self.total.shape[0]}), got {radiance.shape}")
        rows = radiance[(is_valid(radiance) & (radiance > 0)).all(axis=1)]
        logs = np.log(np.maximum(rows.astype(np.float64), 1.0))
        self.count += logs.shape[0]
        self.total += logs.sum(axis=0)
        self.outer += logs.T @ logs
        return self

    def merge(self, other: LogMoments) -> LogMoments:
        """Add another accumulator's moments into this one."""
        self.count += other.count
        self.total += other.total
        self.outer += other.outer
        return self

    def mean_std(self) -> tuple[np.ndarray, np.ndarray]:
        """float32 ``mu``, ``sigma`` ``(C,)`` of log radiance (the normalization of :mod:`tempocodec.prepare.normalize`)."""
        mean, covariance = self._mean_covariance()
        return mean.astype(np.float32), np.sqrt(np.maximum(np.diag(covariance), SIGMA_FLOOR**2)).astype(np.float32)

    def basis(self, n_components: int) -> SpectralBasis:
        """The leading ``n_components`` principal directions of ``u = log L − mu`` (weights ``sigma``)."""
        n_channels = self.total.shape[0]
        if self.count < 2 or not 1 <= n_components <= n_channels:
            raise TempocodecError(f"basis: {n_components} components from {self.count} spectra of {n_channels} channels")
        _, covariance = self._mean_covariance()
        values, vectors = np.linalg.eigh(covariance)
        order = np.argsort(values)[::-1][:n_components]
        components = vectors[:, order].T
        components *= np.where(components.sum(axis=1, keepdims=True) < 0, -1.0, 1.0)  # a deterministic sign
        variance = np.maximum(values[order], 1e-20)
        return SpectralBasis(components=components.astype(np.float32), weights=self.mean_std()[1],
                             scales=np.sqrt(variance).astype(np.float32),
                             explained=variance / max(float(np.maximum(values, 0).sum()), 1e-30))

    def _mean_covariance(self) -> tuple[np.ndarray, np.ndarray]:
        if self.count < 2:
            raise TempocodecError(f"basis: statistics need at least 2 valid spectra, got {self.count}")
        mean = self.total / self.count
        return mean, self.outer / self.count - np.outer(mean, mean)
