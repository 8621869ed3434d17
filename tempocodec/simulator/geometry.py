"""Where and when each pixel is: TEMPO's fixed-grid scan geometry, solar and viewing angles, TEMPO time.

Angles are degrees (azimuths clockwise from north); pixel fields are float64 ``(rows, cols)`` =
``(mirror_step, xtrack)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import numpy as np

from tempocodec.granule.netcdf import TEMPO_EPOCH
from tempocodec.simulator.config import SceneConfig
from tempocodec.simulator.physics import AU_M

LEAP_SECONDS = 18.0  # TEMPO time counts leap seconds since 1980-01-06 (GPS-like); 18 s since 2017
SATELLITE_LON_DEG = -91.0  # TEMPO on Intelsat 40e
GEO_RADIUS_KM = 42164.16
R_EQ_KM = 6378.137
R_POL_KM = 6356.75231
MIRROR_STEP_RAD = 126e-6  # east-west step: ~4.75 km at the centre of the field of regard
XTRACK_RAD = 40e-6  # north-south pixel: ~2.0 km at the centre of the field of regard
STEP_SECONDS = 3.0


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
    north-south slit of ``cols`` pixels (xtrack increasing northward), daytime with the centre SZA in ``config.sza_range``."""
    rows, cols = config.rows, config.cols
    lat_c = rng.uniform(*config.lat_range)
    lon_c = rng.uniform(*config.lon_range)
    first_day = datetime(2023, 8, 2, tzinfo=UTC)
    low, high = config.sza_range
    # the default range keeps the original 50 draws so default scenes stay bit-for-bit what they were
    for _ in range(50 if config.sza_range == (0.0, 75.0) else 200):
        day = first_day + timedelta(days=int(rng.integers(0, 880)))
        local_hours = rng.uniform(8.5, 16.0) if high <= 75.0 else rng.uniform(6.5, 18.0)
        start = day + timedelta(hours=local_hours - lon_c / 15.0 - rows * STEP_SECONDS / 7200.0)
        start = start.replace(microsecond=0)
        middle = start.timestamp() + rows * STEP_SECONDS / 2.0
        if low <= solar_angles(np.array(lat_c), np.array(lon_c), np.array(middle))[0] <= high:
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
