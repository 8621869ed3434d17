"""Reflectance of a Rayleigh atmosphere over a Lambertian surface or cloud, and the slant columns and air mass
factors of the absorbers (independent pixel approximation; formulas in ``docs/simulator.md``)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tempocodec.science.spectroscopy import STANDARD_PRESSURE_HPA, rayleigh_optical_depth
from tempocodec.simulator.physics import (
    CLOUD_ALBEDO,
    MULTIPLE_SCATTERING,
    O2_COLUMN,
    O4_COLUMN,
    PATH_SENSITIVITY,
    RAMAN_FRACTION,
    REFERENCE_NM,
)
from tempocodec.simulator.scene import Scene


def reflectance(tau: np.ndarray, albedo: np.ndarray | np.floating | float, mu0: np.ndarray, mu: np.ndarray,
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
