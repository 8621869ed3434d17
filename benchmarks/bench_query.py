"""Products from the latents against decompression, on the same store: ``tempocodec query`` vs ``decompress``.

Compresses one L1B granule (``--granule``, or a simulated UV granule of ``--rows`` × ``--cols``) with ``--model``
(which must have probes: ``tempocodec train-probes``) into a temporary store, then times on that store:

- ``decompress``: :func:`tempocodec.runtime.store.decompress_store` to a temporary L1B netCDF file (runs the decoder);
- ``decode``: the band's radiance decoded into memory (:func:`tempocodec.runtime.store.open_store`), no file written;
- ``query``: :func:`tempocodec.runtime.query.query_store` of all four products with MLP probes (reads only latents and the
  lossless geometry, runs the probes), and the same followed by :func:`tempocodec.runtime.query.write_products`.

"first" is the first call in the process (ONNX sessions created then; the model directory is already loaded and
verified by the compression), "best" the shortest of ``--repeats`` further calls. Run:
``python benchmarks/bench_query.py --model tempo-vae-uv --granule data/heldout/TEMPO_RAD_L1_...nc``
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from rich.console import Console
from rich.table import Table

from tempocodec.runtime.query import query_store, write_products
from tempocodec.runtime.store import compress_granule, decompress_store, open_store
from tempocodec.simulator import write_simulated


def timings(work: Callable[[], object], repeats: int) -> tuple[float, float]:
    """Seconds of the first call of ``work`` and the shortest of ``repeats`` calls after it."""
    start = time.perf_counter()
    work()
    first = time.perf_counter() - start
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        work()
        best = min(best, time.perf_counter() - start)
    return first, best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="tempo-vae-uv-2", help="Model name or directory, with probes.")
    parser.add_argument("--granule", type=Path, default=None, help="L1B granule (default: simulate one).")
    parser.add_argument("--rows", type=int, default=128)
    parser.add_argument("--cols", type=int, default=256)
    parser.add_argument("--seed", type=int, default=30000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        granule = args.granule or write_simulated(work / "g", args.rows, args.cols, args.seed, bands="uv")[0]
        store = work / "granule.zarr"
        compress_granule(granule, store, model=args.model, progress=False)
        ds = query_store(store, model=args.model)  # fails early when the model has no probes
        decompress = timings(lambda: decompress_store(store, work / "back.nc", overwrite=True, progress=False),
                             args.repeats)
        decode = timings(lambda: open_store(store, "band_290_490_nm")["radiance"].values, args.repeats)
        query = timings(lambda: query_store(store, model=args.model), args.repeats)
        query_nc = timings(lambda: write_products(query_store(store, model=args.model), work / "p.nc", overwrite=True),
                           args.repeats)
    grid = f"{ds.sizes['latent_row']}×{ds.sizes['latent_col']}"
    table = Table(title=f"{granule.name}: decompress vs query of 4 products ({grid} latent cells), model {args.model}")
    for column in ("operation", "first (s)", f"best of {args.repeats} (s)", "decompress / this (best)"):
        table.add_column(column, justify="left" if column == "operation" else "right")
    for name, (first, best) in (("decompress (decoder, L1B netCDF)", decompress), ("decode radiance to memory", decode),
                                ("query (Dataset)", query), ("query + write netCDF", query_nc)):
        table.add_row(name, f"{first:.3f}", f"{best:.3f}", f"{decompress[1] / best:.0f}×")
    Console().print(table)


if __name__ == "__main__":
    main()
