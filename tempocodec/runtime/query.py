"""Level-2 products straight from a store's latents, without decompression (the decoder never runs).

:func:`query_store` reads one band's stored latent means and lossless geometry (:func:`tempocodec.runtime.probes.latent_grid`),
runs the model's probes (ONNX Runtime) on every usable latent cell and returns the products on the latent grid, one
value per 4×4 block of pixels, with the block centres' latitude and longitude. :func:`write_products` writes them as
an L2-like netCDF file; :func:`summary_table` summarizes them.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import xarray as xr
from rich.table import Table

from tempocodec.atomic import check_target
from tempocodec.errors import TempocodecError
from tempocodec.granule.l1b import GEO_FILL
from tempocodec.granule.l2 import FLOAT_FILL
from tempocodec.granule.netcdf import NETCDF_FILE
from tempocodec.granule.netcdf_write import NetCDFLayout, write_netcdf
from tempocodec.runtime.artifacts import ModelArtifacts, find_model, load_model, resolve_model
from tempocodec.runtime.features import GASES
from tempocodec.runtime.location import StoreTarget, locate_store
from tempocodec.runtime.probes import (
    DEFAULT_BAND,
    PRODUCTS,
    ProbeSet,
    check_products,
    latent_grid,
    load_probes,
)
from tempocodec.runtime.store import reading

DIMS = ("latent_row", "latent_col")


def _model_for(name: str, sha256: str, model: str | os.PathLike | None) -> ModelArtifacts:
    """The model whose latents a store holds: ``model`` when given (name or directory), else the one the store names;
    read afresh (probes may have been added since it was loaded) and checked to have the store's sha256."""
    art = load_model(find_model(name, sha256).path if model is None else resolve_model(model))
    if art.sha256 != sha256:
        raise TempocodecError(f"{art.path}: model {art.name!r} has sha256 {art.sha256}, but the store's latents "
                              f"come from model {name!r} (sha256 {sha256})")
    return art


def query_store(store: StoreTarget, products: str | Iterable[str] = tuple(PRODUCTS), band: str = DEFAULT_BAND,
                *, kind: str = "mlp", model: str | os.PathLike | None = None) -> xr.Dataset:
    """Products of ``band`` of the store ``store`` from its latents, on the latent grid.

    ``products``: names among ``cloud_fraction``, ``ozone``, ``no2``, ``hcho`` (or ``"all"``); ``kind``: ``"mlp"``
    or ``"linear"`` probes; ``model``: the model directory or name to take the probes from (default: the model the
    store names, found by name and sha256; it must have the store's sha256 either way).

    Returns a Dataset with float32 data variables ``(latent_row, latent_col)``: ``cloud_fraction`` (units ``1``),
    ``ozone`` (``DU``), ``no2`` and ``hcho`` (``molecules/cm^2``), NaN where a cell has no valid pixel or lacks an
    input, each with the probe's ``heldout_r2`` and ``heldout_rmse`` as attributes; ``no2_uncertainty`` and
    ``hcho_uncertainty`` where the probes read the store's slant columns (their fit noise, propagated);
    coordinates ``latitude``/``longitude`` (degrees, block centres) and each cell's pixel block
    (``pixel_row_start``/``_stop`` along ``latent_row``, ``pixel_col_start``/``_stop`` along ``latent_col``).
    """
    names = check_products(products)
    store = locate_store(store)
    with reading(store, band):
        grid = latent_grid(store, band)
    art = _model_for(grid.latent.attrs["model"], grid.latent.attrs["model_sha256"], model)
    probes = load_probes(art)
    if probes.latent_channels != grid.latent.shape[0]:
        raise TempocodecError(f"{art.path}: probes take {probes.latent_channels} latent channels, the store has "
                              f"{grid.latent.shape[0]}")
    # a store written before product features still answers the products whose probes do not read them
    columns = probes.columns if grid.columns or set(names) & set(GASES) else ()
    features, usable = grid.features(probes.geometry, columns)
    features = np.pad(features, ((0, 0), (0, len(probes.columns) - len(columns))))  # never read by those graphs
    heldout = {(m["product"], m["probe"]): m for m in probes.metrics}
    data = {}
    for name in names:
        data.update(_product_variables(name, kind, probes, features, usable, heldout.get((name, kind))))
    latent = grid.latent
    coords = {
        **{c: latent.coords[c] for c in ("latent_row", "latent_col", "pixel_row_start", "pixel_row_stop",
                                         "pixel_col_start", "pixel_col_stop")},
        "latitude": (DIMS, grid.latitude, {"units": "degrees_north", "long_name": "latitude of the block centre"}),
        "longitude": (DIMS, grid.longitude, {"units": "degrees_east", "long_name": "longitude of the block centre"}),
    }
    attrs = {"source": store.name, "band": band, "model": art.name, "model_sha256": art.sha256, "probe": kind,
             "inputs": f"latent mean ({probes.latent_channels} channels, {latent.attrs['latent_dtype']} as stored)"
                       + "".join(f", {g}" for g in (*probes.geometry, *probes.columns)),
             "grid": f"one cell per {latent.attrs['downsample']}x{latent.attrs['downsample']} block of pixels"}
    return xr.Dataset(data, coords=coords, attrs=attrs)


def _product_variables(name: str, kind: str, probes: ProbeSet, features: np.ndarray, usable: np.ndarray,
                       heldout: dict | None) -> dict[str, tuple]:
    """The Dataset variables of one product on the latent grid ``usable.shape``: its estimate, with the probe's
    held-out R² and RMSE as attributes, and for the trace gases (probes that read the stored slant columns)
    ``<name>_uncertainty``, the estimate's 1-σ from the slant columns' fit noise (:meth:`ProbeSet.column_noise`)."""
    product = PRODUCTS[name]
    values = np.full(usable.shape, np.nan, np.float32)
    values[usable] = probes.predict(name, kind, features)
    attrs = {"units": product.units, "long_name": f"{product.long_name} (probe estimate from latents)",
             "estimates": f"TEMPO {product.l2_product} L2 product/{product.l2_variable}", "probe": kind}
    if heldout is not None:
        attrs["heldout_r2"], attrs["heldout_rmse"] = heldout["r2"], heldout["rmse"]
    out = {name: (DIMS, values, attrs)}
    noise = probes.column_noise(name, kind, features) if name in GASES else None
    if noise is not None:
        sigma = np.full(usable.shape, np.nan, np.float32)
        sigma[usable] = noise
        out[f"{name}_uncertainty"] = (DIMS, sigma, {
            "units": product.units, "probe": kind,
            "long_name": f"1-sigma of {name} from the DOAS fit noise of the stored slant columns (probe error not "
                         "included: see heldout_rmse of the product)"})
    return out


def write_products(ds: xr.Dataset, path: str | os.PathLike, *, overwrite: bool = False) -> Path:
    """Write a :func:`query_store` Dataset as an L2-like netCDF-4 file (atomically; an existing ``path`` is replaced
    only with ``overwrite`` and only when it is a netCDF-4 file).

    Layout: dimensions ``latent_row``, ``latent_col`` and their coordinate variables at the root; group ``product``
    with the products (float32, NaN written as the L2 product's fill value, ``_FillValue`` set); group
    ``geolocation`` with ``latitude``, ``longitude`` and the pixel block of each cell; global attributes from ``ds``.
    """
    path = Path(path)
    replace = NETCDF_FILE if overwrite else None
    check_target(path, replace)
    product = xr.Dataset()
    for name, var in ds.data_vars.items():
        fill = np.float32(FLOAT_FILL[PRODUCTS[str(name).removesuffix('_uncertainty')].l2_product])
        product[name] = (DIMS, np.where(np.isnan(var.values), fill, var.values).astype(np.float32),
                         {**var.attrs, "_FillValue": fill})
    geolocation = xr.Dataset()
    for name in ("latitude", "longitude"):
        var = ds[name]
        geolocation[name] = (DIMS, np.where(np.isnan(var.values), GEO_FILL, var.values).astype(np.float32),
                             {**var.attrs, "_FillValue": GEO_FILL})
    for name in ("pixel_row_start", "pixel_row_stop", "pixel_col_start", "pixel_col_stop"):
        geolocation[name] = (ds[name].dims, ds[name].values.astype(np.int32))
    layout = NetCDFLayout(root_dims=None, root_coords=DIMS, group_coords={}, spec=lambda group, name: None,
                          default_fill=lambda dtype: None)
    attrs = {**ds.attrs, "title": "TEMPO Level-2 products estimated from tempocodec latents"}
    write_netcdf(path, layout, attrs, xr.Dataset(), {"product": product, "geolocation": geolocation}, replace=replace)
    return path


def summary_table(ds: xr.Dataset) -> Table:
    """A rich table: per product, the probe, valid cells of all, and the 5th, 50th and 95th percentiles."""
    table = Table(title=f"{ds.attrs.get('source', '')} {ds.attrs.get('band', '')}: products on the latent grid "
                        f"{ds.sizes['latent_row']}×{ds.sizes['latent_col']} ({ds.attrs.get('model', '')})")
    for col in ("product", "units", "probe", "cells", "p5", "median", "p95"):
        table.add_column(col, justify="left" if col in ("product", "units", "probe") else "right")
    for name, var in ds.data_vars.items():
        values = var.values[np.isfinite(var.values)]
        p5, p50, p95 = np.percentile(values, (5, 50, 95)) if values.size else (np.nan,) * 3
        table.add_row(str(name), var.attrs["units"], var.attrs["probe"], f"{values.size}/{var.size}",
                      f"{p5:.4g}", f"{p50:.4g}", f"{p95:.4g}")
    return table


def metrics_table(rows: list[dict]) -> Table:
    """A rich table of held-out probe metrics (the rows of ``probes.json``'s ``metrics``)."""
    table = Table(title="probes on held-out granules (R² in physical units; 'mean' predicts the training mean)")
    for col in ("product", "probe", "cells", "R²", "R² (fit scale)", "RMSE", "bias", "units"):
        table.add_column(col, justify="left" if col in ("product", "probe", "units") else "right")
    for m in rows:
        table.add_row(m["product"], m["probe"], str(m["cells"]), f"{m['r2']:.3f}", f"{m['r2_fit_scale']:.3f}",
                      f"{m['rmse']:.4g}", f"{m['bias']:.3g}", m["units"])
    return table
