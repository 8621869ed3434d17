"""Collect probe samples (all inputs) once: fit / validation / held-out, cached to npz (with each cell's granule)."""

import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from tempocodec.runtime.artifacts import load_model, resolve_model
from tempocodec.runtime.features import input_names
from tempocodec.runtime.probes import GEOMETRY_INPUTS, PRODUCTS
from tempocodec.training.probe_training import ProbeConfig, _split, granule_samples

art = load_model(resolve_model(sys.argv[1] if len(sys.argv) > 1 else "models/tempo-vae-uv-2"))
data = Path(sys.argv[2]) if len(sys.argv) > 2 else Path("data/probes")
heldout = Path(sys.argv[3]) if len(sys.argv) > 3 else Path("data/heldout")
prefix = sys.argv[4] if len(sys.argv) > 4 else "/tmp/gases/"
fit, val, held, source = _split(data, heldout, ProbeConfig())
print(len(fit), len(val), len(held), flush=True)
for label, paths in (("held", held), ("val", val), ("fit", fit)):
    t = time.time()
    parts = []
    with tempfile.TemporaryDirectory() as work:
        for p in paths:
            parts.append(granule_samples(p, art, GEOMETRY_INPUTS, Path(work), input_names()))
    gid = np.concatenate([np.full(len(s.features), i) for i, s in enumerate(parts)])
    np.savez(
        f"{prefix}{label}.npz",
        features=np.concatenate([s.features for s in parts]),
        gid=gid,
        granules=np.array([s.granules[0] for s in parts]),
        **{f"t_{k}": np.concatenate([s.targets[k] for s in parts]) for k in PRODUCTS},
    )
    print(label, len(gid), time.time() - t, flush=True)
