"""The probe check of an evaluation: Level-2 products read from the store's latents
(:func:`tempocodec.runtime.query.query_store`) scored (R²) against the L2 truth files beside the original, on the
latent grid."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tempocodec.errors import TempocodecError
from tempocodec.granule.l2 import l2_files_beside, l2_truth, read_l2
from tempocodec.prepare.tiles import pool_to_latent
from tempocodec.runtime.probes import PRODUCTS, r2_rmse_bias


@dataclass(frozen=True)
class ProbeScore:
    """One product read from the latents against its L2 truth pooled to the latent grid.

    ``truth``, ``predicted``: float64 ``(n,)`` over the latent cells where both are finite; ``units`` of both."""

    name: str
    product: str
    units: str
    truth: np.ndarray
    predicted: np.ndarray

    @property
    def r2(self) -> float:
        """Coefficient of determination ``1 − Σ(p − t)² / Σ(t − mean t)²`` (NaN for fewer than 2 cells)."""
        return r2_rmse_bias(self.predicted, self.truth)[0]


def _pooled_truth(path: Path, shape: tuple[int, int]) -> np.ndarray:
    """The headline field of an L2 file pooled to the latent grid and cut to ``shape``, float64."""
    truth = pool_to_latent(np.asarray(l2_truth(read_l2(path)).values, np.float64))
    out = np.full(shape, np.nan)
    rows, cols = min(shape[0], truth.shape[0]), min(shape[1], truth.shape[1])
    out[:rows, :cols] = truth[:rows, :cols]
    return out


def probe_scores(original: Path, store: Path, band: str) -> tuple[tuple[ProbeScore, ...], str | None]:
    """Products read from the store's latents (:func:`tempocodec.runtime.query.query_store`) scored against the L2 truth
    files beside ``original``; or an empty tuple and the reason they were skipped."""
    truths = l2_files_beside(original)
    if not truths:
        return (), f"no L2 truth files (TEMPO_<product>_L2_...) beside {original.name}"
    try:
        from tempocodec.runtime.query import query_store

        names = tuple(n for n, p in PRODUCTS.items() if p.l2_product in truths)
        queried = query_store(store, products=names, band=band)
    except (TempocodecError, ImportError) as err:
        return (), f"products could not be read from the latents: {err}"
    scores = []
    for name in names:
        product = PRODUCTS[name]
        predicted = np.asarray(queried[name].values, np.float64)
        truth = _pooled_truth(truths[product.l2_product], predicted.shape)
        ok = np.isfinite(truth) & np.isfinite(predicted)
        scores.append(ProbeScore(name, product.l2_product, product.units, truth[ok], predicted[ok]))
    return tuple(scores), None
