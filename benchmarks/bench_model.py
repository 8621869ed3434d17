"""Speed of candidate VAE configurations under ONNX Runtime on the CPU.

Each candidate is exported with :func:`tempocodec.training.export.export_model` (random weights: speed does not depend on
them) and timed with ONNX Runtime on float32 tiles of ``n_channels × 64 × 64``. Prints one table row per candidate
and batch size: parameters, encode and decode tiles/s, and the matching MB/s of float32 radiance
(one 1028-channel tile is 16.8 MB).

With ``--train-step``, also times one PyTorch training step (forward, backward, AdamW) of each candidate on the
CPU at batch 8, for full 64×64 tiles and 32×32 crops (best of ``--repeats``).

Run: ``python benchmarks/bench_model.py [--threads 2] [--batches 4 8] [--repeats 5] [--only NAME ...] [--train-step]``
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
from rich.console import Console
from rich.table import Table

from tempocodec.training.export import export_model
from tempocodec.training.vae import VAE, VAEConfig

CANDIDATES: dict[str, VAEConfig] = {
    "default": VAEConfig(),
    "w48-0/1/1": VAEConfig(widths=(48, 96, 128), res_blocks=(0, 1, 1)),
    "w64-0/1/2": VAEConfig(widths=(64, 128, 192), res_blocks=(0, 1, 2)),
    "w64-0/2/2": VAEConfig(widths=(64, 128, 256), res_blocks=(0, 2, 2)),
    "w64-1/1/1": VAEConfig(widths=(64, 96, 128), res_blocks=(1, 1, 1)),
    "w96-0/1/1": VAEConfig(widths=(96, 128, 192), res_blocks=(0, 1, 1)),
    "w128-0/1/1": VAEConfig(widths=(128, 128, 192), res_blocks=(0, 1, 1)),
    "w128-1/1/1": VAEConfig(widths=(128, 128, 128), res_blocks=(1, 1, 1)),
}


def _session(path: Path, threads: int) -> ort.InferenceSession:
    """A CPU ONNX Runtime session with ``threads`` intra-op threads and full graph optimisation."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _rate(run, feed: dict[str, np.ndarray], batch: int, repeats: int) -> float:
    """Tiles per second of ``run(feed)``: one warm-up call, then the best of ``repeats`` timed calls."""
    run(feed)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        run(feed)
        best = min(best, time.perf_counter() - start)
    return batch / best


def bench(name: str, config: VAEConfig, batches: list[int], threads: int, repeats: int, work: Path) -> list[tuple]:
    """Time one candidate; returns one row ``(name, params, batch, enc tiles/s, dec tiles/s, enc MB/s, dec MB/s)``
    per batch size."""
    model = VAE(config).eval()
    stats = np.zeros(config.n_channels, np.float32), np.ones(config.n_channels, np.float32)
    out = export_model(model, *stats, work / name.replace("/", "_"), name=name, band="band_290_490_nm")
    encoder, decoder = _session(out / "encoder.onnx", threads), _session(out / "decoder.onnx", threads)
    tile_mb = config.n_channels * config.tile * config.tile * 4 / 1e6
    latent = config.tile // config.downsample
    rng = np.random.default_rng(0)
    rows = []
    for batch in batches:
        x = rng.standard_normal((batch, config.n_channels, config.tile, config.tile), dtype=np.float32)
        z = rng.standard_normal((batch, config.latent_channels, latent, latent), dtype=np.float32)
        enc = _rate(lambda feed: encoder.run(None, feed), {"x": x}, batch, repeats)
        dec = _rate(lambda feed: decoder.run(None, feed), {"z": z}, batch, repeats)
        rows.append((name, model.n_parameters(), batch, enc, dec, enc * tile_mb, dec * tile_mb))
    return rows


def train_step_seconds(config: VAEConfig, batch: int, crop: int, repeats: int) -> float:
    """Best wall time of one training step (loss, backward, AdamW step) on the CPU, in seconds."""
    torch.manual_seed(0)
    model = VAE(config).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    x = torch.randn(batch, config.n_channels, crop, crop)
    mask = torch.ones(batch, crop, crop, dtype=torch.bool)
    best = float("inf")
    for _ in range(repeats + 1):
        start = time.perf_counter()
        loss = model.loss(x, mask)["loss"]
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    """Parse arguments, time the chosen candidates and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batches", type=int, nargs="+", default=[4, 8])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--only", nargs="*", choices=sorted(CANDIDATES), default=None)
    parser.add_argument("--train-step", action="store_true", help="also time a CPU training step at batch 8")
    args = parser.parse_args()
    table = Table(title=f"ONNX Runtime {ort.__version__}, intra_op threads {args.threads}")
    for column in ("config", "params", "batch", "enc tiles/s", "dec tiles/s", "enc MB/s", "dec MB/s"):
        table.add_column(column, justify="right")
    with tempfile.TemporaryDirectory() as work:
        for name in args.only or list(CANDIDATES):
            for row in bench(name, CANDIDATES[name], args.batches, args.threads, args.repeats, Path(work)):
                table.add_row(row[0], f"{row[1]:,}", str(row[2]), *(f"{value:.1f}" for value in row[3:]))
    Console().print(table)
    if args.train_step:
        steps = Table(title=f"PyTorch {torch.__version__} training step on the CPU ({torch.get_num_threads()} threads)")
        for column in ("config", "batch", "64×64 s/step", "32×32 crop s/step"):
            steps.add_column(column, justify="right")
        for name in args.only or list(CANDIDATES):
            full, crop = (train_step_seconds(CANDIDATES[name], 8, size, args.repeats) for size in (64, 32))
            steps.add_row(name, "8", f"{full:.2f}", f"{crop:.2f}")
        Console().print(steps)


if __name__ == "__main__":
    main()
