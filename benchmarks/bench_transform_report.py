"""Tables, plot and markdown of ``benchmarks/bench_transform.py``: errors at target ratios from rate–distortion fronts.

An error at a target ratio is interpolated (log error against log ratio) on a method's front on one granule (its
settings not beaten at once on ratio and error); outside the front, the front point nearest the target within a
factor :data:`NEAR` stands for it (marked "nearest"); else there is none. Over granules: the mean and the worst
granule of the per-granule values.
"""

from __future__ import annotations

import argparse
import itertools
import math
import os
import platform
import sys
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path

import numpy as np

from tempocodec.atomic import ANY_FILE, atomic_file

TARGETS = (300.0, 1000.0, 2000.0, 5000.0)
NEAR = 1.25
BEGIN, END = "<!-- bench_transform:begin -->", "<!-- bench_transform:end -->"
MEASURES = {"rrmse": "mean relative RMSE per spectrum", "noise": "RMSE / noise (median over channels)"}


@dataclass(frozen=True)
class Point:
    """One setting measured on one granule (or summed over granules, ``granule`` "all"): float32 radiance bytes
    ``raw``, ``stored`` bytes, seconds, mean relative RMSE per spectrum ``rrmse`` (fraction) and RMSE / noise
    ``noise`` (median over channels)."""

    granule: str
    family: str
    setting: str
    raw: int
    stored: int
    encode_s: float
    decode_s: float
    rrmse: float
    noise: float

    @property
    def ratio(self) -> float:
        return self.raw / self.stored

    def error(self, measure: str) -> float:
        """The error of ``measure`` (a key of :data:`MEASURES`)."""
        return self.rrmse if measure == "rrmse" else self.noise

    @property
    def speeds(self) -> str:
        """Encode / decode MB/s of float32 radiance."""
        return f"{self.raw / 1e6 / self.encode_s:,.0f} / {self.raw / 1e6 / self.decode_s:,.0f}"


def front(points: list[Point], measure: str) -> list[Point]:
    """The points not beaten at once on ratio and ``measure``, by increasing ratio."""
    best, kept = math.inf, []
    for p in sorted(points, key=lambda p: (-p.ratio, p.error(measure))):
        if p.error(measure) < best:
            best = p.error(measure)
            kept.append(p)
    return kept[::-1]


@dataclass(frozen=True)
class Estimate:
    """A method's error at a target ratio on one granule, ``how`` it was got, and the front point nearest the
    target (whose speeds stand for it)."""

    value: float
    how: str
    nearest: Point
    interpolated: bool


def at_target(points: list[Point], measure: str, target: float) -> Estimate | None:
    """``measure`` at ``target`` on the front of ``points`` (one method, one granule), or None."""
    line = front(points, measure)
    nearest = min(line, key=lambda p: abs(math.log(p.ratio / target)))
    for low, high in itertools.pairwise(line):
        if low.ratio <= target <= high.ratio:
            w = math.log(target / low.ratio) / math.log(high.ratio / low.ratio)
            value = math.exp((1 - w) * math.log(low.error(measure)) + w * math.log(high.error(measure)))
            how = f"{low.setting} ({low.ratio:,.0f}×) – {high.setting} ({high.ratio:,.0f}×)"
            return Estimate(value, how, nearest, True)
    if abs(math.log(nearest.ratio / target)) <= math.log(NEAR):
        return Estimate(nearest.error(measure), f"nearest: {nearest.setting} ({nearest.ratio:,.0f}×)", nearest, False)
    return None


def families(points: list[Point]) -> list[str]:
    """The method families in order of first appearance."""
    return list(dict.fromkeys(p.family for p in points))


def fmt(value: float, measure: str) -> str:
    """An error for the tables: percent for the relative RMSE, a plain number for RMSE / noise."""
    return f"{100 * value:.3g} %" if measure == "rrmse" else f"{value:.3g}"


def granule_table(points: list[Point]) -> list[str]:
    """Markdown: each method at each target on one granule, both measures, with the settings used."""
    lines = ["| method | target | " + " | ".join(f"{label} | from" for label in MEASURES.values())
             + " | encode / decode MB/s |", "|---|---|" + "---|---|" * len(MEASURES) + "---|"]
    for family in families(points):
        mine = [p for p in points if p.family == family]
        for target in TARGETS:
            found = {m: at_target(mine, m, target) for m in MEASURES}
            if any(found.values()):
                cells = [f"{fmt(e.value, m)} | {e.how}" if e else "– | –" for m, e in found.items()]
                near = next(e for e in found.values() if e).nearest
                lines.append(f"| {family} | {target:g}× | " + " | ".join(cells) + f" | {near.speeds} |")
    return lines


def short(name: str) -> str:
    """A granule's file name without the ``TEMPO_RAD_L1_`` prefix and the suffix."""
    return name.removeprefix("TEMPO_RAD_L1_").removesuffix(".nc")


def _over_granules(estimates: list[Estimate], measure: str) -> str:
    """``mean / worst (granule)`` of per-granule estimates."""
    if not estimates:
        return "–"
    worst = max(estimates, key=lambda e: e.value)
    mean = float(np.mean([e.value for e in estimates]))
    return f"{fmt(mean, measure)} / {fmt(worst.value, measure)} ({short(worst.nearest.granule)})"


def summary_table(points: list[Point], n_granules: int) -> list[str]:
    """Markdown: mean and worst granule of each method's per-granule errors at each target (speeds: mean over
    granules of the front point nearest the target)."""
    lines = ["| method | target | " + " | ".join(f"{label}: mean / worst (granule)" for label in MEASURES.values())
             + " | granules: interpolated + nearest | encode / decode MB/s |",
             "|---|---|" + "---|" * len(MEASURES) + "---|---|"]
    granules = list(dict.fromkeys(p.granule for p in points))
    for family in families(points):
        mine = {g: [p for p in points if p.family == family and p.granule == g] for g in granules}
        for target in TARGETS:
            found = {m: [e for g in granules if (e := at_target(mine[g], m, target))] for m in MEASURES}
            used = found["rrmse"]
            if not used:
                continue
            interpolated = sum(e.interpolated for e in used)
            encode, decode = (np.mean([e.nearest.raw / 1e6 / getattr(e.nearest, t) for e in used])
                              for t in ("encode_s", "decode_s"))
            lines.append(f"| {family} | {target:g}× | " + " | ".join(_over_granules(found[m], m) for m in MEASURES)
                         + f" | {interpolated} + {len(used) - interpolated} of {n_granules} | {encode:,.0f} / {decode:,.0f} |")
    return lines


def averaged(points: list[Point]) -> list[Point]:
    """Each (family, setting) over all granules: bytes and seconds summed, errors averaged over granules."""
    out = []
    for key in dict.fromkeys((p.family, p.setting) for p in points):
        group = [p for p in points if (p.family, p.setting) == key]
        out.append(Point("all", *key, sum(p.raw for p in group), sum(p.stored for p in group),
                         sum(p.encode_s for p in group), sum(p.decode_s for p in group),
                         float(np.mean([p.rrmse for p in group])), float(np.mean([p.noise for p in group]))))
    return out


def by_method(points: list[Point]) -> list[Point]:
    """``points`` sorted by method (first appearance), then ratio."""
    order = families(points)
    return sorted(points, key=lambda p: (order.index(p.family), p.ratio))


def points_table(points: list[Point]) -> list[str]:
    """Markdown: every setting, by method and ratio."""
    lines = ["| method | setting | ratio | " + " | ".join(MEASURES.values()) + " | encode / decode MB/s |",
             "|---|---|---|---|---|---|"]
    lines += [f"| {p.family} | {p.setting} | {p.ratio:,.1f} | {fmt(p.rrmse, 'rrmse')} | {fmt(p.noise, 'noise')} "
              f"| {p.speeds} |" for p in by_method(points)]
    return lines


def print_points(points: list[Point]) -> None:
    """Every setting of one granule, as a plain table on stdout."""
    print(f"{'method':<44} {'setting':<16} {'ratio':>9} {'rel.RMSE':>9} {'RMSE/noise':>10} {'enc/dec MB/s':>14}")
    for p in by_method(points):
        print(f"{p.family:<44} {p.setting:<16} {p.ratio:>9,.1f} {fmt(p.rrmse, 'rrmse'):>9} {p.noise:>10.3g} {p.speeds:>14}")


def plot_rate_distortion(points: list[Point], path: Path) -> None:
    """Both error measures against ratio (log–log), one line per method: the front of ``points`` (settings
    averaged over granules); a method with one or two settings as stars; colour: the transform, dashed:
    quantization + zstd. Written as PNG to ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter, NullFormatter

    fig, axes = plt.subplots(1, 2, figsize=(13, 5.5), layout="constrained")
    transforms = list(dict.fromkeys(f.split(" + ")[0] for f in families(points)))  # one colour per transform
    plain = FuncFormatter(lambda v, _: f"{v:g}")
    some = FuncFormatter(lambda v, _: f"{v:g}" if round(v / 10 ** math.floor(math.log10(v))) in (2, 5) else "")
    for ax, (measure, label) in zip(axes, MEASURES.items(), strict=True):
        unit = 100.0 if measure == "rrmse" else 1.0
        for family in families(points):
            line = front([p for p in points if p.family == family], measure)
            style = {"marker": "*", "ms": 12} if len(line) <= 2 else {"marker": "o", "ms": 3}
            ax.loglog([p.ratio for p in line], [unit * p.error(measure) for p in line], label=family,
                      color=f"C{transforms.index(family.split(' + ')[0]) % 10}",
                      ls="--" if family.endswith("quant+zstd") else "-", **style)
        for target in TARGETS:
            ax.axvline(target, color="gray", lw=0.6, ls=":")
        ax.set_xticks(TARGETS, [f"{t:g}×" for t in TARGETS])
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.yaxis.set_major_formatter(plain)
        ax.yaxis.set_minor_formatter(some)
        ax.set_xlabel("compression ratio (float32 radiance bytes / stored bytes)")
        ax.set_ylabel(label + (" (%)" if measure == "rrmse" else ""))
        ax.grid(alpha=0.3, which="both")
    axes[0].legend(fontsize=7)
    with atomic_file(path, replace=ANY_FILE) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)


def machine() -> str:
    """One line on the machine and the library versions."""
    libs = ", ".join(f"{p} {version(p)}" for p in ("numpy", "onnxruntime", "pysz", "numcodecs"))
    return f"{platform.machine()}, {os.cpu_count()} cores; Python {platform.python_version()}; {libs}"


def generated_block(points: list[Point], notes: list[str], args: argparse.Namespace, plot: Path, minutes: float) -> str:
    """The markdown between the markers: how it was run, ``notes`` (one bullet each), the summary, the plot, a
    table per granule and every setting averaged over granules."""
    granules = list(dict.fromkeys(p.granule for p in points))
    lines = [BEGIN, "", (f"Measured {datetime.now(UTC):%Y-%m-%d %H:%M} UTC in {minutes:.1f} min by "
                         f"`python benchmarks/bench_transform.py {' '.join(sys.argv[1:])}`."), "",
             f"- Machine: {machine()}.", *(f"- {note}" for note in notes),
             (f"- An error at a target is interpolated on each granule's front of the method (\"from\" names the two "
              f"settings), else the nearest front point within {NEAR}× of the target; speeds are those of the front "
              "point nearest the target."), "",
             "### Over all granules", "", *summary_table(points, len(granules)), "",
             f"![rate–distortion]({os.path.relpath(plot, args.out.parent)})", ""]
    for name in granules:
        lines += [f"### {name}", "", *granule_table([p for p in points if p.granule == name]), ""]
    lines += ["<details><summary>Every setting, averaged over granules</summary>", "", *points_table(averaged(points)),
              "", "</details>", "", END]
    return "\n".join(lines)


def write_markdown(out: Path, block: str) -> None:
    """Put ``block`` between the markers of ``out`` (appended under a heading when they are absent)."""
    text = out.read_text(encoding="utf-8") if out.exists() else "# Benchmarks\n"
    if BEGIN in text and END in text:
        text = text[: text.index(BEGIN)] + block + text[text.index(END) + len(END):]
    else:
        text = text.rstrip("\n") + "\n\n## Transform-coding baselines (`benchmarks/bench_transform.py`)\n\n" + block + "\n"
    with atomic_file(out, replace=ANY_FILE) as tmp:
        tmp.write_text(text, encoding="utf-8")
