"""Regenerate the released models' training data: normalization, spectral basis and basis coefficients.

    python scripts/make_training_data.py DATA_DIR --band uv --train 1000 --pilot 160 --components 24 --workers 2

Writes into DATA_DIR/<band>/ (nothing of it belongs in the repository):
- ``basis.npz``: ``mu``, ``sigma`` (float32 (C,), log-radiance normalization, from the first ``--pilot`` training
  scenes), ``components``/``weights``/``scales``/``explained`` (the spectral basis, same scenes);
- ``train.npz`` / ``valid.npz``: ``coefficients`` float16 (N, K, 64, 64), ``mask`` bool (N, 64, 64), ``seeds``.
Scenes and seeds: :mod:`tempocodec.training.simdata`. Deterministic for the same arguments.
"""

from __future__ import annotations

import argparse
import functools
import sys
import time
from pathlib import Path

import numpy as np

from tempocodec.atomic import ANY_FILE, atomic_file
from tempocodec.bands import BAND_CHOICES
from tempocodec.prepare.basis import LogMoments, SpectralBasis
from tempocodec.training.simdata import (
    TRAIN_SEED,
    VALID_SEED,
    Projection,
    run_parallel,
    scene_coefficients,
    scene_moments,
    training_scene,
)

BANDS = {key: bands[0] for key, bands in BAND_CHOICES.items() if len(bands) == 1}


def _moments(seed: int, band: str) -> LogMoments:
    return scene_moments(training_scene(seed), band)


def _coefficients(seed: int, band: str, projection: Projection) -> tuple[np.ndarray, np.ndarray]:
    return scene_coefficients(training_scene(seed), band, projection)


def _report(label: str, total: int, start: float):
    def progress(done: int) -> None:
        if done == total or done % 25 == 0:
            print(f"{label}: {done}/{total} scenes, {time.time() - start:.0f} s", flush=True)
    return progress


def fit_projection(band: str, pilot: int, components: int, workers: int) -> Projection:
    """Normalization and basis from the first ``pilot`` training scenes."""
    start = time.time()
    seeds = [TRAIN_SEED + i for i in range(pilot)]
    moments = None
    for part in run_parallel(functools.partial(_moments, band=band), seeds, workers, _report("pilot", pilot, start)):
        moments = part if moments is None else moments.merge(part)
    mu, sigma = moments.mean_std()
    basis = moments.basis(components)
    print(f"basis: {components} components explain {100 * basis.explained.sum():.4f} % of the variance "
          f"({moments.count:,} spectra)", flush=True)
    return Projection(mu=mu, sigma=sigma, basis=basis)


def coefficient_set(band: str, seeds: list[int], projection: Projection, workers: int, label: str) -> dict:
    """Coefficients (float16) and masks of the scenes ``seeds``."""
    start = time.time()
    function = functools.partial(_coefficients, band=band, projection=projection)
    results = list(run_parallel(function, seeds, workers, _report(label, len(seeds), start)))
    return {"coefficients": np.stack([r[0] for r in results]).astype(np.float16),
            "mask": np.stack([r[1] for r in results]), "seeds": np.asarray(seeds)}


def _save(path: Path, arrays: dict) -> None:
    """Write ``arrays`` as an ``.npz`` file atomically (:func:`tempocodec.atomic.atomic_file`)."""
    with atomic_file(path, replace=ANY_FILE) as tmp, tmp.open("wb") as f:
        np.savez(f, **arrays)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--band", choices=sorted(BANDS), default="uv")
    parser.add_argument("--train", type=int, default=1000)
    parser.add_argument("--valid", type=int, default=32)
    parser.add_argument("--pilot", type=int, default=160)
    parser.add_argument("--components", type=int, default=24)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args(argv)
    band = BANDS[args.band]
    out = args.out / args.band
    out.mkdir(parents=True, exist_ok=True)
    projection = fit_projection(band, args.pilot, args.components, args.workers)
    basis: SpectralBasis = projection.basis
    _save(out / "basis.npz", {"mu": projection.mu, "sigma": projection.sigma, "components": basis.components,
                              "weights": basis.weights, "scales": basis.scales, "explained": basis.explained,
                              "band": np.asarray(band)})
    valid = coefficient_set(band, [VALID_SEED + i for i in range(args.valid)], projection, args.workers, "valid")
    _save(out / "valid.npz", valid)
    train = coefficient_set(band, [TRAIN_SEED + i for i in range(args.train)], projection, args.workers, "train")
    _save(out / "train.npz", train)
    print(f"wrote {out}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
