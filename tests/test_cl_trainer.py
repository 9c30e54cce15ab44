"""The trainer uses the library like a user: one optax chain and one jitted step per run,
the bases swapped with ``set_bases`` at each boundary, held only by the optimizer state."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from _helpers.runs import TINY_RUN
from tolerances import assert_close

import asvd_jax as aj
from asvd_jax.cl import Runner, TrainConfig, load_config
from asvd_jax.cl._task_state import TaskLengthState, set_task_length, state_bases
from asvd_jax.cl._train import inner_optimizer, with_accumulation

BASE = TINY_RUN + ["data.max_len=64", "train.batch_size=8", "eval.batch_size=16",
                   "checkpoint.export_hf=false", "eval.zero_shot=false", "eval.lm_loss=false"]


def _params(rng):
    return {"w": jnp.asarray(rng.normal(size=(6, 5)), jnp.float32),
            "b": jnp.asarray(rng.normal(size=(5,)), jnp.float32)}


@pytest.mark.parametrize("schedule,warmup,accum", [("linear", 2, 1), ("cosine", 1, 2), ("cosine", 0, 1)])
def test_one_chain_with_the_task_length_in_its_state_is_the_chain_built_for_that_task(
        schedule, warmup, accum):
    train = dataclasses.replace(TrainConfig(), lr=0.1, schedule=schedule, warmup_steps=warmup,
                                max_grad_norm=1.0, weight_decay=0.01)
    run_chain = with_accumulation(inner_optimizer(train), accum)
    step = jax.jit(run_chain.update)
    for length in (3, 7):  # two tasks of different lengths through the same chain
        task_chain = with_accumulation(inner_optimizer(train, length), accum)
        want_step = jax.jit(task_chain.update)
        for seed in range(3):
            rng = np.random.default_rng(seed)
            params = _params(rng)
            state = set_task_length(run_chain.init(params), length)
            want_state = task_chain.init(params)
            for _ in range(accum * (length + 2)):  # past the schedule's end too
                grads = jax.tree.map(lambda p: jnp.asarray(rng.normal(size=p.shape), jnp.float32), params)
                u, state = step(grads, state, params)
                w, want_state = want_step(grads, want_state, params)
                for a, b in zip(jax.tree.leaves(u), jax.tree.leaves(w)):
                    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))  # the same program


def test_task_length_is_required_and_static():
    train = dataclasses.replace(TrainConfig(), schedule="linear")
    chain = inner_optimizer(train)
    params = _params(np.random.default_rng(0))
    state = chain.init(params)
    with pytest.raises(ValueError, match="set_task_length"):
        chain.update(params, state, params)
    a, b = set_task_length(state, 3), set_task_length(state, 4)
    # The length is pytree metadata: equal lengths share a compiled step, new ones retrace.
    assert jax.tree.structure(a) != jax.tree.structure(b)
    assert jax.tree.structure(a) == jax.tree.structure(set_task_length(state, 3))
    assert len(jax.tree.leaves(a)) == len(jax.tree.leaves(state))  # checkpoints unchanged
    # A constant rate needs no length: optax's own AdamW chain, nothing to set.
    const = inner_optimizer(TrainConfig())
    assert not any(isinstance(n, TaskLengthState) for n in jax.tree.leaves(
        const.init(params), is_leaf=lambda n: isinstance(n, TaskLengthState)))


def test_a_run_builds_one_chain_and_step_and_swaps_fresh_bases(tmp_path, monkeypatch):
    from asvd_jax.cl import _runner
    from asvd_jax.cl._methods import ASVD

    built = {"optimizer": 0, "step": 0}
    seen = {}
    original_step = _runner.make_train_step
    original_optimizer = ASVD.optimizer
    original_start = ASVD.start_task

    def counting_optimizer(self, ctx):
        built["optimizer"] += 1
        return original_optimizer(self, ctx)

    def recording_start(self, ctx):
        out = original_start(self, ctx)
        if ctx.index == 1:  # the boundary's weights and rank plan
            seen["params"], seen["ranks"], seen["targets"] = ctx.params, self._plan.ranks(), ctx.targets
        return out

    def counting_step(adapter, method, opt, *freeze):
        built["step"] += 1
        step = original_step(adapter, method, opt, *freeze)

        def wrapped(trainable, frozen, opt_state, batch):
            bases = state_bases(opt_state)
            if bases is not None and "bases" not in seen:
                # A copy: the step donates the state's buffers.
                seen["bases"] = jax.tree.map(lambda x: np.array(x), bases)
            return step(trainable, frozen, opt_state, batch)

        return wrapped

    monkeypatch.setattr(ASVD, "optimizer", counting_optimizer)
    monkeypatch.setattr(ASVD, "start_task", recording_start)
    monkeypatch.setattr(_runner, "make_train_step", counting_step)
    runner = Runner(load_config(None, BASE + ["method.name=asvd"]), run_dir=str(tmp_path / "r"))
    m = runner.run()
    runner.trackers.close()
    assert m["status"] == "complete" and len(m["rows"]) == 2
    assert built == {"optimizer": 1, "step": 1}
    # The method kept no copy: its boundary bases went to the optimizer state.
    assert runner.method._boundary_bases is None and not hasattr(runner.method, "_bases")
    # The bases the state held at task 2 project like bases computed afresh from the weights
    # at the boundary and the plan's ranks (singular vectors may differ in sign: compare
    # projections of random updates, against the float64 projection).
    fresh = aj.compute_bases(seen["params"], seen["ranks"], seen["targets"])
    got = dict(aj.flatten_with_paths(seen["bases"], is_leaf=lambda x: x is None or isinstance(x, aj.SubspaceBasis))[0])
    want = dict(aj.flatten_with_paths(fresh, is_leaf=lambda x: x is None or isinstance(x, aj.SubspaceBasis))[0])
    assert set(got) == set(want) and any(b is not None for b in got.values())
    rng = np.random.default_rng(0)
    for path, basis in want.items():
        if basis is None:
            assert got[path] is None, path
            continue
        _, m_, n_ = basis.leaf_shape()
        g = rng.normal(size=(m_, n_))
        proj = lambda b: _projector(b.input, b.input_is_complement, m_) @ g @ _projector(
            b.output, b.output_is_complement, n_)
        assert_close(proj(got[path]), proj(basis), "float32", scale=np.abs(g).max(), err_msg=path)
    assert m["rows"][1]["record"]["leakage"]["max"] < 1e-4  # read from the state's bases


def _projector(side, is_complement, dim):
    """``I - P_protected`` of one side in float64, from a basis or its complement."""
    q = np.asarray(side, np.float64)
    p = q @ q.T
    return p if is_complement else np.eye(dim) - p


def test_train_freeze_keeps_matching_params_fixed_without_optimizer_state(tmp_path):
    from asvd_jax.cl._config import ConfigError

    config = load_config(None, TINY_RUN + ["method.name=seqft", "train.freeze=[embed/]",
                                           "data.max_train_per_task=16", "eval.zero_shot=false",
                                           "eval.lm_loss=false"])
    from asvd_jax.models import load_model, split_model

    initial = split_model(load_model(config.model)[0])[1]  # the random source is seeded
    before = {p: np.array(v) for p, v in aj.flatten_with_paths(initial)[0]}
    runner = Runner(config, run_dir=str(tmp_path / "r"))
    m = runner.run()
    runner.trackers.close()
    assert m["status"] == "complete"
    after = dict(aj.flatten_with_paths(runner.params)[0])
    for path, value in after.items():
        changed = not np.array_equal(np.asarray(value), before[path])
        assert changed == (not path.startswith("embed/")), path
    # No AdamW moments for the frozen embedding: only the trained leaves have them.
    moments = [s for s in jax.tree.leaves(runner.opt.init(runner.adapter.params),
                                          is_leaf=lambda n: isinstance(n, optax.ScaleByAdamState))
               if isinstance(s, optax.ScaleByAdamState)]
    sizes = sum(int(np.size(x)) for s in moments for x in jax.tree.leaves(s.mu))
    assert sizes == sum(v.size for p, v in before.items() if not p.startswith("embed/"))
    with pytest.raises(ConfigError, match=r"train.freeze: \['lm_head/'\] match no parameter"):
        Runner(load_config(None, TINY_RUN + ["train.freeze=[lm_head/]"]), run_dir=str(tmp_path / "x")).run()
