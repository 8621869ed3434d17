"""The NO₂ check of an evaluation: a DOAS fit (:mod:`tempocodec.science.doas`, 405–465 nm) of the slant column on
the original and on the decoded spectra, block by block, compared with each other and with the L2 truth."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from tempocodec.errors import TempocodecError
from tempocodec.granule.l2 import l2_files_beside, read_l2
from tempocodec.science.doas import DoasSetup, doas_setup, fit_doas


@dataclass(frozen=True)
class DoasComparison:
    """NO₂ slant columns fitted on the original and on the decoded spectra, float64 ``(mirror_step, xtrack)``
    (NaN where the fit did not run): ``scd_original``, ``scd_decoded``, ``scd_error`` (the original fit's 1-σ
    uncertainty), and ``scd_truth`` (the L2 file's ``fitted_slant_column``, when at hand); molecules/cm^2."""

    scd_original: np.ndarray
    scd_decoded: np.ndarray
    scd_error: np.ndarray
    scd_truth: np.ndarray | None = None

    @property
    def _both(self) -> np.ndarray:
        return np.isfinite(self.scd_original) & np.isfinite(self.scd_decoded) & np.isfinite(self.scd_error)

    @property
    def pixels(self) -> int:
        """Pixels fitted in both copies."""
        return int(np.count_nonzero(self._both))

    @property
    def difference(self) -> np.ndarray:
        """Decoded minus original slant column over the pixels fitted in both, ``(pixels,)``."""
        return (self.scd_decoded - self.scd_original)[self._both]

    @property
    def bias(self) -> float:
        """Mean of decoded − original, molecules/cm^2."""
        return float(np.mean(self.difference)) if self.pixels else float("nan")

    @property
    def scatter(self) -> float:
        """Standard deviation of decoded − original, molecules/cm^2."""
        return float(np.std(self.difference)) if self.pixels else float("nan")

    @property
    def median_error(self) -> float:
        """Median 1-σ fit uncertainty of the original's fit (its own noise), molecules/cm^2."""
        return float(np.median(self.scd_error[self._both])) if self.pixels else float("nan")

    @property
    def median_scd(self) -> float:
        """Median slant column of the original's fit, molecules/cm^2."""
        return float(np.median(self.scd_original[self._both])) if self.pixels else float("nan")

    def truth_rms(self) -> tuple[float, float, float] | None:
        """Against the truth, over the pixels where both fits and the truth are finite (molecules/cm^2): RMS of the
        original's fit − truth, RMS of the decoded's fit − truth, and the truth's standard deviation (the RMS of a
        method that returns the mean column everywhere). None without truth or such pixels."""
        if self.scd_truth is None:
            return None
        ok = self._both & np.isfinite(self.scd_truth)
        if not ok.any():
            return None
        truth = self.scd_truth[ok]
        return (float(np.sqrt(np.mean((self.scd_original[ok] - truth) ** 2))),
                float(np.sqrt(np.mean((self.scd_decoded[ok] - truth) ** 2))), float(np.std(truth)))


class DoasFits:
    """Streams blocks of both copies through the NO₂ fit into a :class:`DoasComparison`."""

    def __init__(self, setup: DoasSetup, shape: tuple[int, int]) -> None:
        """``setup``: the band's fit setup; ``shape``: the band's ``(mirror_step, xtrack)``."""
        self.setup = setup
        self.scd = {k: np.full(shape, np.nan) for k in ("original", "decoded", "error")}

    def add(self, steps: slice, xtrack: slice, original: np.ndarray, decoded: np.ndarray) -> None:
        """Fit one block of radiance ``original``, ``decoded`` float ``(s, x, C)`` covering ``[steps, xtrack]``."""
        sub = self.setup if self.setup.n_xtrack == 1 else _xtrack_setup(self.setup, xtrack)
        fit_o, fit_d = fit_doas(original, sub), fit_doas(decoded, sub)
        self.scd["original"][steps, xtrack] = fit_o.scd
        self.scd["error"][steps, xtrack] = fit_o.scd_error
        self.scd["decoded"][steps, xtrack] = fit_d.scd

    def result(self, truth: np.ndarray | None) -> DoasComparison:
        """The comparison, with the L2 ``truth`` slant column (:func:`doas_truth`) when at hand."""
        return DoasComparison(self.scd["original"], self.scd["decoded"], self.scd["error"], truth)


def setup_or_reason(band: str, wavelength: np.ndarray) -> tuple[DoasSetup | None, str | None]:
    """The NO₂ fit's setup for the band's ``wavelength`` grid (nm), or None and why not."""
    try:
        return doas_setup(wavelength, band), None
    except TempocodecError as err:
        return None, str(err)


def _xtrack_setup(setup: DoasSetup, xtrack: slice) -> DoasSetup:
    """``setup`` restricted to the cross-track positions ``xtrack``."""
    return replace(setup, design=setup.design[xtrack], gram=setup.gram[xtrack], log_solar=setup.log_solar[xtrack])


def doas_truth(original: Path, shape: tuple[int, int]) -> np.ndarray | None:
    """The NO₂ L2 file's ``support_data/fitted_slant_column`` beside the original, float64 ``shape`` with fill as NaN;
    None when there is no such file or its shape differs."""
    path = l2_files_beside(original).get("NO2")
    if path is None:
        return None
    support = read_l2(path).groups.get("support_data")
    if support is None or "fitted_slant_column" not in support:
        return None
    values = np.asarray(support["fitted_slant_column"].values, np.float64)
    if values.shape != shape:
        return None
    return np.where(np.abs(values) < 1e29, values, np.nan)
