"""pytest plugin: session fixtures for the probe and query tests (load with ``pytest_plugins = ["probe_fixture"]``).

- ``probe_granules``: one simulated scene (40% cloud cover) written as 4 consecutive UV granules of one scan, 64×64
  pixels each, with their L2 truth: the first 3 in ``train``, the last in ``heldout``;
- ``probed_model``: the committed 1028-channel model ``tests/fixture/models/spectral1028`` (a *spectral* encoder,
  see ``torch_models``) with probes that ``tests/fixture/make_fixtures.py`` trained on these ``train`` granules,
  and their held-out table (from ``probes.json``); no torch;
- ``probe_store``: the held-out granule compressed with that model.

Probe *training* is tested in ``test_probe_training.py`` (torch), which trains its own copy.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import pytest
from tiny_model import FIXTURE_MODELS

from tempocodec.granule.l1b import L1BGranule, write_l1b
from tempocodec.granule.l2 import L2Granule, l2_filename, write_l2
from tempocodec.granule.naming import l1b_filename, parse_tempo_filename
from tempocodec.runtime.artifacts import load_model
from tempocodec.runtime.probes import load_probes
from tempocodec.runtime.store import compress_granule
from tempocodec.simulator import STEP_SECONDS, SceneConfig, simulate_granule

ROWS = COLS = 64
SCAN_GRANULES = 4
SEED = 35
SPECTRAL_MODEL = FIXTURE_MODELS / "spectral1028"


@dataclass(frozen=True)
class ProbeGranules:
    """Directories of the training and the held-out granules."""

    train: Path
    heldout: Path


@dataclass(frozen=True)
class ProbedModel:
    """A model directory with trained probes, its held-out table, and the granules they came from."""

    path: Path
    metrics: list[dict]
    granules: ProbeGranules
    identity: str


def write_scan(out_dirs: list[Path], seed: int, cloud_cover: float = 0.4) -> list[Path]:
    """Simulate one scene of ``len(out_dirs)`` × 64 mirror steps by 64 pixels and write it as consecutive granules
    of one scan (granule ``k + 1`` into ``out_dirs[k]``, with its four L2 truth files); returns the L1B paths."""
    rows = ROWS * len(out_dirs)
    config = SceneConfig(rows=rows, cols=COLS, seed=seed, cloud_cover=cloud_cover)
    l1b, l2 = simulate_granule(rows, COLS, seed, bands="uv", config=config)
    start = parse_tempo_filename(l1b.attrs["local_granule_id"]).time
    paths = []
    for k, out in enumerate(out_dirs):
        steps = {"mirror_step": slice(k * ROWS, (k + 1) * ROWS)}
        time = start + timedelta(seconds=STEP_SECONDS * ROWS * k)
        name = l1b_filename(time, 1, k + 1)
        part = L1BGranule(attrs={**l1b.attrs, "local_granule_id": name}, root=l1b.root.isel(steps),
                          bands={b: ds.isel(steps) for b, ds in l1b.bands.items()})
        write_l1b(out / name, part)
        paths.append(out / name)
        for product, granule in l2.items():
            l2_name = l2_filename(product, time, 1, k + 1)
            groups = {g: ds.isel({d: v for d, v in steps.items() if d in ds.dims}) for g, ds in granule.groups.items()}
            write_l2(out / l2_name, L2Granule(product, {**granule.attrs, "local_granule_id": l2_name}, groups))
    return paths


def make_probe_granules(root: Path) -> ProbeGranules:
    """Write the probe granules (:data:`SCAN_GRANULES` of one scan, seed :data:`SEED`) under ``root``."""
    granules = ProbeGranules(root / "train", root / "heldout")
    granules.train.mkdir()
    granules.heldout.mkdir()
    write_scan([granules.train] * (SCAN_GRANULES - 1) + [granules.heldout], SEED)
    return granules


@pytest.fixture(scope="session")
def probe_granules(tmp_path_factory: pytest.TempPathFactory) -> ProbeGranules:
    """The simulated training and held-out granules."""
    return make_probe_granules(tmp_path_factory.mktemp("probe_granules"))


@pytest.fixture(scope="session")
def probed_model(probe_granules: ProbeGranules, tmp_path_factory: pytest.TempPathFactory) -> ProbedModel:
    """The committed spectral model with its probes (copied, so tests cannot change the committed files)."""
    model = shutil.copytree(SPECTRAL_MODEL, tmp_path_factory.mktemp("probed") / SPECTRAL_MODEL.name)
    art = load_model(model)
    return ProbedModel(model, load_probes(art).metrics, probe_granules, art.sha256)


@pytest.fixture(scope="session")
def probe_store(probed_model: ProbedModel, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The held-out granule compressed with the probed model (radiance_error kept)."""
    granule = next(probed_model.granules.heldout.glob("TEMPO_RAD_L1_*.nc"))
    store = tmp_path_factory.mktemp("probe_store") / "granule.zarr"
    compress_granule(granule, store, model=probed_model.path, progress=False)
    return store
