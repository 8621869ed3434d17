"""Products from the compressed store against the L2 truth, pooled over held-out granules, and query vs decompress speed.

Every L1B granule of ``--data`` (with its four L2 truth files beside it; default ``data/heldout``, granules no
probe or VAE trained on) is compressed with ``--model`` into a temporary store; :func:`tempocodec.runtime.query.query_store`
then estimates the four products from the store alone (latents, geometry and the stored DOAS slant columns; the
decoder never runs), and each is compared with its truth pooled to the latent grid (mean of each 4×4 block). R²,
RMSE and bias are pooled over all granules' cells, per probe kind, with the mean reported uncertainty over the RMSE,
the R² on the cells TEMPO's NO₂/HCHO L2 flags good (flag 0 on every pixel) and the paper's R²; per-granule R² of
the MLP probes follow. Last, on the first granule's store:
``decompress`` against ``query`` (best of ``--repeats``). Run:
``python benchmarks/bench_products.py --model models/tempo-vae-uv-2 --data data/heldout``
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
from bench_query import timings
from rich.console import Console
from rich.table import Table

from tempocodec.granule.l2 import l2_truth, read_l2
from tempocodec.prepare.tiles import pool_to_latent
from tempocodec.runtime.probes import PRODUCTS, r2_rmse_bias
from tempocodec.runtime.query import query_store
from tempocodec.runtime.store import compress_granule, decompress_store
from tempocodec.training.data import find_granules
from tempocodec.training.probe_training import truth_paths

PAPER_R2 = {"cloud_fraction": 0.93, "ozone": 0.81, "no2": 0.20, "hcho": 0.51}
KINDS = ("mlp", "linear")


def granule_pairs(l1b: Path, store: Path, model: str) -> dict[tuple[str, str], tuple[np.ndarray, ...]]:
    """(product, kind) -> (prediction, truth, uncertainty or NaN, QA-good) over the cells where both are finite;
    QA-good: every pixel of the cell has the NO₂ L2 ``main_data_quality_flag`` 0 (SZA ≤ 70°, cloud fraction ≤ 0.5)."""
    paths = truth_paths(l1b)
    truth = {p: pool_to_latent(np.asarray(l2_truth(read_l2(path)).values, np.float64)) for p, path in paths.items()}
    flag = np.asarray(read_l2(paths["no2"]).groups["product"]["main_data_quality_flag"].values)
    good = pool_to_latent(np.where(flag == 0, 1.0, 0.0)) == 1.0
    out = {}
    for kind in KINDS:
        ds = query_store(store, kind=kind, model=model)
        for product in PRODUCTS:
            pred = ds[product].values.astype(np.float64)
            sigma = ds[f"{product}_uncertainty"].values if f"{product}_uncertainty" in ds else np.full(pred.shape, np.nan)
            ok = np.isfinite(pred) & np.isfinite(truth[product])
            out[(product, kind)] = (pred[ok], truth[product][ok], sigma[ok].astype(np.float64), good[ok])
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="models/tempo-vae-uv-2", help="Model name or directory, with probes.")
    parser.add_argument("--data", type=Path, default=Path("data/heldout"))
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    granules = find_granules(args.data)
    per: list[tuple[str, dict]] = []
    with tempfile.TemporaryDirectory() as tmp:
        for l1b in granules:
            store = Path(tmp) / f"{l1b.stem}.zarr"
            compress_granule(l1b, store, model=args.model, progress=False)
            per.append((l1b.name, granule_pairs(l1b, store, args.model)))
        first = Path(tmp) / f"{granules[0].stem}.zarr"
        decompress = timings(lambda: decompress_store(first, Path(tmp) / "back.nc", overwrite=True, progress=False),
                             args.repeats)
        query = timings(lambda: query_store(first, model=args.model), args.repeats)
    console = Console()
    console.print(pooled_table(per, args.data))
    console.print(granule_table(per))
    console.print(f"{granules[0].name}: decompress {decompress[1]:.3f} s, query (4 products) {query[1]:.3f} s: "
                  f"query {decompress[1] / query[1]:.0f}× faster (best of {args.repeats})")


def pooled_table(per: list[tuple[str, dict]], data: Path) -> Table:
    """R², RMSE and bias pooled over every granule's cells, per product and probe kind, with the paper's R²."""
    table = Table(title=f"products from the store vs L2 truth, pooled over {len(per)} granules of {data}")
    for col in ("product", "probe", "cells", "R²", "RMSE", "bias", "mean σ / RMSE", "R² QA-good (cells)", "paper R²"):
        table.add_column(col, justify="left" if col in ("product", "probe") else "right")
    for product in PRODUCTS:
        for kind in KINDS:
            pred, truth, sigma, good = (np.concatenate([pairs[(product, kind)][i] for _, pairs in per]) for i in range(4))
            r2, rmse, bias = r2_rmse_bias(pred, truth)
            ratio = f"{np.nanmean(sigma) / rmse:.2f}" if np.isfinite(sigma).any() else "-"
            r2_good = r2_rmse_bias(pred[good], truth[good])[0]
            table.add_row(product, kind, str(truth.size), f"{r2:.3f}", f"{rmse:.4g}", f"{bias:.3g}", ratio,
                          f"{r2_good:.3f} ({good.sum()})", f"{PAPER_R2[product]:.2f}")
    return table


def granule_table(per: list[tuple[str, dict]]) -> Table:
    """Per granule, the MLP probes' R² of every product."""
    table = Table(title="per granule, MLP probes: R²")
    table.add_column("granule")
    for product in PRODUCTS:
        table.add_column(product, justify="right")
    for name, pairs in per:
        table.add_row(name, *(f"{r2_rmse_bias(*pairs[(p, 'mlp')][:2])[0]:.3f}" for p in PRODUCTS))
    return table


if __name__ == "__main__":
    main()
