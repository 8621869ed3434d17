"""The simulated training, validation and held-out sets of the released models, regenerated from seeds.

Nothing of the data is stored in the repository: every scene is a :class:`~tempocodec.simulator.SceneConfig` with a
seed written down here, and :func:`simulate_band` rebuilds its radiance bit for bit. The sets:

- training: ``n`` scenes of 64×64 pixels, seeds ``TRAIN_SEED + i``, granule centre 15–60°N, centre SZA 0–80°,
  every date of 2023-08 … 2026-01 (all seasons), cloud cover drawn per scene (clear to overcast);
- validation: 32 scenes like training, seeds ``VALID_SEED + i``;
- probes: scenes like training but written as granules with their L2 truth (:func:`probe_scenes`), seeds
  ``PROBE_SEED + i``;
- held-out (never used for fitting or tuning): :func:`heldout_scenes`, 128×256 pixels: six typical scenes and two
  winter-like high-SZA scenes (40–50°N, centre SZA 70–80°).

Work runs in worker processes (``multiprocessing``, spawn context, deterministic per seed whatever the order).
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from tempocodec.prepare.basis import LogMoments, SpectralBasis
from tempocodec.prepare.normalize import normalize
from tempocodec.prepare.tiles import pixel_mask
from tempocodec.simulator import SceneConfig, simulate_granule

TRAIN_SEED = 100_000
VALID_SEED = 800_000
PROBE_SEED = 700_000
WINTER_PROBE_SEED = 750_000
HELDOUT_SEED = 900_000
TRAIN_SIZE = 64
WIDE_LATITUDES = (15.0, 60.0)
WIDE_SZA = (0.0, 80.0)


def training_scene(seed: int, size: int = TRAIN_SIZE) -> SceneConfig:
    """A training/validation scene: ``size``×``size`` pixels, 15–60°N, centre SZA 0–80°."""
    return SceneConfig(rows=size, cols=size, seed=seed, lat_range=WIDE_LATITUDES, sza_range=WIDE_SZA)


def probe_scenes(n: int, rows: int = 64, cols: int = 128) -> list[SceneConfig]:
    """The probes' training scenes: ``n`` scenes like the training set, ``rows``×``cols`` pixels."""
    return [SceneConfig(rows=rows, cols=cols, seed=PROBE_SEED + i, lat_range=WIDE_LATITUDES, sza_range=WIDE_SZA)
            for i in range(n)]


def winter_probe_scenes(n: int, rows: int = 64, cols: int = 128) -> list[SceneConfig]:
    """Extra probe training scenes at 40–55°N with centre SZA 55–80°: mostly winter, about half of them with snow,
    which the ``probe_scenes`` draw all but never gives (0 of 120 there: the SZA limit keeps most winter scenes
    south of 38°N, where the simulator has no snow). Without them cloud fraction, NO₂ and HCHO probes meet snow
    for the first time on held-out granules."""
    return [SceneConfig(rows=rows, cols=cols, seed=WINTER_PROBE_SEED + i, lat_range=(40.0, 55.0), sza_range=(55.0, 80.0))
            for i in range(n)]


def heldout_scenes(rows: int = 128, cols: int = 256) -> list[SceneConfig]:
    """The eight held-out scenes: six typical (15–60°N, SZA 0–70°) and two high-SZA (40–50°N, SZA 70–80°)."""
    typical = [SceneConfig(rows=rows, cols=cols, seed=HELDOUT_SEED + i, lat_range=WIDE_LATITUDES,
                           sza_range=(0.0, 70.0)) for i in range(6)]
    high_sza = [SceneConfig(rows=rows, cols=cols, seed=HELDOUT_SEED + 6 + i, lat_range=(40.0, 50.0),
                            sza_range=(70.0, 80.0)) for i in range(2)]
    return typical + high_sza


def simulate_band(config: SceneConfig, band: str) -> np.ndarray:
    """float32 radiance ``(rows, cols, C)`` of ``band`` (photons s⁻¹ cm⁻² nm⁻¹ sr⁻¹, fill where invalid)."""
    l1b, _ = simulate_granule(config.rows, config.cols, config.seed, bands=(band,), config=config)
    return np.asarray(l1b.bands[band]["radiance"].values, dtype=np.float32)


def scene_moments(config: SceneConfig, band: str) -> LogMoments:
    """:class:`LogMoments` of one scene's fully valid spectra."""
    radiance = simulate_band(config, band)
    return LogMoments(radiance.shape[-1]).update(radiance.reshape(-1, radiance.shape[-1]))


@dataclass(frozen=True)
class Projection:
    """What turns radiance into basis coefficients: normalization ``mu``, ``sigma`` ``(C,)`` and the basis."""

    mu: np.ndarray
    sigma: np.ndarray
    basis: SpectralBasis


def scene_coefficients(config: SceneConfig, band: str, projection: Projection) -> tuple[np.ndarray, np.ndarray]:
    """Whitened basis coefficients float32 ``(K, rows, cols)`` of one scene and its pixel mask bool ``(rows, cols)``
    (pixels with at least half of their channels valid; invalid channels enter as the channel mean)."""
    radiance = simulate_band(config, band)
    x = normalize(radiance, projection.mu, projection.sigma)
    coefficients = np.einsum("kc,rwc->krw", projection.basis.project, x, optimize=True)
    return coefficients.astype(np.float32), pixel_mask(radiance)


def run_parallel(function: Callable, items: Sequence, workers: int,
                 progress: Callable[[int], None] | None = None) -> Iterator:
    """``function(item)`` for each item, in order, on ``workers`` spawned processes (in-process when 1);
    ``progress(done)`` after each result."""
    if workers <= 1:
        for done, item in enumerate(items, 1):
            yield function(item)
            if progress:
                progress(done)
        return
    with multiprocessing.get_context("spawn").Pool(workers) as pool:
        for done, result in enumerate(pool.imap(function, items, chunksize=2), 1):
            yield result
            if progress:
                progress(done)

