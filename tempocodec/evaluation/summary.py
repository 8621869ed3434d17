"""The text of an evaluation: the headline lines and the ``(metric, value)`` rows shared by the command line's
table and the report (no plotting, so the command line's table does not load matplotlib)."""

from __future__ import annotations

import numpy as np

from tempocodec.evaluation.run import Evaluation


def pct(fraction: float) -> str:
    """A fraction as a percentage with three significant digits."""
    return f"{100 * fraction:.3g} %"


def sci(value: float) -> str:
    """A number in compact scientific notation."""
    return f"{value:.3g}"


def headline(evaluation: Evaluation) -> list[str]:
    """The report's first lines: ratio, mean relative RMSE, 99th percentile, worst channel, DOAS, decoded fill."""
    m = evaluation.metrics
    worst = m.worst_channel
    lines = [
        (f"- **Compression ratio {evaluation.ratio_radiance:,.0f}×** for the radiance "
         f"({evaluation.ratio_store:,.1f}× for the whole store, every variable and file included)."),
        (f"- **Mean relative RMSE per spectrum {pct(m.mean_relative_rmse)}** (median {pct(m.median_relative_rmse)}); "
         f"99th percentile of |relative error| {pct(m.p99_relative_error)}, maximum {pct(m.max_relative_error)}."),
        f"- Worst channel: {m.wavelength[worst]:.2f} nm (channel {worst}), relative RMSE {pct(m.relative_rmse[worst])}.",
    ]
    if m.noise_ratio is not None:
        lines.append(f"- Error over instrument noise (RMSE / median radiance_error, median over channels): "
                     f"{np.nanmedian(m.noise_ratio):.3g}×.")
    lines.append(bound_line(evaluation))
    lines.append(variables_line(evaluation))
    d = evaluation.doas
    if d is not None and d.pixels:
        lines.append(
            f"- DOAS NO₂ slant column, decoded − original over {d.pixels:,} pixels: bias {sci(d.bias)}, scatter "
            f"{sci(d.scatter)} molecules/cm² = {d.bias / d.median_error:+.2g} and {d.scatter / d.median_error:.2g} × "
            f"the fit's own 1-σ noise ({sci(d.median_error)}; median slant column {sci(d.median_scd)})."
        )
    else:
        lines.append(f"- DOAS NO₂ fit skipped: {evaluation.doas_skipped or 'no pixel could be fitted'}.")
    if m.decoded_fill:
        lines.append(f"- **{m.decoded_fill:,} valid original values came back as fill or non-finite** (left out of the metrics).")
    else:
        lines.append("- Decoded fill where the original was valid: 0 values.")
    return lines


def bound_line(evaluation: Evaluation) -> str:
    """The report's line on the store's error bound, checked on the original."""
    b = evaluation.bound
    if b is None:
        return "- Error bound: not checked (the original has no radiance_error)."
    worst = f"largest |error| / radiance_error {b.worst:.4g}"
    if b.bound is None:
        return f"- Error bound: none (latent only); {worst}."
    verdict = "holds for every value" if not b.violations else f"**violated by {b.violations:,} values**"
    return f"- **Error bound {b.bound:g} σ {verdict}** of {b.values:,} valid values checked; {worst}."


def variables_line(evaluation: Evaluation) -> str:
    """The report's line on the other variables of the band, each checked against its stored bound."""
    checks = evaluation.variables
    failed = [c.name for c in checks if not c.held]
    bounds = "; ".join(f"{c.name} {c.bound}" for c in checks if c.bound != "exact")
    if failed:
        return f"- **Other variables: {', '.join(failed)} outside their stored bounds** ({len(checks)} checked)."
    return f"- Other variables: all {len(checks)} within their stored bounds on every value (exact but {bounds or 'none'})."


def _bound_cell(evaluation: Evaluation) -> str:
    """The bound row's value: the store's bound, the largest error in σ, the values over the bound."""
    b = evaluation.bound
    if b is None:
        return "not checked (no radiance_error)"
    asked = "none" if b.bound is None else f"{b.bound:g}"
    over = "–" if b.bound is None else f"{b.violations:,}"
    return f"{asked} / {b.worst:.4g} / {over}"


def summary_rows(evaluation: Evaluation) -> list[tuple[str, str]]:
    """``(metric, value)`` rows shared by the report's table and the command line's."""
    m = evaluation.metrics
    rows = [
        ("band", evaluation.band),
        ("compression ratio (radiance)", f"{evaluation.ratio_radiance:,.1f}"),
        ("compression ratio (whole store)", f"{evaluation.ratio_store:,.1f}"),
        ("pixels / values compared", f"{m.pixels:,} / {m.values:,}"),
        ("error bound (σ): asked / largest |error| / σ / values over it", _bound_cell(evaluation)),
        ("other variables within their stored bounds", f"{sum(c.held for c in evaluation.variables)} of "
                                                       f"{len(evaluation.variables)}"),
        ("decoded fill where original valid", f"{m.decoded_fill:,}"),
        ("mean relative RMSE per spectrum", pct(m.mean_relative_rmse)),
        ("median relative RMSE per spectrum", pct(m.median_relative_rmse)),
        ("99th percentile |relative error|", pct(m.p99_relative_error)),
        ("max |relative error|", pct(m.max_relative_error)),
        ("max |error| (photons/s/cm²/nm/sr)", sci(m.max_abs_error)),
        ("spectral angle median / p99 (mrad)", f"{m.spectral_angle_median:.3g} / {m.spectral_angle_p99:.3g}"),
        ("worst channel (relative RMSE)", f"{m.wavelength[m.worst_channel]:.2f} nm ({pct(m.relative_rmse[m.worst_channel])})"),
    ]
    if m.noise_ratio is not None:
        ratio = m.noise_ratio
        rows.append(("RMSE / median noise: median (min–max) over channels",
                     f"{np.nanmedian(ratio):.3g} ({np.nanmin(ratio):.3g}–{np.nanmax(ratio):.3g})"))
    d = evaluation.doas
    if d is not None and d.pixels:
        rows += [
            ("DOAS NO₂ SCD pixels fitted", f"{d.pixels:,}"),
            ("DOAS NO₂ SCD bias (decoded − original)", f"{sci(d.bias)} ({d.bias / d.median_error:+.2g} σ)"),
            ("DOAS NO₂ SCD scatter (decoded − original)", f"{sci(d.scatter)} ({d.scatter / d.median_error:.2g} σ)"),
            ("DOAS NO₂ SCD fit noise σ (median)", sci(d.median_error)),
        ]
        truth = d.truth_rms()
        if truth is not None:
            rows.append(("DOAS NO₂ SCD RMS vs L2 truth: original / decoded / truth spread",
                         " / ".join(f"{v / d.median_error:.3g} σ" for v in truth)))
    else:
        rows.append(("DOAS NO₂ fit", f"skipped: {evaluation.doas_skipped or 'no pixel fitted'}"))
    for p in evaluation.probes:
        rows.append((f"probe {p.name} R² ({p.truth.size:,} cells)", f"{p.r2:.3f}"))
    if evaluation.probes_skipped:
        rows.append(("probes", f"skipped: {evaluation.probes_skipped}"))
    return rows
