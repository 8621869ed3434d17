"""Probe designs on the cached samples: R² (physical units) pooled over the held-out granules."""

import os
import sys
import time
from dataclasses import replace

import numpy as np
import torch

from tempocodec.runtime.probes import PRODUCTS, TargetTransform, r2_rmse_bias
from tempocodec.training.probe_training import ProbeConfig, fit_linear, fit_mlp

pre = sys.argv[4] if len(sys.argv) > 4 else "/tmp/gases/"
D = {k: dict(np.load(f"{pre}{k}.npz")) for k in ("fit", "val", "held")}
L, G = list(range(32)), [32, 33, 34]
C = {
    n: 35 + i
    for i, n in enumerate(("no2_scd", "hcho_scd", "no2_err", "hcho_err", "no2_ex", "no2_3", "hcho_3", "no2_ex9", "hcho_9"))
}
NC = 35 + len(C)


def c(*names):
    return [C[n] for n in names]


SETS = {
    "latent+geo": L + G,
    "latent+geo+cols": L + G + c("no2_scd", "hcho_scd", "no2_err", "hcho_err"),
    "latent+geo+all": L + G + list(C.values()),
    "geo+all": G + list(C.values()),
    "geo+7": G + c("no2_scd", "hcho_scd", "no2_err", "hcho_err", "no2_ex", "no2_3", "hcho_3"),
    "latent+geo+ex": L + G + c("no2_scd", "hcho_scd", "no2_err", "hcho_err", "no2_ex"),
    "latent+geo+3x3": L + G + c("no2_scd", "hcho_scd", "no2_err", "hcho_err", "no2_3", "hcho_3"),
}
sets = sys.argv[1].split(",")
hidden = int(sys.argv[2]) if len(sys.argv) > 2 else 512
products = sys.argv[3].split(",") if len(sys.argv) > 3 else list(PRODUCTS)
cfg = replace(ProbeConfig(), hidden=hidden, weight_decay=float(os.environ.get("WD", 1e-4)), lr=float(os.environ.get("LR", 1e-3)))
STACK = os.environ.get("STACK")
if os.environ.get("ORACLE"):  # true pooled cloud fraction as an input (upper bound of what cloud information gives)
    for k in D:
        D[k]["features"] = np.concatenate([D[k]["features"], np.nan_to_num(D[k]["t_cloud_fraction"])[:, None]], axis=1).astype(
            np.float32
        )
    for n in SETS:
        SETS[n] = SETS[n] + [NC]
if STACK:  # cloud-fraction linear probe on latents+geometry as an extra input
    cl = {k: np.isfinite(D[k]["t_cloud_fraction"]) for k in D}
    lin_cf = fit_linear(
        np.concatenate([D[k]["features"][cl[k]][:, :35] for k in ("fit", "val")]),
        np.concatenate([D[k]["t_cloud_fraction"][cl[k]] for k in ("fit", "val")]),
        1e-3,
    )
    for k in D:
        with torch.no_grad():
            cf = lin_cf(torch.as_tensor(D[k]["features"][:, :35]))[:, 0].numpy()
        D[k]["features"] = np.concatenate([D[k]["features"], cf[:, None]], axis=1)
    for n in SETS:
        SETS[n] = SETS[n] + [NC]
for name in sets:
    cols = SETS[name]
    asinh = np.array([35 <= i < NC for i in cols])
    for p in products:
        f = {k: np.isfinite(D[k][f"t_{p}"]) & np.all(np.isfinite(D[k]["features"][:, cols]), axis=1) for k in D}
        x = {k: D[k]["features"][f[k]][:, cols] for k in D}
        t = {k: D[k][f"t_{p}"][f[k]] for k in D}
        tr = TargetTransform.fit(PRODUCTS[p], t["fit"])
        y = {k: tr.forward(t[k]).astype(np.float32) for k in D}
        t0 = time.time()
        lin = fit_linear(np.concatenate([x["fit"], x["val"]]), np.concatenate([y["fit"], y["val"]]), 1e-3, asinh)
        mlp = fit_mlp(x["fit"], y["fit"], x["val"], y["val"], cfg, p, progress=False, asinh=asinh)
        out = []
        for kind, net in (("lin", lin), ("mlp", mlp)):
            with torch.no_grad():
                raw = net(torch.as_tensor(x["held"]))[:, 0].numpy()
                if os.environ.get("CLAMP"):
                    raw = np.clip(raw, y["fit"].min(), y["fit"].max())
                pred = tr.inverse(raw)
            r2, rmse, bias = r2_rmse_bias(pred, t["held"])
            good = (D["held"]["t_cloud_fraction"][f["held"]] < 0.5) & (
                D["held"]["features"][f["held"]][:, 32] > np.cos(np.radians(70))
            )
            r2g = r2_rmse_bias(pred[good], t["held"][good])[0]
            out.append(f"{kind} R2 {r2:.3f} (QA-good {r2g:.3f}, {good.mean():.0%}) rmse {rmse:.3g}")
        print(f"{name:18s} h{hidden} {p:15s} " + " | ".join(out) + f"  ({time.time() - t0:.0f}s)", flush=True)
