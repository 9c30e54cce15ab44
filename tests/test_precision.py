"""Precision and layout of the projection: bf16 training (float32 master weights), the matmul
precision option, batched projection of same-shaped matrices, and the fixed basis layout.

Every leakage here is measured against a float64 numpy SVD of the starting weights, never
with ``aj.protected_leakage`` (which runs the projection under test).
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from _helpers.linalg import matrix_with_spectrum, reference_leakage, reference_projection
from _helpers.mlp import RANKS, mlp, mlp_loss, run
from tolerances import assert_close

import asvd_jax as aj


def drift(p, p0, path):
    sub, leaf = path.split("/")
    w0 = np.asarray(p0[sub][leaf], np.float64)
    delta = np.asarray(p[sub][leaf], np.float64) - w0
    return reference_leakage(w0, delta, RANKS[path])


@pytest.mark.parametrize("seed", [0, 1])
def test_bf16_compute_on_float32_master_stays_exact_for_1000_steps(seed):
    params, x, y = mlp(seed)
    bases = aj.compute_bases(params, RANKS, aj.select_targets(params))
    tx = aj.with_projection(optax.adamw(1e-2, weight_decay=0.1), bases)
    loss = mlp_loss(jnp.bfloat16)
    p, _ = run(params, tx, loss, x, y, 1000)
    assert all(v.dtype == jnp.float32 for v in jax.tree.leaves(p))
    for path in RANKS:
        assert drift(p, params, path) < 1e-5, path
        # The change is substantial (not a trivially small delta).
        sub = path.split("/")[0]
        change = np.linalg.norm(np.asarray(p[sub]["kernel"]) - np.asarray(params[sub]["kernel"]))
        assert change > 0.1 * np.linalg.norm(np.asarray(params[sub]["kernel"]))
    assert float(loss(p, x, y)) < 0.8 * float(loss(params, x, y))


def test_wider_mlp_drift_stays_below_float32_svd_error_after_1000_steps():
    """64-128-32, half of each matrix protected: with bases orthonormal only to the float32
    SVD's ~1e-6 the protected share grew to 1.4e-5 of W_t - W_0 by step 1000; stored bases
    are re-orthonormalised in float64, and the share stays at the float32 SVD's own subspace
    error (~1.7e-6 against float64 SVD(W_0) subspaces)."""
    seed = int(np.random.default_rng().integers(1 << 30))
    params, x, y = mlp(seed, d_in=64, hidden=128, d_out=32, rows=256)
    ranks = {"up/kernel": 32, "down/kernel": 16}
    bases = aj.compute_bases(params, ranks, aj.select_targets(params))
    tx = aj.with_projection(optax.adamw(1e-2, weight_decay=0.1), bases)
    p, _ = run(params, tx, mlp_loss(jnp.bfloat16), x, y, 1000)
    for path, k in ranks.items():
        sub, leaf = path.split("/")
        w0 = np.asarray(params[sub][leaf], np.float64)
        share = reference_leakage(w0, np.asarray(p[sub][leaf], np.float64) - w0, k)
        assert share < 5e-6, (path, share, seed)


@pytest.mark.parametrize("method", ["exact", "randomized"])
@pytest.mark.parametrize("shape,k", [((48, 48), 12), ((48, 48), 40), ((40, 96), 30)])
def test_stored_bases_are_orthonormal_to_float32_rounding(method, shape, k):
    """Basis and complement columns, exact and randomized: |B^T B - I| at float32 rounding
    (a float32 SVD alone gives ~1e-6, which the projection turns into a steady leak)."""
    rng = np.random.default_rng()
    w = jnp.asarray(matrix_with_spectrum(rng, *shape), jnp.float32)
    params = {"w": w}
    if method == "randomized" and k > min(shape) // 2:
        pytest.skip("the range finder is for small k")
    basis = aj.compute_bases(params, {"w": k}, aj.select_targets(params), method=method)["w"]
    for cols, dim in ((basis.input, shape[0]), (basis.output, shape[1])):
        b = np.asarray(cols, np.float64)
        assert b.shape[0] == dim and b.shape[1] > 0
        assert np.abs(b.T @ b - np.eye(b.shape[1])).max() < 2e-7


def test_bf16_target_params_raise_pointing_to_float32_master():
    params, x, y = mlp(2)
    bases = aj.compute_bases(params, RANKS, aj.select_targets(params))
    bf16 = jax.tree.map(lambda a: a.astype(jnp.bfloat16), params)
    tx = aj.with_projection(optax.adamw(1e-2), bases)
    with pytest.raises(TypeError, match="down/kernel: target params are bfloat16.*float32 master"):
        tx.init(bf16)
    with pytest.raises(TypeError, match="float32 master"):
        aj.project_out_protected(bases).init(
            jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, jnp.float16), params))
    # No bases at init: the check happens when the step is traced with bf16 params.
    tx = aj.with_projection(optax.adamw(1e-2))
    state = aj.set_bases(tx.init(bf16), bases)
    grads = jax.grad(mlp_loss(jnp.bfloat16))(bf16, x, y)
    with pytest.raises(TypeError, match="down/kernel|up/kernel"):
        jax.jit(tx.update)(grads, state, bf16)
    # bf16 non-targets (biases) are fine.
    mixed = dict(bf16, up=dict(params["up"], bias=bf16["up"]["bias"]),
                 down=dict(params["down"], bias=bf16["down"]["bias"]))
    aj.with_projection(optax.adamw(1e-2), bases).init(mixed)


def _bf16_params_projected_last(bases):
    """The pre-guard behaviour: adamw then the projection, applied to bf16 params."""
    def update_fn(updates, state, params=None):
        return aj.project_tree(updates, bases), state
    return optax.chain(optax.adamw(1e-2, weight_decay=0.1),
                       optax.GradientTransformation(lambda p: optax.EmptyState(), update_fn))


def test_why_bf16_params_are_refused_the_leak_grows_with_steps():
    params, x, y = mlp(3)
    bases = aj.compute_bases(params, RANKS, aj.select_targets(params))
    bf16 = jax.tree.map(lambda a: a.astype(jnp.bfloat16), params)
    tx = _bf16_params_projected_last(bases)
    w0 = jax.tree.map(lambda a: a.astype(jnp.float32), bf16)
    leaks = []
    for steps in (10, 1000):
        p, _ = run(bf16, tx, mlp_loss(jnp.bfloat16), x, y, steps)
        leaks.append(drift(jax.tree.map(lambda a: a.astype(jnp.float32), p), w0, "up/kernel"))
    assert leaks[0] > 1e-3 and leaks[1] > 3 * leaks[0], leaks


@pytest.mark.parametrize("precision", ["highest", "high", "default"])
def test_precision_option_matches_reference_on_this_backend(precision):
    rng = np.random.default_rng(4)
    w = matrix_with_spectrum(rng, 24, 16)
    g = rng.normal(size=(24, 16))
    params = {"w": jnp.asarray(w, jnp.float32)}
    bases = aj.compute_bases(params, {"w": 6}, aj.select_targets(params))
    got = jax.jit(aj.project_tree, static_argnums=(2, 3))({"w": jnp.asarray(g, jnp.float32)},
                                                         bases, "strict", precision)["w"]
    want = reference_projection(w, g, 6, "strict")
    if jax.default_backend() == "cpu" or precision == "highest":
        assert_close(got, want, "float32", scale=np.abs(g).max())
    else:  # tf32 / bf16 passes on accelerators: bounded by bf16 rounding
        assert_close(got, want, "bfloat16", scale=np.abs(g).max())
    with pytest.raises(ValueError, match="precision"):
        aj.project_out_protected(bases, precision="fast")


def test_grouped_projection_matches_reference_per_matrix():
    """Same-shaped leaves (2-D, stacked, DenseGeneral, both storage forms) projected as stacks."""
    rng = np.random.default_rng(5)
    m, n = 12, 8
    flat = {f"l{i}": matrix_with_spectrum(rng, m, n) for i in range(3)}
    stack = np.stack([matrix_with_spectrum(rng, m, n) for _ in range(2)])
    general = matrix_with_spectrum(rng, m, n)  # viewed as (12, 2, 4) with in (0,), out (1, 2)
    params = {**{k: jnp.asarray(v, jnp.float32) for k, v in flat.items()},
              "stack": jnp.asarray(stack, jnp.float32),
              "general": jnp.asarray(general.reshape(m, 2, 4), jnp.float32),
              "other": jnp.asarray(matrix_with_spectrum(rng, 8, 8), jnp.float32)}
    targets = aj.select_targets(params, specs={"stack": aj.MatrixSpec((1,), (2,)),
                                                "general": aj.MatrixSpec((0,), (1, 2))})
    # l0 and l1 share a layout, l2 has another rank (another width), stack has two ranks.
    ranks = {"l0": 3, "l1": 3, "l2": 7, "stack": [3, 2], "general": 3, "other": 5}
    bases = aj.compute_bases(params, ranks, targets)
    grads = {k: rng.normal(size=v.shape) for k, v in params.items()}
    g32 = {k: jnp.asarray(v, jnp.float32) for k, v in grads.items()}
    for mode in aj.MODES:
        grouped = jax.jit(aj.project_tree, static_argnums=(2, 3, 4))(g32, bases, mode,
                                                                      "highest", True)
        single = aj.project_tree(g32, bases, mode, group_shapes=False)
        for name, w in {**flat, "other": np.asarray(params["other"], np.float64)}.items():
            want = reference_projection(w, grads[name], ranks[name], mode)
            assert_close(grouped[name], want, "float32", scale=np.abs(grads[name]).max(),
                         err_msg=f"{mode} {name}")
            assert_close(single[name], want, "float32", scale=np.abs(grads[name]).max())
        for i in range(2):
            want = reference_projection(stack[i], grads["stack"][i], ranks["stack"][i], mode)
            assert_close(grouped["stack"][i], want, "float32", scale=3.0, err_msg=mode)
        want = reference_projection(general, grads["general"].reshape(m, n), 3, mode)
        assert_close(np.asarray(grouped["general"]).reshape(m, n), want, "float32", scale=3.0)


def test_fixed_layout_keeps_shapes_so_a_rank_change_does_not_retrace():
    params, x, y = mlp(6)
    targets = aj.select_targets(params)
    loss = mlp_loss(jnp.float32)
    layout = (0.1, 0.8)
    first = {"up/kernel": 2, "down/kernel": 6}
    second = {"up/kernel": 12, "down/kernel": 1}
    for fixed, expected_traces in ((layout, 1), (None, 2)):
        bases = aj.compute_bases(params, first, targets, fixed_layout=fixed)
        tx = aj.with_projection(optax.adamw(1e-2, weight_decay=0.1), bases)
        traces = []

        @jax.jit
        def step(p, s, tx=tx, traces=traces):
            traces.append(1)
            u, s = tx.update(jax.grad(loss)(p, x, y), s, p)
            return optax.apply_updates(p, u), s

        p, s = params, tx.init(params)
        for _ in range(20):
            p, s = step(p, s)
        start = p
        # Bases of the well-conditioned starting weights (float32 and float64 SVDs agree on
        # their subspaces), as if the task boundary had kept them; only the ranks change.
        new = aj.compute_bases(params, second, targets, fixed_layout=fixed)
        s = aj.set_bases(s, new)
        for _ in range(50):
            p, s = step(p, s)
        assert len(traces) == expected_traces, fixed
        for path, k in second.items():
            sub = path.split("/")[0]
            delta = (np.asarray(p[sub]["kernel"], np.float64)
                     - np.asarray(start[sub]["kernel"], np.float64))
            assert reference_leakage(params[sub]["kernel"], delta, k) < 1e-5, (fixed, path)
    # up/kernel is 16 x 32 (r = 16): basis widths ceil(0.8 r) = 13 on the incomplete side,
    # complement r - floor(0.1 r) = 15 vs basis 13 on the complete side: the basis.
    b = aj.compute_bases(params, first, targets, fixed_layout=layout)["up"]["kernel"]
    assert b.input.shape == (16, 13) and b.output.shape == (32, 13)
    with pytest.raises(ValueError, match=r"up/kernel: rank\(s\) \[14\] outside"):
        aj.compute_bases(params, {"up/kernel": 14, "down/kernel": 2}, targets,
                         fixed_layout=layout)
    with pytest.raises(ValueError, match="fixed_layout"):
        aj.compute_bases(params, first, targets, fixed_layout=(0.5, 0.2))


def test_reorthonormalize_keeps_the_span_of_columns_far_from_orthonormal():
    """The QR branch (columns not from an SVD): orthonormal, same span, signs kept."""
    from asvd_jax._bases import _reorthonormalize

    rng = np.random.default_rng()
    cols = rng.normal(size=(30, 7)).astype(np.float32)
    q = np.asarray(_reorthonormalize(jnp.asarray(cols)), np.float64)
    assert np.abs(q.T @ q - np.eye(7)).max() < 2e-7
    c = cols.astype(np.float64)
    assert np.linalg.norm(c - q @ (q.T @ c)) < 1e-5 * np.linalg.norm(c)
    assert np.all(np.sum(q * c, axis=0) > 0)  # each column keeps its direction
    assert _reorthonormalize(jnp.zeros((30, 0))).shape == (30, 0)
