#!/usr/bin/env bash
# `stylespace demo --catalog TREE` on the 1,000-photo tree benchmarks/bench_own_catalog.py builds, every step's
# figures in WORK/demo.log, then the serve step by hand for 60 s (the demo's own serve runs until Ctrl-C):
# /health, one catalog item's similar items and a photo upload, answered by the served index.
#   flock /tmp/stylespace-heavy.lock nice -n 5 bash benchmarks/demo_own_catalog.sh [WORK]
set -euo pipefail
WORK=${1:-runs/own_catalog}
PY=${PY:-.venv/bin/python}
TREE=$WORK/tree
/usr/bin/time -v $PY -m stylespace demo --catalog "$TREE" --workdir "$WORK/demo" --no-serve > "$WORK/demo.log" 2> "$WORK/demo.err"
grep -E "Elapsed|Maximum resident" "$WORK/demo.err" || true
MODEL=$($PY -c "import json,sys; print(json.load(open(sys.argv[1]))['chosen'])" "$WORK/demo/model_choice.json")
$PY -m stylespace serve "$WORK/demo/index" --model "$MODEL" --compat compat --port 8765 > "$WORK/serve.log" 2>&1 &
SERVER=$!
trap 'kill $SERVER 2>/dev/null || true' EXIT
for _ in $(seq 60); do curl -sf http://127.0.0.1:8765/health > "$WORK/health.json" && break; sleep 1; done
FILE=$(ls "$TREE/Tshirts" | head -1)
# a folder catalog's ids are CLASS/FILE: the slash goes into the URL encoded
curl -s "http://127.0.0.1:8765/items/Tshirts%2F${FILE%.jpg}/similar?k=5" > "$WORK/similar.json" || true
curl -s -F "image=@$TREE/Tshirts/$FILE" -F k=5 "http://127.0.0.1:8765/search" > "$WORK/upload.json" || true
cat "$WORK/health.json"; echo; head -c 600 "$WORK/similar.json"; echo; head -c 600 "$WORK/upload.json"; echo
