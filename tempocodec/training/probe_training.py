"""Train the probes of a model directory (torch): linear and MLP heads on the frozen encoder's latent means.

Inputs are what :func:`tempocodec.runtime.query.query_store` reads: each granule is compressed with the model to a temporary
store (radiance_error left out) and its latent grid and geometry are read back through
:func:`tempocodec.runtime.probes.latent_grid`, so probes see exactly the stored (float16) latents. Targets are the TEMPO L2
truth files beside each L1B granule (same start time, scan and granule number), pooled to the latent grid (mean of
the finite pixels of each 4×4 block). Granules are split, never cells: probes are fitted on training granules
(the MLP stops early on a validation subset of them) and measured on held-out granules.

Outputs (``MODEL_DIR/probes/``): ``<product>_linear.onnx``, ``<product>_mlp.onnx`` and ``probes.json``; the
manifest lists them with their sha256 (the model identity is unchanged) and the model card gets a "Probes" section.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
from torch import nn

from tempocodec.atomic import Replaceable, atomic_dir
from tempocodec.bands import BAND_CHOICES
from tempocodec.errors import TempocodecError
from tempocodec.granule.l2 import l2_files_beside, l2_pattern, l2_truth, read_l2
from tempocodec.prepare.tiles import pool_to_latent
from tempocodec.progress import progress_bar
from tempocodec.runtime.artifacts import (
    ModelArtifacts,
    load_model,
    record_files,
    resolve_model,
    write_card_section,
)
from tempocodec.runtime.features import GASES, input_names
from tempocodec.runtime.probes import (
    GEOMETRY_INPUTS,
    PROBE_KINDS,
    PROBES_DIR,
    PROBES_FILE,
    PROBES_FORMAT,
    PRODUCTS,
    TargetTransform,
    latent_grid,
    r2_rmse_bias,
)
from tempocodec.runtime.store import compress_granule
from tempocodec.training.data import find_granules, split_granules
from tempocodec.training.export import export_graph

CARD_SECTION = "Probes"


@dataclass(frozen=True)
class ProbeConfig:
    """How probes are trained. ``geometry``: append :data:`GEOMETRY_INPUTS` to the latent means; ``columns``: then
    append the store's product features (DOAS slant columns and their 1-σ, :mod:`tempocodec.runtime.features`), which
    the trace gases' probes read (:func:`product_inputs`) with MLPs of width ``column_hidden`` (small: their inputs
    are few, and ``query`` runs them five times for the uncertainty); ``hidden``: MLP
    width (``[F -> hidden -> hidden -> 1]``, ReLU); ``epochs``/``patience``: MLP epochs at most, and validations
    without improvement before stopping; ``ridge``: linear probe's ridge penalty per sample on standardized inputs;
    ``heldout_fraction``: granules held out when no held-out directory is given; ``val_fraction``: training
    granules the MLP validates on (the linear probe, which needs no early stopping, fits on all training granules);
    ``threads``: torch CPU threads while an MLP trains (one is fastest for nets this small, and far faster on busy
    cores)."""

    geometry: bool = True
    columns: bool = True
    hidden: int = 512
    column_hidden: int = 128
    epochs: int = 60
    patience: int = 8
    batch_size: int = 256
    lr: float = 1e-3
    weight_decay: float = 1e-4
    ridge: float = 1e-3
    heldout_fraction: float = 0.2
    val_fraction: float = 0.15
    seed: int = 0
    device: str = "cpu"
    threads: int = 1


@dataclass
class Samples:
    """Probe inputs and targets of the usable latent cells of some granules.

    ``features``: float32 ``(N, F)``; ``targets``: product -> float64 ``(N,)`` physical units, NaN where the truth has
    no value; ``granules``: the granule file names.
    """

    features: np.ndarray
    targets: dict[str, np.ndarray]
    granules: list[str]


# --------------------------------------------------------------------------------------------------- data


def truth_paths(l1b: Path) -> dict[str, Path]:
    """Product -> the L2 truth file of the L1B granule ``l1b`` (same directory, start time, scan and granule)."""
    found = l2_files_beside(l1b)
    out: dict[str, Path] = {}
    for product in PRODUCTS.values():
        pattern = l2_pattern(product.l2_product, l1b)
        if pattern is None:
            raise TempocodecError(f"{l1b}: not a TEMPO L1B granule name (TEMPO_RAD_L1_V.._<time>_S...G...nc)")
        if product.l2_product not in found:
            raise TempocodecError(f"{l1b}: no L2 truth file {pattern} beside it (the probes need all four products)")
        out[product.name] = found[product.l2_product]
    return out


def granule_samples(l1b: Path, model: ModelArtifacts, geometry: tuple[str, ...], work: Path,
                    columns: tuple[str, ...] = ()) -> Samples:
    """The samples of one granule: compressed with ``model`` into ``work`` (removed after), inputs read back
    (latents, then the ``geometry`` inputs, then the product features ``columns``)."""
    truth = truth_paths(l1b)
    selection = next(key for key, bands in BAND_CHOICES.items() if bands == (model.band,))
    store = work / f"{l1b.stem}.zarr"
    compress_granule(l1b, store, bands=selection, model=model.path, drop_radiance_error=True, overwrite=True,
                     progress=False)
    try:
        grid = latent_grid(store, model.band)
    finally:
        shutil.rmtree(store, ignore_errors=True)
    features, usable = grid.features(geometry, columns)
    targets = {}
    for product, path in truth.items():
        field = np.asarray(l2_truth(read_l2(path)).values, np.float64)
        pooled = pool_to_latent(field, int(grid.latent.attrs["downsample"]))
        if pooled.shape != grid.shape:
            raise TempocodecError(f"{path}: L2 grid {field.shape} does not match its L1B granule {l1b.name}")
        targets[product] = pooled[usable].astype(np.float64)
    return Samples(features, targets, [l1b.name])


def collect(paths: list[Path], model: ModelArtifacts, geometry: tuple[str, ...], label: str,
            progress: bool = True, columns: tuple[str, ...] = ()) -> Samples:
    """The samples of every granule of ``paths``, concatenated (granule order)."""
    parts: list[Samples] = []
    with progress_bar(enabled=progress) as bar, tempfile.TemporaryDirectory(prefix=".probe-stores-") as work:
        task = bar.add_task(label, total=len(paths))
        for path in paths:
            parts.append(granule_samples(path, model, geometry, Path(work), columns))
            bar.advance(task)
    return Samples(
        features=np.concatenate([p.features for p in parts]),
        targets={k: np.concatenate([p.targets[k] for p in parts]) for k in PRODUCTS},
        granules=[g for p in parts for g in p.granules],
    )


# --------------------------------------------------------------------------------------------------- models


class ProbeNet(nn.Module):
    """``asinh`` of the features flagged in ``asinh`` ``(F,)`` (the slant columns: their plumes span two decades, and
    the fit scale of the gases is asinh too), standardization with fixed ``mean``, ``std`` ``(F,)`` of the
    transformed features, then ``body`` -> ``(N, 1)``, clamped to ``limits`` (the training targets' range on the fit
    scale: the asinh scale's inverse would turn an extrapolation into a column of 1e20). With ``select`` (indices
    into a wider input), the net reads only those columns of its input, so every probe of a model takes the same
    feature vector."""

    mean: torch.Tensor
    std: torch.Tensor
    asinh: torch.Tensor
    select: torch.Tensor
    limits: torch.Tensor

    def __init__(self, body: nn.Module, mean: np.ndarray, std: np.ndarray, asinh: np.ndarray,
                 limits: tuple[float, float] = (-math.inf, math.inf)) -> None:
        super().__init__()
        self.body = body
        self.register_buffer("mean", torch.as_tensor(mean, dtype=torch.float32))
        self.register_buffer("std", torch.as_tensor(std, dtype=torch.float32))
        self.register_buffer("asinh", torch.as_tensor(asinh, dtype=torch.bool))
        self.register_buffer("select", torch.arange(len(mean)))
        self.register_buffer("limits", torch.as_tensor(limits, dtype=torch.float32))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        features = torch.index_select(features, 1, self.select)
        magnitude = features.abs()  # asinh spelled out: ONNX opset 17 export has no aten::asinh
        asinh = torch.sign(features) * torch.log(magnitude + torch.sqrt(magnitude * magnitude + 1.0))
        features = torch.where(self.asinh, asinh, features)
        return torch.clamp(self.body((features - self.mean) / self.std), self.limits[0], self.limits[1])

    def reading(self, select: np.ndarray) -> ProbeNet:
        """This net taking a wider input, of which it reads the columns ``select`` (int ``(F,)``)."""
        self.select = torch.as_tensor(select, dtype=torch.long)
        return self


def input_transform(x: np.ndarray, asinh: np.ndarray) -> np.ndarray:
    """What :class:`ProbeNet` does before standardizing: ``asinh`` of the flagged columns of ``x`` ``(N, F)``."""
    return np.where(asinh, np.arcsinh(x), x).astype(np.float32)


def _standardization(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-feature mean and std (std 1 where a feature is constant) of ``x`` ``(N, F)``, float32 ``(F,)`` each."""
    mean, std = x.mean(axis=0), x.std(axis=0)
    return mean.astype(np.float32), np.where(std > 0, std, 1.0).astype(np.float32)


def fit_linear(x: np.ndarray, y: np.ndarray, ridge: float, asinh: np.ndarray | None = None) -> ProbeNet:
    """Ridge least squares of ``y`` ``(N,)`` on ``x`` ``(N, F)`` (transformed as ``asinh`` flags, default none, and
    standardized; penalty ``ridge * N``, intercept free)."""
    asinh = np.zeros(x.shape[1], bool) if asinh is None else asinh
    mean, std = _standardization(input_transform(x, asinh))
    z = (input_transform(x, asinh) - mean) / std
    gram = z.T.astype(np.float64) @ z + ridge * len(z) * np.eye(z.shape[1])
    weights = np.linalg.solve(gram, z.T.astype(np.float64) @ (y - y.mean()))
    layer = nn.Linear(x.shape[1], 1)
    with torch.no_grad():
        layer.weight.copy_(torch.as_tensor(weights[None], dtype=torch.float32))
        layer.bias.fill_(float(y.mean()))
    return ProbeNet(layer, mean, std, asinh, (float(y.min()), float(y.max()))).eval()


def _mse(net: nn.Module, x: torch.Tensor, y: torch.Tensor, batch: int = 8192) -> float:
    """Mean squared error of ``net`` over all of ``x``, ``y``."""
    with torch.no_grad():
        total = sum(float(((net(x[i : i + batch])[:, 0] - y[i : i + batch]) ** 2).sum()) for i in range(0, len(x), batch))
    return total / max(1, len(x))


def fit_mlp(x: np.ndarray, y: np.ndarray, x_val: np.ndarray, y_val: np.ndarray, config: ProbeConfig,
            label: str, progress: bool = True, asinh: np.ndarray | None = None) -> ProbeNet:
    """An MLP ``[F -> hidden -> hidden -> 1]`` (ReLU; inputs transformed as ``asinh`` flags, default none) fitted to
    ``y`` (fit scale) with AdamW and cosine learning rate, stopped early on the validation MSE; the weights of the
    best validation are returned (on the CPU)."""
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(config.threads)
    try:
        return _fit_mlp(x, y, x_val, y_val, config, label, progress,
                        np.zeros(x.shape[1], bool) if asinh is None else asinh)
    finally:
        torch.set_num_threads(previous_threads)


def _fit_mlp(x: np.ndarray, y: np.ndarray, x_val: np.ndarray, y_val: np.ndarray, config: ProbeConfig,
             label: str, progress: bool, asinh: np.ndarray) -> ProbeNet:
    """:func:`fit_mlp` with the thread count set."""
    torch.manual_seed(config.seed)
    device = torch.device(config.device)
    mean, std = _standardization(input_transform(x, asinh))
    body = nn.Sequential(nn.Linear(x.shape[1], config.hidden), nn.ReLU(), nn.Linear(config.hidden, config.hidden),
                         nn.ReLU(), nn.Linear(config.hidden, 1))
    net = ProbeNet(body, mean, std, asinh, (float(y.min()), float(y.max()))).to(device)
    xt, yt = torch.as_tensor(x, device=device), torch.as_tensor(y, dtype=torch.float32, device=device)
    xv, yv = torch.as_tensor(x_val, device=device), torch.as_tensor(y_val, dtype=torch.float32, device=device)
    optimizer = torch.optim.AdamW(net.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=config.epochs)
    generator = torch.Generator(device="cpu").manual_seed(config.seed)
    best, waited = math.inf, 0
    best_state: dict[str, torch.Tensor] | None = None
    with progress_bar(enabled=progress) as bar:
        task = bar.add_task(label, total=config.epochs)
        for _ in range(config.epochs):
            net.train()
            for index in torch.randperm(len(xt), generator=generator).split(config.batch_size):
                index = index.to(device)
                loss = ((net(xt[index])[:, 0] - yt[index]) ** 2).mean()
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
            schedule.step()
            net.eval()
            score = _mse(net, xv, yv)
            bar.advance(task)
            if score < best:
                best, waited = score, 0
                best_state = {k: v.detach().clone() for k, v in net.state_dict().items()}
            else:
                waited += 1
                if waited >= config.patience:
                    break
    if best_state is None:
        raise TempocodecError(f"{label}: the validation loss never became finite")
    net.load_state_dict(best_state)
    return net.cpu().eval()


def export_probe(net: ProbeNet, n_features: int, path: Path) -> None:
    """Write ``net`` as an ONNX graph: input ``"features"`` float32 ``(N, n_features)``, output ``"y"`` ``(N, 1)``."""
    export_graph(net, torch.zeros(1, n_features), path, "features", ["y"], axes={0: "n"})


def _onnx_predict(path: Path, features: np.ndarray) -> np.ndarray:
    """Run the probe graph at ``path`` on ``features`` ``(N, F)``: fit-scale values ``(N,)``."""
    if len(features) == 0:
        return np.zeros(0, np.float32)
    options = ort.SessionOptions()
    options.log_severity_level = 3
    graph = ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])
    return graph.run(["y"], {"features": features})[0][:, 0]


# --------------------------------------------------------------------------------------------------- metrics


def metrics_row(product: str, probe: str, prediction: np.ndarray, truth: np.ndarray,
                transform: TargetTransform) -> dict:
    """One row of the held-out table: R² in physical units and on the fit scale, RMSE and bias (physical units)."""
    r2, rmse, bias = r2_rmse_bias(prediction, truth)
    r2_fit, _, _ = r2_rmse_bias(transform.forward(prediction), transform.forward(truth))
    return {"product": product, "probe": probe, "cells": int(truth.size), "r2": r2, "r2_fit_scale": r2_fit,
            "rmse": rmse, "bias": bias, "units": PRODUCTS[product].units}


# --------------------------------------------------------------------------------------------------- model card


def render_probe_section(description: dict) -> str:
    """Markdown body of the model card's "Probes" section from a ``probes.json`` description."""
    inputs, config = description["inputs"], description["config"]
    granules = description["granules"]
    n_fit, n_val = len(granules["train"]), len(granules["validation"])
    reads = []
    for product, entry in description["products"].items():
        names = entry["reads"]
        latent = sum(n.startswith("latent_") for n in names)
        rest = ", ".join(n for n in names if not n.startswith("latent_"))
        hidden = config["column_hidden"] if set(names) & set(inputs["columns"]) else config["hidden"]
        reads.append(f"{product}: {f'{latent} latent means, ' if latent else ''}{rest} "
                     f"(MLP [{len(names)} -> {hidden} -> {hidden} -> 1])")
    lines = [
        ("Linear and MLP probes, one of each per product, on the frozen encoder's stored latent means "
         f"({inputs['latent_channels']} channels per latent cell), the cell's geometry and the store's DOAS slant "
         f"columns (docs/format.md); inputs per product: {'; '.join(reads)}. Targets: TEMPO L2 truth pooled to the "
         "latent grid (mean over the valid pixels of each 4×4 block). Fitted on "
         f"{n_fit + n_val} training granules (the MLP on {n_fit}, stopping early on the other "
         f"{n_val}), measured on {len(granules['heldout'])} held-out granules ({granules['heldout_source']}). "
         "R² in physical units; 'mean' predicts the training mean. See docs/probes.md."),
        "",
        "| product | probe | cells | R² | R² (fit scale) | RMSE | bias | units |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for m in description["metrics"]:
        lines.append(f"| {m['product']} | {m['probe']} | {m['cells']} | {m['r2']:.3f} | {m['r2_fit_scale']:.3f} | "
                     f"{m['rmse']:.4g} | {m['bias']:.3g} | {m['units']} |")
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------------- training


def _split(data: Path, heldout: Path | None, config: ProbeConfig) -> tuple[list[Path], list[Path], list[Path], str]:
    """(fit, validation, held-out) granules and a phrase saying where the held-out ones came from."""
    paths = find_granules(data)
    if heldout is not None:
        held = find_granules(heldout)
        shared = sorted({p.name for p in paths} & {p.name for p in held})
        if shared:
            raise TempocodecError(f"{heldout}: granules also in {data}: {', '.join(shared[:3])}")
        source = f"directory {heldout}"
    else:
        if len(paths) < 3:
            raise TempocodecError(f"{data}: probes need at least 3 granules (fit, validation, held out); found {len(paths)}")
        paths, held = split_granules(paths, config.heldout_fraction, config.seed)
        source = f"{len(held)} of the granules of {data}, drawn with seed {config.seed}"
    if len(paths) < 2:
        raise TempocodecError(f"{data}: probes need at least 2 training granules (fit and MLP validation)")
    fit, val = split_granules(paths, config.val_fraction, config.seed + 1)
    return fit, val, held, source


def train_probes(data: str | os.PathLike, model: str | os.PathLike, *, heldout: str | os.PathLike | None = None,
                 config: ProbeConfig = ProbeConfig(), progress: bool = True) -> list[dict]:
    """Train the linear and MLP probes of every product for ``model`` on the granules of ``data`` and measure them on
    ``heldout`` (default: a granule split of ``data``); write them into the model directory (replacing earlier
    probes only once every new file is ready), record them in the manifest, and rewrite the card's Probes section.

    Returns the held-out table: one dict per product and probe (``mean``, ``linear``, ``mlp``) with ``cells``,
    ``r2``, ``r2_fit_scale``, ``rmse``, ``bias`` and ``units``.
    """
    art = load_model(resolve_model(model))
    fit_paths, val_paths, held_paths, source = _split(Path(data), None if heldout is None else Path(heldout), config)
    geometry = GEOMETRY_INPUTS if config.geometry else ()
    columns = input_names() if config.columns else ()
    fit = collect(fit_paths, art, geometry, "latents (fit)", progress, columns)
    val = collect(val_paths, art, geometry, "latents (validation)", progress, columns)
    held = collect(held_paths, art, geometry, "latents (held out)", progress, columns)
    n_features = fit.features.shape[1]
    names = [f"latent_{i}" for i in range(art.latent_channels)] + list(geometry) + list(columns)
    with atomic_dir(art.path / PROBES_DIR, replace=Replaceable(Path.is_dir, "a directory")) as staging:
        products, metrics = {}, []
        for name in PRODUCTS:
            select = product_inputs(name, art.latent_channels, len(geometry), len(columns))
            transform, graphs, rows = _train_product(name, fit, val, held, config, staging, progress, select,
                                                     art.latent_channels + len(geometry))
            products[name] = {"l2_product": PRODUCTS[name].l2_product, "l2_variable": PRODUCTS[name].l2_variable,
                              "units": PRODUCTS[name].units, "transform": transform.to_json(), "graphs": graphs,
                              "reads": [names[i] for i in select]}
            metrics += rows
        description = {
            "format": PROBES_FORMAT,
            "inputs": {"latent_channels": art.latent_channels, "geometry": list(geometry), "columns": list(columns),
                       "n_features": n_features},
            "products": products,
            "metrics": metrics,
            "granules": {"train": fit.granules, "validation": val.granules, "heldout": held.granules,
                         "heldout_source": source},
            "config": asdict(config),
        }
        (staging / Path(PROBES_FILE).name).write_text(json.dumps(description, indent=2), encoding="utf-8")
    names = sorted(f"{PROBES_DIR}/{p.name}" for p in (art.path / PROBES_DIR).iterdir() if p.is_file())
    record_files(art.path, names)
    write_card_section(art.path, CARD_SECTION, render_probe_section(description))
    return metrics


def product_inputs(product: str, latent_channels: int, n_geometry: int, n_columns: int) -> np.ndarray:
    """Indices of the inputs the probes of ``product`` read, into the feature vector [latents, geometry, columns]:
    cloud fraction and ozone read latents and geometry; NO₂ and HCHO, where the store has slant columns, read
    geometry and columns (the latents carry no trace gas, and with ~100 training scenes the MLP uses them to
    memorize scenes: measured in docs/probes.md), else latents and geometry."""
    latent = np.arange(latent_channels)
    geometry = latent_channels + np.arange(n_geometry)
    columns = latent_channels + n_geometry + np.arange(n_columns)
    if product in GASES and n_columns:
        return np.concatenate([geometry, columns])
    return np.concatenate([latent, geometry])


def _train_product(name: str, fit: Samples, val: Samples, held: Samples, config: ProbeConfig, out: Path,
                   progress: bool, select: np.ndarray,
                   first_column: int) -> tuple[TargetTransform, dict[str, str], list[dict]]:
    """Fit, export (into ``out``) and measure both probes of one product, reading the inputs ``select`` (the slant
    columns among them, indices from ``first_column`` on, transformed by asinh; an MLP of width ``column_hidden``
    when it reads them): its transform, kind -> graph file (relative to the model directory), and its held-out rows
    (mean, linear, mlp)."""
    finite = {s: np.isfinite(samples.targets[name]) for s, samples in (("fit", fit), ("val", val), ("held", held))}
    if finite["fit"].sum() < 2 or not finite["val"].any():
        raise TempocodecError(f"probes: too few latent cells with {name} truth to train on "
                              f"({int(finite['fit'].sum())} fit, {int(finite['val'].sum())} validation)")
    n_features = fit.features.shape[1]
    asinh = select >= first_column
    if asinh.any():
        config = replace(config, hidden=config.column_hidden)
    x, truth = fit.features[finite["fit"]][:, select], fit.targets[name][finite["fit"]]
    x_val, truth_val = val.features[finite["val"]][:, select], val.targets[name][finite["val"]]
    transform = TargetTransform.fit(PRODUCTS[name], truth)
    y, y_val = transform.forward(truth), transform.forward(truth_val)
    nets = {"linear": fit_linear(np.concatenate([x, x_val]), np.concatenate([y, y_val]), config.ridge, asinh),
            "mlp": fit_mlp(x, y, x_val, y_val, config, f"MLP probe {name}", progress, asinh)}
    x_held, truth_held = held.features[finite["held"]], held.targets[name][finite["held"]]  # all inputs: the graphs select
    rows = [metrics_row(name, "mean", np.full(truth_held.shape, truth.mean()), truth_held, transform)]
    graphs = {}
    for kind in PROBE_KINDS:
        path = out / f"{name}_{kind}.onnx"
        export_probe(nets[kind].reading(select), n_features, path)
        graphs[kind] = f"{PROBES_DIR}/{path.name}"
        rows.append(metrics_row(name, kind, transform.inverse(_onnx_predict(path, x_held)), truth_held, transform))
    return transform, graphs, rows
