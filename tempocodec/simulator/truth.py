"""The Level-2 "truth" of a simulated scene: NO2, HCHO, O3TOT and CLDO4 granules in the real L2 layout.

Every field is ``(mirror_step, xtrack)`` with the product's fill where the pixel has no radiance; uncertainties
follow from the instrument noise (DOAS Cramér-Rao bound, see :func:`doas_sensitivity`).
"""

from __future__ import annotations

import numpy as np
import xarray as xr

from tempocodec.granule.l1b import BANDS
from tempocodec.granule.l2 import FLOAT_FILL, MOLEC_CM2, L2Granule
from tempocodec.granule.netcdf import INT16_FILL, INT32_FILL, TIME_UNITS
from tempocodec.science.spectroscopy import band_spectra, nominal_wavelength
from tempocodec.simulator.atmosphere import ReferenceReflectance, SlantColumns
from tempocodec.simulator.physics import AU_M, REFERENCE_NM
from tempocodec.simulator.scene import Scene, ground_pixel_quality

FIT_WINDOWS_NM = {"no2": (405.0, 465.0), "hcho": (328.5, 356.5), "o4": (460.0, 490.0)}


def _noise_relative(scene: Scene, ref: ReferenceReflectance, wavelength_nm: float) -> np.ndarray:
    """Relative 1-σ noise of the clear/cloudy mixture radiance at one wavelength (no absorbers), ``(rows, cols)``."""
    geo = scene.geometry
    solar = float(np.interp(wavelength_nm, nominal_wavelength(_band_of(wavelength_nm)),
                            band_spectra(_band_of(wavelength_nm), 1).solar[0]))
    radiance = solar * geo.mu0 / np.pi * (AU_M / geo.earth_sun_distance) ** 2 * ref.total
    return scene.config.noise.sigma(radiance) / radiance


def _band_of(wavelength_nm: float) -> str:
    """The band whose nominal grid covers ``wavelength_nm``."""
    return BANDS[0] if wavelength_nm < 520.0 else BANDS[1]


def doas_sensitivity(name: str, window_nm: tuple[float, float], degree: int = 3) -> float:
    """``sqrt(Σ σ'²)`` over a fitting window (cm², cm⁵ for o4): σ' is the cross section minus a polynomial of
    ``degree`` in wavelength, on the nominal grid of the window's band. The 1-σ slant column error of a DOAS fit
    with relative noise ε per channel is ε / ``doas_sensitivity`` (Cramér-Rao bound, one absorber)."""
    band = _band_of(window_nm[0])
    wavelength = nominal_wavelength(band)
    inside = (wavelength >= window_nm[0]) & (wavelength <= window_nm[1])
    sigma = band_spectra(band, 1).cross_section(name)[0][inside]
    x = (wavelength[inside] - wavelength[inside].mean()) / np.ptp(wavelength[inside])
    residual = sigma - np.polyval(np.polyfit(x, sigma, degree), x)
    return float(np.sqrt(np.sum(residual**2)))


def _coords(scene: Scene, mirror_step: np.ndarray) -> dict[str, xr.Variable]:
    """Coordinates every Level-2 group carries: absolute ``mirror_step`` and ``xtrack`` (int32)."""
    return {"mirror_step": xr.Variable("mirror_step", mirror_step),
            "xtrack": xr.Variable("xtrack", np.arange(scene.shape[1], dtype=np.int32))}


def _grid(values: np.ndarray, dtype: str, fill: float | np.generic | None, invalid: np.ndarray | None = None,
          **attrs: object) -> xr.Variable:
    """A ``(mirror_step, xtrack)`` variable of ``dtype`` with ``fill`` where ``invalid`` (and ``_FillValue`` set)."""
    data = np.asarray(values).astype(dtype)
    if fill is not None:
        fill_value = np.asarray(fill).astype(dtype)[()]
        attrs = {"_FillValue": fill_value, **attrs}
        if invalid is not None:
            data = np.where(invalid, fill_value, data).astype(dtype)
    return xr.Variable(("mirror_step", "xtrack"), data, attrs)


def _quality(scene: Scene, invalid: np.ndarray, cloud_limit: float | None) -> np.ndarray:
    """0 normal, 1 suspicious (SZA > 70° or cloud fraction above ``cloud_limit``), 2 bad (no input or SZA > 80°)."""
    sza = scene.geometry.solar_zenith
    flag = np.zeros(scene.shape, np.int16)
    suspicious = sza > 70.0
    if cloud_limit is not None:
        suspicious |= scene.cloud_fraction > cloud_limit
    flag[suspicious] = 1
    flag[invalid | (sza > 80.0)] = 2
    return flag


def _geolocation(scene: Scene, product: str, mirror_step: np.ndarray) -> xr.Dataset:
    """The L2 ``geolocation`` group (corners reordered to SW, SE, NE, NW)."""
    geo = scene.geometry
    fill = FLOAT_FILL[product]
    corners = [2, 3, 0, 1]
    variables = {
        "time": xr.Variable("mirror_step", geo.time.copy(), {"units": TIME_UNITS}),
        "latitude": _grid(geo.latitude, "f4", fill, units="degrees_north"),
        "longitude": _grid(geo.longitude, "f4", fill, units="degrees_east"),
        "latitude_bounds": xr.Variable(("mirror_step", "xtrack", "corner"), geo.latitude_bounds[..., corners].astype("f4"),
                                       {"_FillValue": np.float32(fill), "units": "degrees_north", "comment": "(SW,SE,NE,NW)"}),
        "longitude_bounds": xr.Variable(("mirror_step", "xtrack", "corner"), geo.longitude_bounds[..., corners].astype("f4"),
                                        {"_FillValue": np.float32(fill), "units": "degrees_east", "comment": "(SW,SE,NE,NW)"}),
        "solar_zenith_angle": _grid(geo.solar_zenith, "f4", fill, units="degrees"),
        "solar_azimuth_angle": _grid(geo.solar_azimuth, "f4", fill, units="degrees"),
        "viewing_zenith_angle": _grid(geo.viewing_zenith, "f4", fill, units="degrees"),
        "viewing_azimuth_angle": _grid(geo.viewing_azimuth, "f4", fill, units="degrees"),
        "relative_azimuth_angle": _grid(geo.relative_azimuth, "f4", fill, units="degrees"),
    }
    if product == "O3TOT":
        variables["terrain_height"] = _grid(np.round(scene.terrain_height), "i2", INT16_FILL, units="m")
    return xr.Dataset(variables, coords=_coords(scene, mirror_step))


def _surface_support(scene: Scene, product: str, invalid: np.ndarray) -> dict[str, xr.Variable]:
    """Support fields shared by the L2 products: terrain, snow/ice, ground flags, surface pressure."""
    fill = FLOAT_FILL[product]
    out = {
        "snow_ice_fraction": _grid(scene.snow_fraction, "f4", fill),
        "ground_pixel_quality_flag": _grid(ground_pixel_quality(scene), "i4", INT32_FILL),
    }
    if product != "O3TOT":
        out["terrain_height"] = _grid(np.round(scene.terrain_height), "i2", INT16_FILL, units="m")
    name = {"CLDO4": "SurfacePressure", "O3TOT": "terrain_pressure"}.get(product, "surface_pressure")
    out[name] = _grid(scene.surface_pressure, "f4", fill, invalid, units="hPA" if product == "O3TOT" else "hPa")
    return out


def _qa(scene: Scene, product: str, invalid: np.ndarray, residual: np.ndarray, mirror_step: np.ndarray) -> xr.Dataset:
    """The ``qa_statistics`` group: fit residual (relative noise), convergence flag and counts."""
    good = int((~invalid).sum())
    attrs = {"num_crosstrack_pixels": np.int32(scene.shape[1]), "num_scan_lines": np.int32(scene.shape[0]),
             "num_good_input": np.int32(good), "num_good_output": np.int32(good),
             "num_bad_output": np.int32(invalid.sum()),
             "percent_good_output": np.float32(100.0 * good / invalid.size)}
    return xr.Dataset(
        {"fit_rms_residual": _grid(residual, "f4", FLOAT_FILL[product], invalid),
         "fit_convergence_flag": _grid(np.where(invalid, -2, 1), "i2", INT16_FILL)},
        coords=_coords(scene, mirror_step), attrs=attrs)


def _quality_flag(scene: Scene, invalid: np.ndarray) -> xr.Variable:
    """``main_data_quality_flag`` of NO2 and HCHO: :func:`_quality` with a cloud limit of 0.5."""
    return _grid(_quality(scene, invalid, 0.5), "i2", INT16_FILL,
                 flag_values=np.array([0, 1, 2], np.int16), flag_meanings="normal suspicious bad")


def no2_truth(scene: Scene, columns: SlantColumns, invalid: np.ndarray, mirror_step: np.ndarray) -> L2Granule:
    """The NO2 granule: tropospheric, stratospheric and total columns (molecules/cm^2), slant column, AMFs."""
    refs, coords, fill = columns.references, _coords(scene, mirror_step), FLOAT_FILL["NO2"]
    rel = _noise_relative(scene, refs["no2"], REFERENCE_NM["no2"])
    scd_error = rel / doas_sensitivity("no2", FIT_WINDOWS_NM["no2"])
    amf_trop, m = columns.amf["no2_troposphere"], columns.amf["no2_stratosphere"]
    total = scene.no2_troposphere + scene.no2_stratosphere
    product = xr.Dataset({
        "vertical_column_troposphere": _grid(scene.no2_troposphere, "f8", fill, invalid, units=MOLEC_CM2),
        "vertical_column_stratosphere": _grid(scene.no2_stratosphere, "f8", fill, invalid, units=MOLEC_CM2),
        "vertical_column_troposphere_uncertainty": _grid(scd_error / amf_trop, "f8", fill, invalid, units=MOLEC_CM2),
        "main_data_quality_flag": _quality_flag(scene, invalid),
    }, coords=coords)
    support = xr.Dataset({
        "vertical_column_total": _grid(total, "f8", fill, invalid, units=MOLEC_CM2),
        "vertical_column_total_uncertainty": _grid(scd_error / (columns.scd["no2"] / total), "f8", fill, invalid,
                                                   units=MOLEC_CM2),
        "fitted_slant_column": _grid(columns.scd["no2"], "f8", fill, invalid, units=MOLEC_CM2),
        "fitted_slant_column_uncertainty": _grid(scd_error, "f8", fill, invalid, units=MOLEC_CM2),
        "albedo": _grid(refs["no2"].albedo, "f4", fill, invalid),
        "eff_cloud_fraction": _grid(scene.cloud_fraction, "f4", fill, invalid),
        "amf_cloud_fraction": _grid(refs["no2"].cloud_radiance_fraction, "f4", fill, invalid),
        "amf_cloud_pressure": _grid(scene.cloud_pressure, "f4", fill, invalid, units="hPa"),
        "amf_total": _grid(columns.scd["no2"] / total, "f4", fill, invalid),
        "amf_troposphere": _grid(amf_trop, "f4", fill, invalid),
        "amf_stratosphere": _grid(m, "f4", fill, invalid),
        **_surface_support(scene, "NO2", invalid),
    }, coords=coords)
    return _l2(scene, "NO2", product, support, rel, invalid, mirror_step)


def hcho_truth(scene: Scene, columns: SlantColumns, invalid: np.ndarray, mirror_step: np.ndarray) -> L2Granule:
    """The HCHO granule: vertical and slant columns (molecules/cm^2) and the AMF."""
    refs, coords, fill = columns.references, _coords(scene, mirror_step), FLOAT_FILL["HCHO"]
    rel = _noise_relative(scene, refs["hcho"], REFERENCE_NM["hcho"])
    scd_error = rel / doas_sensitivity("hcho", FIT_WINDOWS_NM["hcho"])
    amf = columns.amf["hcho"]
    product = xr.Dataset({
        "vertical_column": _grid(scene.hcho, "f8", fill, invalid, units=MOLEC_CM2),
        "vertical_column_uncertainty": _grid(scd_error / amf, "f8", fill, invalid, units=MOLEC_CM2),
        "main_data_quality_flag": _quality_flag(scene, invalid),
    }, coords=coords)
    support = xr.Dataset({
        "fitted_slant_column": _grid(columns.scd["hcho"], "f8", fill, invalid, units=MOLEC_CM2),
        "fitted_slant_column_uncertainty": _grid(scd_error, "f8", fill, invalid, units=MOLEC_CM2),
        "albedo": _grid(refs["hcho"].albedo, "f4", fill, invalid),
        "amf": _grid(amf, "f4", fill, invalid),
        "amf_diagnostic_flag": _grid(np.zeros(scene.shape), "i2", INT16_FILL),
        "eff_cloud_fraction": _grid(scene.cloud_fraction, "f4", fill, invalid),
        "amf_cloud_fraction": _grid(refs["hcho"].cloud_radiance_fraction, "f4", fill, invalid),
        "amf_cloud_pressure": _grid(scene.cloud_pressure, "f4", fill, invalid, units="hPa"),
        **_surface_support(scene, "HCHO", invalid),
    }, coords=coords)
    return _l2(scene, "HCHO", product, support, rel, invalid, mirror_step)


def o3tot_truth(scene: Scene, columns: SlantColumns, invalid: np.ndarray, mirror_step: np.ndarray) -> L2Granule:
    """The O3TOT granule: total ozone (DU), radiative cloud fraction, surface reflectivities (percent)."""
    refs, coords, fill = columns.references, _coords(scene, mirror_step), FLOAT_FILL["O3TOT"]
    quality = _quality(scene, invalid, None).astype(np.uint16)
    product = xr.Dataset({
        "column_amount_o3": _grid(scene.o3, "f4", fill, invalid, units="DU", comment="best total ozone solution"),
        "radiative_cloud_frac": _grid(refs["o3"].cloud_radiance_fraction, "f4", fill, invalid),
        "fc": _grid(scene.cloud_fraction, "f4", fill, invalid),
        "quality_flag": _grid(quality, "u2", None, comment="0 good, 1 SZA > 70, 2 no input or SZA > 80 (simulator)"),
    }, coords=coords)
    support = xr.Dataset({
        "cloud_pressure": _grid(scene.cloud_pressure, "f4", fill, invalid, units="hPA"),
        "surface_reflectivity_at_331nm": _grid(100.0 * refs["o3"].albedo, "f4", fill, invalid, units="percent"),
        "surface_reflectivity_at_360nm": _grid(100.0 * refs["o3_360"].albedo, "f4", fill, invalid, units="percent"),
        **_surface_support(scene, "O3TOT", invalid),
    }, coords=coords)
    rel = _noise_relative(scene, refs["o3"], REFERENCE_NM["o3"])
    return _l2(scene, "O3TOT", product, support, rel, invalid, mirror_step)


def cldo4_truth(scene: Scene, columns: SlantColumns, invalid: np.ndarray, mirror_step: np.ndarray) -> L2Granule:
    """The CLDO4 granule: effective cloud fraction and pressure (hPa), cloud radiance fractions, O2-O2 slant column."""
    refs, coords, fill = columns.references, _coords(scene, mirror_step), FLOAT_FILL["CLDO4"]
    skipped = np.where(invalid, (1 << 12) | (1 << 13), 0)
    product = xr.Dataset({
        "cloud_fraction": _grid(scene.cloud_fraction, "f4", fill, invalid, units="no unit",
                                long_name="effective cloud fraction at 466nm"),
        "cloud_pressure": _grid(scene.cloud_pressure, "f4", fill, invalid, units="hPa",
                                long_name="optical centroid pressure for cloud"),
        "CloudRadianceFraction466": _grid(refs["cld466"].cloud_radiance_fraction, "f4", fill, invalid),
        "CloudRadianceFraction440": _grid(refs["no2"].cloud_radiance_fraction, "f4", fill, invalid),
        "processing_quality_flag": _grid(skipped, "i2", INT16_FILL),
    }, coords=coords)
    rel = _noise_relative(scene, refs["o4"], REFERENCE_NM["o4"])
    support = xr.Dataset({
        "GLER466": _grid(refs["cld466"].albedo, "f4", fill, invalid),
        "GLER440": _grid(refs["no2"].albedo, "f4", fill, invalid),
        "fitted_slant_column": _grid(columns.scd["o4"] / 1e43, "f4", fill, invalid, units="1.e43 molec^2 cm^-5"),
        "fitted_slant_column_uncertainty": _grid(rel / doas_sensitivity("o4", FIT_WINDOWS_NM["o4"]) / 1e43, "f4", fill,
                                                 invalid, units="1.e43 molec^2 cm^-5"),
        **_surface_support(scene, "CLDO4", invalid),
    }, coords=coords)
    return _l2(scene, "CLDO4", product, support, rel, invalid, mirror_step)


def level2_truth(scene: Scene, columns: SlantColumns, mirror_step: np.ndarray) -> dict[str, L2Granule]:
    """The four L2 granules (NO2, HCHO, O3TOT, CLDO4) holding the scene's truth in the real layout.

    Their attributes hold only ``product_type``, ``processing_level`` and ``title``;
    :func:`~tempocodec.simulator.granule.simulate_granule` adds the granule's times, bounds and names."""
    invalid = scene.invalid_pixels()
    makers = {"NO2": no2_truth, "HCHO": hcho_truth, "O3TOT": o3tot_truth, "CLDO4": cldo4_truth}
    return {product: make(scene, columns, invalid, mirror_step) for product, make in makers.items()}


def _l2(scene: Scene, product: str, product_group: xr.Dataset, support: xr.Dataset,
        residual: np.ndarray, invalid: np.ndarray, mirror_step: np.ndarray) -> L2Granule:
    """One L2 granule from its product and support groups plus the shared geolocation and QA groups."""
    granule_attrs = {"product_type": product, "processing_level": np.int32(2),
                     "title": f"TEMPO {product} Level 2 truth of a simulated granule"}
    return L2Granule(product=product, attrs=granule_attrs, groups={
        "product": product_group,
        "geolocation": _geolocation(scene, product, mirror_step),
        "support_data": support,
        "qa_statistics": _qa(scene, product, invalid, residual, mirror_step),
    })
