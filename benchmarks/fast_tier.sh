#!/usr/bin/env bash
# The fast tier (issue 24): the distilled compact model beside the shipped default (every dimension, and its top
# 256 whitened dimensions searched), one run each, through ../shared/tools/heavy:
#   benchmarks/fast_tier.sh quality FAST [OUT=runs/bench-fast]   # evaluation, selective coverage, robustness
#   benchmarks/fast_tier.sh speed FAST [OUT=runs/bench-fast]     # indexing, one search, the service (timed:
#                                                                #   run it with nothing else on the machine)
# FAST: the distilled model (a run of `stylespace train ... --preset distill`, or models/fast).
# Each step prints its command, wall time and peak memory; outputs are kept under OUT.
set -euo pipefail
cd "$(dirname "$0")/.."
WHAT=${1:?usage: benchmarks/fast_tier.sh quality|speed FAST [OUT]}
FAST=${2:?usage: benchmarks/fast_tier.sh quality|speed FAST [OUT]}
OUT=${3:-runs/bench-fast}
CATALOG=${CATALOG:-../shared/datasets/fashion-product-images-small.zip}
PY=.venv/bin/python
SS=".venv/bin/python -m stylespace"
mkdir -p "$OUT"

. benchmarks/steps.sh  # step NAME COMMAND..., and the split in $OUT/split.csv
if [ "$WHAT" = quality ]; then
  step evaluate $SS evaluate "$FAST" --split "$OUT/split.csv" --catalog "$CATALOG" --compare models/default \
    --compare models/compact -o "$OUT/evaluation.json"
  step recommend-fast $PY benchmarks/bench_recommend.py --model "$FAST" --split "$OUT/split.csv"
  step recommend-default $PY benchmarks/bench_recommend.py --model models/default --split "$OUT/split.csv"
  step recommend-default256 $PY benchmarks/bench_recommend.py --model models/default --split "$OUT/split.csv" \
    --search-dims 256
  step robustness $PY benchmarks/bench_robustness.py --model fast="$FAST" --model default=models/default \
    --model default-256=models/default@256 --items 1000 -o "$OUT/robustness.json"
else
  step index-fast $SS index build "$FAST" "$CATALOG" -o "$OUT/index-fast" --json
  step index-default $SS index build models/default "$CATALOG" -o "$OUT/index-default" --json
  step index-default256 $SS index build models/default "$CATALOG" -o "$OUT/index-default256" --search-dims 256 --json
  for name in fast default default256; do
    model=$FAST; [ "$name" = fast ] || model=models/default
    step search-$name $PY benchmarks/bench_search.py --model "$model" --index "$OUT/index-$name" --skip-approximate
  done
  for name in fast default default256; do
    step service-$name $PY benchmarks/bench_service.py --index "$OUT/index-$name" --engines onnx --seconds 30 \
      --no-embedding-table
  done
fi
