"""The memory plan (docs/scale.md) compiles: a tiny Llama and T5 the way the 7B plan does.

8 fake CPU devices need XLA_FLAGS before jax starts, so the compile runs in a subprocess
(benchmarks/memory_plan.py's own child entry point is not used: its model sizes are fixed).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]

CHILD = r"""
import json
from asvd_jax.cl._memory_plan import PlanSpec, plan_memory
from asvd_jax.models.llama import LlamaConfig
from asvd_jax.models.t5 import T5Config
llama = LlamaConfig(vocab_size=128, hidden_size=32, intermediate_size=64, num_layers=1,
                    num_heads=4, num_kv_heads=2)
t5 = T5Config(vocab_size=128, d_model=32, d_kv=8, d_ff=64, num_layers=1, num_heads=4)
rows = [plan_memory(PlanSpec("llama", llama, batch=8, seq=16, protected=0.8, data=2, fsdp=4)),
        plan_memory(PlanSpec("t5", t5, compute_dtype="float32", batch=8, seq=16, target_len=4,
                             protected=0.5, data=1, fsdp=8))]
deep = LlamaConfig(vocab_size=128, hidden_size=128, intermediate_size=256, num_layers=6,
                   num_heads=4, num_kv_heads=4)
rows += [plan_memory(PlanSpec("llama", deep, batch=8, seq=128, data=1, fsdp=8, remat=remat))
         for remat in (False, True)]
print(json.dumps(rows))
"""


def _expected_bytes(shapes, fsdp):
    """float32 bytes per device of leaves sharded by the runner's rule (largest divisible axis)."""
    total = 0
    for shape in shapes:
        shape = list(shape)
        for axis in sorted(range(len(shape)), key=lambda a: -shape[a]):
            if shape[axis] >= fsdp and shape[axis] % fsdp == 0:
                shape[axis] //= fsdp
                break
        total += 4 * int(np.prod(shape))
    return total


def test_memory_plan_compiles_on_eight_fake_devices():
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8",
               JAX_PLATFORMS="cpu", PYTHONPATH=str(ROOT))
    proc = subprocess.run([sys.executable, "-c", CHILD], env=env, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    llama, t5, loop, remat = json.loads(proc.stdout.strip().splitlines()[-1])

    # Llama: 1 layer, d 32, ffn 64, 4 heads of 8 (2 KV heads), vocab 128, untied head.
    d, f, kv, v = 32, 64, 16, 128
    mats = [(d, d), (d, kv), (d, kv), (d, d), (d, f), (d, f), (f, d)]
    shapes = mats + [(v, d), (d, v), (d,), (d,), (d,)]
    assert llama["params"] == sum(int(np.prod(s)) for s in shapes)
    per = llama["per_device"]
    assert per["params"] == _expected_bytes(shapes, 4)
    # AdamW: mu and nu like the params, plus an int32 count.
    assert per["adam"] == 2 * per["params"] + 4
    # 0.8 protected: r - k < k on complete sides, so the complement (width r - k) is stored.
    widths = []
    for m, n in mats:
        r = min(m, n)
        k = int(0.8 * r)
        widths += [(m, r - k if m == r else k), (n, r - k if n == r else k)]
    assert per["bases"] == _expected_bytes(widths, 4)
    # XLA's own accounting agrees with the state the plan built (its arguments are the
    # params, the optimizer state and the batch) and the donated state aliases its outputs.
    assert per["arguments"] == per["params"] + per["adam"] + per["bases"] + per["batch"]
    assert per["aliased"] == per["params"] + per["adam"] + per["bases"]
    assert per["temp"] > per["params"]  # at least the float32 gradients
    assert per["peak"] >= per["arguments"] + per["temp"]

    per = t5["per_device"]
    assert t5["mesh"] == {"data": 1, "fsdp": 8} and per["arguments"] > 0
    assert per["aliased"] == per["params"] + per["adam"] + per["bases"]
    # 0.5 protected: k = r / 2, so every side stores k columns (a basis, never a complement).
    assert 0 < per["bases"] < 2 * per["params"]

    # model.remat (the blocks as a scan of checkpointed steps): the same state, and the
    # backward pass no longer keeps six blocks' activations and gathered weights.
    assert remat["remat"] and not loop["remat"]
    for key in ("params", "adam", "bases", "arguments", "aliased"):
        assert remat["per_device"][key] == loop["per_device"][key], key
    assert remat["per_device"]["temp"] < 0.75 * loop["per_device"]["temp"], (
        remat["per_device"]["temp"], loop["per_device"]["temp"])


def test_memory_plan_rejects_bad_input():
    from asvd_jax.cl._memory_plan import PlanSpec, plan_memory
    from asvd_jax.models.llama import LlamaConfig

    cfg = LlamaConfig(vocab_size=64, hidden_size=16, intermediate_size=32, num_layers=1,
                      num_heads=2, num_kv_heads=1)
    with pytest.raises(ValueError, match="does not split over"):
        plan_memory(PlanSpec("llama", cfg, batch=3, seq=8, data=1, fsdp=2))
    with pytest.raises(ValueError, match="family"):
        plan_memory(PlanSpec("gpt", cfg, batch=2, seq=8, data=1, fsdp=2))
    with pytest.raises(ValueError, match="needs 64 devices"):
        plan_memory(PlanSpec("llama", cfg, batch=64, seq=8, data=8, fsdp=8))
