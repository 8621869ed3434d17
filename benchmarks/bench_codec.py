"""Throughput of the VAE codec against the bare ONNX forward passes it wraps.

For each batch size B, times on float32 radiance tiles ``(B, 64, 64, n_channels)`` (16.8 MB per 1028-channel tile):

- ``onnx forward``: ``encoder.onnx`` on normalized ``(B, C, 64, 64)`` and ``decoder.onnx`` on ``(B, Z, 16, 16)`` alone;
- ``codec kernel``: :func:`tempocodec.codec.kernel.encode_tiles` / :func:`~tempocodec.codec.kernel.decode_tiles` (validity,
  normalization, transposes, padding, payload packing, plus the same forward passes);
- ``zarr v3``: writing and reading one shard of 1 × 8 chunks through :class:`tempocodec.codec.zarr3.VAECodec` with
  ``codec_pipeline.batch_size = B``.

MB/s counts float32 radiance in (encode) or out (decode); each number is the best of ``--repeats`` runs after one
warm-up. The ratio is raw bytes over payload bytes. Speed does not depend on the weights, so a random-init model of the
released architecture gives representative timings. Run:
``python benchmarks/bench_codec.py --model NAME_OR_DIR [--batches 1 4 8] [--repeats 3] [--no-zarr]``
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import zarr
from rich.console import Console
from rich.table import Table

from tempocodec.codec.config import RADIANCE_FILL
from tempocodec.codec.kernel import decode_tiles, encode_tiles
from tempocodec.codec.zarr3 import make_codec
from tempocodec.prepare.normalize import normalize
from tempocodec.runtime.artifacts import (
    ModelArtifacts,
    known_models,
    load_model,
    resolve_model,
    session,
)

ZARR_CHUNKS_PER_SHARD = 8


def best_seconds(work: Callable[[], object], repeats: int) -> float:
    """Shortest wall time of ``repeats`` calls of ``work`` after one warm-up call."""
    work()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        work()
        best = min(best, time.perf_counter() - start)
    return best


def radiance(batch: int, art: ModelArtifacts, seed: int = 0) -> np.ndarray:
    """Smooth synthetic radiance around the model's mean spectrum: float32 ``(batch, tile, tile, n_channels)``."""
    rng = np.random.default_rng(seed)
    shape = (batch, art.tile, art.tile, art.n_channels)
    log_l = art.mu + art.sigma * (0.5 * rng.standard_normal(shape[:3] + (1,)) + 0.1 * rng.standard_normal(shape))
    return np.exp(log_l).astype(np.float32)


def bench_batch(art: ModelArtifacts, batch: int, repeats: int, with_zarr: bool) -> list[tuple[str, int, float, float, str]]:
    """Rows ``(path, batch, encode MB/s, decode MB/s, ratio)`` for one batch size."""
    tiles = radiance(batch, art)
    megabytes = tiles.nbytes / 1e6
    x = np.ascontiguousarray(normalize(tiles, art.mu, art.sigma).transpose(0, 3, 1, 2))
    side = art.tile // art.downsample
    z = np.zeros((batch, art.latent_channels, side, side), np.float32)
    encoder, decoder = session(art, "encoder"), session(art, "decoder")
    rows = [(
        "onnx forward",
        batch,
        megabytes / best_seconds(lambda: encoder.run(["mean"], {"x": x}), repeats),
        megabytes / best_seconds(lambda: decoder.run(["x"], {"z": z}), repeats),
        "-",
    )]
    codec = make_codec(art)
    fills = [RADIANCE_FILL] * batch
    blobs = encode_tiles(tiles, fills, codec.config)
    ratio = tiles.nbytes / sum(len(b) for b in blobs)
    rows.append((
        "codec kernel",
        batch,
        megabytes / best_seconds(lambda: encode_tiles(tiles, fills, codec.config), repeats),
        megabytes / best_seconds(lambda: decode_tiles(blobs, fills, codec.config), repeats),
        f"{ratio:,.0f}",
    ))
    if with_zarr:
        rows.append(bench_zarr(art, batch, repeats))
    return rows


def bench_zarr(art: ModelArtifacts, batch: int, repeats: int) -> tuple[str, int, float, float, str]:
    """Write and read one shard of :data:`ZARR_CHUNKS_PER_SHARD` chunks with ``codec_pipeline.batch_size = batch``."""
    data = radiance(ZARR_CHUNKS_PER_SHARD, art, seed=1).transpose(1, 0, 2, 3).reshape(
        art.tile, ZARR_CHUNKS_PER_SHARD * art.tile, art.n_channels)
    megabytes = data.nbytes / 1e6
    with tempfile.TemporaryDirectory() as tmp, zarr.config.set({"codec_pipeline.batch_size": batch}):
        arr = zarr.create_array(
            store=Path(tmp) / "r.zarr", shape=data.shape, dtype="float32", chunks=(art.tile, art.tile, art.n_channels),
            shards=data.shape, serializer=make_codec(art), compressors=None, fill_value=RADIANCE_FILL,
        )

        def write() -> None:
            arr[:] = data

        encode = megabytes / best_seconds(write, repeats)
        stored = sum(p.stat().st_size for p in (Path(tmp) / "r.zarr" / "c").rglob("*") if p.is_file())
        reader = zarr.open_array(Path(tmp) / "r.zarr", mode="r")
        decode = megabytes / best_seconds(lambda: reader[:], repeats)
    return f"zarr v3 ({ZARR_CHUNKS_PER_SHARD} chunks/shard)", batch, encode, decode, f"{data.nbytes / stored:,.0f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="model name or directory (default: the first known model)")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 4, 8])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-zarr", action="store_true", help="skip the zarr write/read rows")
    args = parser.parse_args()
    name = args.model or next(iter(known_models()), None)
    if name is None:
        parser.error("no model found: pass --model NAME_OR_DIR")
    art = load_model(resolve_model(name))
    table = Table(title=f"tempocodec codec throughput, model {art.name} ({art.n_channels} channels, "
                        f"latent {art.latent_channels}×{art.tile // art.downsample}², sha256 {art.sha256[:12]})")
    for column in ("path", "batch", "encode MB/s", "decode MB/s", "ratio"):
        table.add_column(column, justify="left" if column == "path" else "right")
    for batch in args.batches:
        for path, b, enc, dec, ratio in bench_batch(art, batch, args.repeats, not args.no_zarr):
            table.add_row(path, str(b), f"{enc:.1f}", f"{dec:.1f}", ratio)
    Console().print(table)


if __name__ == "__main__":
    main()
