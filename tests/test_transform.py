"""The optax transform: the applied update stays out of the protected subspace, composes with
optax wrappers, swaps bases, keeps dtypes, and reports bad input by path."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from _helpers.linalg import matrix_with_spectrum, reference_leakage

import asvd_jax as aj


def least_squares(seed, m=12, n=8, rows=64):
    """params, loss for ||X W + b - Y||^2 with W (m, n) a target and b a free bias."""
    rng = np.random.default_rng(seed)
    w0 = matrix_with_spectrum(rng, m, n) / n
    x = jnp.asarray(rng.normal(size=(rows, m)), jnp.float32)
    y = x @ jnp.asarray(rng.normal(size=(m, n)) / np.sqrt(m), jnp.float32)
    params = {"dense": {"kernel": jnp.asarray(w0, jnp.float32), "bias": jnp.zeros(n)}}

    def loss(p):
        return jnp.mean((x @ p["dense"]["kernel"] + p["dense"]["bias"] - y) ** 2)

    return params, loss


def bases_for(params, k):
    return aj.compute_bases(params, {"dense/kernel": k}, aj.select_targets(params))


def train(params, loss, tx, steps):
    state = tx.init(params)

    @jax.jit
    def step(p, s):
        g = jax.grad(loss)(p)
        u, s = tx.update(g, s, p)
        return optax.apply_updates(p, u), s

    for _ in range(steps):
        params, state = step(params, state)
    return params, state


def leak(p1, p0, k):
    """Protected share of the kernel's change, against the top-k singular vectors of a float64
    SVD of the starting kernel (never ``aj.protected_leakage``, which runs the projection)."""
    w0 = np.asarray(p0["dense"]["kernel"], np.float64)
    return reference_leakage(w0, np.asarray(p1["dense"]["kernel"], np.float64) - w0, k)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_adamw_with_decay_stays_out_of_protected_subspace(seed):
    params, loss = least_squares(seed)
    bases = bases_for(params, 4)
    adamw = optax.adamw(1e-2, weight_decay=0.1)
    projected, _ = train(params, loss, aj.with_projection(adamw, bases), 300)
    plain, _ = train(params, loss, adamw, 300)
    assert leak(projected, params, 4) < 1e-5
    assert leak(plain, params, 4) > 1e-2  # the check can fail
    # The projected run still trains: the loss falls and the bias is free.
    assert float(loss(projected)) < 0.9 * float(loss(params))


def test_projection_before_adam_leaks():
    """Why the transform goes last: projecting the gradient before adamw lets updates back in."""
    params, loss = least_squares(3)
    bases = bases_for(params, 4)
    wrong = optax.chain(aj.project_out_protected(bases), optax.adamw(1e-2, weight_decay=0.1))
    p, _ = train(params, loss, wrong, 100)
    assert leak(p, params, 4) > 1e-2


def test_rank_zero_reproduces_inner_and_full_rank_freezes():
    params, loss = least_squares(4)
    adamw = optax.adamw(1e-2, weight_decay=0.1)
    free, _ = train(params, loss, aj.with_projection(adamw, bases_for(params, 0)), 20)
    plain, _ = train(params, loss, adamw, 20)
    jax.tree.map(np.testing.assert_array_equal, free, plain)
    frozen, _ = train(params, loss, aj.with_projection(adamw, bases_for(params, 8)), 20)
    np.testing.assert_array_equal(frozen["dense"]["kernel"], params["dense"]["kernel"])
    assert not np.array_equal(frozen["dense"]["bias"], params["dense"]["bias"])


def test_no_recompile_and_set_bases():
    params, loss = least_squares(5)
    tx = aj.with_projection(optax.adamw(1e-2, weight_decay=0.1), bases_for(params, 3))
    traces = []

    @jax.jit
    def step(p, s):
        traces.append(1)
        u, s = tx.update(jax.grad(loss)(p), s, p)
        return optax.apply_updates(p, u), s

    state = tx.init(params)
    p = params
    for _ in range(3):
        p, state = step(p, state)
    assert len(traces) == 1
    # Task boundary: new bases of the same shapes from the current weights, same step function.
    new = bases_for(p, 3)
    state = aj.set_bases(state, new)
    start = p
    for _ in range(5):
        p, state = step(p, state)
    assert len(traces) == 1
    assert leak(p, start, 3) < 1e-5


def test_set_bases_errors():
    params, _ = least_squares(6)
    with pytest.raises(ValueError, match="ProjectOutProtectedState"):
        aj.set_bases(optax.adam(1e-3).init(params), bases_for(params, 2))
    state = aj.with_projection(optax.adam(1e-3)).init(params)
    with pytest.raises(ValueError, match="structure.*'dense/bias' is missing"):
        aj.set_bases(state, {"dense": {"kernel": None}})
    extra = dict(bases_for(params, 2), head={"kernel": None})
    with pytest.raises(ValueError, match="new bases entry 'head/kernel' has no counterpart"):
        aj.set_bases(state, extra)
    nested = {"dense": {"kernel": bases_for(params, 2)["dense"]["kernel"],
                        "bias": None, "extra_leaf": None}}
    with pytest.raises(ValueError, match="'dense/extra_leaf' has no counterpart"):
        aj.set_bases(state, nested)


def test_inject_hyperparams():
    params, loss = least_squares(7)
    bases = bases_for(params, 4)
    tx = optax.inject_hyperparams(
        lambda learning_rate: aj.with_projection(optax.adamw(learning_rate, weight_decay=0.1),
                                                 bases))(learning_rate=1e-2)
    p, state = train(params, loss, tx, 50)
    assert leak(p, params, 4) < 1e-5
    state.hyperparams["learning_rate"] = jnp.asarray(0.0)
    g = jax.grad(loss)(p)
    u, _ = tx.update(g, state, p)
    np.testing.assert_array_equal(u["dense"]["kernel"], 0.0)
    # Bases can be swapped inside the wrapper's state too.
    swapped = aj.set_bases(state, bases_for(p, 2))
    inner = jax.tree.leaves(swapped, is_leaf=lambda x: isinstance(x, aj.ProjectOutProtectedState))
    found = [x for x in inner if isinstance(x, aj.ProjectOutProtectedState)]
    assert found[0].bases["dense"]["kernel"].input.shape == (12, 2)


def test_multisteps_projects_the_accumulated_update():
    """Params move once per 3 micro-steps, by the projected Adam update of the mean gradient.

    (optax's MultiSteps evaluates the inner chain at every micro-step and selects the result,
    so the projection's *cost* is paid per micro-step; its effect is once per real step.)
    """
    params, loss = least_squares(8)
    bases = bases_for(params, 4)
    inner = optax.chain(optax.adamw(1e-2, weight_decay=0.1), aj.project_out_protected(bases))
    tx = optax.MultiSteps(inner, every_k_schedule=3)
    state = tx.init(params)
    rng = np.random.default_rng(0)
    grads = [jax.tree.map(lambda x: jnp.asarray(rng.normal(size=x.shape), jnp.float32), params)
             for _ in range(3)]
    update = jax.jit(tx.update)
    p = params
    for i, g in enumerate(grads):
        u, state = update(g, state, p)
        p = optax.apply_updates(p, u)
        if i < 2:
            jax.tree.map(np.testing.assert_array_equal, p, params)
    mean = jax.tree.map(lambda *g: sum(g) / 3, *grads)
    ref_u, _ = inner.update(mean, inner.init(params), params)
    ref = optax.apply_updates(params, ref_u)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=2e-5, atol=2e-6), p, ref)
    assert leak(p, params, 4) < 1e-5


def test_partition_and_masked():
    params, loss = least_squares(9)
    params["other"] = {"kernel": jnp.asarray(np.random.default_rng(1).normal(size=(5, 5)),
                                             jnp.float32)}
    base_loss = loss

    def loss2(p):
        return base_loss(p) + jnp.sum(p["other"]["kernel"] ** 2)

    targets = aj.select_targets(params)
    bases = aj.compute_bases(params, {"dense/kernel": 4, "other/kernel": 5}, targets)
    labels = {"dense": {"kernel": "proj", "bias": "proj"}, "other": {"kernel": "plain"}}
    tx = optax.partition({"proj": aj.with_projection(optax.adamw(1e-2, weight_decay=0.1), bases),
                          "plain": optax.adamw(1e-2)}, labels)
    p, _ = train(params, loss2, tx, 100)
    assert leak(p, params, 4) < 1e-5
    # "other" is fully protected by its basis but sits in the plain partition: it trains.
    assert not np.array_equal(p["other"]["kernel"], params["other"]["kernel"])

    mask = {"dense": {"kernel": True, "bias": True}, "other": {"kernel": False}}
    tx = optax.masked(aj.with_projection(optax.adamw(1e-2, weight_decay=0.1), bases), mask)
    p, _ = train(params, loss2, tx, 50)
    assert leak(p, params, 4) < 1e-5


def test_updates_keep_dtype_with_float32_master_params():
    """bf16 gradients of float32 params: the update keeps the gradient's dtype.

    (bf16 *params* are refused: tests/test_precision.py.)
    """
    params, loss = least_squares(10)
    bases = bases_for(params, 4)
    tx = aj.project_out_protected(bases)
    g = jax.tree.map(lambda x: x.astype(jnp.bfloat16), jax.grad(loss)(params))
    u, _ = jax.jit(tx.update)(g, tx.init(params), params)
    assert all(x.dtype == jnp.bfloat16 for x in jax.tree.leaves(u))


def test_init_accepts_shape_dtype_structs():
    params, _ = least_squares(11)
    bases = bases_for(params, 4)
    abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), params)
    state = aj.project_out_protected(bases).init(abstract)
    assert state.bases is bases
    shapes = jax.eval_shape(aj.with_projection(optax.adamw(1e-3), bases).init, abstract)
    assert isinstance(shapes[1], aj.ProjectOutProtectedState)


def test_init_errors_name_the_path():
    params, _ = least_squares(12)
    bases = bases_for(params, 4)
    tx = aj.project_out_protected(bases)
    with pytest.raises(ValueError, match="structure"):
        tx.init({"dense": {"kernel": params["dense"]["kernel"]}})
    with pytest.raises(ValueError, match="dense/kernel.*does not fit"):
        tx.init({"dense": {"kernel": jnp.zeros((8, 12)), "bias": jnp.zeros(8)}})
    with pytest.raises(TypeError, match="dense/kernel.*floating"):
        tx.init({"dense": {"kernel": jnp.zeros((12, 8), jnp.int32), "bias": jnp.zeros(8)}})
    with pytest.raises(ValueError, match="mode"):
        aj.project_out_protected(bases, mode="sideways")


def test_nnx_state_params_and_optimizer():
    nnx = pytest.importorskip("flax.nnx")
    rng = np.random.default_rng(13)
    x = jnp.asarray(rng.normal(size=(32, 6)), jnp.float32)
    y = jnp.asarray(rng.normal(size=(32, 4)), jnp.float32)
    model = nnx.Linear(6, 4, rngs=nnx.Rngs(0))
    start = nnx.state(model, nnx.Param)
    start = jax.tree.map(jnp.array, start)  # a copy: the optimizer updates the model in place
    bases = aj.compute_bases(start, {"kernel": 2}, aj.select_targets(start))
    # nnx.Optimizer hands the transform Variable-free trees and rewrites pytree nodes found
    # inside Variables, so it takes the bases in their pure form.
    opt = nnx.Optimizer(
        model, aj.with_projection(optax.adamw(1e-2, weight_decay=0.1), nnx.as_pure(bases)),
        wrt=nnx.Param)

    @nnx.jit
    def step(model, opt):
        grads = nnx.grad(lambda m: jnp.mean((m(x) - y) ** 2))(model)
        opt.update(model, grads)

    for _ in range(30):
        step(model, opt)
    now = nnx.state(model, nnx.Param)
    delta = jax.tree.map(lambda a, b: a - b, now, start)
    w0 = np.asarray(start["kernel"][...], np.float64)
    assert reference_leakage(w0, np.asarray(now["kernel"][...], np.float64) - w0, 2) < 1e-5
    assert float(jnp.abs(delta["kernel"][...]).max()) > 1e-3
