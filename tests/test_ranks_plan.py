"""Rank plans: contents against the statistics, JSON round trip, atomic save, table, ranks()."""

import json
import math
import os

import numpy as np
import pytest
from _helpers.ranks import DIMS, make_stats
from tolerances import assert_close

from asvd_jax.ranks import EnergyPolicy, Override, PaperPolicy, RankPlan, UniformPolicy, plan_ranks


@pytest.mark.parametrize("seed", (0, 1, 2))
def test_plan_entries_follow_the_statistics(seed):
    rng = np.random.default_rng(seed)
    stats = make_stats(rng, cos_low=-0.2, cos_high=0.9)
    plan = plan_ranks(stats, PaperPolicy(nonsquare="polar"))
    assert plan.policy == "paper" and plan.nonsquare == "polar" and plan.tokens == 100
    assert plan.policy_params == {"mrr": 0.1, "trr": 0.8, "nonsquare": "polar", "clip_negative": True}
    for e, (path, a, b) in zip(plan.entries, DIMS):
        st = stats[path]
        assert e.path == path and e.shape == (a, b) and e.min_dim == min(a, b)
        cos = float(st.cos_truncate if a == b else st.cos_polar)
        assert_close(e.importance, max(cos, 0.0), "float64")
        assert e.protected_fraction == e.k / e.min_dim
        energy = np.asarray(st.input_energy, np.float64)[: e.k].sum() / float(st.total_energy)
        assert_close(e.energy_retained, energy, "float64", scale=1.0)


@pytest.mark.parametrize("seed", (0, 1, 2))
def test_json_round_trip_and_atomic_save(tmp_path, seed):
    rng = np.random.default_rng(seed)
    stats = make_stats(rng, stack=(3,))
    plan = plan_ranks(stats, EnergyPolicy(float(rng.uniform())), [Override("k_proj", protected_fraction=0.5)])
    assert isinstance(plan.entries[0].k, tuple) and len(plan.entries[0].k) == 3
    assert RankPlan.from_json(plan.to_json()) == plan
    path = tmp_path / "task_2" / "rank_plan.json"
    plan.save(path)
    plan.save(path)  # overwriting an existing plan is fine
    assert RankPlan.load(path) == plan
    assert os.listdir(path.parent) == ["rank_plan.json"], "no temporary file may be left behind"
    data = json.loads(path.read_text())
    assert data["overrides"] == [{"pattern": "k_proj", "protected_fraction": 0.5, "k": None}]


def test_ranks_and_table():
    stats = make_stats(np.random.default_rng(0), stack=(2,))
    plan = plan_ranks(stats, UniformPolicy(0.25))
    ranks = plan.ranks()
    assert ranks == {p: (math.floor(0.25 * min(a, b)),) * 2 for p, a, b in DIMS}
    table = plan.table()
    for p, *_ in DIMS:
        assert f"{p}[0]" in table and f"{p}[1]" in table
    assert "uniform" in table and len(table.splitlines()) == 3 + 2 * len(DIMS)
    summary = plan.summary()
    assert set(summary) == {"q_proj", "k_proj", "up_proj", "down_proj"}
    assert summary["q_proj"]["count"] == 4 and summary["down_proj"]["count"] == 4


def test_plan_feeds_compute_bases():
    core = pytest.importorskip("asvd_jax._bases")
    import jax.numpy as jnp

    from asvd_jax.ranks import collect_statistics

    rng = np.random.default_rng(0)
    params = {"a": {"kernel": jnp.asarray(rng.normal(size=(6, 4)), jnp.float32)},
              "s": {"kernel": jnp.asarray(rng.normal(size=(2, 5, 5)), jnp.float32)}}
    targets_mod = pytest.importorskip("asvd_jax._targets")
    targets = {"a": {"kernel": targets_mod.MatrixSpec((0,), (1,))},
               "s": {"kernel": targets_mod.MatrixSpec((1,), (2,))}}

    def capture(p, batch):
        return {"a/kernel": batch[..., :6], "s/kernel": jnp.stack([batch[..., :5]] * 2)}, jnp.ones((2, 3))

    stats = collect_statistics(capture, params, [jnp.asarray(rng.normal(size=(2, 3, 6)), jnp.float32)], targets)
    plan = plan_ranks(stats, PaperPolicy())
    bases = core.compute_bases(params, plan.ranks(), targets)
    assert bases["a"]["kernel"] is not None and bases["s"]["kernel"] is not None


def test_bad_plan_json_raises():
    stats = make_stats(np.random.default_rng(0))
    data = plan_ranks(stats, UniformPolicy(0.5)).to_dict()
    del data["entries"][1]["k"]
    with pytest.raises(ValueError, match=r"entries\[1\] has no key 'k'"):
        RankPlan.from_dict(data)
    with pytest.raises(ValueError, match="not valid JSON"):
        RankPlan.from_json("{", source="x.json")
    with pytest.raises(ValueError, match="format_version"):
        RankPlan.from_dict({"entries": []})


def test_numpy_override_values_serialise():
    stats = make_stats(np.random.default_rng(0))
    plan = plan_ranks(stats, UniformPolicy(np.float32(0.5)), [Override("k_proj", k=np.int64(3)),
                                                  Override("q_proj", protected_fraction=np.float32(0.25))])
    again = RankPlan.from_json(plan.to_json())
    assert again == plan and again.ranks()["layers/0/attn/k_proj/kernel"] == 3
