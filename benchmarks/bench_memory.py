"""Peak memory of `compress`, `decompress` and `query` on a full-size simulated granule (both bands).

A real TEMPO band is 131 mirror steps × 2048 cross-track pixels × 1028 channels (1.1 GB of float32 radiance). The
granule is simulated once (``tempocodec simulate``, both bands) into ``--granule`` and reused by later runs; it is
large, so keep it outside the repository. Each command then runs in its own process, measured by ``/usr/bin/time -v``
(else ``getrusage(RUSAGE_CHILDREN)``): peak resident set size, wall time, and MB/s of the granule's float32 radiance
(both bands). Outputs go to ``--work`` (default: beside the granule) and are removed at the end.

Which codec each band used is printed under the table: ``--band all`` codes a band with the VAE where there is a
model for it and keeps its radiance lossless otherwise. Run (the target: every peak under 2.5 GB):
``python benchmarks/bench_memory.py [--granule data/fullsize/131x2048] [--rows 131] [--cols 2048]``
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import netCDF4

DEFAULT_GRANULE = Path("data/fullsize/131x2048")
TIME = Path("/usr/bin/time")
TARGET_GB = 2.5


@dataclass(frozen=True)
class Run:
    """One measured command: ``peak_bytes`` resident at most, ``seconds`` of wall time; ``error``: the last line it
    printed when it failed (None when it ran through)."""

    step: str
    peak_bytes: int
    seconds: float
    error: str | None = None


def cli(*args: str | Path) -> list[str]:
    """The command line of ``tempocodec ARGS`` with this interpreter."""
    return [sys.executable, "-m", "tempocodec", *map(str, args)]


def measure(step: str, command: list[str], env: dict[str, str]) -> Run:
    """Run ``command`` to completion and measure its peak RSS and wall time (and its error, when it fails)."""
    timed = [str(TIME), "-v", *command] if TIME.exists() else command
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    start = time.perf_counter()
    done = subprocess.run(timed, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    error = (errors or [f"exit status {done.returncode}"])[-1] if done.returncode else None
    found = re.search(r"Maximum resident set size \(kbytes\): (\d+)", done.stderr)
    if found:
        peak_kb = int(found.group(1))
    else:  # the largest child so far: right only while each command peaks above the ones before it
        peak_kb = max(before, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
    return Run(step, peak_kb * 1024, seconds, error)


def simulated_granule(directory: Path, rows: int, cols: int, seed: int, env: dict[str, str]) -> Path:
    """The L1B file of the granule simulated in ``directory`` (simulated now, both bands, when it has none)."""
    found = sorted(directory.glob("TEMPO_RAD_L1_*.nc"))
    if not found:
        print(f"simulating a {rows}×{cols} two-band granule into {directory} (once) ...", file=sys.stderr)
        run = measure("simulate", cli("simulate", directory, "--rows", rows, "--cols", cols, "--seed", seed, "--quiet"), env)
        if run.error:
            raise SystemExit(f"simulate failed: {run.error}")
        found = sorted(directory.glob("TEMPO_RAD_L1_*.nc"))
    return found[0]


def radiance_shapes(granule: Path) -> dict[str, tuple[int, ...]]:
    """Band group -> shape of its radiance ``(mirror_step, xtrack, spectral_channel)``."""
    with netCDF4.Dataset(granule) as nc:
        return {name: tuple(group["radiance"].shape) for name, group in nc.groups.items() if "radiance" in group.variables}


def band_codecs(store: Path, env: dict[str, str]) -> str:
    """How each band's radiance is stored, from the store's ``tempocodec`` attribute."""
    code = ("import sys, zarr; b = zarr.open_group(sys.argv[1], mode='r').attrs['tempocodec']['bands']; "
            "print('; '.join(f\"{k}: {v['radiance']} ({v.get('model', v.get('reason', ''))})\" for k, v in b.items()))")
    return subprocess.run([sys.executable, "-c", code, str(store)], env=env, capture_output=True, text=True,
                          check=True).stdout.strip()


def markdown(runs: list[Run], megabytes: float) -> str:
    """The runs as a markdown table: peak RSS (GB), wall seconds, MB/s of radiance, under the target or not."""
    lines = ["| step | peak RSS (GB) | wall (s) | MB/s of radiance | peak < 2.5 GB |", "|---|---:|---:|---:|:-:|"]
    for run in runs:
        if run.error:
            lines.append(f"| {run.step} | – | – | – | failed: {run.error} |")
            continue
        gb = run.peak_bytes / 1e9
        lines.append(f"| {run.step} | {gb:.2f} | {run.seconds:.1f} | {megabytes / run.seconds:.0f} | "
                     f"{'yes' if gb < TARGET_GB else 'NO'} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--granule", type=Path, default=DEFAULT_GRANULE, help="Directory of the simulated granule (cache).")
    parser.add_argument("--work", type=Path, default=None, help="Directory for the outputs [GRANULE/bench].")
    parser.add_argument("--rows", type=int, default=131)
    parser.add_argument("--cols", type=int, default=2048)
    parser.add_argument("--seed", type=int, default=31000)
    parser.add_argument("--threads", type=int, default=None, help="Dask worker threads (DASK_NUM_WORKERS) [dask's default].")
    args = parser.parse_args()
    env = dict(os.environ)
    if args.threads is not None:
        env["DASK_NUM_WORKERS"] = str(args.threads)
    granule = simulated_granule(args.granule, args.rows, args.cols, args.seed, env)
    shapes = radiance_shapes(granule)
    megabytes = sum(4 * r * x * c for r, x, c in shapes.values()) / 1e6
    work = args.work or args.granule / "bench"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    store, back, products = work / "g.zarr", work / "back.nc", work / "products.nc"
    try:
        runs = [measure("compress --band all", cli("compress", granule, store, "--band", "all", "--quiet"), env)]
        if runs[0].error:
            raise SystemExit(f"compress failed: {runs[0].error}")
        runs += [measure("decompress", cli("decompress", store, back, "--quiet"), env),
                 measure("query (all products, UV)", cli("query", store, "-o", products), env)]
        codecs = band_codecs(store, env)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"### Peak memory: {granule.name}\n")
    print(f"radiance {', '.join(f'{b} {s[0]}×{s[1]}×{s[2]}' for b, s in shapes.items())} ({megabytes:.0f} MB float32); "
          f"dask threads: {args.threads or 'default'} of {os.cpu_count()} CPUs; measured with "
          f"{'/usr/bin/time -v' if TIME.exists() else 'getrusage(RUSAGE_CHILDREN)'}\n")
    print(markdown(runs, megabytes))
    print(f"\nstore: {codecs}")


if __name__ == "__main__":
    main()
