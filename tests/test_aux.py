"""The auxiliary variables' encodings (tempocodec.runtime.auxcodecs): bounds held by every value, fill values exact,
--lossless-aux as before, plain zarr decoding them without tempocodec, subset-and-save without a second coding."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import netCDF4
import numcodecs
import numpy as np
import pytest
import xarray as xr
import zarr
from helpers_cli import run_cli

from tempocodec.codec.zarr3 import make_codec
from tempocodec.runtime.auxcodecs import BOUNDS, RADIANCE_ERROR_KEEPBITS, aux_encoding, quiet_codecs
from tempocodec.runtime.store import compress_granule, open_store, store_info
from tempocodec.simulator import write_simulated

pytest_plugins = ["tiny_model_fixture"]

UV = "band_290_490_nm"
MODEL = "tiny1028"
FILL = np.float32(9.96921e36)


@pytest.fixture(scope="module")
def granule(tmp_path_factory) -> Path:
    return write_simulated(tmp_path_factory.mktemp("g"), 70, 90, seed=11, bands="uv")[0]


@pytest.fixture(scope="module")
def stores(granule, tiny_models, tmp_path_factory) -> dict[str, Path]:
    """The default store (radiance_error: auto), one for each radiance_error coding, and --lossless-aux."""
    out = tmp_path_factory.mktemp("stores")
    modes = {"default": "auto", "exact": "exact", "rounded": "rounded", "lossless": "auto"}
    return {kind: compress_granule(granule, out / f"{kind}.zarr", model=MODEL, lossless_aux=kind == "lossless",
                                   radiance_error=mode, progress=False).path for kind, mode in modes.items()}


def source(granule: Path, name: str) -> np.ndarray:
    with netCDF4.Dataset(granule) as nc:
        nc.set_auto_mask(False)
        return np.asarray(nc[UV][name][:])


def round_trip(values: np.ndarray, name: str, tmp_path: Path, fmt: int = 3) -> tuple[np.ndarray, str | None]:
    """``values`` through the encoding of ``name`` into a zarr array and back, and the lossy note."""
    var = xr.DataArray(values, dims=[f"d{i}" for i in range(values.ndim)], attrs={"_FillValue": FILL})
    with quiet_codecs():
        enc, note = aux_encoding(var, name, fmt)
        kwargs = {"filters": enc["filters"], "compressors": enc["compressors"]}
        arr = zarr.create_array(tmp_path / f"{name}.zarr", shape=values.shape, dtype=values.dtype, chunks=values.shape,
                                fill_value=FILL if values.dtype.kind == "f" else 0, zarr_format=fmt, **kwargs)
        arr[...] = values
        return arr[...], note


@pytest.mark.parametrize("fmt", [3, 2])
@pytest.mark.parametrize("name", sorted(BOUNDS))
def test_every_value_within_its_bound(name, fmt, tmp_path):
    rng = np.random.default_rng(3)
    lo, hi = {"lat": (70.0, 90.0), "lon": (160.0, 180.0), "ter": (-400.0, 8800.0)}.get(name[:3], (-180.0, -160.0))
    values = rng.uniform(lo, hi, (37, 45, 4) if name.endswith("bounds") else (37, 45)).astype(np.float32)
    values.flat[:2] = lo, hi
    back, note = round_trip(values, name, tmp_path, fmt)
    assert note is not None and f"{BOUNDS[name].bound:g}" in note
    assert np.abs(back.astype(np.float64) - values).max() <= BOUNDS[name].bound


def test_a_variable_with_fill_values_stays_exact(tmp_path):
    values = np.random.default_rng(4).uniform(20, 50, (30, 40)).astype(np.float32)
    values[3, 5] = FILL
    back, note = round_trip(values, "latitude", tmp_path)
    assert note is None
    np.testing.assert_array_equal(back, values)


def test_radiance_error_off_the_noise_model_keeps_its_relative_bound(tmp_path):
    """Values over 20 decades at random (no noise model behind them), fills and zeros: every value within 2^-7."""
    rng = np.random.default_rng(5)
    values = (10.0 ** rng.uniform(-10, 10, (20, 30, 64))).astype(np.float32)
    values[0, :5] = FILL
    values[1, :3] = 0.0
    back, note = round_trip(values, "radiance_error", tmp_path)
    assert note is not None and f"keepbits={RADIANCE_ERROR_KEEPBITS}" in note
    np.testing.assert_array_equal(back[0, :5], FILL)
    np.testing.assert_array_equal(back[1, :3], 0.0)
    rel = np.abs(back.astype(np.float64) - values) / np.where(values == 0, 1, values)
    assert rel.max() <= 2.0 ** -(RADIANCE_ERROR_KEEPBITS + 1)


def test_stored_bounds_hold_on_the_granule_and_are_documented(stores, granule):
    ds = open_store(stores["rounded"], UV)
    for name in (*BOUNDS, "radiance_error"):
        if name not in ds or ds[name].dtype.kind != "f" or name == "terrain_height":
            continue
        stored, original = ds[name].values.astype(np.float64), source(granule, name).astype(np.float64)
        assert "tempocodec_lossy" in ds[name].attrs, name
        if name == "radiance_error":
            valid = (original > 0) & (original < 1e30)
            np.testing.assert_array_equal(stored[~valid], original[~valid])
            assert (np.abs(stored - original)[valid] / original[valid]).max() <= 2.0 ** -(RADIANCE_ERROR_KEEPBITS + 1)
        else:
            assert np.abs(stored - original).max() <= BOUNDS[name].bound, name


def test_lossless_aux_keeps_the_values_of_release_0_2(stores, granule):
    """Every non-radiance array as before: Blosc + CRC-32C, values bit for bit; radiance_error as BitRound(7) left
    it, the rounding now a filter of its own pipeline (any zarr reader sees it)."""
    root = zarr.open_group(stores["lossless"], mode="r")
    for name, arr in root[UV].arrays():
        if name in ("radiance", "mirror_step", "xtrack"):  # dimension coordinates: not variables of the netCDF group
            continue
        codecs = [c["name"] for c in arr.metadata.to_dict()["codecs"]]
        rounding = ["numcodecs.bitround"] if name == "radiance_error" else []
        assert codecs == [*rounding, "bytes", "blosc", "crc32c"], (name, codecs)
        expected = source(granule, name)
        if name == "radiance_error":
            expected = np.asarray(numcodecs.BitRound(keepbits=7).encode(expected.copy())).view(np.float32)
            expected = expected.reshape(arr.shape)
        np.testing.assert_array_equal(arr[...], expected, err_msg=name)
    assert root[UV]["radiance_error"].attrs["tempocodec_lossy"].startswith("mantissa rounded to 7 bits")


def test_smaller_than_lossless_aux(stores):
    sizes = {k: sum(f.stat().st_size for f in p.rglob("*") if f.is_file()) for k, p in stores.items()}
    assert sizes["default"] < 0.8 * sizes["lossless"], sizes


def test_exact_radiance_error_is_the_source_bit_for_bit_and_says_so(stores, granule):
    ds = open_store(stores["exact"], UV)
    original = source(granule, "radiance_error")
    np.testing.assert_array_equal(ds["radiance_error"].values.view(np.uint32), original.view(np.uint32))
    assert "tempocodec_lossy" not in ds["radiance_error"].attrs
    assert "exact" in ds["radiance_error"].attrs["tempocodec_coding"]
    plain = xr.open_zarr(stores["exact"], group=UV, mask_and_scale=False)  # the entry point decodes it
    np.testing.assert_array_equal(plain["radiance_error"].values.view(np.uint32), original.view(np.uint32))


def test_an_exact_radiance_error_is_never_coded_a_second_time(stores, tmp_path):
    """Plain xarray keeps the codec in .encoding: saving refuses in one line; open_store's datasets save losslessly."""
    plain = xr.open_zarr(stores["exact"], group=UV)[["radiance_error"]].isel(mirror_step=slice(0, 64), xtrack=slice(0, 64))
    with pytest.raises(Exception, match="written by tempocodec compress, which sees the radiance") as err:
        plain.to_zarr(tmp_path / "plain.zarr", zarr_format=3, consolidated=False)
    assert "\n" not in str(err.value)
    sub = open_store(stores["exact"], UV)[["radiance_error"]].isel(mirror_step=slice(0, 50), xtrack=slice(0, 30))
    sub.to_zarr(tmp_path / "sub.zarr", zarr_format=3, consolidated=False)
    back = xr.open_zarr(tmp_path / "sub.zarr", consolidated=False, mask_and_scale=False)
    np.testing.assert_array_equal(back.radiance_error.values, sub.radiance_error.values)


def test_auto_codes_radiance_error_the_smaller_way(stores):
    def stored(kind: str) -> tuple[str, int]:
        var = next(v for v in store_info(stores[kind]).variables if v.name == "radiance_error")
        return var.codec, var.stored_bytes

    (exact_codec, exact), (rounded_codec, rounded) = stored("exact"), stored("rounded")
    assert "tempocodec.noise" in exact_codec and rounded_codec.startswith("bitround")
    assert stored("default") == min((exact_codec, exact), (rounded_codec, rounded), key=lambda s: s[1])


def test_history_and_lossy_markers_in_the_store(stores, granule):
    root = zarr.open_group(stores["default"], mode="r")
    history = root.attrs["history"].splitlines()
    assert f"compress {granule.name}" in history[-1] and "tempocodec" in history[-1]
    assert "radiance_error exact (tempocodec_coding) or bit-rounded" in history[-1]
    rounded = zarr.open_group(stores["rounded"], mode="r").attrs["history"].splitlines()[-1]
    assert rounded.endswith("radiance_error bit-rounded") and "exact" not in rounded
    assert root[UV]["radiance"].attrs["tempocodec_lossy"].startswith(f"tempocodec.vae codec, model {MODEL}")


def test_subset_and_save_writes_decoded_values_losslessly(stores, tmp_path):
    ds = open_store(stores["default"], UV)
    sub = ds[["radiance", "radiance_error", "latitude"]].isel(mirror_step=slice(0, 50), xtrack=slice(0, 30))
    with quiet_codecs():
        sub.to_zarr(tmp_path / "sub.zarr", zarr_format=3, consolidated=False)
    out = zarr.open_group(tmp_path / "sub.zarr", mode="r")
    for name in ("radiance", "radiance_error", "latitude"):
        codecs = json.dumps(out[name].metadata.to_dict()["codecs"])
        assert "tempocodec" not in codecs and "bitround" not in codecs and "fixedscaleoffset" not in codecs, name
    back = xr.open_zarr(tmp_path / "sub.zarr", consolidated=False, mask_and_scale=False)
    np.testing.assert_array_equal(back.radiance.values, sub.radiance.values)


@pytest.mark.parametrize("zarr_format", [3, 2])
def test_plain_xarray_subset_save_never_codes_radiance_a_second_time(stores, granule, tmp_path, tiny_models, zarr_format):
    """xr.open_zarr keeps the store's codec in .encoding: saving a subset refuses in one line; with the encoding
    dropped it saves the decoded values bit for bit; a new codec passed on purpose codes them."""
    path = stores["rounded"] if zarr_format == 3 else compress_granule(
        granule, tmp_path / "v2.zarr", model=MODEL, zarr_format=2, radiance_error="rounded", progress=False).path
    ds = xr.open_zarr(path, group=UV)
    sub = ds[["radiance"]].isel(mirror_step=slice(0, 64), xtrack=slice(0, 64))
    with pytest.raises(Exception, match="would code the decoded values a second time") as err:
        sub.to_zarr(tmp_path / "again.zarr", zarr_format=zarr_format, consolidated=False)
    assert "\n" not in str(err.value)
    sub.radiance.encoding = {}
    with quiet_codecs():
        sub.to_zarr(tmp_path / "kept.zarr", zarr_format=zarr_format, consolidated=False)
    back = xr.open_zarr(tmp_path / "kept.zarr", consolidated=False)
    np.testing.assert_array_equal(back.radiance.values, sub.radiance.values)
    if zarr_format == 3:
        on_purpose = {"radiance": {"serializer": make_codec(MODEL, fill_value=float(FILL)), "compressors": None,
                                   "filters": None, "chunks": (64, 64, 1028)}}
        sub.to_zarr(tmp_path / "coded.zarr", zarr_format=3, consolidated=False, encoding=on_purpose)
        again = xr.open_zarr(tmp_path / "coded.zarr", consolidated=False).radiance.values
        assert np.isfinite(again).any() and not np.array_equal(again, sub.radiance.values)


PLAIN = textwrap.dedent("""
    import importlib.abc, importlib.metadata, sys, warnings
    warnings.simplefilter("ignore")
    class Block(importlib.abc.MetaPathFinder):  # tempocodec is not installed here
        def find_spec(self, name, path, target=None):
            if name.split(".")[0] == "tempocodec":
                raise ImportError("no tempocodec")
    sys.meta_path.insert(0, Block())
    ALL = importlib.metadata.EntryPoints(  # nor are its zarr/numcodecs entry points
        e for d in importlib.metadata.distributions() for e in d.entry_points if not e.value.startswith("tempocodec"))
    def entry_points(**kw):
        return ALL.select(**kw) if kw else ALL
    importlib.metadata.entry_points = entry_points
    import json, numpy as np, xarray as xr, zarr
    store, band, names, needing = sys.argv[1], sys.argv[2], sys.argv[3].split(","), sys.argv[4].split(",")
    out = {"root": sorted(xr.open_zarr(store, consolidated=False).variables)}
    import dask.array as da  # docs/format.md's recipe: the band's other variables as one lazy Dataset
    arrays = {n: zarr.open_array(store, path=f"{band}/{n}", mode="r") for n in names}
    ds = xr.Dataset({n: (a.metadata.dimension_names, da.from_zarr(a), a.attrs.asdict()) for n, a in arrays.items()})
    out["lazy"] = all(isinstance(ds[n].data, da.Array) for n in names if n not in ds.dims)  # not the indexes
    out["arrays"] = {n: float(ds[n].values.astype(float).sum()) for n in names}
    out["dims"] = {n: list(ds[n].dims) for n in names}
    for name in needing:
        try:
            zarr.open_array(store, path=f"{band}/{name}", mode="r")
            out[name] = "opened"
        except Exception as err:
            out[name] = str(err)
    print(json.dumps(out))
""")


@pytest.mark.parametrize(("kind", "needing"), [("rounded", ["radiance"]), ("exact", ["radiance", "radiance_error"])])
def test_plain_zarr_decodes_everything_but_radiance(stores, kind, needing):
    """A clean interpreter with tempocodec blocked and its entry points hidden reads the root and every other array;
    opening radiance (and an exact radiance_error, coded from its latents) names the tempocodec codec it needs."""
    path = stores[kind]
    root = zarr.open_group(path, mode="r")
    names = [n for n, _ in root[UV].arrays() if n not in needing]
    done = subprocess.run([sys.executable, "-c", PLAIN, str(path), UV, ",".join(names), ",".join(needing)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert "time" in out["root"] and "mirror_step" in out["root"]
    with quiet_codecs():
        expected = {n: float(np.asarray(root[UV][n][...], dtype=float).sum()) for n in names}
    assert out["arrays"] == pytest.approx(expected) and out["lazy"]
    assert out["dims"]["latitude"] == ["mirror_step", "xtrack"]
    assert all("tempocodec." in out[name] for name in needing), out


def test_within_bound_checks_every_value_and_fills():
    from tempocodec.runtime.auxcodecs import within_bound

    note = {"tempocodec_lossy": "numcodecs FixedScaleOffset(offset=35, scale=100000) + Delta + zstd: absolute ..."}
    a = np.array([35.0, 36.0, FILL], dtype=np.float32)
    assert within_bound("latitude", note, a, a + np.array([9e-6, -9e-6, 0], dtype=np.float32))
    assert not within_bound("latitude", note, a, a + np.array([0, 2e-5, 0], dtype=np.float32))
    assert not within_bound("latitude", note, a, np.array([35.0, 36.0, 0.0], dtype=np.float32))  # fill not exact
    assert not within_bound("latitude", {}, a, a + np.float32(5e-6))  # no marker: exact only


def test_the_cli_takes_the_radiance_error_coding_and_info_shows_it(granule, tiny_models, tmp_path):
    out = tmp_path / "exact.zarr"
    done = run_cli("compress", granule, out, "--model", MODEL, "--radiance-error", "exact", "--quiet")
    assert done.exit_code == 0, done.output
    info = json.loads(run_cli("info", out, "--json").output)
    error = next(v for v in info["variables"] if v["name"] == "radiance_error")
    assert error["bound"] == "exact" and "tempocodec.noise" in error["codec"], error
    bad = run_cli("compress", granule, tmp_path / "bad.zarr", "--model", MODEL, "--radiance-error", "lossy")
    assert bad.exit_code == 2 and "lossy" in bad.output and not (tmp_path / "bad.zarr").exists()
