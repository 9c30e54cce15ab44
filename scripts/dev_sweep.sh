#!/usr/bin/env bash
# The dev-split sweep behind the README's paragraph on why the results table misses issue 6's
# target: learning rate, rank policy and steps of this method against SeqFT on SmolLM2-135M,
# offline suite order 1, scored on the dev split (never on test).
#   bash scripts/dev_sweep.sh [OUT_DIR [RUN ...]]      (default runs/dev, every run)
# RUN is one of the names below; a finished run is skipped and a started one resumed, so the
# script can be re-run after a kill. ~7-9 min per run alone on 2 cores. The last command
# prints the comparison table of every finished run.
set -euo pipefail
OUT=${1:-runs/dev}
shift || true
CLI=${ASVD_JAX_CLI:-asvd-jax}
source "$(dirname "$0")/_run_or_resume.sh"
CONFIG=experiments/offline_smollm2_order1.yaml

# name -> overrides on the preset (which has lr 3e-5, 1 epoch, the paper's rank policy).
NAMES=(seqft asvd seqft-lr1e-4 asvd-lr1e-4 asvd-progressive asvd-energy seqft-2ep asvd-2ep)
declare -A SETS=(
  [seqft]="method.name=seqft"
  [asvd]="method.name=asvd"
  [seqft-lr1e-4]="method.name=seqft train.lr=1e-4"
  [asvd-lr1e-4]="method.name=asvd train.lr=1e-4"
  [asvd-progressive]="method.name=asvd method.rank_policy=progressive"
  [asvd-energy]="method.name=asvd method.rank_policy=energy"
  [seqft-2ep]="method.name=seqft train.epochs=2"
  [asvd-2ep]="method.name=asvd train.epochs=2"
)

RUNS=("$@")
[ ${#RUNS[@]} -eq 0 ] && RUNS=("${NAMES[@]}")
for name in "${RUNS[@]}"; do
  if [ -z "${SETS[$name]+x}" ]; then
    echo "dev_sweep.sh: unknown run '$name' (one of: ${NAMES[*]})" >&2
    exit 2
  fi
done

for name in "${RUNS[@]}"; do
  sets=(--set eval.split=dev)
  for kv in ${SETS[$name]}; do sets+=(--set "$kv"); done
  run_or_resume "$OUT/$name" "$CONFIG" "${sets[@]}"
done
shopt -s nullglob
done_dirs=()
for name in "${NAMES[@]}"; do
  [ -f "$OUT/$name/metrics.json" ] && done_dirs+=("$OUT/$name")
done
[ ${#done_dirs[@]} -gt 0 ] && $CLI report "${done_dirs[@]}"
