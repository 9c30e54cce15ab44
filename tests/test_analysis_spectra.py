"""Singular spectra, effective / stable / energy rank, spectra_table: float64 references."""

import numpy as np
import pytest
from scipy.stats import entropy
from tolerances import assert_close

from asvd_jax.analysis import (
    effective_rank,
    energy_rank,
    singular_spectrum,
    spectra_table,
    stable_rank,
)

SEEDS = [0, 1, 2, 3]


def _orthogonal(rng, n, k):
    q, _ = np.linalg.qr(rng.standard_normal((n, k)))
    return q


def _with_spectrum(rng, d_in, d_out, s):
    """A (d_in, d_out) matrix whose singular values are exactly ``s`` (descending)."""
    m = len(s)
    return _orthogonal(rng, d_in, m) @ np.diag(s) @ _orthogonal(rng, d_out, m).T


@pytest.mark.parametrize("seed", SEEDS)
def test_singular_spectrum_recovers_constructed_values(seed):
    rng = np.random.default_rng(seed)
    d_in, d_out = rng.integers(3, 12, size=2)
    s = np.sort(rng.uniform(0.01, 5.0, size=min(d_in, d_out)))[::-1]
    w = _with_spectrum(rng, d_in, d_out, s)
    got = singular_spectrum(w)
    assert got.dtype == np.float64 and got.shape == s.shape
    assert_close(got, s, "float64", scale=s[0])
    # The layout does not matter for singular values.
    assert_close(singular_spectrum(w.T), s, "float64", scale=s[0])


@pytest.mark.parametrize("seed", SEEDS)
def test_singular_spectrum_groups_axes_with_a_spec(seed):
    from asvd_jax._targets import MatrixSpec

    rng = np.random.default_rng(seed)
    leaf = rng.standard_normal((3, 4, 2, 5))  # batch 3, in 4, out (2, 5)
    got = singular_spectrum(leaf, MatrixSpec(in_axes=(1,), out_axes=(2, 3)))
    assert got.shape == (3, 4)
    for b in range(3):
        ref = np.linalg.svd(leaf[b].reshape(4, 10), compute_uv=False)
        assert_close(got[b], ref, "float64", scale=ref[0])
    # in axes after out axes: batch axis in the middle
    got2 = singular_spectrum(leaf, MatrixSpec(in_axes=(3,), out_axes=(0,)))
    assert got2.shape == (4, 2, 3)
    ref2 = np.linalg.svd(leaf[:, 1, 0, :].T, compute_uv=False)
    assert_close(got2[1, 0], ref2, "float64", scale=ref2[0])


def test_singular_spectrum_rejects_bad_input():
    with pytest.raises(ValueError, match="MatrixSpec"):
        singular_spectrum(np.zeros((2, 3, 4)))
    with pytest.raises(ValueError, match="NaN"):
        singular_spectrum(np.array([[1.0, np.nan], [0.0, 1.0]]))


@pytest.mark.parametrize("seed", SEEDS)
def test_effective_rank_is_exp_entropy_of_normalised_spectrum(seed):
    rng = np.random.default_rng(seed)
    s = np.sort(rng.exponential(size=17))[::-1]
    assert_close(effective_rank(s), np.exp(entropy(s / s.sum())), "float64")
    # batched over the leading axis
    batch = rng.exponential(size=(4, 9))
    ref = [np.exp(entropy(row / row.sum())) for row in batch]
    assert_close(effective_rank(batch), ref, "float64")


def test_effective_rank_known_cases():
    assert_close(effective_rank(np.full(7, 2.5)), 7.0, "float64")
    assert_close(effective_rank(np.array([3.0, 0.0, 0.0])), 1.0, "float64")
    # zeros carry no mass: two equal non-zero values -> 2
    assert_close(effective_rank(np.array([1.0, 1.0, 0.0, 0.0])), 2.0, "float64")
    assert effective_rank(np.zeros(4)) == 0.0
    with pytest.raises(ValueError, match=">= 0"):
        effective_rank(np.array([1.0, -0.5]))


@pytest.mark.parametrize("seed", SEEDS)
def test_stable_rank_is_frobenius_over_spectral_norm(seed):
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((6, 11))
    ref = np.linalg.norm(w, "fro") ** 2 / np.linalg.norm(w, 2) ** 2
    assert_close(stable_rank(singular_spectrum(w)), ref, "float64")
    assert 1.0 <= stable_rank(singular_spectrum(w)) <= 6.0
    assert stable_rank(np.zeros(3)) == 0.0


@pytest.mark.parametrize("seed", SEEDS)
def test_energy_rank_matches_brute_force(seed):
    rng = np.random.default_rng(seed)
    s = np.sort(rng.exponential(size=20))[::-1]
    for tau in (0.0, 0.3, 0.5, 0.9, 0.99, 1.0):
        ref = next(k for k in range(0, 21) if (s[:k] ** 2).sum() >= tau * (s**2).sum() - 1e-15)
        assert energy_rank(s, tau) == ref, tau
    with pytest.raises(ValueError, match="tau"):
        energy_rank(s, 1.5)


def test_spectra_table_selects_and_reads_targets():
    from asvd_jax._targets import MatrixSpec

    rng = np.random.default_rng(7)
    params = {
        "layers": {
            "0": {"q": {"kernel": rng.standard_normal((8, 6))}, "norm": {"scale": np.ones(8)}},
            "1": {"q": {"kernel": rng.standard_normal((8, 6))}, "norm": {"scale": np.ones(8)}},
        },
        "stacked": {"kernel": rng.standard_normal((3, 6, 8))},
    }
    # None: every floating 2-D leaf
    table = spectra_table(params)
    assert sorted(table) == ["layers/0/q/kernel", "layers/1/q/kernel"]
    row = table["layers/1/q/kernel"]
    assert (row.d_in, row.d_out, row.min_dim) == (8, 6, 6)
    ref = np.linalg.svd(params["layers"]["1"]["q"]["kernel"], compute_uv=False)
    assert_close(row.singular_values, ref, "float64", scale=ref[0])
    assert_close(row.effective_rank, np.exp(entropy(ref / ref.sum())), "float64")

    # a {path: spec} mapping, including a stacked leaf
    table = spectra_table(params, {"stacked/kernel": MatrixSpec((1,), (2,)), "layers/0/q/kernel": None})
    st = table["stacked/kernel"]
    assert st.singular_values.shape == (3, 6) and np.shape(st.stable_rank) == (3,)
    for b in range(3):
        ref = np.linalg.svd(params["stacked"]["kernel"][b], compute_uv=False)
        assert_close(st.singular_values[b], ref, "float64", scale=ref[0])

    # a targets pytree (spec at targets, None elsewhere)
    targets = {
        "layers": {
            "0": {"q": {"kernel": MatrixSpec()}, "norm": {"scale": None}},
            "1": {"q": {"kernel": None}, "norm": {"scale": None}},
        },
        "stacked": {"kernel": None},
    }
    assert list(spectra_table(params, targets)) == ["layers/0/q/kernel"]

    with pytest.raises(ValueError, match="layers/9/q/kernel"):
        spectra_table(params, {"layers/9/q/kernel": None})
    with pytest.raises(ValueError, match="stacked/kernel"):
        spectra_table(params, {"stacked/kernel": None})
