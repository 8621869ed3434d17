"""Tests for tempocodec.runtime.streaming: a band group written stripe by stripe is the store xarray writes in one
go, byte for byte, in a fraction of the memory; and the memory settings of the store I/O and the CLI."""

import threading
import tracemalloc
from pathlib import Path

import dask
import dask.array as da
import numcodecs
import numpy as np
import pytest
import xarray as xr
from click.testing import CliRunner
from zarr.codecs import BloscCodec

import tempocodec.cli as cli
from tempocodec.errors import TempocodecError
from tempocodec.granule.netcdf import materialise
from tempocodec.runtime.radiance_coding import band_stripes
from tempocodec.runtime.streaming import (
    MAX_WORKERS,
    Sink,
    Stripes,
    _schedule,
    bounded_workers,
    stream,
    to_zarr,
    worker_count,
    write_group,
)

CHUNKS = {"mirror_step": 64, "xtrack": 64}
"""The store's chunking of every variable but the spectral ones, v2 (and v3 without shards)."""
FILL = np.float32(-9.96921e36)


def band(rows: int, cols: int, channels: int, data=None) -> xr.Dataset:
    """A band group like the reader's: spectral float32 and int16 variables (dask, one mirror step per chunk; float
    ones with NaN and fill values), a 2-D variable, a per-channel one and the coordinates."""
    shape = (rows, cols, channels)
    if data is None:
        values = np.random.default_rng(3).random(shape, dtype=np.float32)
        values[5, 7, :3] = np.nan
        values[70, :9, 4] = FILL
        data = da.from_array(values, chunks=(1, cols, channels))
    flags = da.from_array(np.arange(np.prod(shape), dtype=np.int16).reshape(shape) % 7, chunks=(1, cols, channels))
    dims = ("mirror_step", "xtrack", "spectral_channel")
    return xr.Dataset(
        {"radiance": (dims, data, {"units": "photons/s/cm^2/nm/sr"}),
         "radiance_error": (dims, data * np.float32(0.01)),
         "pixel_quality_flag": (dims, flags),
         "latitude": (dims[:2], da.from_array(np.linspace(20, 50, rows * cols, dtype=np.float32).reshape(rows, cols))),
         "nominal_wavelength": (dims[1:], np.ones((cols, channels), np.float32))},
        coords={"mirror_step": np.arange(rows, dtype=np.int32), "xtrack": np.arange(cols, dtype=np.int32)},
        attrs={"title": "band"},
    )


def encoding(ds: xr.Dataset, zarr_format: int, shards: tuple[int, ...] | None = None) -> dict[str, dict]:
    """Lossless encodings as the store gives them: Blosc-zstd, fill values, 3-D variables in 64×64 chunks (inside
    ``shards`` for the radiance, when given)."""
    out = {}
    for name, var in ds.variables.items():
        blosc = (BloscCodec(cname="zstd", clevel=5, shuffle="shuffle", typesize=var.dtype.itemsize) if zarr_format == 3
                 else numcodecs.Blosc(cname="zstd", clevel=5, shuffle=numcodecs.Blosc.SHUFFLE))
        enc = {"compressors": [blosc], "_FillValue": FILL if var.dtype == np.float32 else None}
        if var.ndim == 3:
            enc["chunks"] = (64, 64, var.shape[2])
        out[name] = enc
    if shards is not None:
        out["radiance"]["shards"] = shards
    return out


def files(path: Path) -> dict[str, bytes]:
    """Every file under ``path`` by relative name."""
    return {str(f.relative_to(path)): f.read_bytes() for f in sorted(path.rglob("*")) if f.is_file()}


@pytest.mark.parametrize("zarr_format, shards", [(3, None), (3, (64, 128, 16)), (2, None)])
def test_a_group_written_stripe_by_stripe_is_the_group_xarray_writes(tmp_path, zarr_format, shards):
    ds = band(131, 200, 16)
    chunks = {"mirror_step": 64, "xtrack": 128 if shards else 64}  # the store's: one shard, or one chunk, across
    to_zarr(ds.chunk(chunks), tmp_path / "plain.zarr", "band", encoding(ds, zarr_format, shards), zarr_format, mode="w")
    write_group(ds, tmp_path / "streamed.zarr", "band", encoding(ds, zarr_format, shards), zarr_format, chunks,
                column=chunks["xtrack"])
    plain, streamed = files(tmp_path / "plain.zarr"), files(tmp_path / "streamed.zarr")
    assert plain.keys() == streamed.keys()
    assert [k for k in plain if plain[k] != streamed[k]] == []
    back = xr.open_zarr(tmp_path / "streamed.zarr", group="band", mask_and_scale=False, consolidated=False)
    assert np.isnan(ds["radiance"].values[5, 7, 0]) and back["radiance"].values[5, 7, 0] == FILL  # NaN stored as the fill
    np.testing.assert_array_equal(back["pixel_quality_flag"].values, ds["pixel_quality_flag"].values)


def test_writing_never_holds_more_than_two_stripes_and_their_copies(tmp_path):
    rows, cols, channels = 256, 512, 64
    stripe = 64 * cols * channels * 4  # 8.4 MB of float32
    lazy = da.random.default_rng(0).random((rows, cols, channels), chunks=(1, cols, channels), dtype=np.float32)
    ds = band(rows, cols, channels, data=lazy).drop_vars(["radiance_error", "pixel_quality_flag"])
    tracemalloc.start()
    try:
        write_group(ds, tmp_path / "streamed.zarr", "band", encoding(ds, 3), 3, CHUNKS, column=64)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 2.75 * stripe, peak  # of 4 stripes in all: one being written, the next read meanwhile


def test_materialise_fills_one_buffer_chunk_by_chunk():
    values = np.arange(6 * 5 * 4, dtype=np.float32).reshape(6, 5, 4)
    np.testing.assert_array_equal(materialise(da.from_array(values, chunks=(1, 5, 4))), values)
    assert materialise(values) is values
    lazy = da.ones((64, 256, 256), chunks=(1, 256, 256), dtype=np.float32)  # 16.8 MB
    tracemalloc.start()
    try:
        out = materialise(lazy)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert out.all() and peak < 1.25 * out.nbytes, peak


def test_store_io_threads_follow_dask_up_to_a_cap():
    with dask.config.set(num_workers=1):
        assert worker_count() == 1
    with dask.config.set(num_workers=64):
        assert worker_count() == MAX_WORKERS
        with bounded_workers():
            assert dask.config.get("num_workers") == MAX_WORKERS


def test_the_cli_caps_malloc_arenas_unless_the_environment_does(monkeypatch):
    calls = []

    class Libc:
        def mallopt(self, option, value):
            calls.append((option, value))
            return 1

    monkeypatch.setattr(cli.sys, "platform", "linux")
    monkeypatch.setattr(cli.ctypes, "CDLL", lambda name: Libc())
    monkeypatch.delenv("MALLOC_ARENA_MAX", raising=False)
    CliRunner().invoke(cli.main, ["info", "/nonexistent/store.zarr"])
    assert calls == [(cli.M_ARENA_MAX, cli.MALLOC_ARENAS)]
    monkeypatch.setenv("MALLOC_ARENA_MAX", "4")
    CliRunner().invoke(cli.main, ["info", "/nonexistent/store.zarr"])
    assert len(calls) == 1


class _Failing:
    """A (rows, 4, 2) array whose rows from ``bad`` on cannot be read."""

    def __init__(self, rows: int, bad: int) -> None:
        self.shape, self.bad = (rows, 4, 2), bad

    def __getitem__(self, key):
        if key.stop > self.bad:
            raise TempocodecError("stripe unreadable")
        return np.zeros((key.stop - key.start, 4, 2), np.float32)


def _recording(needs: tuple[str, ...], log: list) -> Sink:
    return Sink(needs, lambda rows, blocks: log.append((needs, rows.start, {n: b.copy() for n, b in blocks.items()})))


def test_stream_gives_every_sink_each_stripe_of_what_it_needs_in_order():
    a = np.arange(150 * 3 * 2, dtype=np.float32).reshape(150, 3, 2)
    stripes = Stripes({"a": a, "b": -a})
    first = stripes.first("a")  # read early (the compress sample) and handed to the stream, not read again
    log: list = []
    stream(stripes, [_recording(("a",), log), _recording(("b", "a"), log), _recording(("b",), log)])
    assert [(needs, start) for needs, start, _ in log] == [
        (needs, start) for start in (0, 64, 128) for needs in (("a",), ("b", "a"), ("b",))]
    for needs, start, blocks in log:
        for name in needs:
            np.testing.assert_array_equal(blocks[name], (a if name == "a" else -a)[start : start + 64])
    assert log[0][2]["a"].shape == first.shape and "a" not in stripes._kept


def test_stream_raises_a_read_or_sink_error_and_leaves_no_reader_behind():
    with pytest.raises(TempocodecError, match="stripe unreadable"):
        stream(Stripes({"a": _Failing(200, bad=100)}), [Sink(("a",), lambda rows, blocks: None)])

    def broken(rows, blocks):
        raise RuntimeError("sink failed")

    with pytest.raises(RuntimeError, match="sink failed"):
        stream(Stripes({"a": np.zeros((300, 4, 2), np.float32)}), [Sink(("a",), broken)])
    assert not [t for t in threading.enumerate() if t.name == "tempocodec-stripe-reader"]


def test_the_schedule_drops_each_block_after_its_last_sink():
    sinks = [Sink(("a",), print), Sink(("b",), print), Sink(("a", "c"), print)]
    steps, peak = _schedule(["a", "b", "c"], sinks)
    assert [([sinks.index(s) for s in ready], sorted(done)) for ready, done in steps] == [
        ([0], []), ([1], ["b"]), ([2], ["a", "c"])]
    assert peak == 2  # "a" kept for the last sink, "b" dropped before "c" arrives


def test_a_bound_reads_the_stored_radiance_error_once_and_the_raw_one_when_the_store_rounds_it():
    ds = band(80, 20, 8)
    stripes = band_stripes(ds, ds["radiance_error"])
    assert stripes.noise == "radiance_error" and "noise" not in stripes.arrays  # one array, streamed once
    rounded = ds.assign(radiance_error=ds["radiance_error"] * np.float32(1.0))  # a new array, as --lossless-aux makes
    stripes = band_stripes(rounded, ds["radiance_error"])
    assert stripes.noise == "noise" and stripes.arrays["noise"] is ds["radiance_error"].data
