"""Activation statistics: float64 references, constructed layers, padding, streaming."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from tolerances import assert_close

from asvd_jax import MatrixSpec, weight_svds
from asvd_jax.ranks import collect_statistics
from asvd_jax.ranks._stats import StatisticsState, _targets, _zero_sums, make_accumulate

SEEDS = (0, 1, 2)
SHAPES = {"sq/kernel": (7, 7), "tall/kernel": (9, 4), "wide/kernel": (4, 9)}


def _params(rng):
    return {name.split("/")[0]: {"kernel": jnp.asarray(rng.normal(size=shape), jnp.float32)}
            for name, shape in SHAPES.items()}


def _capture(params, batch):
    # Each layer sees its own slice of the input stream (first d_in features).
    acts = {p: batch["x"][..., : SHAPES[p][0]] for p in SHAPES}
    return acts, batch["mask"]


def _reference(x, kernel, svd):
    """float64 statistics of tokens x (T, d_in) through kernel (d_in, d_out), given the SVD."""
    x = np.asarray(x, np.float64)
    k = np.asarray(kernel, np.float64)
    vec = np.asarray(svd.input, np.float64)
    s = np.asarray(svd.singular_values, np.float64)
    y = x @ k
    m = min(k.shape)
    cos_t = np.sum(x[:, :m] * y[:, :m], 1) / (np.linalg.norm(x[:, :m], axis=1) * np.linalg.norm(y[:, :m], axis=1))
    z = x @ vec
    px = (z * s) @ vec.T  # x P with P = I diag(s) I^T
    cos_p = np.sum(x * px, 1) / (np.linalg.norm(x, axis=1) * np.linalg.norm(px, axis=1))
    return dict(
        cos_truncate=cos_t.mean(),
        cos_polar=cos_p.mean(),
        input_energy=(z**2).mean(0),
        total_energy=(x**2).sum(1).mean(),
        output_norm=np.abs(z * s).mean(0),
    )


def _batches(rng, n, batch=2, seq=5, d=9):
    return [{"x": jnp.asarray(rng.normal(size=(batch, seq, d)), jnp.float32),
             "mask": jnp.ones((batch, seq), jnp.int32)} for _ in range(n)]


@pytest.mark.parametrize("seed", SEEDS)
def test_statistics_match_float64_reference(seed):
    rng = np.random.default_rng(seed)
    params = _params(rng)
    batches = _batches(rng, 3)
    svds = weight_svds(params, list(SHAPES))
    stats = collect_statistics(_capture, params, batches, list(SHAPES), svds=svds)
    assert list(stats) == list(SHAPES)
    for path, (d_in, d_out) in SHAPES.items():
        x = np.concatenate([np.asarray(b["x"]).reshape(-1, 9)[:, :d_in] for b in batches])
        ref = _reference(x, params[path.split("/")[0]]["kernel"], svds[path])
        st = stats[path]
        assert st.tokens == x.shape[0] and st.min_dim == min(d_in, d_out)
        for name, want in ref.items():
            assert_close(getattr(st, name), want, "float32", err_msg=f"{path} {name}")


@pytest.mark.parametrize("seed", SEEDS)
def test_weight_svds_reconstruct_the_kernel(seed):
    rng = np.random.default_rng(seed)
    params = _params(rng)
    for path, svd in weight_svds(params, list(SHAPES)).items():
        k = np.asarray(params[path.split("/")[0]]["kernel"], np.float64)
        inp, s, out = (np.asarray(a, np.float64) for a in svd)
        r = min(k.shape)
        assert inp.shape == (k.shape[0], r) and out.shape == (k.shape[1], r)
        assert np.all(np.diff(s) <= 0)
        assert_close(inp @ np.diag(s) @ out.T, k, "float32", scale=np.abs(k).max())
        assert_close(inp.T @ inp, np.eye(r), "float32", scale=1.0)


def _orthogonal(rng, n):
    q, r = np.linalg.qr(rng.normal(size=(n, n)))
    return q * np.sign(np.diag(r))


@pytest.mark.parametrize("seed", SEEDS)
def test_constructed_layers_give_known_cosines_and_energies(seed):
    """K = A diag(s) B^T with chosen A, B, s; tokens are multiples of chosen input directions."""
    rng = np.random.default_rng(seed)
    d = 6
    a, b = _orthogonal(rng, d), _orthogonal(rng, d)
    s = np.array([5.0, 4.0, 3.0, 2.0, 1.0, 0.5])
    c = float(rng.uniform(0.5, 2.0))
    kernels = {
        "scaled_identity/kernel": c * np.eye(d),  # cos 1
        "negated/kernel": -c * np.eye(d),  # cos -1
        "quarter_turn/kernel": np.kron(np.eye(d // 2), np.array([[0.0, 1.0], [-1.0, 0.0]])),  # cos 0
        "designed/kernel": a @ np.diag(s) @ b.T,
    }
    params = {p.split("/")[0]: {"kernel": jnp.asarray(k, jnp.float32)} for p, k in kernels.items()}
    # Tokens: scale_t * a_j for j cycling over the first three input directions.
    scales = rng.uniform(0.5, 3.0, size=12)
    idx = np.arange(12) % 3
    x = (scales[:, None] * a[:, idx].T).reshape(2, 6, d)

    def capture(p, batch):
        return {path: batch for path in kernels}, jnp.ones((2, 6))

    stats = collect_statistics(capture, params, [jnp.asarray(x, jnp.float32)], list(kernels))
    assert_close(stats["scaled_identity/kernel"].cos_truncate, 1.0, "float32")
    assert_close(stats["negated/kernel"].cos_truncate, -1.0, "float32")
    assert_close(stats["quarter_turn/kernel"].cos_truncate, 0.0, "float32", scale=1.0)
    st = stats["designed/kernel"]
    # Energy and output norm along input direction j: only j in {0, 1, 2} see tokens.
    want_energy = np.array([np.mean(np.where(idx == j, scales**2, 0.0)) for j in range(d)])
    want_norm = np.array([np.mean(np.where(idx == j, s[j] * scales, 0.0)) for j in range(d)])
    assert_close(st.input_energy, want_energy, "float32", scale=want_energy.max())
    assert_close(st.output_norm, want_norm, "float32", scale=want_norm.max())
    assert_close(st.total_energy, np.mean(scales**2), "float32")
    assert_close(st.energy_retained()[..., 3], 1.0, "float32")
    # For a token along one input direction, x P = s_j x: the polar cosine is exactly 1.
    assert_close(st.cos_polar, 1.0, "float32")


@pytest.mark.parametrize("seed", SEEDS)
def test_polar_cosine_is_basis_free_and_truncation_is_not(seed):
    """Rotating the output space (K -> K R) leaves the polar cosine unchanged."""
    rng = np.random.default_rng(seed)
    k = rng.normal(size=(8, 5))
    rot = _orthogonal(rng, 5)
    params = {"a": {"kernel": jnp.asarray(k, jnp.float32)}, "b": {"kernel": jnp.asarray(k @ rot, jnp.float32)}}
    x = jnp.asarray(rng.normal(size=(3, 7, 8)), jnp.float32)

    def capture(p, batch):
        return {"a/kernel": batch, "b/kernel": batch}, jnp.ones((3, 7))

    stats = collect_statistics(capture, params, [x], ["a/kernel", "b/kernel"])
    assert_close(stats["b/kernel"].cos_polar, stats["a/kernel"].cos_polar, "float32")
    assert abs(stats["b/kernel"].cos_truncate - stats["a/kernel"].cos_truncate) > 1e-3
    # An input outside the row space (d_in > d_out) is partly discarded: polar cosine < 1.
    assert 0.0 < stats["a/kernel"].cos_polar < 1.0


@pytest.mark.parametrize("seed", SEEDS)
def test_padding_changes_nothing(seed):
    rng = np.random.default_rng(seed)
    params = _params(rng)
    real = rng.normal(size=(2, 5, 9))
    plain = [{"x": jnp.asarray(real, jnp.float32), "mask": jnp.ones((2, 5))}]
    # Same tokens, row 0 left-padded by 3, row 1 right-padded by 3; padding holds garbage.
    padded = rng.normal(size=(2, 8, 9)) * 1e3
    padded[0, 3:], padded[1, :5] = real[0], real[1]
    mask = np.zeros((2, 8))
    mask[0, 3:], mask[1, :5] = 1, 1
    padded[1, 6] = np.nan  # even NaN in a padded slot must not leak
    pad = [{"x": jnp.asarray(padded, jnp.float32), "mask": jnp.asarray(mask)}]
    a = collect_statistics(_capture, params, plain, list(SHAPES))
    b = collect_statistics(_capture, params, pad, list(SHAPES))
    for path in SHAPES:
        assert a[path].tokens == b[path].tokens == 10
        for name in ("cos_truncate", "cos_polar", "input_energy", "total_energy", "output_norm"):
            assert_close(getattr(b[path], name), getattr(a[path], name), "float32", err_msg=f"{path} {name}")


@pytest.mark.parametrize("seed", SEEDS)
def test_n_batches_equal_one_batch_and_compile_once(seed):
    rng = np.random.default_rng(seed)
    params = _params(rng)
    parts = _batches(rng, 4)
    whole = [{"x": jnp.concatenate([b["x"] for b in parts]), "mask": jnp.ones((8, 5))}]
    a = collect_statistics(_capture, params, parts, list(SHAPES))
    b = collect_statistics(_capture, params, whole, list(SHAPES))
    for path in SHAPES:
        for name in ("cos_truncate", "cos_polar", "input_energy", "total_energy", "output_norm"):
            assert_close(getattr(a[path], name), getattr(b[path], name), "float32", err_msg=f"{path} {name}")

    traces = []

    def counting(p, batch):
        traces.append(1)
        return _capture(p, batch)

    layouts = _targets(params, list(SHAPES))
    step = make_accumulate(counting, layouts)
    svds = weight_svds(params, list(SHAPES))
    kernels = {p: params[p.split("/")[0]]["kernel"] for p in SHAPES}
    state = StatisticsState(jnp.zeros((), jnp.int32), {p: _zero_sums(l) for p, l in layouts.items()})
    shapes0 = [x.shape for x in jax.tree.leaves(state)]
    for batch in parts:
        state = step(state, params, kernels, svds, batch)
    assert len(traces) == 1, "the step must compile once for a fixed batch shape"
    assert [x.shape for x in jax.tree.leaves(state)] == shapes0, "state must not grow with batches"
    assert int(state.tokens) == 40


@pytest.mark.parametrize("seed", SEEDS)
def test_stacked_and_multi_axis_targets(seed):
    """A (layers, in, out) stack and a (heads, head_dim, out) kernel with two input axes."""
    rng = np.random.default_rng(seed)
    stack = rng.normal(size=(3, 6, 4))
    heads = rng.normal(size=(2, 3, 5))
    params = {"stack": jnp.asarray(stack, jnp.float32), "heads": jnp.asarray(heads, jnp.float32)}
    targets = {"stack": MatrixSpec((1,), (2,)), "heads": MatrixSpec((0, 1), (2,))}
    xs = rng.normal(size=(3, 2, 4, 6))  # (layers, batch, seq, d_in)
    xh = rng.normal(size=(2, 4, 2, 3))  # (batch, seq, heads, head_dim)

    def capture(p, batch):
        return {"stack": batch[0], "heads": batch[1]}, jnp.ones((2, 4))

    svds = weight_svds(params, targets)
    stats = collect_statistics(capture, params, [(jnp.asarray(xs, jnp.float32), jnp.asarray(xh, jnp.float32))],
                               targets, svds=svds)
    st = stats["stack"]
    assert st.stack_shape == (3,) and st.cos_truncate.shape == (3,) and st.input_energy.shape == (3, 4)
    for layer in range(3):
        one = type(svds["stack"])(*(a[layer] for a in svds["stack"]))
        ref = _reference(xs[layer].reshape(-1, 6), stack[layer], one)
        for name, want in ref.items():
            assert_close(getattr(st, name)[layer], want, "float32", err_msg=f"layer {layer} {name}")
    ref = _reference(xh.reshape(-1, 6), heads.reshape(6, 5), svds["heads"])
    for name, want in ref.items():
        assert_close(getattr(stats["heads"], name), want, "float32", err_msg=f"heads {name}")


def test_bad_inputs_raise_clear_errors():
    rng = np.random.default_rng(0)
    params = _params(rng)
    batches = _batches(rng, 1)
    with pytest.raises(ValueError, match="no parameter at path 'nope/kernel'"):
        collect_statistics(_capture, params, batches, ["nope/kernel"])

    def missing(p, b):
        acts, mask = _capture(p, b)
        del acts["tall/kernel"]
        return acts, mask

    with pytest.raises(ValueError, match="tall/kernel"):
        collect_statistics(missing, params, batches, list(SHAPES))

    def wrong_shape(p, b):
        return {"sq/kernel": b["x"]}, b["mask"]

    with pytest.raises(ValueError, match=r"'sq/kernel' have shape \(2, 5, 9\), expected \(2, 5, 7\)"):
        collect_statistics(wrong_shape, params, batches, ["sq/kernel"])
    empty = [{"x": b["x"], "mask": jnp.zeros((2, 5))} for b in batches]
    with pytest.raises(ValueError, match="no unmasked tokens"):
        collect_statistics(_capture, params, empty, list(SHAPES))
    with pytest.raises(ValueError, match="sq/kernel.*axis 2 out of range"):
        collect_statistics(_capture, params, batches, {"sq/kernel": MatrixSpec((0,), (2,))})
    with pytest.raises(TypeError, match="got a str"):
        collect_statistics(_capture, params, batches, "sq/kernel")
