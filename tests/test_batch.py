"""Many granules and stores at once (tempocodec.runtime.batch, the CLI's batch form), on a 2-worker LocalCluster."""

from pathlib import Path

import numpy as np
import pytest
from distributed import Client, LocalCluster, get_task_stream
from helpers_cli import assert_one_line_error, run_cli

from tempocodec.errors import TempocodecError
from tempocodec.runtime.batch import compress_granules, decompress_stores, expand_inputs, query_stores
from tempocodec.runtime.query import query_store
from tempocodec.runtime.store import compress_granule, open_store
from tempocodec.simulator import write_simulated

pytest_plugins = ["tiny_model_fixture", "probe_fixture"]

MODEL = "tiny1028"
UV = "band_290_490_nm"
BAD = "TEMPO_RAD_L1_V03_20250101T000000Z_S009G01.nc"


@pytest.fixture(scope="module")
def granules(tmp_path_factory) -> Path:
    """A directory of 3 small simulated UV granules (and their L2 files) and one that is not netCDF at all."""
    root = tmp_path_factory.mktemp("granules")
    write_simulated(root, 20, 30, seed=21, scenes=3, bands="uv")
    (root / BAD).write_bytes(b"not a granule" * 50)
    return root


@pytest.fixture(scope="module")
def client(tiny_models):
    """A LocalCluster of 2 single-threaded worker processes (started after TEMPOCODEC_MODELS is set)."""
    with LocalCluster(n_workers=2, processes=True, threads_per_worker=1, dashboard_address=None) as cluster, \
            Client(cluster) as c:
        yield c


def good(root: Path) -> list[Path]:
    return sorted(p for p in root.glob("TEMPO_RAD_L1_*.nc") if p.name != BAD)


def test_compress_and_decompress_granules_on_a_cluster(granules, client, tmp_path):
    out = tmp_path / "stores"
    report = compress_granules([granules], out, client=client, model=MODEL, progress=False)
    assert [Path(o.source).name for o in report.outcomes] == sorted(p.name for p in granules.glob("TEMPO_RAD_L1_*.nc"))
    assert [Path(o.source).name for o in report.failed] == [BAD]
    error = report.failed[0].error
    assert error is not None and "\n" not in error and BAD in error and "not a readable netCDF-4" in error
    assert sorted(p.name for p in out.iterdir()) == sorted(p.stem + ".zarr" for p in good(granules))  # no partials
    first = good(granules)[0]
    with get_task_stream(client) as stream:  # the client is dask's default now: a single granule stays local
        serial = compress_granule(first, tmp_path / "serial.zarr", model=MODEL, progress=False)
    assert stream.data == []
    np.testing.assert_array_equal(open_store(out / f"{first.stem}.zarr", UV)["radiance"].values,
                                  open_store(serial.path, UV)["radiance"].values)
    raw, stored = next(o.value for o in report.outcomes if o.source == str(first))
    assert (raw, stored) == (serial.total_raw, serial.total_stored)

    back = decompress_stores([out], tmp_path / "back", client=client, progress=False)
    assert report.ok is False and back.ok
    assert sorted(p.name for p in (tmp_path / "back").iterdir()) == sorted(p.name for p in good(granules))


def test_cli_batch_on_a_scheduler_address_reports_the_bad_granule(granules, client, tmp_path):
    out = tmp_path / "out"
    result = run_cli("compress", *good(granules), granules / BAD, out, "--model", MODEL,
                     "--scheduler", client.scheduler.address)
    assert result.exit_code == 1, result.output
    failed = [line for line in result.output.splitlines() if line.startswith("failed:")]
    assert len(failed) == 1 and BAD in failed[0], result.output
    assert "compressed 3 of 4 granules into" in result.output and "granules/minute" in result.output
    assert "Traceback" not in result.output
    assert sorted(p.suffix for p in out.iterdir()) == [".zarr"] * 3


def test_cli_batch_in_process_with_a_glob_and_the_single_form_unchanged(granules, tiny_models, tmp_path):
    out = tmp_path / "glob"
    result = run_cli("compress", str(granules / "TEMPO_RAD_L1_*S001G0[12].nc"), out, "--model", MODEL, "--quiet")
    assert result.exit_code == 0 and result.output == "", result.output
    assert len(list(out.iterdir())) == len([p for p in good(granules) if p.stem[-2:] in ("01", "02")]) > 0
    single = tmp_path / "one.zarr"
    result = run_cli("compress", good(granules)[0], single, "--model", MODEL, "--quiet")
    assert result.exit_code == 0 and (single / "zarr.json").is_file()  # OUT is the store itself
    result = run_cli("decompress", single, tmp_path / "one.nc", "--quiet")
    assert result.exit_code == 0 and (tmp_path / "one.nc").is_file()
    result = run_cli("decompress", out, tmp_path / "back", "--quiet")  # a directory of stores: the batch form
    assert result.exit_code == 0 and len(list((tmp_path / "back").glob("*.nc"))) == len(list(out.iterdir()))


def test_query_over_many_stores(probed_model, probe_store, tmp_path):
    report = query_stores([probe_store, tmp_path / "missing.zarr"], "no2", UV, model=probed_model.path, progress=False)
    assert [o.error is None for o in report.outcomes] == [True, False]
    assert "missing.zarr: no such store" in (report.failed[0].error or "")
    expected = query_store(probe_store, "no2", model=probed_model.path)
    np.testing.assert_array_equal(report.outcomes[0].value["no2"].values, expected["no2"].values)
    copy = tmp_path / "copy.zarr"
    import shutil

    shutil.copytree(probe_store, copy)
    result = run_cli("query", probe_store, copy, "-o", tmp_path / "products", "--model", probed_model.path, "--quiet")
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (tmp_path / "products").iterdir()) == ["copy.products.nc", "granule.products.nc"]


def test_inputs_and_bad_batches(granules, tmp_path):
    found = expand_inputs([granules, granules / "TEMPO_RAD_L1_*.nc"], "TEMPO_RAD_L1_*.nc")
    assert found == sorted(granules.glob("TEMPO_RAD_L1_*.nc"))  # each once
    with pytest.raises(TempocodecError, match="no file matches"):
        expand_inputs([str(tmp_path / "*.nc")], "TEMPO_RAD_L1_*.nc")
    with pytest.raises(TempocodecError, match="a directory with no TEMPO_RAD_L1_"):
        expand_inputs([tmp_path], "TEMPO_RAD_L1_*.nc")
    twin = tmp_path / "twin"
    twin.mkdir()
    (twin / good(granules)[0].name).write_bytes(b"")
    with pytest.raises(TempocodecError, match="would both be written to"):
        compress_granules([good(granules)[0], twin / good(granules)[0].name], tmp_path / "o", progress=False)
    assert_one_line_error(run_cli("compress", good(granules)[0], tmp_path / "o", "--scheduler", "tcp://127.0.0.1:1"),
                          "--scheduler tcp://127.0.0.1:1: cannot connect")
    assert_one_line_error(run_cli("compress", *good(granules)[:2], granules / BAD), "exists and is not a directory")
