"""Speed of the granule simulator: scene + truth, each band's forward model, whole granule, and writing the files.

Prints one table row per stage for a ``rows × cols`` granule (both bands by default): seconds (best of
``--repeats``) and the matching throughput in spectra per second. The target is < 30 s for 256 × 256, both bands,
on a 2-core machine, for the simulation itself; writing goes through ``tempocodec.granule.l1b``/``level2``
(deflate-1 netCDF) and is timed separately.

Run: ``python benchmarks/bench_simulate.py [--rows 256] [--cols 256] [--seed 0] [--repeats 1] [--no-write]``
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from rich.console import Console
from rich.table import Table

from tempocodec.granule.l1b import BANDS
from tempocodec.simulator import SceneConfig, simulate_granule, write_simulated
from tempocodec.simulator.atmosphere import slant_columns
from tempocodec.simulator.radiance import band_radiance
from tempocodec.simulator.scene import make_scene


def best_of(repeats: int, work: Callable[[], object]) -> float:
    """Shortest wall time (s) of ``repeats`` calls of ``work``."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        work()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=256)
    parser.add_argument("--cols", type=int, default=256)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--no-write", action="store_true", help="skip timing the netCDF writing")
    args = parser.parse_args()
    rows, cols, repeats = args.rows, args.cols, args.repeats
    spectra = rows * cols
    table = Table(title=f"simulator, {rows} × {cols} granule, seed {args.seed}")
    for col in ("stage", "seconds", "spectra/s"):
        table.add_column(col, justify="left" if col == "stage" else "right")

    def row(stage: str, seconds: float, n: int) -> None:
        table.add_row(stage, f"{seconds:.2f}", f"{n / seconds:,.0f}")

    scene = make_scene(SceneConfig(rows, cols, args.seed))
    row("scene (fields, geometry)", best_of(repeats, lambda: make_scene(SceneConfig(rows, cols, args.seed))), spectra)
    columns = slant_columns(scene)
    row("slant columns and AMFs", best_of(repeats, lambda: slant_columns(scene)), spectra)
    for band in BANDS:
        row(f"forward model {band}", best_of(repeats, lambda b=band: band_radiance(scene, b, columns)), spectra)
    total = best_of(repeats, lambda: simulate_granule(rows, cols, args.seed))
    row("simulate_granule, both bands + L2 truth", total, 2 * spectra)
    if not args.no_write:
        with tempfile.TemporaryDirectory() as tmp:
            written = best_of(1, lambda: write_simulated(Path(tmp), rows, cols, args.seed))
            size = sum(p.stat().st_size for p in Path(tmp).iterdir()) / 1e6
        row(f"write_simulated (simulate + write 5 files, {size:.0f} MB)", written, 2 * spectra)
    Console().print(table)
    verdict = "meets" if total < 30.0 else "misses"
    Console().print(f"simulate_granule {total:.1f} s {verdict} the 30 s target for both bands")


if __name__ == "__main__":
    main()
