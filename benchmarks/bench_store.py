"""Whole-granule timings: `compress` against reading the radiance with netCDF4 plus the codec's encode, and
`decompress`, on one simulated UV granule.

The issue's target: compressing takes at most 1.5 × (netCDF4 read of the whole granule + the codec kernel's encode of
the same tiles). The table gives each part in seconds and MB/s of float32 radiance, and the store's ratios. Run:
``python benchmarks/bench_store.py [--model tempo-vae-uv] [--rows 256] [--cols 512]``
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import netCDF4
import numpy as np
from rich.console import Console
from rich.table import Table

from tempocodec.codec.kernel import encode_tiles
from tempocodec.codec.zarr3 import make_codec
from tempocodec.granule.l1b import RADIANCE_FILL
from tempocodec.prepare.tiles import cut_tiles
from tempocodec.runtime.artifacts import load_model, resolve_model
from tempocodec.runtime.store import compress_granule, decompress_store
from tempocodec.simulator import write_simulated

BAND = "band_290_490_nm"


def read_seconds(granule: Path) -> tuple[float, np.ndarray]:
    """Seconds to read every variable of the granule with plain netCDF4, and the band's radiance
    ``(rows, cols, channels)``."""
    start = time.perf_counter()
    with netCDF4.Dataset(granule) as nc:
        nc.set_auto_mask(False)
        arrays = {f"{group.path}/{name}": var[:] for group in (nc, *nc.groups.values())
                  for name, var in group.variables.items()}
    return time.perf_counter() - start, arrays[f"/{BAND}/radiance"]


def encode_seconds(radiance: np.ndarray, model: str) -> float:
    """Seconds of the codec kernel alone on every 64×64 chunk of ``radiance`` (edge chunks padded with the fill)."""
    config = make_codec(load_model(resolve_model(model))).config
    tiles = cut_tiles(radiance, tile=config.chunk_shape[0], min_valid=0).radiance
    start = time.perf_counter()
    for first in range(0, len(tiles), 8):
        batch = tiles[first : first + 8]
        encode_tiles(batch, [RADIANCE_FILL] * len(batch), config)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="tempo-vae-uv-2")
    parser.add_argument("--rows", type=int, default=256)
    parser.add_argument("--cols", type=int, default=512)
    parser.add_argument("--seed", type=int, default=30000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        granule = write_simulated(Path(tmp) / "g", args.rows, args.cols, args.seed, bands="uv")[0]
        read_s, radiance = read_seconds(granule)
        megabytes = radiance.nbytes / 1e6
        encode_s = encode_seconds(radiance, args.model)
        del radiance
        start = time.perf_counter()
        summary = compress_granule(granule, Path(tmp) / "g.zarr", model=args.model, progress=False)
        compress_s = time.perf_counter() - start
        start = time.perf_counter()
        decompress_store(Path(tmp) / "g.zarr", Path(tmp) / "back.nc", progress=False)
        decompress_s = time.perf_counter() - start
        ratios = summary.radiance(BAND).ratio, summary.total_raw / summary.total_stored
    table = Table(title=f"{args.rows}×{args.cols} UV granule, {megabytes:.0f} MB of float32 radiance, model {args.model}")
    for column in ("step", "seconds", "MB/s of radiance"):
        table.add_column(column, justify="left" if column == "step" else "right")
    for name, seconds in (("netCDF4 read of the granule", read_s), ("codec kernel encode", encode_s),
                          ("read + encode", read_s + encode_s), ("tempocodec compress (whole granule)", compress_s),
                          ("tempocodec decompress (whole granule)", decompress_s)):
        table.add_row(name, f"{seconds:.2f}", f"{megabytes / seconds:.0f}")
    console = Console()
    console.print(table)
    console.print(f"compress / (read + encode) = {compress_s / (read_s + encode_s):.2f} (target ≤ 1.5); radiance ratio "
                  f"{ratios[0]:,.0f}, whole store {ratios[1]:,.1f}")


if __name__ == "__main__":
    main()
