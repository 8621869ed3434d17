"""OQ1 knobs: small simulated sets per setting; MLP probes on DOAS columns (+geometry) and on latents (+geometry)."""

import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

import tempocodec.simulator.scene as scene_mod
from tempocodec.runtime.artifacts import load_model, resolve_model
from tempocodec.runtime.features import input_names
from tempocodec.runtime.probes import GEOMETRY_INPUTS, PRODUCTS, TargetTransform, r2_rmse_bias
from tempocodec.simulator import SceneConfig, write_scenes
from tempocodec.training.probe_training import ProbeConfig, fit_mlp, granule_samples

setting = sys.argv[1]
n_train, n_test = 18, 6
orig_gases, orig_plumes = scene_mod.make_gases, scene_mod._plumes
if setting == "no2x5":

    def gases(*a, **k):
        g = orig_gases(*a, **k)
        g["no2_troposphere"] = g["no2_troposphere"] * 5
        return g

    scene_mod.make_gases = gases
if setting == "wide_plumes":
    scene_mod._plumes = lambda rng, shape, spacing, sources: orig_plumes(
        rng, shape, spacing, [(r, c, 4 * r0, p) for r, c, r0, p in sources]
    )
cover = 0.0 if setting == "clear" else None
configs = [
    SceneConfig(rows=64, cols=128, seed=600_000 + i, lat_range=(15.0, 60.0), sza_range=(0.0, 70.0), cloud_cover=cover)
    for i in range(n_train + n_test)
]
art = load_model(resolve_model("models/tempo-vae-uv-2"))
t0 = time.time()
with tempfile.TemporaryDirectory() as tmp:
    paths = [p for p in write_scenes(Path(tmp) / "g", configs, bands="uv") if "_RAD_" in p.name]
    samples = [granule_samples(p, art, GEOMETRY_INPUTS, Path(tmp), input_names()) for p in paths]


def stack(s):
    return np.concatenate([x.features for x in s]), {k: np.concatenate([x.targets[k] for x in s]) for k in ("no2", "hcho")}


fit, val, test = stack(samples[: n_train - 4]), stack(samples[n_train - 4 : n_train]), stack(samples[n_train:])
out = [setting]
for inputs, cols in (("DOAS+geo", list(range(32, 44))), ("latent+geo", list(range(35)))):
    asinh = np.array([i >= 35 for i in cols])
    for p in ("no2", "hcho"):
        sel = [np.isfinite(d[1][p]) & np.all(np.isfinite(d[0][:, cols]), 1) for d in (fit, val, test)]
        x = [d[0][s][:, cols] for d, s in zip((fit, val, test), sel, strict=False)]
        t = [d[1][p][s] for d, s in zip((fit, val, test), sel, strict=False)]
        tf = TargetTransform.fit(PRODUCTS[p], t[0])
        y = [tf.forward(v).astype(np.float32) for v in t]
        net = fit_mlp(x[0], y[0], x[1], y[1], replace(ProbeConfig(), hidden=128), p, False, asinh)
        with torch.no_grad():
            pr = tf.inverse(np.clip(net(torch.as_tensor(x[2]))[:, 0].numpy(), y[0].min(), y[0].max()))
        out.append(f"{inputs} {p} R2 {r2_rmse_bias(pr, t[2])[0]:.3f}")
print(" | ".join(out), f"({time.time() - t0:.0f}s)", flush=True)
