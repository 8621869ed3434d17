"""A small DOAS fit of slant columns (numpy only), vectorised over many pixels.

For every pixel the log of the radiance over the solar spectrum is fitted, channel by channel inside a window
(default the NO₂ window 405–465 nm; :func:`gas_setup` gives the NO₂ and HCHO fits), by linear least squares::

    ln(L(λ) / F₀(λ)) = Σ_j a_j u(λ)^j − Σ_g S_g σ_g(λ) + r · ring(λ) + residual

with ``u`` the wavelength mapped linearly onto [-1, 1] across the window, ``j = 0 … degree`` (a low-order
polynomial: broad-band scattering and surface reflectance), ``S_g`` the slant column of absorber ``g``
(molecules cm⁻²; molecules² cm⁻⁵ for ``o4``) and ``r`` the Ring coefficient (filling-in of Fraunhofer lines).
``F₀``, the cross sections ``σ_g`` and ``ring`` come from :mod:`tempocodec.science.spectroscopy` (already convolved
with the instrument slit), interpolated onto each cross-track position's wavelengths, e.g. the L1B
``nominal_wavelength`` ``(xtrack, spectral_channel)``. No I₀ correction, no shift or squeeze.

Channels whose radiance is invalid (fill, not finite, ≤ 0) get zero weight; a pixel is fitted when at least
:data:`MIN_VALID_FRACTION` of the window's channels are valid. The 1-σ uncertainty of each coefficient comes
from the fit residual: ``s² (AᵀA)⁻¹`` with ``s²`` the residual sum of squares over (valid channels − unknowns).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tempocodec.errors import TempocodecError
from tempocodec.prepare.normalize import is_valid
from tempocodec.science.spectroscopy import (
    CROSS_SECTIONS,
    check_band,
    fine_wavelength,
    load_table,
)

NO2_WINDOW_NM = (405.0, 465.0)
DEFAULT_ABSORBERS = ("no2", "o3", "o4", "h2o")
HCHO_WINDOW_NM = (328.5, 356.5)
HCHO_ABSORBERS = ("hcho", "o3", "o3_dt", "no2", "o4")
"""HCHO fit: TEMPO's window; O₃ and its temperature derivative dominate the optical depth there. On simulated
granules this set and degree 3 with the Ring term fit without bias and with a scatter equal to the fit's own
1-σ (about 1e16 molecules cm⁻² per pixel, the Cramér-Rao bound of the L2 truth); smaller sets or degree 4 bias it."""
GAS_FITS = {"no2": (NO2_WINDOW_NM, DEFAULT_ABSORBERS), "hcho": (HCHO_WINDOW_NM, HCHO_ABSORBERS)}
"""Target gas -> (window nm, absorbers) of :func:`gas_setup`."""
DEFAULT_DEGREE = 3
MIN_VALID_FRACTION = 0.9


@dataclass(frozen=True)
class DoasSetup:
    """The fit's design on one band's wavelength grid.

    ``channels``: int ``(n,)`` spectral channels inside the window; ``design``: float64 ``(X, n, K)``, the
    columns (``names``) divided by ``scale`` ``(K,)``, their root mean square, for conditioning;
    ``gram``: float64 ``(X, K, K)``, ``designᵀ design`` per cross-track position; ``log_solar``: float64
    ``(X, n)``, ``ln F₀``. ``X`` is 1 when one wavelength grid serves every cross-track position.
    """

    band: str
    window_nm: tuple[float, float]
    names: tuple[str, ...]
    target: str
    channels: np.ndarray
    design: np.ndarray
    scale: np.ndarray
    gram: np.ndarray
    log_solar: np.ndarray

    @property
    def n_xtrack(self) -> int:
        """Cross-track positions the design has (1: shared by all)."""
        return int(self.design.shape[0])


@dataclass(frozen=True)
class DoasResult:
    """Per-pixel fit results, NaN where a pixel was not fitted; leading shape of the radiance given to :func:`fit_doas`.

    ``scd``, ``scd_error``: slant column of the setup's target and its 1-σ fit uncertainty (molecules cm⁻²);
    ``rms_residual``: root mean square of the residual of ``ln(L/F₀)`` over the valid window channels;
    ``coefficients``: ``(..., K)`` every fitted coefficient in physical units (order of ``DoasSetup.names``).
    """

    scd: np.ndarray
    scd_error: np.ndarray
    rms_residual: np.ndarray
    coefficients: np.ndarray


def _on_grid(band: str, name: str, wavelength: np.ndarray) -> np.ndarray:
    """The committed slit-convolved spectrum ``name`` (cm² for cross sections) at ``wavelength`` (nm), float64."""
    table = load_table()
    return np.interp(wavelength, fine_wavelength(band), table.spectra[band][name])


def doas_setup(
    wavelength: np.ndarray,
    band: str = "band_290_490_nm",
    *,
    window_nm: tuple[float, float] = NO2_WINDOW_NM,
    absorbers: tuple[str, ...] = DEFAULT_ABSORBERS,
    degree: int = DEFAULT_DEGREE,
    ring: bool = True,
    target: str = "no2",
) -> DoasSetup:
    """The design of a DOAS fit on the wavelength grid ``wavelength`` (nm): ``(C,)`` for all cross-track positions, or
    ``(X, C)`` one grid per cross-track position (an L1B band's ``nominal_wavelength``).

    Channels are in the window when their wavelength, averaged over cross-track, lies in ``window_nm``.
    """
    check_band(band)
    unknown = [a for a in absorbers if a not in CROSS_SECTIONS]
    if unknown or target not in absorbers:
        raise TempocodecError(f"DOAS: absorbers {absorbers} must be among {CROSS_SECTIONS} and include the target {target!r}")
    grid = np.atleast_2d(np.asarray(wavelength, np.float64))
    if grid.ndim != 2:
        raise TempocodecError(f"DOAS: wavelength must be (C,) or (xtrack, C), got shape {np.shape(wavelength)}")
    low, high = window_nm
    mean = np.nanmean(grid, axis=0)
    channels = np.flatnonzero((mean >= low) & (mean <= high))
    n_unknowns = degree + 1 + len(absorbers) + int(ring)
    if channels.size < 2 * n_unknowns:
        raise TempocodecError(
            f"DOAS: the window {low:g}-{high:g} nm holds {channels.size} channels of the grid "
            f"({mean.min():.1f}-{mean.max():.1f} nm), too few for {n_unknowns} unknowns"
        )
    lam = grid[:, channels]
    u = (2.0 * lam - (low + high)) / (high - low)
    columns = [u**j for j in range(degree + 1)]
    columns += [-_on_grid(band, a, lam) for a in absorbers]
    names = [f"poly{j}" for j in range(degree + 1)] + list(absorbers)
    if ring:
        columns.append(_on_grid(band, "ring", lam))
        names.append("ring")
    design = np.stack(columns, axis=-1)
    scale = np.sqrt(np.mean(design**2, axis=(0, 1)))
    design = design / scale
    return DoasSetup(
        band=band,
        window_nm=(float(low), float(high)),
        names=tuple(names),
        target=target,
        channels=channels,
        design=design,
        scale=scale,
        gram=np.matmul(design.transpose(0, 2, 1), design),
        log_solar=np.log(_on_grid(band, "solar", lam)),
    )


def gas_setup(wavelength: np.ndarray, gas: str, band: str = "band_290_490_nm") -> DoasSetup:
    """The project's fit of ``gas`` (a key of :data:`GAS_FITS`: ``"no2"`` 405–465 nm, ``"hcho"`` 328.5–356.5 nm) on
    ``wavelength`` (as :func:`doas_setup`), degree :data:`DEFAULT_DEGREE`, Ring term on."""
    if gas not in GAS_FITS:
        raise TempocodecError(f"DOAS: no fit for {gas!r} (known: {', '.join(GAS_FITS)})")
    window, absorbers = GAS_FITS[gas]
    return doas_setup(wavelength, band, window_nm=window, absorbers=absorbers, target=gas)


def fit_doas(radiance: np.ndarray, setup: DoasSetup) -> DoasResult:
    """Fit every spectrum of ``radiance`` ``(..., X, C)`` (all C channels of the band, xtrack second to last; any
    positive radiance unit, since a constant factor goes into the polynomial) with ``setup``.

    One pseudo-inverse per cross-track position serves every pixel whose valid channels are that position's usual
    ones (:func:`_column_masks`: all but the channels no pixel of the column has, e.g. bad detector pixels); only
    pixels with other gaps (dropouts, partly filled spectra) get a least-squares solve of their own.
    Returns per-pixel results of shape ``(..., X)``.
    """
    radiance = np.asarray(radiance)
    if radiance.ndim < 2 or radiance.shape[-1] <= setup.channels.max():
        raise TempocodecError(f"DOAS: radiance {radiance.shape} must be (..., xtrack, channel) with all channels of the band")
    n_xtrack = radiance.shape[-2]
    if setup.n_xtrack not in (1, n_xtrack):
        raise TempocodecError(f"DOAS: the setup has {setup.n_xtrack} cross-track grids, the radiance {n_xtrack} positions")
    lead = radiance.shape[:-1]
    window = radiance[..., setup.channels].astype(np.float64).reshape(-1, n_xtrack, setup.channels.size)
    window = window.transpose(1, 0, 2)  # (X, P, n): the design is per cross-track position
    valid = is_valid(window) & (window > 0)
    y = np.where(valid, np.log(np.where(valid, window, 1.0)) - setup.log_solar[:, None, :], 0.0)
    design = np.broadcast_to(setup.design, (n_xtrack, *setup.design.shape[1:]))
    fitted = valid.sum(axis=-1) >= MIN_VALID_FRACTION * setup.channels.size
    usual = _column_masks(valid, fitted)
    shared = fitted & np.all(valid == usual[:, None, :], axis=-1)
    inverse = np.zeros((*y.shape[:2], setup.scale.size, setup.scale.size))
    coefficients = np.zeros(inverse.shape[:-1])
    done = _solve_shared(y, design, usual, shared, inverse, coefficients)
    _solve_single(y, valid, design, fitted & ~done, inverse, coefficients)
    residual = np.where(valid, y - np.matmul(coefficients, design.transpose(0, 2, 1)), 0.0)
    dof = np.maximum(valid.sum(axis=-1) - setup.scale.size, 1)
    variance = np.sum(residual**2, axis=-1) / dof
    t = setup.names.index(setup.target)
    nan = np.where(fitted, 1.0, np.nan)
    coefficients = coefficients / setup.scale * nan[..., None]
    error = np.sqrt(variance * inverse[..., t, t]) / setup.scale[t] * nan

    def back(values: np.ndarray) -> np.ndarray:
        return np.moveaxis(values, 0, 1).reshape(*lead, *values.shape[2:])

    return DoasResult(
        scd=back(coefficients[..., t]),
        scd_error=back(error),
        rms_residual=back(np.sqrt(variance) * nan),
        coefficients=back(coefficients),
    )


def _column_masks(valid: np.ndarray, fitted: np.ndarray) -> np.ndarray:
    """Per cross-track position, the window channels valid in at least one fitted pixel, bool ``(X, n)``."""
    return np.any(valid & fitted[..., None], axis=1)


def _solve_shared(y: np.ndarray, design: np.ndarray, usual: np.ndarray, shared: np.ndarray, inverse: np.ndarray,
                  coefficients: np.ndarray) -> np.ndarray:
    """Fill ``inverse`` ``(X, P, K, K)`` and ``coefficients`` ``(X, P, K)`` at the ``shared`` pixels: per position one
    ``(AᵀA)⁻¹Aᵀ`` over its ``usual`` channels applied to all of them (``y`` ``(X, P, n)`` is zero where invalid).
    Returns bool ``(X, P)``: the pixels solved (shared ones of positions whose usual channels determine the fit)."""
    masked = design * usual[..., None]
    gram = np.matmul(masked.transpose(0, 2, 1), masked)
    ok = np.linalg.matrix_rank(gram) == gram.shape[-1]
    gram_inv = np.zeros_like(gram)
    gram_inv[ok] = np.linalg.inv(gram[ok])
    pinv = np.matmul(gram_inv, masked.transpose(0, 2, 1))  # (X, K, n)
    solved = np.matmul(y, pinv.transpose(0, 2, 1))  # (X, P, K)
    use = shared & ok[:, None]
    coefficients[use] = solved[use]
    inverse[use] = np.broadcast_to(gram_inv[:, None], inverse.shape)[use]
    return use


def _solve_single(y: np.ndarray, valid: np.ndarray, design: np.ndarray, single: np.ndarray, inverse: np.ndarray,
                  coefficients: np.ndarray) -> None:
    """Fill ``inverse`` and ``coefficients`` at the ``single`` pixels, each with the gram matrix of its own valid
    channels (see :func:`_solve_shared` for the shapes)."""
    x_idx, p_idx = np.nonzero(single)
    if x_idx.size == 0:
        return
    rows = design[x_idx] * valid[x_idx, p_idx][..., None]  # (S, n, K)
    gram = np.matmul(rows.transpose(0, 2, 1), rows)
    inv = np.linalg.pinv(gram, hermitian=True)
    inverse[x_idx, p_idx] = inv
    coefficients[x_idx, p_idx] = np.matmul(inv, np.matmul(y[x_idx, p_idx][:, None, :], rows)[:, 0, :, None])[..., 0]
