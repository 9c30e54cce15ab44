#!/usr/bin/env bash
# The README's results table for the offline suite, reproducible on a 2-core CPU.
#   bash scripts/results_table.sh [OUT_DIR]      (default runs/table)
# MiniLM: all six methods over the three orders (18 runs, ~1-2 min each).
# SmolLM2-135M: order 1 for this method, SeqFT, O-LoRA and MTL (4 runs, ~7 min each).
# Each run writes OUT_DIR/<model>-o<order>-<method>/ ; the last command prints the table.
set -euo pipefail
OUT=${1:-runs/table}
CLI=${ASVD_JAX_CLI:-asvd-jax}
for order in 1 2 3; do
  for method in asvd seqft mtl ewc lora olora; do
    dir="$OUT/minilm-o$order-$method"
    [ -f "$dir/metrics.json" ] && grep -q '"status": "complete"' "$dir/metrics.json" && continue
    $CLI run "experiments/offline_minilm_order$order.yaml" --set "method.name=$method" \
      --run-dir "$dir" $( [ -d "$dir" ] && echo --resume )
  done
done
for method in asvd seqft olora mtl; do
  dir="$OUT/smollm2-o1-$method"
  [ -f "$dir/metrics.json" ] && grep -q '"status": "complete"' "$dir/metrics.json" && continue
  $CLI run experiments/offline_smollm2_order1.yaml --set "method.name=$method" \
    --run-dir "$dir" $( [ -d "$dir" ] && echo --resume )
done
$CLI report "$OUT"/minilm-o*-* "$OUT"/smollm2-o1-*
