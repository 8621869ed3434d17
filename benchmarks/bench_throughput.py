"""Throughput of the codec that ships, end to end, on one granule: every figure of issue 16 from one run.

On one UV granule (``--granule``; default: simulated once into ``--work`` at ``--rows`` × ``--cols``, seed
``--seed``, with ``tempocodec simulate``), in this process unless marked CLI:

- ``netCDF read``: every variable of the granule with plain netCDF4 (the reference the compress targets refer to);
- ``compress`` (:func:`~tempocodec.runtime.store.compress_granule`, the default mode) and ``CLI compress``;
- ``decode into memory``: the band's radiance through ``xr.open_zarr`` (no file written);
- ``decompress`` at the original's deflate settings and with ``--deflate 0``, and ``CLI decompress``;
- ``query`` (all products, :func:`~tempocodec.runtime.query.query_store`) and ``CLI query -o``;
- the codec kernel, the bare ONNX forward passes and zarr v3 on 8 synthetic 64×64 chunks
  (``bench_codec.bench_batch``), and for scale SZ3 (``pysz``, absolute bound 1e-3 on log radiance: 0.1 %) and the
  noise-normalised per-granule PCA + SZ3 baseline of ``bench_bounded.py`` (K=16, e=1) on the granule's radiance.

MB/s counts the band's float32 radiance. Times are the best of ``--repeats`` runs (one for the CLI rows, whose
first-call costs are the point). The ratios and targets of the issue are computed from this run only. Run:
``python benchmarks/bench_throughput.py [--rows 128] [--cols 512] [--work /tmp/tempocodec-throughput]``
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import netCDF4
import numpy as np
import pysz
import xarray as xr
from bench_codec import bench_batch
from bench_simulate import best_of
from bench_transform import (
    Space,
    noise_scaled,
    principal_axes,
    project,
    read_granule,
    relative_noise,
    sample_pixels,
    sz3_coder,
)
from bench_transform_report import machine
from rich.console import Console
from rich.table import Table

from tempocodec.prepare.tiles import pixel_mask
from tempocodec.runtime.artifacts import load_model, providers, resolve_model
from tempocodec.runtime.query import query_store
from tempocodec.runtime.store import compress_granule, decompress_store, open_root, store_meta
from tempocodec.simulator import write_simulated

BAND = "band_290_490_nm"


def cli(*args: str) -> float:
    """Wall seconds of ``python -m tempocodec ARGS`` in a fresh process (imports and model loading included)."""
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "tempocodec", *args, "--quiet"], check=True, capture_output=True)
    return time.perf_counter() - start


def granule(args: argparse.Namespace) -> Path:
    """The granule to measure: ``--granule``, else the simulated one in ``--work`` (made on first use)."""
    if args.granule:
        return Path(args.granule)
    found = sorted(args.work.glob("TEMPO_RAD_L1_*.nc"))
    if not found:
        write_simulated(args.work, args.rows, args.cols, seed=args.seed, scenes=1, bands="uv")
        found = sorted(args.work.glob("TEMPO_RAD_L1_*.nc"))
    return found[0]


def read_all(path: Path) -> None:
    """Read every variable of ``path`` with plain netCDF4."""
    with netCDF4.Dataset(path) as nc:
        nc.set_auto_mask(False)
        for group in (nc, *nc.groups.values()):
            for var in group.variables.values():
                var[:]


def baselines(path: Path, repeats: int) -> dict[str, tuple[float, float]]:
    """Encode and decode seconds of SZ3 on log radiance and of noise-normalised PCA + SZ3 (K=16, e=1)."""
    g = read_granule(path, BAND)
    log = np.log(np.where(pixel_mask(g.radiance)[..., None] & (g.radiance > 0), g.radiance, 1.0)).astype(np.float32)
    config = pysz.szConfig()
    config.errorBoundMode = pysz.szErrorBoundMode.ABS
    config.absErrorBound = 1e-3
    blob = pysz.sz.compress(log, config)[0]
    out = {"SZ3, log radiance, abs 1e-3": (
        best_of(repeats, lambda: pysz.sz.compress(log, config)),
        best_of(repeats, lambda: pysz.sz.decompress(blob, np.float32, log.shape)))}

    def pca_encode() -> tuple[Space, list[bytes], tuple[int, ...]]:
        r = relative_noise(g)
        y = noise_scaled(g.radiance, r)
        basis = principal_axes(sample_pixels(y, pixel_mask(g.radiance), 16384, np.random.default_rng(0)), 16)
        space = Space(y, np.zeros_like(r), r, basis, 2, 1.0)
        images = project(space.values, basis, 16)
        return space, sz3_coder(1.0)[0](images), images.shape

    space, blobs, shape = pca_encode()
    out["PCA noise-normalised + SZ3, K=16 e=1"] = (
        best_of(repeats, pca_encode), best_of(repeats, lambda: space.radiance(sz3_coder(1.0)[1](blobs, shape))))
    return out


def measure(path: Path, out: Path, repeats: int) -> tuple[dict[str, float], float, str]:
    """Seconds of each whole-granule step (outputs under ``out``), the band's radiance MB and the model used."""
    store, back = out / "g.zarr", out / "back.nc"
    t: dict[str, float] = {"netCDF read": best_of(repeats, lambda: read_all(path))}
    t["compress"] = best_of(repeats, lambda: compress_granule(path, store, overwrite=True, progress=False))
    model = store_meta(open_root(store))["bands"][BAND]["model"]
    mb = xr.open_zarr(store, group=BAND)["radiance"].nbytes / 1e6
    t["decode into memory"] = best_of(repeats, lambda: xr.open_zarr(store, group=BAND)["radiance"].values)
    t["decompress"] = best_of(repeats, lambda: decompress_store(store, back, overwrite=True, progress=False))
    t["decompress --deflate 0"] = best_of(
        repeats, lambda: decompress_store(store, back, overwrite=True, progress=False, deflate=0))
    t["query"] = best_of(repeats, lambda: query_store(store, "all"))
    t["CLI compress"] = cli("compress", str(path), str(store), "--overwrite")
    t["CLI decompress"] = cli("decompress", str(store), str(back), "--overwrite")
    t["CLI query"] = cli("query", str(store), "-o", str(out / "q.nc"), "--overwrite")
    return t, mb, model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--granule", help="an L1B granule (default: a simulated UV one in --work)")
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "tempocodec-throughput")
    parser.add_argument("--rows", type=int, default=128)
    parser.add_argument("--cols", type=int, default=512)
    parser.add_argument("--seed", type=int, default=7100)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    warnings.filterwarnings("ignore", message="Numcodecs codecs are not in the Zarr version 3")  # the aux codecs
    args.work.mkdir(parents=True, exist_ok=True)
    path = granule(args)
    with tempfile.TemporaryDirectory(dir=args.work) as tmp:
        t, mb, model = measure(path, Path(tmp), args.repeats)
    kernel = {row[0]: row for row in bench_batch(load_model(resolve_model(model)), 8, args.repeats, True)}
    scale = baselines(path, args.repeats)

    console = Console()
    table = Table(title=f"{path.name}: {mb:.0f} MB of float32 UV radiance, model {model}")
    for column in ("step", "seconds", "MB/s"):
        table.add_column(column, justify="left" if column == "step" else "right")
    for step, seconds in t.items():
        table.add_row(step, f"{seconds:.2f}", f"{mb / seconds:.0f}")
    for name, (enc, dec) in scale.items():
        table.add_row(f"{name}: encode / decode", f"{enc:.2f} / {dec:.2f}", f"{mb / enc:.0f} / {mb / dec:.0f}")
    for name in ("onnx forward", "codec kernel", next(k for k in kernel if k.startswith("zarr"))):
        table.add_row(f"{name} (8 chunks): encode / decode", "", f"{kernel[name][2]:.0f} / {kernel[name][3]:.0f}")
    console.print(table)

    onnx, kern = kernel["onnx forward"], kernel["codec kernel"]
    zarr_row = next(v for k, v in kernel.items() if k.startswith("zarr"))
    targets = Table(title="issue 16 targets, this run")
    for column in ("ratio", "value", "target", "met"):
        targets.add_column(column, justify="left" if column == "ratio" else "right")
    for name, value, target, higher in (
        ("compress / netCDF read", t["compress"] / t["netCDF read"], 1.15, False),
        ("CLI compress / netCDF read", t["CLI compress"] / t["netCDF read"], 1.3, False),
        ("decompress MB/s (original deflate)", mb / t["decompress"], 150, True),
        ("decompress MB/s (--deflate 0)", mb / t["decompress --deflate 0"], 300, True),
        ("bare ONNX / kernel, encode", onnx[2] / kern[2], 1.5, False),
        ("bare ONNX / kernel, decode", onnx[3] / kern[3], 1.5, False),
        ("kernel / zarr, encode", kern[2] / zarr_row[2], 1.3, False),
        ("kernel / zarr, decode", kern[3] / zarr_row[3], 1.3, False),
        ("decompress / query", t["decompress"] / t["query"], 100, True),
        ("decode into memory / query", t["decode into memory"] / t["query"], 10, True),
        ("CLI decompress / CLI query", t["CLI decompress"] / t["CLI query"], 50, True),
    ):
        met = value >= target if higher else value <= target
        targets.add_row(name, f"{value:.2f}", f"{'≥' if higher else '≤'} {target:g}", "yes" if met else "no")
    console.print(targets)
    console.print(f"ONNX Runtime providers: {', '.join(providers())}; {machine()}")


if __name__ == "__main__":
    main()
