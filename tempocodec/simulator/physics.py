"""The simulator's physical constants and analytic surface spectra (values and sources: ``docs/simulator.md``)."""

from __future__ import annotations

import numpy as np

AU_M = 1.495978707e11  # astronomical unit, m
DU = 2.687e16  # molecules cm-2
O2_COLUMN = 4.50e24  # molecules cm-2 at 1013.25 hPa
O4_COLUMN = 1.4e43  # molecules2 cm-5 at 1013.25 hPa
H2O_PER_G_CM2 = 3.3428e22  # molecules cm-2 per g cm-2 of precipitable water
CLOUD_ALBEDO = 0.8
MULTIPLE_SCATTERING = 1.3  # R_atm = single scattering x (1 + 1.3 tau)
OZONE_LAYER_RAYLEIGH_FRACTION = 0.06  # share of the Rayleigh optical depth in and above the ozone layer
RAMAN_FRACTION = 0.04  # rotational Raman share of Rayleigh scattering (Ring filling-in)
# fraction of a gas's column that photons scattered in the atmosphere (not at the surface) see, per gas
PATH_SENSITIVITY = {"bl": 0.3, "o4": 0.6, "h2o": 0.45, "o2": 0.75}
REFERENCE_NM = {"no2": 440.0, "hcho": 340.0, "o4": 477.0, "h2o": 650.0, "o2": 690.0, "ring": 400.0,
                "o3": 331.0, "o3_360": 360.0, "cld466": 466.0}

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
