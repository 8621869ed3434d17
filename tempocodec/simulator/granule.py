"""A simulated granule: the scene's band radiances in the L1B layout plus its L2 truth, with the global attributes
of real TEMPO files (times, bounds, file names)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta

import numpy as np
import xarray as xr

from tempocodec.errors import TempocodecError
from tempocodec.granule.l1b import BANDS, GEO_FILL, L1B_BAND_VARS, RADIANCE_FILL, RADIANCE_UNITS, L1BGranule
from tempocodec.granule.l2 import L2Granule, l2_filename
from tempocodec.granule.naming import l1b_filename
from tempocodec.granule.netcdf import INT16_FILL, INT32_FILL, TIME_UNITS
from tempocodec.science.spectroscopy import band_spectra
from tempocodec.simulator.atmosphere import slant_columns
from tempocodec.simulator.config import SceneConfig, resolve_bands
from tempocodec.simulator.geometry import STEP_SECONDS
from tempocodec.simulator.radiance import ERROR_DIGITS, BandRadiance, band_radiance
from tempocodec.simulator.scene import Scene, ground_pixel_quality, make_scene
from tempocodec.simulator.truth import level2_truth

EXPOSURE_SECONDS = np.float32(2.85)
STEPS_PER_GRANULE = 131

# ------------------------------------------------------------------------------------------------ Level-1B


def _band_dataset(scene: Scene, band: str, data: BandRadiance, mirror_step: np.ndarray) -> xr.Dataset:
    """One L1B band group with the real variable names, dims, dtypes, fills and units."""
    geo = scene.geometry
    cols = scene.shape[1]
    dims3 = ("mirror_step", "xtrack", "spectral_channel")
    dims2 = ("mirror_step", "xtrack")
    corner = ("mirror_step", "xtrack", "corner")

    def geo_var(values: np.ndarray, dims: tuple[str, ...], units: str, **attrs: object) -> xr.Variable:
        return xr.Variable(dims, np.asarray(values, np.float32), {"_FillValue": GEO_FILL, "units": units, **attrs})

    variables = {
        "radiance": xr.Variable(dims3, data.radiance, {
            "_FillValue": RADIANCE_FILL, "units": RADIANCE_UNITS, "long_name": "Earth radiance (simulated)",
            "coordinates": "longitude latitude spectral_channel", "ancillary_variables": "radiance_error"}),
        "radiance_error": xr.Variable(dims3, data.radiance_error, {
            "_FillValue": RADIANCE_FILL, "units": RADIANCE_UNITS, "long_name": "radiance 1-sigma noise (simulated)",
            "number_of_significant_digits": np.int32(ERROR_DIGITS)}),
        "pixel_quality_flag": xr.Variable(dims3, data.pixel_quality_flag,
                                          {"_FillValue": INT16_FILL, **L1B_BAND_VARS["pixel_quality_flag"].attrs}),
        "nominal_wavelength": xr.Variable(("xtrack", "spectral_channel"),
                                          band_spectra(band, cols).wavelength.astype(np.float32), {"units": "nm"}),
        "latitude": geo_var(geo.latitude, dims2, "degrees_north", bounds="latitude_bounds"),
        "longitude": geo_var(geo.longitude, dims2, "degrees_east", bounds="longitude_bounds"),
        "latitude_bounds": geo_var(geo.latitude_bounds, corner, "degrees_north",
                                   long_name="latitude bounds (NE,NW,SW,SE)"),
        "longitude_bounds": geo_var(geo.longitude_bounds, corner, "degrees_east",
                                    long_name="longitude bounds (NE,NW,SW,SE)"),
        "solar_zenith_angle": geo_var(geo.solar_zenith, dims2, "degrees"),
        "solar_azimuth_angle": geo_var(geo.solar_azimuth, dims2, "degrees"),
        "viewing_zenith_angle": geo_var(geo.viewing_zenith, dims2, "degrees"),
        "viewing_azimuth_angle": geo_var(geo.viewing_azimuth, dims2, "degrees"),
        "terrain_height": xr.Variable(dims2, np.round(scene.terrain_height).astype(np.int16),
                                      {"_FillValue": INT16_FILL, "units": "m"}),
        "ground_pixel_quality_flag": xr.Variable(dims2, ground_pixel_quality(scene), {"_FillValue": INT32_FILL}),
        "snow_ice_fraction": geo_var(scene.snow_fraction, dims2, "1"),
    }
    return xr.Dataset(variables, coords={"mirror_step": xr.Variable("mirror_step", mirror_step),
                                         "xtrack": xr.Variable("xtrack", np.arange(cols, dtype=np.int32))})


def _granule_attrs(scene: Scene, scan: int, granule_index: int, product: str, local_id: str) -> dict[str, object]:
    """Global attributes common to the simulated L1B and L2 files."""
    geo = scene.geometry
    start = geo.start
    end = start + timedelta(seconds=STEP_SECONDS * scene.shape[0])
    lat_b, lon_b = geo.latitude_bounds, geo.longitude_bounds
    corners = [(lat_b[0, 0, 3], lon_b[0, 0, 3]), (lat_b[-1, 0, 2], lon_b[-1, 0, 2]),
               (lat_b[-1, -1, 1], lon_b[-1, -1, 1]), (lat_b[0, -1, 0], lon_b[0, -1, 0])]
    polygon = ", ".join(f"{la:.4f} {lo:.4f}" for la, lo in [*corners, corners[0]])
    return {
        "product_type": product,
        "processing_version": np.int32(3),
        "scan_num": np.int32(scan),
        "granule_num": np.int32(granule_index),
        "time_reference": "1980-01-06T00:00:00Z",
        "time_coverage_start": f"{start:%Y-%m-%dT%H:%M:%SZ}",
        "time_coverage_end": f"{end:%Y-%m-%dT%H:%M:%SZ}",
        "time_coverage_start_since_epoch": np.float64(geo.time[0]),
        "time_coverage_end_since_epoch": np.float64(geo.time[0] + STEP_SECONDS * scene.shape[0]),
        "begin_date": f"{start:%Y-%m-%d}", "begin_time": f"{start:%H:%M:%S}",
        "end_date": f"{end:%Y-%m-%d}", "end_time": f"{end:%H:%M:%S}",
        "geospatial_bounds": f"POLYGON(({polygon}))",
        "geospatial_bounds_crs": "EPSG:4326",
        "geospatial_lat_min": np.float32(np.min(lat_b)), "geospatial_lat_max": np.float32(np.max(lat_b)),
        "geospatial_lon_min": np.float32(np.min(lon_b)), "geospatial_lon_max": np.float32(np.max(lon_b)),
        "local_granule_id": local_id,
        "project": "TEMPO",
        "source": "tempocodec simulator (SIMULATED DATA, not a TEMPO measurement)",
        "simulation_seed": np.int64(scene.config.seed),
        "Conventions": "CF-1.6, ACDD-1.3",
    }


def level1b(scene: Scene, bands: dict[str, BandRadiance], scan: int, granule_index: int) -> L1BGranule:
    """The L1B granule of ``scene`` with the given band radiances."""
    rows = scene.shape[0]
    mirror_step = (2 + (granule_index - 1) * STEPS_PER_GRANULE + np.arange(rows)).astype(np.int32)
    attrs = _granule_attrs(scene, scan, granule_index, "RAD", l1b_filename(scene.geometry.start, scan, granule_index))
    attrs["processing_level"] = np.int32(1)
    attrs["title"] = "TEMPO Level 1B radiance of a simulated granule"
    root = xr.Dataset(
        {"time": xr.Variable("mirror_step", scene.geometry.time.copy(), {"units": TIME_UNITS}),
         "exposure_time": xr.Variable("mirror_step", np.full(rows, EXPOSURE_SECONDS, np.float32), {"units": "s"}),
         "granule_flag": xr.Variable((), np.int32(1 if granule_index == 1 else 0)),
         "earth_sun_distance": xr.Variable((), np.float32(scene.geometry.earth_sun_distance), {"units": "m"})},
        coords={"mirror_step": xr.Variable("mirror_step", mirror_step)})
    datasets = {band: _band_dataset(scene, band, data, mirror_step) for band, data in bands.items()}
    return L1BGranule(attrs=attrs, root=root, bands=datasets)


# ------------------------------------------------------------------------------------------------ granule


def simulate_granule(rows: int, cols: int, seed: int, *, bands: str | Sequence[str] = BANDS, scan: int = 1,
                     granule_index: int = 1, config: SceneConfig | None = None) -> tuple[L1BGranule, dict[str, L2Granule]]:
    """Simulate one granule of ``rows`` mirror steps × ``cols`` cross-track pixels: the L1B granule (the requested
    bands) and its L2 truth (``{"NO2", "HCHO", "O3TOT", "CLDO4"}``). ``config`` overrides the default
    :class:`SceneConfig` (its rows, cols and seed must match). Deterministic for a seed; the scene and the truth
    do not depend on which bands are simulated."""
    config = config if config is not None else SceneConfig(rows=rows, cols=cols, seed=seed)
    if (config.rows, config.cols, config.seed) != (rows, cols, seed):
        raise TempocodecError(f"simulate: config is for {config.rows}×{config.cols} seed {config.seed}, "
                              f"not {rows}×{cols} seed {seed}")
    if not 0 <= scan <= 999 or not 0 <= granule_index <= 99:
        raise TempocodecError(f"simulate: scan {scan} must be 0..999 and granule {granule_index} 0..99")
    band_names = resolve_bands(bands)
    scene = make_scene(config)
    columns = slant_columns(scene)
    l1b = level1b(scene, {b: band_radiance(scene, b, columns) for b in band_names}, scan, granule_index)
    mirror_step = np.asarray(l1b.root["mirror_step"].values)
    l1b_name = l1b.attrs["local_granule_id"]
    l2 = {}
    for product, granule in level2_truth(scene, columns, mirror_step).items():
        name = l2_filename(product, scene.geometry.start, scan, granule_index)
        attrs = _granule_attrs(scene, scan, granule_index, product, name)
        attrs["input_files"] = l1b_name
        granule.attrs = {**attrs, **granule.attrs}
        l2[product] = granule
    return l1b, l2
