#!/usr/bin/env bash
# The main job end to end on the bundled model: simulate a granule, compress it, read products from the
# latents, decompress it, and show what was stored. Usage: scripts/demo.sh OUT_DIR
set -euo pipefail
out=${1:-demo-output}
bin=$(dirname "$0")/../.venv/bin
mkdir -p "$out"
"$bin/tempocodec" simulate "$out/granules" --rows 131 --cols 256 --seed 2026 --band uv
granule=$(ls "$out"/granules/TEMPO_RAD_L1_*.nc | head -n 1)
"$bin/tempocodec" compress "$granule" "$out/granule.zarr" --overwrite
"$bin/tempocodec" decompress "$out/granule.zarr" "$out/decompressed.nc" --overwrite
"$bin/tempocodec" info "$out/granule.zarr"
