"""The geophysical scene of a granule: surface, clouds, trace gases and missing data, drawn from a seed.

Fields are float64 ``(rows, cols)`` = ``(mirror_step, xtrack)``; spatial structure comes from Gaussian random
fields of given correlation lengths (km).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypedDict

import numpy as np
from scipy.fft import next_fast_len
from scipy.special import ndtri

from tempocodec.granule.l1b import BANDS
from tempocodec.science.spectroscopy import STANDARD_PRESSURE_HPA
from tempocodec.simulator.config import SceneConfig
from tempocodec.simulator.geometry import Geometry, make_geometry
from tempocodec.simulator.physics import H2O_PER_G_CM2, SURFACES, surface_albedo

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
    total = sum((w * correlated_field(rng, shape, geometry.spacing_km, length) for length, w in components), np.zeros(shape))
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
    rows, cols = np.unravel_index(picks, weight.shape)
    return [(int(r), int(c)) for r, c in zip(rows, cols, strict=True)]


class Surface(TypedDict):
    """:func:`make_surface`'s fields ``(rows, cols)`` (``weights`` ``(rows, cols, len(SURFACES))``) and its cities
    ``(row, col, radius km)``."""

    weights: np.ndarray
    texture: np.ndarray
    terrain: np.ndarray
    cities: list[tuple[int, int, float]]


def make_surface(rng: np.random.Generator, geometry: Geometry, shape: tuple[int, int]) -> Surface:
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
    cities: list[tuple[int, int, float]] = []
    for r, c in _random_pixels(rng, land, n_cities):
        radius = float(rng.uniform(6.0, 20.0))
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


def _seed_pair(seq: np.random.SeedSequence) -> tuple[np.random.SeedSequence, np.random.SeedSequence]:
    """A band's two seeds, of its noise and of its detector defects (``Scene.band_seeds``)."""
    noise, defects = seq.spawn(2)
    return noise, defects


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
                 band_seeds={b: _seed_pair(seq) for b, seq in zip(BANDS, band_seq.spawn(len(BANDS)), strict=True)}, **gases)


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
