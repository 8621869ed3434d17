"""Granules from fsspec URLs and file objects; stores as zip files, fsspec URLs and zarr store objects."""

import shutil
import zipfile
from pathlib import Path

import fsspec
import numpy as np
import pytest
import xarray as xr
import zarr
from helpers_cli import assert_one_line_error, run_cli
from zarr.storage import ZipStore

from tempocodec.errors import TempocodecError
from tempocodec.runtime.query import query_store
from tempocodec.runtime.store import compress_granule, decompress_store, open_store, store_info
from tempocodec.runtime.verify import verify_store
from tempocodec.simulator import write_simulated

pytest_plugins = ["tiny_model_fixture", "probe_fixture"]

MODEL = "tiny1028"
UV = "band_290_490_nm"


@pytest.fixture(scope="module")
def granule(tmp_path_factory) -> Path:
    return write_simulated(tmp_path_factory.mktemp("remote"), 24, 40, seed=11, bands="uv")[0]


@pytest.fixture(scope="module")
def local_store(granule, tiny_models, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("local") / "granule.zarr"
    compress_granule(granule, out, model=MODEL, progress=False)
    return out


def zipped(store: Path, dst: Path) -> Path:
    """The store zipped as it is (directory entries included, as ``zip -r`` makes them)."""
    with zipfile.ZipFile(dst, "w", zipfile.ZIP_STORED) as zf:
        for path in sorted(store.rglob("*")):
            zf.write(path, path.relative_to(store).as_posix() + ("/" if path.is_dir() else ""))
    return dst


def radiance(store) -> np.ndarray:
    return open_store(store, UV)["radiance"].values


# --------------------------------------------------------------------------------------------------- granules


def test_granule_from_urls_and_file_objects_gives_the_same_store(granule, local_store, tiny_models, tmp_path):
    memory_url = f"memory://remote-test/{granule.name}"
    with fsspec.open(memory_url, "wb") as f:
        f.write(granule.read_bytes())
    expected = radiance(local_store)
    with fsspec.open(f"file://{granule}", "rb") as fsspec_file, granule.open("rb") as plain_file:
        sources = {"file_url": f"file://{granule}", "memory_url": memory_url, "fsspec_file": fsspec_file,
                   "plain_file": plain_file}
        for name, src in sources.items():
            out = tmp_path / f"{name}.zarr"
            compress_granule(src, out, model=MODEL, progress=False)
            assert zarr.open_group(out, mode="r").attrs["tempocodec"]["source"] == granule.name, name
            np.testing.assert_array_equal(radiance(out), expected, err_msg=name)
    assert not list(Path(tmp_path).glob(".*partial*"))


def test_remote_granule_errors_are_one_line(tiny_models, tmp_path):
    cases = {"memory://remote-test/absent.nc": "memory://remote-test/absent.nc: no such file",
             "nosuch://x/granule.nc": "not a URL fsspec can open",
             "s3://bucket/granule.nc": "needs a package that is not installed"}
    for url, message in cases.items():
        with pytest.raises(TempocodecError, match=message):
            compress_granule(url, tmp_path / "o.zarr", model=MODEL, progress=False)
    with pytest.raises(TempocodecError, match="int is not a granule"):
        compress_granule(42, tmp_path / "o.zarr", model=MODEL, progress=False)  # type: ignore[arg-type]
    with fsspec.open("memory://remote-test/junk.nc", "wb") as f:
        f.write(b"not netCDF" * 100)
    with pytest.raises(TempocodecError, match=r"^memory://remote-test/junk.nc: not a readable netCDF-4"):
        compress_granule("memory://remote-test/junk.nc", tmp_path / "o.zarr", model=MODEL, progress=False)
    assert_one_line_error(run_cli("compress", "nosuch://x/g.nc", tmp_path / "o.zarr", "--model", MODEL, "--quiet"),
                          "not a URL fsspec can open")
    assert not (tmp_path / "o.zarr").exists()


def test_cli_compresses_a_file_url(granule, local_store, tiny_models, tmp_path):
    out = tmp_path / "cli.zarr"
    result = run_cli("compress", f"file://{granule}", out, "--model", MODEL, "--quiet")
    assert result.exit_code == 0, result.output
    np.testing.assert_array_equal(radiance(out), radiance(local_store))


# --------------------------------------------------------------------------------------------------- stores


def test_readers_take_zip_files_urls_and_store_objects(local_store, tmp_path):
    archive = zipped(local_store, tmp_path / "granule.zarr.zip")
    expected = store_info(local_store)
    targets = {"zip path": archive, "zip url": f"zip::file://{archive}", "file url": f"file://{local_store}",
               "ZipStore": ZipStore(archive, mode="r"), "mapper": fsspec.get_mapper(f"file://{local_store}")}
    for name, target in targets.items():
        info = store_info(target)
        assert [(v.name, v.stored_bytes) for v in info.variables] == \
            [(v.name, v.stored_bytes) for v in expected.variables], name
        assert info.total_stored == expected.total_stored, name  # the zip adds no bytes to the objects themselves
        assert verify_store(target, progress=False).ok, name
        np.testing.assert_array_equal(radiance(target), radiance(local_store), err_msg=name)
    back = decompress_store(f"zip::file://{archive}", tmp_path / "back.nc", progress=False)
    with xr.open_dataset(back, group=UV, mask_and_scale=False) as ds:
        np.testing.assert_array_equal(ds["radiance"].values, radiance(local_store))


def test_stored_sizes_do_not_count_a_sibling_array(local_store):
    """``radiance`` is a prefix of ``radiance_error``: a store's size per array must not add the other's objects."""
    info = {v.name: v.stored_bytes for v in store_info(local_store).variables if v.group == UV}
    on_disk = sum(f.stat().st_size for f in (local_store / UV / "radiance").rglob("*")
                  if f.is_file() and f.name not in ("zarr.json", ".zarray", ".zattrs"))
    assert info["radiance"] == on_disk


def test_store_url_errors_are_one_line(local_store, granule, tmp_path):
    cases = {"nosuch://x.zarr": "not a store URL fsspec can open", "file:///no/such.zarr": "no such store",
             f"zip::file://{granule}": "not a store URL fsspec can open .BadZipFile",
             "s3://bucket/x.zarr": "needs a package that is not installed"}
    for url, message in cases.items():
        with pytest.raises(TempocodecError, match=message):
            store_info(url)
        assert_one_line_error(run_cli("info", url), message.split(" .")[0])
    with pytest.raises(TempocodecError, match="int is not a store"):
        store_info(42)  # type: ignore[arg-type]


def test_query_and_info_cli_on_a_zip_url(probed_model, probe_store, tmp_path):
    archive = zipped(probe_store, tmp_path / "probe.zarr.zip")
    url = f"zip::file://{archive}"
    expected = query_store(probe_store, model=probed_model.path)
    got = query_store(url, model=probed_model.path)
    np.testing.assert_array_equal(got["no2"].values, expected["no2"].values)
    assert got.attrs["source"] == "probe.zarr.zip"
    out = tmp_path / "p.nc"
    result = run_cli("query", url, "-o", out, "--model", probed_model.path, "--quiet")
    assert result.exit_code == 0 and result.output == "", result.output
    info = run_cli("info", url, "--json")
    assert info.exit_code == 0 and '"store": "zip::file://' in info.output
    shutil.rmtree(tmp_path / "unused", ignore_errors=True)
