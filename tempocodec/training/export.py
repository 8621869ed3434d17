"""Export a trained :class:`~tempocodec.training.vae.VAE` as a released model directory (see docs/design.md).

The directory holds ``encoder.onnx`` (input ``"x"`` ``(N, C, H, W)`` -> ``"mean"``, ``"logvar"`` ``(N, Z, H/d, W/d)``),
``decoder.onnx`` (``"z"`` -> ``"x"``), ``normalization.npz`` (``mu``, ``sigma`` float32 ``(C,)``), ``model_card.md``,
``training_config.json`` and ``manifest.json``. Batch, H and W are dynamic in both graphs.

The manifest's ``files`` maps each file name to the hex sha256 of its bytes; its ``sha256``, the model identity, is
the hex sha256 of the UTF-8 text made of one ``"name:sha"`` line per coding file (``encoder.onnx``, ``decoder.onnx``,
``normalization.npz``), sorted by name and joined with ``"\\n"`` (no trailing newline): see
:func:`tempocodec.runtime.artifacts.identity_sha256`.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from tempocodec import __version__
from tempocodec.atomic import Replaceable, atomic_dir, check_target, is_empty_dir
from tempocodec.errors import TempocodecError
from tempocodec.runtime.artifacts import MODEL_FORMAT, check_model_name, identity_sha256, sha256_bytes
from tempocodec.training.blockvae import BlockVAE
from tempocodec.training.checkpoints import load_checkpoint
from tempocodec.training.vae import VAE

ExportableModel = VAE | BlockVAE  # the architectures a model directory can hold
ONNX_OPSET = 17
IMAGE_AXES = {0: "batch", 2: "height", 3: "width"}


class _EncoderGraph(nn.Module):
    """``x`` -> ``(mean, logvar)`` for ONNX export."""

    def __init__(self, model: ExportableModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.model.encode(x)


class _DecoderGraph(nn.Module):
    """``z`` -> ``x`` for ONNX export."""

    def __init__(self, model: ExportableModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.model.decode(z)


def export_graph(module: nn.Module, example: torch.Tensor, path: Path, input_name: str, output_names: list[str],
                 axes: dict[int, str] = IMAGE_AXES) -> None:
    """Write ``module`` as an ONNX graph at ``path``; the ``axes`` of the input and of every output are dynamic."""
    dynamic_axes = {input_name: axes, **{name: axes for name in output_names}}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module,
            (example,),
            str(path),
            input_names=[input_name],
            output_names=output_names,
            dynamic_axes=dynamic_axes,
            opset_version=ONNX_OPSET,
            dynamo=False,
            do_constant_folding=True,
        )


def _check_stats(mu: np.ndarray, sigma: np.ndarray, n_channels: int) -> tuple[np.ndarray, np.ndarray]:
    """Return ``mu``, ``sigma`` as float32 ``(n_channels,)``; raise if the shape is wrong or a value is bad."""
    mu = np.asarray(mu, dtype=np.float32)
    sigma = np.asarray(sigma, dtype=np.float32)
    if mu.shape != (n_channels,) or sigma.shape != (n_channels,):
        raise TempocodecError(f"normalization: mu {mu.shape} and sigma {sigma.shape} must both be ({n_channels},)")
    if not (np.isfinite(mu).all() and np.isfinite(sigma).all() and (sigma > 0).all()):
        raise TempocodecError("normalization: mu and sigma must be finite and sigma > 0")
    return mu, sigma


def _render_value(value: object) -> str:
    """Markdown for one model-card section: lists become bullets, dicts a two-column table."""
    if isinstance(value, dict):
        rows = "\n".join(f"| {key} | {item} |" for key, item in value.items())
        return f"| item | value |\n|---|---|\n{rows}"
    if isinstance(value, (list, tuple)):
        return "\n".join(f"- {item}" for item in value)
    return str(value)


def render_model_card(name: str, band: str, model: ExportableModel, card: dict | None) -> str:
    """The text of ``model_card.md``: a header with the architecture, then one section per ``card`` entry."""
    config = model.config
    lines = [
        f"# {name}",
        "",
        f"tempocodec {__version__} VAE for TEMPO L1B `{band}`: {config.n_channels} channels, tiles of "
        f"{config.tile}×{config.tile} pixels -> latent {config.latent_channels}×{config.tile // config.downsample}"
        f"×{config.tile // config.downsample} ({model.n_parameters():,} parameters, widths {list(config.widths)}).",
        "",
    ]
    for title, value in (card or {"Training": "No training information was recorded."}).items():
        lines += [f"## {title}", "", _render_value(value), ""]
    return "\n".join(lines)


def _write_directory(model: ExportableModel, mu: np.ndarray, sigma: np.ndarray, root: Path, name: str, band: str,
                     card: dict | None, config: dict | None) -> None:
    """Write every file of the model directory into the (empty) directory ``root``."""
    cfg = model.config
    example = torch.zeros(1, cfg.n_channels, cfg.tile, cfg.tile)
    latent = torch.zeros(1, cfg.latent_channels, cfg.tile // cfg.downsample, cfg.tile // cfg.downsample)
    export_graph(_EncoderGraph(model), example, root / "encoder.onnx", "x", ["mean", "logvar"])
    export_graph(_DecoderGraph(model), latent, root / "decoder.onnx", "z", ["x"])
    np.savez(root / "normalization.npz", mu=mu, sigma=sigma)
    (root / "model_card.md").write_text(render_model_card(name, band, model, card), encoding="utf-8")
    training_config = {**(config or {}), "model": cfg.to_dict()}
    (root / "training_config.json").write_text(json.dumps(training_config, indent=2, sort_keys=True), encoding="utf-8")
    files = {path.name: sha256_bytes(path.read_bytes()) for path in sorted(root.iterdir()) if path.is_file()}
    manifest = {
        "format": MODEL_FORMAT,
        "name": name,
        "band": band,
        "n_channels": cfg.n_channels,
        "latent_channels": cfg.latent_channels,
        "tile": cfg.tile,
        "downsample": cfg.downsample,
        "inputs": {"encoder": "x", "decoder": "z"},
        "outputs": {"encoder": ["mean", "logvar"], "decoder": ["x"]},
        "onnx_opset": ONNX_OPSET,
        "tempocodec_version": __version__,
        "files": files,
        "sha256": identity_sha256(files),
    }
    (root / "manifest.json").write_text(json.dumps(manifest, indent=2), encoding="utf-8")


def export_model(model: ExportableModel, mu: np.ndarray, sigma: np.ndarray, out_dir: Path, *, name: str, band: str,
                 card: dict | None = None, config: dict | None = None, overwrite: bool = False) -> Path:
    """Write the model directory ``out_dir`` for ``model`` with normalization ``mu``, ``sigma`` (float32 ``(C,)``).

    ``card`` maps model-card section titles to text, lists or dicts; ``config`` is the training configuration
    (the model config is added under ``"model"``). The directory is built next to ``out_dir`` and moved into place
    at the end (:func:`tempocodec.atomic.atomic_dir`); an existing ``out_dir`` is replaced only when ``overwrite``
    is true and it is a model directory (or empty). Returns ``out_dir``.
    """
    out_dir = Path(out_dir)
    check_model_name(name)
    mu, sigma = _check_stats(mu, sigma, model.config.n_channels)
    replace = MODEL_DIR if overwrite else None
    check_target(out_dir, replace)
    was_training = model.training
    model.eval()
    try:
        with atomic_dir(out_dir, replace=replace) as staging:
            _write_directory(model, mu, sigma, staging, name, band, card, config)
    finally:
        model.train(was_training)
    return out_dir


def _is_model_dir(path: Path) -> bool:
    """Whether ``path`` holds a ``manifest.json`` of a ``tempocodec-model/...`` format (this version or another)."""
    try:
        manifest = json.loads((path / "manifest.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(manifest, dict) and str(manifest.get("format", "")).startswith(MODEL_FORMAT.split("/")[0] + "/")


MODEL_DIR = Replaceable(lambda path: is_empty_dir(path) or _is_model_dir(path), "a model directory")
"""What ``export --overwrite`` may replace."""


def _percent(value: float | None) -> str:
    """A fraction as a percentage with 3 significant digits ("n/a" for None)."""
    return "n/a" if value is None else f"{100 * value:.3g}%"


def _window_metrics(validation: dict, wavelength: list | None) -> dict:
    """Mean and median relative error over the channels of a few wavelength windows (all channels if unknown)."""
    mean = np.asarray([np.nan if v is None else v for v in validation["relative_error_mean_per_channel"]])
    median = np.asarray([np.nan if v is None else v for v in validation["relative_error_median_per_channel"]])
    if wavelength is None:
        return {"all channels": f"mean {_percent(np.nanmean(mean))}, median {_percent(np.nanmedian(median))}"}
    wl = np.asarray(wavelength, np.float64)
    rows = {}
    for low, high in ((290, 310), (310, 330), (330, 405), (405, 465), (465, 490)):
        inside = (wl >= low) & (wl < high)
        if inside.any():
            rows[f"{low}-{high} nm"] = (f"mean {_percent(np.nanmean(mean[inside]))}, "
                                        f"median {_percent(np.nanmedian(median[inside]))}")
    return rows


def card_from_summary(summary: dict) -> dict:
    """Model-card sections (title -> text, list or dict) from a run's ``summary.json``."""
    data, training, validation = summary["data"], summary["training"], summary["validation"]
    provenance = data.get("provenance", {})
    origin = ("Trained on simulated data (tempocodec's TEMPO-like simulator), not on real TEMPO granules."
              if provenance.get("simulated") else "Trained on the L1B granules listed below.")
    structure = {name: ("n/a" if item is None else
                        f"model {item['model_rms_log_error']:.3g} vs mean spectrum "
                        f"{item['mean_spectrum_rms_log_error']:.3g} (ratio {item['ratio']:.2f}"
                        f"{', band structure lost' if item['structure_lost'] else ''})")
                 for name, item in validation["spectral_structure"].items()}
    rrmse, baseline = validation["relative_rmse_per_spectrum"], validation["relative_rmse_per_spectrum_mean_predictor"]
    return {
        "Data": [origin, f"band `{data['band']}`, source directory `{data['dir']}`",
                 f"{len(data['train_granules'])} training granules ({data['train_tiles']} tiles), "
                 f"{len(data['val_granules'])} validation granules ({data['val_tiles']} tiles), split by granule",
                 f"validation granules: {', '.join(data['val_granules'])}",
                 *(f"granule {key}: {value}" for key, value in provenance.get("attrs", {}).items())],
        "Training budget": {"steps": training["steps"], "epochs": training["epochs_completed"],
                            "batch size": training["batch_size"], "crop": training["crop"],
                            "learning rate": training["lr"], "wall time (s)": training["seconds"],
                            "device": training["device_name"], "torch": training["torch"],
                            "seed": training["seed"], "best step": training["best_step"],
                            "stopped early": training["stopped_early"], "parameters": training["parameters"]},
        "Validation metrics": {
            "relative RMSE per spectrum (mean / median)": f"{_percent(rrmse['mean'])} / {_percent(rrmse['median'])}",
            "same for the mean-spectrum predictor": f"{_percent(baseline['mean'])} / {_percent(baseline['median'])}",
            **{f"absolute relative error {k}": v for k, v in _window_metrics(validation, validation["wavelength_nm"]).items()},
            **{f"differential structure {k}": v for k, v in structure.items()},
            "active latent channels": f"{validation['active_latent_channels']} of "
                                      f"{len(validation['kl_per_latent_channel'])}"
                                      f"{' (posterior collapse)' if validation['posterior_collapse'] else ''}",
            "validation tiles / pixels": f"{validation['tiles']} / {validation['pixels']}",
        },
        "Limits": [
            "Lossy, at a fixed ratio of 514 values to 1 (1028 to 1 with float16 latents): compare the errors above "
            "with the instrument noise (radiance_error) before using decoded radiance for trace-gas retrievals.",
            "Radiance below 1 photon/s/cm^2/nm/sr is not represented (log(max(L, 1)) normalization); "
            "normalized values are clipped to [-10, 10].",
            "Only the band named above; statistics (mu, sigma) are those of the training granules.",
            *(["Trained on simulated spectra: expect a domain gap on real TEMPO data."]
              if provenance.get("simulated") else []),
        ],
    }


def export_run(run_dir: Path, out_dir: Path, *, name: str, overwrite: bool = False) -> Path:
    """Export the best checkpoint of a finished training run (``best.pt``, ``normalization.npz``, ``summary.json``)
    as the model directory ``out_dir``, with a model card made from the run summary. Returns ``out_dir``."""
    run_dir = Path(run_dir)
    summary_path = run_dir / "summary.json"
    if not summary_path.exists():
        raise TempocodecError(f"{run_dir}: no summary.json (the run has not finished; resume it first)")
    summary = json.loads(summary_path.read_text(encoding="utf-8"))
    model, checkpoint = load_checkpoint(run_dir / "best.pt")
    with np.load(run_dir / "normalization.npz") as stats:
        mu, sigma = stats["mu"], stats["sigma"]
    config = checkpoint["config"]
    return export_model(model, mu, sigma, out_dir, name=name, band=config["band"], card=card_from_summary(summary),
                        config=config, overwrite=overwrite)


def block_run_card(run_dir: Path, data_dir: Path) -> dict:
    """Model-card sections of a basis-block run: its data, architecture and training budget (from ``log.jsonl``)."""
    import platform

    import numpy as np
    import torch

    from tempocodec.training.block_train import load_basis

    records = [json.loads(line) for line in (Path(run_dir) / "log.jsonl").read_text(encoding="utf-8").splitlines()]
    basis = load_basis(Path(data_dir))
    with np.load(Path(data_dir) / "train.npz") as train, np.load(Path(data_dir) / "valid.npz") as valid:
        n_train, n_valid = len(train["seeds"]), len(valid["seeds"])
        first_seed = int(train["seeds"][0])
    cpu = f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else cpu
    start = records[0]
    best = min(records, key=lambda r: r["valid_rms"])
    return {
        "Training data": [
            f"{n_train} simulated training scenes of 64×64 pixels (seeds {first_seed}…{first_seed + n_train - 1}) and "
            f"{n_valid} validation scenes (tempocodec.training.simdata: 15–60°N, centre SZA 0–80°, all seasons, cloud "
            f"cover drawn per scene), regenerated by `scripts/make_training_data.py`; nothing of them is stored.",
            f"Spectral basis: {basis['components'].shape[0]} principal components of log radiance explaining "
            f"{100 * float(basis['explained'].sum()):.4f} % of its variance on the pilot scenes; normalization "
            f"(mu, sigma) from the same scenes.",
        ],
        "Training budget": [
            f"{records[-1]['step']} steps in {records[-1]['time'] - start['time']:.0f} s on {device}.",
            f"Validation (mean per-pixel RMS log-radiance error within the basis, whole validation scenes): "
            f"{start['valid_rms']:.4%} for the linear block transform at step 0, {best['valid_rms']:.4%} at step "
            f"{best['step']} (the exported checkpoint).",
        ],
    }


def export_block_run(run_dir: Path, data_dir: Path, out_dir: Path, *, name: str, overwrite: bool = False) -> Path:
    """Export ``best.pt`` of a basis-block run (:mod:`tempocodec.training.block_train`) with the normalization of its
    data directory as the model directory ``out_dir``; the card gets :func:`block_run_card`."""
    from tempocodec.training.block_train import load_basis, load_block_checkpoint

    checkpoint = Path(run_dir) / "best.pt"
    if not checkpoint.is_file():
        raise TempocodecError(f"{checkpoint}: missing (train the run first)")
    basis = load_basis(Path(data_dir))
    model = load_block_checkpoint(checkpoint)
    config = {"data": Path(data_dir).name, "basis_explained": float(basis["explained"].sum())}
    return export_model(model, basis["mu"], basis["sigma"], out_dir, name=name, band=str(basis["band"]),
                        card=block_run_card(run_dir, data_dir), config=config, overwrite=overwrite)
