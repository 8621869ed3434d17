"""Held-out NO2/HCHO error of geometry+columns MLP probes split by cloud fraction and by granule (cached samples)."""

from dataclasses import replace

import numpy as np
import torch

from tempocodec.runtime.probes import PRODUCTS, TargetTransform, r2_rmse_bias
from tempocodec.training.probe_training import ProbeConfig, fit_mlp

D = {k: dict(np.load(f"/tmp/gases/{k}.npz")) for k in ("fit", "val", "held")}
cols = [32, 33, 34] + list(range(35, 42))
asinh = np.array([i >= 35 for i in cols])
for p in ("no2", "hcho"):
    f = {k: np.isfinite(D[k][f"t_{p}"]) & np.all(np.isfinite(D[k]["features"][:, cols]), axis=1) for k in D}
    x = {k: D[k]["features"][f[k]][:, cols] for k in D}
    t = {k: D[k][f"t_{p}"][f[k]] for k in D}
    tr = TargetTransform.fit(PRODUCTS[p], t["fit"])
    y = {k: tr.forward(t[k]).astype(np.float32) for k in D}
    net = fit_mlp(x["fit"], y["fit"], x["val"], y["val"], replace(ProbeConfig(), hidden=128), p, False, asinh)
    with torch.no_grad():
        pred = tr.inverse(np.clip(net(torch.as_tensor(x["held"]))[:, 0].numpy(), y["fit"].min(), y["fit"].max()))
    cf = D["held"]["t_cloud_fraction"][f["held"]]
    gid = D["held"]["gid"][f["held"]]
    truth = t["held"]
    sse = (pred - truth) ** 2
    sst = ((truth - truth.mean()) ** 2).sum()
    for lo, hi in ((0, 0.3), (0.3, 0.7), (0.7, 1.01)):
        m = (cf >= lo) & (cf < hi)
        print(
            p,
            f"cloud {lo}-{hi}: cells {m.mean():.0%}, share of SSE {sse[m].sum() / sse.sum():.0%}"
            f", R2 within {r2_rmse_bias(pred[m], truth[m])[0]:.3f}",
        )
    for g in np.unique(gid):
        m = gid == g
        print(
            "  ",
            D["held"]["granules"][g][17:33],
            f"R2 {r2_rmse_bias(pred[m], truth[m])[0]:.3f} share SSE {sse[m].sum() / sse.sum():.0%}",
        )
