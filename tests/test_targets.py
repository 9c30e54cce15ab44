"""Target selection: defaults, patterns, specs, stacked and DenseGeneral leaves, errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import asvd_jax as aj


def llama_like():
    z = lambda *s: jnp.zeros(s, jnp.float32)  # noqa: E731
    layer = {"attn": {"q_proj": {"kernel": z(8, 8)}, "o_proj": {"kernel": z(8, 8)}},
             "mlp": {"up": {"kernel": z(8, 16), "bias": z(16)}, "down": {"kernel": z(16, 8)}},
             "input_norm": {"scale": z(8)}}
    return {"embed_tokens": {"embedding": z(32, 8)}, "layers": {"0": layer, "1": layer},
            "final_norm": {"scale": z(8)}, "lm_head": {"kernel": z(8, 32)},
            "step": jnp.zeros((2, 2), jnp.int32)}


def test_default_selection():
    targets = aj.select_targets(llama_like())
    paths = [p for p, _ in aj.list_targets(targets)]
    assert paths == [f"layers/{i}/{n}/kernel" for i in (0, 1)
                     for n in ("attn/o_proj", "attn/q_proj", "mlp/down", "mlp/up")]
    assert all(s == aj.MatrixSpec((0,), (1,)) for _, s in aj.list_targets(targets))
    # Same structure as params, None elsewhere.
    assert targets["lm_head"]["kernel"] is None and targets["step"] is None


def test_include_exclude_patterns():
    params = llama_like()
    t = aj.select_targets(params, include=r"attn")
    assert len(aj.list_targets(t)) == 4
    t = aj.select_targets(params, include=[r"attn", r"mlp"], exclude=[r"layers/1/", "bias"])
    assert [p for p, _ in aj.list_targets(t)] == [
        "layers/0/attn/o_proj/kernel", "layers/0/attn/q_proj/kernel",
        "layers/0/mlp/down/kernel", "layers/0/mlp/up/kernel"]
    # Heads and embeddings are a visible choice: exclude=() makes them targets.
    t = aj.select_targets(params, exclude=())
    paths = [p for p, _ in aj.list_targets(t)]
    assert "lm_head/kernel" in paths and "embed_tokens/embedding" in paths


def test_unmatched_patterns_raise():
    params = llama_like()
    with pytest.raises(ValueError, match="qkv"):
        aj.select_targets(params, include=["attn", "qkv"])
    with pytest.raises(ValueError, match="nothing_here"):
        aj.select_targets(params, exclude=["nothing_here"])
    with pytest.raises(ValueError, match="no target"):
        aj.select_targets(params, include="embed")  # matches, but every hit is excluded
    with pytest.raises(ValueError, match="nope"):
        aj.select_targets(params, specs={"nope": aj.MatrixSpec()})
    with pytest.raises(ValueError, match="bad include regex"):
        aj.select_targets(params, include="(")


def test_non_float_leaf_explicit_include_raises():
    with pytest.raises(TypeError, match="step"):
        aj.select_targets(llama_like(), include="step")


def test_stacked_and_dense_general_specs():
    params = {"layers": {"mlp": {"kernel": jnp.zeros((4, 8, 16))},
                         "attn": {"q": {"kernel": jnp.zeros((4, 8, 2, 4))},
                                  "o": {"kernel": jnp.zeros((4, 2, 4, 8))}}}}
    specs = {"attn/q": aj.MatrixSpec((1,), (2, 3)), "attn/o": aj.MatrixSpec((1, 2), (3,))}
    t = aj.select_targets(params, specs=specs, batch_axes=1)
    got = dict(aj.list_targets(t))
    assert got["layers/mlp/kernel"] == aj.MatrixSpec((1,), (2,))
    assert got["layers/attn/q/kernel"] == aj.MatrixSpec((1,), (2, 3))
    assert got["layers/attn/o/kernel"] == aj.MatrixSpec((1, 2), (3,))
    # Without a spec a 4-D leaf with one batch axis is not a matrix.
    with pytest.raises(ValueError, match="layers/attn/o/kernel"):
        aj.select_targets(params, specs={"attn/q": aj.MatrixSpec((1,), (2, 3))}, batch_axes=1)
    # Negative axes resolve per leaf: last two axes are the matrix, the rest batch.
    t = aj.select_targets(params, include="mlp", specs={"mlp": aj.MatrixSpec((-2,), (-1,))})
    assert dict(aj.list_targets(t))["layers/mlp/kernel"] == aj.MatrixSpec((1,), (2,))


def test_spec_that_does_not_fit_raises():
    params = {"w": jnp.zeros((4, 5))}
    with pytest.raises(ValueError, match="w.*out of range"):
        aj.select_targets(params, specs={"w": aj.MatrixSpec((0,), (2,))})
    with pytest.raises(ValueError, match="w.*repeats"):
        aj.select_targets(params, specs={"w": aj.MatrixSpec((0,), (-2,))})


def test_matrix_roundtrip():
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(3, 2, 4, 5)))
    spec = aj.MatrixSpec((3,), (1, 2)).resolve(4)
    mat = spec.to_matrix(x)
    assert mat.shape == (3, 5, 8)
    np.testing.assert_array_equal(mat[1], np.asarray(x[1]).reshape(8, 5).T)
    np.testing.assert_array_equal(spec.from_matrix(mat, x.shape), x)


def test_shape_dtype_struct_and_nnx_state():
    params = {"w": jax.ShapeDtypeStruct((4, 6), jnp.bfloat16), "b": jax.ShapeDtypeStruct((6,), jnp.float32)}
    assert [p for p, _ in aj.list_targets(aj.select_targets(params))] == ["w"]
    nnx = pytest.importorskip("flax.nnx")
    model = nnx.Linear(4, 3, rngs=nnx.Rngs(0))
    state = nnx.state(model, nnx.Param)
    assert [p for p, _ in aj.list_targets(aj.select_targets(state))] == ["kernel"]


def test_named_non_matrix_leaf_raises_naming_the_leaf():
    params = llama_like()
    # A pattern that spells out a vector's path.
    with pytest.raises(ValueError, match=r"layers/0/mlp/up/bias: include pattern .* not a matrix"):
        aj.select_targets(params, include=["attn", "layers/0/mlp/up/bias"], exclude=())
    # A pattern that reaches only vectors names the first one it matched.
    with pytest.raises(ValueError, match=r"layers/0/input_norm/scale: include pattern 'input_norm'"):
        aj.select_targets(params, include=["attn", "input_norm"])
    with pytest.raises(ValueError, match=r"final_norm/scale: specs pattern 'final_norm'"):
        aj.select_targets(params, specs={"final_norm": aj.MatrixSpec()})
    # Patterns that also reach matrices keep working: "mlp" matches kernels and a bias.
    t = aj.select_targets(params, include="mlp", exclude=())
    assert [p for p, _ in aj.list_targets(t)] == [
        "layers/0/mlp/down/kernel", "layers/0/mlp/up/kernel",
        "layers/1/mlp/down/kernel", "layers/1/mlp/up/kernel"]
    # A leaf with more axes than a matrix and no spec is named too.
    with pytest.raises(ValueError, match=r"conv/kernel: leaf of shape \(2, 3, 4\)"):
        aj.select_targets({"conv": {"kernel": jnp.zeros((2, 3, 4))}})
