"""Granules per minute of the batch form of ``compress``: in this process, and on a ``LocalCluster`` of 1 and 2
single-threaded worker processes (:func:`tempocodec.runtime.batch.compress_granules`), on simulated UV granules.

Each configuration compresses the same granules into a fresh directory; the time includes starting and closing the
cluster (what ``compress --workers N`` costs). Run:
``python benchmarks/bench_batch.py [--granules 6] [--rows 64] [--cols 256] [--model tempo-vae-uv-2]``
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from tempocodec.runtime.batch import compress_granules
from tempocodec.simulator import write_simulated


def run(granules: list[Path], out: Path, model: str, workers: int, cluster: bool) -> tuple[float, int]:
    """Seconds to compress ``granules`` into ``out``, and how many failed; ``cluster`` forces a LocalCluster for
    ``workers`` = 1 too."""
    start = time.perf_counter()
    if cluster:
        from distributed import Client, LocalCluster

        with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None) as lc, \
                Client(lc) as client:
            report = compress_granules(granules, out, client=client, model=model, progress=False)
    else:
        report = compress_granules(granules, out, workers=workers, model=model, progress=False)
    return time.perf_counter() - start, len(report.failed)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--granules", type=int, default=6)
    parser.add_argument("--rows", type=int, default=64)
    parser.add_argument("--cols", type=int, default=256)
    parser.add_argument("--model", default="tempo-vae-uv-2")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        paths = write_simulated(root / "granules", args.rows, args.cols, seed=100, scenes=args.granules, bands="uv")
        granules = [p for p in paths if "_RAD_L1_" in p.name]
        table = Table(title=f"compress: {len(granules)} simulated UV granules of {args.rows}×{args.cols}×1028, "
                            f"model {args.model}, {os.cpu_count()} CPUs")
        for col in ("where", "workers", "seconds", "granules/minute", "failed"):
            table.add_column(col, justify="left" if col == "where" else "right")
        for label, workers, cluster in (("this process", 1, False), ("LocalCluster", 1, True),
                                        ("LocalCluster", 2, True)):
            seconds, failed = run(granules, root / f"out-{label}-{workers}", args.model, workers, cluster)
            table.add_row(label, str(workers), f"{seconds:.1f}", f"{60 * len(granules) / seconds:.1f}", str(failed))
        Console().print(table)


if __name__ == "__main__":
    main()
