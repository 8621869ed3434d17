"""Probes: Level-2 products regressed from a store's latent means, and the inputs they read (numpy + ONNX Runtime).

A probe maps the inputs of one latent cell (one 4×4 block of pixels) to one product: the encoder's latent mean as
stored (``tempocodec.codec.latents``; float16 in a default store), optionally followed by the cell's viewing geometry
(:data:`GEOMETRY_INPUTS`, pooled from the store's lossless per-pixel angles). Each product has a linear and an MLP
probe, ONNX graphs in ``MODEL_DIR/probes/`` with input ``"features"`` float32 ``(N, F)`` and output ``"y"`` float32
``(N, 1)`` on the product's fit scale; ``probes/probes.json`` holds the inputs, each product's
:class:`TargetTransform` and the held-out metrics. Training lives in ``tempocodec.training.probe_training`` (torch).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np
import xarray as xr
import zarr

from tempocodec.codec.latents import read_latents
from tempocodec.errors import TempocodecError
from tempocodec.granule.l2 import FILL_THRESHOLD, HEADLINE, MOLEC_CM2
from tempocodec.prepare.tiles import pool_to_latent
from tempocodec.runtime.artifacts import ModelArtifacts, session
from tempocodec.runtime.features import FEATURES_GROUP, GASES, decode, derived_columns, feature_names
from tempocodec.runtime.location import StoreTarget, locate_store
from tempocodec.runtime.store import check_arrays, open_root, store_meta, store_node

PROBES_FORMAT = "tempocodec-probes/1"
PROBES_DIR = "probes"
PROBES_FILE = f"{PROBES_DIR}/probes.json"
PROBE_KINDS = ("linear", "mlp")
GEOMETRY_INPUTS = ("cos_solar_zenith", "cos_viewing_zenith", "cos_relative_azimuth")
DEFAULT_BAND = "band_290_490_nm"


@dataclass(frozen=True)
class Product:
    """One product a probe predicts: its query ``name``, the TEMPO L2 product (``level2.PRODUCTS``) whose headline
    field is its truth, ``units`` and ``long_name`` of the output, and the target transform kind and scale."""

    name: str
    l2_product: str
    units: str
    long_name: str
    transform: str
    scale: float

    @property
    def l2_variable(self) -> str:
        """The L2 variable the product estimates (group ``product``)."""
        return HEADLINE[self.l2_product]


PRODUCTS: dict[str, Product] = {
    "cloud_fraction": Product("cloud_fraction", "CLDO4", "1", "effective cloud fraction at 466 nm", "identity", 1.0),
    "ozone": Product("ozone", "O3TOT", "DU", "total ozone column", "identity", 1.0),
    "no2": Product("no2", "NO2", MOLEC_CM2, "tropospheric NO2 vertical column", "asinh", 1e15),
    "hcho": Product("hcho", "HCHO", MOLEC_CM2, "HCHO vertical column", "asinh", 1e15),
}


def check_products(products: str | Iterable[str]) -> tuple[str, ...]:
    """Product names in :data:`PRODUCTS` order from a name, ``"all"``, a comma-separated string or an iterable."""
    names = products.split(",") if isinstance(products, str) else list(products)
    names = [n.strip() for n in names if n.strip()]
    if "all" in names:
        return tuple(PRODUCTS)
    unknown = [n for n in names if n not in PRODUCTS]
    if unknown or not names:
        raise TempocodecError(f"unknown product {', '.join(map(repr, unknown)) or '(none given)'} "
                              f"(known: {', '.join(PRODUCTS)}, all)")
    return tuple(p for p in PRODUCTS if p in names)


@dataclass(frozen=True)
class TargetTransform:
    """Physical value ``v`` -> fit scale ``y = (g(v) - mean) / std``, with ``g(v) = v`` (``"identity"``) or
    ``g(v) = asinh(v / scale)`` (``"asinh"``: logarithmic above ``scale``, linear and sign-safe near zero)."""

    kind: str
    scale: float
    mean: float
    std: float

    def _g(self, values: np.ndarray) -> np.ndarray:
        values = np.asarray(values, np.float64)
        return np.arcsinh(values / self.scale) if self.kind == "asinh" else values

    def forward(self, values: np.ndarray) -> np.ndarray:
        """Physical values -> fit scale, float64 of the same shape."""
        return (self._g(values) - self.mean) / self.std

    def inverse(self, y: np.ndarray) -> np.ndarray:
        """Fit scale -> physical values, float64 of the same shape."""
        g = np.asarray(y, np.float64) * self.std + self.mean
        return self.scale * np.sinh(g) if self.kind == "asinh" else g

    @classmethod
    def fit(cls, product: Product, values: np.ndarray) -> TargetTransform:
        """The transform of ``product`` standardized on the finite ``values`` (physical units)."""
        g = cls(product.transform, product.scale, 0.0, 1.0)._g(values)
        g = g[np.isfinite(g)]
        std = float(g.std()) if g.size else 1.0
        return cls(product.transform, product.scale, float(g.mean()) if g.size else 0.0, std if std > 0 else 1.0)

    def to_json(self) -> dict[str, float | str]:
        """JSON-able form."""
        return {"kind": self.kind, "scale": self.scale, "mean": self.mean, "std": self.std}


# --------------------------------------------------------------------------------------------------- inputs


@dataclass(frozen=True)
class LatentGrid:
    """What the probes read from one band of a store, on its latent grid ``(rows, cols)``.

    ``latent``: the stored latent means, float32 ``(Z, rows, cols)`` DataArray from :func:`tempocodec.codec.latents.read_latents`
    (NaN where a cell has no valid pixel); ``geometry``: :data:`GEOMETRY_INPUTS` name -> float32 ``(rows, cols)``,
    block means of the per-pixel values; ``latitude``, ``longitude``: float32 ``(rows, cols)`` degrees, the block
    centres (mean of the pixel centres). Geometry and positions are NaN where no pixel of the block has them.
    ``columns``: the store's product features (:func:`tempocodec.runtime.features.feature_names` -> float32
    ``(rows, cols)``, slant columns and their 1-σ in 1e15 molecules cm⁻²), empty for a store written without them.
    """

    latent: xr.DataArray
    geometry: dict[str, np.ndarray]
    latitude: np.ndarray
    longitude: np.ndarray
    columns: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def shape(self) -> tuple[int, int]:
        """``(rows, cols)`` of the latent grid."""
        return self.latent.shape[1], self.latent.shape[2]

    def features(self, geometry: Iterable[str], columns: Iterable[str] = ()) -> tuple[np.ndarray, np.ndarray]:
        """Probe inputs: float32 ``(N, Z + G + S)`` for the ``N`` usable cells (every input finite), in row-major
        order, and bool ``(rows, cols)``, true at those cells. ``geometry`` names the geometry inputs appended, in
        order, then ``columns`` the product features (raise when the store has none)."""
        columns = tuple(columns)
        if columns and not self.columns:
            raise TempocodecError("the probes read the store's product features (DOAS slant columns), which this "
                                  "store lacks (written before they existed): compress the granule again")
        planes = [self.latent.values, *(self.geometry[name][None] for name in geometry),
                  *(self.columns[name][None] for name in columns)]
        stack = np.concatenate(planes, axis=0).astype(np.float32)
        usable = np.all(np.isfinite(stack), axis=0)
        return np.ascontiguousarray(stack[:, usable].T), usable


def _pixel_field(group: zarr.Group, name: str, where: str) -> np.ndarray:
    """A per-pixel ``(mirror_step, xtrack)`` array of a band group as float64, fills (``|v| > 1e29``, non-finite) NaN."""
    if name not in group:
        raise TempocodecError(f"{where}: no {name} in the band group (the probes need it)")
    values = np.asarray(store_node(group, name, zarr.Array, where)[...], np.float64)
    return np.where(np.isfinite(values) & (np.abs(values) <= FILL_THRESHOLD), values, np.nan)


def _relative_azimuth(solar: np.ndarray, viewing: np.ndarray) -> np.ndarray:
    """|solar − viewing azimuth| folded into [0, 180] degrees."""
    diff = np.abs(solar - viewing) % 360.0
    return np.where(diff > 180.0, 360.0 - diff, diff)


def latent_grid(store: StoreTarget, band: str = DEFAULT_BAND) -> LatentGrid:
    """Read the probe inputs of ``band`` from a store written by :func:`tempocodec.runtime.store.compress_granule`.

    Only the stored latent bytes and the small lossless per-pixel variables are read (through zarr, no xarray or
    dask): the decoder never runs.
    """
    path = locate_store(store)
    root = open_root(path)
    bands = store_meta(root)["bands"]
    if band not in bands:
        raise TempocodecError(f"{path}: no band {band} (the store holds {', '.join(bands)})")
    if bands[band].get("radiance") != "vae":
        raise TempocodecError(f"{path}: band {band} has no latents (radiance kept {bands[band].get('radiance')}: "
                              f"{bands[band].get('reason', 'no reason recorded')})")
    where = f"{path}/{band}"
    group = store_node(root, band, zarr.Group, path)
    names = ("solar_zenith_angle", "viewing_zenith_angle", "solar_azimuth_angle", "viewing_azimuth_angle",
             "latitude", "longitude")
    stored = [f"{FEATURES_GROUP}/{n}" for n in feature_names()] if FEATURES_GROUP in group else []
    check_arrays(root, [f"{band}/{name}" for name in ("radiance", *names, *stored) if name in group], path)  # one listing
    latent = read_latents(store_node(group, "radiance", zarr.Array, where))
    d = int(latent.attrs["downsample"])
    fields = {name: _pixel_field(group, name, where) for name in names}
    per_pixel = {
        "cos_solar_zenith": np.cos(np.radians(fields["solar_zenith_angle"])),
        "cos_viewing_zenith": np.cos(np.radians(fields["viewing_zenith_angle"])),
        "cos_relative_azimuth": np.cos(np.radians(_relative_azimuth(fields["solar_azimuth_angle"],
                                                                    fields["viewing_azimuth_angle"]))),
    }
    grid = LatentGrid(latent=latent, geometry={k: pool_to_latent(v, d) for k, v in per_pixel.items()},
                      latitude=pool_to_latent(fields["latitude"], d), longitude=pool_to_latent(fields["longitude"], d),
                      columns=_stored_columns(group, band, path))
    if grid.columns:
        air_mass = 1.0 / grid.geometry["cos_solar_zenith"] + 1.0 / grid.geometry["cos_viewing_zenith"]
        grid.columns.update(derived_columns(grid.columns, air_mass))
    for name, plane in {"geolocation": grid.latitude, **grid.columns}.items():
        if plane.shape != grid.shape:
            raise TempocodecError(f"{where}: {name} grid {plane.shape} differs from the latent grid {grid.shape}")
    return grid


def _stored_columns(group: zarr.Group, band: str, path: object) -> dict[str, np.ndarray]:
    """The product features of a band (:func:`tempocodec.runtime.features.decode`; the caller checked them against
    the integrity record); empty when the store has none."""
    if FEATURES_GROUP not in group:
        return {}
    where = f"{path}/{band}"
    return decode(store_node(group, FEATURES_GROUP, zarr.Group, where), where)


# --------------------------------------------------------------------------------------------------- probes


@dataclass(frozen=True)
class ProbeSet:
    """The probes of a model directory (``probes/probes.json``): ``latent_channels``, ``geometry`` and ``columns``
    (stored product features; empty for probes on latents and geometry only) inputs,
    product -> :class:`TargetTransform`, product -> kind -> graph name for :func:`tempocodec.runtime.artifacts.session`
    (e.g. ``"probes/no2_mlp"``), and the held-out ``metrics`` rows written at training."""

    model: ModelArtifacts
    latent_channels: int
    geometry: tuple[str, ...]
    columns: tuple[str, ...]
    transforms: dict[str, TargetTransform]
    graphs: dict[str, dict[str, str]]
    metrics: list[dict]

    def predict(self, product: str, kind: str, features: np.ndarray) -> np.ndarray:
        """``product`` in physical units, float64 ``(N,)``, from features float32 ``(N, latent_channels + G)``."""
        if kind not in PROBE_KINDS:
            raise TempocodecError(f"unknown probe kind {kind!r} (known: {', '.join(PROBE_KINDS)})")
        if product not in self.graphs or kind not in self.graphs[product]:
            raise TempocodecError(f"{self.model.path}: no {kind} probe for {product}; run tempocodec train-probes first")
        if features.shape[0] == 0:
            return np.zeros(0)
        (y,) = session(self.model, self.graphs[product][kind]).run(["y"], {"features": features})
        return self.transforms[product].inverse(y[:, 0])


    def column_noise(self, product: str, kind: str, features: np.ndarray) -> np.ndarray | None:
        """1-σ of ``product`` (physical units, float64 ``(N,)``) from the fit noise of the stored slant columns: each
        gas's column moved by ± its stored 1-σ, the halved differences of the predictions added in quadrature. None
        when the probes read no slant columns."""
        start = self.latent_channels + len(self.geometry)
        pairs = [(self.columns.index(f"{g}_scd"), self.columns.index(f"{g}_scd_error")) for g in GASES
                 if f"{g}_scd" in self.columns and f"{g}_scd_error" in self.columns]
        if not pairs:
            return None
        steps = []
        for scd, error in pairs:
            step = np.zeros_like(features)
            step[:, start + scd] = features[:, start + error]
            steps += [features + step, features - step]
        moved = self.predict(product, kind, np.concatenate(steps)).reshape(len(steps), -1)  # one graph run
        variance = np.sum(((moved[0::2] - moved[1::2]) / 2.0) ** 2, axis=0)
        return np.sqrt(variance)


def load_probes(model: ModelArtifacts) -> ProbeSet:
    """The probes of a loaded model; raise when it has none (``probes/probes.json`` not in its manifest)."""
    if PROBES_FILE not in model.files:
        raise TempocodecError(f"model {model.name} ({model.path}) has no probes: run tempocodec train-probes first")
    path = model.path / PROBES_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise TempocodecError(f"{path}: unreadable probe description ({err})") from None
    if data.get("format") != PROBES_FORMAT:
        raise TempocodecError(f"{path}: not a {PROBES_FORMAT} file (format {data.get('format')!r})")
    products = data["products"]
    return ProbeSet(
        model=model,
        latent_channels=int(data["inputs"]["latent_channels"]),
        geometry=tuple(data["inputs"]["geometry"]),
        columns=tuple(data["inputs"].get("columns", ())),
        transforms={p: TargetTransform(**entry["transform"]) for p, entry in products.items()},
        graphs={p: {k: g.removesuffix(".onnx") for k, g in entry["graphs"].items()} for p, entry in products.items()},
        metrics=list(data.get("metrics", [])),
    )


def r2_rmse_bias(prediction: np.ndarray, truth: np.ndarray) -> tuple[float, float, float]:
    """R² (1 − SSE / sum of squares about the truth's mean), RMSE and mean bias (prediction − truth) of equal-length
    arrays; NaN for empty input (and R² NaN for a constant truth)."""
    prediction, truth = np.asarray(prediction, np.float64), np.asarray(truth, np.float64)
    if truth.size == 0:
        return math.nan, math.nan, math.nan
    error = prediction - truth
    total = float(((truth - truth.mean()) ** 2).sum())
    r2 = 1.0 - float((error**2).sum()) / total if total > 0 else math.nan
    return r2, float(np.sqrt((error**2).mean())), float(error.mean())
