"""Solar spectrum, absorption cross sections and Rayleigh optical depth on TEMPO's spectral grids (numpy only).

The committed table ``tempocodec/data/spectroscopy.npz`` (made by ``scripts/make_spectroscopy_table.py``, which
records the origin of every number in its ``provenance`` string) holds, per band, spectra already convolved with
the instrument slit (Gaussian, FWHM 0.6 nm) and sampled on a fine common grid of 0.02 nm. This module reads it and
interpolates it onto the instrument grid of each cross-track position, whose wavelengths are the band's nominal
grid shifted by a small spectral "smile".

Units: wavelength nm; solar irradiance photons s⁻¹ cm⁻² nm⁻¹ at 1 AU; cross sections cm² molecule⁻¹
(``o3_dt``: cm² molecule⁻¹ K⁻¹; ``o4``: cm⁵ molecule⁻²); ``ring`` is dimensionless (relative filling-in of the
solar spectrum by rotational Raman scattering, see :data:`SPECTRA`).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np

from tempocodec.bands import N_CHANNELS
from tempocodec.errors import TempocodecError

SLIT_FWHM_NM = 0.6
FINE_STEP_NM = 0.02
O3_REFERENCE_TEMPERATURE_K = 228.0
STANDARD_PRESSURE_HPA = 1013.25

# (first nominal wavelength, nominal sampling) of each band, nm. TEMPO's bands run ~292-495 and ~538-741 nm
# with 1028 channels each; the simulator uses a linear nominal grid over about that range.
BAND_GRIDS: dict[str, tuple[float, float]] = {
    "band_290_490_nm": (292.5, 0.1965),
    "band_540_740_nm": (538.5, 0.1965),
}
# Margin (nm) of the fine table beyond the nominal grid, enough for any smile shift.
FINE_MARGIN_NM = 2.0
# Smile: shift (nm) = a*u**2 + b*u + c for the normalised cross-track position u in [-1, 1].
SMILE_COEFFICIENTS_NM = (0.03, 0.008, -0.01)

SPECTRA = (
    "solar",  # photons s-1 cm-2 nm-1 at 1 AU
    "ring",  # (F0 convolved with the rotational-Raman kernel) / F0 - 1, both through the slit
    "o3",  # O3 cross section at O3_REFERENCE_TEMPERATURE_K, cm2
    "o3_dt",  # d(sigma_O3)/dT, cm2 K-1 (linear temperature coefficient, zero above 345 nm)
    "no2",  # cm2
    "hcho",  # cm2
    "o4",  # O2-O2 collision pair, cm5 molecule-2
    "h2o",  # effective (slit-resolved) band model, cm2
    "o2",  # O2 B band effective (slit-resolved) band model, cm2
)
CROSS_SECTIONS = ("o3", "o3_dt", "no2", "hcho", "o4", "h2o", "o2")
# Unit of each cross section in :class:`BandSpectra` (float32 cannot hold ~1e-46): multiply by it for cm2 (cm5).
CROSS_SECTION_UNITS = {"o3": 1e-20, "o3_dt": 1e-22, "no2": 1e-20, "hcho": 1e-20, "o4": 1e-46, "h2o": 1e-24, "o2": 1e-26}


def check_band(band: str) -> None:
    """Raise :class:`TempocodecError` unless ``band`` is one of :data:`BAND_GRIDS`."""
    if band not in BAND_GRIDS:
        raise TempocodecError(f"spectroscopy: unknown band {band!r} (expected one of {', '.join(BAND_GRIDS)})")


def nominal_wavelength(band: str) -> np.ndarray:
    """The band's nominal wavelength grid, float64 ``(1028,)`` in nm, increasing with channel index."""
    check_band(band)
    start, step = BAND_GRIDS[band]
    return start + step * np.arange(N_CHANNELS, dtype=np.float64)


def fine_wavelength(band: str) -> np.ndarray:
    """The fine common grid of the table for ``band`` (step :data:`FINE_STEP_NM`), float64 nm."""
    nominal = nominal_wavelength(band)
    start = np.floor(nominal[0] - FINE_MARGIN_NM)
    stop = np.ceil(nominal[-1] + FINE_MARGIN_NM)
    n = int(round((stop - start) / FINE_STEP_NM)) + 1
    return start + FINE_STEP_NM * np.arange(n, dtype=np.float64)


def smile_shift(cols: int) -> np.ndarray:
    """Per-cross-track wavelength shift ``(cols,)`` in nm (a few hundredths of a nm, quadratic in position).

    ``u`` runs linearly from -1 (first xtrack) to +1 (last) across the simulated swath (``u = 0`` when
    ``cols == 1``); the shift is ``0.03 u² + 0.008 u - 0.01`` nm, so it spans -0.01 … +0.028 nm.
    """
    u = np.linspace(-1.0, 1.0, cols) if cols > 1 else np.zeros(1)
    a, b, c = SMILE_COEFFICIENTS_NM
    return a * u**2 + b * u + c


def instrument_wavelength(band: str, cols: int) -> np.ndarray:
    """Wavelength of every (xtrack, channel): nominal grid plus smile, float64 ``(cols, 1028)`` nm."""
    return nominal_wavelength(band)[None, :] + smile_shift(cols)[:, None]


def slit_convolve(values: np.ndarray, step_nm: float, fwhm_nm: float = SLIT_FWHM_NM) -> np.ndarray:
    """Convolve spectra sampled on a uniform grid of ``step_nm`` with a unit-area Gaussian slit of ``fwhm_nm``.

    ``values``: ``(..., n)`` with wavelength last; returns float64 of the same shape (edges extended with the
    nearest value, so keep a margin of ~3 FWHM beyond the range you use).
    """
    from scipy.ndimage import gaussian_filter1d  # here: info imports this module (store -> features) and fits nothing

    sigma = fwhm_nm / (2.0 * np.sqrt(2.0 * np.log(2.0))) / step_nm
    return gaussian_filter1d(np.asarray(values, dtype=np.float64), sigma, axis=-1, mode="nearest", truncate=5.0)


def rayleigh_optical_depth(wavelength_nm: np.ndarray) -> np.ndarray:
    """Rayleigh optical depth of the whole atmosphere at 1013.25 hPa (Bodhaine et al. 1999, their eq. 30).

    Scale linearly with surface pressure. About 1.2 at 300 nm, 0.24 at 440 nm, 0.097 at 550 nm, 0.03 at 740 nm.
    """
    lam = np.asarray(wavelength_nm, dtype=np.float64) * 1e-3
    lam2 = lam * lam
    return 0.0021520 * (1.0455996 - 341.29061 / lam2 - 0.90230850 * lam2) / (1.0 + 0.0027059889 / lam2 - 85.968563 * lam2)


@dataclass(frozen=True)
class SpectroscopyTable:
    """The slit-convolved spectra on the fine grid: ``spectra[band][name]`` float64 ``(n_fine,)``."""

    spectra: dict[str, dict[str, np.ndarray]]
    provenance: str
    slit_fwhm_nm: float

    def wavelength(self, band: str) -> np.ndarray:
        """The fine grid (nm) the spectra of ``band`` are sampled on."""
        return fine_wavelength(band)


def default_table_path() -> Path:
    """Where the committed table lives inside the installed package."""
    return Path(str(resources.files("tempocodec") / "data" / "spectroscopy.npz"))


def load_table(path: str | Path | None = None) -> SpectroscopyTable:
    """Read a spectroscopy table (default: the committed one, read once per process)."""
    if path is None:
        return _default_table()
    return _read_table(Path(path))


@functools.lru_cache(maxsize=1)
def _default_table() -> SpectroscopyTable:
    """The committed table, cached."""
    return _read_table(default_table_path())


def _read_table(path: Path) -> SpectroscopyTable:
    """Parse and check one npz table."""
    try:
        with np.load(path, allow_pickle=False) as data:
            content = {key: data[key] for key in data.files}
    except (OSError, ValueError) as err:
        raise TempocodecError(f"{path}: cannot read the spectroscopy table ({err})") from None
    spectra: dict[str, dict[str, np.ndarray]] = {}
    for band in BAND_GRIDS:
        n_fine = fine_wavelength(band).size
        spectra[band] = {}
        for name in SPECTRA:
            key = f"{band}/{name}"
            if key not in content:
                raise TempocodecError(f"{path}: the spectroscopy table lacks {key!r}")
            values = content[key].astype(np.float64)
            if values.shape != (n_fine,):
                raise TempocodecError(f"{path}: {key!r} has shape {values.shape}, expected ({n_fine},)")
            spectra[band][name] = values
    if "provenance" not in content:
        raise TempocodecError(f"{path}: the spectroscopy table has no provenance string")
    return SpectroscopyTable(spectra=spectra, provenance=str(content["provenance"]),
                             slit_fwhm_nm=float(content.get("slit_fwhm_nm", SLIT_FWHM_NM)))


@dataclass(frozen=True)
class BandSpectra:
    """Everything the forward model needs on one band's instrument grid (read-only arrays).

    ``wavelength``: float64 ``(cols, C)`` nm; ``solar``, ``ring``: float32 ``(cols, C)``;
    ``cross_sections``: float32 ``(K, cols, C)`` in the order of :data:`CROSS_SECTIONS`, each in units of
    :data:`CROSS_SECTION_UNITS` (so multiply slant columns by the unit before the product);
    ``rayleigh``: float32 ``(C,)`` optical depth at 1013.25 hPa on the nominal grid.
    """

    band: str
    wavelength: np.ndarray
    solar: np.ndarray
    ring: np.ndarray
    cross_sections: np.ndarray
    rayleigh: np.ndarray

    def cross_section(self, name: str) -> np.ndarray:
        """One cross section ``(cols, C)`` by name, float64 in cm² (cm⁵ for ``o4``)."""
        return self.cross_sections[CROSS_SECTIONS.index(name)] * np.float64(CROSS_SECTION_UNITS[name])


def band_spectra(band: str, cols: int) -> BandSpectra:
    """The committed table interpolated onto ``band``'s instrument grid for ``cols`` cross-track positions (cached)."""
    check_band(band)
    if cols < 1:
        raise TempocodecError(f"spectroscopy: need at least one cross-track position, got {cols}")
    return _band_spectra(band, int(cols))


@functools.lru_cache(maxsize=8)
def _band_spectra(band: str, cols: int) -> BandSpectra:
    """Linear interpolation of the fine-grid spectra to each xtrack's shifted grid."""
    table = _default_table()
    fine = fine_wavelength(band)
    grid = instrument_wavelength(band, cols)

    def on_grid(name: str, unit: float = 1.0) -> np.ndarray:
        values = np.interp(grid.ravel(), fine, table.spectra[band][name] / unit)
        return values.reshape(grid.shape).astype(np.float32)

    cross_sections = np.stack([on_grid(name, CROSS_SECTION_UNITS[name]) for name in CROSS_SECTIONS])
    result = BandSpectra(band=band, wavelength=grid, solar=on_grid("solar"), ring=on_grid("ring"),
                         cross_sections=cross_sections,
                         rayleigh=rayleigh_optical_depth(nominal_wavelength(band)).astype(np.float32))
    for array in (result.wavelength, result.solar, result.ring, result.cross_sections, result.rayleigh):
        array.flags.writeable = False
    return result
