"""TEMPO Level-2 files (``TEMPO_<P>_L2``, native swath): read lazily, write in the real layout.

Layout (``docs/format-tempo.md``): every dimension (``mirror_step``, ``xtrack``, ``corner``, ``swt_level``, ...)
is defined at the root, which holds only the coordinate variables ``mirror_step`` and ``xtrack`` and the global
attributes; the data live in the groups ``product``, ``geolocation``, ``support_data`` and ``qa_statistics``,
every 2-D field ``(mirror_step, xtrack)``. Float fill values are ``-1e30`` for NO2/HCHO and ``-1.2676506e30``
(−2¹⁰⁰) for O3TOT/CLDO4, int16 ``-32767``. Values are kept raw (``_FillValue`` in each variable's attrs).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from tempocodec.errors import TempocodecError
from tempocodec.granule.naming import parse_tempo_filename, tempo_filename
from tempocodec.granule.netcdf import INT16_FILL, TIME_UNITS, NetCDFSource, VarSpec, read_group, var_spec
from tempocodec.granule.netcdf_write import NetCDFLayout, write_netcdf

PRODUCTS = ("NO2", "HCHO", "O3TOT", "CLDO4")
L2_GROUPS = ("product", "geolocation", "support_data", "qa_statistics")
HEADLINE: dict[str, str] = {
    "NO2": "vertical_column_troposphere",
    "HCHO": "vertical_column",
    "O3TOT": "column_amount_o3",
    "CLDO4": "cloud_fraction",
}
FLOAT_FILL: dict[str, float] = {"NO2": -1e30, "HCHO": -1e30, "O3TOT": -1.2676506e30, "CLDO4": -1.2676506e30}
FILL_THRESHOLD = 1e29  # |value| above this is a fill whatever the declared _FillValue (O3TOT lat/lon hold +9.97e36)
MOLEC_CM2 = "molecules/cm^2"

_QUALITY = dict(
    flag_values=np.array([0, 1, 2], dtype=np.int16),
    flag_meanings="normal suspicious bad",
    valid_min=np.int16(0),
    valid_max=np.int16(2),
)
_COMMON: dict[tuple[str, str], VarSpec] = {
    ("", "mirror_step"): var_spec("i4"),
    ("", "xtrack"): var_spec("i4"),
    ("geolocation", "time"): var_spec(
        "f8",
        units=TIME_UNITS,
        long_name="radiance exposure start time",
        valid_min=np.float64(0),
        valid_max=np.float64(1e10),
    ),
    ("geolocation", "latitude"): var_spec("f4", units="degrees_north"),
    ("geolocation", "longitude"): var_spec("f4", units="degrees_east"),
    ("geolocation", "latitude_bounds"): var_spec("f4", units="degrees_north", comment="(SW,SE,NE,NW)"),
    ("geolocation", "longitude_bounds"): var_spec("f4", units="degrees_east", comment="(SW,SE,NE,NW)"),
    **{
        ("geolocation", a): var_spec("f4", units="degrees")
        for a in (
            "solar_zenith_angle",
            "solar_azimuth_angle",
            "viewing_zenith_angle",
            "viewing_azimuth_angle",
            "relative_azimuth_angle",
        )
    },
    ("qa_statistics", "fit_rms_residual"): var_spec("f4", valid_min=np.float32(0), valid_max=np.float32(1)),
    ("qa_statistics", "fit_convergence_flag"): var_spec(
        "i2", flag_values=np.array([-2, -1, 0, 1], dtype=np.int16), flag_meanings="failed maxiter_exceeded suspect good"
    ),
    ("support_data", "terrain_height"): var_spec("i2", units="m"),
    ("support_data", "ground_pixel_quality_flag"): var_spec("i4"),
    ("support_data", "snow_ice_fraction"): var_spec("f4"),
}
_PRODUCT_VARS: dict[str, dict[tuple[str, str], VarSpec]] = {
    "NO2": {
        **{
            ("product", n): var_spec("f8", units=MOLEC_CM2)
            for n in (
                "vertical_column_troposphere",
                "vertical_column_stratosphere",
                "vertical_column_troposphere_uncertainty",
            )
        },
        ("product", "main_data_quality_flag"): var_spec("i2", **_QUALITY),
        **{
            ("support_data", n): var_spec("f8", units=MOLEC_CM2)
            for n in (
                "vertical_column_total",
                "vertical_column_total_uncertainty",
                "fitted_slant_column",
                "fitted_slant_column_uncertainty",
            )
        },
        ("support_data", "eff_cloud_fraction"): var_spec("f4"),
    },
    "HCHO": {
        ("product", "vertical_column"): var_spec("f8", units=MOLEC_CM2),
        ("product", "vertical_column_uncertainty"): var_spec("f8", units=MOLEC_CM2),
        ("product", "main_data_quality_flag"): var_spec("i2", **_QUALITY),
        ("support_data", "fitted_slant_column"): var_spec("f8", units=MOLEC_CM2),
        ("support_data", "fitted_slant_column_uncertainty"): var_spec("f8", units=MOLEC_CM2),
        ("support_data", "amf_diagnostic_flag"): var_spec("i2"),
        ("support_data", "eff_cloud_fraction"): var_spec("f4"),
    },
    "O3TOT": {
        ("product", "column_amount_o3"): var_spec(
            "f4", units="DU", valid_min=np.float32(50), valid_max=np.float32(700), comment="best total ozone solution"
        ),
        ("product", "radiative_cloud_frac"): var_spec("f4"),
        ("product", "fc"): var_spec("f4"),
        ("product", "quality_flag"): var_spec("u2", valid_min=np.uint16(0), valid_max=np.uint16(65534)),
        ("product", "o3_below_cloud"): var_spec("f4", units="DU", valid_min=np.float32(0), valid_max=np.float32(100)),
        ("product", "so2_index"): var_spec("f4", valid_min=np.float32(-300), valid_max=np.float32(300)),
        ("product", "uv_aerosol_index"): var_spec("f4", valid_min=np.float32(-30), valid_max=np.float32(30)),
        ("support_data", "cloud_pressure"): var_spec("f4", units="hPA"),
        ("support_data", "terrain_pressure"): var_spec("f4", units="hPA"),
        ("support_data", "algorithm_flags"): var_spec("u1"),
    },
    "CLDO4": {
        ("product", "cloud_fraction"): var_spec(
            "f4",
            units="no unit",
            long_name="effective cloud fraction at 466nm",
            valid_min=np.float32(0),
            valid_max=np.float32(1),
        ),
        ("product", "cloud_pressure"): var_spec(
            "f4",
            units="hPa",
            long_name="optical centroid pressure for cloud",
            valid_min=np.float32(0),
            valid_max=np.float32(1200),
        ),
        ("product", "CloudRadianceFraction466"): var_spec("f4"),
        ("product", "CloudRadianceFraction440"): var_spec("f4"),
        ("product", "processing_quality_flag"): var_spec("i2"),
    },
}


@dataclass
class L2Granule:
    """One L2 granule: ``product`` (one of :data:`PRODUCTS`), global ``attrs``, and ``groups`` (group name →
    Dataset of that group: "product", "geolocation", "support_data", "qa_statistics", and any other).

    Each group's Dataset carries the root coordinates ``mirror_step`` (absolute mirror positions) and ``xtrack``;
    values are raw, with ``_FillValue`` in each variable's attrs.
    """

    product: str
    attrs: dict[str, Any]
    groups: dict[str, xr.Dataset]


def l2_filename(product: str, time: datetime, scan: int, granule: int, version: int = 3) -> str:
    """The L2 file name, e.g. ``TEMPO_NO2_L2_V03_20250406T215103Z_S012G07.nc`` (a naive ``time`` is UTC)."""
    _check_product(product, "L2 file name")
    return tempo_filename(product, 2, time, scan, granule, version)


def l2_pattern(product: str, l1b: str | os.PathLike) -> str | None:
    """Glob pattern of ``product``'s L2 files (any version) for the granule of the L1B file name ``l1b`` (same start
    time, scan and granule), or None when ``l1b`` is not a TEMPO granule name."""
    _check_product(product, "L2 file pattern")
    name = parse_tempo_filename(l1b)
    if name is None or name.scan is None or name.granule is None:
        return None
    return f"TEMPO_{product}_L2_V*_{name.time:%Y%m%dT%H%M%SZ}_S{name.scan:03d}G{name.granule:02d}.nc"


def l2_files_beside(l1b: str | os.PathLike) -> dict[str, Path]:
    """L2 product -> the L2 file of the same granule in ``l1b``'s directory (the newest version where several); products
    without one are left out, and a file name that is not a TEMPO granule's gives ``{}``."""
    l1b = Path(l1b)
    out: dict[str, Path] = {}
    for product in PRODUCTS:
        pattern = l2_pattern(product, l1b)
        found = sorted(l1b.parent.glob(pattern)) if pattern is not None else []
        if found:
            out[product] = found[-1]
    return out


def _check_product(product: str, where: str) -> None:
    if product not in PRODUCTS:
        raise TempocodecError(f"{where}: unknown L2 product {product!r} (known: {', '.join(PRODUCTS)})")


def _default_fill(product: str):
    """The fill of a variable with no ``_FillValue`` of its own: the product's float fill, int16 -32767, else none."""

    def fill(dtype: np.dtype) -> Any:
        if dtype.kind == "f":
            return FLOAT_FILL[product]
        return INT16_FILL if dtype == np.int16 else None

    return fill


def l2_layout(product: str) -> NetCDFLayout:
    """The netCDF layout of ``product``: all dimensions at the root, root coordinates ``mirror_step`` and ``xtrack``."""
    specs = {**_COMMON, **_PRODUCT_VARS[product]}
    return NetCDFLayout(
        root_dims=None,
        root_coords=("mirror_step", "xtrack"),
        group_coords={},
        spec=lambda group, name: specs.get((group, name)),
        default_fill=_default_fill(product),
    )


def write_l2(path: str | os.PathLike, granule: L2Granule) -> None:
    """Write ``granule`` as a TEMPO L2 file at ``path`` (atomically; deflate-1 + shuffle for 2-D and larger).

    The "product" group must hold the product's headline field (see :func:`l2_truth`) on (mirror_step, xtrack).
    Known variables get the real dtypes (in place of numpy's float64/int64 defaults), fills and units when the
    Dataset gives none; ``product_type`` is added to the global attributes when missing. Root ``mirror_step``
    and ``xtrack`` come from the groups' coordinates, or ``0..n-1``.
    """
    path = Path(path)
    _check_product(granule.product, str(path))
    headline = HEADLINE[granule.product]
    product = granule.groups.get("product")
    if product is None or headline not in product.variables:
        raise TempocodecError(f"{path}: an L2 {granule.product} granule needs product/{headline}")
    if product[headline].dims != ("mirror_step", "xtrack"):
        raise TempocodecError(
            f"{path}: product/{headline} has dims {product[headline].dims}, expected ('mirror_step', 'xtrack')"
        )
    attrs = dict(granule.attrs)
    declared = attrs.setdefault("product_type", granule.product)
    if declared != granule.product:
        raise TempocodecError(f"{path}: attribute product_type is {declared!r} but the granule is {granule.product}")
    write_netcdf(path, l2_layout(granule.product), attrs, xr.Dataset(), granule.groups)


def read_l2(path: str | os.PathLike) -> L2Granule:
    """Read an L2 file lazily (2-D and larger variables as dask arrays); every top-level group is kept.

    The product is the ``product_type`` attribute, else the file name's, else the one whose headline field is in
    the "product" group. Raises :class:`TempocodecError` for a missing or unreadable file, no "product" group,
    or an unknown product.
    """
    source = NetCDFSource(path)
    with source:
        root = read_group(source, None)
        coords = {str(d): root[d].variable for d in root.dims if d in root.variables}
        names = source.group_names()
        if "product" not in names:
            raise TempocodecError(f"{source.path}: no 'product' group (groups found: {', '.join(names) or 'none'})")
        groups = {g: read_group(source, g, coords=coords) for g in names}
    attrs = dict(root.attrs)
    return L2Granule(product=_product_of(source.path, attrs, groups["product"]), attrs=attrs, groups=groups)


def _product_of(path: Path, attrs: dict[str, Any], product: xr.Dataset) -> str:
    """Which L2 product a file holds: its ``product_type``, its file name, or its headline field."""
    declared = attrs.get("product_type")
    if isinstance(declared, str) and declared in PRODUCTS:
        return declared
    name = parse_tempo_filename(path)
    if name is not None and name.level == 2 and name.product in PRODUCTS:
        return name.product
    found = [p for p in PRODUCTS if HEADLINE[p] in product.variables]
    if len(found) == 1:
        return found[0]
    raise TempocodecError(
        f"{path}: cannot tell which L2 product this is (product_type {declared!r}, no known headline field)"
    )


def l2_truth(granule: L2Granule) -> xr.DataArray:
    """The headline field with fills as NaN: NO2 tropospheric column and HCHO column (molecules/cm^2), O3TOT
    total column (DU), CLDO4 effective cloud fraction; dims (mirror_step, xtrack), lazy if the granule is.

    A value is fill when it equals ``_FillValue`` (attribute, else encoding, else the product default) or its
    magnitude exceeds :data:`FILL_THRESHOLD`.
    """
    _check_product(granule.product, "L2 granule")
    name = HEADLINE[granule.product]
    product = granule.groups.get("product")
    if product is None or name not in product.variables:
        raise TempocodecError(f"L2 {granule.product} granule: no product/{name}")
    var = product[name]
    fill = var.attrs.get("_FillValue", var.encoding.get("_FillValue", FLOAT_FILL[granule.product]))
    values = var.astype(np.result_type(var.dtype, np.float32))
    bad = (var == np.asarray(fill).astype(var.dtype)) | (abs(values) > FILL_THRESHOLD)
    out = values.where(~bad)
    out.attrs = {k: v for k, v in var.attrs.items() if k not in ("_FillValue", "missing_value")}
    return out.rename(name)
