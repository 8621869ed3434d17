#!/usr/bin/env bash
# The main job end to end on the bundled model: simulate a granule, compress it, read Level-2 products from the
# latents, decompress it, show what was stored and how faithful it is. Usage: scripts/demo.sh OUT_DIR
set -euo pipefail
out=${1:-demo-output}
bin=$(dirname "$0")/../.venv/bin
mkdir -p "$out"
"$bin/tempocodec" simulate "$out/granules" --rows 131 --cols 256 --seed 2026 --band uv
granule=$(ls "$out"/granules/TEMPO_RAD_L1_*.nc | head -n 1)
"$bin/tempocodec" compress "$granule" "$out/granule.zarr" --overwrite      # the default: latent only
"$bin/tempocodec" compress "$granule" "$out/bounded.zarr" --overwrite --error-bound 1 --quiet
"$bin/tempocodec" info "$out/bounded.zarr" | tail -n 2                      # every value within 1 radiance_error
"$bin/tempocodec" query "$out/granule.zarr" --product all
"$bin/tempocodec" query "$out/granule.zarr" --product all -o "$out/products.nc" --overwrite
"$bin/tempocodec" decompress "$out/granule.zarr" "$out/decompressed.nc" --overwrite
"$bin/tempocodec" evaluate "$granule" "$out/granule.zarr" --report "$out/report" --overwrite
"$bin/tempocodec" evaluate "$granule" "$out/bounded.zarr" | grep -i "bound"
echo "demo done: stores $out/granule.zarr (latent only) and $out/bounded.zarr (--error-bound 1), products $out/products.nc, file $out/decompressed.nc, report $out/report/report.md"
