#!/usr/bin/env bash
# Every figure of docs/benchmarks.md for a model, in one go, on this machine:
#   benchmarks/default_model.sh [MODEL_DIR=models/default] [OUT=runs/bench]
# Each step prints its exact command; wall time and peak memory come from /usr/bin/time -v.
set -euo pipefail
cd "$(dirname "$0")/.."
MODEL=${1:-models/default}
OUT=${2:-runs/bench}
CATALOG=${CATALOG:-../shared/datasets/fashion-product-images-small.zip}
PY=.venv/bin/python
SS=.venv/bin/stylespace
mkdir -p "$OUT"

. benchmarks/steps.sh  # step NAME COMMAND..., and the split in $OUT/split.csv
step evaluate $SS evaluate "$MODEL" --split "$OUT/split.csv" --catalog "$CATALOG" -o "$OUT/evaluation.json"
step search $PY benchmarks/bench_search.py --model "$MODEL" --catalog "$CATALOG" --index "$OUT/index"
step recommend $PY benchmarks/bench_recommend.py --model "$MODEL" --catalog "$CATALOG" --split "$OUT/split.csv" \
  --plot "$OUT/risk_coverage.png"
step report $SS report "$MODEL" --split "$OUT/split.csv" --catalog "$CATALOG" -o "$OUT/report"
