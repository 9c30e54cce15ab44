"""End-to-end checks of the baselines on the tiny continual-learning harness of
_helpers/baselines.py (shared with the other test_baselines_* files)."""

import json

import jax
import numpy as np
import pytest
from _helpers.baselines import make_ctx, regression_adapter, run_task, task_batches, tiny_params

from asvd_jax.cl import Method
from asvd_jax.cl.baselines import EWCConfig, LoRAConfig, OLoRAConfig, ewc, lora, olora


METHODS = {
    "ewc": lambda: ewc(EWCConfig(ewc_lambda=10.0, learning_rate=1e-2, fisher_batches=2)),
    "lora": lambda: lora(LoRAConfig(rank=2, alpha=4.0, learning_rate=1e-2)),
    "olora": lambda: olora(OLoRAConfig(lora=LoRAConfig(rank=2, alpha=4.0, learning_rate=1e-2), lambda_2=0.01)),
}


@pytest.mark.parametrize("kind", ["dict", "nnx"])
@pytest.mark.parametrize("name", sorted(METHODS))
def test_two_tasks_end_to_end(name, kind):
    """Each method runs two tasks through the generic step on both param containers: the
    params keep their tree type and structure, task losses fall, records are JSON, and the
    carry state is a nested dict of arrays that restores to the same penalty."""
    params, apply = tiny_params(0, kind)
    adapter = regression_adapter(apply)
    method = METHODS[name]()
    assert isinstance(method, Method)
    treedef = jax.tree_util.tree_structure(params)
    tasks = [task_batches(1), task_batches(2)]
    prev = None
    for t, batches in enumerate(tasks):
        ctx = make_ctx(t, params, adapter, batches, prev)
        params, record, losses = run_task(method, ctx)
        assert jax.tree_util.tree_structure(params) == treedef
        assert all(np.isfinite(losses))
        assert np.mean(losses[-4:]) < np.mean(losses[:4]), (name, t, losses[:4], losses[-4:])
        assert json.loads(json.dumps(record))["task"] == t
        prev = batches

    carry = getattr(method, "carry_state", lambda: None)()
    if name == "lora":
        assert carry is None
        return
    flat, _ = jax.tree_util.tree_flatten_with_path(carry, is_leaf=lambda x: x is None)
    for path, leaf in flat:
        assert all(isinstance(k, jax.tree_util.DictKey) and isinstance(k.key, str) for k in path)
        assert isinstance(leaf, jax.Array), path
    ctx = make_ctx(2, params, adapter, tasks[0], tasks[1], num_tasks=3)
    trainable, frozen = method.start_task(ctx)
    # Away from the EWC anchor, so that the penalty is not trivially zero.
    trainable = jax.tree.map(lambda x: x + 0.05, trainable)
    expected = float(method.penalty(trainable, frozen))
    assert expected > 0
    fresh = METHODS[name]()
    fresh.restore_carry_state(jax.tree.map(np.asarray, carry))
    trainable2, frozen2 = fresh.start_task(ctx)
    assert float(fresh.penalty(trainable, frozen2)) == expected
