"""Build ``tempocodec/data/spectroscopy.npz``: slit-convolved solar spectrum and cross sections for the simulator.

Inputs are the TUV-x data files shipped in the ``musica`` wheel (Apache-2.0). Get them without installing::

    pip download --no-deps musica -d /tmp/musica_dl && unzip -q /tmp/musica_dl/musica-*.whl -d /tmp/musica
    python scripts/make_spectroscopy_table.py /tmp/musica/musica/configs/tuvx/data

Every spectrum is built on a 0.01 nm high-resolution grid, convolved with the Gaussian slit (FWHM 0.6 nm) and
sampled on the fine grid of :mod:`tempocodec.science.spectroscopy` (0.02 nm); the simulator interpolates that onto each
cross-track position's instrument grid. Where no package ships a usable spectrum (NO2 vibronic structure, O2-O2,
H2O, O2 B band, the Ring kernel) the script uses documented analytic band models; their parameters are below and
are copied into the table's ``provenance`` string together with the SHA-256 of every input file.
"""

from __future__ import annotations

import argparse
import hashlib
from pathlib import Path

import netCDF4
import numpy as np
from scipy.signal import fftconvolve

from tempocodec.atomic import ANY_FILE, atomic_file
from tempocodec.science.spectroscopy import (
    BAND_GRIDS,
    FINE_STEP_NM,
    O3_REFERENCE_TEMPERATURE_K,
    SLIT_FWHM_NM,
    SPECTRA,
    fine_wavelength,
    slit_convolve,
)

HR_STEP_NM = 0.01
HR_MARGIN_NM = 16.0  # the Ring kernel reaches ~14 nm at 740 nm
PLANCK = 6.62607015e-34  # J s
LIGHT_SPEED = 2.99792458e8  # m s-1
MODEL_SEED = 20240917  # fixed seed of the quasi-random line positions of the analytic band models

SOLAR_FILE = "profiles/solar/sao2010.solref.converted"
O3_FILE = "cross_sections/O3_1.nc"
O3_TEMPERATURE_FILE = "cross_sections/O3_2.nc"
HCHO_FILE = "cross_sections/CH2O_1.nc"
NO2_FILE = "cross_sections/NO2_1.nc"

# O3 temperature dependence: linear fit over the cold Malicet temperatures, tapered to zero between these limits.
O3_COLD_TEMPERATURES_K = (218.0, 228.0, 243.0)
O3_TAPER_NM = (335.0, 345.0)
HCHO_TEMPERATURE_K = 290.0  # boundary-layer temperature for the JPL-2011 linear temperature correction

# NO2: smooth continuum = polynomial (degree below) in wavelength fitted to log(sigma) of the JPL-2006 294 K
# 5-nm values; vibronic structure = quasi-random band forest, high-passed, scaled to this rms in 405-465 nm
# (after the slit), with relative amplitude rising from 40 % (UV) to 100 % (visible) of that.
NO2_POLY_DEGREE = 4
NO2_FIT_RANGE_NM = (290.0, 660.0)
NO2_STRUCTURE_RMS = 0.45e-19
NO2_STRUCTURE_WINDOW_NM = (405.0, 465.0)
NO2_HIGHPASS_FWHM_NM = 8.0

# O2-O2 collision-induced bands: (centre nm, peak cm5 molecule-2 at 0.6 nm resolution, FWHM nm), Gaussian shapes;
# positions after Thalman & Volkamer (2013), peaks rounded from the literature (477 nm peak 6.5e-46 as the recipe).
O4_BANDS = (
    (343.4, 1.0e-46, 3.0),
    (360.5, 4.1e-46, 3.5),
    (380.2, 2.4e-46, 4.0),
    (446.7, 0.6e-46, 4.5),
    (477.3, 6.5e-46, 5.0),
    (532.0, 1.0e-46, 8.0),
    (577.2, 11.0e-46, 6.5),
    (630.0, 7.5e-46, 6.5),
)
# H2O bands: (envelope centre nm, envelope FWHM nm, peak effective cross section cm2 after the slit). Each band is
# a forest of narrow lines under a Gaussian envelope; peaks chosen to give slit-resolved optical depths of
# ~0.003 (442 nm), ~0.03 (590 nm), ~0.06 (650 nm) and ~0.3 (720 nm) for a 2.5 g cm-2 column at air mass ~3.
H2O_BANDS = (
    (442.5, 4.0, 1.2e-26),
    (592.0, 10.0, 1.2e-25),
    (651.0, 10.0, 2.4e-25),
    (722.0, 22.0, 1.5e-24),
)
H2O_LINE_SPACING_NM = 0.25
H2O_LINE_FWHM_NM = 0.03
# O2 B band (b-X 1-0): R branch lines from 686.7 nm toward the head, P branch lines out to ~695 nm; effective
# (slit-resolved) peak cross section after the slit. Optical depth ~0.7 at the R-branch peak for air mass 3.
O2_B_R_BRANCH = (686.75, 0.12, 13)  # first line nm, spacing nm, count
O2_B_P_BRANCH = (688.40, 0.36, 19)
O2_B_PEAK = 5.0e-26
O2_B_LINE_FWHM_NM = 0.02
# Rotational Raman (Ring) kernel in wavenumber: |dnu| exp(-(dnu/RING_WIDTH)^2), |dnu| <= RING_CUTOFF (cm-1).
RING_WIDTH_CM = 70.0
RING_CUTOFF_CM = 250.0
RING_NU_STEP_CM = 0.2


def sha256(path: Path) -> str:
    """Hex SHA-256 of a file."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


def read_solar(path: Path, grid: np.ndarray) -> np.ndarray:
    """SAO2010 (W m-2 nm-1) on ``grid``, converted to photons s-1 cm-2 nm-1: E * lambda / (h c) * 1e-4."""
    data = np.loadtxt(path, comments="#")
    watts = np.interp(grid, data[:, 0], data[:, 1])
    return watts * (grid * 1e-9) / (PLANCK * LIGHT_SPEED) * 1e-4


def read_cross_section(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """TUV-x netCDF cross section: (wavelength nm, temperatures K or empty, parameters (n_param, n_wl))."""
    with netCDF4.Dataset(path) as ds:
        wavelength = np.asarray(ds["wavelength"][:], dtype=np.float64)
        temperature = np.asarray(ds["temperature"][:], dtype=np.float64) if "temperature" in ds.variables else np.empty(0)
        params = np.asarray(ds["cross_section_parameters"][:], dtype=np.float64)
    return wavelength, temperature, params


def o3_spectra(data: Path, grid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """O3 at the reference temperature and its linear temperature coefficient on ``grid`` (cm2, cm2 K-1).

    Below 345 nm: Malicet et al. (1995) at 218/228/243 K (O3_2.nc), linear fit in T evaluated at the reference
    temperature; above: Malicet/Brion 295 K (O3_1.nc, T-independent here). Both are blended with a cosine taper
    over 335-345 nm so the spectrum has no step.
    """
    wl1, _, p1 = read_cross_section(data / O3_FILE)
    wl2, temps, p2 = read_cross_section(data / O3_TEMPERATURE_FILE)
    warm = np.interp(grid, wl1, p1[0])
    cold_idx = [int(np.argmin(np.abs(temps - t))) for t in O3_COLD_TEMPERATURES_K]
    t_cold = temps[cold_idx]
    sig_cold = p2[cold_idx]
    t_mean = t_cold.mean()
    slope = ((t_cold - t_mean)[:, None] * (sig_cold - sig_cold.mean(axis=0))).sum(axis=0) / ((t_cold - t_mean) ** 2).sum()
    at_ref = sig_cold.mean(axis=0) + slope * (O3_REFERENCE_TEMPERATURE_K - t_mean)
    at_ref = np.interp(grid, wl2, at_ref, right=0.0)
    slope = np.interp(grid, wl2, slope, right=0.0)
    lo, hi = O3_TAPER_NM
    weight = np.clip((hi - grid) / (hi - lo), 0.0, 1.0)
    weight = 0.5 - 0.5 * np.cos(np.pi * weight)  # 1 below 335 nm, 0 above 345 nm
    return weight * at_ref + (1.0 - weight) * warm, weight * slope


def hcho_spectrum(data: Path, grid: np.ndarray) -> np.ndarray:
    """HCHO (JPL-2011, 1 nm bins, 226-375 nm) at HCHO_TEMPERATURE_K, linearly interpolated; zero outside."""
    wl, _, p = read_cross_section(data / HCHO_FILE)
    sigma = p[0] + p[1] * (HCHO_TEMPERATURE_K - 298.0)
    return np.clip(np.interp(grid, wl, sigma, left=0.0, right=0.0), 0.0, None)


def no2_smooth(data: Path, grid: np.ndarray) -> np.ndarray:
    """Smooth NO2 continuum: exp(polynomial) fitted to log sigma of JPL-2006 (294 K, ~5 nm bins, NO2_1.nc)."""
    wl, temps, p = read_cross_section(data / NO2_FILE)
    sigma = p[int(np.argmin(np.abs(temps - 294.0)))]
    keep = (wl >= NO2_FIT_RANGE_NM[0]) & (wl <= NO2_FIT_RANGE_NM[1])
    x0, scale = 475.0, 200.0
    coef = np.polyfit((wl[keep] - x0) / scale, np.log(sigma[keep]), NO2_POLY_DEGREE)
    return np.exp(np.polyval(coef, (grid - x0) / scale))


def no2_structure(grid: np.ndarray, smooth: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Zero-mean vibronic structure (cm2): a quasi-random forest of bands and sub-bands, high-passed.

    Band centres step by 120-250 cm-1; each band has 4-8 overlapping sub-bands within +-2 nm of its centre, with
    FWHM 0.3-1.2 nm and log-normal strengths. The forest is high-passed (minus its Gaussian smooth of 8 nm FWHM),
    multiplied by the continuum and by a weight rising from 0.4 (UV) to 1 (above ~400 nm), and scaled after the slit so its rms in
    405-465 nm is NO2_STRUCTURE_RMS.
    """
    forest = np.zeros_like(grid)
    nu = 1e7 / grid[-1]
    while nu < 1e7 / grid[0]:
        centre = 1e7 / nu
        for _ in range(int(rng.integers(4, 9))):
            pos = centre + rng.uniform(-2.0, 2.0)
            fwhm = rng.uniform(0.3, 1.2)
            forest += rng.lognormal(0.0, 0.5) * np.exp(-4.0 * np.log(2.0) * ((grid - pos) / fwhm) ** 2)
        nu += rng.uniform(120.0, 250.0)
    highpassed = forest - slit_convolve(forest, HR_STEP_NM, NO2_HIGHPASS_FWHM_NM)
    weight = 0.4 + 0.6 / (1.0 + np.exp(-(grid - 370.0) / 15.0))
    structure = highpassed * smooth * weight
    lo, hi = NO2_STRUCTURE_WINDOW_NM
    window = (grid >= lo) & (grid <= hi)
    convolved = slit_convolve(structure, HR_STEP_NM)
    rms = np.sqrt(np.mean(convolved[window] ** 2)) if window.any() else 1.0
    return structure * (NO2_STRUCTURE_RMS / rms)


def gaussian(grid: np.ndarray, centre: float, fwhm: float) -> np.ndarray:
    """Unit-peak Gaussian of ``fwhm`` at ``centre`` on ``grid``."""
    return np.exp(-4.0 * np.log(2.0) * ((grid - centre) / fwhm) ** 2)


def o4_spectrum(grid: np.ndarray) -> np.ndarray:
    """O2-O2 as a sum of Gaussian bands (O4_BANDS) (cm5 molecule-2); the 0.6 nm slit barely broadens them."""
    return sum(peak * gaussian(grid, centre, fwhm) for centre, peak, fwhm in O4_BANDS)


def line_forest(grid: np.ndarray, positions: np.ndarray, strengths: np.ndarray, fwhm: float) -> np.ndarray:
    """Sum of unit-area-ish narrow Gaussian lines (peak = strength) at ``positions`` on ``grid``."""
    out = np.zeros_like(grid)
    half = 5.0 * fwhm
    for pos, strength in zip(positions, strengths, strict=True):
        lo, hi = np.searchsorted(grid, [pos - half, pos + half])
        out[lo:hi] += strength * gaussian(grid[lo:hi], pos, fwhm)
    return out


def scaled_to_peak(grid_hr: np.ndarray, spectrum: np.ndarray, peak: float, window: tuple[float, float]) -> np.ndarray:
    """``spectrum`` scaled so that its slit-convolved maximum inside ``window`` (nm) equals ``peak``."""
    convolved = slit_convolve(spectrum, HR_STEP_NM)
    inside = (grid_hr >= window[0]) & (grid_hr <= window[1])
    top = convolved[inside].max() if inside.any() else 0.0
    return spectrum * (peak / top) if top > 0 else spectrum


def h2o_spectrum(grid: np.ndarray, full_grid: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """H2O effective cross section: per band a line forest (mean spacing 0.25 nm, log-normal strengths) under a
    Gaussian envelope, each band scaled so its slit-convolved peak is the band's tabulated value (cm2).

    Lines are drawn on ``full_grid`` (the union of both bands) so the result does not depend on the band range.
    """
    out = np.zeros_like(grid)
    for centre, fwhm, peak in H2O_BANDS:
        lo, hi = centre - 1.5 * fwhm, centre + 1.5 * fwhm
        n = int((hi - lo) / H2O_LINE_SPACING_NM)
        positions = np.sort(rng.uniform(lo, hi, n))
        strengths = rng.lognormal(0.0, 1.0, n) * gaussian(positions, centre, fwhm)
        band = line_forest(full_grid, positions, strengths, H2O_LINE_FWHM_NM)
        band = scaled_to_peak(full_grid, band, peak, (lo, hi))
        out += np.interp(grid, full_grid, band, left=0.0, right=0.0)
    return out


def o2_b_spectrum(grid: np.ndarray, full_grid: np.ndarray) -> np.ndarray:
    """O2 B band effective cross section (cm2): R and P branch line combs with rotational (J exp(-J^2/100))
    intensities, scaled so the slit-convolved peak is O2_B_PEAK."""
    positions, strengths = [], []
    for first, spacing, count in (O2_B_R_BRANCH, O2_B_P_BRANCH):
        j = np.arange(1, count + 1, dtype=np.float64)
        positions.append(first + spacing * (j - 1))
        strengths.append(j * np.exp(-(j**2) / 100.0))
    band = line_forest(full_grid, np.concatenate(positions), np.concatenate(strengths), O2_B_LINE_FWHM_NM)
    band = scaled_to_peak(full_grid, band, O2_B_PEAK, (685.0, 697.0))
    return np.interp(grid, full_grid, band, left=0.0, right=0.0)


def ring_source(grid: np.ndarray, solar: np.ndarray) -> np.ndarray:
    """Solar spectrum redistributed by rotational Raman scattering (same units as ``solar``).

    Convolution on a uniform wavenumber grid with the kernel |dnu| exp(-(dnu/70)^2), |dnu| <= 250 cm-1, a smooth
    stand-in for the N2/O2 rotational Raman lines (discrete lines are unresolved after the 0.6 nm slit).
    """
    nu = np.arange(1e7 / grid[-1], 1e7 / grid[0], RING_NU_STEP_CM)
    f_nu = np.interp(1e7 / nu, grid, solar)
    dnu = np.arange(-RING_CUTOFF_CM, RING_CUTOFF_CM + RING_NU_STEP_CM / 2, RING_NU_STEP_CM)
    kernel = np.abs(dnu) * np.exp(-((dnu / RING_WIDTH_CM) ** 2))
    kernel /= kernel.sum()
    shifted = fftconvolve(f_nu, kernel, mode="same")
    return np.interp(grid, (1e7 / nu)[::-1], shifted[::-1])


def band_table(data: Path, band: str, full_grid: np.ndarray, seeds: dict[str, int]) -> dict[str, np.ndarray]:
    """All SPECTRA of one band on the fine grid (float64: O2-O2 values ~1e-46 underflow float32)."""
    fine = fine_wavelength(band)
    grid = np.arange(fine[0] - HR_MARGIN_NM, fine[-1] + HR_MARGIN_NM + HR_STEP_NM / 2, HR_STEP_NM)
    solar = read_solar(data / SOLAR_FILE, grid)
    o3, o3_dt = o3_spectra(data, grid)
    smooth = no2_smooth(data, grid)
    structure = no2_structure(full_grid, no2_smooth(data, full_grid), np.random.default_rng(seeds["no2"]))
    no2 = np.clip(smooth + np.interp(grid, full_grid, structure), 0.1 * smooth, None)
    hr = {
        "solar": solar,
        "o3": o3,
        "o3_dt": o3_dt,
        "no2": no2,
        "hcho": hcho_spectrum(data, grid),
        "o4": o4_spectrum(grid),
        "h2o": h2o_spectrum(grid, full_grid, np.random.default_rng(seeds["h2o"])),
        "o2": o2_b_spectrum(grid, full_grid),
    }
    out = {name: np.interp(fine, grid, slit_convolve(values, HR_STEP_NM)) for name, values in hr.items()}
    raman = np.interp(fine, grid, slit_convolve(ring_source(grid, solar), HR_STEP_NM))
    out["ring"] = raman / out["solar"] - 1.0
    return {name: out[name] for name in SPECTRA}


def provenance(data: Path, source_label: str) -> str:
    """The provenance text stored in the table: inputs with SHA-256, processing and analytic model parameters."""
    files = [SOLAR_FILE, O3_FILE, O3_TEMPERATURE_FILE, HCHO_FILE, NO2_FILE]
    lines = [
        "tempocodec spectroscopy table, made by scripts/make_spectroscopy_table.py",
        f"input data: TUV-x data directory from {source_label} (musica, Apache-2.0), files:",
        *[f"  {name} sha256={sha256(data / name)}" for name in files],
        f"processing: every spectrum built on a {HR_STEP_NM} nm grid, convolved with a Gaussian slit of FWHM "
        f"{SLIT_FWHM_NM} nm (unit area), sampled on a {FINE_STEP_NM} nm grid per band "
        f"({', '.join(f'{b}: nominal start {s} nm step {d} nm' for b, (s, d) in BAND_GRIDS.items())}); "
        "cross sections are convolved alone (no I0 correction).",
        "solar: SAO2010 solar reference (Chance & Kurucz 2010, JQSRT 111, 1289), W m-2 nm-1 converted to photons "
        "s-1 cm-2 nm-1 by E*lambda/(h c)*1e-4, at 1 AU.",
        f"o3: Malicet et al. 1995 (J. Atmos. Chem. 21, 263) at 218/228/243 K, linear fit in T evaluated at "
        f"{O3_REFERENCE_TEMPERATURE_K} K below 345 nm; Malicet/Brion 295 K (Brion et al. 1998) above; cosine blend "
        f"over {O3_TAPER_NM[0]}-{O3_TAPER_NM[1]} nm. o3_dt: the linear-fit slope (cm2 K-1), tapered to 0 above 345 nm.",
        f"hcho: JPL-2011 (Sander et al.) 1 nm values, 226-375 nm, with its linear T coefficient at {HCHO_TEMPERATURE_K} K; "
        "coarse (1 nm bins) but usable after the 0.6 nm slit; zero outside 226-375 nm.",
        f"no2: ANALYTIC. Continuum exp(poly deg {NO2_POLY_DEGREE}) fitted to log sigma of JPL-2006 294 K "
        f"(NO2_1.nc, ~5 nm bins) over {NO2_FIT_RANGE_NM} nm, extrapolated beyond 660 nm; plus a quasi-random "
        f"vibronic band forest (seed {MODEL_SEED}+1), high-passed ({NO2_HIGHPASS_FWHM_NM} nm Gaussian), scaled to an "
        f"rms of {NO2_STRUCTURE_RMS:.2e} cm2 in {NO2_STRUCTURE_WINDOW_NM} nm after the slit; floor 0.1*continuum.",
        f"o4: ANALYTIC Gaussian bands (centre nm, peak cm5 molecule-2, FWHM nm; then through the slit): {O4_BANDS}; "
        "positions after Thalman & Volkamer 2013, peaks approximate (477 nm: 6.5e-46).",
        f"h2o: ANALYTIC effective band model (centre nm, envelope FWHM nm, slit-resolved peak cm2): {H2O_BANDS}; "
        f"line forests with mean spacing {H2O_LINE_SPACING_NM} nm, line FWHM {H2O_LINE_FWHM_NM} nm, log-normal "
        f"strengths (seed {MODEL_SEED}+2). Order-of-magnitude optical depths, not line-by-line spectroscopy.",
        f"o2: ANALYTIC O2 B band effective model: R branch (first, spacing, count) {O2_B_R_BRANCH}, P branch "
        f"{O2_B_P_BRANCH}, intensities J exp(-J^2/100), slit-resolved peak {O2_B_PEAK:.1e} cm2.",
        f"ring: ANALYTIC rotational-Raman redistribution of the SAO2010 spectrum with the wavenumber kernel "
        f"|dnu| exp(-(dnu/{RING_WIDTH_CM})^2), |dnu|<={RING_CUTOFF_CM} cm-1; ring = slit(F0*K)/slit(F0) - 1.",
    ]
    return "\n".join(lines)


def main() -> None:
    """Command line: data directory in, npz table out (written atomically)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data_dir", type=Path, help="musica/configs/tuvx/data from the unpacked musica wheel")
    default_out = Path(__file__).resolve().parents[1] / "tempocodec" / "data" / "spectroscopy.npz"
    parser.add_argument("--out", type=Path, default=default_out)
    parser.add_argument("--source-label", default="the musica wheel from PyPI", help="where the data directory came from")
    args = parser.parse_args()
    data = args.data_dir
    missing = [name for name in (SOLAR_FILE, O3_FILE, O3_TEMPERATURE_FILE, HCHO_FILE, NO2_FILE) if not (data / name).is_file()]
    if missing:
        raise SystemExit(f"{data}: missing TUV-x data files {missing}")
    bands = list(BAND_GRIDS)
    full_grid = np.arange(fine_wavelength(bands[0])[0] - HR_MARGIN_NM,
                          fine_wavelength(bands[-1])[-1] + HR_MARGIN_NM + HR_STEP_NM / 2, HR_STEP_NM)
    seeds = {"no2": MODEL_SEED + 1, "h2o": MODEL_SEED + 2}
    arrays: dict[str, np.ndarray] = {}
    for band in bands:
        for name, values in band_table(data, band, full_grid, seeds).items():
            arrays[f"{band}/{name}"] = values
    arrays["provenance"] = np.array(provenance(data, args.source_label))
    arrays["slit_fwhm_nm"] = np.array(SLIT_FWHM_NM)
    with atomic_file(args.out, replace=ANY_FILE) as tmp, tmp.open("wb") as handle:
        np.savez_compressed(handle, **arrays)
    print(f"wrote {args.out} ({args.out.stat().st_size / 1e6:.2f} MB)")


if __name__ == "__main__":
    main()
