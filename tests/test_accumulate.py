"""accumulate_gradients: same result as optax.MultiSteps, inner chain (projection) run once per step."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from _helpers.linalg import reference_leakage
from tolerances import assert_close

import asvd_jax as aj

SHAPE = (12, 8)


def _problem(seed):
    rng = np.random.default_rng(seed)
    params = {"w": jnp.asarray(rng.normal(size=SHAPE), jnp.float32),
              "b": jnp.asarray(rng.normal(size=(8,)), jnp.float32)}
    targets = aj.select_targets(params, include=[r"^w$"])
    bases = aj.compute_bases(params, {"w": 3}, targets)
    grads = [jax.tree.map(lambda p: jnp.asarray(rng.normal(size=p.shape), jnp.float32), params)
             for _ in range(12)]
    return params, bases, grads


def _counting():
    """An identity transform that counts, at run time, how often its update executes."""
    calls = []

    def update(updates, state, params=None):
        jax.debug.callback(lambda: calls.append(1))
        return updates, state

    return optax.GradientTransformation(lambda p: optax.EmptyState(), update), calls


def _run(tx, params, grads):
    state = tx.init(params)

    @jax.jit
    def step(params, state, g):
        updates, state = tx.update(g, state, params)
        return optax.apply_updates(params, updates), state

    for g in grads:
        params, state = step(params, state, g)
    jax.effects_barrier()
    return params, state


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_optax_multisteps(seed):
    params, bases, grads = _problem(seed)
    inner = aj.with_projection(optax.adamw(1e-2, weight_decay=0.1), bases)
    ours, _ = _run(aj.accumulate_gradients(inner, 4), params, grads)
    ref, _ = _run(optax.MultiSteps(inner, every_k_schedule=4).gradient_transformation(), params, grads)
    for key in params:
        assert_close(ours[key], ref[key], np.float32)
    # The accumulated change is still out of the protected subspace.
    # (Against a float64 SVD of the starting weight, not the projection under test.)
    w0 = np.asarray(params["w"], np.float64)
    assert reference_leakage(w0, np.asarray(ours["w"], np.float64) - w0, 3) < 1e-5


def test_inner_chain_runs_once_per_real_step():
    params, bases, grads = _problem(0)
    counter, calls = _counting()
    inner = optax.chain(optax.adamw(1e-2), counter, aj.project_out_protected(bases))
    _run(aj.accumulate_gradients(inner, 4), params, grads)
    assert len(calls) == len(grads) // 4
    # optax.MultiSteps evaluates the inner chain at every micro-step: the reason this exists.
    counter, calls = _counting()
    inner = optax.chain(optax.adamw(1e-2), counter, aj.project_out_protected(bases))
    _run(optax.MultiSteps(inner, every_k_schedule=4).gradient_transformation(), params, grads)
    assert len(calls) == len(grads)


def test_no_update_between_real_steps_and_set_bases_reaches_inside():
    params, bases, grads = _problem(1)
    tx = aj.accumulate_gradients(aj.with_projection(optax.sgd(0.1), None), 3)
    state = tx.init(params)
    updates, state = tx.update(grads[0], state, params)
    assert all(float(jnp.abs(u).max()) == 0.0 for u in jax.tree.leaves(updates))
    state = aj.set_bases(state, bases)
    for g in grads[1:3]:
        updates, state = tx.update(g, state, params)
    mean = jax.tree.map(lambda *g: sum(g) / 3, *grads[:3])
    expected = aj.project_tree(jax.tree.map(lambda g: -0.1 * g, mean), bases, "strict")
    for key in params:
        assert_close(updates[key], expected[key], np.float32)


def test_compiles_once():
    params, bases, grads = _problem(2)
    tx = aj.accumulate_gradients(aj.with_projection(optax.adam(1e-3), bases), 2)
    traces = []

    @jax.jit
    def step(params, state, g):
        traces.append(1)
        updates, state = tx.update(g, state, params)
        return optax.apply_updates(params, updates), state

    state = tx.init(params)
    for g in grads[:6]:
        params, state = step(params, state, g)
    assert len(traces) == 1


@pytest.mark.parametrize("bad", [0, -1, 2.0, True])
def test_rejects_bad_every_k(bad):
    with pytest.raises(ValueError, match="every_k"):
        aj.accumulate_gradients(optax.sgd(0.1), bad)
