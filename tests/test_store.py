"""Tests for tempocodec.runtime.store and the compress / decompress / info commands, on small simulated granules."""

import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
import zarr
from click.testing import CliRunner
from helpers_cli import assert_one_line_error, run_cli
from tiny_model import model_variant

import tempocodec.runtime.store as store_module
from tempocodec.cli import main
from tempocodec.errors import TempocodecError
from tempocodec.granule.l1b import read_l1b, write_l1b
from tempocodec.runtime.artifacts import MODELS_ENV
from tempocodec.runtime.auxcodecs import BOUNDS
from tempocodec.runtime.auxcodecs import RADIANCE_ERROR_KEEPBITS as AUX_KEEPBITS
from tempocodec.runtime.store import compress_granule, decompress_store, open_store, store_info
from tempocodec.simulator import write_simulated

pytest_plugins = ["tiny_model_fixture"]  # the session fixture tiny_models

UV = "band_290_490_nm"
VIS = "band_540_740_nm"
MODEL = "tiny1028"


@pytest.fixture(scope="module")
def uv_granule(tmp_path_factory) -> Path:
    """A 131×200 simulated granule (UV band only): sides that are not multiples of 64, fill and flagged pixels."""
    paths = write_simulated(tmp_path_factory.mktemp("uv"), 131, 200, seed=7, bands="uv")
    return paths[0]


@pytest.fixture(scope="module")
def both_bands(tmp_path_factory) -> Path:
    """A small simulated granule with both bands."""
    return write_simulated(tmp_path_factory.mktemp("both"), 40, 70, seed=8, bands="all")[0]


@pytest.fixture(scope="module")
def v3_store(uv_granule, tiny_models, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("v3") / "granule.zarr"
    compress_granule(uv_granule, out, model=MODEL, progress=False)
    return out




def same_attrs(a: dict, b: dict) -> bool:
    """Equal keys, values and numpy dtypes."""
    return a.keys() == b.keys() and all(
        np.array_equal(np.asarray(a[k]), np.asarray(b[k])) and np.asarray(a[k]).dtype == np.asarray(b[k]).dtype for k in a)


def raw_group(path: Path, group: str | None) -> xr.Dataset:
    return xr.open_dataset(path, group=group, mask_and_scale=False, decode_times=False)


# --------------------------------------------------------------------------------------------------- layout


def test_store_layout_is_sharded_v3_with_original_dims_and_attributes(v3_store, uv_granule):
    root = zarr.open_group(v3_store, mode="r")
    meta = root.attrs["tempocodec"]
    assert meta["format"] == store_module.STORE_FORMAT and meta["source"] == uv_granule.name
    assert meta["bands"][UV]["radiance"] == "vae" and meta["bands"][UV]["model"] == MODEL
    radiance = root[f"{UV}/radiance"]
    assert radiance.shape == (131, 200, 1028)
    assert radiance.chunks == (64, 64, 1028) and radiance.shards == (64, 512, 1028)
    # a handful of shard objects, not one object per 64×64 tile
    shard_files = [f for f in (v3_store / UV / "radiance" / "c").rglob("*") if f.is_file()]
    assert len(shard_files) == 3
    source = raw_group(uv_granule, UV)
    opened = xr.open_zarr(v3_store, group=UV)
    assert opened.radiance.dims == ("mirror_step", "xtrack", "spectral_channel")
    assert opened.radiance.data.chunksize == (64, 64, 1028)
    attrs = dict(opened.radiance.attrs)
    assert attrs.pop("tempocodec_lossy").startswith(f"tempocodec.vae codec, model {MODEL}")
    assert attrs == {k: v for k, v in source.radiance.attrs.items() if k != "_FillValue"}


def test_radiance_ratio_and_summary(v3_store):
    summary = store_info(v3_store)
    radiance = summary.radiance(UV)
    assert "tempocodec.vae" in radiance.codec and radiance.raw_bytes == 131 * 200 * 1028 * 4
    assert radiance.ratio >= 900, radiance.ratio
    assert summary.total_stored == sum(f.stat().st_size for f in v3_store.rglob("*") if f.is_file())
    error = next(v for v in summary.variables if v.name == "radiance_error")
    assert error.codec.startswith("bitround") and error.bound == "rel <= 0.78%" and error.ratio > 5


# --------------------------------------------------------------------------------------------------- round trip


def test_decompress_gives_the_granule_back_in_tempo_layout(v3_store, uv_granule, tmp_path):
    back = decompress_store(v3_store, tmp_path / "back.nc", progress=False)
    for group in (None, UV):
        a, b = raw_group(uv_granule, group), raw_group(back, group)
        history = b.attrs.pop("history", "") if group is None else ""
        assert same_attrs(a.attrs, b.attrs), group
        assert group or ("compress " + uv_granule.name in history and "decompress" in history.splitlines()[-1])
        assert set(a.variables) == set(b.variables), group
        for name in a.variables:
            assert a[name].dtype == b[name].dtype and a[name].dims == b[name].dims, name
            note = b[name].attrs.pop("tempocodec_lossy", None)
            assert same_attrs(a[name].attrs, b[name].attrs), name
            lossy = name in BOUNDS and a[name].dtype.kind == "f"  # an integer terrain height stays exact
            assert (note is not None) == (name in ("radiance", "radiance_error") or lossy), name
            if lossy:
                error = np.abs(a[name].values.astype(np.float64) - b[name].values)
                assert error.max() <= BOUNDS[name].bound, name
            elif name not in ("radiance", "radiance_error"):
                np.testing.assert_array_equal(a[name].values, b[name].values, err_msg=name)
    a, b = raw_group(uv_granule, UV), raw_group(back, UV)
    fill = np.float32(a.radiance.attrs["_FillValue"])
    bad = (a.radiance.values == fill) | ~np.isfinite(a.radiance.values)
    assert bad.any() and (~bad).any()
    np.testing.assert_array_equal(b.radiance.values[bad], fill)
    # valid pixels are the codec's decode of the store, written unchanged
    decoded = xr.open_zarr(v3_store, group=UV, mask_and_scale=False).radiance.values
    np.testing.assert_array_equal(b.radiance.values, decoded)
    assert np.isfinite(b.radiance.values[~bad]).all()
    err_a, err_b = a.radiance_error.values, b.radiance_error.values
    ok = np.isfinite(err_a) & (np.abs(err_a) < 1e30)
    assert np.max(np.abs(err_b[ok] - err_a[ok]) / np.abs(err_a[ok])) <= 2.0 ** -(AUX_KEEPBITS + 1)
    np.testing.assert_array_equal(err_b[~ok], err_a[~ok])
    assert read_l1b(back).bands[UV].radiance.shape == (131, 200, 1028)


def test_zarr_v2_store_decodes_like_v3(v3_store, uv_granule, tmp_path):
    v2 = tmp_path / "v2.zarr"
    compress_granule(uv_granule, v2, model=MODEL, zarr_format=2, progress=False)
    assert zarr.open_group(v2, mode="r").metadata.zarr_format == 2
    a = open_store(v2, UV).radiance.values
    b = open_store(v3_store, UV).radiance.values
    np.testing.assert_array_equal(a, b)


@pytest.fixture(scope="module")
def small_uv(tmp_path_factory) -> Path:
    """A 40×70 simulated granule, UV band only."""
    return write_simulated(tmp_path_factory.mktemp("small"), 40, 70, seed=9, bands="uv")[0]


def respoiled(src: Path, dst: Path, fill: float | None, **attrs) -> tuple[Path, np.ndarray]:
    """``src`` rewritten with radiance ``_FillValue`` ``fill`` (None: TEMPO's) held by its invalid elements, a negative
    pixel, zero elements and radiance attributes ``attrs``; returns the file and what the rule makes invalid."""
    granule = read_l1b(src)
    ds = granule.bands[UV]
    values = ds.radiance.values.copy()
    old = np.float32(ds.radiance.attrs["_FillValue"])
    bad = (values == old) | ~np.isfinite(values)
    new = old if fill is None else np.float32(fill)
    values[bad] = new
    values[3, 3], values[5, 60, :9] = -5.0, 0.0
    bad[3, 3], bad[5, 60, :9] = True, True
    ds["radiance"] = (ds.radiance.dims, values, {**ds.radiance.attrs, "_FillValue": new, **attrs})
    granule.bands[UV] = ds
    write_l1b(dst, granule)
    return dst, bad


def assert_invalid_everywhere(store: Path, back: Path, bad: np.ndarray, fill: np.float32) -> np.ndarray:
    """Invalid elements are NaN through xarray and ``fill`` through raw zarr and in the decompressed file; valid ones
    are finite, positive and the same in all three. Returns the xarray values."""
    opened = xr.open_zarr(store, group=UV).radiance.values
    assert np.isnan(opened[bad]).all() and (opened[~bad] > 0).all()
    raw = zarr.open_group(store, mode="r")[f"{UV}/radiance"][:]
    nc = raw_group(back, UV).radiance
    assert np.float32(nc.attrs["_FillValue"]) == fill
    for values in (raw, nc.values):
        np.testing.assert_array_equal(values == fill, bad)
        np.testing.assert_array_equal(values[~bad], opened[~bad])
    return opened


@pytest.mark.parametrize("zarr_format", [3, 2])
def test_any_fill_value_and_non_positive_radiance_come_back_invalid(small_uv, tiny_models, tmp_path, zarr_format):
    decoded = {}
    for fill in (-1e30, 0.0, None):
        src, bad = respoiled(small_uv, tmp_path / f"{fill}.nc", fill)
        store, back = tmp_path / f"{fill}.zarr", tmp_path / f"{fill}-back.nc"
        compress_granule(src, store, model=MODEL, zarr_format=zarr_format, drop_radiance_error=True, progress=False)
        decompress_store(store, back, progress=False)
        fill32 = np.float32(raw_group(src, UV).radiance.attrs["_FillValue"])
        decoded[fill] = assert_invalid_everywhere(store, back, bad, fill32)
    # the invalid elements never reached the encoder: valid ones decode alike whatever the fill
    np.testing.assert_array_equal(decoded[-1e30], decoded[None])
    np.testing.assert_array_equal(decoded[0.0], decoded[None])


@pytest.mark.parametrize("zarr_format", [3, 2])
def test_radiance_outside_the_declared_valid_range_comes_back_invalid(small_uv, tiny_models, tmp_path, zarr_format):
    radiance = raw_group(small_uv, UV).radiance.values
    lo, hi = (np.float32(q) for q in np.nanquantile(np.where(np.abs(radiance) < 1e30, radiance, np.nan), [0.1, 0.9]))
    src, bad = respoiled(small_uv, tmp_path / "ranged.nc", None, valid_min=lo, valid_max=hi)
    bad |= (radiance < lo) | (radiance > hi)
    store = tmp_path / "ranged.zarr"
    compress_granule(src, store, model=MODEL, zarr_format=zarr_format, drop_radiance_error=True, progress=False)
    back = decompress_store(store, tmp_path / "ranged-back.nc", progress=False)
    opened = assert_invalid_everywhere(store, back, bad, np.float32(raw_group(src, UV).radiance.attrs["_FillValue"]))
    assert (opened[~bad] >= lo).all() and (opened[~bad] <= hi).all()
    assert raw_group(back, UV).radiance.attrs["valid_min"] == lo


def test_band_without_model_is_kept_losslessly(both_bands, tiny_models, tmp_path):
    out = tmp_path / "all.zarr"
    summary = compress_granule(both_bands, out, bands="all", model=MODEL, progress=False)
    assert summary.bands[VIS]["radiance"] == "lossless" and "no model" in summary.bands[VIS]["reason"]
    assert summary.bands[UV]["radiance"] == "vae"
    np.testing.assert_array_equal(open_store(out, VIS).radiance.values, raw_group(both_bands, VIS).radiance.values)


def test_drop_radiance_error(both_bands, tiny_models, tmp_path):
    out = tmp_path / "noerr.zarr"
    compress_granule(both_bands, out, model=MODEL, drop_radiance_error=True, progress=False)
    assert "radiance_error" not in open_store(out, UV)


def test_xarray_opens_the_store_in_a_fresh_process(v3_store, tiny_models):
    code = textwrap.dedent(f"""
        import sys, xarray as xr
        ds = xr.open_zarr({str(v3_store)!r}, group={UV!r})
        block = ds.radiance[:64, :64].values
        assert "torch" not in sys.modules
        import numpy as np; print(ds.radiance.dims, block.shape, float(np.nanmax(abs(block))) > 0)
    """)
    env = {**os.environ, MODELS_ENV: str(tiny_models.root)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert out.stdout.strip() == "('mirror_step', 'xtrack', 'spectral_channel') (64, 64, 1028) True"


# --------------------------------------------------------------------------------------------------- CLI, bad input


def test_cli_compress_info_decompress(both_bands, tiny_models, tmp_path):
    out = tmp_path / "cli.zarr"
    result = run_cli("compress", both_bands, out, "--model", MODEL, "--quiet")
    assert result.exit_code == 0, result.output
    info = run_cli("info", out)
    assert info.exit_code == 0 and "radiance through model tiny1028" in info.output
    assert "no 'Headline:' line" in info.output  # the tiny model's card has none
    back = tmp_path / "back.nc"
    result = run_cli("decompress", out, back, "--quiet")
    assert result.exit_code == 0 and back.is_file()


def test_existing_output_is_refused_and_kept(v3_store, uv_granule, tmp_path):
    target = tmp_path / "taken.zarr"
    target.mkdir()
    (target / "mine.txt").write_text("user data")
    result = run_cli("compress", uv_granule, target, "--model", MODEL, "--quiet")
    assert_one_line_error(result, str(target), "--overwrite")
    assert (target / "mine.txt").read_text() == "user data"
    taken = tmp_path / "taken.nc"
    taken.write_text("keep me")
    assert_one_line_error(run_cli("decompress", v3_store, taken, "--quiet"), "--overwrite")
    assert taken.read_text() == "keep me"


@pytest.mark.parametrize("old_format", ["2", "3"])
def test_overwrite_replaces_a_store(both_bands, tiny_models, tmp_path, old_format):
    target = tmp_path / "old.zarr"
    assert run_cli("compress", both_bands, target, "--model", MODEL, "--quiet", "--zarr-format", old_format).exit_code == 0
    (target / "stale.txt").write_text("old")
    result = run_cli("compress", both_bands, target, "--model", MODEL, "--quiet", "--drop-radiance-error", "--overwrite")
    assert result.exit_code == 0, result.output
    assert not (target / "stale.txt").exists() and "tempocodec" in store_info(target).radiance(UV).codec
    assert "radiance_error" not in open_store(target, UV)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["old.zarr"]


def test_interrupted_compress_leaves_nothing(both_bands, tiny_models, tmp_path, monkeypatch):
    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(store_module, "_finish", interrupt)
    with pytest.raises(KeyboardInterrupt):
        compress_granule(both_bands, tmp_path / "out.zarr", model=MODEL, progress=False)
    assert list(tmp_path.iterdir()) == []


def test_killed_compress_leaves_no_output_and_the_next_run_cleans_up(uv_granule, tiny_models, tmp_path):
    out = tmp_path / "killed.zarr"
    env = {**os.environ, MODELS_ENV: str(tiny_models.root)}
    proc = subprocess.Popen([sys.executable, "-m", "tempocodec", "compress", str(uv_granule), str(out), "--model", MODEL,
                             "--quiet"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while not list(tmp_path.glob(".killed.zarr.partial-*/band_290_490_nm")) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert proc.poll() is None, "compress ended before it could be killed mid-run"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert list(tmp_path.glob(".killed.zarr.partial-*")) and not out.exists()
    compress_granule(uv_granule, out, model=MODEL, progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["killed.zarr"]


def test_store_from_another_model_is_a_clear_error(v3_store, tiny_models, tmp_path):
    other = model_variant(tiny_models.full, tmp_path / "models" / MODEL, shift=0.3)
    code = f"from tempocodec.cli import main; main([\"decompress\", {str(v3_store)!r}, {str(tmp_path / 'x.nc')!r}, \"--quiet\"])"
    env = {**os.environ, MODELS_ENV: str(other.parent)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=False)
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and MODEL in lines[0] and "sha256" in lines[0], out.stderr
    assert not (tmp_path / "x.nc").exists()


@pytest.mark.parametrize("content", [b"", b"not a netCDF file at all", b"\x89HDF\r\n\x1a\n" + bytes(100)])
def test_compress_rejects_files_that_are_not_granules(content, tiny_models, tmp_path):
    bad = tmp_path / "TEMPO_RAD_L1_bad.nc"
    bad.write_bytes(content)
    assert_one_line_error(run_cli("compress", bad, tmp_path / "out.zarr", "--model", MODEL, "--quiet"), str(bad))
    assert not (tmp_path / "out.zarr").exists()


def test_truncated_granule_is_a_clear_error(both_bands, tiny_models, tmp_path):
    cut = tmp_path / both_bands.name
    cut.write_bytes(both_bands.read_bytes()[: both_bands.stat().st_size // 2])
    assert_one_line_error(run_cli("compress", cut, tmp_path / "out.zarr", "--model", MODEL, "--quiet"), cut.name)
    assert [p.name for p in tmp_path.iterdir()] == [cut.name]


def test_model_with_other_channel_count_is_refused(both_bands, tiny_models, tmp_path):
    assert_one_line_error(run_cli("compress", both_bands, tmp_path / "o.zarr", "--model", "tiny", "--quiet"),
                          "16 spectral channels")


def test_missing_band_and_unknown_store(uv_granule, tiny_models, tmp_path):
    assert_one_line_error(run_cli("compress", uv_granule, tmp_path / "o.zarr", "--band", "vis", "--quiet"),
                          "band_540_740_nm")
    plain = tmp_path / "plain.zarr"
    zarr.open_group(plain, mode="w")
    assert_one_line_error(run_cli("info", plain), "not a tempocodec store")
    assert_one_line_error(run_cli("info", tmp_path / "nothing.zarr"), "no such store")


def test_corrupt_shard_is_a_clear_error(both_bands, tiny_models, tmp_path):
    out = tmp_path / "c.zarr"
    compress_granule(both_bands, out, model=MODEL, progress=False, drop_radiance_error=True)
    shard = next(f for f in (out / UV / "radiance" / "c").rglob("*") if f.is_file())
    data = bytearray(shard.read_bytes())
    data[0:200] = bytes(200)
    shard.write_bytes(bytes(data))
    result = run_cli("decompress", out, tmp_path / "c.nc", "--quiet")
    assert result.exit_code == 2 and "Traceback" not in result.output, result.output
    assert not (tmp_path / "c.nc").exists()


def test_unknown_band_selection_is_refused(both_bands, tmp_path):
    with pytest.raises(TempocodecError, match="unknown band selection 'xx'"):
        compress_granule(both_bands, tmp_path / "never.zarr", bands="xx")
    assert list(tmp_path.iterdir()) == []


def test_band_that_is_not_a_group_is_a_damaged_store(tmp_path):
    path = tmp_path / "odd.zarr"
    root = zarr.open_group(path, mode="w")
    root.attrs["tempocodec"] = {"format": store_module.STORE_FORMAT, "bands": {UV: {"radiance": "lossless"}}}
    root.create_array(UV, shape=(2,), dtype="f4")
    with pytest.raises(TempocodecError, match=rf"^{path}: damaged store: {UV} is not a zarr group$"):
        store_info(path)


def test_the_compress_progress_bar_counts_mirror_steps_of_each_band(both_bands, tiny_models, tmp_path):
    result = CliRunner().invoke(main, ["compress", str(both_bands), str(tmp_path / "bar.zarr"), "--model", MODEL,
                                       "--band", "all"])
    assert result.exit_code == 0, result.output
    for band in ("band_290_490_nm", "band_540_740_nm"):
        assert re.search(rf"{band} \(mirror steps\).*40/40", result.stderr), result.stderr
