"""Simulated granules as files: one ``TEMPO_RAD_L1_…nc`` and four ``TEMPO_<P>_L2_…nc`` per scene."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from tempocodec.errors import TempocodecError
from tempocodec.granule.l1b import BANDS, write_l1b
from tempocodec.granule.l2 import write_l2
from tempocodec.simulator.config import SceneConfig, resolve_bands
from tempocodec.simulator.granule import simulate_granule


def write_simulated(out_dir: str | os.PathLike, rows: int, cols: int, seed: int, *, scenes: int = 1,
                    bands: str | Sequence[str] = BANDS,
                    progress: Callable[[int, int, str], None] | None = None) -> list[Path]:
    """Simulate ``scenes`` granules and write each as ``TEMPO_RAD_L1_…nc`` plus four ``TEMPO_<P>_L2_…nc`` files.

    Scene ``k`` uses seed ``seed + k`` with the default :class:`SceneConfig` (see :func:`write_scenes`).
    """
    if not isinstance(scenes, (int, np.integer)) or scenes < 1:
        raise TempocodecError(f"simulate: scenes must be a positive integer, got {scenes!r}")
    configs = [SceneConfig(rows=rows, cols=cols, seed=seed + k) for k in range(scenes)]  # validated before any work
    return write_scenes(out_dir, configs, bands=bands, progress=progress)


def write_scenes(out_dir: str | os.PathLike, configs: Sequence[SceneConfig], *, bands: str | Sequence[str] = BANDS,
                 progress: Callable[[int, int, str], None] | None = None) -> list[Path]:
    """Simulate each scene of ``configs`` and write its L1B granule and four L2 truth files into ``out_dir``.

    Scene ``k`` gets scan ``1 + k // 9`` and granule ``1 + k % 9``; the output is the same as
    :func:`simulate_granule` with those arguments. ``progress(done, total, message)`` is called after each
    scene is simulated and after each file is written. Returns the paths written, L1B first per scene.
    """
    band_names = resolve_bands(bands)
    out = _writable_directory(out_dir)
    total = len(configs) * 6
    done = 0
    paths: list[Path] = []

    def step(message: str) -> None:
        nonlocal done
        done += 1
        if progress is not None:
            progress(done, total, message)

    for k, config in enumerate(configs):
        scan, granule = 1 + k // 9, 1 + k % 9
        l1b, l2 = simulate_granule(config.rows, config.cols, config.seed, bands=band_names, scan=scan,
                                   granule_index=granule, config=config)
        step(f"scene {k + 1}/{len(configs)} simulated")
        path = out / l1b.attrs["local_granule_id"]
        write_l1b(path, l1b)
        paths.append(path)
        step(f"wrote {path.name}")
        for granule_l2 in l2.values():
            path = out / granule_l2.attrs["local_granule_id"]
            write_l2(path, granule_l2)
            paths.append(path)
            step(f"wrote {path.name}")
    return paths


def _writable_directory(out_dir: str | os.PathLike) -> Path:
    """``out_dir`` created if needed; raises :class:`TempocodecError` when it cannot be created or written."""
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise TempocodecError(f"{out}: exists and is not a directory")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise TempocodecError(f"{out}: cannot create the output directory ({err.strerror or err})") from None
    if not os.access(out, os.W_OK | os.X_OK):
        raise TempocodecError(f"{out}: the output directory is not writable")
    return out
