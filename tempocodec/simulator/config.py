"""What to simulate: the scene configuration, the noise model and the band selection."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from tempocodec.bands import BAND_CHOICES, BANDS
from tempocodec.errors import TempocodecError


@dataclass(frozen=True)
class NoiseModel:
    """Signal-dependent noise: ``σ² = L/g + (g_r/g)² + (L/SNR_max)²``.

    ``g`` = ``electrons_per_unit`` converts radiance to photo-electrons (shot noise), ``read_electrons`` is the
    read floor, ``snr_ceiling`` caps the SNR of bright scenes (co-adding and calibration residuals). Defaults
    give SNR ~700 at 1.5e13, ~150 at 1e11 and ~55 at 1e10 photons s⁻¹ cm⁻² nm⁻¹ sr⁻¹.
    """

    electrons_per_unit: float = 3.0e-7
    read_electrons: float = 30.0
    snr_ceiling: float = 800.0

    def sigma(self, radiance: np.ndarray) -> np.ndarray:
        """1-σ noise of ``radiance`` (same shape and float dtype)."""
        radiance = np.asarray(radiance)
        dtype = radiance.dtype if radiance.dtype.kind == "f" else np.dtype(np.float64)
        g = dtype.type(self.electrons_per_unit)
        floor = dtype.type((self.read_electrons / self.electrons_per_unit) ** 2)
        ceiling = dtype.type(1.0 / self.snr_ceiling**2)
        positive = np.maximum(radiance, dtype.type(0))
        return np.sqrt(positive / g + floor + positive * positive * ceiling)


@dataclass(frozen=True)
class SceneConfig:
    """What a simulated granule looks like. ``rows`` mirror steps × ``cols`` cross-track pixels, ``seed`` ≥ 0.

    ``missing_step_probability``: chance that one whole mirror step is missing (fill, ``missing_data``);
    ``dropout_fraction``: share of pixels whose whole spectrum is missing; ``bad_detector_fraction``: share of
    (xtrack, channel) detector pixels flagged ``bad_pixel`` with fill in every step; ``transient_fraction``: share
    of samples hit by a transient (a spike, flagged ``transient_pixel``, value kept). ``cloud_cover``: share of
    the scene under cloud decks (None: drawn per scene). ``lat_range``/``lon_range``: where the granule centre
    may fall (degrees); ``sza_range``: the solar zenith angle (degrees) the granule centre must have at the middle
    of the scan (dates and times are redrawn until it does, up to 200 draws).
    """

    rows: int
    cols: int
    seed: int
    noise: NoiseModel = field(default_factory=NoiseModel)
    missing_step_probability: float = 0.25
    dropout_fraction: float = 1e-4
    bad_detector_fraction: float = 2e-4
    transient_fraction: float = 1e-5
    cloud_cover: float | None = None
    lat_range: tuple[float, float] = (26.0, 49.0)
    lon_range: tuple[float, float] = (-122.0, -72.0)
    sza_range: tuple[float, float] = (0.0, 75.0)

    def __post_init__(self) -> None:
        for label, value in (("rows", self.rows), ("cols", self.cols)):
            if not isinstance(value, (int, np.integer)) or value < 1:
                raise TempocodecError(f"simulate: {label} must be a positive integer, got {value!r}")
        if not isinstance(self.seed, (int, np.integer)) or self.seed < 0:
            raise TempocodecError(f"simulate: seed must be a non-negative integer, got {self.seed!r}")
        if self.cloud_cover is not None and not 0.0 <= self.cloud_cover <= 1.0:
            raise TempocodecError(f"simulate: cloud_cover must be in [0, 1], got {self.cloud_cover}")
        if not 0.0 <= self.sza_range[0] < self.sza_range[1] <= 85.0:
            raise TempocodecError(f"simulate: sza_range must satisfy 0 <= low < high <= 85, got {self.sza_range}")


def resolve_bands(bands: str | Sequence[str]) -> tuple[str, ...]:
    """Band group names from "uv", "vis", "all" or a sequence of band names (kept in :data:`BANDS` order)."""
    if isinstance(bands, str):
        if bands in BAND_CHOICES:
            return BAND_CHOICES[bands]
        bands = (bands,)
    unknown = [b for b in bands if b not in BANDS]
    if unknown or not bands:
        raise TempocodecError(f"simulate: unknown band(s) {', '.join(map(repr, unknown)) or '(none given)'}; "
                              f"use uv, vis, all or {', '.join(BANDS)}")
    return tuple(b for b in BANDS if b in bands)
