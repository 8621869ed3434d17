"""How the netCDF writer compresses: deflate levels 0..9 (decompress --deflate), chunks deflated in parallel and written
with h5py that netCDF4 reads back bitwise, HDF5's shuffle reproduced, failures half-way leaving nothing."""

from __future__ import annotations

import zlib
from pathlib import Path

import h5py
import netCDF4
import numpy as np
import pytest
from helpers_cli import assert_one_line_error, run_cli
from helpers_netcdf import assert_same_dataset

import tempocodec.granule.h5chunks as h5chunks
from tempocodec.errors import TempocodecError
from tempocodec.granule.h5chunks import shuffle
from tempocodec.granule.l1b import read_l1b, write_l1b
from tempocodec.granule.netcdf_write import on_write
from tempocodec.runtime.batch import decompress_stores
from tempocodec.runtime.store import compress_granule, decompress_store
from tempocodec.simulator import write_simulated

pytest_plugins = ["tiny_model_fixture"]  # the session fixture tiny_models

UV = "band_290_490_nm"
SPECTRAL = ("radiance", "radiance_error", "pixel_quality_flag")  # (mirror_step, xtrack, spectral_channel)


@pytest.fixture(scope="module")
def granule(tmp_path_factory) -> Path:
    """A 20×30 simulated UV granule."""
    return write_simulated(tmp_path_factory.mktemp("granule"), 20, 30, seed=4, bands="uv")[0]


@pytest.fixture(scope="module")
def store(granule, tiny_models, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("store") / "g.zarr"
    compress_granule(granule, out, model="tiny1028", progress=False)
    return out


def _assert_same_file(a: Path, b: Path) -> None:
    """Both L1B files hold the same root and band groups, bitwise."""
    ga, gb = read_l1b(a), read_l1b(b)
    assert_same_dataset(ga.root, gb.root, "/")
    assert list(ga.bands) == list(gb.bands)
    for band in ga.bands:
        assert_same_dataset(ga.bands[band], gb.bands[band], band)


def _filters(path: Path, name: str) -> tuple[dict, object]:
    """netCDF4's view of one band variable's filters and chunking."""
    with netCDF4.Dataset(path) as nc:
        var = nc[UV][name]
        return var.filters(), var.chunking()


@pytest.mark.parametrize("deflate", [None, 0, 1, 6])
def test_each_level_reads_back_bitwise_and_shows_on_disk(granule, tmp_path, deflate):
    out = tmp_path / "out.nc"
    write_l1b(out, read_l1b(granule), deflate=deflate)
    _assert_same_file(granule, out)
    level = 1 if deflate is None else deflate
    for name in (*SPECTRAL, "latitude", "nominal_wavelength"):
        filters, chunking = _filters(out, name)
        assert (filters["zlib"], filters["shuffle"], filters["complevel"]) == (level > 0, level > 0, level), name
        if level == 0:
            assert chunking == "contiguous", name
    for name in SPECTRAL:
        assert _filters(out, name)[1] == ("contiguous" if level == 0 else [1, 30, 1028])


def test_default_keeps_the_original_files_layout(granule, tmp_path):
    """The real files' deflate 1 + shuffle, one mirror step per chunk, written with h5py chunk by chunk: HDF5's
    own filters (h5py's library, netCDF4's) decode what was stored."""
    out = tmp_path / "out.nc"
    write_l1b(out, read_l1b(granule))
    with netCDF4.Dataset(granule) as src, h5py.File(out) as f:
        src.set_auto_maskandscale(False)
        for name in SPECTRAL:
            given = src[UV][name][...]
            dataset = f[f"{UV}/{name}"]
            assert dataset.compression == "gzip" and dataset.compression_opts == 1 and dataset.shuffle
            assert dataset.chunks == (1, 30, 1028) and dataset.fillvalue == src[UV][name]._FillValue
            assert dataset[...].tobytes() == given.tobytes()
            mask, stored = dataset.id.read_direct_chunk((3, 0, 0))
            assert mask == 0 and zlib.decompress(stored) == shuffle(given[3]).tobytes()


@pytest.mark.parametrize("dtype", ["int16", "float32", "float64", "uint8"])
def test_shuffle_is_hdf5s(tmp_path, dtype):
    values = np.random.default_rng(0).integers(0, 10_000, (2, 5, 7)).astype(dtype)
    with h5py.File(tmp_path / "s.h5", "w") as f:
        f.create_dataset("x", data=values, chunks=(1, 5, 7), shuffle=True)
        for step in range(2):
            assert f["x"].id.read_direct_chunk((step, 0, 0))[1] == shuffle(values[step]).tobytes()


@pytest.mark.parametrize("level", [-1, 10, 1.5, True, "1"])
def test_a_bad_level_is_one_line_and_writes_nothing(granule, store, tmp_path, level):
    out = tmp_path / "out.nc"
    with pytest.raises(TempocodecError, match="deflate level must be an integer from 0") as err:
        write_l1b(out, read_l1b(granule), deflate=level)
    assert "\n" not in str(err.value)
    with pytest.raises(TempocodecError, match="deflate level"):
        decompress_store(store, out, progress=False, deflate=level)
    assert list(tmp_path.iterdir()) == []


def test_cli_deflate(store, tmp_path):
    for level in ("0", "3"):
        out = tmp_path / f"d{level}.nc"
        assert run_cli("decompress", store, out, "--deflate", level, "--quiet").exit_code == 0
        assert _filters(out, "radiance")[0]["complevel"] == int(level)
    _assert_same_file(tmp_path / "d0.nc", tmp_path / "d3.nc")
    assert_one_line_error(run_cli("decompress", store, tmp_path / "x.nc", "--deflate", "10"), "deflate level", "10")
    assert_one_line_error(run_cli("decompress", store, store, tmp_path / "many", "--deflate", "-1"), "deflate level")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d0.nc", "d3.nc"]


def test_batch_passes_the_level_on(store, tmp_path):
    report = decompress_stores([store], tmp_path / "back", progress=False, deflate=0)
    assert report.ok
    written = Path(report.outcomes[0].output)
    filters, chunking = _filters(written, "radiance")
    assert not filters["zlib"] and chunking == "contiguous"


def test_a_chunk_failing_half_way_keeps_the_old_file(granule, tmp_path, monkeypatch):
    out = tmp_path / "out.nc"
    write_l1b(out, read_l1b(granule), deflate=0)
    before = out.read_bytes()
    calls: list[int] = []
    encode = h5chunks.encode_chunk

    def fail_on_the_fifth(chunk, level):
        calls.append(level)
        if len(calls) == 5:
            raise OSError(28, "No space left on device")
        return encode(chunk, level)

    monkeypatch.setattr(h5chunks, "encode_chunk", fail_on_the_fifth)
    with pytest.raises(TempocodecError, match=f"{out}: cannot write: .*No space left on device"):
        write_l1b(out, read_l1b(granule))
    assert out.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["out.nc"]


@pytest.mark.parametrize("deflate", [0, 1])
def test_the_writer_reports_the_bytes_of_every_block_it_writes(granule, tmp_path, deflate):
    """What decompress's progress bar counts (MB of variables): each block once, through both writers."""
    written: list[int] = []
    source = read_l1b(granule)
    with on_write(written.append):
        write_l1b(tmp_path / "out.nc", source, deflate=deflate)
    sizes = [v.nbytes for ds in (source.root, *source.bands.values()) for v in ds.variables.values()]
    assert written and min(written) > 0
    assert 0.9 * sum(sizes) <= sum(written) <= sum(sizes)
    count = len(written)
    write_l1b(tmp_path / "quiet.nc", source, deflate=deflate)  # outside the block nothing is called
    assert len(written) == count
