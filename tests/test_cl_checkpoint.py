import json
import os
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from _helpers.checkpoint import save_legacy

from asvd_jax.cl._checkpoint import Checkpointer, CheckpointMismatch


class Holder(NamedTuple):
    a: jax.Array
    empty: jax.Array


@pytest.mark.parametrize("seed", [0, 1])
def test_round_trip_exact_structure(tmp_path, seed):
    rng = np.random.default_rng(seed)
    params = {"w": jnp.asarray(rng.normal(size=(5, 3)), jnp.float32),
              "b": {"x": jnp.asarray(rng.normal(size=(3,)), jnp.bfloat16)}}
    opt = optax.adamw(1e-3)
    state = opt.init(params)
    _, state = opt.update(jax.tree.map(jnp.ones_like, params), state, params)
    extra = Holder(jnp.arange(4), jnp.zeros((6, 0), jnp.float32))
    ck = Checkpointer(tmp_path)
    ck.save("task-0000", {"params": params, "opt_state": state, "extra": extra},
            {"task_index": 0}, raw={"carry": {"fisher": {"w": jnp.ones((2,))}}})
    assert ck.latest()["task_index"] == 0
    tmpl = {"params": jax.tree.map(jnp.zeros_like, params),
            "opt_state": opt.init(params),
            "extra": Holder(jnp.zeros(4, jnp.int32), jnp.zeros((6, 0), jnp.float32))}
    out = ck.restore("task-0000", tmpl)
    assert jax.tree.structure(out["opt_state"]) == jax.tree.structure(state)
    for a, b in zip(jax.tree.leaves(out), jax.tree.leaves({"params": params, "opt_state": state, "extra": extra})):
        assert a.dtype == b.dtype and a.shape == b.shape
        np.testing.assert_array_equal(np.asarray(a, np.float64), np.asarray(b, np.float64))
    carry = ck.restore_raw("task-0000", "carry")
    np.testing.assert_array_equal(carry["fisher"]["w"], np.ones(2))


def test_uncommitted_is_ignored_and_mismatch_is_named(tmp_path):
    ck = Checkpointer(tmp_path)
    ck.save("task-0000", {"params": {"w": jnp.ones(3)}}, {"task_index": 0})
    # A killed save: folder without meta.json.
    os.makedirs(os.path.join(ck.root, "task-0001"))
    assert ck.committed() == ["task-0000"]
    assert ck.latest()["name"] == "task-0000"
    with pytest.raises(CheckpointMismatch, match="group 'params' has 1 arrays"):
        ck.restore("task-0000", {"params": {"w": jnp.ones(3), "v": jnp.ones(2)}})
    with pytest.raises(CheckpointMismatch, match="never committed"):
        ck.restore("task-0001", {"params": {"w": jnp.ones(3)}})


def test_prune_keeps_newest(tmp_path):
    ck = Checkpointer(tmp_path)
    for i in range(3):
        ck.save(f"step-0000-{i:06d}", {"params": {"w": jnp.ones(2) * i}}, {"i": i})
    ck.prune("step-", keep=1)
    assert ck.committed() == ["step-0000-000002"]
    with open(os.path.join(ck.root, "latest.json")) as f:
        assert json.load(f)["name"] == "step-0000-000002"


# ------------------------------------------------- CheckpointManager layout and old run dirs
def test_manager_layout_retention_and_atomicity(tmp_path):
    ck = Checkpointer(tmp_path, keep_tasks=2, keep_steps=1)
    for stage in range(3):
        ck.save(f"step-{stage:04d}-000001", {"p": {"w": jnp.ones(2)}}, {"kind": "step"})
        ck.save(f"task-{stage:04d}", {"p": {"w": jnp.ones(2) * stage}}, {"kind": "task"})
    # max_to_keep: the two newest task ends, the newest mid-task checkpoint.
    assert ck.committed() == ["step-0002-000001", "task-0001", "task-0002"]
    assert sorted(os.listdir(os.path.join(ck.root, "tasks"))) == ["1", "2"]
    assert os.listdir(os.path.join(ck.root, "steps")) == ["2000001"]
    assert ck.latest()["name"] == "task-0002"  # run order: a stage's task end after its steps
    # A save killed half-way leaves only orbax's temporary folder: invisible, then cleaned up.
    tmp = os.path.join(ck.root, "tasks", "3.orbax-checkpoint-tmp-1234")
    os.makedirs(os.path.join(tmp, "group_p"))
    ck2 = Checkpointer(tmp_path, keep_tasks=2)
    assert ck2.latest()["name"] == "task-0002" and not os.path.exists(tmp)
    with pytest.raises(ValueError, match="task-NNNN or step-NNNN-NNNNNN"):
        ck.save("final", {"p": {"w": jnp.ones(2)}}, {})


def test_old_layout_still_restores_then_new_saves_take_over(tmp_path):
    rng = np.random.default_rng()
    params = {"w": jnp.asarray(rng.normal(size=(4, 3)), jnp.float32), "b": jnp.arange(3)}
    root = os.path.join(tmp_path, "checkpoints")
    os.makedirs(root)
    save_legacy(root, "task-0000", {"params": params}, {"kind": "task", "stage": 0},
                 raw={"carry": {"f": np.full(2, 7.0)}})
    ck = Checkpointer(tmp_path)
    assert ck.latest()["name"] == "task-0000" and ck.latest()["stage"] == 0
    out = ck.restore("task-0000", {"params": jax.tree.map(jnp.zeros_like, params)})["params"]
    for a, b in zip(jax.tree.leaves(out), jax.tree.leaves(params)):
        assert a.dtype == b.dtype
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    np.testing.assert_array_equal(ck.restore_raw("task-0000", "carry")["f"], np.full(2, 7.0))
    with pytest.raises(CheckpointMismatch, match="group 'params' has 2 arrays"):
        ck.restore("task-0000", {"params": {"w": params["w"]}})
    # The next task end goes to the manager and is the newest; pruning removes the old folder.
    ck.save("task-0001", {"params": params}, {"kind": "task", "stage": 1})
    assert ck.latest()["name"] == "task-0001"
    ck.prune("task-", keep=1)
    assert ck.committed() == ["task-0001"] and not os.path.exists(os.path.join(root, "task-0000"))
