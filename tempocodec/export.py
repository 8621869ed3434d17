"""Export a trained :class:`~tempocodec.vae.VAE` as a released model directory (see docs/design.md).

The directory holds ``encoder.onnx`` (input ``"x"`` ``(N, C, H, W)`` -> ``"mean"``, ``"logvar"`` ``(N, Z, H/d, W/d)``),
``decoder.onnx`` (``"z"`` -> ``"x"``), ``normalization.npz`` (``mu``, ``sigma`` float32 ``(C,)``), ``model_card.md``,
``training_config.json`` and ``manifest.json``. Batch, H and W are dynamic in both graphs.

The manifest's ``files`` maps each file name to the hex sha256 of its bytes; its ``sha256`` is the hex sha256 of the
UTF-8 text made of one ``"name:sha"`` line per file, sorted by name and joined with ``"\\n"`` (no trailing newline).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from tempocodec import __version__
from tempocodec.errors import TempocodecError
from tempocodec.vae import VAE

MODEL_FORMAT = "tempocodec-model/1"
ONNX_OPSET = 17


class _EncoderGraph(nn.Module):
    """``x`` -> ``(mean, logvar)`` for ONNX export."""

    def __init__(self, model: VAE) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.model.encode(x)


class _DecoderGraph(nn.Module):
    """``z`` -> ``x`` for ONNX export."""

    def __init__(self, model: VAE) -> None:
        super().__init__()
        self.model = model

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.model.decode(z)


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def combined_sha256(files: dict[str, str]) -> str:
    """Hex sha256 of the sorted ``"name:sha"`` lines of ``files`` joined with newlines (the manifest's ``sha256``)."""
    text = "\n".join(f"{name}:{files[name]}" for name in sorted(files))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _export_graph(module: nn.Module, example: torch.Tensor, path: Path, input_name: str, output_names: list[str]) -> None:
    """Write ``module`` as an ONNX graph at ``path`` with dynamic batch, height and width."""
    axes = {0: "batch", 2: "height", 3: "width"}
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


def render_model_card(name: str, band: str, model: VAE, card: dict | None) -> str:
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


def _write_directory(model: VAE, mu: np.ndarray, sigma: np.ndarray, root: Path, name: str, band: str,
                     card: dict | None, config: dict | None) -> None:
    """Write every file of the model directory into the (empty) directory ``root``."""
    cfg = model.config
    example = torch.zeros(1, cfg.n_channels, cfg.tile, cfg.tile)
    latent = torch.zeros(1, cfg.latent_channels, cfg.tile // cfg.downsample, cfg.tile // cfg.downsample)
    _export_graph(_EncoderGraph(model), example, root / "encoder.onnx", "x", ["mean", "logvar"])
    _export_graph(_DecoderGraph(model), latent, root / "decoder.onnx", "z", ["x"])
    np.savez(root / "normalization.npz", mu=mu, sigma=sigma)
    (root / "model_card.md").write_text(render_model_card(name, band, model, card), encoding="utf-8")
    training_config = {**(config or {}), "model": cfg.to_dict()}
    (root / "training_config.json").write_text(json.dumps(training_config, indent=2, sort_keys=True), encoding="utf-8")
    files = {path.name: sha256_file(path) for path in sorted(root.iterdir()) if path.is_file()}
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
        "sha256": combined_sha256(files),
    }
    (root / "manifest.json").write_text(json.dumps(manifest, indent=2), encoding="utf-8")


def export_model(model: VAE, mu: np.ndarray, sigma: np.ndarray, out_dir: Path, *, name: str, band: str,
                 card: dict | None = None, config: dict | None = None, overwrite: bool = False) -> Path:
    """Write the model directory ``out_dir`` for ``model`` with normalization ``mu``, ``sigma`` (float32 ``(C,)``).

    ``card`` maps model-card section titles to text, lists or dicts; ``config`` is the training configuration
    (the model config is added under ``"model"``). The directory is built next to ``out_dir`` and moved into place
    at the end; an existing ``out_dir`` is replaced only when ``overwrite`` is true. Returns ``out_dir``.
    """
    out_dir = Path(out_dir)
    mu, sigma = _check_stats(mu, sigma, model.config.n_channels)
    if out_dir.exists() and not overwrite:
        raise TempocodecError(f"{out_dir}: model directory exists (pass overwrite to replace it)")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    was_training = model.training
    model.eval()
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        _write_directory(model, mu, sigma, staging, name, band, card, config)
        if out_dir.exists():
            retired = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.old.", dir=out_dir.parent))
            os.replace(out_dir, retired / out_dir.name)
            os.replace(staging, out_dir)
            shutil.rmtree(retired)
        else:
            os.replace(staging, out_dir)
    finally:
        model.train(was_training)
        if staging.exists():
            shutil.rmtree(staging)
    return out_dir
