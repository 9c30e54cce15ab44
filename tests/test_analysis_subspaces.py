"""Principal angles, overlap and per-direction output norms against constructed cases."""

import numpy as np
import pytest
import scipy.linalg
from tolerances import assert_close

from asvd_jax.analysis import output_norm_per_direction, principal_angles, subspace_overlap

SEEDS = [0, 1, 2, 3]


def _orthogonal(rng, n):
    q, _ = np.linalg.qr(rng.standard_normal((n, n)))
    return q


def _pair_with_angles(rng, n, thetas, extra_b=0):
    """Spanning sets (not orthonormal) of two subspaces whose principal angles are ``thetas``.

    span(a) = span(e_1..e_p); span(b) = span(cos t_i e_i + sin t_i e_{p+i}) plus ``extra_b``
    directions orthogonal to span(a), all rotated by one random orthogonal matrix.
    """
    p = len(thetas)
    e = np.eye(n)
    a = e[:, :p]
    b = np.stack([np.cos(t) * e[:, i] + np.sin(t) * e[:, p + i] for i, t in enumerate(thetas)], 1)
    if extra_b:
        b = np.concatenate([b, e[:, 2 * p: 2 * p + extra_b]], 1)
    r = _orthogonal(rng, n)
    # Mix the columns with invertible matrices: the spans, hence the angles, do not change.
    mix_a = rng.standard_normal((p, p)) + 3 * np.eye(p)
    mix_b = rng.standard_normal((b.shape[1], b.shape[1])) + 3 * np.eye(b.shape[1])
    return r @ a @ mix_a, r @ b @ mix_b


@pytest.mark.parametrize("seed", SEEDS)
def test_principal_angles_of_constructed_subspaces(seed):
    rng = np.random.default_rng(seed)
    thetas = np.array([1e-7, 0.2, np.pi / 4, 1.3, np.pi / 2])
    a, b = _pair_with_angles(rng, 14, thetas, extra_b=2)
    got = principal_angles(a, b)
    assert got.shape == (5,)
    # Tiny angles are exact only through the sine: arccos alone would be off by ~1e-8.
    assert_close(got, thetas, "float64")
    assert_close(principal_angles(b, a), thetas, "float64")
    assert_close(subspace_overlap(a, b), np.mean(np.cos(thetas) ** 2), "float64")


@pytest.mark.parametrize("seed", SEEDS)
def test_principal_angles_match_scipy_on_random_subspaces(seed):
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((20, 6))
    b = rng.standard_normal((20, 4))
    ref = np.sort(scipy.linalg.subspace_angles(a, b))
    assert_close(principal_angles(a, b), ref, "float64")


def test_principal_angles_special_cases():
    rng = np.random.default_rng(5)
    a = rng.standard_normal((9, 3))
    assert_close(principal_angles(a, a @ rng.standard_normal((3, 3))), np.zeros(3), "float64", scale=1.0)
    assert subspace_overlap(a, a[:, :2]) == pytest.approx(1.0, rel=1e-12)
    e = np.eye(6)
    assert_close(principal_angles(e[:, :2], e[:, 2:5]), np.full(2, np.pi / 2), "float64")
    assert subspace_overlap(e[:, :2], e[:, 2:5]) == pytest.approx(0.0, abs=1e-15)
    # dependent columns: the span has dimension 2, so 2 angles
    dup = np.concatenate([e[:, :2], e[:, :1] + e[:, 1:2]], 1)
    assert principal_angles(dup, e[:, :4]).shape == (2,)
    assert principal_angles(np.zeros((6, 0)), e).shape == (0,)
    assert subspace_overlap(np.zeros((6, 0)), e) == 0.0
    with pytest.raises(ValueError, match="different spaces"):
        principal_angles(e[:, :2], np.eye(5)[:, :2])


def _reference_norms(kernel, tokens):
    """Per direction, the actual output vectors x_t @ (s_i a_i b_i^T) and their norms."""
    a, s, bt = np.linalg.svd(kernel, full_matrices=False)
    rms, mean = [], []
    for i in range(len(s)):
        out = tokens @ (s[i] * np.outer(a[:, i], bt[i]))  # (tokens, d_out)
        norms = np.linalg.norm(out, axis=1)
        rms.append(np.sqrt(np.mean(norms**2)))
        mean.append(np.mean(norms))
    return s, np.array(rms), np.array(mean)


@pytest.mark.parametrize("seed", SEEDS)
def test_output_norm_per_direction_matches_rank_one_outputs(seed):
    rng = np.random.default_rng(seed)
    d_in, d_out = (7, 4) if seed % 2 else (4, 7)
    kernel = rng.standard_normal((d_in, d_out))
    inputs = rng.standard_normal((3, 5, d_in))
    mask = rng.random((3, 5)) < 0.7
    mask[0, 0] = True
    tokens = inputs[mask]
    s_ref, rms_ref, mean_ref = _reference_norms(kernel, tokens)

    s, rms = output_norm_per_direction(kernel, inputs, mask=mask)
    assert_close(s, s_ref, "float64", scale=s_ref[0])
    assert_close(rms, rms_ref, "float64", scale=rms_ref.max())
    _, mean = output_norm_per_direction(kernel, inputs, mask=mask, reduce="mean")
    assert_close(mean, mean_ref, "float64", scale=mean_ref.max())

    # Masked tokens do not count, whatever they hold.
    poisoned = np.where(mask[..., None], inputs, 1e6)
    assert_close(output_norm_per_direction(kernel, poisoned, mask=mask)[1], rms_ref, "float64",
                 scale=rms_ref.max())
    # The second moment of the tokens gives the same rms.
    c = tokens.T @ tokens / len(tokens)
    assert_close(output_norm_per_direction(kernel, second_moment=c)[1], rms_ref, "float64",
                 scale=rms_ref.max())
    # The directions' outputs are orthogonal, so their energies add up to the layer's.
    total = np.mean(np.linalg.norm(tokens @ kernel, axis=1) ** 2)
    assert_close(np.sum(rms**2), total, "float64")


def test_output_norm_per_direction_rejects_bad_input():
    k = np.ones((4, 3))
    with pytest.raises(ValueError, match="exactly one"):
        output_norm_per_direction(k)
    with pytest.raises(ValueError, match="d_in 4"):
        output_norm_per_direction(k, np.ones((2, 5)))
    with pytest.raises(ValueError, match="mask shape"):
        output_norm_per_direction(k, np.ones((2, 3, 4)), mask=np.ones((2, 2), bool))
    with pytest.raises(ValueError, match="no tokens"):
        output_norm_per_direction(k, np.ones((2, 4)), mask=np.zeros(2, bool))
    with pytest.raises(ValueError, match="reduce"):
        output_norm_per_direction(k, np.ones((2, 4)), reduce="max")
    with pytest.raises(ValueError, match="rms"):
        output_norm_per_direction(k, second_moment=np.eye(4), reduce="mean")


@pytest.mark.parametrize("seed", [0, 1])
def test_output_norms_from_rank_statistics_agree_with_activations(seed):
    import jax.numpy as jnp

    from asvd_jax.analysis import output_norm_from_statistics
    from asvd_jax.ranks._stats import collect_statistics

    rng = np.random.default_rng(seed)
    kernel = rng.standard_normal((6, 4)).astype(np.float32)
    inputs = rng.standard_normal((2, 5, 6)).astype(np.float32)
    mask = (rng.random((2, 5)) < 0.8).astype(np.float32)
    mask[0, 0] = 1.0

    def capture_fn(params, batch):
        return {"w/kernel": batch["x"]}, batch["mask"]

    params = {"w": {"kernel": jnp.asarray(kernel)}}
    stats = collect_statistics(capture_fn, params, [{"x": inputs, "mask": mask}], ["w/kernel"])
    for reduce in ("mean", "rms"):
        s, norms = output_norm_from_statistics(stats["w/kernel"], reduce)
        s_ref, ref = output_norm_per_direction(kernel, inputs, mask=mask.astype(bool), reduce=reduce)
        assert_close(s, s_ref, "float32", scale=s_ref[0])
        assert_close(norms, ref, "float32", scale=ref.max())
    with pytest.raises(TypeError, match="output_norm"):
        output_norm_from_statistics(object())
