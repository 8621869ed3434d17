"""L1B radiance file I/O: bitwise round trips, the real layout on disk, lazy reads, streaming writes, clear errors."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import dask.array as da
import netCDF4
import numpy as np
import pytest
import xarray as xr
from helpers_netcdf import assert_one_line_error, assert_same_attrs, assert_same_dataset

from tempocodec.errors import TempocodecError
from tempocodec.granule import netcdf, netcdf_write
from tempocodec.granule.l1b import (
    BANDS,
    GEO_FILL,
    N_CHANNELS,
    RADIANCE_DIMS,
    RADIANCE_FILL,
    RADIANCE_UNITS,
    L1BGranule,
    open_l1b,
    read_l1b,
    write_l1b,
)
from tempocodec.granule.naming import l1b_filename, parse_tempo_filename, tempo_filename
from tempocodec.granule.netcdf import INT16_FILL

NS, NX = 7, 10  # mirror steps, cross-track pixels
FIRST_STEP = 788
FILL_STEP = 3  # a whole mirror step of fill in every band
FILL_PIXEL = (5, 6)  # one more fill pixel (step, xtrack)


def _band(rng: np.random.Generator, lo_nm: float) -> xr.Dataset:
    """One synthetic band group with the variables of the real layout, fill pixels and an unknown variable."""
    shape3, shape2 = (NS, NX, N_CHANNELS), (NS, NX)
    rad = rng.uniform(1e10, 1e14, shape3).astype(np.float32)
    bad = np.zeros(shape2, bool)
    bad[FILL_STEP] = True
    bad[FILL_PIXEL] = True
    rad[bad] = RADIANCE_FILL
    err = np.where(rad == RADIANCE_FILL, RADIANCE_FILL, rad * np.float32(0.003)).astype(np.float32)
    flag = np.where(bad[..., None], np.int16(1), np.int16(0)) * np.ones(shape3, np.int16)

    def geo(lo: float, hi: float, shape: tuple[int, ...] = shape2) -> np.ndarray:
        a = rng.uniform(lo, hi, shape).astype(np.float32)
        a[FILL_STEP] = GEO_FILL
        return a

    terrain = rng.integers(-50, 3000, shape2).astype(np.int16)
    terrain[FILL_STEP] = INT16_FILL
    return xr.Dataset(
        {
            "radiance": (RADIANCE_DIMS, rad, {"_FillValue": RADIANCE_FILL, "units": RADIANCE_UNITS}),
            "radiance_error": (RADIANCE_DIMS, err, {"_FillValue": RADIANCE_FILL, "units": RADIANCE_UNITS}),
            "pixel_quality_flag": (RADIANCE_DIMS, flag),
            "nominal_wavelength": (
                ("xtrack", "spectral_channel"),
                (lo_nm + 0.195 * np.arange(N_CHANNELS) + 0.01 * np.arange(NX)[:, None]).astype(np.float32),
            ),
            "latitude": (("mirror_step", "xtrack"), geo(25, 50)),
            "longitude": (("mirror_step", "xtrack"), geo(-120, -70)),
            "latitude_bounds": (("mirror_step", "xtrack", "corner"), geo(25, 50, (NS, NX, 4))),
            "longitude_bounds": (("mirror_step", "xtrack", "corner"), geo(-120, -70, (NS, NX, 4))),
            "solar_zenith_angle": (("mirror_step", "xtrack"), geo(10, 80)),
            "viewing_zenith_angle": (("mirror_step", "xtrack"), geo(20, 70)),
            "solar_azimuth_angle": (("mirror_step", "xtrack"), geo(-180, 180)),
            "viewing_azimuth_angle": (("mirror_step", "xtrack"), geo(-180, 180)),
            "terrain_height": (("mirror_step", "xtrack"), terrain),
            "ground_pixel_quality_flag": (("mirror_step", "xtrack"), rng.integers(0, 2**20, shape2).astype(np.int32)),
            "wavecal_params": (
                ("mirror_step", "xtrack", "wavecal_par"),
                rng.normal(0, 0.01, (NS, NX, 3)).astype(np.float32),
                {
                    "num_coefficients": np.int32(3),
                    "start_spectral_channel": np.int32(0),
                    "num_spectral_channels": np.int32(N_CHANNELS),
                },
            ),
            "ABI_Band_1_East": (
                ("mirror_step", "xtrack"),
                rng.uniform(0, 1, shape2).astype(np.float32),
                {"note": "not in our table"},
            ),
        },
        attrs={"band_note": np.float32(1.5)},
    )


def make_granule(seed: int = 0) -> L1BGranule:
    """A small synthetic granule: 7 mirror steps × 10 xtrack × 1028 channels, both bands, some fill pixels."""
    rng = np.random.default_rng(seed)
    root = xr.Dataset(
        {
            "time": ("mirror_step", 1428011481.08 + 3.0 * np.arange(NS)),
            "exposure_time": ("mirror_step", np.full(NS, 2.8, np.float32)),
            "granule_flag": ((), np.int32(1)),
            "earth_sun_distance": ((), np.float32(1.496e11)),
        },
        coords={"mirror_step": ("mirror_step", np.arange(FIRST_STEP, FIRST_STEP + NS, dtype=np.int32))},
    )
    attrs = {
        "product_type": "RAD",
        "scan_num": np.int32(12),
        "granule_num": np.int16(7),
        "time_reference": "1980-01-06T00:00:00Z",
        "time_coverage_start_since_epoch": np.float64(1428011481.08),
        "inr_status": np.uint8(2),
        "processing_version": np.float32(3.0),
        "history": "créé par un test",  # not ASCII: stored as NC_STRING
        "input_files": ["TEMPO_RAD_L1_V03_a.nc", "TEMPO_IRR_L1_V03_b.nc"],
        "flags": np.array([1, 2, 4], dtype=np.int16),
    }
    return L1BGranule(
        attrs=attrs, root=root, bands={b: _band(rng, lo) for b, lo in zip(BANDS, (292.0, 538.0), strict=True)}
    )


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One synthetic granule written once for the read-only tests."""
    path = tmp_path_factory.mktemp("l1b") / l1b_filename(datetime(2025, 4, 6, 21, 51, 3), 12, 7)
    write_l1b(path, make_granule())
    return path


# ------------------------------------------------------------------------------------------------ round trips


def test_write_read_write_read_is_bitwise_identical(tmp_path: Path) -> None:
    given = make_granule()
    first, second = tmp_path / "first.nc", tmp_path / "second.nc"
    write_l1b(first, given)
    read1 = read_l1b(first)
    write_l1b(second, read1)
    read2 = read_l1b(second)

    assert_same_attrs(read1.attrs, read2.attrs, "/")
    assert_same_dataset(read1.root, read2.root, "/")
    assert list(read1.bands) == list(read2.bands) == list(BANDS)
    for band in BANDS:
        assert_same_dataset(read1.bands[band], read2.bands[band], band)

    # and the first file holds exactly what was given (global attribute types included)
    assert_same_attrs(given.attrs, read1.attrs, "/")
    for band in BANDS:
        for name, var in given.bands[band].data_vars.items():
            got = read1.bands[band][name]
            assert got.dtype == var.dtype, name
            assert got.values.tobytes() == var.values.tobytes(), name
        assert_same_attrs(dict(given.bands[band].attrs), dict(read1.bands[band].attrs), band)
    assert read1.root["mirror_step"].values.tolist() == list(range(FIRST_STEP, FIRST_STEP + NS))
    assert read1.root["time"].values.tobytes() == given.root["time"].values.tobytes()


def test_fill_pixels_survive_as_raw_values(written: Path) -> None:
    g = read_l1b(written)
    rad = g.bands[BANDS[0]]["radiance"].values
    assert (rad[FILL_STEP] == RADIANCE_FILL).all()
    assert (rad[FILL_PIXEL] == RADIANCE_FILL).all()
    assert (rad[rad != RADIANCE_FILL] > 0).all()
    assert (g.bands[BANDS[1]]["latitude"].values[FILL_STEP] == GEO_FILL).all()
    assert g.bands[BANDS[0]]["radiance"].attrs["_FillValue"] == RADIANCE_FILL


def test_known_variables_get_real_dtypes_fills_and_units(tmp_path: Path) -> None:
    """numpy's float64/int64 defaults become the real dtypes; missing fills and units are filled in."""
    given = make_granule()
    band = given.bands[BANDS[0]]
    band["latitude"] = band["latitude"].astype(np.float64)
    band["terrain_height"] = band["terrain_height"].astype(np.int64)
    band["radiance"] = band["radiance"].astype(np.float64).assign_attrs({})
    given.root["mirror_step"] = given.root["mirror_step"].astype(np.int64)
    path = tmp_path / "narrowed.nc"
    write_l1b(path, given)
    with netCDF4.Dataset(path) as nc:
        g = nc[BANDS[0]]
        assert g["latitude"].dtype == np.float32
        assert g["terrain_height"].dtype == np.int16
        assert nc["mirror_step"].dtype == np.int32
        assert g["radiance"].dtype == np.float32
        assert g["radiance"].getncattr("_FillValue") == RADIANCE_FILL
        assert g["radiance"].units == RADIANCE_UNITS
        assert g["latitude"].units == "degrees_north"
        assert g["latitude"].getncattr("_FillValue") == GEO_FILL
        assert g["terrain_height"].getncattr("_FillValue") == INT16_FILL
        assert g["ABI_Band_1_East"].ncattrs() == ["note"]  # unknown variable: nothing added
        assert g["xtrack"][:].tolist() == list(range(NX))
        assert g["wavecal_par"][:].tolist() == [0, 1, 2]


def test_integer_narrowing_that_would_change_values_is_refused(tmp_path: Path) -> None:
    given = make_granule()
    band = given.bands[BANDS[1]]
    band["terrain_height"] = band["terrain_height"].astype(np.int64) + 100_000
    path = tmp_path / "overflow.nc"
    with pytest.raises(TempocodecError) as excinfo:
        write_l1b(path, given)
    assert_one_line_error(excinfo, path, "terrain_height", "int16")
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------------------------------------ layout on disk


def test_layout_on_disk_matches_the_real_files(written: Path) -> None:
    with netCDF4.Dataset(written) as nc:
        assert set(nc.dimensions) == {"mirror_step", "corner"}
        assert nc.dimensions["mirror_step"].size == NS and not nc.dimensions["mirror_step"].isunlimited()
        assert list(nc.groups) == list(BANDS)
        assert {"mirror_step", "time", "exposure_time", "granule_flag", "earth_sun_distance"} <= set(nc.variables)
        assert nc["mirror_step"].dtype == np.int32 and nc["time"].dtype == np.float64
        assert nc["granule_flag"].dimensions == () and nc["earth_sun_distance"].dtype == np.float32
        assert nc["time"].units.startswith("seconds since 1980-01-06")
        for band in BANDS:
            g = nc[band]
            assert set(g.dimensions) == {"xtrack", "spectral_channel", "wavecal_par"}
            rad = g["radiance"]
            assert rad.dimensions == RADIANCE_DIMS and rad.dtype == np.float32
            assert rad.chunking() == [1, NX, N_CHANNELS]
            filters = rad.filters()
            assert filters["zlib"] and filters["shuffle"] and filters["complevel"] == 1
            assert g["radiance_error"].chunking() == [1, NX, N_CHANNELS]
            assert g["pixel_quality_flag"].dtype == np.int16
            assert g["pixel_quality_flag"].getncattr("_FillValue") == INT16_FILL
            assert g["latitude_bounds"].dimensions == ("mirror_step", "xtrack", "corner")
            assert g["xtrack"].dtype == np.int32
            assert "mirror_step" not in g.variables
            assert g.getncattr("band_note") == np.float32(1.5)
        assert nc.getncattr("granule_num").dtype == np.int16


def test_xarray_opens_each_group_of_a_written_file(written: Path) -> None:
    band = xr.open_dataset(written, group=BANDS[0])
    try:
        rad = band["radiance"]
        assert rad.dims == RADIANCE_DIMS and rad.dtype == np.float32
        assert np.isnan(rad.values[FILL_STEP]).all()
        assert np.isfinite(rad.values[0]).all()
        assert "latitude" in band.coords  # from the radiance 'coordinates' attribute
        assert band["latitude"].attrs["units"] == "degrees_north"
    finally:
        band.close()
    root = xr.open_dataset(written)
    try:
        assert root["time"].dtype.kind == "M"
        assert root["time"].values[0] > np.datetime64("2025-04-06T21:50")
        assert int(root.attrs["scan_num"]) == 12
    finally:
        root.close()


def test_the_reader_gives_what_xarrays_netcdf4_backend_gives_undecoded(written: Path) -> None:
    """The hand-written reader adds no decoding of its own (docs/format-tempo.md, *What stays hand-written*): every
    group reads as xarray's netCDF4 backend reads it with CF decoding off, values, dtypes and attributes alike."""
    raw = {"engine": "netcdf4", "mask_and_scale": False, "decode_times": False, "decode_coords": False,
           "decode_timedelta": False}
    with open_l1b(written) as f:
        for group, ours in [(None, f.root.assign_attrs(f.attrs)), *((band, f.band(band)) for band in BANDS)]:
            with xr.open_dataset(written, group=group, **raw) as theirs:
                assert set(theirs.variables) <= set(ours.variables), group
                for name, var in theirs.variables.items():
                    assert ours[name].dtype == var.dtype, (group, name)
                    np.testing.assert_array_equal(ours[name].values, var.values)
                    assert_same_attrs(dict(ours[name].attrs), dict(var.attrs), f"{group}/{name}")
                assert_same_attrs(dict(ours.attrs), dict(theirs.attrs), str(group))


# ------------------------------------------------------------------------------------------------ lazy reading


def test_band_is_lazy_and_radiance_block_reads_raw_values(written: Path) -> None:
    with open_l1b(written) as f:
        assert f.band_names == list(BANDS)
        assert f.attrs["product_type"] == "RAD"
        band = f.band(BANDS[1])
        assert isinstance(band["radiance"].data, da.Array)
        assert band["radiance"].data.chunks[0] == (1,) * NS
        assert band["mirror_step"].values.tolist() == list(range(FIRST_STEP, FIRST_STEP + NS))
        block = f.radiance_block(BANDS[1], slice(2, 6), slice(4, 9))
        assert block.dtype == np.float32 and block.shape == (4, 5, N_CHANNELS)
        assert block.tobytes() == band["radiance"].values[2:6, 4:9].tobytes()
        assert (block[FILL_STEP - 2] == RADIANCE_FILL).all()
        no_rad = f.band(BANDS[1], radiance=False)
        assert not {"radiance", "radiance_error", "pixel_quality_flag"} & set(no_rad.variables)
        assert "latitude" in no_rad and "wavecal_params" in no_rad
        with pytest.raises(TempocodecError) as excinfo:
            f.band("band_999")
        assert_one_line_error(excinfo, written, "band_999")
    # lazy arrays handed out before close still read (the file is reopened)
    assert band["radiance"][0, 0, :3].values.dtype == np.float32


class _Recorder:
    """A duck array that records the mirror-step ranges it is asked for."""

    def __init__(self, data: np.ndarray) -> None:
        self.data, self.shape, self.dtype, self.ndim = data, data.shape, data.dtype, data.ndim
        self.reads: list[tuple[int, int]] = []

    def __getitem__(self, key):
        rows = key[0] if isinstance(key, tuple) else key
        self.reads.append((rows.start or 0, self.shape[0] if rows.stop is None else rows.stop))
        return self.data[key]


def test_write_streams_dask_radiance_chunk_by_chunk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(netcdf_write, "BLOCK_BYTES", NX * N_CHANNELS * 4)  # one mirror step per block at most
    given = make_granule()
    band = given.bands[BANDS[0]]
    rec = _Recorder(band["radiance"].values)
    band["radiance"] = (
        RADIANCE_DIMS,
        da.from_array(rec, chunks=(2, NX, N_CHANNELS), asarray=True, meta=np.empty((0, 0, 0), np.float32)),
        band["radiance"].attrs,
    )
    path = tmp_path / "streamed.nc"
    write_l1b(path, given)
    # every dask chunk (2 steps) read exactly once, never the whole array at once
    assert sorted(rec.reads) == [(0, 2), (2, 4), (4, 6), (6, 7)]
    assert read_l1b(path).bands[BANDS[0]]["radiance"].values.tobytes() == rec.data.tobytes()


# ------------------------------------------------------------------------------------------------ real-layout extras


def test_unknown_groups_variables_and_attributes_are_kept(tmp_path: Path, written: Path) -> None:
    path = tmp_path / "real_like.nc"
    path.write_bytes(written.read_bytes())
    rng = np.random.default_rng(3)
    with netCDF4.Dataset(path, "a") as nc:
        nc.setncattr("local_granule_id", "TEMPO_RAD_L1_V03_20250406T215103Z_S012G07.nc")
        eng = nc.createGroup("telemetry")
        eng.createDimension("tlm_sample", 5)
        eng.createVariable("ccd_temperature", "f8", ("tlm_sample",))[:] = rng.normal(size=5)
        eng.createGroup("nested").createVariable("x", "i4", ())
        cm = nc.createGroup("cloud_mask_group")
        cm.createDimension("xtrack", NX)
        cm.createVariable("cloud_mask", "u1", ("mirror_step", "xtrack"), fill_value=np.uint8(255))[:] = rng.integers(
            0, 2, (NS, NX)
        )
        band = nc[BANDS[0]]
        pair = band.createCompoundType(np.dtype([("a", "f4"), ("b", "i4")]), "pair_t")
        band.createVariable("pairs", pair, ("xtrack",))
        sf = band.createVariable("sf_hw1e", "f4", ("mirror_step", "xtrack", "spectral_channel"))
        sf[:] = rng.uniform(0.2, 0.4, (NS, NX, N_CHANNELS))
        band.createVariable("pixel_scale_row", "f4", ()).assignValue(0.195)
        band.createVariable("pixel_names", str, ("xtrack",))[:] = np.array([f"px{i}" for i in range(NX)], dtype=object)
    with open_l1b(path) as f:
        assert f.group_names == [*BANDS, "telemetry", "cloud_mask_group"]
        assert f.attrs["local_granule_id"].startswith("TEMPO_RAD")
        band = f.band(BANDS[0])
        assert "sf_hw1e" in band and band["pixel_scale_row"].values == np.float32(0.195)
        assert band["pixel_names"].values.tolist() == [f"px{i}" for i in range(NX)]
        assert f.skipped == [f"{BANDS[0]}/pairs"]
    read1 = read_l1b(path)
    assert list(read1.other_groups) == ["telemetry", "cloud_mask_group"]
    assert read1.other_groups["cloud_mask_group"]["cloud_mask"].attrs["_FillValue"] == np.uint8(255)
    again = tmp_path / "again.nc"
    write_l1b(again, read1)
    read2 = read_l1b(again)
    assert_same_attrs(read1.attrs, read2.attrs, "/")
    for name in read1.other_groups:
        assert_same_dataset(read1.other_groups[name], read2.other_groups[name], name)
    for band in BANDS:
        assert_same_dataset(read1.bands[band], read2.bands[band], band)
    with netCDF4.Dataset(again) as nc:
        assert "xtrack" in nc["cloud_mask_group"].dimensions
        assert nc["telemetry"].groups == {}  # nested groups are not kept


# ------------------------------------------------------------------------------------------------ errors


def _bad_file(
    path: Path,
    *,
    band: str = BANDS[0],
    dims: tuple[str, ...] = RADIANCE_DIMS,
    channels: int = N_CHANNELS,
    dtype: str = "f4",
    radiance: bool = True,
) -> Path:
    """A tiny netCDF file with one band-like group whose radiance breaks one rule."""
    with netCDF4.Dataset(path, "w") as nc:
        nc.createDimension("mirror_step", 2)
        g = nc.createGroup(band)
        g.createDimension("xtrack", 3)
        g.createDimension("spectral_channel", channels)
        if radiance:
            g.createVariable("radiance", dtype, dims)
    return path


@pytest.mark.parametrize(
    ("case", "words"),
    [
        ("missing_band", ("no band group",)),
        ("no_radiance", ("no radiance",)),
        ("wrong_dims", ("dims",)),
        ("1027_channels", ("1027",)),
        ("int_radiance", ("int16", "float32")),
        ("truncated", ("not a readable netCDF",)),
        ("not_netcdf", ("not a readable netCDF",)),
        ("missing_file", ("no such file",)),
    ],
)
def test_bad_files_raise_one_line_errors_naming_the_file(
    tmp_path: Path, written: Path, case: str, words: tuple[str, ...]
) -> None:
    path = tmp_path / f"{case}.nc"
    if case == "missing_band":
        _bad_file(path, band="band_999_nm")
    elif case == "no_radiance":
        _bad_file(path, radiance=False)
    elif case == "wrong_dims":
        _bad_file(path, dims=("xtrack", "mirror_step", "spectral_channel"))
    elif case == "1027_channels":
        _bad_file(path, channels=1027)
    elif case == "int_radiance":
        _bad_file(path, dtype="i2")
    elif case == "truncated":
        data = written.read_bytes()
        path.write_bytes(data[: len(data) // 2])
    elif case == "not_netcdf":
        path.write_text("radiance,1,2,3\n")
    with pytest.raises(TempocodecError) as excinfo:
        open_l1b(path)
    assert_one_line_error(excinfo, path, *words)
    with pytest.raises(TempocodecError):
        read_l1b(path)


def _drop_channel(g: L1BGranule) -> None:
    g.bands[BANDS[0]] = g.bands[BANDS[0]].isel(spectral_channel=slice(0, N_CHANNELS - 1))


def _int_radiance(g: L1BGranule) -> None:
    g.bands[BANDS[0]]["radiance"] = (RADIANCE_DIMS, np.ones((NS, NX, N_CHANNELS), np.int32))


def _transposed(g: L1BGranule) -> None:
    g.bands[BANDS[0]]["radiance"] = g.bands[BANDS[0]]["radiance"].transpose("xtrack", "mirror_step", "spectral_channel")


def _no_bands(g: L1BGranule) -> None:
    g.bands.clear()


def _unknown_band(g: L1BGranule) -> None:
    g.bands["band_999_nm"] = g.bands.pop(BANDS[0])


def _datetime_time(g: L1BGranule) -> None:
    g.root["time"] = ("mirror_step", np.datetime64("2025-04-06T21:51:03") + np.arange(NS) * np.timedelta64(3, "s"))


def _step_mismatch(g: L1BGranule) -> None:
    g.bands[BANDS[1]] = g.bands[BANDS[1]].isel(mirror_step=slice(0, NS - 1)).drop_vars("mirror_step", errors="ignore")


@pytest.mark.parametrize(
    ("spoil", "words"),
    [
        (_drop_channel, ("1027",)),
        (_int_radiance, ("int32",)),
        (_transposed, ("dims",)),
        (_no_bands, ("no band group",)),
        (_unknown_band, ("band_999_nm",)),
        (_datetime_time, ("time", "seconds since")),
        (_step_mismatch, ("mirror_step",)),
    ],
)
def test_writer_refuses_bad_granules_and_keeps_the_old_file(tmp_path: Path, written: Path, spoil, words) -> None:
    path = tmp_path / "target.nc"
    path.write_bytes(written.read_bytes())
    before = path.read_bytes()
    granule = make_granule()
    spoil(granule)
    with pytest.raises(TempocodecError) as excinfo:
        write_l1b(path, granule)
    assert_one_line_error(excinfo, path, *words)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["target.nc"]


def test_rewriting_a_file_from_its_own_lazy_read_is_safe(tmp_path: Path, written: Path) -> None:
    path = tmp_path / "self.nc"
    path.write_bytes(written.read_bytes())
    before = read_l1b(written)
    write_l1b(path, read_l1b(path))
    after = read_l1b(path)
    for band in BANDS:
        assert_same_dataset(before.bands[band], after.bands[band], band)


# ------------------------------------------------------------------------------------------------ file names


def test_file_names_follow_the_tempo_pattern() -> None:
    t = datetime(2025, 4, 6, 21, 51, 3)
    assert l1b_filename(t, 12, 7) == "TEMPO_RAD_L1_V03_20250406T215103Z_S012G07.nc"
    eastern = datetime(2025, 4, 6, 17, 51, 3, tzinfo=timezone(timedelta(hours=-4)))
    assert l1b_filename(eastern, 12, 7, version=4) == "TEMPO_RAD_L1_V04_20250406T215103Z_S012G07.nc"
    assert tempo_filename("IRR", 1, t) == "TEMPO_IRR_L1_V03_20250406T215103Z.nc"
    assert tempo_filename("O3TOT", 3, t, scan=1) == "TEMPO_O3TOT_L3_V03_20250406T215103Z_S001.nc"
    parsed = parse_tempo_filename(Path("/data") / l1b_filename(t, 12, 7))
    assert parsed is not None
    assert (parsed.product, parsed.level, parsed.version, parsed.scan, parsed.granule) == ("RAD", 1, 3, 12, 7)
    assert parsed.time == t.replace(tzinfo=UTC)
    assert parse_tempo_filename("granule.nc") is None
    with pytest.raises(TempocodecError, match="scan 1000"):
        l1b_filename(t, 1000, 1)


def test_tempocodec_error_is_a_value_error_that_wrapping_passes_through(tmp_path: Path) -> None:
    assert issubclass(TempocodecError, ValueError)
    path = _bad_file(tmp_path / "no_band.nc", band="band_999_nm")
    with pytest.raises(ValueError, match="no band group") as excinfo:
        open_l1b(path)
    assert "cannot read the L1B layout" not in str(excinfo.value) and str(excinfo.value).count(str(path)) == 1
    granule = make_granule()
    granule.attrs["flag"] = True
    with pytest.raises(ValueError, match="is a boolean") as excinfo:
        write_l1b(tmp_path / "flag.nc", granule)
    assert "cannot write attribute" not in str(excinfo.value)


def test_a_handle_collected_while_another_thread_reads_is_closed_under_the_lock(written: Path) -> None:
    # netCDF4 closes a Dataset when it is deallocated, outside any lock: a source garbage-collected in one thread
    # while another holds the HDF5 lock must leave its handle open until the lock is free
    source = netcdf.NetCDFSource(written)
    handle = source._state["ds"]
    with netcdf.hdf5_lock():
        del source  # the finalizer runs now, in this thread, which holds the lock
        assert handle.isopen() and netcdf._UNCLOSED == [handle]
    with netcdf.hdf5_lock():
        assert not handle.isopen() and netcdf._UNCLOSED == []
