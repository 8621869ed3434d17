from pathlib import Path

import numpy as np

from tempocodec.granule.l1b import open_l1b
from tempocodec.granule.l2 import l2_files_beside, read_l2
from tempocodec.science.doas import doas_setup, fit_doas

for p in sorted(Path("data/heldout").glob("TEMPO_RAD*"))[4:6]:
    with open_l1b(p) as g:
        ds = g.band("band_290_490_nm")
        rad = ds["radiance"].values[:64]
        wl = ds["nominal_wavelength"].values
    l2 = l2_files_beside(p)
    for gas, win, sets in (
        ("no2", (405, 465), [("no2", "o3", "o4", "h2o"), ("no2", "o4", "h2o"), ("no2", "o3", "h2o"), ("no2",)]),
        (
            "hcho",
            (328.5, 356.5),
            [
                ("hcho", "o3", "o3_dt", "no2", "o4"),
                ("hcho", "o3", "no2", "o4"),
                ("hcho", "o3", "o3_dt", "no2"),
                ("hcho", "o3", "o3_dt", "o4"),
            ],
        ),
    ):
        t = np.asarray(read_l2(l2[gas.upper()]).groups["support_data"]["fitted_slant_column"].values, float)[:64]
        for a in sets:
            r = fit_doas(rad, doas_setup(wl, window_nm=win, absorbers=a, target=gas))
            ok = np.isfinite(r.scd) & (np.abs(t) < 1e29)
            d = r.scd[ok] - t[ok]
            print(
                p.name[17:25],
                gas,
                "+".join(a),
                f"bias {d.mean():.2g} scatter {d.std():.2g} (fit 1-sigma {np.median(r.scd_error[ok]):.2g})",
            )
