"""L2 file I/O for NO2, HCHO, O3TOT and CLDO4: bitwise round trips, the real layout, truth fields, clear errors."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import netCDF4
import numpy as np
import pytest
import xarray as xr
from helpers_netcdf import assert_one_line_error, assert_same_attrs, assert_same_dataset

from tempocodec.errors import TempocodecError
from tempocodec.granule.l2 import (
    FLOAT_FILL,
    HEADLINE,
    L2_GROUPS,
    PRODUCTS,
    L2Granule,
    l2_filename,
    l2_truth,
    read_l2,
    write_l2,
)
from tempocodec.granule.netcdf import INT16_FILL

NS, NX, NLEV = 6, 9, 72
FIRST_STEP = 788
FILL_PIXEL = (2, 3)
T0 = datetime(2025, 4, 6, 21, 51, 3)
HEADLINE_DTYPE = {"NO2": np.float64, "HCHO": np.float64, "O3TOT": np.float32, "CLDO4": np.float32}
HEADLINE_RANGE = {"NO2": (5e14, 3e16), "HCHO": (2e15, 3e16), "O3TOT": (250.0, 450.0), "CLDO4": (0.0, 1.0)}
YX = ("mirror_step", "xtrack")


def make_l2(product: str, seed: int = 0) -> L2Granule:
    """A small synthetic L2 granule of ``product`` with the four groups, a fill pixel and qa attributes."""
    rng = np.random.default_rng(seed)
    lo, hi = HEADLINE_RANGE[product]
    dtype = HEADLINE_DTYPE[product]
    truth = rng.uniform(lo, hi, (NS, NX)).astype(dtype)
    truth[FILL_PIXEL] = FLOAT_FILL[product]
    flag = np.zeros((NS, NX), np.int16)
    flag[FILL_PIXEL] = 2
    product_vars = {HEADLINE[product]: (YX, truth)}
    if product in ("NO2", "HCHO"):
        product_vars["main_data_quality_flag"] = (YX, flag)
    coords = {"mirror_step": ("mirror_step", np.arange(FIRST_STEP, FIRST_STEP + NS, dtype=np.int32))}
    return L2Granule(
        product=product,
        attrs={
            "title": f"TEMPO {product} test",
            "scan_num": np.int32(12),
            "granule_num": np.int32(7),
            "geospatial_lat_min": np.float32(25.0),
            "processing_level": np.int32(2),
        },
        groups={
            "product": xr.Dataset(product_vars, coords=coords),
            "geolocation": xr.Dataset(
                {
                    "latitude": (YX, rng.uniform(25, 50, (NS, NX)).astype(np.float32)),
                    "longitude": (YX, rng.uniform(-120, -70, (NS, NX)).astype(np.float32)),
                    "latitude_bounds": ((*YX, "corner"), rng.uniform(25, 50, (NS, NX, 4)).astype(np.float32)),
                    "solar_zenith_angle": (YX, rng.uniform(10, 80, (NS, NX)).astype(np.float32)),
                    "time": ("mirror_step", 1428011481.08 + 3.0 * np.arange(NS)),
                },
                coords=coords,
            ),
            "support_data": xr.Dataset(
                {
                    "terrain_height": (YX, rng.integers(0, 3000, (NS, NX)).astype(np.int16)),
                    "scattering_weights": ((*YX, "swt_level"), rng.uniform(0, 2, (NS, NX, NLEV)).astype(np.float32)),
                },
            ),
            "qa_statistics": xr.Dataset(
                {"fit_rms_residual": (YX, rng.uniform(0, 1e-3, (NS, NX)).astype(np.float32))},
                attrs={"num_good_output": np.int32(NS * NX - 1), "percent_good_output": np.float32(98.1)},
            ),
        },
    )


@pytest.mark.parametrize("product", PRODUCTS)
def test_l2_write_read_write_read_is_bitwise_identical(tmp_path: Path, product: str) -> None:
    given = make_l2(product)
    first = tmp_path / l2_filename(product, T0, 12, 7)
    second = tmp_path / "second.nc"
    write_l2(first, given)
    read1 = read_l2(first)
    write_l2(second, read1)
    read2 = read_l2(second)
    assert read1.product == read2.product == product
    assert_same_attrs(read1.attrs, read2.attrs, "/")
    assert list(read1.groups) == list(read2.groups) == list(L2_GROUPS)
    for name in L2_GROUPS:
        assert_same_dataset(read1.groups[name], read2.groups[name], name)
    # the first file holds what was given
    head = HEADLINE[product]
    assert read1.groups["product"][head].values.tobytes() == given.groups["product"][head].values.tobytes()
    assert read1.attrs["product_type"] == product
    assert_same_attrs(
        dict(given.groups["qa_statistics"].attrs), dict(read1.groups["qa_statistics"].attrs), "qa_statistics"
    )
    assert read1.groups["support_data"]["mirror_step"].values.tolist() == list(range(FIRST_STEP, FIRST_STEP + NS))


@pytest.mark.parametrize("product", PRODUCTS)
def test_l2_layout_fills_and_units_on_disk(tmp_path: Path, product: str) -> None:
    path = tmp_path / l2_filename(product, T0, 12, 7)
    write_l2(path, make_l2(product))
    fill = FLOAT_FILL[product]
    with netCDF4.Dataset(path) as nc:
        assert set(nc.dimensions) == {"mirror_step", "xtrack", "corner", "swt_level"}
        assert set(nc.variables) == {"mirror_step", "xtrack"}  # the root holds only the coordinates
        assert nc["mirror_step"].dtype == np.int32 and nc["xtrack"][:].tolist() == list(range(NX))
        assert list(nc.groups) == list(L2_GROUPS)
        for group in nc.groups.values():
            assert group.dimensions == {}
        head = nc["product"][HEADLINE[product]]
        assert head.dtype == HEADLINE_DTYPE[product]
        assert head.getncattr("_FillValue") == np.asarray(fill, head.dtype)
        assert head.filters()["zlib"] and head.filters()["shuffle"]
        assert nc["geolocation"]["latitude"].getncattr("_FillValue") == np.float32(fill)
        assert nc["geolocation"]["time"].getncattr("_FillValue") == np.float64(fill)
        assert nc["support_data"]["terrain_height"].getncattr("_FillValue") == INT16_FILL
        assert nc["geolocation"]["solar_zenith_angle"].units == "degrees"
        expected_units = {"NO2": "molecules/cm^2", "HCHO": "molecules/cm^2", "O3TOT": "DU", "CLDO4": "no unit"}
        assert head.units == expected_units[product]
        if product in ("NO2", "HCHO"):
            flag = nc["product"]["main_data_quality_flag"]
            assert flag.dtype == np.int16 and flag.flag_meanings == "normal suspicious bad"


@pytest.mark.parametrize("product", PRODUCTS)
def test_l2_truth_masks_fills_as_nan(tmp_path: Path, product: str) -> None:
    given = make_l2(product)
    path = tmp_path / l2_filename(product, T0, 12, 7)
    write_l2(path, given)
    truth = l2_truth(read_l2(path))
    assert truth.name == HEADLINE[product] and truth.dims == YX
    values = truth.values
    assert np.isnan(values[FILL_PIXEL])
    assert np.isnan(values).sum() == 1
    raw = given.groups["product"][HEADLINE[product]].values
    ok = ~np.isnan(values)
    np.testing.assert_array_equal(values[ok], raw[ok])
    assert "_FillValue" not in truth.attrs
    # an in-memory granule gives the same truth
    np.testing.assert_array_equal(l2_truth(given).values, values)


def test_xarray_opens_l2_groups(tmp_path: Path) -> None:
    path = tmp_path / l2_filename("NO2", T0, 12, 7)
    write_l2(path, make_l2("NO2"))
    with xr.open_dataset(path, group="product") as ds:
        col = ds["vertical_column_troposphere"]
        assert col.dims == YX and np.isnan(col.values[FILL_PIXEL]) and np.isfinite(col.values).sum() == NS * NX - 1
    with xr.open_dataset(path) as root:
        assert root["mirror_step"].values[0] == FIRST_STEP


def test_product_is_found_from_the_file_name_or_the_headline(tmp_path: Path) -> None:
    named = tmp_path / l2_filename("HCHO", T0, 12, 7)
    write_l2(named, make_l2("HCHO"))
    with netCDF4.Dataset(named, "a") as nc:
        nc.delncattr("product_type")
    assert read_l2(named).product == "HCHO"
    anonymous = tmp_path / "truth.nc"
    anonymous.write_bytes(named.read_bytes())
    assert read_l2(anonymous).product == "HCHO"


def test_l2_errors_are_one_line_and_name_the_file(tmp_path: Path) -> None:
    missing = tmp_path / "missing.nc"
    with pytest.raises(TempocodecError) as excinfo:
        read_l2(missing)
    assert_one_line_error(excinfo, missing, "no such file")

    text = tmp_path / "text.nc"
    text.write_text("not netCDF")
    with pytest.raises(TempocodecError) as excinfo:
        read_l2(text)
    assert_one_line_error(excinfo, text, "not a readable netCDF")

    no_product = tmp_path / "no_product.nc"
    with netCDF4.Dataset(no_product, "w") as nc:
        nc.createGroup("geolocation")
    with pytest.raises(TempocodecError) as excinfo:
        read_l2(no_product)
    assert_one_line_error(excinfo, no_product, "no 'product' group")

    target = tmp_path / "out.nc"
    bad = make_l2("O3TOT")
    bad.groups["product"] = bad.groups["product"].rename({"column_amount_o3": "ozone"})
    with pytest.raises(TempocodecError) as excinfo:
        write_l2(target, bad)
    assert_one_line_error(excinfo, target, "product/column_amount_o3")

    unknown = make_l2("NO2")
    unknown.product = "SO2"
    with pytest.raises(TempocodecError) as excinfo:
        write_l2(target, unknown)
    assert_one_line_error(excinfo, target, "SO2")

    clash = make_l2("NO2")
    clash.attrs["product_type"] = "HCHO"
    with pytest.raises(TempocodecError) as excinfo:
        write_l2(target, clash)
    assert_one_line_error(excinfo, target, "product_type")
    assert not target.exists()


def test_l2_file_names() -> None:
    assert l2_filename("NO2", T0, 12, 7) == "TEMPO_NO2_L2_V03_20250406T215103Z_S012G07.nc"
    assert l2_filename("CLDO4", T0, 1, 1, version=4) == "TEMPO_CLDO4_L2_V04_20250406T215103Z_S001G01.nc"
    with pytest.raises(TempocodecError, match="unknown L2 product"):
        l2_filename("RAD", T0, 1, 1)


def test_l2_files_beside_finds_the_granules_truth_newest_version_first(tmp_path):
    from tempocodec.granule.l2 import l2_files_beside

    stamp = "20240501T150000Z_S002G03"
    l1b = tmp_path / f"TEMPO_RAD_L1_V03_{stamp}.nc"
    for name in ("NO2_L2_V03", "NO2_L2_V04", "CLDO4_L2_V03"):
        (tmp_path / f"TEMPO_{name}_{stamp}.nc").touch()
    (tmp_path / "TEMPO_HCHO_L2_V03_20240501T150000Z_S002G04.nc").touch()  # another granule
    found = l2_files_beside(l1b)
    assert {k: v.name for k, v in found.items()} == {
        "NO2": f"TEMPO_NO2_L2_V04_{stamp}.nc", "CLDO4": f"TEMPO_CLDO4_L2_V03_{stamp}.nc"}
    assert l2_files_beside(tmp_path / "granule.nc") == {}
