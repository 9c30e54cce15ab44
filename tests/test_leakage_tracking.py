"""The logged leakage means what it says: the protected share of the summed applied updates
is ~0 for an exact run (even on a nearly frozen matrix, where W_t - W_0 reads as a leak) and a
real number for a leaking one. Measured against float64 numpy SVDs of the starting weights."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
from _helpers.linalg import reference_leakage
from _helpers.mlp import RANKS, mlp, mlp_loss, run
from tolerances import assert_close

import asvd_jax as aj


def _tracked(params, x, y, tx_core, steps, lr_scale=1.0):
    bases = aj.compute_bases(params, RANKS, aj.select_targets(params))
    tx = optax.chain(tx_core(bases), aj.track_applied_updates(bases))
    p, state = run(params, tx, mlp_loss(jnp.float32), x, y, steps)
    return p, aj.applied_updates(state), bases


def test_exact_run_logs_zero_and_sum_equals_weight_change():
    params, x, y = mlp(10)
    p, total, bases = _tracked(params, x, y, lambda b: aj.with_projection(
        optax.adamw(1e-2, weight_decay=0.1), b), 300)
    assert total["up"]["bias"] is None and total["up"]["kernel"].dtype == jnp.float32
    for path in RANKS:
        sub = path.split("/")[0]
        w0 = np.asarray(params[sub]["kernel"], np.float64)
        change = np.asarray(p[sub]["kernel"], np.float64) - w0
        summed = np.asarray(total[sub]["kernel"], np.float64)
        assert_close(summed, change, "float32", scale=np.abs(change).max())
        ref = reference_leakage(w0, summed, RANKS[path])
        assert ref < 1e-5, (path, ref)  # float32 bases against float64 subspaces
        # The runner's number (the core's leakage of the sum) agrees with the reference.
        got = float(aj.protected_leakage(total, bases)[path])
        assert abs(got - ref) < 2e-6


def test_nearly_frozen_matrix_weight_rounding_is_not_reported_as_leak():
    """A tiny change on large weights: W_t - W_0 carries float32 rounding of W, the sum not."""
    params, x, y = mlp(11)
    params = jax.tree.map(lambda a: a * 100.0, params)  # |W| large against the steps
    p, total, _ = _tracked(params, x, y, lambda b: aj.with_projection(optax.sgd(1e-7), b), 200)
    w0 = np.asarray(params["up"]["kernel"], np.float64)
    from_weights = reference_leakage(w0, np.asarray(p["up"]["kernel"], np.float64) - w0, 8)
    from_updates = reference_leakage(w0, np.asarray(total["up"]["kernel"], np.float64), 8)
    assert from_weights > 1e-3, from_weights  # the rounding floor, not the optimizer
    assert from_updates < 1e-5, from_updates


def test_leaking_config_logs_a_real_number():
    params, x, y = mlp(12)
    wrong = lambda b: optax.chain(aj.project_out_protected(b),  # noqa: E731
                                  optax.adamw(1e-2, weight_decay=0.1))
    _, total, bases = _tracked(params, x, y, wrong, 100)
    w0 = np.asarray(params["up"]["kernel"], np.float64)
    ref = reference_leakage(w0, np.asarray(total["up"]["kernel"], np.float64), 8)
    assert ref > 1e-2
    assert abs(float(aj.protected_leakage(total, bases)["up/kernel"]) - ref) < 1e-4


def test_applied_updates_found_through_wrappers_or_none():
    params, x, y = mlp(13)
    bases = aj.compute_bases(params, RANKS, aj.select_targets(params))
    inner = optax.chain(aj.with_projection(optax.adamw(1e-2), bases),
                        aj.track_applied_updates(aj.select_targets(params)))
    tx = aj.accumulate_gradients(inner, 2)
    state = tx.init(params)
    g = jax.grad(mlp_loss(jnp.float32))(params, x, y)
    p = params
    for _ in range(4):
        u, state = tx.update(g, state, p)
        p = optax.apply_updates(p, u)
    total = aj.applied_updates(state)
    assert_close(total["down"]["kernel"], np.asarray(p["down"]["kernel"], np.float64)
                 - np.asarray(params["down"]["kernel"], np.float64), "float32", scale=1.0)
    assert aj.applied_updates(optax.adamw(1e-2).init(params)) is None
