"""Projection modes against float64 numpy references; idempotence; complement storage."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _helpers.linalg import matrix_with_spectrum, reference_projection
from tolerances import assert_close

import asvd_jax as aj
from asvd_jax._projection import MODES


SHAPES = {"tall": (24, 16), "wide": (16, 24), "square": (20, 20)}


def _bases_for(w, k):
    params = {"w": jnp.asarray(w, jnp.float32)}
    return aj.compute_bases(params, {"w": k}, aj.select_targets(params))["w"]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("shape", list(SHAPES))
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_modes_match_reference(mode, shape, seed):
    rng = np.random.default_rng(seed)
    m, n = SHAPES[shape]
    r = min(m, n)
    w = matrix_with_spectrum(rng, m, n)
    g = rng.normal(size=(m, n))
    for k in (0, r // 4, (3 * r) // 4, r):  # basis storage and complement storage
        basis = _bases_for(w, k)
        got = aj.project(jnp.asarray(g, jnp.float32), basis, mode)
        assert got.dtype == jnp.float32 and got.shape == (m, n)
        want = reference_projection(w, g, k, mode)
        assert_close(got, want, "float32", scale=np.abs(g).max(), err_msg=f"{mode} k={k}")


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("seed", [0, 1])
def test_stacked_per_layer_ranks(mode, seed):
    rng = np.random.default_rng(seed)
    layers, m, n = 3, 12, 18
    w = np.stack([matrix_with_spectrum(rng, m, n) for _ in range(layers)])
    g = rng.normal(size=(layers, m, n))
    ks = [0, 5, 12]
    params = {"w": jnp.asarray(w, jnp.float32)}
    targets = aj.select_targets(params, batch_axes=1)
    basis = aj.compute_bases(params, {"w": ks}, targets)["w"]
    got = np.asarray(aj.project(jnp.asarray(g, jnp.float32), basis, mode))
    for i, k in enumerate(ks):
        assert_close(got[i], reference_projection(w[i], g[i], k, mode), "float32",
                     scale=np.abs(g).max(), err_msg=f"layer {i}")


@pytest.mark.parametrize("seed", [0, 1])
def test_dense_general_axes(seed):
    """A 3-D (heads, head_dim, d_model) output kernel: the matrix is (heads*head_dim, d_model)."""
    rng = np.random.default_rng(seed)
    heads, hd, d = 3, 4, 10
    w = matrix_with_spectrum(rng, heads * hd, d).reshape(heads, hd, d)
    g = rng.normal(size=(heads, hd, d))
    params = {"o": {"kernel": jnp.asarray(w, jnp.float32)}}
    targets = aj.select_targets(params, specs={"o/kernel": aj.MatrixSpec((0, 1), (2,))})
    basis = aj.compute_bases(params, {"o/kernel": 6}, targets)["o"]["kernel"]
    for mode in MODES:
        got = aj.project(jnp.asarray(g, jnp.float32), basis, mode)
        want = reference_projection(w.reshape(-1, d), g.reshape(-1, d), 6, mode).reshape(g.shape)
        assert_close(got, want, "float32", scale=np.abs(g).max(), err_msg=mode)


@pytest.mark.parametrize("seed", [0, 1])
def test_out_layout_spec(seed):
    """A PyTorch-layout (out, in) weight with MatrixSpec((1,), (0,)): the sides swap."""
    rng = np.random.default_rng(seed)
    w = matrix_with_spectrum(rng, 14, 9)  # (in=14, out=9)
    g = rng.normal(size=(14, 9))
    params = {"w": jnp.asarray(w.T, jnp.float32)}
    targets = aj.select_targets(params, specs={"w": aj.MatrixSpec((1,), (0,))})
    basis = aj.compute_bases(params, {"w": 4}, targets)["w"]
    got = aj.project(jnp.asarray(g.T, jnp.float32), basis, "input")
    assert_close(got, reference_projection(w, g, 4, "input").T, "float32", scale=np.abs(g).max())


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_idempotent(mode, seed):
    rng = np.random.default_rng(seed)
    w = matrix_with_spectrum(rng, 20, 12)
    basis = _bases_for(w, 7)
    g = jnp.asarray(rng.normal(size=(20, 12)), jnp.float32)
    once = aj.project(g, basis, mode)
    twice = aj.project(once, basis, mode)
    assert_close(twice, np.asarray(once, np.float64), "float32", scale=float(jnp.abs(g).max()))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_complement_storage_equals_basis_storage(seed):
    rng = np.random.default_rng(seed)
    m, n, k = 16, 16, 12  # both sides complete; k > r/2 -> complements stored
    w = matrix_with_spectrum(rng, m, n)
    stored = _bases_for(w, k)
    assert stored.input_is_complement and stored.output_is_complement
    assert stored.input.shape == (m, m - k) and stored.output.shape == (n, n - k)
    a, _, bt = np.linalg.svd(w)
    plain = aj.SubspaceBasis(jnp.asarray(a[:, :k], jnp.float32),
                             jnp.asarray(bt[:k].T, jnp.float32), stored.spec)
    g = jnp.asarray(rng.normal(size=(m, n)), jnp.float32)
    for mode in MODES:
        assert_close(aj.project(g, stored, mode), np.asarray(aj.project(g, plain, mode)),
                     "float32", scale=float(jnp.abs(g).max()), err_msg=mode)


def test_frozen_and_free():
    rng = np.random.default_rng(0)
    w = matrix_with_spectrum(rng, 10, 6)
    g = jnp.asarray(rng.normal(size=(10, 6)), jnp.float32)
    np.testing.assert_array_equal(aj.project(g, _bases_for(w, 6), "strict"), 0.0)
    np.testing.assert_array_equal(aj.project(g, _bases_for(w, 0), "strict"), g)
    np.testing.assert_array_equal(aj.project(g, None, "strict"), g)


def test_jit_and_bf16_dtype():
    rng = np.random.default_rng(3)
    w = matrix_with_spectrum(rng, 12, 8)
    basis = _bases_for(w, 3)
    g = jnp.asarray(rng.normal(size=(12, 8)), jnp.bfloat16)
    got = jax.jit(aj.project, static_argnames="mode")(g, basis, mode="strict")
    assert got.dtype == jnp.bfloat16
    want = reference_projection(w, np.asarray(g, np.float64), 3, "strict")
    assert_close(got, want, "bfloat16", scale=float(jnp.abs(g).max()))


def test_project_tree_and_errors():
    rng = np.random.default_rng(4)
    params = {"a": {"kernel": jnp.asarray(matrix_with_spectrum(rng, 8, 6), jnp.float32),
                    "bias": jnp.zeros(6)}}
    bases = aj.compute_bases(params, {"a/kernel": 2}, aj.select_targets(params))
    upd = {"a": {"kernel": jnp.ones((8, 6)), "bias": jnp.ones(6)}}
    out = aj.project_tree(upd, bases)
    np.testing.assert_array_equal(out["a"]["bias"], 1.0)
    with pytest.raises(ValueError, match="mode"):
        aj.project_tree(upd, bases, "both")
    with pytest.raises(ValueError, match="a/kernel"):
        aj.project_tree({"a": {"kernel": jnp.ones((6, 8)), "bias": jnp.ones(6)}}, bases)
    with pytest.raises(ValueError, match="structure"):
        aj.project_tree({"a": {"kernel": jnp.ones((8, 6))}, "b": jnp.ones(2)}, bases)
    with pytest.raises(TypeError, match="a/kernel"):
        aj.project_tree({"a": {"kernel": jnp.ones((8, 6), jnp.int32), "bias": jnp.ones(6)}},
                        bases)


def test_leakage_matches_reference():
    rng = np.random.default_rng(5)
    w = matrix_with_spectrum(rng, 12, 9)
    params = {"w": jnp.asarray(w, jnp.float32)}
    bases = aj.compute_bases(params, {"w": 4}, aj.select_targets(params))
    d = rng.normal(size=(12, 9))
    for mode in MODES:
        leak = aj.protected_leakage({"w": jnp.asarray(d, jnp.float32)}, bases, mode)["w"]
        prot = d - reference_projection(w, d, 4, mode)
        assert_close(leak, np.linalg.norm(prot) / np.linalg.norm(d), "float32", err_msg=mode)
    zero = aj.protected_leakage({"w": jnp.zeros((12, 9))}, bases)["w"]
    assert float(zero) == 0.0
