"""tempocodec.evaluation and the evaluate command: metrics against a direct numpy computation on a tiny store."""

from __future__ import annotations

import shutil
from pathlib import Path

import netCDF4
import numpy as np
import pytest
from click.testing import CliRunner

import tempocodec.evaluation.run as run_module
from tempocodec.cli import main
from tempocodec.errors import TempocodecError
from tempocodec.evaluation.metrics import compare_arrays
from tempocodec.evaluation.probe_scores import probe_scores
from tempocodec.evaluation.report import _plot_probes
from tempocodec.evaluation.run import Evaluation, evaluate_store
from tempocodec.evaluation.summary import headline, summary_rows
from tempocodec.evaluation.variables import check_variables
from tempocodec.granule.l1b import read_l1b
from tempocodec.prepare.normalize import is_valid
from tempocodec.runtime.store import compress_granule, open_store, store_info
from tempocodec.science.doas import doas_setup, fit_doas
from tempocodec.simulator import write_simulated

pytest_plugins = ["tiny_model_fixture"]  # the session fixture tiny_models

UV = "band_290_490_nm"
MODEL = "tiny1028"
HIST_RTOL = 0.025  # per-channel quantiles come from histograms with bins of 0.01 decade


@pytest.fixture(scope="module")
def granules(tmp_path_factory) -> list[Path]:
    """Two 70×40 simulated UV granules (different scenes, same shape) with their L2 truth files."""
    paths = write_simulated(tmp_path_factory.mktemp("granules"), 70, 40, seed=3, scenes=2, bands="uv")
    return [p for p in paths if "_RAD_L1_" in p.name]


@pytest.fixture(scope="module")
def store(granules, tiny_models, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("store") / "g.zarr"
    compress_granule(granules[0], out, model=MODEL, progress=False)
    return out


@pytest.fixture(scope="module")
def evaluation(granules, store) -> Evaluation:
    """The evaluation streamed in blocks of 64 steps × 16 xtracks (several blocks each way)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(run_module, "BLOCK_XTRACK", 16)
        return evaluate_store(granules[0], store, band=UV, progress=False)


@pytest.fixture(scope="module")
def arrays(granules, store) -> dict[str, np.ndarray]:
    """Original radiance, its noise, the decoded radiance (float64) and the wavelength grid, read whole."""
    band = read_l1b(granules[0]).bands[UV]
    return {
        "original": band["radiance"].values.astype(np.float64),
        "noise": band["radiance_error"].values.astype(np.float64),
        "decoded": open_store(store, UV)["radiance"].values.astype(np.float64),
        "wavelength": band["nominal_wavelength"].values.astype(np.float64),
    }


def test_metrics_equal_a_direct_numpy_computation(evaluation, arrays, store):
    o, d, noise = arrays["original"], arrays["decoded"], arrays["noise"]
    used = is_valid(o) & (o >= 1.0) & is_valid(d)
    assert (~used).any() and used.any()  # the simulated granule has fill to leave out
    m = evaluation.metrics
    rel = np.where(used, (d - o) / np.where(used, o, 1.0), np.nan)
    err = np.where(used, d - o, np.nan)
    signal = np.where(used, o, np.nan)
    np.testing.assert_allclose(m.relative_rmse, np.sqrt(np.nanmean(rel**2, axis=(0, 1))), rtol=1e-5)
    np.testing.assert_allclose(m.rmse, np.sqrt(np.nanmean(err**2, axis=(0, 1))), rtol=1e-5)
    np.testing.assert_allclose(m.median_signal, np.nanmedian(signal, axis=(0, 1)), rtol=HIST_RTOL)
    np.testing.assert_allclose(m.median_abs_error, np.nanmedian(np.abs(err), axis=(0, 1)), rtol=HIST_RTOL)
    np.testing.assert_allclose(m.p99_abs_error, np.nanpercentile(np.abs(err), 99, axis=(0, 1)), rtol=HIST_RTOL)
    np.testing.assert_allclose(m.median_relative_error, np.nanmedian(np.abs(rel), axis=(0, 1)), rtol=HIST_RTOL)
    np.testing.assert_allclose(m.mean_abs_relative_error, np.nanmean(np.abs(rel), axis=(0, 1)), rtol=1e-5)
    noise_used = np.where(used & (noise > 0) & is_valid(noise), noise, np.nan)
    np.testing.assert_allclose(m.median_noise, np.nanmedian(noise_used, axis=(0, 1)), rtol=HIST_RTOL)
    np.testing.assert_allclose(m.wavelength, arrays["wavelength"].mean(axis=0))
    # per pixel and scalars: exact
    rrmse = np.sqrt(np.nanmean(rel**2, axis=2))
    np.testing.assert_allclose(m.relative_rmse_map, rrmse, rtol=1e-5)
    assert m.mean_relative_rmse == pytest.approx(np.nanmean(rrmse), rel=1e-5)
    oz, dz = np.where(used, o, 0.0), np.where(used, d, 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        cos = np.sum(oz * dz, axis=2) / np.linalg.norm(oz, axis=2) / np.linalg.norm(dz, axis=2)
    np.testing.assert_allclose(m.spectral_angle_map, 1e3 * np.arccos(np.clip(cos, -1, 1)), rtol=1e-5, atol=1e-4)
    assert m.p99_relative_error == pytest.approx(np.nanpercentile(np.abs(rel), 99), rel=HIST_RTOL)
    assert m.max_relative_error == pytest.approx(np.nanmax(np.abs(rel)), rel=1e-5)
    assert m.max_abs_error == pytest.approx(np.nanmax(np.abs(err)), rel=1e-5)
    assert m.values == used.sum() and m.pixels == np.isfinite(rrmse).sum()
    assert m.decoded_fill == 0
    assert m.worst_channel == np.nanargmax(np.sqrt(np.nanmean(rel**2, axis=(0, 1))))
    info = store_info(store)
    assert evaluation.ratio_radiance == pytest.approx(info.radiance(UV).ratio)
    assert evaluation.ratio_store == pytest.approx(info.total_raw / info.total_stored)


def test_doas_matches_fits_of_the_whole_arrays(evaluation, arrays):
    setup = doas_setup(arrays["wavelength"], UV)
    original, decoded = fit_doas(arrays["original"], setup), fit_doas(arrays["decoded"], setup)
    d = evaluation.doas
    np.testing.assert_allclose(d.scd_original, original.scd, rtol=1e-8)
    np.testing.assert_allclose(d.scd_decoded, decoded.scd, rtol=1e-8)
    np.testing.assert_allclose(d.scd_error, original.scd_error, rtol=1e-8)
    diff = (decoded.scd - original.scd)[np.isfinite(decoded.scd) & np.isfinite(original.scd)]
    assert d.pixels == diff.size > 0
    assert d.bias == pytest.approx(diff.mean()) and d.scatter == pytest.approx(diff.std())
    assert d.scd_truth is not None and np.isfinite(d.scd_truth).any()  # the NO2 L2 file sits beside the granule
    ok = np.isfinite(decoded.scd) & np.isfinite(original.scd) & np.isfinite(d.scd_truth)
    truth = d.scd_truth[ok]
    np.testing.assert_allclose(d.truth_rms(), [np.sqrt(np.mean((original.scd[ok] - truth) ** 2)),
                                               np.sqrt(np.mean((decoded.scd[ok] - truth) ** 2)), truth.std()])
    assert d.truth_rms()[0] < 2 * d.median_error  # the fit on the original spectra is close to the truth


@pytest.fixture(scope="module")
def cli_run(granules, store, tmp_path_factory):
    """``tempocodec evaluate ORIGINAL STORE --report DIR``: the click result and DIR."""
    out = tmp_path_factory.mktemp("report") / "report"
    return CliRunner().invoke(main, ["evaluate", str(granules[0]), str(store), "--report", str(out)]), out


def test_cli_prints_a_table_and_writes_a_report(cli_run):
    result, out = cli_run
    assert result.exit_code == 0, result.output
    assert "mean relative RMSE per spectrum" in result.output and "DOAS" in result.output
    assert f"wrote {out / 'report.md'}" in result.output


def test_report_names_the_numbers_and_writes_the_figures(cli_run, evaluation):
    _, out = cli_run
    text = (out / "report.md").read_text(encoding="utf-8")
    lines = text.splitlines()
    m = evaluation.metrics
    assert lines[2].startswith(f"- **Compression ratio {evaluation.ratio_radiance:,.0f}×**")
    assert f"Mean relative RMSE per spectrum {100 * m.mean_relative_rmse:.3g} %" in lines[3]
    assert f"{100 * m.p99_relative_error:.3g} %" in lines[3]
    assert f"{m.wavelength[m.worst_channel]:.2f} nm" in lines[4]
    assert f"bias {evaluation.doas.bias:.3g}" in text and f"scatter {evaluation.doas.scatter:.3g}" in text
    assert "Decoded fill where the original was valid: 0 values" in text
    assert "DOAS NO₂ SCD RMS vs L2 truth" in text and "Against the L2 file's fitted_slant_column" in text
    assert "Products from the latents" in text and "Skipped:" in text  # the tiny model has no probes
    for name in ("error_vs_signal", "relative_error", "error_map", "spectral_angle", "spectra", "doas_no2"):
        assert (out / f"{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"]({name}.png)" in text
    assert not list(out.glob(".*partial*"))
    assert all(row.count("|") - row.count("\\|") == 3 for row in lines if row.startswith("| "))


def test_without_l2_files_the_probes_are_skipped_and_said_why(granules, store, tmp_path):
    lone = tmp_path / "renamed.nc"
    shutil.copy(granules[0], lone)
    evaluation = evaluate_store(lone, store, progress=False)
    assert evaluation.probes == () and "no L2 truth files" in evaluation.probes_skipped
    assert evaluation.doas is not None and evaluation.doas.scd_truth is None


def test_identical_arrays_and_decoded_fill():
    rng = np.random.default_rng(0)
    original = np.exp(rng.normal(30, 0.3, (5, 6, 20))).astype(np.float32)
    original[0, 0, :] = np.float32(-9.96921e36)
    wavelength = np.linspace(300, 320, 20)
    same = compare_arrays(original, original.copy(), wavelength)
    assert same.mean_relative_rmse == 0 and same.max_abs_error == 0 and same.decoded_fill == 0
    assert np.all(same.median_abs_error == 0) and same.spectral_angle_median == pytest.approx(0, abs=1e-6)
    assert np.isnan(same.relative_rmse_map[0, 0]) and same.pixels == 29
    decoded = original * np.float32(1.01)
    decoded[0, 0, :] = 1.0
    decoded[2, 3, 7] = np.nan
    result = compare_arrays(original, decoded, wavelength)
    assert result.decoded_fill == 1 and result.values == 29 * 20 - 1
    assert result.max_relative_error == pytest.approx(0.01, rel=1e-4)
    np.testing.assert_allclose(result.median_relative_error, 0.01, rtol=HIST_RTOL)


def test_headline_warns_about_decoded_fill(evaluation):
    from dataclasses import replace

    bad = replace(evaluation, metrics=replace(evaluation.metrics, decoded_fill=12))
    assert any("12 valid original values came back as fill" in line for line in headline(bad))


def test_different_granule_or_shape_is_a_one_line_error(granules, store, tmp_path, tiny_models):
    with pytest.raises(TempocodecError, match="latitude differs .* not the same granule"):
        evaluate_store(granules[1], store, progress=False)
    small = write_simulated(tmp_path / "small", 20, 40, seed=5, bands="uv")[0]
    with pytest.raises(TempocodecError, match=r"radiance is \(70, 40, 1028\).*\(20, 40, 1028\)"):
        evaluate_store(small, store, progress=False)
    for args in ([str(granules[1]), str(store)], [str(granules[0]), str(tmp_path / "missing.zarr")],
                 [str(granules[0]), str(store), "--band", "vis"]):
        result = CliRunner().invoke(main, ["evaluate", *args])
        assert result.exit_code == 2, result.output
        lines = result.output.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in result.output


def test_probe_scores_pool_the_truth_onto_the_query_grid(granules, store, monkeypatch, tmp_path):
    from tempocodec.granule.l2 import l2_files_beside, l2_truth, read_l2
    from tempocodec.prepare.tiles import pool_to_latent
    from tempocodec.runtime import query

    truths = l2_files_beside(granules[0])
    assert sorted(truths) == ["CLDO4", "HCHO", "NO2", "O3TOT"]
    pooled = {p: pool_to_latent(l2_truth(read_l2(path)).values) for p, path in truths.items()}
    offsets = {"cloud_fraction": 0.0, "ozone": 5.0, "no2": 0.0, "hcho": 1e15}
    l2_of = {"cloud_fraction": "CLDO4", "ozone": "O3TOT", "no2": "NO2", "hcho": "HCHO"}

    def fake_query(path, products, band):
        assert Path(path) == store and band == UV
        import xarray as xr

        return xr.Dataset({n: (("latent_row", "latent_col"), pooled[l2_of[n]] + offsets[n]) for n in products})

    monkeypatch.setattr(query, "query_store", fake_query)
    scores, skipped = probe_scores(granules[0], store, UV)
    assert skipped is None and [s.name for s in scores] == ["cloud_fraction", "ozone", "no2", "hcho"]
    for s in scores:
        t = pooled[s.product][np.isfinite(pooled[s.product])]
        assert s.truth.size == t.size == 18 * 10 - np.isnan(pooled[s.product]).sum()
        expected = 1 - t.size * offsets[s.name] ** 2 / np.sum((t - t.mean()) ** 2)
        assert s.r2 == pytest.approx(expected, rel=1e-6)
    _plot_probes(scores, tmp_path / "probes.png")
    assert (tmp_path / "probes.png").stat().st_size > 1000


def _captured(monkeypatch) -> list:
    """The figures the report's plot functions save (kept open, not written)."""
    import tempocodec.evaluation.report as report_module

    figures: list = []
    monkeypatch.setattr(report_module, "_save", lambda fig, path: figures.append(fig))
    return figures


def test_figures_use_the_store_coordinates_units_and_mark_clipping(evaluation, granules, monkeypatch, tmp_path):
    from tempocodec.evaluation.report import _figures

    figures = _captured(monkeypatch)
    for _, _, plot in _figures(evaluation):
        plot(tmp_path / "unused.png")
    band = read_l1b(granules[0]).bands[UV]
    steps, xtrack = band["mirror_step"].values, band["xtrack"].values
    assert steps[0] != 0  # the simulator's mirror steps do not start at 0: indices would show
    error_map = figures[2]
    ax, colorbar_ax = error_map.axes
    assert ax.get_xlim() == pytest.approx((steps[0] - 0.5, steps[-1] + 0.5))
    assert ax.get_ylim() == pytest.approx((xtrack[0] - 0.5, xtrack[-1] + 0.5))
    assert "clipped to the 1st–99th percentiles" in ax.get_title()
    assert error_map.axes[0].collections[0].colorbar.extend == "both"
    for fig in figures:
        for axis in fig.axes:
            for label in (axis.get_xlabel(), axis.get_ylabel()):
                assert not label or ("(" in label and label.endswith(")")), f"no units: {label!r}"
    spectra = figures[4]
    titles = [a.get_title() for a in spectra.axes if a.get_title()]
    ex = evaluation.examples[0]
    assert f"mirror_step {steps[ex.step]}, xtrack {xtrack[ex.xtrack]} (" in titles[0] and "°N" in titles[0]


def test_cloud_fraction_is_shown_clipped_to_its_range(monkeypatch, tmp_path):
    from tempocodec.evaluation.probe_scores import ProbeScore

    figures = _captured(monkeypatch)
    score = ProbeScore("cloud_fraction", "CLDO4", "1", np.array([0.0, 0.5, 1.0]), np.array([-0.2, 0.5, 1.3]))
    _plot_probes((score,), tmp_path / "p.png")
    ax = figures[0].axes[0]
    shown = ax.collections[0].get_offsets()[:, 1]
    assert shown.min() == 0.0 and shown.max() == 1.0
    assert "clipped to [0, 1] (2 were outside)" in ax.get_title()


def test_every_other_variable_is_checked_against_its_stored_bound(evaluation, granules, store, tmp_path):
    """The store's variables all hold their bounds; one moved past its bound (latitude by 2e-5°) is named."""
    checks = {c.name: c for c in evaluation.variables}
    assert {"latitude", "radiance_error", "pixel_quality_flag"} <= set(checks)
    assert all(c.held for c in checks.values()), checks
    assert checks["latitude"].bound == "abs <= 1e-05 degrees" and checks["pixel_quality_flag"].bound == "exact"
    assert "other variables within their stored bounds" in dict(summary_rows(evaluation))
    with netCDF4.Dataset(granules[0]) as nc:
        nc.set_auto_mask(False)
        latitude = nc[UV]["latitude"][:]
    moved = Path(shutil.copy(granules[0], tmp_path / granules[0].name))
    with netCDF4.Dataset(moved, "a") as nc:
        nc[UV]["latitude"][0, 0] = latitude[0, 0] + np.float32(2e-5)
    source = read_l1b(moved).bands[UV]
    failed = [c.name for c in check_variables(source, open_store(store, UV)) if not c.held]
    assert failed == ["latitude"]
