"""The forward model of one band: noise-free radiance of every pixel, instrument noise, detector defects.

Per pixel (independent pixel approximation):

    L(λ) = F0(λ) (1 AU/d)² μ0/π · [R_up(λ) + (R0(λ) - R_up0(λ)) e^{-m τ_O3(λ)}] · exp(-Σ_g SCD_g σ_g(λ) + ε ring(λ))

with ``R0 = (1 - f) R(τ_R p_s/p0, A) + f R(τ_R p_c/p0, 0.8)`` the Rayleigh + Lambertian-surface reflectance of
the clear and cloudy parts (cloud fraction ``f``), ``m = 1/μ0 + 1/μ`` the geometric air mass, ``R_up`` the single
scattering from the ozone layer (which keeps the UV below 310 nm at realistic levels), slant columns ``SCD_g`` =
vertical column × air mass factor, and a rotational-Raman (Ring) filling-in. Noise: photon shot noise, a read
floor and a relative ceiling (see :class:`~tempocodec.simulator.config.NoiseModel`); its 1-σ is written as
``radiance_error``. Radiance is float32 ``(rows, cols, 1028)`` in photons s⁻¹ cm⁻² nm⁻¹ sr⁻¹.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tempocodec.errors import TempocodecError
from tempocodec.granule.l1b import BANDS, RADIANCE_FILL
from tempocodec.science.spectroscopy import (
    CROSS_SECTION_UNITS,
    CROSS_SECTIONS,
    N_CHANNELS,
    O3_REFERENCE_TEMPERATURE_K,
    STANDARD_PRESSURE_HPA,
    band_spectra,
    nominal_wavelength,
)
from tempocodec.simulator.atmosphere import SlantColumns, reflectance, slant_columns
from tempocodec.simulator.config import NoiseModel
from tempocodec.simulator.physics import AU_M, CLOUD_ALBEDO, DU, OZONE_LAYER_RAYLEIGH_FRACTION, surface_albedo
from tempocodec.simulator.scene import Scene

PIXELS_PER_BLOCK = 256  # the forward model works on blocks of about this many pixels (whole mirror steps)
NODE_STEP = 8  # channels between the nodes of the spectrally smooth terms
ERROR_DIGITS = 2  # radiance_error is stored with 2 significant digits, like the newest TEMPO L1B writer
FLAG_MISSING, FLAG_BAD, FLAG_TRANSIENT, FLAG_UNDERFLOW = 1, 2, 8, 64


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


@dataclass(frozen=True)
class _BandTables:
    """The spectral inputs of the block math for one band and swath width, float32, xtrack-major.

    ``solar``: ``(cols, 1, C)``; ``gas_sigma``: ``(cols, 6, C)`` (NO2, HCHO, O4, H2O, O2 in their
    :data:`CROSS_SECTION_UNITS`, then the Ring spectrum); ``o3_sigma``: ``(cols, 2, C)`` (O3 and its temperature
    derivative); ``tau_top``: ``(1, 1, C)`` Rayleigh optical depth of the layer above the ozone; ``tau_nodes``:
    ``(1, 1, n)`` and ``albedo_nodes``: ``(5, n)`` on the ``n`` spectral nodes; ``left``, ``right``, ``weight``:
    node-to-channel interpolation (see :func:`_node_interpolation`).
    """

    solar: np.ndarray
    gas_sigma: np.ndarray
    o3_sigma: np.ndarray
    tau_top: np.ndarray
    tau_nodes: np.ndarray
    albedo_nodes: np.ndarray
    left: np.ndarray
    right: np.ndarray
    weight: np.ndarray


def _band_tables(band: str, cols: int) -> _BandTables:
    """The :class:`_BandTables` of ``band`` for ``cols`` cross-track positions."""
    spectra = band_spectra(band, cols)
    f32 = np.float32
    gas_index = [CROSS_SECTIONS.index(g) for g in ("no2", "hcho", "o4", "h2o", "o2")]
    gas_sigma = np.ascontiguousarray(np.concatenate(
        [spectra.cross_sections[gas_index].transpose(1, 0, 2), spectra.ring[:, None, :]], axis=1))
    o3_sigma = np.ascontiguousarray(spectra.cross_sections[[CROSS_SECTIONS.index("o3"), CROSS_SECTIONS.index("o3_dt")]]
                                    .transpose(1, 0, 2))
    nodes, left, right, weight = _node_interpolation(N_CHANNELS, NODE_STEP)
    return _BandTables(
        solar=spectra.solar[:, None, :], gas_sigma=gas_sigma, o3_sigma=o3_sigma,
        tau_top=(spectra.rayleigh * f32(OZONE_LAYER_RAYLEIGH_FRACTION))[None, None, :],
        tau_nodes=spectra.rayleigh[nodes][None, None, :],
        albedo_nodes=surface_albedo(nominal_wavelength(band)[nodes]).astype(f32),
        left=left, right=right, weight=weight)


def _smooth_terms(p: dict[str, np.ndarray], t: _BandTables, air_mass: np.ndarray,
                  layer: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The spectrally smooth parts of one block, evaluated on the nodes and interpolated to every channel,
    float32 ``(cols, rows_block, C)``: the IPA reflectance of clear and cloudy parts less the single scattering of
    the layer above the ozone, and that layer's transmission."""
    f32, one = np.float32, np.float32(1.0)
    albedo = np.minimum(np.matmul(p["weights"], t.albedo_nodes) * p["texture"], f32(0.98))
    path, surface = reflectance(t.tau_nodes * p["ps"], albedo, p["mu0"], p["mu"], p["phase"])
    clear = path + surface
    path, surface = reflectance(t.tau_nodes * p["pc"], f32(CLOUD_ALBEDO), p["mu0"], p["mu"], p["phase"])
    smooth = clear + p["f"] * (path + surface - clear)
    above = np.exp(-t.tau_nodes * f32(OZONE_LAYER_RAYLEIGH_FRACTION) * air_mass)
    smooth -= layer * (one - above)
    return _interpolate(smooth, t.left, t.right, t.weight), _interpolate(above, t.left, t.right, t.weight)


def _block_radiance(p: dict[str, np.ndarray], t: _BandTables) -> np.ndarray:
    """Noise-free radiance of one block of pixels (``p``: :func:`_pixel_inputs` sliced to the block), float32
    ``(cols, rows_block, C)``: smooth parts, then the ozone layer, the other absorbers and the sun."""
    f32, one = np.float32, np.float32(1.0)
    air_mass = one / p["mu0"] + one / p["mu"]
    layer = p["phase"] / (f32(4.0) * (p["mu0"] + p["mu"]))
    smooth, above = _smooth_terms(p, t, air_mass, layer)
    tau_o3 = np.matmul(p["o3"], t.o3_sigma)
    upper = layer * t.tau_top / (t.tau_top + tau_o3)
    np.multiply(tau_o3, -air_mass, out=tau_o3)
    transmitted = np.exp(tau_o3, out=tau_o3)
    above *= transmitted
    np.subtract(one, above, out=above)
    upper *= above
    smooth *= transmitted
    total = np.add(upper, smooth, out=upper)
    del smooth, above, transmitted
    optical_depth = np.matmul(p["gas"], t.gas_sigma)
    total *= np.exp(np.negative(optical_depth, out=optical_depth), out=optical_depth)
    total *= t.solar
    total *= p["scale"]
    return total


def _add_noise(total: np.ndarray, noise: NoiseModel, rng: np.random.Generator) -> np.ndarray:
    """Add Gaussian noise of the model's 1-σ to ``total`` (float32, in place); return that 1-σ."""
    sigma = noise.sigma(total)
    draw = rng.standard_normal(total.shape, dtype=np.float32)
    draw *= sigma
    total += draw
    return sigma


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
    tables = _band_tables(band, cols)
    inputs = _pixel_inputs(scene, columns)
    rng = np.random.Generator(np.random.SFC64(scene.band_seeds[band][0]))
    radiance = np.empty((rows, cols, N_CHANNELS), np.float32)
    error = np.empty_like(radiance)
    rows_per_block = max(1, PIXELS_PER_BLOCK // cols)
    for start in range(0, rows, rows_per_block):
        block = slice(start, min(rows, start + rows_per_block))
        total = _block_radiance({k: v[:, block] for k, v in inputs.items()}, tables)
        sigma = _add_noise(total, scene.config.noise, rng)
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
