"""Protected-subspace analysis against float64 SVD references on constructed weights."""

import numpy as np
import pytest
from tolerances import assert_close

from asvd_jax._bases import compute_bases
from asvd_jax._targets import MatrixSpec
from asvd_jax.analysis import (
    principal_angles,
    protected_columns,
    protected_subspace_angles,
    protected_subspace_overlap,
    weight_change_in_protected,
)

SEEDS = [0, 1, 2]


def _orth(rng, n, k):
    return np.linalg.qr(rng.standard_normal((n, k)))[0]


def _separated(rng, m, n):
    """An (m, n) matrix with well-separated singular values, so float32 SVDs are accurate."""
    r = min(m, n)
    s = 2.0 ** -np.arange(r) * 10 + np.linspace(1, 0.1, r)
    return _orth(rng, m, r) @ np.diag(s) @ _orth(rng, n, r).T


def _params(rng):
    return {
        "a": {"kernel": _separated(rng, 12, 8).astype(np.float32)},
        "s": {"kernel": np.stack([_separated(rng, 8, 6) for _ in range(3)]).astype(np.float32)},
    }


TARGETS = {"a": {"kernel": MatrixSpec()}, "s": {"kernel": MatrixSpec()}}
# k = 6 of 8 makes the complete output side of "a" store its complement; the stack mixes
# k = 0 (nothing protected), 2 and 6 = min dim (frozen, empty complement).
RANKS = {"a/kernel": 6, "s/kernel": [0, 2, 6]}


def _top(w, k):
    a, _, bt = np.linalg.svd(np.asarray(w, np.float64))
    return a[:, :k], bt.T[:, :k]


@pytest.mark.parametrize("seed", SEEDS)
def test_protected_columns_span_top_singular_vectors(seed):
    rng = np.random.default_rng(seed)
    params = _params(rng)
    bases = compute_bases(params, RANKS, TARGETS)
    assert bases["a"]["kernel"].output_is_complement  # the case under test
    ref_in, ref_out = _top(params["a"]["kernel"], 6)
    for side, ref in (("input", ref_in), ("output", ref_out)):
        (q,) = protected_columns(bases["a"]["kernel"], side)
        assert q.shape[1] == 6
        assert_close(principal_angles(q, ref), np.zeros(6), "float32", scale=1.0)
    stack = bases["s"]["kernel"]
    for side in ("input", "output"):
        cols = protected_columns(stack, side)
        assert [c.shape[1] for c in cols] == [0, 2, 6]
        for b, k in ((1, 2), (2, 6)):
            ref = _top(params["s"]["kernel"][b], k)[0 if side == "input" else 1]
            assert_close(principal_angles(cols[b], ref), np.zeros(k), "float32", scale=1.0)
    with pytest.raises(ValueError, match="side"):
        protected_columns(stack, "left")


@pytest.mark.parametrize("seed", SEEDS)
def test_angles_between_tasks_match_float64_reference(seed):
    rng = np.random.default_rng(seed)
    before = _params(rng)
    after = {k: {"kernel": v["kernel"] + 0.05 * rng.standard_normal(v["kernel"].shape).astype(np.float32)}
             for k, v in before.items()}
    b0, b1 = compute_bases(before, RANKS, TARGETS), compute_bases(after, RANKS, TARGETS)
    angles = protected_subspace_angles(b0, b1, side="output")
    ref = principal_angles(_top(before["a"]["kernel"], 6)[1], _top(after["a"]["kernel"], 6)[1])
    assert angles["a/kernel"].shape == (6,)
    assert_close(angles["a/kernel"], ref, "float32", scale=1.0)
    st = angles["s/kernel"]
    assert st.shape == (3, 6)
    assert np.isnan(st[0]).all() and np.isnan(st[1, 2:]).all()
    ref1 = principal_angles(_top(before["s"]["kernel"][1], 2)[1], _top(after["s"]["kernel"][1], 2)[1])
    assert_close(st[1, :2], ref1, "float32", scale=1.0)
    # k = min dim on both: the whole space, all angles 0
    assert_close(st[2], np.zeros(6), "float32", scale=1.0)

    overlap = protected_subspace_overlap(b0, b1, side="output")
    assert_close(overlap["a/kernel"], np.mean(np.cos(ref) ** 2), "float32")
    assert overlap["s/kernel"][0] == 0.0
    assert_close(overlap["s/kernel"][2], 1.0, "float32")


def test_angles_reject_mismatched_trees():
    rng = np.random.default_rng(0)
    b = compute_bases(_params(rng), RANKS, TARGETS)
    other = {"a": b["a"], "s": {"kernel": None}}
    with pytest.raises(ValueError, match="s/kernel"):
        protected_subspace_angles(b, other)


@pytest.mark.parametrize("seed", SEEDS)
def test_weight_change_in_protected_matches_float64_projector(seed):
    rng = np.random.default_rng(seed)
    params = _params(rng)
    bases = compute_bases(params, RANKS, TARGETS)
    delta = {k: {"kernel": rng.standard_normal(v["kernel"].shape).astype(np.float32)}
             for k, v in params.items()}
    got = weight_change_in_protected(delta, bases)

    def strict_fraction(d, w, k):
        a, b = _top(w, k)
        d = np.asarray(d, np.float64)
        allowed = (np.eye(len(a)) - a @ a.T) @ d @ (np.eye(len(b)) - b @ b.T)
        return np.linalg.norm(d - allowed) / np.linalg.norm(d)

    assert_close(got["a/kernel"], strict_fraction(delta["a"]["kernel"], params["a"]["kernel"], 6), "float32")
    ref = [strict_fraction(delta["s"]["kernel"][b], params["s"]["kernel"][b], k)
           for b, k in enumerate(RANKS["s/kernel"])]
    assert got["s/kernel"].shape == (3,)
    assert_close(got["s/kernel"], ref, "float32")
    assert ref[0] == 0.0 and ref[2] == pytest.approx(1.0)

    # input-only mode: the fraction of the update in span(A_k) on the input side
    a, _ = _top(params["a"]["kernel"], 6)
    d = np.asarray(delta["a"]["kernel"], np.float64)
    got_in = weight_change_in_protected(delta, bases, mode="input")["a/kernel"]
    assert_close(got_in, np.linalg.norm(a @ a.T @ d) / np.linalg.norm(d), "float32")

    # a change that was projected already has (to float32 rounding) nothing protected
    from asvd_jax._projection import project_tree

    clean = project_tree(delta, bases)
    fractions = weight_change_in_protected(clean, bases)
    assert fractions["a/kernel"] < 1e-5
    assert fractions["s/kernel"][0] == 0.0 and fractions["s/kernel"][1] < 1e-5
    # (index 2 is frozen: its projected change is float32 rounding, of any direction)
