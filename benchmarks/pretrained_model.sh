#!/usr/bin/env bash
# The pre-trained-backbone issue's table for a model, beside the previous shipped model and the frozen network,
# from one run each (run it through ../shared/tools/heavy):
#   benchmarks/pretrained_model.sh NEW_MODEL [PREVIOUS=models/compact] [OUT=runs/bench-pretrained]
# Writes the evaluation (task 1, scenarios 1-4, MAP@R), the selective top-3 coverage and the robustness table
# under OUT; each step prints its command, wall time and peak memory.
set -euo pipefail
cd "$(dirname "$0")/.."
NEW=${1:?usage: benchmarks/pretrained_model.sh NEW_MODEL [PREVIOUS] [OUT]}
PREVIOUS=${2:-models/compact}
OUT=${3:-runs/bench-pretrained}
CATALOG=${CATALOG:-../shared/datasets/fashion-product-images-small.zip}
PY=.venv/bin/python
SS=.venv/bin/stylespace
mkdir -p "$OUT"

. benchmarks/steps.sh  # step NAME COMMAND..., and the split in $OUT/split.csv
# The frozen network as a new user would take it: ImageNet weights, no training on this catalog, pooled features.
FROZEN="$OUT/frozen-lite0"
[ -f "$FROZEN/model.json" ] || $PY - "$NEW" "$FROZEN" <<'PY'
import sys
from stylespace.models import EmbeddingModel, ModelConfig, load_model, save_model
new = load_model(sys.argv[1])
config = ModelConfig(backbone=new.config.backbone, weights="imagenet", network_size=new.config.network_size,
                     input_size=new.config.input_size, embed_layer="features")
save_model(EmbeddingModel(config).eval(), sys.argv[2])
PY
step evaluate $SS evaluate "$NEW" --split "$OUT/split.csv" --catalog "$CATALOG" --compare "$PREVIOUS" \
  --compare "$FROZEN" -o "$OUT/evaluation.json"
step recommend $PY benchmarks/bench_recommend.py --model "$NEW" --catalog "$CATALOG" --split "$OUT/split.csv" \
  --plot "$OUT/risk_coverage.png"
step robustness $PY benchmarks/bench_robustness.py --model previous="$PREVIOUS" --model new="$NEW" --items 1000 \
  -o "$OUT/robustness.json"
