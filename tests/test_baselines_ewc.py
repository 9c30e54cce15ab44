"""EWC: penalty, gradient and Fisher against float64 numpy; accumulation; forgetting."""

import types

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from _helpers.baselines import leaves_by_path, make_ctx, run_task, tiny_params
from tolerances import assert_close

import asvd_jax as aj
from asvd_jax.cl.baselines import EWCConfig, diagonal_fisher, ewc, ewc_penalty, fisher_step
from asvd_jax.cl.baselines._common import nest
from asvd_jax.models._layers import Linear

SEEDS = [0, 1, 2]


@pytest.mark.parametrize("kind", ["dict", "nnx"])
@pytest.mark.parametrize("seed", SEEDS)
def test_penalty_and_gradient_match_float64(seed, kind):
    params, _ = tiny_params(seed, kind)
    rng = np.random.default_rng(seed)
    leaves = leaves_by_path(params)
    penalised = ["l1/kernel", "l2/kernel"] if seed % 2 else list(leaves)
    fisher = {p: rng.uniform(0, 2, leaves[p].shape).astype(np.float32) for p in penalised}
    anchor = {p: (np.asarray(leaves[p]) + rng.normal(size=leaves[p].shape)).astype(np.float32) for p in penalised}
    lam = float(rng.uniform(0.5, 5))

    value, grads = jax.value_and_grad(ewc_penalty)(params, nest(fisher), nest(anchor), lam)

    diff = {p: np.asarray(leaves[p], np.float64) - anchor[p].astype(np.float64) for p in penalised}
    expected = 0.5 * lam * sum(np.sum(fisher[p].astype(np.float64) * diff[p] ** 2) for p in penalised)
    assert_close(value, expected, np.float32)
    for path, g in leaves_by_path(grads).items():
        want = lam * fisher[path] * diff[path] if path in penalised else np.zeros(g.shape)
        assert_close(g, want, np.float32, err_msg=path)


def _linear(seed, kind):
    """A bias-free linear model y = x @ W (3 x 2) as dict or nnx.State, with its MSE loss."""
    if kind == "nnx":
        graphdef, params = nnx.split(Linear(3, 2, rngs=nnx.Rngs(seed)), nnx.Param)
        apply = lambda p, x: nnx.merge(graphdef, p)(x)  # noqa: E731
    else:
        params = {"w": jax.random.normal(jax.random.key(seed), (3, 2))}
        apply = lambda p, x: x @ p["w"]  # noqa: E731

    def loss(p, batch):
        return jnp.mean(jnp.square(apply(p, batch["x"]) - batch["y"]))

    return params, loss


@pytest.mark.parametrize("kind", ["dict", "nnx"])
@pytest.mark.parametrize("mode", ["batch", "example"])
@pytest.mark.parametrize("seed", SEEDS)
def test_fisher_matches_float64(seed, mode, kind):
    """MSE of a linear model: d loss / dW = 2/(B * d_out) X^T (X W - Y), squared and averaged."""
    params, loss = _linear(seed, kind)
    (path, w), = leaves_by_path(params).items()
    w = np.asarray(w, np.float64)
    rng = np.random.default_rng(seed)
    batches = [{"x": rng.normal(size=(4, 3)).astype(np.float32), "y": rng.normal(size=(4, 2)).astype(np.float32)}
               for _ in range(5)]
    used = batches[:3]

    # chunk 3 divides no batch of 4: chunks of 2 examples.
    fisher, count = diagonal_fisher(loss, params, batches, [path], mode, max_batches=3, chunk=1 + seed)

    squares = []
    for b in used:
        x, y = b["x"].astype(np.float64), b["y"].astype(np.float64)
        if mode == "batch":
            squares.append((2 / (4 * 2) * x.T @ (x @ w - y)) ** 2)
        else:
            squares += [(2 / 2 * np.outer(x[n], x[n] @ w - y[n])) ** 2 for n in range(4)]
    assert count == len(squares)
    assert_close(fisher[path], np.mean(squares, axis=0), np.float32)


def test_fisher_rejects_batches_without_batch_axis_and_empty_tasks():
    params, loss = _linear(0, "dict")
    with pytest.raises(ValueError, match="disagree on the batch size"):
        diagonal_fisher(loss, params, [{"x": np.ones((4, 3)), "y": np.ones((3, 2))}], ["w"], "example")
    with pytest.raises(ValueError, match="no batches"):
        diagonal_fisher(loss, params, [], ["w"], "batch")


@pytest.mark.parametrize("scope", ["all", "targets"])
def test_running_fisher_and_anchor(scope):
    """F <- gamma F + F_t and theta* <- the newest params, over the chosen leaves only."""
    gamma = 0.5
    method = ewc(EWCConfig(gamma=gamma, fisher_mode="batch", fisher_batches=None, scope=scope))
    rng = np.random.default_rng(0)
    params0, apply = tiny_params(0, "dict")
    params1, _ = tiny_params(1, "dict")
    batches = [{"x": rng.normal(size=(4, 5)).astype(np.float32), "y": rng.normal(size=(4, 3)).astype(np.float32)}
               for _ in range(2)]

    def loss(p, b):
        return jnp.mean(jnp.square(apply(p, b["x"]) - b["y"]))

    adapter = types.SimpleNamespace(loss=loss)
    paths = ["l1/kernel", "l2/kernel"] if scope == "targets" else ["l1/bias", "l1/kernel", "l2/kernel"]
    assert method.carry_state() is None
    ctx0 = make_ctx(0, params0, adapter, batches)
    _, frozen = method.start_task(ctx0)
    assert frozen == {}
    assert float(method.penalty(params0, frozen)) == 0.0
    _, rec0 = method.finish_task(params0, frozen, ctx0)
    ctx1 = make_ctx(1, params0, adapter, batches, batches, num_tasks=3)  # not the last task
    _, frozen = method.start_task(ctx1)
    _, rec1 = method.finish_task(params1, frozen, ctx1)

    f0, _ = diagonal_fisher(loss, params0, batches, paths, "batch")
    f1, _ = diagonal_fisher(loss, params1, batches, paths, "batch")
    carry = method.carry_state()
    got_f, got_a = leaves_by_path(carry["fisher"]), leaves_by_path(carry["anchor"])
    assert sorted(got_f) == sorted(paths) == sorted(got_a) == sorted(rec1["fisher_task"])
    p1 = leaves_by_path(params1)
    for p in paths:
        assert_close(got_f[p], gamma * np.asarray(f0[p], np.float64) + np.asarray(f1[p], np.float64), np.float32)
        np.testing.assert_array_equal(got_a[p], p1[p])
    assert rec1["penalised_leaves"] == len(paths)
    assert_close(rec0["fisher_task"]["l2/kernel"]["max"], float(np.max(f0["l2/kernel"])), np.float32)


def test_ewc_forgets_less_than_plain_finetuning():
    """Two conflicting linear regressions: after task 2, EWC's weights stay closer to task 1's
    optimum, and its task-1 loss lower, than plain fine-tuning (the same method with lambda 0)."""
    for seed in SEEDS:
        rng = np.random.default_rng(seed)
        w1, w2 = rng.normal(size=(6, 1)), rng.normal(size=(6, 1))

        def task(w):
            xs = [rng.normal(size=(16, 6)) for _ in range(4)]
            return [{"x": x.astype(np.float32), "y": (x @ w + 0.5 * rng.normal(size=(16, 1))).astype(np.float32)}
                    for x in xs]

        t1, t2 = task(w1), task(w2)

        def loss(p, b):
            return jnp.mean(jnp.square(b["x"] @ p["w"] - b["y"]))

        adapter = types.SimpleNamespace(loss=loss)
        targets = {"w": aj.MatrixSpec()}
        results = {}
        for lam in (0.0, 10.0):
            method = ewc(EWCConfig(ewc_lambda=lam, learning_rate=0.05, fisher_batches=None))
            params = {"w": jnp.zeros((6, 1))}
            params, _, _ = run_task(method, make_ctx(0, params, adapter, t1, targets=targets), epochs=50)
            after1 = np.asarray(params["w"])
            params, _, _ = run_task(method, make_ctx(1, params, adapter, t2, t1, targets=targets), epochs=50)
            task1_loss = np.mean([float(loss(params, b)) for b in t1])
            results[lam] = (np.linalg.norm(np.asarray(params["w"]) - after1), task1_loss)
        (drift_ft, loss_ft), (drift_ewc, loss_ewc) = results[0.0], results[10.0]
        assert drift_ewc < 0.5 * drift_ft, (seed, results)
        assert loss_ewc < 0.5 * loss_ft, (seed, results)


def test_config_and_state_validation():
    with pytest.raises(ValueError, match="EWCConfig.gamma"):
        EWCConfig(gamma=1.5)
    with pytest.raises(ValueError, match="EWCConfig.fisher_mode"):
        EWCConfig(fisher_mode="exact")
    with pytest.raises(ValueError, match="EWCConfig.fisher_batches"):
        EWCConfig(fisher_batches=0)
    with pytest.raises(TypeError, match="EWCConfig.ewc_lambda"):
        EWCConfig(ewc_lambda="big")
    with pytest.raises(TypeError, match="EWCConfig"):
        ewc({"ewc_lambda": 1.0})
    with pytest.raises(ValueError, match="'fisher' and 'anchor'"):
        ewc().restore_carry_state({"fisher": {}})
    method = ewc()
    method.restore_carry_state({"fisher": {"w": jnp.ones((2, 2))}, "anchor": {"w": jnp.ones((2, 2))}})
    params = {"w": jnp.ones((3, 2))}
    with pytest.raises(ValueError, match="'w' has shape"):
        method.start_task(make_ctx(1, params, None, [], targets={"w": aj.MatrixSpec()}))


def test_example_fisher_skips_padding_rows():
    """Rows that carry no loss (the runner pads batches to a fixed size) are not examples."""
    params = {"w": jax.random.normal(jax.random.key(0), (3, 2))}

    def loss(p, b):
        per_row = jnp.mean(jnp.square(b["x"] @ p["w"] - b["y"]), axis=-1)
        return jnp.sum(per_row * b["mask"]) / jnp.maximum(jnp.sum(b["mask"]), 1.0)

    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(4, 3)).astype(np.float32), rng.normal(size=(4, 2)).astype(np.float32)
    mask = np.array([1, 1, 0, 0], np.float32)
    fisher, count = diagonal_fisher(loss, params, [{"x": x, "y": y, "mask": mask}], ["w"], "example")
    w = np.asarray(params["w"], np.float64)
    want = np.mean([np.outer(x[n], x[n] @ w - y[n]) ** 2 for n in range(2)], axis=0)
    assert count == 2
    assert_close(fisher["w"], want, np.float32)
    with pytest.raises(ValueError, match="zero gradient"):
        diagonal_fisher(loss, params, [{"x": x, "y": y, "mask": 0 * mask}], ["w"], "example")


def test_optimizer_factory_replaces_the_config_adamw():
    chain = optax.sgd(0.1)
    ctx = make_ctx(0, {"w": jnp.ones((2, 2))}, None, [], targets={"w": aj.MatrixSpec()})
    assert ewc(EWCConfig(), optimizer=lambda c: chain).optimizer(ctx) is chain
    with pytest.raises(TypeError, match="optimizer"):
        ewc(EWCConfig(), optimizer=chain)


def _tiny_llama_batches(seed):
    """A tiny random Llama's adapter, perturbed params and two compact training batches of
    different widths (the second a partial batch: padding rows carry no loss)."""
    from asvd_jax.cl._config import ModelConfig
    from asvd_jax.data import Example, Task
    from asvd_jax.models import load_model
    from asvd_jax.models.llama._adapter import DecoderAdapter

    model, tok, _ = load_model(ModelConfig(source="random", random_width=32))
    adapter = DecoderAdapter(model, tok, max_len=160, batch_size=8)
    rng = np.random.default_rng(seed)
    words = "alpha beta gamma delta epsilon zeta eta theta".split()
    examples = tuple(Example(" ".join(rng.choice(words, size=rng.integers(3, 7) if i < 8 else 1)),
                             str(rng.choice(["yes", "no", "maybe so"]))) for i in range(13))
    task = Task("t", "Classify.", ("yes", "no", "maybe so"), examples, examples, examples)
    batches = [adapter.train_batch([(task, ex) for ex in examples[:8]]),
               adapter.train_batch([(task, ex) for ex in examples[8:]])]
    params = jax.tree.map(lambda x: x + 0.02 * jax.random.normal(jax.random.key(seed), x.shape, x.dtype),
                          adapter.params)
    return adapter, params, batches


@pytest.mark.parametrize("seed", [0])
def test_vmapped_fisher_equals_the_per_example_loop_on_a_tiny_llama(seed):
    """The chunked vmap(grad) Fisher of batches padded to one larger shape (``widen_batch``)
    against a plain loop over the single examples of the batches as trained (the former
    computation)."""
    adapter, params, batches = _tiny_llama_batches(seed)
    widths = [b["input_ids"].shape[1] for b in batches]
    assert widths[0] != widths[1]
    paths = list(leaves_by_path(params))
    grad = jax.jit(jax.grad(adapter.loss))
    total, count = {p: 0.0 for p in paths}, 0
    for batch in batches:
        for n in range(batch["input_ids"].shape[0]):
            g = leaves_by_path(grad(params, {k: jnp.asarray(v[n:n + 1]) for k, v in batch.items()}))
            count += any(np.any(np.asarray(g[p]) != 0) for p in paths)
            for p in paths:
                total[p] = total[p] + np.square(np.asarray(g[p], np.float64))
    assert count == 13  # the 3 padding rows of the second batch are no examples
    want = {p: total[p] / count for p in paths}

    shapes = {k: (v.shape[0], *(d + 16 for d in v.shape[1:])) for k, v in batches[0].items()}
    wide = [adapter.widen_batch(b, shapes) for b in batches]
    assert {b["input_ids"].shape[1] for b in wide} == {widths[0] + 16}
    step = fisher_step(adapter.loss, paths, "example", chunk=4)
    got, n = diagonal_fisher(adapter.loss, params, wide, paths, "example", step=step)
    assert n == count
    for p in paths:
        assert_close(got[p], want[p], np.float32, scale=np.abs(want[p]).max(), err_msg=p)
    # Batches padded to one shape: one compiled program for both (and for every later task).
    assert step._cache_size() == 1


def test_no_fisher_after_the_last_task():
    """Nothing reads a Fisher after the sequence's last task: none is computed, the carry state
    (what a resumed run restores) stays the previous task's."""
    import dataclasses

    params, apply = tiny_params(0, "dict")
    batches = task_batches = [{"x": np.ones((4, 5), np.float32), "y": np.zeros((4, 3), np.float32)}]
    adapter = types.SimpleNamespace(loss=lambda p, b: jnp.mean(jnp.square(apply(p, b["x"]) - b["y"])))
    method = ewc(EWCConfig(fisher_mode="example"))
    method.finish_task(params, {}, make_ctx(0, params, adapter, batches, num_tasks=2))
    before = jax.tree.map(np.asarray, method.carry_state())

    def untouched():
        raise AssertionError("the last task's batches were read")

    last = dataclasses.replace(make_ctx(1, params, adapter, task_batches, batches, num_tasks=2),
                               current_batches=untouched)
    method.start_task(last)
    out, record = method.finish_task(jax.tree.map(lambda x: x + 1.0, params), {}, last)
    assert record["fisher_skipped"] == "last task of the sequence" and record["fisher_samples"] == 0
    jax.tree.map(np.testing.assert_array_equal, jax.tree.map(np.asarray, method.carry_state()), before)
