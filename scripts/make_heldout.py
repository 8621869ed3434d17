"""Write the held-out granules of the released models (never used for fitting or tuning).

    python scripts/make_heldout.py OUT_DIR [--rows 128 --cols 256 --bands all]

Eight scenes (:func:`tempocodec.training.simdata.heldout_scenes`: six typical, two at 40–50°N with centre SZA
70–80°), each an L1B granule plus its four L2 truth files.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tempocodec.training.simdata import heldout_scenes, write_scenes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--rows", type=int, default=128)
    parser.add_argument("--cols", type=int, default=256)
    parser.add_argument("--bands", default="all", choices=["uv", "vis", "all"])
    args = parser.parse_args(argv)
    for path in write_scenes(args.out, heldout_scenes(args.rows, args.cols), args.bands):
        print(path, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
