#!/usr/bin/env bash
# The README's results table for the offline suite, reproducible on a 2-core CPU.
#   bash scripts/results_table.sh [OUT_DIR [RUN ...]]      (default runs/table, every run)
#   SEEDS=0 bash scripts/results_table.sh ...                (default SEEDS=0,1,2)
# Each run is a multi-seed parent (OUT_DIR/<run>/seed<k>/, train.seed = data.seed = k), so the
# report gives mean +- std over seeds and the paired bootstrap interval against SeqFT.
# MiniLM: all six methods over the three orders (18 runs per seed, ~4-5 min each on 2 cores).
# SmolLM2-135M: order 1 for this method, SeqFT, O-LoRA and MTL (4 runs per seed; at 60 test
# examples per task 26-32 min each on one core, most of it evaluation).
# A RUN is named <model>-o<order>-<method> (e.g. minilm-o2-ewc, smollm2-o1-asvd); naming some
# runs runs only those, so two disjoint lists can share a machine in two shells. By default
# runs go in the order that fills the table's most informative rows first (MiniLM order 1,
# SmolLM2 order 1, then MiniLM orders 2 and 3). Each run writes OUT_DIR/<run>/; a finished
# run is skipped and a started one resumed, so the script can be re-run after a kill. The
# last command prints the table of every finished run.
set -euo pipefail
OUT=${1:-runs/table}
shift || true
CLI=${ASVD_JAX_CLI:-asvd-jax}
SEEDS=${SEEDS:-0,1,2}
source "$(dirname "$0")/_run_or_resume.sh"

ALL=()
for method in asvd seqft mtl ewc lora olora; do ALL+=("minilm-o1-$method"); done
for method in asvd seqft olora mtl; do ALL+=("smollm2-o1-$method"); done
for order in 2 3; do
  for method in asvd seqft mtl ewc lora olora; do ALL+=("minilm-o$order-$method"); done
done
RUNS=("$@")
if [ ${#RUNS[@]} -eq 0 ]; then RUNS=("${ALL[@]}"); fi

for name in "${RUNS[@]}"; do
  if [[ ! $name =~ ^(minilm|smollm2)-o([123])-([a-z]+)$ ]]; then
    echo "results_table.sh: bad run name '$name' (expected minilm|smollm2-o<1-3>-<method>)" >&2
    exit 2
  fi
  model=${BASH_REMATCH[1]} order=${BASH_REMATCH[2]} method=${BASH_REMATCH[3]}
  run_or_resume "$OUT/$name" "experiments/offline_${model}_order$order.yaml" --set "method.name=$method" \
    --set "run.seeds=[$SEEDS]"
done
# The table's runs in its order, then any other run named here (e.g. smollm2-o2-asvd).
for name in "${RUNS[@]}"; do [[ " ${ALL[*]} " == *" $name "* ]] || ALL+=("$name"); done
report_finished "${ALL[@]/#/$OUT/}"
