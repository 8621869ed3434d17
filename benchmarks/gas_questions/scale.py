"""OQ1: spatial scale of NO2 vs HCHO (truth at full resolution), stratosphere share, per-cell DOAS signal-to-noise."""

from pathlib import Path

import numpy as np

from tempocodec.granule.l2 import l2_files_beside, read_l2
from tempocodec.prepare.tiles import pool_to_latent as pool


def f(x):
    x = np.asarray(x, float)
    return np.where(np.abs(x) < 1e29, x, np.nan)


def corr_lag(c, lag):
    a, b = c[:, :-lag].ravel(), c[:, lag:].ravel()
    ok = np.isfinite(a) & np.isfinite(b)
    return np.corrcoef(a[ok], b[ok])[0, 1]


rows = {g: [] for g in ("no2", "hcho")}
for p in sorted(Path("data/heldout").glob("TEMPO_RAD*")):
    l2 = l2_files_beside(p)
    n = read_l2(l2["NO2"])
    h = read_l2(l2["HCHO"])
    fields = {
        "no2": f(n.groups["product"]["vertical_column_troposphere"].values),
        "hcho": f(h.groups["product"]["vertical_column"].values),
    }
    strat_m = f(n.groups["product"]["vertical_column_stratosphere"].values) * f(
        n.groups["support_data"]["amf_stratosphere"].values
    )
    trop_s = fields["no2"] * f(n.groups["support_data"]["amf_troposphere"].values)
    for g, x in fields.items():
        cell = pool(x, 4)
        up = np.repeat(np.repeat(cell, 4, 0), 4, 1)[: x.shape[0], : x.shape[1]]
        within = np.nanvar(x - up) / np.nanvar(x)
        rows[g].append(
            (
                within,
                corr_lag(cell, 1),
                corr_lag(cell, 3),
                corr_lag(cell, 9),
                np.nanstd(pool(strat_m, 4)) / np.nanstd(pool(trop_s, 4)) if g == "no2" else np.nan,
            )
        )
for g, r in rows.items():
    r = np.array(r)
    print(
        g,
        "sub-cell variance share {:.3f} | cell-field autocorrelation lag 1/3/9 cells: {:.2f} {:.2f} {:.2f} | "
        "std(strat slant)/std(trop slant) {:.2f}".format(*tuple(np.nanmean(r, 0))),
    )
d = dict(np.load("/tmp/gases/w_held.npz"))
for g, i, e in (("no2", 35, 37), ("hcho", 36, 38)):
    ok = np.isfinite(d["features"][:, i]) & np.isfinite(d[f"t_{g}"])
    print(
        g,
        "per-cell DOAS noise {:.2g}, truth VCD std {:.2g}, field-std / noise {:.1f}".format(
            np.median(d["features"][ok, e]) * 1e15,
            np.std(d[f"t_{g}"][ok]),
            np.std(d[f"t_{g}"][ok]) / (np.median(d["features"][ok, e]) * 1e15),
        ),
    )
cf = d["t_cloud_fraction"]
print("held-out cells with cloud fraction >= 0.7: %.0f%%" % (100 * np.nanmean(cf >= 0.7)))
