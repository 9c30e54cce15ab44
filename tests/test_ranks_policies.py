"""Rank policies: paper math, clamping, extremes, progressive, uniform, energy, overrides."""

import math

import numpy as np
import pytest
from _helpers.ranks import DIMS, make_stats
from tolerances import assert_close

from asvd_jax.ranks import (
    BudgetPolicy,
    EnergyPolicy,
    Override,
    PaperPolicy,
    ProgressivePolicy,
    UniformPolicy,
    plan_ranks,
)
from asvd_jax.ranks._stats import MatrixStatistics

SEEDS = (0, 1, 2, 3)


@pytest.mark.parametrize("seed", SEEDS)
def test_paper_mean_fraction_is_trr_without_clamping(seed):
    rng = np.random.default_rng(seed)
    stats = make_stats(rng)
    mrr, trr = float(rng.uniform(0.05, 0.2)), float(rng.uniform(0.5, 0.8))
    policy = PaperPolicy(mrr=mrr, trr=trr)
    fr = policy.fractions(stats)
    # float64 reference: I_n = I / mean(I), r = mrr + I_n (trr - mrr), k = floor(r d).
    cos = np.array([stats[p].cos_truncate for p, *_ in DIMS], np.float64)
    ref = mrr + cos / cos.mean() * (trr - mrr)
    got = np.array([fr[p] for p, *_ in DIMS])
    assert np.all(ref <= 1.0), "test data must need no clamping"
    assert_close(got, ref, "float64")
    assert_close(got.mean(), trr, "float64")
    ks = policy.protected_ranks(stats)
    for (path, d_in, d_out), r in zip(DIMS, ref):
        assert int(ks[path]) == math.floor(r * min(d_in, d_out))
    realised = np.mean([int(ks[p]) / min(a, b) for p, a, b in DIMS])
    assert abs(realised - trr) <= 1.0 / min(min(a, b) for _, a, b in DIMS)


@pytest.mark.parametrize("seed", SEEDS)
def test_paper_polar_mode_uses_polar_cosine_only_for_non_square(seed):
    rng = np.random.default_rng(seed)
    stats = make_stats(rng)
    fr = PaperPolicy(nonsquare="polar").fractions(stats)
    imp = np.array([stats[p].cos_truncate if a == b else stats[p].cos_polar for p, a, b in DIMS])
    ref = 0.1 + imp / imp.mean() * 0.7
    assert_close(np.array([fr[p] for p, *_ in DIMS]), ref, "float64")


@pytest.mark.parametrize("seed", SEEDS)
def test_k_always_within_bounds_with_clamping_and_negative_cosines(seed):
    rng = np.random.default_rng(seed)
    stats = make_stats(rng, cos_low=-1.0, cos_high=1.0, stack=(3,))
    # One matrix far more important than the rest: its fraction exceeds 1 and is clamped.
    first = DIMS[0][0]
    stats[first] = MatrixStatistics(**{**stats[first].__dict__, "cos_truncate": np.full(3, 50.0)})
    for policy in (PaperPolicy(), PaperPolicy(mrr=0.0, trr=1.0), PaperPolicy(nonsquare="polar"),
                   UniformPolicy(float(rng.uniform())), EnergyPolicy(float(rng.uniform())),
                   ProgressivePolicy(int(rng.integers(1, 6)), 5)):
        plan = plan_ranks(stats, policy)
        for e, (_, a, b) in zip(plan.entries, DIMS):
            assert all(0 <= k <= min(a, b) for k in e.k), (policy, e)
    ks = PaperPolicy().protected_ranks(stats)
    assert np.all(ks[first] == min(DIMS[0][1], DIMS[0][2]))
    # Negative cosines are clipped to 0 importance: those matrices get mrr exactly.
    fr = PaperPolicy().fractions(stats)
    for p, *_ in DIMS:
        neg = stats[p].cos_truncate < 0
        assert_close(fr[p][neg], np.full(neg.sum(), 0.1), "float64")


def test_paper_refuses_all_zero_importance():
    stats = make_stats(np.random.default_rng(0), cos_low=-0.9, cos_high=-0.1)
    with pytest.raises(ValueError, match="cannot be normalised"):
        PaperPolicy().fractions(stats)


def test_zero_and_full_rank_are_expressible():
    stats = make_stats(np.random.default_rng(0), stack=(2,))
    for policy, want in ((UniformPolicy(0.0), 0), (ProgressivePolicy(1, 4), 0), (EnergyPolicy(0.0), 0),
                         (UniformPolicy(1.0), None)):
        for e in plan_ranks(stats, policy).entries:
            assert e.k == ((want,) * 2 if want is not None else (e.min_dim,) * 2)
    plan = plan_ranks(stats, PaperPolicy(), [Override("q_proj", k=0), Override("mlp", protected_fraction=1.0)])
    for e in plan.entries:
        want = 0 if "q_proj" in e.path else e.min_dim if "mlp" in e.path else None
        if want is not None:
            assert e.k == (want, want) and e.protected_fraction == (want / e.min_dim,) * 2
    # k larger than min dim means frozen.
    plan = plan_ranks(stats, UniformPolicy(0.5), [Override("k_proj", k=10**6)])
    assert plan.ranks()["layers/0/attn/k_proj/kernel"] == (16, 16)


@pytest.mark.parametrize("seed", SEEDS)
def test_overrides_win_first_match(seed):
    rng = np.random.default_rng(seed)
    stats = make_stats(rng)
    f1, f2 = float(rng.uniform()), float(rng.uniform())
    overrides = [Override(r"layers/1/.*q_proj", protected_fraction=f1), Override("q_proj", protected_fraction=f2)]
    base = PaperPolicy().protected_ranks(stats)
    plan = plan_ranks(stats, PaperPolicy(), overrides)
    for path, a, b in DIMS:
        d = min(a, b)
        want = math.floor(f1 * d) if path.startswith("layers/1/attn/q") else (
            math.floor(f2 * d) if "q_proj" in path else int(base[path]))
        assert plan.ranks()[path] == want, path
    with pytest.raises(ValueError, match=r"\['v_proj'\] match no target"):
        plan_ranks(stats, PaperPolicy(), [Override("v_proj", k=1)])


@pytest.mark.parametrize("seed", SEEDS)
def test_progressive_and_uniform_match_floor(seed):
    rng = np.random.default_rng(seed)
    stats = make_stats(rng)
    T = int(rng.integers(2, 16))
    frac = float(rng.uniform())
    for t in range(1, T + 1):
        ks = ProgressivePolicy(t, T).protected_ranks(stats)
        for p, a, b in DIMS:
            assert int(ks[p]) == ((t - 1) * min(a, b)) // T
    ks = UniformPolicy(frac).protected_ranks(stats)
    for p, a, b in DIMS:
        assert int(ks[p]) == math.floor(frac * min(a, b))
    # Exact products must not floor one below (0.29 * 100 = 28.999... in binary floats).
    one = make_stats(rng, dims=[("w", 100, 100)])
    assert int(UniformPolicy(0.29).protected_ranks(one)["w"]) == 29


@pytest.mark.parametrize("seed", SEEDS)
def test_energy_policy_is_smallest_k_reaching_tau(seed):
    rng = np.random.default_rng(seed)
    stats = make_stats(rng, stack=(2,))
    tau = float(rng.uniform(0.2, 0.95))
    ks = EnergyPolicy(tau).protected_ranks(stats)
    for p, a, b in DIMS:
        st = stats[p]
        for i in range(2):
            e = np.asarray(st.input_energy[i], np.float64)
            total = float(st.total_energy[i])
            k_ref = next((k for k in range(len(e) + 1) if e[:k].sum() / total >= tau), len(e))
            assert int(ks[p][i]) == k_ref, (p, i)
    # Unreachable tau (energy outside the row space): everything protected.
    assert np.all(EnergyPolicy(1.0).protected_ranks(stats)[DIMS[1][0]] == 16)


def test_bad_policy_settings_raise():
    with pytest.raises(ValueError, match="PaperPolicy.trr"):
        PaperPolicy(trr=1.5)
    with pytest.raises(ValueError, match="PaperPolicy.nonsquare"):
        PaperPolicy(nonsquare="pad")
    with pytest.raises(ValueError, match="task must be an int in"):
        ProgressivePolicy(0, 3)
    with pytest.raises(ValueError, match="EnergyPolicy.tau"):
        EnergyPolicy(-0.1)
    with pytest.raises(ValueError, match="exactly one of"):
        Override("q", k=1, protected_fraction=0.5)
    with pytest.raises(ValueError, match="not a valid regex"):
        Override("(", k=1)
    with pytest.raises(TypeError, match="expected Override"):
        plan_ranks(make_stats(np.random.default_rng(0)), PaperPolicy(), [("q", 1)])


def test_budget_policy_hand_computed():
    # Four matrices of importance 0, 1, 1, 2 (mean 1): paper fractions with mrr 0.1, trr 0.7
    # are 0.1, 0.7, 0.7, 1.3 -> clamped mean (0.1 + 0.7 + 0.7 + 1.0) / 4 = 0.625 < 0.7.
    # Budget: 0.1 + 0.6 s I clamped at 1 must average 0.7; with the last at 1:
    # (0.1 + 2 (0.1 + 0.6 s) + 1) / 4 = 0.7 -> s = 1.25, giving 0.85 for the middle two.
    dims = [(f"layers/{i}/q_proj/kernel", 100, 100) for i in range(4)]
    stats = make_stats(np.random.default_rng(0), dims=dims)
    for (p, *_), c in zip(dims, (0.0, 0.5, 0.5, 1.0)):
        stats[p] = MatrixStatistics(**{**stats[p].__dict__, "cos_truncate": np.asarray(c)})
    paper = PaperPolicy(trr=0.7).fractions(stats)
    assert_close(np.clip([paper[p] for p, *_ in dims], 0, 1).mean(), 0.625, "float64")
    fr = BudgetPolicy(trr=0.7).fractions(stats)
    assert_close(np.array([fr[p] for p, *_ in dims]), np.array([0.1, 0.85, 0.85, 1.0]), "float64")
    plan = plan_ranks(stats, BudgetPolicy(trr=0.7))
    assert [e.k for e in plan.entries] == [10, 85, 85, 100]
    b = plan.budget()
    assert b["requested"] == 0.7 and b["frozen"] == 1 and b["matrices"] == 4
    assert_close(b["realised"], 0.7, "float64")
    paper_plan = plan_ranks(stats, PaperPolicy(trr=0.7))
    pb = paper_plan.budget()
    assert pb["requested"] == 0.7 and pb["frozen"] == 1
    assert_close(pb["realised"], 0.625, "float64")
    assert "realised mean protected fraction 0.625 (requested trr 0.700)" in paper_plan.table()
    # The importance-0 matrix stays at mrr, so trr 0.8 needs (0.8 * 4 - 0.1) / 3 > 1 elsewhere.
    with pytest.raises(ValueError, match="out of reach"):
        BudgetPolicy(trr=0.8).fractions(stats)
    # A cap: nothing frozen; (0.1 + 3 x) / 4 = 0.7 -> every important matrix at x = 0.9.
    fr = BudgetPolicy(trr=0.7, max_fraction=0.9).fractions(stats)
    assert_close(np.array([fr[p] for p, *_ in dims]), np.array([0.1, 0.9, 0.9, 0.9]), "float64")
    assert plan_ranks(stats, BudgetPolicy(trr=0.7, max_fraction=0.9)).budget()["frozen"] == 0


@pytest.mark.parametrize("seed", SEEDS)
def test_budget_policy_realised_mean_is_the_budget(seed):
    rng = np.random.default_rng(seed)
    stats = make_stats(rng, cos_low=0.0, cos_high=1.0, stack=(3,))
    first = DIMS[0][0]
    stats[first] = MatrixStatistics(**{**stats[first].__dict__, "cos_truncate": np.full(3, 20.0)})
    trr = float(rng.uniform(0.4, 0.8))
    fr = BudgetPolicy(mrr=0.1, trr=trr).fractions(stats)
    flat = np.concatenate([v.ravel() for v in fr.values()])
    assert flat.max() <= 1.0 and flat.min() >= 0.0
    assert_close(flat.mean(), trr, "float64")
    plan = plan_ranks(stats, BudgetPolicy(mrr=0.1, trr=trr))
    # Flooring k = floor(r min_dim) loses less than 1 / min_dim per matrix.
    assert 0 <= trr - plan.budget()["realised"] < 1.0 / min(min(a, b) for _, a, b in DIMS)
    # Without clamping it is the paper policy.
    calm = make_stats(rng)
    a, b = BudgetPolicy().fractions(calm), PaperPolicy().fractions(calm)
    for p in a:
        assert_close(a[p], b[p], "float64")
    with pytest.raises(ValueError, match="mrr <= trr <= max_fraction"):
        BudgetPolicy(trr=0.8, max_fraction=0.5)
