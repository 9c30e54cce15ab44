"""Singular bases: orthonormality, storage choice, ranks input forms, randomized SVD, errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _helpers.linalg import matrix_with_spectrum
from tolerances import assert_close

import asvd_jax as aj


def _orthonormal(cols):
    cols = np.asarray(cols, np.float64)
    assert_close(cols.T @ cols, np.eye(cols.shape[1]), "float32")


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("shape,k", [((20, 12), 3), ((20, 12), 10), ((12, 20), 9), ((16, 16), 5)])
def test_stored_bases_orthonormal_and_smaller(seed, shape, k):
    rng = np.random.default_rng(seed)
    m, n = shape
    r = min(m, n)
    params = {"w": jnp.asarray(matrix_with_spectrum(rng, m, n), jnp.float32)}
    b = aj.compute_bases(params, {"w": k}, aj.select_targets(params))["w"]
    assert b.input.dtype == jnp.float32 and b.output.dtype == jnp.float32
    _orthonormal(b.input)
    _orthonormal(b.output)
    for side, dim, comp in ((b.input, m, b.input_is_complement),
                            (b.output, n, b.output_is_complement)):
        # Complement only on a complete side, and only when narrower than the basis.
        assert comp == (dim == r and r - k < k)
        assert side.shape == (dim, r - k if comp else k)


def test_protected_columns_are_top_singular_vectors():
    rng = np.random.default_rng(7)
    w = matrix_with_spectrum(rng, 15, 10)
    params = {"w": jnp.asarray(w, jnp.float32)}
    b = aj.compute_bases(params, {"w": 4}, aj.select_targets(params))["w"]
    a, _, bt = np.linalg.svd(w)
    # Compare projectors (signs of singular vectors are arbitrary).
    p = np.asarray(b.input, np.float64)
    assert_close(p @ p.T, a[:, :4] @ a[:, :4].T, "float32")
    q = np.asarray(b.output, np.float64)
    assert_close(q @ q.T, bt[:4].T @ bt[:4], "float32")


def test_bf16_params_give_float32_bases():
    rng = np.random.default_rng(1)
    params = {"w": jnp.asarray(rng.normal(size=(8, 6)), jnp.bfloat16)}
    b = aj.compute_bases(params, {"w": 2}, aj.select_targets(params))["w"]
    assert b.input.dtype == jnp.float32
    _orthonormal(b.input)


def test_stacked_zero_padding_and_extremes():
    rng = np.random.default_rng(2)
    w = np.stack([matrix_with_spectrum(rng, 10, 6) for _ in range(3)])
    params = {"w": jnp.asarray(w, jnp.float32)}
    t = aj.select_targets(params, batch_axes=1)
    b = aj.compute_bases(params, {"w": [1, 6, 3]}, t)["w"]
    # Output side (dim 6 = r) stores complements padded to the widest, 6 - 1 = 5 columns.
    assert b.output_is_complement and b.output.shape == (3, 6, 5)
    assert not b.input_is_complement and b.input.shape == (3, 10, 6)
    np.testing.assert_array_equal(b.output[1], 0.0)  # k = r: empty complement, all padding
    np.testing.assert_array_equal(b.input[0, :, 1:], 0.0)  # k = 1 padded to 6 columns
    zero = aj.compute_bases(params, {"w": 0}, t)["w"]
    assert zero.input.shape == (3, 10, 0) and zero.output.shape == (3, 6, 0)
    full = aj.compute_bases(params, {"w": 6}, t)["w"]
    assert full.output_is_complement and full.output.shape == (3, 6, 0)


def test_ranks_as_mapping_or_pytree_and_nnx_state():
    rng = np.random.default_rng(3)
    params = {"a": {"kernel": jnp.asarray(rng.normal(size=(6, 4)), jnp.float32),
                    "bias": jnp.zeros(4)}}
    t = aj.select_targets(params)
    from_map = aj.compute_bases(params, {"a/kernel": 2}, t)
    from_tree = aj.compute_bases(params, {"a": {"kernel": 2, "bias": None}}, t)
    np.testing.assert_array_equal(from_map["a"]["kernel"].input, from_tree["a"]["kernel"].input)
    nnx = pytest.importorskip("flax.nnx")
    state = nnx.state(nnx.Linear(6, 4, rngs=nnx.Rngs(0)), nnx.Param)
    b = aj.compute_bases(state, {"kernel": 3}, aj.select_targets(state))
    leaves = jax.tree.leaves(b, is_leaf=lambda x: isinstance(x, aj.SubspaceBasis))
    assert [type(x).__name__ for x in leaves] == ["SubspaceBasis"]


def test_rank_errors_name_the_path():
    params = {"a": {"kernel": jnp.ones((6, 4))}, "b": {"kernel": jnp.ones((2, 5, 3))}}
    t = aj.select_targets(params, specs={"b/": aj.MatrixSpec((-2,), (-1,))})
    with pytest.raises(ValueError, match="a/kernel.*out of range"):
        aj.compute_bases(params, {"a/kernel": 5, "b/kernel": 1}, t)
    with pytest.raises(ValueError, match="a/kernel.*out of range"):
        aj.compute_bases(params, {"a/kernel": -1, "b/kernel": 1}, t)
    with pytest.raises(ValueError, match="b/kernel.*3 ranks"):
        aj.compute_bases(params, {"a/kernel": 1, "b/kernel": [1, 2, 3]}, t)
    with pytest.raises(ValueError, match="non-target.*c/kernel"):
        aj.compute_bases(params, {"a/kernel": 1, "b/kernel": 1, "c/kernel": 1}, t)
    with pytest.raises(ValueError, match="no rank.*b/kernel"):
        aj.compute_bases(params, {"a/kernel": 1}, t)
    with pytest.raises(TypeError, match="a/kernel"):
        aj.compute_bases(params, {"a/kernel": 1.5, "b/kernel": 1}, t)
    with pytest.raises(ValueError, match="method"):
        aj.compute_bases(params, {"a/kernel": 1, "b/kernel": 1}, t, method="qr")
    ints = {"a": {"kernel": jnp.ones((6, 4), jnp.int32)}}
    t_int = {"a": {"kernel": aj.MatrixSpec((0,), (1,))}}
    with pytest.raises(TypeError, match="a/kernel.*floating"):
        aj.compute_bases(ints, {"a/kernel": 1}, t_int)


def _max_principal_sine(p, q):
    """sin of the largest principal angle between the column spans of p and q."""
    qp, _ = np.linalg.qr(p)
    qq, _ = np.linalg.qr(q)
    cos = np.linalg.svd(qp.T @ qq, compute_uv=False)
    return float(np.sqrt(max(0.0, 1.0 - cos.min() ** 2)))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_randomized_subspace_error(seed):
    rng = np.random.default_rng(seed)
    m, n, k = 120, 80, 8
    w = matrix_with_spectrum(rng, m, n, decay=0.8)
    params = {"w": jnp.asarray(w, jnp.float32)}
    t = aj.select_targets(params)
    b = aj.compute_bases(params, {"w": k}, t, method="randomized", seed=seed)["w"]
    a, _, bt = np.linalg.svd(w)
    sin_in = _max_principal_sine(np.asarray(b.input, np.float64), a[:, :k])
    sin_out = _max_principal_sine(np.asarray(b.output, np.float64), bt[:k].T)
    # Range-finder bound with 10 oversampling columns and 2 power iterations on a 0.8-decay
    # spectrum: (s_{k+p}/s_k)^(2q+1) = 0.8^50 ~ 1e-5; float32 rounding dominates.
    assert sin_in < 1e-3 and sin_out < 1e-3, (sin_in, sin_out)
    _orthonormal(b.input)
    # Without power iterations the error is visibly larger: the test can tell them apart.
    b0 = aj.compute_bases(params, {"w": k}, t, method="randomized", power_iters=0,
                          oversample=2, seed=seed)["w"]
    assert _max_principal_sine(np.asarray(b0.input, np.float64), a[:, :k]) > 10 * sin_in


def test_randomized_complement_storage():
    rng = np.random.default_rng(4)
    w = matrix_with_spectrum(rng, 30, 20, decay=0.7)
    params = {"w": jnp.asarray(w, jnp.float32)}
    t = aj.select_targets(params)
    b = aj.compute_bases(params, {"w": 15}, t, method="randomized")["w"]
    assert b.output_is_complement and b.output.shape == (20, 5)
    _orthonormal(b.output)
    _, _, bt = np.linalg.svd(w)
    c = np.asarray(b.output, np.float64)
    assert_close(c @ c.T, np.eye(20) - bt[:15].T @ bt[:15], "float32", scale=1.0)


@pytest.mark.parametrize("method", ["exact", "randomized"])
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_weight_raises_naming_the_path(method, bad):
    rng = np.random.default_rng(3)
    w = matrix_with_spectrum(rng, 10, 6)
    w[4, 2] = bad
    params = {"ok": {"kernel": jnp.asarray(matrix_with_spectrum(rng, 6, 6), jnp.float32)},
              "mlp": {"kernel": jnp.asarray(w, jnp.float32)}}
    t = aj.select_targets(params)
    with pytest.raises(ValueError, match=r"mlp/kernel: weight has 1 non-finite value"):
        aj.compute_bases(params, {"ok/kernel": 2, "mlp/kernel": 2}, t, method=method)
    # Rank 0 needs no SVD but the weight is still bad: same error.
    with pytest.raises(ValueError, match=r"mlp/kernel"):
        aj.compute_bases(params, {"ok/kernel": 2, "mlp/kernel": 0}, t, method=method)
