"""The whole store, every variable (issue 14): per-variable sizes of the demo granule, whole-store ratios, compress
times and every stored bound checked on the original, for the default (``radiance_error`` coded the smaller way),
``--radiance-error rounded`` and ``--lossless-aux``.

Granules: the demo's (131 × 256 UV, seed 2026, as ``make demo`` simulates it), a two-band 131 × 512 one (seed 2027)
and the first ``--granules`` held-out granules of ``--data`` (both bands). Run:
``python benchmarks/bench_whole_store.py --data data/heldout [--granules 3]``, the held-out set made by
``python scripts/make_granule_sets.py heldout data/heldout``.
"""

from __future__ import annotations

import argparse
import platform
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from tempocodec.cpus import cpu_count
from tempocodec.evaluation.variables import check_variables
from tempocodec.granule.l1b import open_l1b
from tempocodec.runtime.store import StoreSummary, compress_granule, open_store
from tempocodec.simulator import write_simulated

MODES = {"default": {}, "rounded": {"radiance_error": "rounded"}, "lossless-aux": {"lossless_aux": True}}
"""The compress settings compared, by name: keyword arguments of ``compress_granule``."""


def run(granule: Path, out: Path, bands: str) -> dict[str, tuple[StoreSummary, float, str]]:
    """Each mode's store summary, compress seconds and ``held/checked`` count of variables within their bounds."""
    results = {}
    for mode, options in MODES.items():
        store = out / f"{granule.stem}-{mode}.zarr"
        start = time.perf_counter()
        summary = compress_granule(granule, store, bands=bands, progress=False, overwrite=True, **options)
        seconds = time.perf_counter() - start
        held = checked = 0
        with open_l1b(granule) as source:
            for band in summary.bands:
                checks = check_variables(source.band(band), open_store(store, band))
                held, checked = held + sum(c.held for c in checks), checked + len(checks)
        results[mode] = (summary, seconds, f"{held}/{checked}")
    return results


def per_variable(results: dict[str, tuple[StoreSummary, float, str]]) -> list[str]:
    """Markdown table of one granule's arrays: stored MB and ratio in each mode, and the default's bound."""
    names = [(v.group, v.name) for v in results["default"][0].variables if v.raw_bytes > 50_000]
    lines = ["| variable | raw MB | " + " | ".join(MODES) + " | bound (default) |",
             "|---|---|" + "---|" * len(MODES) + "---|"]
    for group, name in names:
        sizes = [next(v for v in results[m][0].variables if (v.group, v.name) == (group, name)) for m in MODES]
        cells = [f"{v.stored_bytes / 1e6:.4f} MB, {v.ratio:,.1f}×" for v in sizes]
        lines.append(f"| {name} | {sizes[0].raw_bytes / 1e6:.2f} | " + " | ".join(cells) + f" | {sizes[0].bound} |")
    totals = [results[m][0] for m in MODES]
    cells = [f"**{s.total_stored / 1e6:.2f} MB, {s.total_raw / s.total_stored:,.1f}×**" for s in totals]
    lines.append(f"| whole store (files, metadata included) | {totals[0].total_raw / 1e6:.2f} | " + " | ".join(cells) + " | |")
    return lines


def summary_row(label: str, results: dict[str, tuple[StoreSummary, float, str]]) -> str:
    """One granule's whole-store ratios, radiance_error ratios, compress seconds and bounds held, per mode."""
    def error_ratio(s: StoreSummary) -> str:
        errs = [v for v in s.variables if v.name == "radiance_error"]
        return f"{sum(v.raw_bytes for v in errs) / max(1, sum(v.stored_bytes for v in errs)):,.0f}×"

    whole = " / ".join(f"{s.total_raw / s.total_stored:,.1f}×" for s, _, _ in results.values())
    error = " / ".join(error_ratio(s) for s, _, _ in results.values())
    seconds = " / ".join(f"{t:.1f}" for _, t, _ in results.values())
    held = " / ".join(h for _, _, h in results.values())
    return f"| {label} | {whole} | {error} | {seconds} | {held} |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="held-out granules (TEMPO_RAD_L1_*.nc)")
    parser.add_argument("--granules", type=int, default=3)
    args = parser.parse_args()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        demo = write_simulated(root / "demo", 131, 256, seed=2026, bands="uv")[0]
        wide = write_simulated(root / "wide", 131, 512, seed=2027, bands="all")[0]
        held_out = sorted(args.data.glob("TEMPO_RAD_L1_*.nc"))[: args.granules]
        runs = {"demo 131×256 UV": (demo, "uv"), "two-band 131×512": (wide, "all")}
        runs |= {f"held-out {g.stem.split('_')[4]} (both bands)": (g, "all") for g in held_out}
        results = {label: run(path, root, bands) for label, (path, bands) in runs.items()}
        minutes = (time.perf_counter() - started) / 60  # the tables read the stores' sizes: before they go
        print(f"Measured {datetime.now(UTC):%Y-%m-%d %H:%M} UTC in {minutes:.1f} min by `python "
              f"benchmarks/bench_whole_store.py --data {args.data} --granules {args.granules}` on "
              f"{platform.machine()}, {cpu_count()} cores.\n")
        print("Demo granule, each mode:\n")
        print("\n".join(per_variable(results["demo 131×256 UV"])))
        print("\n| granule | whole store: " + " / ".join(MODES) + " | radiance_error | compress s | variables within "
              "bound |\n|---|---|---|---|---|")
        for label, result in results.items():
            print(summary_row(label, result))


if __name__ == "__main__":
    main()
