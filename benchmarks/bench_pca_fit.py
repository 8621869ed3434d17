"""Seconds to fit bench_baselines' PCA basis: scikit-learn's ``PCA(svd_solver="covariance_eigh")`` (what it uses)
against the hand-written ``numpy.linalg.eigh`` of ``numpy.cov`` it replaced, on synthetic spectra of 1028 channels
(40 strong components plus white noise), and how far apart the two reconstructions are. Needs the ``bench`` extra.
Run: ``python benchmarks/bench_pca_fit.py [--spectra 50000] [--components 64]``
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from sklearn.decomposition import PCA

CHANNELS = 1028


def numpy_basis(spectra: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Mean ``(C,)`` and the ``k`` leading principal axes ``(k, C)``: eigh of the covariance matrix."""
    mean = spectra.mean(axis=0)
    _, vectors = np.linalg.eigh(np.cov(spectra - mean, rowvar=False))
    return mean, vectors[:, ::-1][:, :k].T


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spectra", type=int, default=50_000)
    parser.add_argument("--components", type=int, default=64)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    strong = rng.standard_normal((args.spectra, 40)) * np.linspace(10, 0.1, 40)
    x = strong @ rng.standard_normal((40, CHANNELS)) + 0.01 * rng.standard_normal((args.spectra, CHANNELS))
    start = time.perf_counter()
    mean, axes = numpy_basis(x, args.components)
    t_numpy = time.perf_counter() - start
    start = time.perf_counter()
    pca = PCA(args.components, svd_solver="covariance_eigh").fit(x)
    t_sklearn = time.perf_counter() - start
    probe = x[:2000]
    ours = (probe - mean) @ axes.T @ axes + mean
    theirs = pca.inverse_transform(pca.transform(probe))
    print(f"{args.spectra} spectra x {CHANNELS} channels, {args.components} components")
    print(f"numpy eigh(cov)              {t_numpy:6.2f} s")
    print(f"sklearn PCA covariance_eigh  {t_sklearn:6.2f} s")
    print(f"largest reconstruction difference {np.abs(ours - theirs).max():.2e} (values of order {np.abs(probe).mean():.1f})")


if __name__ == "__main__":
    main()
