"""Write the simulated granule sets of the released models as TEMPO-layout files (L1B + four L2 truth files each).

    python scripts/make_granule_sets.py heldout OUT_DIR            # 8 held-out scenes, 128×256, both bands
    python scripts/make_granule_sets.py probes OUT_DIR --scenes 120  # probe training scenes, 64×128, UV
    python scripts/make_granule_sets.py probes-winter OUT_DIR --scenes 24  # extra winter (snow) probe scenes, UV

Scenes and seeds: :mod:`tempocodec.training.simdata` (``heldout_scenes``: six typical, two at 40–50°N with centre
SZA 70–80°; never used for fitting or tuning; ``probe_scenes``: like the VAE's training scenes;
``winter_probe_scenes``: 40–55°N, SZA 55–80°, for the snow the first set lacks).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tempocodec.simulator import write_scenes
from tempocodec.training.simdata import heldout_scenes, probe_scenes, winter_probe_scenes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("set", choices=["heldout", "probes", "probes-winter"])
    parser.add_argument("out", type=Path)
    parser.add_argument("--scenes", type=int, default=120, help="probe scenes (the held-out set has 8)")
    parser.add_argument("--bands", default=None, choices=["uv", "vis", "all"], help="[all for heldout, uv for probes]")
    args = parser.parse_args(argv)
    if args.set == "heldout":
        configs, bands = heldout_scenes(), args.bands or "all"
    elif args.set == "probes":
        configs, bands = probe_scenes(args.scenes), args.bands or "uv"
    else:
        configs, bands = winter_probe_scenes(args.scenes), args.bands or "uv"
    for path in write_scenes(args.out, configs, bands=bands):
        print(path, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
