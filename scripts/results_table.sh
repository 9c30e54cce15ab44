#!/usr/bin/env bash
# The README's results table for the offline suite, reproducible on a 2-core CPU.
#   bash scripts/results_table.sh [OUT_DIR]      (default runs/table)
# MiniLM: all six methods over the three orders (18 runs, ~4-5 min each on 2 cores).
# SmolLM2-135M: order 1 for this method, SeqFT, O-LoRA and MTL (4 runs, ~7 min each).
# Runs go in the order that fills the table's most informative rows first (MiniLM order 1,
# SmolLM2 order 1, then MiniLM orders 2 and 3). Each run writes OUT_DIR/<model>-o<order>-<method>/;
# a finished run is skipped and a started one resumed, so the script can be re-run after a
# kill. The last command prints the table.
set -euo pipefail
OUT=${1:-runs/table}
CLI=${ASVD_JAX_CLI:-asvd-jax}

run() {  # run <dir> <config> <method>
  local dir=$1 config=$2 method=$3
  if [ -f "$dir/metrics.json" ] && grep -q '"status": "complete"' "$dir/metrics.json"; then
    return 0
  fi
  local resume=()
  [ -d "$dir" ] && resume=(--resume)
  $CLI run "$config" --set "method.name=$method" --run-dir "$dir" "${resume[@]}"
}

minilm_order() {
  for method in asvd seqft mtl ewc lora olora; do
    run "$OUT/minilm-o$1-$method" "experiments/offline_minilm_order$1.yaml" "$method"
  done
}

minilm_order 1
for method in asvd seqft olora mtl; do
  run "$OUT/smollm2-o1-$method" experiments/offline_smollm2_order1.yaml "$method"
done
minilm_order 2
minilm_order 3
$CLI report "$OUT"/minilm-o*-* "$OUT"/smollm2-o1-*
