# Sourced (from the repository root) by the benchmark scripts that run a sequence of timed steps
# (default_model.sh, pretrained_model.sh, fast_tier.sh); they set OUT, CATALOG and SS first.

step() {  # step NAME COMMAND...: run, keep stdout in $OUT/NAME.txt, time and peak memory in $OUT/NAME.time
  local name=$1; shift
  echo "== $name: $*"
  /usr/bin/time -v -o "$OUT/$name.time" "$@" > "$OUT/$name.txt"
  grep -E "Elapsed|Maximum resident" "$OUT/$name.time"
}

# seed 004's split of the catalog, made once per output folder
[ -f "$OUT/split.csv" ] || $SS split "$CATALOG" -o "$OUT/split.csv" > /dev/null
