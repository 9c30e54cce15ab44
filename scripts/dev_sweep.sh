#!/usr/bin/env bash
# The dev-split sweeps of the offline suite, order 1, scored on the dev split (never on test):
# - SmolLM2-135M: learning rate, rank policy and steps of this method against SeqFT (the
#   README's paragraph on why the one-seed table misses issue 6's target); ~7-9 min per run.
# - MiniLM (the minilm-* runs): each baseline's own setting, EWC's lambda and the LoRA /
#   O-LoRA adapter learning rate, for the results table over seeds; ~4-6 min per run.
#   bash scripts/dev_sweep.sh [OUT_DIR [RUN ...]]      (default runs/dev, every run)
# RUN is one of the names below; a finished run is skipped and a started one resumed, so the
# script can be re-run after a kill. The last command prints the comparison table of every
# finished run.
set -euo pipefail
OUT=${1:-runs/dev}
shift || true
CLI=${ASVD_JAX_CLI:-asvd-jax}
source "$(dirname "$0")/_run_or_resume.sh"
SMOL=experiments/offline_smollm2_order1.yaml
MINILM=experiments/offline_minilm_order1.yaml

# name -> "CONFIG overrides..." (SmolLM2's preset: lr 3e-5, 1 epoch, the paper's rank policy;
# MiniLM's: lr 5e-5, 2 epochs; the baselines' defaults are EWC lambda 1e3, adapter lr 1e-3).
NAMES=(seqft asvd seqft-lr1e-4 asvd-lr1e-4 asvd-progressive asvd-energy seqft-2ep asvd-2ep
       minilm-seqft minilm-asvd minilm-ewc1e3 minilm-ewc1e4 minilm-ewc1e5 minilm-ewc1e6 minilm-lora-lr1e-3
       minilm-lora-lr1e-4 minilm-olora-lr1e-3 minilm-olora-lr1e-4)
declare -A SETS=(
  [seqft]="$SMOL method.name=seqft"
  [asvd]="$SMOL method.name=asvd"
  [seqft-lr1e-4]="$SMOL method.name=seqft train.lr=1e-4"
  [asvd-lr1e-4]="$SMOL method.name=asvd train.lr=1e-4"
  [asvd-progressive]="$SMOL method.name=asvd method.rank_policy=progressive"
  [asvd-energy]="$SMOL method.name=asvd method.rank_policy=energy"
  [seqft-2ep]="$SMOL method.name=seqft train.epochs=2"
  [asvd-2ep]="$SMOL method.name=asvd train.epochs=2"
  [minilm-seqft]="$MINILM method.name=seqft"
  [minilm-asvd]="$MINILM method.name=asvd"
  [minilm-ewc1e3]="$MINILM method.name=ewc method.ewc_lambda=1e3"
  [minilm-ewc1e4]="$MINILM method.name=ewc method.ewc_lambda=1e4"
  [minilm-ewc1e5]="$MINILM method.name=ewc method.ewc_lambda=1e5"
  [minilm-ewc1e6]="$MINILM method.name=ewc method.ewc_lambda=1e6"
  [minilm-lora-lr1e-3]="$MINILM method.name=lora method.lora_lr=1e-3"
  [minilm-lora-lr1e-4]="$MINILM method.name=lora method.lora_lr=1e-4"
  [minilm-olora-lr1e-3]="$MINILM method.name=olora method.lora_lr=1e-3"
  [minilm-olora-lr1e-4]="$MINILM method.name=olora method.lora_lr=1e-4"
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
  read -r config overrides <<< "${SETS[$name]}"
  sets=(--set eval.split=dev)
  for kv in $overrides; do sets+=(--set "$kv"); done
  run_or_resume "$OUT/$name" "$config" "${sets[@]}"
done
report_finished "${NAMES[@]/#/$OUT/}"
