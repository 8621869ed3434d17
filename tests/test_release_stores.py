"""Stores written by earlier releases (tests/fixture/stores/<release>/, by make_release_stores.py under the release)
decode with the current code to what the release itself decoded: through xarray and through decompress.

Tolerance: invalid elements must be exactly where the release put the fill value; decoded values may differ from
the release's in the last float bits (ONNX Runtime and numpy float32 results vary between versions and CPUs), so
they are compared with a relative 1e-5 (tests/test_golden.py says more).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
from tiny_model import FIXTURE

from tempocodec.runtime.store import decompress_store, store_info

pytest_plugins = ["tiny_model_fixture"]  # the session fixture tiny_models: the committed tiny1028 by name

RELEASES = sorted(p for p in (FIXTURE / "stores").iterdir() if (p / "release.json").is_file())
UV = "band_290_490_nm"
RTOL = 1e-5
STORES = [pytest.param(r / f"{fmt}.zarr", id=f"{r.name}-{fmt}") for r in RELEASES for fmt in ("v3", "v2")]


def assert_release_radiance(radiance: np.ndarray, release: Path) -> None:
    """``radiance`` (rows, cols, 1028) is what the release decoded: ``expected.npz`` of its directory."""
    expected = np.load(release / "expected.npz")
    invalid = expected["invalid"]
    assert radiance.dtype == np.float32 and radiance.shape == invalid.shape
    np.testing.assert_array_equal(radiance == expected["fill"], invalid)
    assert invalid.any() and not invalid.all()
    np.testing.assert_allclose(radiance[:, :, expected["channels"]], expected["radiance_subset"], rtol=RTOL, atol=0)
    valid_sum = np.where(invalid, 0.0, radiance.astype(np.float64)).sum(axis=2)
    np.testing.assert_allclose(valid_sum, expected["valid_sum"], rtol=RTOL, atol=0)


def test_there_are_release_stores_with_edge_tiles():
    assert RELEASES, "tests/fixture/stores holds no release"
    for release in RELEASES:
        facts = json.loads((release / "release.json").read_text())
        assert facts["rows"] % 64 and facts["cols"] % 64 and facts["cols"] > 64


@pytest.mark.parametrize("store", STORES)
def test_xarray_reads_a_release_store_as_the_release_did(tiny_models, store):
    with xr.open_zarr(store, group=UV, mask_and_scale=False) as ds:
        assert ds["radiance"].dims == ("mirror_step", "xtrack", "spectral_channel")
        radiance = ds["radiance"].values
    assert_release_radiance(radiance, store.parent)


@pytest.mark.parametrize("store", STORES)
def test_decompress_gives_a_release_store_back_as_the_release_did(tiny_models, tmp_path, store):
    info = store_info(store).radiance(UV)
    assert "tempocodec" in info.codec and info.ratio > 100
    back = decompress_store(store, tmp_path / "back.nc", progress=False)
    with xr.open_dataset(back, group=UV, mask_and_scale=False) as ds:
        radiance = ds["radiance"].values
    assert_release_radiance(radiance, store.parent)
