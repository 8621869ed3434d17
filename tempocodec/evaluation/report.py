"""The evaluation report: ``report.md`` and its PNG figures (the one module that imports matplotlib).

Import it only to write a report: it loads matplotlib with the Agg backend, which ``evaluate`` without ``--report``
and every other command do without.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import matplotlib
import matplotlib.pyplot as plt
import numpy as np

from tempocodec.atomic import Replaceable, atomic_dir, is_empty_dir
from tempocodec.evaluation.doas_check import DoasComparison
from tempocodec.evaluation.metrics import BINS_PER_DEX, MIN_SIGNAL, Metrics, used_values
from tempocodec.evaluation.probe_scores import ProbeScore
from tempocodec.evaluation.run import Evaluation, ExampleSpectrum, PixelGrid
from tempocodec.evaluation.summary import headline, pct, sci, summary_rows

matplotlib.use("Agg")  # files only, never a window; pyplot resolves its backend at the first figure

REPORT_TITLE = "# Evaluation of "
RADIANCE_UNITS_TEXT = "photons/s/cm²/nm/sr"
PHYSICAL_RANGE = {"cloud_fraction": (0.0, 1.0)}
"""Products with a physical range, to which the figures clip the estimates (R² is computed unclipped)."""


def write_report(evaluation: Evaluation, out_dir: str | os.PathLike, *, overwrite: bool = False) -> Path:
    """Write the directory ``out_dir`` holding ``report.md`` and its PNG figures; returns the report's path.

    The directory is built under a temporary name and renamed into place when complete
    (:func:`tempocodec.atomic.atomic_dir`); an existing ``out_dir`` is replaced only with ``overwrite`` and only
    when it holds an earlier report (or nothing).
    """
    out = Path(out_dir)
    figures = _figures(evaluation)
    with atomic_dir(out, replace=REPORT_DIR if overwrite else None) as tmp:
        for _, name, plot in figures:
            plot(tmp / name)
        (tmp / "report.md").write_text(_markdown(evaluation, [(title, name) for title, name, _ in figures]),
                                       encoding="utf-8")
    return out / "report.md"


def _is_report_dir(path: Path) -> bool:
    """Whether ``path`` holds a ``report.md`` written by :func:`write_report`."""
    try:
        with (path / "report.md").open(encoding="utf-8") as f:
            return f.readline().startswith(REPORT_TITLE)
    except (OSError, UnicodeDecodeError):
        return False


REPORT_DIR = Replaceable(lambda path: is_empty_dir(path) or _is_report_dir(path), "an evaluation report directory")
"""What ``evaluate --report DIR --overwrite`` may replace."""


def _figures(evaluation: Evaluation) -> list[tuple[str, str, Callable[[Path], None]]]:
    """The report's figures as ``(title, file name, plot into a path)``; DOAS and probes only when they ran."""
    m = evaluation.metrics
    grid = evaluation.grid if evaluation.grid is not None else _index_grid(m.relative_rmse_map.shape)
    figures = [
        ("Error against signal", "error_vs_signal.png", lambda p: _plot_error_vs_signal(m, p)),
        ("Relative error per wavelength", "relative_error.png", lambda p: _plot_relative_error(m, p)),
        ("Error map (relative RMSE per spectrum; colours clipped to the 1st–99th percentiles, arrows on the colorbar)",
         "error_map.png", lambda p: _plot_error_map(m, grid, p)),
        ("Spectral angle", "spectral_angle.png", lambda p: _plot_spectral_angle(m, p)),
        ("Example spectra (median, 99th percentile and worst pixel by relative RMSE)", "spectra.png",
         lambda p: _plot_examples(evaluation.examples, m.wavelength, grid, p)),
    ]
    doas = evaluation.doas
    if doas is not None and doas.pixels:
        figures.append(("DOAS NO₂ slant columns", "doas_no2.png", lambda p: _plot_doas(doas, p)))
    if evaluation.probes:
        figures.append(("Products from the latents against L2 truth (cloud fraction shown clipped to [0, 1])", "probes.png",
                        lambda p: _plot_probes(evaluation.probes, p)))
    return figures


def _markdown(evaluation: Evaluation, figures: list[tuple[str, str]]) -> str:
    """The text of ``report.md``, linking the ``(title, file name)`` figures."""
    lines = [f"{REPORT_TITLE}`{evaluation.store.name}` against `{evaluation.original.name}`", "",
             *headline(evaluation), "", "| metric | value |", "|---|---|"]
    lines += [f"| {_md_cell(k)} | {_md_cell(v)} |" for k, v in summary_rows(evaluation)]
    lines += ["", _doas_section(evaluation), "", _probe_section(evaluation), "", "## Figures", ""]
    for title, name in figures:
        lines += [f"### {title}", "", f"![{title}]({name})", ""]
    lines += ["## Definitions", "",
              (f"Relative error r = (decoded − original) / original over the values valid in the original "
               f"(≥ {MIN_SIGNAL:g}); relative RMSE per spectrum = sqrt(mean over channels of r²), averaged over "
               "pixels; spectral angle = angle between the two spectra as vectors; per-channel medians and "
               f"percentiles are read from histograms with {BINS_PER_DEX} bins per decade. Noise is the original's "
               "radiance_error."), ""]
    return "\n".join(lines)


def _doas_section(evaluation: Evaluation) -> str:
    """The report's DOAS section."""
    d = evaluation.doas
    head = "## DOAS NO₂ slant column (405–465 nm)\n\n"
    if d is None or not d.pixels:
        return head + f"Skipped: {evaluation.doas_skipped or 'no pixel could be fitted'}."
    text = (head + "ln(L/F₀) fitted with NO₂, O₃, O₂–O₂, H₂O cross sections, a Ring spectrum and a cubic polynomial "
            "(tempocodec.science.doas), on the original and on the decoded spectra of every pixel. "
            f"Over {d.pixels:,} pixels, decoded − original: bias {sci(d.bias)}, scatter {sci(d.scatter)} "
            f"molecules/cm²; the fit's own 1-σ noise on the original is {sci(d.median_error)} (median), "
            f"the median slant column {sci(d.median_scd)}.")
    truth = d.truth_rms()
    if truth is not None:
        original, decoded, spread = truth
        text += (f" Against the L2 file's fitted_slant_column (the truth), the fit's RMS error is {sci(original)} on the "
                 f"original and {sci(decoded)} on the decoded spectra ({original / d.median_error:.2g} and "
                 f"{decoded / d.median_error:.2g} σ); the truth itself spreads by {sci(spread)} "
                 f"({spread / d.median_error:.2g} σ), the RMS of a codec that keeps no NO₂ signal.")
    return text


def _probe_section(evaluation: Evaluation) -> str:
    """The report's section on products read from the latents."""
    head = "## Products from the latents\n\n"
    if not evaluation.probes:
        return head + f"Skipped: {evaluation.probes_skipped}."
    rows = ["| product | L2 truth | R² | cells |", "|---|---|---|---|"]
    rows += [f"| {p.name} | {p.product} | {p.r2:.3f} | {p.truth.size:,} |" for p in evaluation.probes]
    return head + "Truth pooled to the latent grid (mean of each 4×4 block).\n\n" + "\n".join(rows)


def _md_cell(text: str) -> str:
    """``text`` safe inside a markdown table cell (pipes escaped)."""
    return text.replace("|", "\\|")


def _index_grid(shape: tuple[int, ...]) -> PixelGrid:
    """0-based positions as coordinates, for an evaluation that carries no pixel grid."""
    return PixelGrid(np.arange(shape[0]), np.arange(shape[1]))


def _edges(centres: np.ndarray) -> np.ndarray:
    """Cell edges ``(n + 1,)`` around coordinate values ``(n,)`` (halfway between neighbours), for pcolormesh."""
    c = np.asarray(centres, np.float64)
    if c.size == 1:
        return np.array([c[0] - 0.5, c[0] + 0.5])
    mid = (c[1:] + c[:-1]) / 2
    return np.concatenate([[2 * c[0] - mid[0]], mid, [2 * c[-1] - mid[-1]]])


def _save(fig, path: Path) -> None:
    """Save a matplotlib figure as PNG (into the report's partial directory), then close it."""
    fig.savefig(path, format="png", dpi=100)
    plt.close(fig)


def _plot_error_vs_signal(m: Metrics, path: Path) -> None:
    """The paper's figure: median signal, median and 99th-percentile |error|, and noise, per channel (log scale)."""
    fig, ax = plt.subplots(figsize=(9, 4.5), layout="constrained")
    ax.semilogy(m.wavelength, m.median_signal, color="black", lw=1.0, label="signal (median)")
    ax.semilogy(m.wavelength, m.median_abs_error, color="tab:red", lw=0.8, label="|error| (median)")
    ax.semilogy(m.wavelength, m.p99_abs_error, color="tab:orange", lw=0.6, label="|error| (99th percentile)")
    if m.median_noise is not None:
        ax.semilogy(m.wavelength, m.median_noise, color="tab:blue", lw=0.8, ls="--", label="instrument noise (median)")
    ax.set_xlabel("wavelength (nm)")
    ax.set_ylabel(f"radiance ({RADIANCE_UNITS_TEXT})")
    ax.set_title(f"Error against signal across the {m.wavelength.size} channels")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3, which="both")
    _save(fig, path)


def _plot_relative_error(m: Metrics, path: Path) -> None:
    """Median |relative error| and relative RMSE per channel, in percent."""
    fig, ax = plt.subplots(figsize=(9, 4), layout="constrained")
    ax.semilogy(m.wavelength, 100 * m.relative_rmse, color="tab:red", lw=0.8, label="relative RMSE")
    ax.semilogy(m.wavelength, 100 * m.median_relative_error, color="black", lw=0.8, label="median |relative error|")
    if m.median_noise is not None:
        ax.semilogy(m.wavelength, 100 * m.median_noise / m.median_signal, color="tab:blue", lw=0.8, ls="--",
                    label="noise / signal (medians)")
    ax.set_xlabel("wavelength (nm)")
    ax.set_ylabel("relative error (%)")
    ax.set_title("Relative error per wavelength")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3, which="both")
    _save(fig, path)


def _plot_error_map(m: Metrics, grid: PixelGrid, path: Path) -> None:
    """Relative RMSE per spectrum over the granule, on the store's mirror_step × xtrack coordinates; colours clipped
    to the 1st-99th percentiles (colorbar arrows, and the title says so)."""
    values = 100 * m.relative_rmse_map
    finite = values[np.isfinite(values)]
    lo, hi = (np.percentile(finite, 1), np.percentile(finite, 99)) if finite.size else (0.0, 1.0)
    fig, ax = plt.subplots(figsize=(8, 4.5), layout="constrained")
    mesh = ax.pcolormesh(_edges(grid.mirror_step), _edges(grid.xtrack), values.T, cmap="magma", vmin=lo, vmax=hi,
                         shading="flat")
    fig.colorbar(mesh, ax=ax, extend="both", label="relative RMSE per spectrum (%)")
    ax.set_xlabel("mirror_step (scan mirror position, count)")
    ax.set_ylabel("xtrack (cross-track pixel, count)")
    ax.set_title(f"Error map; colours clipped to the 1st–99th percentiles ({lo:.3g}–{hi:.3g} %)", fontsize=10)
    _save(fig, path)


def _plot_spectral_angle(m: Metrics, path: Path) -> None:
    """Histogram of the per-pixel spectral angle (mrad)."""
    angles = m.spectral_angle_map[np.isfinite(m.spectral_angle_map)]
    fig, ax = plt.subplots(figsize=(6, 4), layout="constrained")
    ax.hist(angles, bins=100, color="tab:gray")
    ax.axvline(m.spectral_angle_median, color="black", lw=1, label=f"median {m.spectral_angle_median:.3g} mrad")
    ax.axvline(m.spectral_angle_p99, color="tab:red", lw=1, label=f"99th percentile {m.spectral_angle_p99:.3g} mrad")
    ax.set_xlabel("spectral angle (mrad)")
    ax.set_ylabel("pixels (count)")
    ax.set_title(f"Spectral angle between original and decoded spectra, {angles.size:,} pixels", fontsize=10)
    ax.legend(fontsize=8)
    _save(fig, path)


def _plot_examples(examples: tuple[ExampleSpectrum, ...], wavelength: np.ndarray, grid: PixelGrid, path: Path) -> None:
    """Original and decoded spectra of the example pixels (each named by its coordinates), with their relative
    difference."""
    fig, axes = plt.subplots(len(examples), 2, figsize=(12, 3 * len(examples)), squeeze=False, layout="constrained")
    for (spectrum_ax, error_ax), ex in zip(axes, examples, strict=True):
        used, _ = used_values(ex.original, ex.decoded)
        o, d = np.where(used, ex.original, np.nan), np.where(used, ex.decoded, np.nan)
        spectrum_ax.semilogy(wavelength, o, color="black", lw=0.7, label="original")
        spectrum_ax.semilogy(wavelength, d, color="tab:red", lw=0.7, label="decoded")
        spectrum_ax.set_title(f"{ex.label}: {grid.describe(ex.step, ex.xtrack)}, relative RMSE {pct(ex.relative_rmse)}",
                              fontsize=9)
        spectrum_ax.set_ylabel(f"radiance ({RADIANCE_UNITS_TEXT})", fontsize=8)
        spectrum_ax.legend(fontsize=7)
        error_ax.plot(wavelength, 100 * (d - o) / o, color="tab:red", lw=0.5)
        error_ax.axhline(0, color="black", lw=0.5)
        error_ax.set_ylabel("decoded / original − 1 (%)", fontsize=8)
    for ax in axes[-1]:
        ax.set_xlabel("wavelength (nm)")
    _save(fig, path)


def _plot_doas(d: DoasComparison, path: Path) -> None:
    """Decoded against original NO₂ slant columns, and their difference in units of the fit's own noise."""
    both = np.isfinite(d.scd_original) & np.isfinite(d.scd_decoded) & np.isfinite(d.scd_error)
    o, dec, sigma = d.scd_original[both], d.scd_decoded[both], d.scd_error[both]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.5), layout="constrained")
    left.scatter(o, dec, s=1, alpha=0.3, color="tab:blue")
    span = [np.percentile(o, 0.5), np.percentile(o, 99.5)]
    left.plot(span, span, color="black", lw=0.8)
    left.set_xlabel("NO₂ SCD from the original (molecules/cm²)")
    left.set_ylabel("NO₂ SCD from the decoded (molecules/cm²)")
    left.set_title(f"DOAS 405–465 nm, {both.sum():,} pixels")
    right.hist((dec - o) / sigma, bins=100, color="tab:gray")
    right.set_xlabel("(decoded − original) / fit 1-σ (σ, dimensionless)")
    right.set_ylabel("pixels (count)")
    right.set_title(f"bias {d.bias / d.median_error:+.2g} σ, scatter {d.scatter / d.median_error:.2g} σ")
    _save(fig, path)


def _plot_probes(probes: tuple[ProbeScore, ...], path: Path) -> None:
    """Product read from the latents against the pooled L2 truth, one panel per product, with R²; a product with a
    physical range (cloud fraction: [0, 1]) is shown clipped to it, and the panel says how many estimates were."""
    fig, axes = plt.subplots(1, len(probes), figsize=(4.2 * len(probes), 4), squeeze=False, layout="constrained")
    for ax, p in zip(axes[0], probes, strict=True):
        predicted, note = p.predicted, ""
        bounds = PHYSICAL_RANGE.get(p.name)
        if bounds is not None:
            outside = int(np.count_nonzero((predicted < bounds[0]) | (predicted > bounds[1])))
            predicted = np.clip(predicted, *bounds)
            note = f"\nestimates clipped to [{bounds[0]:g}, {bounds[1]:g}] ({outside:,} were outside)"
            ax.set_xlim(bounds[0] - 0.02, bounds[1] + 0.02)
            ax.set_ylim(bounds[0] - 0.02, bounds[1] + 0.02)
        ax.scatter(p.truth, predicted, s=2, alpha=0.4)
        span = [np.min(p.truth), np.max(p.truth)] if p.truth.size else [0, 1]
        ax.plot(span, span, color="black", lw=0.8)
        ax.set_title(f"{p.name}: R² = {p.r2:.3f} ({p.truth.size:,} cells){note}", fontsize=9)
        ax.set_xlabel(f"L2 {p.product} truth ({p.units})")
        ax.set_ylabel(f"from latents ({p.units})")
    _save(fig, path)
