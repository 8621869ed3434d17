#!/usr/bin/env bash
# The commands behind the released basis-block models (tempo-vae-uv-2, tempo-vae-vis-2), their cards and the
# benchmark tables, on simulated data regenerated from the seeds in tempocodec/training/simdata.py.
# Usage: scripts/release_models.sh WORK_DIR   (data, runs and held-out granules go there, outside the repository)
set -euo pipefail
work=${1:?usage: scripts/release_models.sh WORK_DIR}
py=${PYTHON:-.venv/bin/python}
# 1. data: normalization, spectral basis and basis coefficients (UV: 1000 training scenes; VIS: 600)
$py scripts/make_training_data.py "$work" --band uv --train 1000 --valid 32 --pilot 160 --components 24 --workers 2
$py scripts/make_training_data.py "$work" --band vis --train 600 --valid 32 --pilot 120 --components 24 --workers 2
$py scripts/make_granule_sets.py heldout "$work/heldout"
$py scripts/make_granule_sets.py probes "$work/probes" --scenes 120
# 2. training (bounded: --time-limit; continue a paused run with --resume), export
$py -m tempocodec train-block "$work/uv" "$work/runs/uv" --steps 1600 --eval-every 100 --time-limit 2400
$py -m tempocodec export-block "$work/runs/uv" "$work/uv" models/tempo-vae-uv-2 --name tempo-vae-uv-2
$py -m tempocodec train-block "$work/vis" "$work/runs/vis" --steps 800 --eval-every 100 --time-limit 1200
$py -m tempocodec export-block "$work/runs/vis" "$work/vis" models/tempo-vae-vis-2 --name tempo-vae-vis-2
# 3. probes and held-out evaluation written into the cards
$py -m tempocodec train-probes --data "$work/probes" --heldout "$work/heldout" --model models/tempo-vae-uv-2
$py benchmarks/eval_model.py models/tempo-vae-uv-2 --data "$work/heldout"
$py benchmarks/eval_model.py models/tempo-vae-vis-2 --data "$work/heldout" --band band_540_740_nm
