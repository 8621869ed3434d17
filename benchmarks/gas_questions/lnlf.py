"""OQ3: ln(L/F0) per latent cell (high-passed, window channels) as probe input, against the DOAS slant columns."""

import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from tempocodec.granule.l1b import open_l1b
from tempocodec.granule.l2 import l2_truth, read_l2
from tempocodec.prepare.tiles import pool_to_latent
from tempocodec.runtime.probes import PRODUCTS, TargetTransform, r2_rmse_bias
from tempocodec.science.doas import fit_doas, gas_setup
from tempocodec.training.probe_training import ProbeConfig, fit_linear, fit_mlp, truth_paths


def cells(path):
    with open_l1b(path) as g:
        ds = g.band("band_290_490_nm")
        rad = ds["radiance"].values
        wl = ds["nominal_wavelength"].values
        sza = ds["solar_zenith_angle"].values.astype(float)
        vza = ds["viewing_zenith_angle"].values.astype(float)
    out = {}
    for gas in ("no2", "hcho"):
        s = gas_setup(wl, gas)
        win = rad[..., s.channels].astype(np.float64)
        ok = (np.abs(win) < 1e30) & (win > 0)
        y = np.where(ok, np.log(np.where(ok, win, 1)) - s.log_solar[None], np.nan)  # ln(L/F0), (R, X, n)
        poly = (
            s.design[..., :4]
            if s.design.shape[0] > 1
            else np.broadcast_to(s.design[..., :4], (y.shape[1],) + s.design.shape[1:3] + (4,))
        )
        # high-pass: remove the cubic per pixel (shared design per xtrack)
        yy = np.nan_to_num(y)
        hp = np.empty_like(yy)
        for x in range(y.shape[1]):
            p = poly[x]
            coef = np.linalg.lstsq(p, yy[:, x].T, rcond=None)[0]
            hp[:, x] = yy[:, x] - (p @ coef).T
        hp[~ok] = np.nan
        pooled = np.stack([pool_to_latent(hp[..., c], 4) for c in range(hp.shape[-1])], -1)
        out[f"lnlf_{gas}"] = pooled.reshape(-1, hp.shape[-1])
        r = fit_doas(rad, s)
        out[f"scd_{gas}"] = pool_to_latent(r.scd, 4).reshape(-1)
    1 / np.cos(np.radians(sza)) + 1 / np.cos(np.radians(vza))
    out["geo"] = np.stack([pool_to_latent(np.cos(np.radians(sza)), 4), pool_to_latent(np.cos(np.radians(vza)), 4)], -1).reshape(
        -1, 2
    )
    tp = truth_paths(path)
    for p in ("no2", "hcho"):
        out[f"t_{p}"] = pool_to_latent(np.asarray(l2_truth(read_l2(tp[p])).values, float)).reshape(-1)
    return out


def collect(paths):
    parts = [cells(p) for p in paths]
    return {k: np.concatenate([q[k] for q in parts]) for k in parts[0]}


if sys.argv[1] == "collect":
    train = sorted(Path("data/probes").glob("TEMPO_RAD*"))[: int(sys.argv[2])]
    held = sorted(Path("data/heldout").glob("TEMPO_RAD*"))
    t = time.time()
    np.savez("/tmp/gases/oq3_train.npz", **collect(train))
    np.savez("/tmp/gases/oq3_held.npz", **collect(held))
    print("collected", time.time() - t)
    sys.exit()
tr, he = dict(np.load("/tmp/gases/oq3_train.npz")), dict(np.load("/tmp/gases/oq3_held.npz"))


def pca(x, k):
    ok = np.all(np.isfinite(x), 1)
    mu = x[ok].mean(0)
    u, s, vt = np.linalg.svd(x[ok] - mu, full_matrices=False)
    return mu, vt[:k]


for p in ("no2", "hcho"):
    for name, build in {
        "DOAS SCDs (2 values)": lambda d: np.stack([d["scd_no2"] / 1e15, d["scd_hcho"] / 1e15], 1),
        "ln(L/F0) PCA 2": None,
        "ln(L/F0) PCA 8": None,
        "ln(L/F0) all window channels": None,
    }.items():
        if build is None:
            k = int(name.split()[-1]) if "PCA" in name else None
            feats = []
            for d in (tr, he):
                parts = []
                for gas in ("no2", "hcho"):
                    x = d[f"lnlf_{gas}"]
                    if k:
                        mu, v = pca(tr[f"lnlf_{gas}"], k)
                        x = (x - mu) @ v.T
                    parts.append(x)
                feats.append(np.concatenate(parts, 1))
        else:
            feats = [build(tr), build(he)]
        xs = [np.concatenate([f, d["geo"]], 1).astype(np.float32) for f, d in zip(feats, (tr, he), strict=False)]
        ok = [np.all(np.isfinite(x), 1) & np.isfinite(d[f"t_{p}"]) for x, d in zip(xs, (tr, he), strict=False)]
        tf = TargetTransform.fit(PRODUCTS[p], tr[f"t_{p}"][ok[0]])
        y = tf.forward(tr[f"t_{p}"][ok[0]]).astype(np.float32)
        asinh = np.zeros(xs[0].shape[1], bool)
        if build is not None:
            asinh[:2] = True
        lin = fit_linear(xs[0][ok[0]], y, 1e-3, asinh)
        n = ok[0].sum()
        cut = int(n * 0.85)
        mlp = fit_mlp(
            xs[0][ok[0]][:cut], y[:cut], xs[0][ok[0]][cut:], y[cut:], replace(ProbeConfig(), hidden=128), p, False, asinh
        )
        res = []
        for kind, net in (("linear", lin), ("mlp", mlp)):
            with torch.no_grad():
                pr = tf.inverse(np.clip(net(torch.as_tensor(xs[1][ok[1]]))[:, 0].numpy(), y.min(), y.max()))
            res.append(f"{kind} {r2_rmse_bias(pr, he[f't_{p}'][ok[1]])[0]:.3f}")
        print(f"{p:5s} {name:32s} inputs {xs[0].shape[1]:4d}  " + "  ".join(res), flush=True)
