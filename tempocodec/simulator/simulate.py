"""A physically based, fast simulator of TEMPO Level-1B granules with Level-2 "truth" (numpy only).

It is a tool for tests and training, not a retrieval-grade radiative transfer code; ``docs/simulator.md`` states
its physics, approximations, magnitudes and data sources. In short, per pixel (independent pixel approximation):

    L(λ) = F0(λ) (1 AU/d)² μ0/π · [R_up(λ) + (R0(λ) - R_up0(λ)) e^{-m τ_O3(λ)}] · exp(-Σ_g SCD_g σ_g(λ) + ε ring(λ))

with ``R0 = (1 - f) R(τ_R p_s/p0, A) + f R(τ_R p_c/p0, 0.8)`` the Rayleigh + Lambertian-surface reflectance of
the clear and cloudy parts (cloud fraction ``f``), ``m = 1/μ0 + 1/μ`` the geometric air mass, ``R_up`` the single
scattering from the ozone layer (which keeps the UV below 310 nm at realistic levels), slant columns ``SCD_g`` =
vertical column × air mass factor, and a rotational-Raman (Ring) filling-in. Noise: photon shot noise, a read
floor and a relative ceiling (see :class:`NoiseModel`); its 1-σ is written as ``radiance_error``.

Shapes: scene fields are ``(mirror_step, xtrack)`` = ``(rows, cols)``; radiance is float32
``(rows, cols, 1028)`` in photons s⁻¹ cm⁻² nm⁻¹ sr⁻¹. Everything is deterministic for a seed.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import xarray as xr
from scipy.fft import next_fast_len
from scipy.special import ndtri

from tempocodec.errors import TempocodecError
from tempocodec.granule.l1b import (
    BANDS,
    GEO_FILL,
    L1B_BAND_VARS,
    RADIANCE_FILL,
    RADIANCE_UNITS,
    L1BGranule,
    write_l1b,
)
from tempocodec.granule.naming import l1b_filename
from tempocodec.granule.netcdf import INT16_FILL, INT32_FILL, TEMPO_EPOCH, TIME_UNITS
from tempocodec.granule.l2 import FLOAT_FILL, L2Granule, l2_filename, write_l2
from tempocodec.science.spectroscopy import (
    CROSS_SECTION_UNITS,
    CROSS_SECTIONS,
    N_CHANNELS,
    O3_REFERENCE_TEMPERATURE_K,
    STANDARD_PRESSURE_HPA,
    band_spectra,
    nominal_wavelength,
    rayleigh_optical_depth,
)

# ------------------------------------------------------------------------------------------------ constants

LEAP_SECONDS = 18.0  # TEMPO time counts leap seconds since 1980-01-06 (GPS-like); 18 s since 2017
AU_M = 1.495978707e11
SATELLITE_LON_DEG = -91.0  # TEMPO on Intelsat 40e
GEO_RADIUS_KM = 42164.16
R_EQ_KM = 6378.137
R_POL_KM = 6356.75231
MIRROR_STEP_RAD = 126e-6  # east-west step: ~4.75 km at the centre of the field of regard
XTRACK_RAD = 40e-6  # north-south pixel: ~2.0 km at the centre of the field of regard
STEP_SECONDS = 3.0
EXPOSURE_SECONDS = np.float32(2.85)
STEPS_PER_GRANULE = 131
DU = 2.687e16  # molecules cm-2
O2_COLUMN = 4.50e24  # molecules cm-2 at 1013.25 hPa
O4_COLUMN = 1.4e43  # molecules2 cm-5 at 1013.25 hPa
H2O_PER_G_CM2 = 3.3428e22  # molecules cm-2 per g cm-2 of precipitable water
CLOUD_ALBEDO = 0.8
MULTIPLE_SCATTERING = 1.3  # R_atm = single scattering x (1 + 1.3 tau)
OZONE_LAYER_RAYLEIGH_FRACTION = 0.06  # share of the Rayleigh optical depth in and above the ozone layer
RAMAN_FRACTION = 0.04  # rotational Raman share of Rayleigh scattering (Ring filling-in)
PIXELS_PER_BLOCK = 256  # the forward model works on blocks of about this many pixels (whole mirror steps)
NODE_STEP = 8  # channels between the nodes of the spectrally smooth terms
# fraction of a gas's column that photons scattered in the atmosphere (not at the surface) see, per gas
PATH_SENSITIVITY = {"bl": 0.3, "o4": 0.6, "h2o": 0.45, "o2": 0.75}
REFERENCE_NM = {"no2": 440.0, "hcho": 340.0, "o4": 477.0, "h2o": 650.0, "o2": 690.0, "ring": 400.0,
                "o3": 331.0, "o3_360": 360.0, "cld466": 466.0}
ERROR_DIGITS = 2  # radiance_error is stored with 2 significant digits, like the newest TEMPO L1B writer
FLAG_MISSING, FLAG_BAD, FLAG_TRANSIENT, FLAG_UNDERFLOW = 1, 2, 8, 64
BAND_ALIASES = {"uv": (BANDS[0],), "vis": (BANDS[1],), "all": BANDS}

# Surface types and their albedo spectra A(λ), λ in nm (see docs/simulator.md).
SURFACES = ("water", "vegetation", "soil", "urban", "snow")


def surface_albedo(wavelength_nm: np.ndarray) -> np.ndarray:
    """Albedo spectra of :data:`SURFACES`, float64 ``(5, n)`` for wavelengths ``(n,)`` in nm."""
    lam = np.asarray(wavelength_nm, dtype=np.float64)
    water = 0.02 + 0.045 * np.exp(-(lam - 300.0) / 150.0)
    vegetation = 0.03 + 0.04 * np.exp(-(((lam - 555.0) / 35.0) ** 2)) + 0.38 / (1.0 + np.exp(-(lam - 705.0) / 10.0))
    soil = 0.08 + 0.22 * (lam - 300.0) / 440.0
    urban = 0.08 + 0.08 * (lam - 300.0) / 440.0
    snow = 0.95 - 0.08 * (lam - 300.0) / 440.0
    return np.stack([water, vegetation, soil, urban, snow])


# ------------------------------------------------------------------------------------------------ configuration


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
        dtype = radiance.dtype if radiance.dtype.kind == "f" else np.float64
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
    may fall (degrees).
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

    def __post_init__(self) -> None:
        for label, value in (("rows", self.rows), ("cols", self.cols)):
            if not isinstance(value, (int, np.integer)) or value < 1:
                raise TempocodecError(f"simulate: {label} must be a positive integer, got {value!r}")
        if not isinstance(self.seed, (int, np.integer)) or self.seed < 0:
            raise TempocodecError(f"simulate: seed must be a non-negative integer, got {self.seed!r}")
        if self.cloud_cover is not None and not 0.0 <= self.cloud_cover <= 1.0:
            raise TempocodecError(f"simulate: cloud_cover must be in [0, 1], got {self.cloud_cover}")


# ------------------------------------------------------------------------------------------------ random fields


def correlated_field(rng: np.random.Generator, shape: tuple[int, int], spacing_km: tuple[float, float],
                     length_km: float) -> np.ndarray:
    """A zero-mean, unit-variance Gaussian random field ``shape`` with Gaussian correlation of ``length_km``.

    White noise on a padded grid (so the field is not periodic over the granule) is filtered in Fourier space
    with ``exp(-2π² L² |f|²)`` and divided by its theoretical standard deviation, so a field much longer than the
    granule shows up as a near-constant offset, as it should. ``spacing_km``: pixel size along (rows, cols).
    """
    padded = [next_fast_len(n + min(int(math.ceil(3.0 * length_km / d)), 768)) for n, d in zip(shape, spacing_km, strict=True)]
    noise = rng.standard_normal(padded)
    f0 = np.fft.fftfreq(padded[0], d=spacing_km[0])[:, None]
    f1 = np.fft.rfftfreq(padded[1], d=spacing_km[1])[None, :]
    transfer = np.exp(-2.0 * np.pi**2 * length_km**2 * (f0**2 + f1**2))
    field_ = np.fft.irfft2(np.fft.rfft2(noise) * transfer, s=padded)
    full = np.exp(-2.0 * np.pi**2 * length_km**2 * (f0**2 + np.fft.fftfreq(padded[1], d=spacing_km[1])[None, :] ** 2))
    return field_[: shape[0], : shape[1]] / np.sqrt(np.mean(full**2))


def _sigmoid(x: np.ndarray) -> np.ndarray:
    """Logistic function."""
    return 0.5 * (1.0 + np.tanh(0.5 * np.asarray(x)))


# ------------------------------------------------------------------------------------------------ geometry


@dataclass(frozen=True)
class Geometry:
    """Where and when each pixel is, and the sun-satellite angles (degrees; azimuths clockwise from north).

    ``latitude``/``longitude``/angles: float64 ``(rows, cols)``; ``*_bounds``: ``(rows, cols, 4)`` corners in
    L1B order (NE, NW, SW, SE); ``time``: float64 ``(rows,)`` TEMPO seconds since 1980-01-06;
    ``start``: UTC datetime of the first step; ``earth_sun_distance``: m; ``spacing_km``: pixel size along
    (rows, cols) at the granule centre.
    """

    latitude: np.ndarray
    longitude: np.ndarray
    latitude_bounds: np.ndarray
    longitude_bounds: np.ndarray
    solar_zenith: np.ndarray
    solar_azimuth: np.ndarray
    viewing_zenith: np.ndarray
    viewing_azimuth: np.ndarray
    time: np.ndarray
    start: datetime
    earth_sun_distance: float
    spacing_km: tuple[float, float]

    @property
    def mu0(self) -> np.ndarray:
        """cos(SZA), floored at cos(88°) so pixels near the terminator stay finite."""
        return np.maximum(np.cos(np.radians(self.solar_zenith)), np.cos(np.radians(88.0)))

    @property
    def mu(self) -> np.ndarray:
        """cos(VZA)."""
        return np.cos(np.radians(self.viewing_zenith))

    @property
    def air_mass(self) -> np.ndarray:
        """Geometric air mass factor 1/μ0 + 1/μ."""
        return 1.0 / self.mu0 + 1.0 / self.mu

    @property
    def relative_azimuth(self) -> np.ndarray:
        """|solar − viewing azimuth| folded into [0, 180] degrees (0: sun behind the satellite, backscatter)."""
        diff = np.abs(self.solar_azimuth - self.viewing_azimuth) % 360.0
        return np.where(diff > 180.0, 360.0 - diff, diff)

    @property
    def rayleigh_phase(self) -> np.ndarray:
        """Rayleigh phase function 3/4 (1 + cos²Θ) at the scattering angle Θ between sun and satellite directions."""
        t0, t1 = np.radians(self.solar_zenith), np.radians(self.viewing_zenith)
        cos_theta = -(np.cos(t0) * np.cos(t1) + np.sin(t0) * np.sin(t1) * np.cos(np.radians(self.relative_azimuth)))
        return 0.75 * (1.0 + cos_theta**2)


def geo_to_latlon(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Geostationary scan angles (rad; x east-west, positive east; y north-south) → geodetic lat, lon (degrees).

    The fixed-grid projection of the GOES-R product user guide with TEMPO's sub-satellite longitude; off-Earth
    angles give NaN.
    """
    a = np.sin(x) ** 2 + np.cos(x) ** 2 * (np.cos(y) ** 2 + (R_EQ_KM / R_POL_KM) ** 2 * np.sin(y) ** 2)
    b = -2.0 * GEO_RADIUS_KM * np.cos(x) * np.cos(y)
    c = GEO_RADIUS_KM**2 - R_EQ_KM**2
    disc = b * b - 4.0 * a * c
    r_s = (-b - np.sqrt(np.where(disc >= 0, disc, np.nan))) / (2.0 * a)
    s_x = r_s * np.cos(x) * np.cos(y)
    s_y = -r_s * np.sin(x)
    s_z = r_s * np.cos(x) * np.sin(y)
    lat = np.degrees(np.arctan((R_EQ_KM / R_POL_KM) ** 2 * s_z / np.hypot(GEO_RADIUS_KM - s_x, s_y)))
    lon = SATELLITE_LON_DEG - np.degrees(np.arctan(s_y / (GEO_RADIUS_KM - s_x)))
    return lat, lon


def latlon_to_geo(lat: float, lon: float) -> tuple[float, float]:
    """Inverse of :func:`geo_to_latlon` for one point: geodetic (degrees) → scan angles (x, y) in rad."""
    e2 = 1.0 - (R_POL_KM / R_EQ_KM) ** 2
    phi_c = math.atan((R_POL_KM / R_EQ_KM) ** 2 * math.tan(math.radians(lat)))
    r_c = R_POL_KM / math.sqrt(1.0 - e2 * math.cos(phi_c) ** 2)
    dlon = math.radians(lon - SATELLITE_LON_DEG)
    s_x = GEO_RADIUS_KM - r_c * math.cos(phi_c) * math.cos(dlon)
    s_y = -r_c * math.cos(phi_c) * math.sin(dlon)
    s_z = r_c * math.sin(phi_c)
    return math.asin(-s_y / math.sqrt(s_x**2 + s_y**2 + s_z**2)), math.atan(s_z / s_x)


def viewing_angles(lat: np.ndarray, lon: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Viewing zenith and azimuth (degrees, azimuth of the satellite seen from the pixel) on the WGS-84 ellipsoid."""
    e2 = 1.0 - (R_POL_KM / R_EQ_KM) ** 2
    phi, dlon = np.radians(lat), np.radians(lon - SATELLITE_LON_DEG)
    n = R_EQ_KM / np.sqrt(1.0 - e2 * np.sin(phi) ** 2)
    pos = np.stack([n * np.cos(phi) * np.cos(dlon), n * np.cos(phi) * np.sin(dlon), n * (1.0 - e2) * np.sin(phi)])
    to_sat = np.array([GEO_RADIUS_KM, 0.0, 0.0]).reshape(3, *([1] * lat.ndim)) - pos
    up = np.stack([np.cos(phi) * np.cos(dlon), np.cos(phi) * np.sin(dlon), np.sin(phi)])
    east = np.stack([-np.sin(dlon), np.cos(dlon), np.zeros_like(dlon)])
    north = np.stack([-np.sin(phi) * np.cos(dlon), -np.sin(phi) * np.sin(dlon), np.cos(phi)])
    dist = np.sqrt((to_sat**2).sum(axis=0))
    vza = np.degrees(np.arccos(np.clip((to_sat * up).sum(axis=0) / dist, -1.0, 1.0)))
    vaa = np.degrees(np.arctan2((to_sat * east).sum(axis=0), (to_sat * north).sum(axis=0)))
    return vza, vaa


def solar_angles(lat: np.ndarray, lon: np.ndarray, when: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Solar zenith and azimuth (degrees) from the NOAA general solar position formulas.

    ``when``: UTC as float64 seconds since 1970-01-01, broadcastable to ``lat``. Accuracy ~0.1°.
    """
    days = np.asarray(when) / 86400.0
    day_of_year = np.floor(days - _days_to_year_start(days)) + 1.0
    hours = (days % 1.0) * 24.0
    gamma = 2.0 * np.pi / 365.0 * (day_of_year - 1.0 + (hours - 12.0) / 24.0)
    eqtime = 229.18 * (0.000075 + 0.001868 * np.cos(gamma) - 0.032077 * np.sin(gamma)
                       - 0.014615 * np.cos(2 * gamma) - 0.040849 * np.sin(2 * gamma))
    decl = (0.006918 - 0.399912 * np.cos(gamma) + 0.070257 * np.sin(gamma) - 0.006758 * np.cos(2 * gamma)
            + 0.000907 * np.sin(2 * gamma) - 0.002697 * np.cos(3 * gamma) + 0.00148 * np.sin(3 * gamma))
    true_solar_minutes = hours * 60.0 + eqtime + 4.0 * np.asarray(lon)
    hour_angle = np.radians(true_solar_minutes / 4.0 - 180.0)
    phi = np.radians(lat)
    east = -np.cos(decl) * np.sin(hour_angle)
    north = np.sin(decl) * np.cos(phi) - np.cos(decl) * np.sin(phi) * np.cos(hour_angle)
    up = np.sin(decl) * np.sin(phi) + np.cos(decl) * np.cos(phi) * np.cos(hour_angle)
    return np.degrees(np.arccos(np.clip(up, -1.0, 1.0))), np.degrees(np.arctan2(east, north))


def _days_to_year_start(days: np.ndarray) -> np.ndarray:
    """Days since 1970-01-01 at the start of the calendar year containing each of ``days``."""
    dates = np.asarray(days * 86400.0, dtype="datetime64[s]")
    return dates.astype("datetime64[Y]").astype("datetime64[D]").astype(np.float64)


def earth_sun_distance(when: datetime) -> float:
    """Earth-sun distance in m on the date of ``when`` (NOAA eccentricity correction)."""
    gamma = 2.0 * math.pi / 365.0 * (when.timetuple().tm_yday - 1)
    factor = (1.00011 + 0.034221 * math.cos(gamma) + 0.00128 * math.sin(gamma)
              + 0.000719 * math.cos(2 * gamma) + 0.000077 * math.sin(2 * gamma))
    return AU_M / math.sqrt(factor)


def tempo_seconds(when: datetime) -> float:
    """TEMPO time of a UTC datetime: seconds since 1980-01-06T00:00:00Z plus the leap seconds since then."""
    return (when - TEMPO_EPOCH).total_seconds() + LEAP_SECONDS


def make_geometry(rng: np.random.Generator, config: SceneConfig) -> Geometry:
    """Granule centre, date and time drawn from ``rng``: an east-to-west scan of ``rows`` mirror steps, each a
    north-south slit of ``cols`` pixels (xtrack increasing northward), daytime with centre SZA ≤ 75°."""
    rows, cols = config.rows, config.cols
    lat_c = rng.uniform(*config.lat_range)
    lon_c = rng.uniform(*config.lon_range)
    first_day = datetime(2023, 8, 2, tzinfo=UTC)
    for _ in range(50):
        day = first_day + timedelta(days=int(rng.integers(0, 880)))
        local_hours = rng.uniform(8.5, 16.0)
        start = day + timedelta(hours=local_hours - lon_c / 15.0 - rows * STEP_SECONDS / 7200.0)
        start = start.replace(microsecond=0)
        middle = start.timestamp() + rows * STEP_SECONDS / 2.0
        if solar_angles(np.array(lat_c), np.array(lon_c), np.array(middle))[0] <= 75.0:
            break
    x_c, y_c = latlon_to_geo(lat_c, lon_c)
    k = np.arange(rows + 1, dtype=np.float64) - 0.5
    j = np.arange(cols + 1, dtype=np.float64) - 0.5
    x_edges = x_c + ((rows - 1) / 2.0 - k) * MIRROR_STEP_RAD
    y_edges = y_c + (j - (cols - 1) / 2.0) * XTRACK_RAD
    x_mid = x_c + ((rows - 1) / 2.0 - np.arange(rows)) * MIRROR_STEP_RAD
    y_mid = y_c + (np.arange(cols) - (cols - 1) / 2.0) * XTRACK_RAD
    lat, lon = geo_to_latlon(x_mid[:, None], y_mid[None, :])
    lat_e, lon_e = geo_to_latlon(x_edges[:, None], y_edges[None, :])
    # corners NE, NW, SW, SE: east is the smaller step index, north the larger xtrack index
    corner_index = [(slice(None, -1), slice(1, None)), (slice(1, None), slice(1, None)),
                    (slice(1, None), slice(None, -1)), (slice(None, -1), slice(None, -1))]
    lat_b = np.stack([lat_e[r, c] for r, c in corner_index], axis=-1)
    lon_b = np.stack([lon_e[r, c] for r, c in corner_index], axis=-1)
    seconds = start.timestamp() + STEP_SECONDS * np.arange(rows, dtype=np.float64)
    sza, saa = solar_angles(lat, lon, seconds[:, None])
    vza, vaa = viewing_angles(lat, lon)
    spacing = (_distance_km(lat_e[0, 0], lon_e[0, 0], lat_e[1, 0], lon_e[1, 0]),
               _distance_km(lat_e[0, 0], lon_e[0, 0], lat_e[0, 1], lon_e[0, 1]))
    return Geometry(latitude=lat, longitude=lon, latitude_bounds=lat_b, longitude_bounds=lon_b,
                    solar_zenith=sza, solar_azimuth=saa, viewing_zenith=vza, viewing_azimuth=vaa,
                    time=tempo_seconds(start) + STEP_SECONDS * np.arange(rows, dtype=np.float64), start=start,
                    earth_sun_distance=earth_sun_distance(start), spacing_km=spacing)


def _distance_km(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Great-circle distance (km) on a sphere of the mean Earth radius."""
    p1, p2, dl = math.radians(lat1), math.radians(lat2), math.radians(lon2 - lon1)
    c = math.sin(p1) * math.sin(p2) + math.cos(p1) * math.cos(p2) * math.cos(dl)
    return 6371.0 * math.acos(max(-1.0, min(1.0, c)))


# ------------------------------------------------------------------------------------------------ scene


@dataclass(frozen=True)
class Scene:
    """The geophysical state of every pixel, float64 ``(rows, cols)`` unless noted.

    ``surface_weights``: ``(rows, cols, 5)`` fractions of :data:`SURFACES`; ``albedo_texture``: multiplier of the
    albedo spectra; ``terrain_height`` m; ``surface_pressure``/``cloud_pressure`` hPa; ``cloud_fraction`` effective
    (cloud albedo 0.8); ``o3`` DU and ``o3_temperature`` K; ``no2_troposphere``, ``no2_stratosphere``, ``hcho``,
    ``h2o`` molecules cm⁻²; ``missing_steps``: bool ``(rows,)``; ``dropouts``: bool ``(rows, cols)``;
    ``band_seeds``: per band, the seeds of its noise and of its detector defects.
    """

    config: SceneConfig
    geometry: Geometry
    surface_weights: np.ndarray
    albedo_texture: np.ndarray
    terrain_height: np.ndarray
    surface_pressure: np.ndarray
    cloud_fraction: np.ndarray
    cloud_pressure: np.ndarray
    o3: np.ndarray
    o3_temperature: np.ndarray
    no2_troposphere: np.ndarray
    no2_stratosphere: np.ndarray
    hcho: np.ndarray
    h2o: np.ndarray
    missing_steps: np.ndarray
    dropouts: np.ndarray
    band_seeds: dict[str, tuple[np.random.SeedSequence, np.random.SeedSequence]]

    @property
    def shape(self) -> tuple[int, int]:
        """``(rows, cols)``."""
        return self.config.rows, self.config.cols

    @property
    def snow_fraction(self) -> np.ndarray:
        """Snow-covered share of each pixel."""
        return self.surface_weights[..., SURFACES.index("snow")]

    def albedo(self, wavelength_nm: np.ndarray) -> np.ndarray:
        """Surface albedo ``(rows, cols, n)`` at wavelengths ``(n,)`` nm: type mixture × texture, capped at 0.98."""
        spectra = surface_albedo(np.atleast_1d(wavelength_nm))
        return np.minimum(np.einsum("rct,tn->rcn", self.surface_weights, spectra) * self.albedo_texture[..., None], 0.98)

    def invalid_pixels(self) -> np.ndarray:
        """Bool ``(rows, cols)``: pixels with no radiance (missing mirror steps and dropouts)."""
        return self.missing_steps[:, None] | self.dropouts


def _scaled_field(rng: np.random.Generator, geometry: Geometry, shape: tuple[int, int],
                  components: Sequence[tuple[float, float]]) -> np.ndarray:
    """Unit-variance sum of correlated fields: ``components`` = (length km, weight) pairs."""
    total = sum(w * correlated_field(rng, shape, geometry.spacing_km, length) for length, w in components)
    return total / math.sqrt(sum(w * w for _, w in components))


def _pixel_km(shape: tuple[int, int], spacing: tuple[float, float]) -> tuple[np.ndarray, np.ndarray]:
    """Local flat coordinates (km) of pixel centres along rows and cols, ``(rows, 1)`` and ``(1, cols)``."""
    return (np.arange(shape[0], dtype=np.float64)[:, None] * spacing[0],
            np.arange(shape[1], dtype=np.float64)[None, :] * spacing[1])


def _random_pixels(rng: np.random.Generator, weight: np.ndarray, count: int) -> list[tuple[int, int]]:
    """``count`` pixel indices drawn with probability proportional to ``weight`` (none when it sums to 0)."""
    flat = np.clip(weight, 0.0, None).ravel()
    if count <= 0 or flat.sum() <= 0:
        return []
    picks = rng.choice(flat.size, size=count, p=flat / flat.sum())
    return [tuple(int(v) for v in np.unravel_index(p, weight.shape)) for p in picks]


def make_surface(rng: np.random.Generator, geometry: Geometry, shape: tuple[int, int]) -> dict[str, np.ndarray]:
    """Surface types (water, vegetation, soil, urban, snow) with sharp coastlines, city blobs, terrain and texture."""
    area = shape[0] * shape[1] * geometry.spacing_km[0] * geometry.spacing_km[1]
    land_field = _scaled_field(rng, geometry, shape, [(300.0, 0.8), (60.0, 0.6), (12.0, 0.3)])
    water_share = 0.0 if rng.random() < 0.25 else rng.uniform(0.02, 0.45)
    water = _sigmoid((ndtri(max(water_share, 1e-6)) - land_field) / 0.05) if water_share > 0 else np.zeros(shape)
    land = 1.0 - water
    veg_field = _scaled_field(rng, geometry, shape, [(80.0, 0.8), (15.0, 0.6)])
    vegetation = _sigmoid((veg_field - ndtri(1.0 - rng.uniform(0.3, 0.9))) / 0.3)
    relief = rng.uniform(0.1, 0.9)
    height_field = _scaled_field(rng, geometry, shape, [(150.0, 0.6), (30.0, 0.4), (8.0, 0.2)])
    terrain = 4000.0 * np.tanh(relief * np.maximum(0.0, height_field + 0.3) / 4.0) * land
    rows_km, cols_km = _pixel_km(shape, geometry.spacing_km)
    urban = np.zeros(shape)
    n_cities = int(rng.poisson(1.5 * area / 60000.0)) + int(rng.random() < 0.5)
    small = correlated_field(rng, shape, geometry.spacing_km, 5.0)
    cities = []
    for r, c in _random_pixels(rng, land, n_cities):
        radius = rng.uniform(6.0, 20.0)
        dist2 = (rows_km - rows_km[r, 0]) ** 2 + (cols_km - cols_km[0, c]) ** 2
        urban += np.exp(-dist2 / radius**2 * np.maximum(1.0 + 0.3 * small, 0.3))
        cities.append((r, c, radius))
    urban = np.clip(urban, 0.0, 0.95) * land
    snow = np.zeros(shape)
    month = geometry.start.month
    if month in (12, 1, 2, 3) and float(np.mean(geometry.latitude)) > 38.0 and rng.random() < 0.5:
        snow_field = _scaled_field(rng, geometry, shape, [(40.0, 1.0)]) + terrain / 1000.0
        snow = _sigmoid((snow_field - rng.uniform(0.0, 1.5)) / 0.2) * land
    rest = land - urban
    weights = np.stack([water, rest * vegetation, rest * (1.0 - vegetation), urban, np.zeros(shape)], axis=-1)
    weights *= (1.0 - snow)[..., None]
    weights[..., SURFACES.index("snow")] = snow
    texture = np.exp(0.12 * correlated_field(rng, shape, geometry.spacing_km, 3.0)
                     + 0.08 * correlated_field(rng, shape, geometry.spacing_km, 20.0)) ** (1.0 - 0.6 * water)
    return {"weights": weights, "texture": texture, "terrain": terrain, "cities": cities}


def make_clouds(rng: np.random.Generator, geometry: Geometry, shape: tuple[int, int], land: np.ndarray,
                surface_pressure: np.ndarray, cover: float | None) -> tuple[np.ndarray, np.ndarray]:
    """Effective cloud fraction and cloud pressure (hPa): decks with sharp edges, broken cumulus over land, haze."""
    if cover is None:
        kind = rng.random()
        cover = rng.uniform(0.0, 0.1) if kind < 0.3 else rng.uniform(0.1, 0.5) if kind < 0.8 else rng.uniform(0.5, 0.9)
    deck_field = _scaled_field(rng, geometry, shape, [(120.0, 1.0), (15.0, 0.3)])
    threshold = ndtri(1.0 - min(max(cover, 1e-6), 1.0 - 1e-6))
    excess = deck_field - threshold
    deck = _sigmoid(excess / 0.05) * (0.55 + 0.45 * np.tanh(np.maximum(excess, 0.0) / 0.3))
    cumulus = np.zeros(shape)
    if rng.random() < 0.5:
        cu_field = correlated_field(rng, shape, geometry.spacing_km, 4.0)
        cu_threshold = ndtri(1.0 - rng.uniform(0.1, 0.4))
        cumulus = _sigmoid((cu_field - cu_threshold) / 0.15) * rng.uniform(0.3, 0.8) * land
    haze = np.clip(0.02 * (1.0 + _scaled_field(rng, geometry, shape, [(300.0, 1.0)])), 0.0, 0.05)
    fraction = 1.0 - (1.0 - deck) * (1.0 - cumulus) * (1.0 - haze)
    deck_pressure = rng.uniform(350.0, 800.0) + 40.0 * _scaled_field(rng, geometry, shape, [(200.0, 1.0)])
    cumulus_pressure = rng.uniform(750.0, 880.0)
    weight = deck + cumulus + haze
    pressure = (deck * deck_pressure + cumulus * cumulus_pressure + haze * deck_pressure) / np.maximum(weight, 1e-9)
    return np.clip(fraction, 0.0, 1.0), np.clip(pressure, 200.0, surface_pressure - 30.0)


def _plumes(rng: np.random.Generator, shape: tuple[int, int], spacing: tuple[float, float],
            sources: list[tuple[int, int, float, float]]) -> np.ndarray:
    """Sum of Gaussian plumes (molecules cm⁻²) from ``sources`` = (row, col, source radius km, peak column).

    One wind direction per scene; downwind the plume widens as r0 + 0.12·a and decays as exp(-a/L) (L drawn
    40-120 km, the NO2 lifetime × wind speed); upwind it falls off as a Gaussian of the source radius.
    """
    out = np.zeros(shape)
    if not sources:
        return out
    angle = rng.uniform(0.0, 2.0 * np.pi)
    decay = rng.uniform(40.0, 120.0)
    rows_km, cols_km = _pixel_km(shape, spacing)
    for r, c, r0, peak in sources:
        dr, dc = rows_km - rows_km[r, 0], cols_km - cols_km[0, c]
        along = dr * math.cos(angle) + dc * math.sin(angle)
        across = -dr * math.sin(angle) + dc * math.cos(angle)
        width = r0 + 0.12 * np.maximum(along, 0.0)
        downwind = (r0 / width) * np.exp(-np.maximum(along, 0.0) / decay - across**2 / (2.0 * width**2))
        upwind = np.exp(-(np.minimum(along, 0.0) ** 2 + across**2) / (2.0 * r0**2))
        out += peak * np.where(along >= 0.0, downwind, upwind)
    return out


def make_gases(rng: np.random.Generator, geometry: Geometry, shape: tuple[int, int], weights: np.ndarray,
               terrain: np.ndarray, cities: list[tuple[int, int, float]]) -> dict[str, np.ndarray]:
    """Columns: O3 (DU) with synoptic gradients; NO2 background + plumes downwind of cities and power plants,
    plus stratospheric NO2; HCHO over vegetation with hot spots; H2O (molecules cm⁻²)."""
    area = shape[0] * shape[1] * geometry.spacing_km[0] * geometry.spacing_km[1]
    lat = geometry.latitude
    o3 = (rng.uniform(285.0, 345.0) + 2.0 * (lat - 35.0)
          + 25.0 * correlated_field(rng, shape, geometry.spacing_km, 700.0)
          + 8.0 * correlated_field(rng, shape, geometry.spacing_km, 150.0))
    o3_temperature = 225.0 + 4.0 * correlated_field(rng, shape, geometry.spacing_km, 1000.0) - 0.15 * (lat - 35.0)
    strat = (3.0 + 0.4 * correlated_field(rng, shape, geometry.spacing_km, 1500.0) + 0.02 * (lat - 35.0)) * 1e15
    urban = weights[..., SURFACES.index("urban")]
    vegetation = weights[..., SURFACES.index("vegetation")]
    land = 1.0 - weights[..., SURFACES.index("water")]
    background = 5e14 * np.exp(0.4 * correlated_field(rng, shape, geometry.spacing_km, 150.0)) * (1.0 + 2.0 * urban)
    sources = [(r, c, radius, rng.uniform(0.8e16, 2.0e16) * min(radius / 15.0, 1.3)) for r, c, radius in cities]
    n_plants = int(rng.poisson(area / 80000.0))
    sources += [(r, c, 3.0, rng.uniform(0.3e16, 1.2e16)) for r, c in _random_pixels(rng, land, n_plants)]
    plumes = _plumes(rng, shape, geometry.spacing_km, sources)
    no2 = background + 4e16 * np.tanh(plumes / 4e16)
    season = rng.uniform(0.3, 1.0)
    hcho = ((3.0 + 5.0 * season * vegetation) * 1e15
            * np.exp(0.2 * correlated_field(rng, shape, geometry.spacing_km, 100.0)) + 3e15 * urban)
    rows_km, cols_km = _pixel_km(shape, geometry.spacing_km)
    for r, c in _random_pixels(rng, vegetation, int(rng.poisson(1.5 * area / 40000.0 * season))):
        radius = rng.uniform(10.0, 40.0)
        dist2 = (rows_km - rows_km[r, 0]) ** 2 + (cols_km - cols_km[0, c]) ** 2
        hcho += rng.uniform(0.8e16, 2.5e16) * np.exp(-dist2 / (2.0 * radius**2))
    hcho = 4e16 * np.tanh(hcho / 4e16)
    water_vapour = rng.uniform(0.8, 4.0) * np.exp(0.3 * correlated_field(rng, shape, geometry.spacing_km, 300.0))
    h2o = water_vapour * np.exp(-terrain / 2000.0) * H2O_PER_G_CM2
    return {"o3": np.clip(o3, 250.0, 450.0), "o3_temperature": o3_temperature, "no2_stratosphere": strat,
            "no2_troposphere": no2, "hcho": hcho, "h2o": h2o}


def make_scene(config: SceneConfig) -> Scene:
    """Draw one scene (geometry, surface, clouds, gases, missing data) from ``config.seed``."""
    root = np.random.SeedSequence(config.seed)
    geo_seq, surface_seq, cloud_seq, gas_seq, flag_seq, band_seq = root.spawn(6)
    shape = (config.rows, config.cols)
    geometry = make_geometry(np.random.default_rng(geo_seq), config)
    surface = make_surface(np.random.default_rng(surface_seq), geometry, shape)
    land = 1.0 - surface["weights"][..., SURFACES.index("water")]
    pressure_rng = np.random.default_rng(cloud_seq)
    surface_pressure = (STANDARD_PRESSURE_HPA * np.exp(-surface["terrain"] / 8400.0)
                        + 6.0 * correlated_field(pressure_rng, shape, geometry.spacing_km, 1000.0))
    cloud_fraction, cloud_pressure = make_clouds(pressure_rng, geometry, shape, land, surface_pressure, config.cloud_cover)
    gases = make_gases(np.random.default_rng(gas_seq), geometry, shape, surface["weights"], surface["terrain"],
                       surface["cities"])
    flag_rng = np.random.default_rng(flag_seq)
    missing = np.zeros(config.rows, bool)
    if config.rows >= 4 and flag_rng.random() < config.missing_step_probability:
        missing[flag_rng.integers(1, config.rows - 1)] = True
    dropouts = flag_rng.random(shape) < config.dropout_fraction
    return Scene(config=config, geometry=geometry, surface_weights=surface["weights"],
                 albedo_texture=surface["texture"], terrain_height=surface["terrain"],
                 surface_pressure=surface_pressure, cloud_fraction=cloud_fraction, cloud_pressure=cloud_pressure,
                 missing_steps=missing, dropouts=dropouts,
                 band_seeds={b: tuple(seq.spawn(2)) for b, seq in zip(BANDS, band_seq.spawn(len(BANDS)), strict=True)}, **gases)


# ------------------------------------------------------------------------------------------------ radiative model


def reflectance(tau: np.ndarray, albedo: np.ndarray, mu0: np.ndarray, mu: np.ndarray,
                phase: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rayleigh atmosphere over a Lambertian surface: (path reflectance, surface term), broadcasting inputs.

    Path: single scattering ``P/(4(μ0+μ)) (1 - e^{-τ m})`` times the multiple-scattering correction ``1 + 1.3 τ``.
    Surface: ``A t(μ0) t(μ) / (1 - A s)`` with the conservative two-stream transmittance
    ``t(μ) = (2/3 + μ + (2/3 - μ) e^{-τ/μ}) / (4/3 + τ)`` and spherical albedo ``s = 3τ / (4 + 3τ)``.
    """
    one = tau.dtype.type(1.0) if isinstance(tau, np.ndarray) else 1.0
    two_thirds = one * 2.0 / 3.0
    air_mass = one / mu0 + one / mu
    path = phase / (4.0 * (mu0 + mu)) * (one - np.exp(-tau * air_mass)) * (one + MULTIPLE_SCATTERING * tau)
    denominator = one / (4.0 / 3.0 + tau)
    t0 = (two_thirds + mu0 + (two_thirds - mu0) * np.exp(-tau / mu0)) * denominator
    t1 = (two_thirds + mu + (two_thirds - mu) * np.exp(-tau / mu)) * denominator
    spherical = 3.0 * tau / (4.0 + 3.0 * tau)
    surface = albedo * t0 * t1 / (one - albedo * spherical)
    return path, surface


@dataclass(frozen=True)
class ReferenceReflectance:
    """Clear and cloudy reflectance terms of every pixel at one wavelength, float64 ``(rows, cols)``."""

    clear_path: np.ndarray
    clear_surface: np.ndarray
    cloud_path: np.ndarray
    cloud_surface: np.ndarray
    albedo: np.ndarray
    cloud_fraction: np.ndarray

    @property
    def clear(self) -> np.ndarray:
        """Reflectance of the cloud-free part."""
        return self.clear_path + self.clear_surface

    @property
    def cloud(self) -> np.ndarray:
        """Reflectance of the cloudy part."""
        return self.cloud_path + self.cloud_surface

    @property
    def total(self) -> np.ndarray:
        """IPA mixture ``(1 - f) R_clear + f R_cloud``."""
        return (1.0 - self.cloud_fraction) * self.clear + self.cloud_fraction * self.cloud

    @property
    def cloud_radiance_fraction(self) -> np.ndarray:
        """Share of the reflected light that comes from the cloudy part (IPA weight w)."""
        return self.cloud_fraction * self.cloud / self.total


def reference_reflectance(scene: Scene, wavelength_nm: float) -> ReferenceReflectance:
    """Reflectance terms at one wavelength (no absorbers), per pixel."""
    geo = scene.geometry
    tau = float(rayleigh_optical_depth(np.array(wavelength_nm)))
    albedo = scene.albedo(np.array([wavelength_nm]))[..., 0]
    clear = reflectance(tau * scene.surface_pressure / STANDARD_PRESSURE_HPA, albedo, geo.mu0, geo.mu, geo.rayleigh_phase)
    cloud = reflectance(tau * scene.cloud_pressure / STANDARD_PRESSURE_HPA, CLOUD_ALBEDO, geo.mu0, geo.mu,
                        geo.rayleigh_phase)
    return ReferenceReflectance(clear_path=clear[0], clear_surface=clear[1], cloud_path=cloud[0],
                                cloud_surface=cloud[1], albedo=albedo, cloud_fraction=scene.cloud_fraction)


def _amf(ref: ReferenceReflectance, air_mass: np.ndarray, sensitivity: float, below: np.ndarray,
         above_cloud: np.ndarray) -> np.ndarray:
    """Slant column per unit ``below`` (the clear-sky vertical column) for a gas concentrated near the ground.

    Surface-reflected light crosses the whole column along the geometric air mass; light scattered in the
    atmosphere sees only ``sensitivity`` of it. The cloudy part sees ``above_cloud`` (a column) the same way with
    the cloud as the surface. IPA: weights 1 - w and w (cloud radiance fraction).
    """
    w = ref.cloud_radiance_fraction
    clear = air_mass * (ref.clear_surface + sensitivity * ref.clear_path) / ref.clear
    cloudy = air_mass * (ref.cloud_surface + sensitivity * ref.cloud_path) / ref.cloud
    return ((1.0 - w) * clear * below + w * cloudy * above_cloud) / np.maximum(below, 1e-30)


@dataclass(frozen=True)
class SlantColumns:
    """Slant columns (molecules cm⁻², ``o4`` molecules² cm⁻⁵) and air mass factors used by the forward model,
    plus reference reflectances for the Level-2 truth; float64 ``(rows, cols)``."""

    scd: dict[str, np.ndarray]
    amf: dict[str, np.ndarray]
    ring: np.ndarray
    references: dict[str, ReferenceReflectance]


def slant_columns(scene: Scene) -> SlantColumns:
    """SCD and AMF of every absorber (see docs/simulator.md for the formulas)."""
    geo = scene.geometry
    m = geo.air_mass
    refs = {name: reference_reflectance(scene, nm) for name, nm in REFERENCE_NM.items()}
    zero = np.zeros(scene.shape)
    ps, pc = scene.surface_pressure / STANDARD_PRESSURE_HPA, scene.cloud_pressure / STANDARD_PRESSURE_HPA
    amf_trop = _amf(refs["no2"], m, PATH_SENSITIVITY["bl"], scene.no2_troposphere, zero)
    amf_hcho = _amf(refs["hcho"], m, PATH_SENSITIVITY["bl"], scene.hcho, zero)
    o4_column = O4_COLUMN * ps**2
    amf_o4 = _amf(refs["o4"], m, PATH_SENSITIVITY["o4"], o4_column, O4_COLUMN * pc**2)
    amf_h2o = _amf(refs["h2o"], m, PATH_SENSITIVITY["h2o"], scene.h2o, scene.h2o * (pc / ps) ** 4)
    o2_column = O2_COLUMN * ps
    amf_o2 = _amf(refs["o2"], m, PATH_SENSITIVITY["o2"], o2_column, O2_COLUMN * pc)
    ring_ref = refs["ring"]
    w = ring_ref.cloud_radiance_fraction
    ring = RAMAN_FRACTION * ((1.0 - w) * ring_ref.clear_path / ring_ref.clear + w * ring_ref.cloud_path / ring_ref.cloud)
    scd = {
        "no2": scene.no2_stratosphere * m + scene.no2_troposphere * amf_trop,
        "no2_troposphere": scene.no2_troposphere * amf_trop,
        "hcho": scene.hcho * amf_hcho,
        "o4": o4_column * amf_o4,
        "h2o": scene.h2o * amf_h2o,
        "o2": o2_column * amf_o2,
    }
    amf = {"no2_troposphere": amf_trop, "no2_stratosphere": m, "hcho": amf_hcho, "o4": amf_o4, "h2o": amf_h2o, "o2": amf_o2}
    return SlantColumns(scd=scd, amf=amf, ring=ring, references=refs)


@dataclass(frozen=True)
class BandRadiance:
    """One band: ``radiance``, ``radiance_error`` (1-σ noise, 2 significant digits) float32 and
    ``pixel_quality_flag`` int16, all ``(rows, cols, 1028)``."""

    radiance: np.ndarray
    radiance_error: np.ndarray
    pixel_quality_flag: np.ndarray


def _pixel_inputs(scene: Scene, columns: SlantColumns) -> dict[str, np.ndarray]:
    """Per-pixel scalars of the forward model as float32 ``(cols, rows, 1)`` (xtrack-major, like the block math)."""
    geo = scene.geometry
    scale = geo.mu0 / np.pi * (AU_M / geo.earth_sun_distance) ** 2
    gas_names = ("no2", "hcho", "o4", "h2o", "o2")
    gas = [columns.scd[g] * CROSS_SECTION_UNITS[g] for g in gas_names] + [-columns.ring]
    o3 = [scene.o3 * DU * CROSS_SECTION_UNITS["o3"],
          scene.o3 * DU * (scene.o3_temperature - O3_REFERENCE_TEMPERATURE_K) * CROSS_SECTION_UNITS["o3_dt"]]
    values = {
        "ps": scene.surface_pressure / STANDARD_PRESSURE_HPA, "pc": scene.cloud_pressure / STANDARD_PRESSURE_HPA,
        "f": scene.cloud_fraction, "mu0": geo.mu0, "mu": geo.mu, "phase": geo.rayleigh_phase, "scale": scale,
        "texture": scene.albedo_texture,
    }
    out = {k: np.ascontiguousarray(v.T[..., None], dtype=np.float32) for k, v in values.items()}
    out["gas"] = np.ascontiguousarray(np.stack(gas, axis=-1).transpose(1, 0, 2), dtype=np.float32)
    out["o3"] = np.ascontiguousarray(np.stack(o3, axis=-1).transpose(1, 0, 2), dtype=np.float32)
    out["weights"] = np.ascontiguousarray(scene.surface_weights.transpose(1, 0, 2), dtype=np.float32)
    return out


def _node_interpolation(n_channels: int, step: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Coarse spectral nodes (every ``step`` channels and the last) and linear interpolation back to all channels.

    Returns node channel indices ``(n,)`` and, per channel, the left and right node positions and the weight of
    the right node (float32).
    """
    nodes = np.unique(np.append(np.arange(0, n_channels, step), n_channels - 1))
    channels = np.arange(n_channels)
    right = np.clip(np.searchsorted(nodes, channels), 1, nodes.size - 1)
    left = right - 1
    weight = ((channels - nodes[left]) / (nodes[right] - nodes[left])).astype(np.float32)
    return nodes, left, right, weight


def _interpolate(values: np.ndarray, left: np.ndarray, right: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """Linear interpolation along the last axis from nodes to channels (see :func:`_node_interpolation`)."""
    low = values[..., left]
    low += (values[..., right] - low) * weight
    return low


def band_radiance(scene: Scene, band: str, columns: SlantColumns | None = None) -> BandRadiance:
    """Noisy radiance, its 1-σ error and pixel flags of ``band`` for every pixel of ``scene``.

    Works on blocks of whole mirror steps of about :data:`PIXELS_PER_BLOCK` pixels; inside a block arrays are xtrack-major
    ``(cols, rows, C)`` so the absorber optical depths are one batched matrix product per block. The spectrally
    smooth parts (Rayleigh + surface + cloud reflectance, transmission of the layer above the ozone) are
    evaluated every :data:`NODE_STEP` channels and interpolated linearly (error < 1e-4 relative); absorption,
    the solar spectrum and noise are evaluated on every channel of every cross-track position's own grid.
    """
    if band not in BANDS:
        raise TempocodecError(f"simulate: unknown band {band!r} (expected one of {', '.join(BANDS)})")
    columns = columns if columns is not None else slant_columns(scene)
    rows, cols = scene.shape
    spectra = band_spectra(band, cols)
    f32, one = np.float32, np.float32(1.0)
    inputs = _pixel_inputs(scene, columns)
    solar = spectra.solar[:, None, :]
    gas_index = [CROSS_SECTIONS.index(g) for g in ("no2", "hcho", "o4", "h2o", "o2")]
    gas_sigma = np.ascontiguousarray(np.concatenate(
        [spectra.cross_sections[gas_index].transpose(1, 0, 2), spectra.ring[:, None, :]], axis=1))
    o3_sigma = np.ascontiguousarray(spectra.cross_sections[[CROSS_SECTIONS.index("o3"), CROSS_SECTIONS.index("o3_dt")]]
                                    .transpose(1, 0, 2))
    nodes, left, right, weight = _node_interpolation(N_CHANNELS, NODE_STEP)
    tau_top = (spectra.rayleigh * f32(OZONE_LAYER_RAYLEIGH_FRACTION))[None, None, :]
    tau_nodes = spectra.rayleigh[nodes][None, None, :]
    albedo_nodes = surface_albedo(nominal_wavelength(band)[nodes]).astype(f32)
    rng = np.random.Generator(np.random.SFC64(scene.band_seeds[band][0]))
    radiance = np.empty((rows, cols, N_CHANNELS), f32)
    error = np.empty_like(radiance)
    rows_per_block = max(1, PIXELS_PER_BLOCK // cols)
    for start in range(0, rows, rows_per_block):
        block = slice(start, min(rows, start + rows_per_block))
        p = {k: v[:, block] for k, v in inputs.items()}
        air_mass = one / p["mu0"] + one / p["mu"]
        layer = p["phase"] / (f32(4.0) * (p["mu0"] + p["mu"]))
        # smooth parts on the nodes
        albedo = np.minimum(np.matmul(p["weights"], albedo_nodes) * p["texture"], f32(0.98))
        path, surface = reflectance(tau_nodes * p["ps"], albedo, p["mu0"], p["mu"], p["phase"])
        clear = path + surface
        path, surface = reflectance(tau_nodes * p["pc"], f32(CLOUD_ALBEDO), p["mu0"], p["mu"], p["phase"])
        smooth = clear + p["f"] * (path + surface - clear)
        above = np.exp(-tau_nodes * f32(OZONE_LAYER_RAYLEIGH_FRACTION) * air_mass)
        smooth -= layer * (one - above)
        smooth = _interpolate(smooth, left, right, weight)
        above = _interpolate(above, left, right, weight)
        # ozone layer, absorbers, sun
        tau_o3 = np.matmul(p["o3"], o3_sigma)
        upper = layer * tau_top / (tau_top + tau_o3)
        np.multiply(tau_o3, -air_mass, out=tau_o3)
        transmitted = np.exp(tau_o3, out=tau_o3)
        above *= transmitted
        np.subtract(one, above, out=above)
        upper *= above
        smooth *= transmitted
        total = np.add(upper, smooth, out=upper)
        del smooth, above, transmitted
        optical_depth = np.matmul(p["gas"], gas_sigma)
        total *= np.exp(np.negative(optical_depth, out=optical_depth), out=optical_depth)
        total *= solar
        total *= p["scale"]
        sigma = scene.config.noise.sigma(total)
        noise = rng.standard_normal(total.shape, dtype=f32)
        noise *= sigma
        total += noise
        radiance[block] = total.transpose(1, 0, 2)
        error[block] = round_significant(sigma, ERROR_DIGITS).transpose(1, 0, 2)
    flags = _apply_defects(scene, band, radiance, error)
    return BandRadiance(radiance=radiance, radiance_error=error, pixel_quality_flag=flags)


def round_significant(values: np.ndarray, digits: int) -> np.ndarray:
    """Positive ``values`` rounded to ``digits`` significant decimal digits (same dtype), as TEMPO's L1B writer
    stores ``radiance_error``."""
    values = np.asarray(values)
    scale = np.power(values.dtype.type(10.0), np.floor(np.log10(values)) - values.dtype.type(digits - 1))
    return np.round(values / scale) * scale


def _apply_defects(scene: Scene, band: str, radiance: np.ndarray, error: np.ndarray) -> np.ndarray:
    """Fill missing steps, dropouts and bad detector pixels, add transients; return the int16 flags (in place)."""
    rows, cols = scene.shape
    config = scene.config
    rng = np.random.default_rng(scene.band_seeds[band][1])
    flags = np.zeros(radiance.shape, np.int16)
    n_bad = int(rng.binomial(cols * N_CHANNELS, config.bad_detector_fraction))
    bad_x, bad_c = rng.integers(0, cols, n_bad), rng.integers(0, N_CHANNELS, n_bad)
    n_transient = int(rng.binomial(radiance.size, config.transient_fraction))
    tr = (rng.integers(0, rows, n_transient), rng.integers(0, cols, n_transient), rng.integers(0, N_CHANNELS, n_transient))
    radiance[tr] += error[tr] * rng.uniform(5.0, 50.0, n_transient).astype(np.float32)
    flags[tr] |= FLAG_TRANSIENT
    underflow = radiance <= 0
    flags[underflow] |= FLAG_UNDERFLOW
    flags[:, bad_x, bad_c] |= FLAG_BAD
    radiance[:, bad_x, bad_c] = RADIANCE_FILL
    error[:, bad_x, bad_c] = RADIANCE_FILL
    invalid = scene.invalid_pixels()
    flags[invalid] |= FLAG_MISSING
    radiance[invalid] = RADIANCE_FILL
    error[invalid] = RADIANCE_FILL
    return flags


# ------------------------------------------------------------------------------------------------ Level-2 truth


def _noise_relative(scene: Scene, ref: ReferenceReflectance, wavelength_nm: float) -> np.ndarray:
    """Relative 1-σ noise of the clear/cloudy mixture radiance at one wavelength (no absorbers), ``(rows, cols)``."""
    geo = scene.geometry
    solar = float(np.interp(wavelength_nm, nominal_wavelength(_band_of(wavelength_nm)),
                            band_spectra(_band_of(wavelength_nm), 1).solar[0]))
    radiance = solar * geo.mu0 / np.pi * (AU_M / geo.earth_sun_distance) ** 2 * ref.total
    return scene.config.noise.sigma(radiance) / radiance


def _band_of(wavelength_nm: float) -> str:
    """The band whose nominal grid covers ``wavelength_nm``."""
    return BANDS[0] if wavelength_nm < 520.0 else BANDS[1]


def doas_sensitivity(name: str, window_nm: tuple[float, float], degree: int = 3) -> float:
    """``sqrt(Σ σ'²)`` over a fitting window (cm², cm⁵ for o4): σ' is the cross section minus a polynomial of
    ``degree`` in wavelength, on the nominal grid of the window's band. The 1-σ slant column error of a DOAS fit
    with relative noise ε per channel is ε / ``doas_sensitivity`` (Cramér-Rao bound, one absorber)."""
    band = _band_of(window_nm[0])
    wavelength = nominal_wavelength(band)
    inside = (wavelength >= window_nm[0]) & (wavelength <= window_nm[1])
    sigma = band_spectra(band, 1).cross_section(name)[0][inside]
    x = (wavelength[inside] - wavelength[inside].mean()) / np.ptp(wavelength[inside])
    residual = sigma - np.polyval(np.polyfit(x, sigma, degree), x)
    return float(np.sqrt(np.sum(residual**2)))


FIT_WINDOWS_NM = {"no2": (405.0, 465.0), "hcho": (328.5, 356.5), "o4": (460.0, 490.0)}


def _coords(scene: Scene, mirror_step: np.ndarray) -> dict[str, xr.Variable]:
    """Coordinates every Level-2 group carries: absolute ``mirror_step`` and ``xtrack`` (int32)."""
    return {"mirror_step": xr.Variable("mirror_step", mirror_step),
            "xtrack": xr.Variable("xtrack", np.arange(scene.shape[1], dtype=np.int32))}


def _grid(values: np.ndarray, dtype: str, fill: float | None, invalid: np.ndarray | None = None,
          **attrs: object) -> xr.Variable:
    """A ``(mirror_step, xtrack)`` variable of ``dtype`` with ``fill`` where ``invalid`` (and ``_FillValue`` set)."""
    data = np.asarray(values).astype(dtype)
    if fill is not None:
        attrs = {"_FillValue": np.asarray(fill).astype(dtype)[()], **attrs}
        if invalid is not None:
            data = np.where(invalid, attrs["_FillValue"], data).astype(dtype)
    return xr.Variable(("mirror_step", "xtrack"), data, attrs)


def _quality(scene: Scene, invalid: np.ndarray, cloud_limit: float | None) -> np.ndarray:
    """0 normal, 1 suspicious (SZA > 70° or cloud fraction above ``cloud_limit``), 2 bad (no input or SZA > 80°)."""
    sza = scene.geometry.solar_zenith
    flag = np.zeros(scene.shape, np.int16)
    suspicious = sza > 70.0
    if cloud_limit is not None:
        suspicious |= scene.cloud_fraction > cloud_limit
    flag[suspicious] = 1
    flag[invalid | (sza > 80.0)] = 2
    return flag


def ground_pixel_quality(scene: Scene) -> np.ndarray:
    """int32 ``ground_pixel_quality_flag``: bits 0-3 land/water class (1 land, 3 coast, 7 deep water), bit 4 sun
    glint possible (water, glint angle < 30°), bits 8-15 snow/ice (0 none, 103 dry snow, 255 ocean), bits 16-23
    IGBP class of the dominant surface (17 water, 12 cropland/vegetation, 16 barren/soil, 13 urban, 15 snow)."""
    weights = scene.surface_weights
    water = weights[..., SURFACES.index("water")]
    land_class = np.where(water > 0.95, 7, np.where(water > 0.05, 3, 1))
    geo = scene.geometry
    t0, t1 = np.radians(geo.solar_zenith), np.radians(geo.viewing_zenith)
    cos_glint = np.cos(t0) * np.cos(t1) - np.sin(t0) * np.sin(t1) * np.cos(np.radians(geo.relative_azimuth))
    glint = (water > 0.5) & (cos_glint > np.cos(np.radians(30.0)))
    snow = np.where(scene.snow_fraction > 0.5, 103, np.where(water > 0.5, 255, 0))
    igbp = np.array([17, 12, 16, 13, 15])[np.argmax(weights, axis=-1)]
    return (land_class | (glint.astype(np.int64) << 4) | (snow << 8) | (igbp << 16)).astype(np.int32)


def _geolocation(scene: Scene, product: str, mirror_step: np.ndarray) -> xr.Dataset:
    """The L2 ``geolocation`` group (corners reordered to SW, SE, NE, NW)."""
    geo = scene.geometry
    fill = FLOAT_FILL[product]
    corners = [2, 3, 0, 1]
    variables = {
        "time": xr.Variable("mirror_step", geo.time.copy(), {"units": TIME_UNITS}),
        "latitude": _grid(geo.latitude, "f4", fill, units="degrees_north"),
        "longitude": _grid(geo.longitude, "f4", fill, units="degrees_east"),
        "latitude_bounds": xr.Variable(("mirror_step", "xtrack", "corner"), geo.latitude_bounds[..., corners].astype("f4"),
                                       {"_FillValue": np.float32(fill), "units": "degrees_north", "comment": "(SW,SE,NE,NW)"}),
        "longitude_bounds": xr.Variable(("mirror_step", "xtrack", "corner"), geo.longitude_bounds[..., corners].astype("f4"),
                                        {"_FillValue": np.float32(fill), "units": "degrees_east", "comment": "(SW,SE,NE,NW)"}),
        "solar_zenith_angle": _grid(geo.solar_zenith, "f4", fill, units="degrees"),
        "solar_azimuth_angle": _grid(geo.solar_azimuth, "f4", fill, units="degrees"),
        "viewing_zenith_angle": _grid(geo.viewing_zenith, "f4", fill, units="degrees"),
        "viewing_azimuth_angle": _grid(geo.viewing_azimuth, "f4", fill, units="degrees"),
        "relative_azimuth_angle": _grid(geo.relative_azimuth, "f4", fill, units="degrees"),
    }
    if product == "O3TOT":
        variables["terrain_height"] = _grid(np.round(scene.terrain_height), "i2", INT16_FILL, units="m")
    return xr.Dataset(variables, coords=_coords(scene, mirror_step))


def _surface_support(scene: Scene, product: str, invalid: np.ndarray) -> dict[str, xr.Variable]:
    """Support fields shared by the L2 products: terrain, snow/ice, ground flags, surface pressure."""
    fill = FLOAT_FILL[product]
    out = {
        "snow_ice_fraction": _grid(scene.snow_fraction, "f4", fill),
        "ground_pixel_quality_flag": _grid(ground_pixel_quality(scene), "i4", INT32_FILL),
    }
    if product != "O3TOT":
        out["terrain_height"] = _grid(np.round(scene.terrain_height), "i2", INT16_FILL, units="m")
    name = {"CLDO4": "SurfacePressure", "O3TOT": "terrain_pressure"}.get(product, "surface_pressure")
    out[name] = _grid(scene.surface_pressure, "f4", fill, invalid, units="hPA" if product == "O3TOT" else "hPa")
    return out


def _qa(scene: Scene, product: str, invalid: np.ndarray, residual: np.ndarray, mirror_step: np.ndarray) -> xr.Dataset:
    """The ``qa_statistics`` group: fit residual (relative noise), convergence flag and counts."""
    good = int((~invalid).sum())
    attrs = {"num_crosstrack_pixels": np.int32(scene.shape[1]), "num_scan_lines": np.int32(scene.shape[0]),
             "num_good_input": np.int32(good), "num_good_output": np.int32(good),
             "num_bad_output": np.int32(invalid.sum()),
             "percent_good_output": np.float32(100.0 * good / invalid.size)}
    return xr.Dataset(
        {"fit_rms_residual": _grid(residual, "f4", FLOAT_FILL[product], invalid),
         "fit_convergence_flag": _grid(np.where(invalid, -2, 1), "i2", INT16_FILL)},
        coords=_coords(scene, mirror_step), attrs=attrs)


def level2_truth(scene: Scene, columns: SlantColumns, mirror_step: np.ndarray) -> dict[str, L2Granule]:
    """The four L2 granules (NO2, HCHO, O3TOT, CLDO4) holding the scene's truth in the real layout.

    Their attributes hold only ``product_type``, ``processing_level`` and ``title``; :func:`simulate_granule`
    adds the granule's times, bounds and names."""
    invalid = scene.invalid_pixels()
    refs = columns.references
    out: dict[str, L2Granule] = {}
    coords = _coords(scene, mirror_step)
    molec = "molecules/cm^2"

    # NO2
    fill = FLOAT_FILL["NO2"]
    rel = _noise_relative(scene, refs["no2"], REFERENCE_NM["no2"])
    scd_error = rel / doas_sensitivity("no2", FIT_WINDOWS_NM["no2"])
    amf_trop, m = columns.amf["no2_troposphere"], columns.amf["no2_stratosphere"]
    total = scene.no2_troposphere + scene.no2_stratosphere
    product = xr.Dataset({
        "vertical_column_troposphere": _grid(scene.no2_troposphere, "f8", fill, invalid, units=molec),
        "vertical_column_stratosphere": _grid(scene.no2_stratosphere, "f8", fill, invalid, units=molec),
        "vertical_column_troposphere_uncertainty": _grid(scd_error / amf_trop, "f8", fill, invalid, units=molec),
        "main_data_quality_flag": _grid(_quality(scene, invalid, 0.5), "i2", INT16_FILL,
                                        flag_values=np.array([0, 1, 2], np.int16), flag_meanings="normal suspicious bad"),
    }, coords=coords)
    support = xr.Dataset({
        "vertical_column_total": _grid(total, "f8", fill, invalid, units=molec),
        "vertical_column_total_uncertainty": _grid(scd_error / (columns.scd["no2"] / total), "f8", fill, invalid, units=molec),
        "fitted_slant_column": _grid(columns.scd["no2"], "f8", fill, invalid, units=molec),
        "fitted_slant_column_uncertainty": _grid(scd_error, "f8", fill, invalid, units=molec),
        "albedo": _grid(refs["no2"].albedo, "f4", fill, invalid),
        "eff_cloud_fraction": _grid(scene.cloud_fraction, "f4", fill, invalid),
        "amf_cloud_fraction": _grid(refs["no2"].cloud_radiance_fraction, "f4", fill, invalid),
        "amf_cloud_pressure": _grid(scene.cloud_pressure, "f4", fill, invalid, units="hPa"),
        "amf_total": _grid(columns.scd["no2"] / total, "f4", fill, invalid),
        "amf_troposphere": _grid(amf_trop, "f4", fill, invalid),
        "amf_stratosphere": _grid(m, "f4", fill, invalid),
        **_surface_support(scene, "NO2", invalid),
    }, coords=coords)
    out["NO2"] = _l2(scene, "NO2", product, support, rel, invalid, mirror_step)

    # HCHO
    fill = FLOAT_FILL["HCHO"]
    rel = _noise_relative(scene, refs["hcho"], REFERENCE_NM["hcho"])
    scd_error = rel / doas_sensitivity("hcho", FIT_WINDOWS_NM["hcho"])
    amf = columns.amf["hcho"]
    product = xr.Dataset({
        "vertical_column": _grid(scene.hcho, "f8", fill, invalid, units=molec),
        "vertical_column_uncertainty": _grid(scd_error / amf, "f8", fill, invalid, units=molec),
        "main_data_quality_flag": _grid(_quality(scene, invalid, 0.5), "i2", INT16_FILL,
                                        flag_values=np.array([0, 1, 2], np.int16), flag_meanings="normal suspicious bad"),
    }, coords=coords)
    support = xr.Dataset({
        "fitted_slant_column": _grid(columns.scd["hcho"], "f8", fill, invalid, units=molec),
        "fitted_slant_column_uncertainty": _grid(scd_error, "f8", fill, invalid, units=molec),
        "albedo": _grid(refs["hcho"].albedo, "f4", fill, invalid),
        "amf": _grid(amf, "f4", fill, invalid),
        "amf_diagnostic_flag": _grid(np.zeros(scene.shape), "i2", INT16_FILL),
        "eff_cloud_fraction": _grid(scene.cloud_fraction, "f4", fill, invalid),
        "amf_cloud_fraction": _grid(refs["hcho"].cloud_radiance_fraction, "f4", fill, invalid),
        "amf_cloud_pressure": _grid(scene.cloud_pressure, "f4", fill, invalid, units="hPa"),
        **_surface_support(scene, "HCHO", invalid),
    }, coords=coords)
    out["HCHO"] = _l2(scene, "HCHO", product, support, rel, invalid, mirror_step)

    # O3TOT
    fill = FLOAT_FILL["O3TOT"]
    quality = _quality(scene, invalid, None).astype(np.uint16)
    product = xr.Dataset({
        "column_amount_o3": _grid(scene.o3, "f4", fill, invalid, units="DU", comment="best total ozone solution"),
        "radiative_cloud_frac": _grid(refs["o3"].cloud_radiance_fraction, "f4", fill, invalid),
        "fc": _grid(scene.cloud_fraction, "f4", fill, invalid),
        "quality_flag": _grid(quality, "u2", None, comment="0 good, 1 SZA > 70, 2 no input or SZA > 80 (simulator)"),
    }, coords=coords)
    support = xr.Dataset({
        "cloud_pressure": _grid(scene.cloud_pressure, "f4", fill, invalid, units="hPA"),
        "surface_reflectivity_at_331nm": _grid(100.0 * refs["o3"].albedo, "f4", fill, invalid, units="percent"),
        "surface_reflectivity_at_360nm": _grid(100.0 * refs["o3_360"].albedo, "f4", fill, invalid, units="percent"),
        **_surface_support(scene, "O3TOT", invalid),
    }, coords=coords)
    rel = _noise_relative(scene, refs["o3"], REFERENCE_NM["o3"])
    out["O3TOT"] = _l2(scene, "O3TOT", product, support, rel, invalid, mirror_step)

    # CLDO4
    fill = FLOAT_FILL["CLDO4"]
    skipped = np.where(invalid, (1 << 12) | (1 << 13), 0)
    product = xr.Dataset({
        "cloud_fraction": _grid(scene.cloud_fraction, "f4", fill, invalid, units="no unit",
                                long_name="effective cloud fraction at 466nm"),
        "cloud_pressure": _grid(scene.cloud_pressure, "f4", fill, invalid, units="hPa",
                                long_name="optical centroid pressure for cloud"),
        "CloudRadianceFraction466": _grid(refs["cld466"].cloud_radiance_fraction, "f4", fill, invalid),
        "CloudRadianceFraction440": _grid(refs["no2"].cloud_radiance_fraction, "f4", fill, invalid),
        "processing_quality_flag": _grid(skipped, "i2", INT16_FILL),
    }, coords=coords)
    rel = _noise_relative(scene, refs["o4"], REFERENCE_NM["o4"])
    support = xr.Dataset({
        "GLER466": _grid(refs["cld466"].albedo, "f4", fill, invalid),
        "GLER440": _grid(refs["no2"].albedo, "f4", fill, invalid),
        "fitted_slant_column": _grid(columns.scd["o4"] / 1e43, "f4", fill, invalid, units="1.e43 molec^2 cm^-5"),
        "fitted_slant_column_uncertainty": _grid(rel / doas_sensitivity("o4", FIT_WINDOWS_NM["o4"]) / 1e43, "f4", fill,
                                                 invalid, units="1.e43 molec^2 cm^-5"),
        **_surface_support(scene, "CLDO4", invalid),
    }, coords=coords)
    out["CLDO4"] = _l2(scene, "CLDO4", product, support, rel, invalid, mirror_step)
    return out


def _l2(scene: Scene, product: str, product_group: xr.Dataset, support: xr.Dataset,
        residual: np.ndarray, invalid: np.ndarray, mirror_step: np.ndarray) -> L2Granule:
    """One L2 granule from its product and support groups plus the shared geolocation and QA groups."""
    granule_attrs = {"product_type": product, "processing_level": np.int32(2),
                     "title": f"TEMPO {product} Level 2 truth of a simulated granule"}
    return L2Granule(product=product, attrs=granule_attrs, groups={
        "product": product_group,
        "geolocation": _geolocation(scene, product, mirror_step),
        "support_data": support,
        "qa_statistics": _qa(scene, product, invalid, residual, mirror_step),
    })


# ------------------------------------------------------------------------------------------------ Level-1B


def _band_dataset(scene: Scene, band: str, data: BandRadiance, mirror_step: np.ndarray) -> xr.Dataset:
    """One L1B band group with the real variable names, dims, dtypes, fills and units."""
    geo = scene.geometry
    cols = scene.shape[1]
    dims3 = ("mirror_step", "xtrack", "spectral_channel")
    dims2 = ("mirror_step", "xtrack")
    corner = ("mirror_step", "xtrack", "corner")

    def geo_var(values: np.ndarray, dims: tuple[str, ...], units: str, **attrs: object) -> xr.Variable:
        return xr.Variable(dims, np.asarray(values, np.float32), {"_FillValue": GEO_FILL, "units": units, **attrs})

    variables = {
        "radiance": xr.Variable(dims3, data.radiance, {
            "_FillValue": RADIANCE_FILL, "units": RADIANCE_UNITS, "long_name": "Earth radiance (simulated)",
            "coordinates": "longitude latitude spectral_channel", "ancillary_variables": "radiance_error"}),
        "radiance_error": xr.Variable(dims3, data.radiance_error, {
            "_FillValue": RADIANCE_FILL, "units": RADIANCE_UNITS, "long_name": "radiance 1-sigma noise (simulated)",
            "number_of_significant_digits": np.int32(ERROR_DIGITS)}),
        "pixel_quality_flag": xr.Variable(dims3, data.pixel_quality_flag,
                                          {"_FillValue": INT16_FILL, **L1B_BAND_VARS["pixel_quality_flag"].attrs}),
        "nominal_wavelength": xr.Variable(("xtrack", "spectral_channel"),
                                          band_spectra(band, cols).wavelength.astype(np.float32), {"units": "nm"}),
        "latitude": geo_var(geo.latitude, dims2, "degrees_north", bounds="latitude_bounds"),
        "longitude": geo_var(geo.longitude, dims2, "degrees_east", bounds="longitude_bounds"),
        "latitude_bounds": geo_var(geo.latitude_bounds, corner, "degrees_north",
                                   long_name="latitude bounds (NE,NW,SW,SE)"),
        "longitude_bounds": geo_var(geo.longitude_bounds, corner, "degrees_east",
                                    long_name="longitude bounds (NE,NW,SW,SE)"),
        "solar_zenith_angle": geo_var(geo.solar_zenith, dims2, "degrees"),
        "solar_azimuth_angle": geo_var(geo.solar_azimuth, dims2, "degrees"),
        "viewing_zenith_angle": geo_var(geo.viewing_zenith, dims2, "degrees"),
        "viewing_azimuth_angle": geo_var(geo.viewing_azimuth, dims2, "degrees"),
        "terrain_height": xr.Variable(dims2, np.round(scene.terrain_height).astype(np.int16),
                                      {"_FillValue": INT16_FILL, "units": "m"}),
        "ground_pixel_quality_flag": xr.Variable(dims2, ground_pixel_quality(scene), {"_FillValue": INT32_FILL}),
        "snow_ice_fraction": geo_var(scene.snow_fraction, dims2, "1"),
    }
    return xr.Dataset(variables, coords={"mirror_step": xr.Variable("mirror_step", mirror_step),
                                         "xtrack": xr.Variable("xtrack", np.arange(cols, dtype=np.int32))})


def _granule_attrs(scene: Scene, scan: int, granule_index: int, product: str, local_id: str) -> dict[str, object]:
    """Global attributes common to the simulated L1B and L2 files."""
    geo = scene.geometry
    start = geo.start
    end = start + timedelta(seconds=STEP_SECONDS * scene.shape[0])
    lat_b, lon_b = geo.latitude_bounds, geo.longitude_bounds
    corners = [(lat_b[0, 0, 3], lon_b[0, 0, 3]), (lat_b[-1, 0, 2], lon_b[-1, 0, 2]),
               (lat_b[-1, -1, 1], lon_b[-1, -1, 1]), (lat_b[0, -1, 0], lon_b[0, -1, 0])]
    polygon = ", ".join(f"{la:.4f} {lo:.4f}" for la, lo in [*corners, corners[0]])
    return {
        "product_type": product,
        "processing_version": np.int32(3),
        "scan_num": np.int32(scan),
        "granule_num": np.int32(granule_index),
        "time_reference": "1980-01-06T00:00:00Z",
        "time_coverage_start": f"{start:%Y-%m-%dT%H:%M:%SZ}",
        "time_coverage_end": f"{end:%Y-%m-%dT%H:%M:%SZ}",
        "time_coverage_start_since_epoch": np.float64(geo.time[0]),
        "time_coverage_end_since_epoch": np.float64(geo.time[0] + STEP_SECONDS * scene.shape[0]),
        "begin_date": f"{start:%Y-%m-%d}", "begin_time": f"{start:%H:%M:%S}",
        "end_date": f"{end:%Y-%m-%d}", "end_time": f"{end:%H:%M:%S}",
        "geospatial_bounds": f"POLYGON(({polygon}))",
        "geospatial_bounds_crs": "EPSG:4326",
        "geospatial_lat_min": np.float32(np.min(lat_b)), "geospatial_lat_max": np.float32(np.max(lat_b)),
        "geospatial_lon_min": np.float32(np.min(lon_b)), "geospatial_lon_max": np.float32(np.max(lon_b)),
        "local_granule_id": local_id,
        "project": "TEMPO",
        "source": "tempocodec simulator (SIMULATED DATA, not a TEMPO measurement)",
        "simulation_seed": np.int64(scene.config.seed),
        "Conventions": "CF-1.6, ACDD-1.3",
    }


def level1b(scene: Scene, bands: dict[str, BandRadiance], scan: int, granule_index: int) -> L1BGranule:
    """The L1B granule of ``scene`` with the given band radiances."""
    rows = scene.shape[0]
    mirror_step = (2 + (granule_index - 1) * STEPS_PER_GRANULE + np.arange(rows)).astype(np.int32)
    attrs = _granule_attrs(scene, scan, granule_index, "RAD", l1b_filename(scene.geometry.start, scan, granule_index))
    attrs["processing_level"] = np.int32(1)
    attrs["title"] = "TEMPO Level 1B radiance of a simulated granule"
    root = xr.Dataset(
        {"time": xr.Variable("mirror_step", scene.geometry.time.copy(), {"units": TIME_UNITS}),
         "exposure_time": xr.Variable("mirror_step", np.full(rows, EXPOSURE_SECONDS, np.float32), {"units": "s"}),
         "granule_flag": xr.Variable((), np.int32(1 if granule_index == 1 else 0)),
         "earth_sun_distance": xr.Variable((), np.float32(scene.geometry.earth_sun_distance), {"units": "m"})},
        coords={"mirror_step": xr.Variable("mirror_step", mirror_step)})
    datasets = {band: _band_dataset(scene, band, data, mirror_step) for band, data in bands.items()}
    return L1BGranule(attrs=attrs, root=root, bands=datasets)


# ------------------------------------------------------------------------------------------------ public API


def resolve_bands(bands: str | Sequence[str]) -> tuple[str, ...]:
    """Band group names from "uv", "vis", "all" or a sequence of band names (kept in :data:`BANDS` order)."""
    if isinstance(bands, str):
        if bands in BAND_ALIASES:
            return BAND_ALIASES[bands]
        bands = (bands,)
    unknown = [b for b in bands if b not in BANDS]
    if unknown or not bands:
        raise TempocodecError(f"simulate: unknown band(s) {', '.join(map(repr, unknown)) or '(none given)'}; "
                              f"use uv, vis, all or {', '.join(BANDS)}")
    return tuple(b for b in BANDS if b in bands)


def simulate_granule(rows: int, cols: int, seed: int, *, bands: str | Sequence[str] = BANDS, scan: int = 1,
                     granule_index: int = 1, config: SceneConfig | None = None) -> tuple[L1BGranule, dict[str, L2Granule]]:
    """Simulate one granule of ``rows`` mirror steps × ``cols`` cross-track pixels: the L1B granule (the requested
    bands) and its L2 truth (``{"NO2", "HCHO", "O3TOT", "CLDO4"}``). ``config`` overrides the default
    :class:`SceneConfig` (its rows, cols and seed must match). Deterministic for a seed; the scene and the truth
    do not depend on which bands are simulated."""
    config = config if config is not None else SceneConfig(rows=rows, cols=cols, seed=seed)
    if (config.rows, config.cols, config.seed) != (rows, cols, seed):
        raise TempocodecError(f"simulate: config is for {config.rows}×{config.cols} seed {config.seed}, "
                              f"not {rows}×{cols} seed {seed}")
    if not 0 <= scan <= 999 or not 0 <= granule_index <= 99:
        raise TempocodecError(f"simulate: scan {scan} must be 0..999 and granule {granule_index} 0..99")
    band_names = resolve_bands(bands)
    scene = make_scene(config)
    columns = slant_columns(scene)
    l1b = level1b(scene, {b: band_radiance(scene, b, columns) for b in band_names}, scan, granule_index)
    mirror_step = np.asarray(l1b.root["mirror_step"].values)
    l1b_name = l1b.attrs["local_granule_id"]
    l2 = {}
    for product, granule in level2_truth(scene, columns, mirror_step).items():
        name = l2_filename(product, scene.geometry.start, scan, granule_index)
        attrs = _granule_attrs(scene, scan, granule_index, product, name)
        attrs["input_files"] = l1b_name
        granule.attrs = {**attrs, **granule.attrs}
        l2[product] = granule
    return l1b, l2


def write_simulated(out_dir: str | os.PathLike, rows: int, cols: int, seed: int, *, scenes: int = 1,
                    bands: str | Sequence[str] = BANDS,
                    progress: Callable[[int, int, str], None] | None = None) -> list[Path]:
    """Simulate ``scenes`` granules and write each as ``TEMPO_RAD_L1_…nc`` plus four ``TEMPO_<P>_L2_…nc`` files.

    Scene ``k`` uses seed ``seed + k``, scan ``1 + k // 9`` and granule ``1 + k % 9``; the output is the same
    as :func:`simulate_granule` with those arguments. ``progress(done, total, message)`` is called after each
    scene is simulated and after each file is written. Returns the paths written, L1B first per scene.
    """
    if not isinstance(scenes, (int, np.integer)) or scenes < 1:
        raise TempocodecError(f"simulate: scenes must be a positive integer, got {scenes!r}")
    SceneConfig(rows=rows, cols=cols, seed=seed)  # validates the arguments before any work
    band_names = resolve_bands(bands)
    out = _writable_directory(out_dir)
    total = scenes * 6
    done = 0
    paths: list[Path] = []

    def step(message: str) -> None:
        nonlocal done
        done += 1
        if progress is not None:
            progress(done, total, message)

    for k in range(scenes):
        scan, granule = 1 + k // 9, 1 + k % 9
        l1b, l2 = simulate_granule(rows, cols, seed + k, bands=band_names, scan=scan, granule_index=granule)
        step(f"scene {k + 1}/{scenes} simulated")
        path = out / l1b.attrs["local_granule_id"]
        write_l1b(path, l1b)
        paths.append(path)
        step(f"wrote {path.name}")
        for granule_l2 in l2.values():
            path = out / granule_l2.attrs["local_granule_id"]
            write_l2(path, granule_l2)
            paths.append(path)
            step(f"wrote {path.name}")
    return paths


def _writable_directory(out_dir: str | os.PathLike) -> Path:
    """``out_dir`` created if needed; raises :class:`TempocodecError` when it cannot be created or written."""
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise TempocodecError(f"{out}: exists and is not a directory")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise TempocodecError(f"{out}: cannot create the output directory ({err.strerror or err})") from None
    if not os.access(out, os.W_OK | os.X_OK):
        raise TempocodecError(f"{out}: the output directory is not writable")
    return out
