"""The ``tempocodec`` command line (click). Each command is a thin wrapper over a library call."""

from __future__ import annotations

import ctypes
import os
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import click

from tempocodec.cli_options import (
    band_group,
    band_option,
    finish_batch,
    is_batch,
    print_table,
    require_torch,
    run_batch,
    split_out,
    summary_json,
)
from tempocodec.defaults import DEFAULT_LATENT_DTYPE, RELATIVE_LATENT_STEP
from tempocodec.errors import TempocodecError

WORKERS = click.option("--workers", type=click.IntRange(min=1), default=None,
                       help="Inputs at a time, each in a local worker process (batch form; default 1, in this process).")
SCHEDULER = click.option("--scheduler", default=None, metavar="ADDRESS",
                         help="Run one task per input on the dask.distributed scheduler at ADDRESS (batch form).")
MALLOC_ARENAS = 2
"""glibc malloc arenas a command may use (``M_ARENA_MAX``; glibc's default is 8 per CPU): the worker threads of zarr,
dask and ONNX Runtime each free tens of MB of chunk buffers into arenas of their own, which glibc does not give
back, and that raised the peak memory of ``compress`` by 40% (1.4 GB against 1.0 GB on a 64×1024 granule)."""
M_ARENA_MAX = -8


class _Group(click.Group):
    """A click group that turns :class:`TempocodecError` into one line on stderr and exit status 2."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except TempocodecError as err:
            click.echo(f"error: {err}", err=True)
            sys.exit(2)


@click.group(cls=_Group)
@click.version_option(package_name="tempocodec")
def main() -> None:
    """Compress TEMPO Level-1B radiance with a variational autoencoder, and read Level-2 products from the latents."""
    _limit_malloc_arenas()
    # zarr notes on every read that numcodecs codecs (the auxiliary variables') are outside the v3 specification
    warnings.filterwarnings("ignore", message="Numcodecs codecs are not in the Zarr", category=UserWarning)


def _limit_malloc_arenas() -> None:
    """Cap glibc's malloc arenas at :data:`MALLOC_ARENAS` for this process, before any worker thread starts; a no-op
    where the C library has no ``mallopt`` (not glibc) or the environment sets ``MALLOC_ARENA_MAX`` itself."""
    if sys.platform != "linux" or "MALLOC_ARENA_MAX" in os.environ:
        return
    mallopt = getattr(ctypes.CDLL(None), "mallopt", None)
    if mallopt is not None:
        mallopt(M_ARENA_MAX, MALLOC_ARENAS)


@main.command()
@click.argument("paths", nargs=-1, required=True, metavar="GRANULE... OUT")
@band_option(several=True, help="Bands to store.")
@click.option("--model", default=None, help="Model name (looked up in the trusted model directories) or a model directory "
              "path (default: the released model of each band).")
@click.option("--latent-dtype", type=click.Choice(["quantized", "float16", "float32"]), default=DEFAULT_LATENT_DTYPE,
              show_default=True, help="How latents are stored: quantized (multiples of --latent-step, entropy coded).")
@click.option("--latent-step", type=float, default=None, metavar="S",
              help=f"Quantization step of quantized latents, in latent units [default: {RELATIVE_LATENT_STEP:g} of the "
              "latents' spread on the granule].")
@click.option("--zarr-format", type=click.Choice(["3", "2"]), default="3", show_default=True)
@click.option("--drop-radiance-error", is_flag=True, help="Do not store radiance_error.")
@click.option("--error-bound", type=float, default=None, metavar="K",
              help="Every valid radiance value decodes within K times its radiance_error (adds the residual layer).")
@click.option("--ratio", type=float, default=None, metavar="R",
              help="The smallest error bound at which the radiance compresses about R times.")
@click.option("--radiance-error", "radiance_error", type=click.Choice(["auto", "exact", "rounded"]), default="auto",
              show_default=True, help="radiance_error: exact (coded from the radiance's latents; reading it needs "
              "tempocodec), rounded (to 7 significant bits, <= 0.78%; any zarr reader), auto: the smaller on the granule.")
@click.option("--lossless-aux", is_flag=True, help="Keep every variable but radiance lossless (radiance_error "
              "bit-rounded to 7 bits), as release 0.2 did; default: geolocation and angles on documented grids.")
@click.option("--overwrite", is_flag=True, help="Replace OUT if it is a store (never anything else).")
@WORKERS
@SCHEDULER
@click.option("--quiet", is_flag=True, help="No progress bar and no summary.")
def compress(paths: tuple[str, ...], band: str, model: str | None, latent_dtype: str, latent_step: float | None,
             zarr_format: str,
             drop_radiance_error: bool, error_bound: float | None, ratio: float | None, radiance_error: str,
             lossless_aux: bool, overwrite: bool,
             workers: int | None, scheduler: str | None, quiet: bool) -> None:
    """Compress the TEMPO L1B GRANULE into the Zarr store OUT (latent only unless --error-bound or --ratio); with
    several granules (paths, globs, directories), each into OUT/<name>.zarr. A granule may be an fsspec URL
    (file://, s3://, ...)."""
    from tempocodec.runtime.store import compress_granule

    inputs, out = split_out(paths, "GRANULE")
    options: dict[str, Any] = {"bands": band, "model": model, "latent_dtype": latent_dtype, "latent_step": latent_step,
                               "zarr_format": 3 if zarr_format == "3" else 2,
                               "drop_radiance_error": drop_radiance_error, "error_bound": error_bound, "ratio": ratio,
                               "radiance_error": radiance_error, "lossless_aux": lossless_aux, "overwrite": overwrite}
    if not is_batch(inputs, workers, scheduler):
        summary = compress_granule(inputs[0], out, progress=not quiet, **options)
        if not quiet:
            _print_summary(summary)
        return
    from tempocodec.runtime.batch import compress_granules

    started = time.perf_counter()
    report = run_batch(lambda client: compress_granules(inputs, out, client=client, workers=workers or 1,
                                                        progress=not quiet, **options), scheduler)
    finish_batch(report, "compressed", out, started, quiet)


@main.command()
@click.argument("paths", nargs=-1, required=True, metavar="STORE... OUT")
@click.option("--overwrite", is_flag=True, help="Replace OUT if it is a netCDF-4 file (never anything else).")
@click.option("--deflate", type=int, default=None, metavar="LEVEL",
              help="Deflate level 0-9 (+ shuffle) of the 2-D and larger variables; 0: uncompressed, fastest "
              "[default: 1, as in the original TEMPO files].")
@WORKERS
@SCHEDULER
@click.option("--quiet", is_flag=True, help="No progress bar.")
def decompress(paths: tuple[str, ...], overwrite: bool, deflate: int | None, workers: int | None, scheduler: str | None,
               quiet: bool) -> None:
    """Write the granule in STORE as a TEMPO-layout L1B netCDF file OUT; with several stores (paths, globs,
    directories of *.zarr), each into OUT/<name>.nc. A store may be an fsspec URL or a zip file."""
    from tempocodec.granule.netcdf_write import deflate_level
    from tempocodec.runtime.batch import decompress_stores
    from tempocodec.runtime.store import decompress_store

    deflate_level(deflate)  # refused before any store is opened
    inputs, out = split_out(paths, "STORE")
    if not is_batch(inputs, workers, scheduler):
        written = decompress_store(inputs[0], out, overwrite=overwrite, progress=not quiet, deflate=deflate)
        if not quiet:
            click.echo(f"wrote {written} ({written.stat().st_size / 1e6:.1f} MB)")
        return
    started = time.perf_counter()
    report = run_batch(lambda client: decompress_stores(inputs, out, client=client, workers=workers or 1,
                                                        progress=not quiet, overwrite=overwrite, deflate=deflate),
                       scheduler)
    finish_batch(report, "decompressed", out, started, quiet)


@main.command()
@click.argument("store")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON on stdout.")
def info(store: str, as_json: bool) -> None:
    """Per-variable codec, stored bytes and ratio of STORE (a path, zip file or fsspec URL), and each band's model."""
    import json

    from tempocodec.runtime.store import store_info

    summary = store_info(store)
    if as_json:
        click.echo(json.dumps(summary_json(summary), indent=2))
    else:
        _print_summary(summary)


@main.command()
@click.argument("store")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON on stdout.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def verify(store: str, as_json: bool, quiet: bool) -> None:
    """Check every chunk of every array of STORE (checksums, completeness, payload headers, model); writes nothing.

    Exit status 0 when all is whole, 1 when something is damaged, 2 when STORE is not a readable store.
    """
    import json

    from tempocodec.runtime.verify import verify_store

    report = verify_store(store, progress=not quiet and not as_json)
    if as_json:
        click.echo(json.dumps(report.to_json(), indent=2))
    else:
        for fault in report.faults:
            click.echo(f"fault: {fault.array or store}{f' {fault.item}' if fault.item else ''}: {fault.fault}")
        for note in report.notes:
            click.echo(f"note: {note}")
        chunks = sum(a.chunks for a in report.arrays)
        verdict = "whole" if report.ok else f"NOT WHOLE ({len(report.faults)} faults)"
        click.echo(f"{store}: {verdict}: {len(report.arrays)} arrays, {chunks} chunks checked")
    sys.exit(0 if report.ok else 1)


def _print_summary(summary) -> None:
    """A table of stored sizes and ratios, then one line per band's model and its card's headline."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=str(summary.path))
    for col in ("group", "variable", "codec", "raw MB", "stored MB", "ratio", "bound"):
        table.add_column(col, justify="right" if col in ("raw MB", "stored MB", "ratio") else "left")
    for v in summary.variables:
        table.add_row(v.group, v.name, v.codec, f"{v.raw_bytes / 1e6:.2f}", f"{v.stored_bytes / 1e6:.4f}", f"{v.ratio:.1f}",
                      v.bound)
    table.add_row("all", "(files, metadata included)", "", f"{summary.total_raw / 1e6:.2f}",
                  f"{summary.total_stored / 1e6:.4f}", f"{summary.total_raw / summary.total_stored:.1f}")
    print_table(table)
    console = Console()
    for band, entry in summary.bands.items():
        if entry["radiance"] == "vae":
            console.print(f"{band}: radiance through model {entry['model']} (sha256 {entry['model_sha256'][:12]}…, "
                          f"{entry['latent_dtype']} latents)", soft_wrap=True)
            console.print(f"  Mode: {_mode_line(entry)}", soft_wrap=True)
            if entry.get("error_bound") is None:
                console.print(f"  {_card_headline(entry['model'], entry['model_sha256'])}", soft_wrap=True)
        else:
            console.print(f"{band}: radiance kept losslessly ({entry['reason']})", soft_wrap=True)


def _mode_line(entry: dict[str, Any]) -> str:
    """How a band's radiance was coded, in words: latent only, or its residual layer and bound."""
    bound = entry.get("error_bound")
    target = f" (asked: about {entry['target_ratio']:g}×)" if entry.get("target_ratio") else ""
    if bound is None:
        return f"latent only, no pointwise bound{target}"
    return f"error-bounded: every valid value within {bound:g} × its radiance_error; {entry['residual']}{target}"


def _card_headline(name: str, sha256: str) -> str:
    """The ``Headline:`` line of a model's card, or why there is none (the model is not installed here, ...)."""
    from tempocodec.runtime.artifacts import find_model

    try:
        art = find_model(name, sha256)
    except TempocodecError as err:
        return f"model card not available: {err}"
    card = art.path / "model_card.md"
    lines = card.read_text(encoding="utf-8").splitlines() if card.is_file() else []
    headline = next((line for line in lines if line.startswith("Headline:")), None)
    return headline if headline is not None else f"{card}: no 'Headline:' line"


@main.command()
@click.option("--data", "data_dir", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Directory with TEMPO_RAD_L1_*.nc granules (searched recursively).")
@click.option("--out", "run_dir", required=True, type=click.Path(file_okay=False, path_type=Path), help="Run directory.")
@band_option(several=False, default=None, help="Band to train on [uv].")
@click.option("--epochs", type=int, default=None, help="Passes over the training tiles [20].")
@click.option("--batch-size", type=int, default=None, help="Tiles per step [8].")
@click.option("--device", type=click.Choice(["cpu", "cuda"]), default=None, help="[cpu]")
@click.option("--latent-channels", type=int, default=None, help="Latent channels Z [32].")
@click.option("--lr", type=float, default=None, help="Peak learning rate [5e-4].")
@click.option("--seed", type=int, default=None, help="[0]")
@click.option("--max-steps", type=int, default=None, help="Cap on the total number of steps.")
@click.option("--crop", type=int, default=None, help="Random crop size in pixels, a multiple of 4 up to 64 [64].")
@click.option("--val-fraction", type=float, default=None, help="Fraction of granules held out [0.2].")
@click.option("--patience", type=int, default=None, help="Validations without improvement before stopping [5].")
@click.option("--val-every", type=int, default=None,
              help="Steps between validations [0: once per epoch, no more often than every 100 steps].")
@click.option("--time-limit", type=float, default=None, help="Pause after this many seconds (resume later).")
@click.option("--resume", is_flag=True, help="Continue the run in --out (given options override the saved ones).")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def train(data_dir: Path, run_dir: Path, band: str | None, epochs: int | None, batch_size: int | None,
          device: str | None, latent_channels: int | None, lr: float | None, seed: int | None, max_steps: int | None,
          crop: int | None, val_fraction: float | None, patience: int | None, val_every: int | None,
          time_limit: float | None, resume: bool, quiet: bool) -> None:
    """Train the VAE on the granules in --data; checkpoints, statistics and summary.json go to --out."""
    import json
    from dataclasses import asdict

    require_torch("train")
    from tempocodec.training.config import TrainConfig
    from tempocodec.training.train import train_run

    saved = run_dir / "config.json"
    base = asdict(TrainConfig(data=str(data_dir)))
    if resume and saved.exists():
        base = json.loads(saved.read_text(encoding="utf-8"))
    given = {"band": band_group(band) if band is not None else None, "epochs": epochs, "batch_size": batch_size,
             "device": device, "lr": lr, "seed": seed, "max_steps": max_steps, "crop": crop,
             "val_fraction": val_fraction, "patience": patience, "val_every": val_every}
    values = {**base, "data": str(data_dir), **{k: v for k, v in given.items() if v is not None}}
    if latent_channels is not None:
        values["model"] = {**values["model"], "latent_channels": latent_channels}
    config = TrainConfig.from_dict(values)
    if config.crop % 4 or not 4 <= config.crop <= config.vae_config().tile:
        raise TempocodecError(f"--crop {config.crop}: expected a multiple of 4 between 4 and {config.vae_config().tile}")
    summary = train_run(config, run_dir, resume=resume, progress=not quiet, time_limit=time_limit)
    steps = summary["training"]
    if not summary["finished"]:
        click.echo(f"paused at step {steps['steps']} of {steps['total_steps']}; continue with --resume")
        return
    validation = summary["validation"]
    click.echo(f"done: {steps['steps']} steps in {steps['seconds']:.0f} s, best validation L1 {steps['best_val_l1']:.4f} "
               f"at step {steps['best_step']}; relative RMSE per spectrum "
               f"{100 * validation['relative_rmse_per_spectrum']['mean']:.2f}%, "
               f"{validation['active_latent_channels']} active latent channels; summary in {run_dir / 'summary.json'}")


@main.command("export")
@click.argument("run_dir", type=click.Path(file_okay=False, path_type=Path))
@click.argument("out_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option("--name", required=True, help="Model name written into the manifest.")
@click.option("--overwrite", is_flag=True, help="Replace OUT_DIR if it is a model directory (never anything else).")
def export_command(run_dir: Path, out_dir: Path, name: str, overwrite: bool) -> None:
    """Export the best checkpoint of the finished run RUN_DIR as the model directory OUT_DIR (ONNX, manifest, card)."""
    require_torch("export")
    from tempocodec.training.export import export_run

    out = export_run(run_dir, out_dir, name=name, overwrite=overwrite)
    click.echo(f"wrote model {name} to {out}")


@main.command("train-block")
@click.argument("data_dir", type=click.Path(file_okay=False, path_type=Path))
@click.argument("run_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option("--steps", type=int, default=3000, show_default=True, help="Optimizer steps in all.")
@click.option("--batch-size", type=int, default=32, show_default=True, help="Crops per step (per process).")
@click.option("--crop", type=int, default=32, show_default=True, help="Crop side in pixels (multiple of 4).")
@click.option("--lr", type=float, default=3e-4, show_default=True)
@click.option("--hidden", type=int, default=160, show_default=True, help="Width of the residual networks.")
@click.option("--depth", type=int, default=2, show_default=True, help="3×3 layers in each residual network.")
@click.option("--eval-every", type=int, default=200, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--time-limit", type=float, default=None, help="Pause after this many seconds (continue with --resume).")
@click.option("--resume", is_flag=True, help="Continue the run in RUN_DIR.")
def train_block_command(data_dir: Path, run_dir: Path, steps: int, batch_size: int, crop: int, lr: float, hidden: int,
                        depth: int, eval_every: int, seed: int, time_limit: float | None, resume: bool) -> None:
    """Train the basis-block VAE on the coefficient cache DATA_DIR (scripts/make_training_data.py) into RUN_DIR.

    Runs data-parallel under torchrun: ``torchrun --nproc_per_node N -m tempocodec train-block ...``.
    """
    require_torch("train-block")
    from tempocodec.training.block_train import BlockTrainConfig, load_basis, train_block
    from tempocodec.training.blockvae import BlockVAEConfig

    if crop % 4 or crop < 4:
        raise TempocodecError(f"--crop {crop}: expected a positive multiple of 4")
    basis = load_basis(data_dir)
    model = BlockVAEConfig(n_channels=basis["components"].shape[1], basis_components=basis["components"].shape[0],
                           hidden=hidden, depth=depth)
    config = BlockTrainConfig(steps=steps, batch_size=batch_size, crop=crop, lr=lr, eval_every=eval_every, seed=seed)
    state = train_block(data_dir, run_dir, model, config, resume=resume, time_limit=time_limit)
    if not state["finished"]:
        click.echo(f"paused at step {state['step']} of {steps}; continue with --resume")
    else:
        click.echo(f"done: {state['step']} steps, best validation RMS log error {state['best']:.5f}")


@main.command("export-block")
@click.argument("run_dir", type=click.Path(file_okay=False, path_type=Path))
@click.argument("data_dir", type=click.Path(file_okay=False, path_type=Path))
@click.argument("out_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option("--name", required=True, help="Model name written into the manifest.")
@click.option("--overwrite", is_flag=True, help="Replace OUT_DIR if it is a model directory (never anything else).")
def export_block_command(run_dir: Path, data_dir: Path, out_dir: Path, name: str, overwrite: bool) -> None:
    """Export the best checkpoint of the basis-block run RUN_DIR (trained on DATA_DIR) as the model OUT_DIR."""
    require_torch("export-block")
    from tempocodec.training.export import export_block_run

    click.echo(f"wrote model {name} to {export_block_run(run_dir, data_dir, out_dir, name=name, overwrite=overwrite)}")


@main.command("simulate")
@click.argument("out_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option("--rows", type=int, required=True, help="Mirror steps per granule.")
@click.option("--cols", type=int, required=True, help="Cross-track pixels per granule.")
@click.option("--seed", type=int, required=True, help="Seed of the first scene (scene k uses seed + k).")
@click.option("--scenes", type=int, default=1, show_default=True, help="Number of granules to simulate.")
@band_option(several=True, default="all", help="Bands to simulate.")
@click.option("--quiet", is_flag=True, help="No progress bar and no summary.")
def simulate_command(out_dir: Path, rows: int, cols: int, seed: int, scenes: int, band: str, quiet: bool) -> None:
    """Simulate TEMPO-like L1B granules and their L2 truth (NO2, HCHO, O3TOT, CLDO4) into OUT_DIR."""
    from tempocodec.progress import progress_bar
    from tempocodec.simulator import write_simulated

    bar = progress_bar(enabled=not quiet)
    task = bar.add_task("simulate", total=None)

    def advance(done: int, total: int, message: str) -> None:
        if done == 1:
            bar.start()  # only once the arguments have passed the checks
        bar.update(task, completed=done, total=total)

    try:
        paths = write_simulated(out_dir, rows, cols, seed, scenes=scenes, bands=band, progress=advance)
    finally:
        bar.stop()
    if not quiet:
        size = sum(p.stat().st_size for p in paths) / 1e6
        click.echo(f"wrote {len(paths)} files ({size:.1f} MB) to {out_dir}")


@main.command("train-probes")
@click.option("--data", "data_dir", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="L1B granules with their L2 truth files beside them (searched recursively).")
@click.option("--model", required=True, help="Model directory or name; probes are written into it.")
@click.option("--heldout", "heldout_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Granules to measure on (default: a granule split of --data).")
@click.option("--no-geometry", is_flag=True, help="Latent means only (no cos SZA, cos VZA, cos relative azimuth).")
@click.option("--epochs", type=int, default=60, show_default=True, help="MLP epochs at most.")
@click.option("--hidden", type=int, default=512, show_default=True, help="MLP hidden width.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--device", type=click.Choice(["cpu", "cuda"]), default="cpu", show_default=True)
@click.option("--quiet", is_flag=True, help="No progress bar.")
def train_probes_command(data_dir: Path, model: str, heldout_dir: Path | None, no_geometry: bool, epochs: int,
                         hidden: int, seed: int, device: str, quiet: bool) -> None:
    """Train linear and MLP probes (cloud fraction, ozone, NO2, HCHO) on a model's latents; print the held-out table."""
    require_torch("train-probes")
    from rich.console import Console

    from tempocodec.runtime.query import metrics_table
    from tempocodec.training.probe_training import ProbeConfig, train_probes

    config = ProbeConfig(geometry=not no_geometry, epochs=epochs, hidden=hidden, seed=seed, device=device)
    Console().print(metrics_table(train_probes(data_dir, model, heldout=heldout_dir, config=config,
                                               progress=not quiet)))


@main.command("query")
@click.argument("stores", nargs=-1, required=True, metavar="STORE...")
@click.option("--product", "products", default="all", show_default=True,
              help="cloud_fraction, ozone, no2, hcho, or all (several: comma-separated).")
@click.option("-o", "--output", default=None,
              help="Write the products to this netCDF file; with several stores, a directory for <store>.products.nc "
                   "files (default: print a summary of each).")
@click.option("--kind", type=click.Choice(["mlp", "linear"]), default="mlp", show_default=True, help="Probe kind.")
@band_option(several=False, help="Band whose latents to read.")
@click.option("--model", default=None, help="Model name or directory path with the probes (default: the model the "
              "store names, looked up by name in the trusted model directories).")
@click.option("--overwrite", is_flag=True, help="Replace the output file if it is a netCDF-4 file (never anything else).")
@WORKERS
@SCHEDULER
@click.option("--quiet", is_flag=True, help="No progress bar and no 'wrote' line (summaries are still printed).")
def query_command(stores: tuple[str, ...], products: str, output: str | None, kind: str, band: str, model: str | None,
                  overwrite: bool, workers: int | None, scheduler: str | None, quiet: bool) -> None:
    """Level-2 products of STORE from its latents on the latent grid, without decompressing (the decoder never runs)."""
    from tempocodec.runtime.query import query_store, summary_table, write_products

    group = band_group(band)
    if not is_batch(list(stores), workers, scheduler):
        ds = query_store(stores[0], products, group, kind=kind, model=model)
        if output is None:
            print_table(summary_table(ds))
            return
        write_products(ds, output, overwrite=overwrite)
        if not quiet:
            click.echo(f"wrote {', '.join(map(str, ds.data_vars))} on the {ds.sizes['latent_row']}×"
                       f"{ds.sizes['latent_col']} latent grid to {output}")
        return
    from tempocodec.runtime.batch import query_stores

    started = time.perf_counter()
    report = run_batch(lambda client: query_stores(stores, products, group, out_dir=output, client=client,
                                                   workers=workers or 1, progress=not quiet, overwrite=overwrite,
                                                   kind=kind, model=model), scheduler)
    for outcome in report.outcomes:
        if outcome.value is not None:
            print_table(summary_table(outcome.value))
    finish_batch(report, "queried", output, started, quiet)


@main.command("evaluate")
@click.argument("original", type=click.Path(dir_okay=False, path_type=Path))
@click.argument("store", type=click.Path(file_okay=False, path_type=Path))
@click.option("--report", "report_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Write report.md and its PNG figures into this directory.")
@band_option(several=False, help="Band to compare.")
@click.option("--overwrite", is_flag=True, help="Replace the --report directory if it holds an earlier report.")
@click.option("--quiet", is_flag=True, help="No progress bar and no summary table.")
def evaluate_command(original: Path, store: Path, report_dir: Path | None, band: str, overwrite: bool, quiet: bool) -> None:
    """Compare STORE (made by compress) with the ORIGINAL L1B granule: per-wavelength errors, DOAS NO2, probes."""
    from rich.console import Console
    from rich.table import Table

    from tempocodec.atomic import check_target
    from tempocodec.evaluation.run import evaluate_store
    from tempocodec.evaluation.summary import summary_rows

    if report_dir is not None:
        from tempocodec.evaluation.report import REPORT_DIR, write_report  # loads matplotlib

        check_target(report_dir, REPORT_DIR if overwrite else None)  # before the long evaluation, not after
    evaluation = evaluate_store(original, store, band=band_group(band), progress=not quiet)
    if not quiet:
        table = Table(title=f"{store} against {original.name}")
        table.add_column("metric")
        table.add_column("value", justify="right")
        for name, value in summary_rows(evaluation):
            table.add_row(name, value)
        Console().print(table)
    if report_dir is not None:
        click.echo(f"wrote {write_report(evaluation, report_dir, overwrite=overwrite)}")
