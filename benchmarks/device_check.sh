#!/usr/bin/env bash
# The accelerator checks of issue 13 in one prepared script (at most 7.7 minutes of parts):
#   1. projection precision / speed per layer shape   (benchmarks/projection.py)
#   2. step ratio at 4K / 32K / 256K tokens per step  (benchmarks/train_step.py --tokens-per-step)
#   3. a short continual run on a SmolLM2-sized random Llama (asvd-jax run, GPU if present)
# Every part has its own time limit, so one slow part cannot eat the others' time; logs and
# JSON go to $OUT (the device tool's output folder; ./device_out when unset).
#
#   bash benchmarks/device_check.sh            # on the accelerator machine, from the repo root
#   bash benchmarks/device_check.sh --quick    # CPU smoke run of the same commands (~10 min here)
#
# The accelerator machine has jax (CUDA), flax, optax, pyyaml and tokenizers in its python3;
# the repository is used in place (PYTHONPATH), nothing is installed. No weights travel: the
# models are random in the real shapes (SmolLM2-135M's GGUF is larger than what a call carries).
set -u -o pipefail
cd "$(dirname "$0")/.."
QUICK=0
[ "${1:-}" = "--quick" ] && QUICK=1
OUT="${OUT:-$PWD/device_out}"
mkdir -p "$OUT"
PY="${PYTHON:-python3}"
[ -x .venv/bin/python ] && [ -z "${PYTHON:-}" ] && PY=.venv/bin/python
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
STATUS=0
# The run directory stays outside $OUT (checkpoints); its small summary files are copied in.
RUN_DIR="$(mktemp -d)/continual"

part() {  # part NAME SECONDS CMD...: run with a time limit, log to $OUT/NAME.log, keep going
  local name=$1 limit=$2
  shift 2
  echo "=== $name (limit ${limit}s): $*" | tee -a "$OUT/summary.log"
  local t0=$SECONDS
  timeout "$limit" "$@" > "$OUT/$name.log" 2>&1
  local rc=$?
  echo "=== $name: exit $rc after $((SECONDS - t0)) s" | tee -a "$OUT/summary.log"
  tail -n 30 "$OUT/$name.log"
  [ $rc -ne 0 ] && STATUS=1
  return 0
}

{
  date -u
  "$PY" -c "import jax; print('jax', jax.__version__, jax.devices())"
  command -v nvidia-smi > /dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
} 2>&1 | tee "$OUT/summary.log"

if [ $QUICK -eq 1 ]; then
  part projection 600 "$PY" benchmarks/projection.py --quick --skip-train-step
  part tokens 900 "$PY" benchmarks/train_step.py --configs smollm2-135m --layers 1 \
    --dtype float32 --batch 2 --seq 64 --tokens-per-step 128,1024,8192 --timing auto \
    --direct-max-k 8 --repeats 2 --json "$OUT/tokens.json"
  part continual 600 "$PY" -m asvd_jax.cli run experiments/tiny_pulse.yaml \
    --set run.progress=false --run-dir "$RUN_DIR"
else
  part projection 90 "$PY" benchmarks/projection.py --models smollm2-135m --repeats 10 \
    --skip-train-step
  part tokens_smollm2 120 "$PY" benchmarks/train_step.py --configs smollm2-135m \
    --dtype bfloat16 --batch 8 --seq 512 --tokens-per-step 4096,32768,262144 --timing direct \
    --repeats 5 --json "$OUT/tokens_smollm2.json"
  # 1.1B: 256K tokens composed from timed micro-steps (64 direct micro-steps x 3 optimizers x
  # 6 calls would not fit the budget); 4K and 32K direct.
  part tokens_1b 150 "$PY" benchmarks/train_step.py --configs llama-1b --fractions 0.8 \
    --dtype bfloat16 --batch 8 --seq 512 --tokens-per-step 4096,32768,262144 --timing auto \
    --direct-max-k 8 --repeats 3 --json "$OUT/tokens_1b.json"
  # SmolLM2-135M's depth and width (30 layers, d 576), random weights, the built-in two-task
  # fixture: checks that a continual run (bases, projection, eval, report) runs on the GPU.
  part continual 100 "$PY" -m asvd_jax.cli run experiments/tiny_pulse.yaml \
    --set model.random_layers=30 --set model.random_width=576 --set data.max_len=128 \
    --set run.progress=false --run-dir "$RUN_DIR"
fi
# Only flat files come back from the device tool (8 at most): copy the run's summary up.
for f in "$RUN_DIR"/*.md; do
  [ -f "$f" ] && cp "$f" "$OUT/continual_$(basename "$f")"
done
echo "device_check: $([ $STATUS -eq 0 ] && echo all parts passed || echo some part FAILED)" \
  | tee -a "$OUT/summary.log"
exit $STATUS
