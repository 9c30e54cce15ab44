"""The core's one weight SVD (``weight_svds``) and bases cut from it (``compute_bases(svds=)``):
float64 references with fresh random inputs, on plain, transposed, stacked and 3-D leaves."""

import jax.numpy as jnp
import numpy as np
import pytest
from tolerances import assert_close

import asvd_jax as aj

SEEDS = (0, 1, 2)


def _spectrum_matrix(rng, m, n):
    """(m, n) float64 matrix with random orthogonal factors and singular values r, ..., 1: unit
    gaps keep float32 singular subspaces accurate to float32 tolerance."""
    r = min(m, n)
    a, _ = np.linalg.qr(rng.normal(size=(m, r)))
    b, _ = np.linalg.qr(rng.normal(size=(n, r)))
    return (a * np.arange(r, 0, -1, dtype=np.float64)) @ b.T


def _leaves(rng):
    """Params and specs: a plain kernel, a transposed (out, in) one, a (layers, in, out) stack
    and a (heads, head_dim, out) kernel with two input axes, each with its float64 matrices
    (batch, m, n)."""
    plain = _spectrum_matrix(rng, 9, 5)
    transposed = _spectrum_matrix(rng, 4, 7)  # the (in, out) matrix; stored as its transpose
    stack = np.stack([_spectrum_matrix(rng, 6, 8) for _ in range(3)])
    heads = _spectrum_matrix(rng, 6, 5)  # (2 * 3, 5), stored as (2, 3, 5)
    params = {"plain": plain, "transposed": transposed.T, "stack": stack,
              "heads": heads.reshape(2, 3, 5), "norm": np.ones(5)}
    params = {k: jnp.asarray(v, jnp.float32) for k, v in params.items()}
    targets = {"plain": aj.MatrixSpec(), "transposed": aj.MatrixSpec((1,), (0,)),
               "stack": aj.MatrixSpec((1,), (2,)), "heads": aj.MatrixSpec((0, 1), (2,)),
               "norm": None}
    mats = {"plain": plain[None], "transposed": transposed[None], "stack": stack,
            "heads": heads[None]}
    # The reference reads the float32 weights the SVD saw.
    mats = {k: np.asarray(np.asarray(v, np.float32), np.float64) for k, v in mats.items()}
    return params, targets, mats


@pytest.mark.parametrize("seed", SEEDS)
def test_weight_svds_match_float64_reference(seed):
    params, targets, mats = _leaves(np.random.default_rng(seed))
    svds = aj.weight_svds(params, targets)
    assert list(svds) == ["plain", "transposed", "stack", "heads"]
    batch = {"plain": (), "transposed": (), "stack": (3,), "heads": ()}
    for path, ref in mats.items():
        svd = svds[path]
        assert isinstance(svd, aj.MatrixSVD)
        _, m, n = ref.shape
        r = min(m, n)
        assert svd.input.shape == batch[path] + (m, r) and svd.output.shape == batch[path] + (n, r)
        assert svd.singular_values.shape == batch[path] + (r,)
        assert svd.input.dtype == jnp.float32
        a = np.asarray(svd.input, np.float64).reshape(-1, m, r)
        s = np.asarray(svd.singular_values, np.float64).reshape(-1, r)
        b = np.asarray(svd.output, np.float64).reshape(-1, n, r)
        for i, w in enumerate(ref):
            a64, s64, bt64 = np.linalg.svd(w, full_matrices=False)
            scale = s64[0]
            assert_close(s[i], s64, "float32", scale=scale, err_msg=f"{path}[{i}] values")
            assert_close((a[i] * s[i]) @ b[i].T, w, "float32", scale=scale,
                         err_msg=f"{path}[{i}] reconstruction")
            assert_close(a[i].T @ a[i], np.eye(r), "float32", err_msg=f"{path}[{i}] input")
            assert_close(b[i].T @ b[i], np.eye(r), "float32", err_msg=f"{path}[{i}] output")
            # Each singular pair up to its sign (the spectrum's unit gaps make them unique).
            sign = np.sign(np.sum(a[i] * a64, 0))
            assert_close(a[i] * sign, a64, "float32", scale=scale, err_msg=f"{path}[{i}] A")
            assert_close(b[i] * sign, bt64.T, "float32", scale=scale, err_msg=f"{path}[{i}] B")


@pytest.mark.parametrize("seed", SEEDS)
def test_bases_from_svds_match_float64_projectors_and_compute_bases(seed):
    rng = np.random.default_rng(seed)
    params, targets, mats = _leaves(rng)
    ranks = {"plain": int(rng.integers(0, 6)), "transposed": int(rng.integers(1, 5)),
             "stack": [int(k) for k in rng.integers(0, 7, size=3)],
             "heads": int(rng.integers(3, 6))}
    svds = aj.weight_svds(params, targets)
    ours = aj.compute_bases(params, ranks, targets, svds=svds)
    # Same SVD routine, same storage rule: bit-identical to the bases computed from scratch.
    core = aj.compute_bases(params, ranks, targets)
    for path in ranks:
        for side in ("input", "output"):
            np.testing.assert_array_equal(getattr(ours[path], side), getattr(core[path], side),
                                          err_msg=f"{path} {side}")
        assert ours[path].input_is_complement == core[path].input_is_complement
        assert ours[path].output_is_complement == core[path].output_is_complement
    assert ours["norm"] is None
    # The projectors against a float64 reference: the stored columns (or their complement)
    # span the top-k singular subspaces of each matrix.
    for path, ref in mats.items():
        b = ours[path]
        ks = np.broadcast_to(np.asarray(ranks[path]), ref.shape[:1])
        ins = np.asarray(b.input, np.float64).reshape(len(ref), ref.shape[1], -1)
        outs = np.asarray(b.output, np.float64).reshape(len(ref), ref.shape[2], -1)
        for i, (w, k) in enumerate(zip(ref, ks)):
            a64, _, bt64 = np.linalg.svd(w, full_matrices=False)
            for cols, vecs, comp, dim in ((ins[i], a64, b.input_is_complement, ref.shape[1]),
                                          (outs[i], bt64.T, b.output_is_complement, ref.shape[2])):
                p = cols @ cols.T
                protected = np.eye(dim) - p if comp else p
                assert_close(protected, vecs[:, :k] @ vecs[:, :k].T, "float32",
                             err_msg=f"{path}[{i}] k={k}")


def test_fixed_layout_and_extreme_ranks_from_svds():
    rng = np.random.default_rng(5)
    params, targets, _ = _leaves(rng)
    svds = aj.weight_svds(params, targets)
    for ranks in ({"plain": 0, "transposed": 4, "stack": [0, 6, 3], "heads": 5},
                  {"plain": 5, "transposed": 0, "stack": [6, 6, 6], "heads": 0}):
        for layout in (None, (0.0, 1.0)):
            got = aj.compute_bases(params, ranks, targets, svds=svds, fixed_layout=layout)
            want = aj.compute_bases(params, ranks, targets, fixed_layout=layout)
            for path in ranks:
                np.testing.assert_array_equal(got[path].input, want[path].input)
                np.testing.assert_array_equal(got[path].output, want[path].output)


def test_targets_forms_and_errors():
    rng = np.random.default_rng(6)
    params, targets, _ = _leaves(rng)
    tree = aj.weight_svds(params, aj.select_targets(params, include="plain"))
    by_path = aj.weight_svds(params, ["plain"])
    np.testing.assert_array_equal(tree["plain"].input, by_path["plain"].input)
    with pytest.raises(TypeError, match="got a str"):
        aj.weight_svds(params, "plain")
    with pytest.raises(TypeError, match=r"targets\['plain'\]: expected a MatrixSpec"):
        aj.weight_svds(params, {"plain": "in, out"})
    with pytest.raises(ValueError, match="no target matrices"):
        aj.weight_svds(params, {"plain": None})
    with pytest.raises(ValueError, match="no parameter at path 'nope'"):
        aj.weight_svds(params, ["nope"])
    bad = dict(params, plain=params["plain"].at[2, 3].set(jnp.nan))
    with pytest.raises(ValueError, match="plain: weight has 1 non-finite"):
        aj.weight_svds(bad, targets)
    svds = aj.weight_svds(params, targets)
    ranks = {"plain": 1, "transposed": 1, "stack": 1, "heads": 1}
    with pytest.raises(ValueError, match="no SVD for target 'heads'"):
        aj.compute_bases(params, ranks, targets, svds={k: v for k, v in svds.items() if k != "heads"})
    with pytest.raises(ValueError, match=r"svds\['plain'\].input: expected shape \(9, 5\)"):
        aj.compute_bases(params, ranks, targets, svds=dict(svds, plain=svds["transposed"]))
    with pytest.raises(TypeError, match="expected a MatrixSVD"):
        aj.compute_bases(params, ranks, targets, svds=dict(svds, plain=tuple(svds["plain"])))
    with pytest.raises(ValueError, match="method='exact'"):
        aj.compute_bases(params, ranks, targets, "randomized", svds=svds)
