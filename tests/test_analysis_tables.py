"""Layer grids of per-matrix numbers and rank plans across tasks."""

import json

import numpy as np
import pytest

from asvd_jax.analysis import layer_grid, plan_grid, plan_values, plans_over_tasks, split_path
from asvd_jax.ranks import RankEntry, RankPlan


def test_split_path():
    assert split_path("layers/3/attn/q_proj/kernel") == (3, "attn/q_proj")
    assert split_path("model/layers/12/mlp/down_proj/weight") == (12, "mlp/down_proj")
    assert split_path("layers/attn/q_proj/kernel") == (None, "layers/attn/q_proj")
    assert split_path("blocks/0/kernel") == (0, "blocks")


def test_layer_grid_places_values_and_marks_gaps():
    rng = np.random.default_rng(0)
    vals = {f"layers/{i}/attn/q_proj/kernel": rng.random() for i in (0, 1, 3)}
    vals.update({f"layers/{i}/mlp/up_proj/kernel": rng.random() for i in (1, 3)})
    g = layer_grid(vals)
    assert g.layers == (0, 1, 3) and g.kinds == ("attn/q_proj", "mlp/up_proj")
    for path, v in vals.items():
        layer, kind = split_path(path)
        assert g.values[g.layers.index(layer), g.kinds.index(kind)] == v
    assert np.isnan(g.values[0, 1])
    assert g.kind_means()["mlp/up_proj"] == pytest.approx(
        np.mean([vals["layers/1/mlp/up_proj/kernel"], vals["layers/3/mlp/up_proj/kernel"]]))
    np.testing.assert_array_equal(g.column("attn/q_proj"), [vals[f"layers/{i}/attn/q_proj/kernel"] for i in (0, 1, 3)])


def test_layer_grid_reads_stacked_leaves_by_leading_axis():
    g = layer_grid({"layers/attn/q_proj/kernel": [0.1, 0.2, 0.3]})
    assert g.layers == (0, 1, 2)
    np.testing.assert_array_equal(g.values[:, 0], [0.1, 0.2, 0.3])


def test_layer_grid_errors():
    with pytest.raises(ValueError, match="lm_head"):
        layer_grid({"lm_head/kernel": 0.5})
    with pytest.raises(ValueError, match="layers/2/q/kernel"):
        layer_grid({"layers/2/q/kernel": [1.0, 2.0]})
    with pytest.raises(ValueError, match="two values"):
        layer_grid({"layers/0/q/kernel": 1.0, "layers/0/q/weight": 2.0})


def _plan(rng, n_layers=3, stacked=False):
    entries = []
    for kind, dim in (("attn/q_proj", 8), ("mlp/down_proj", 6)):
        if stacked:
            ks = tuple(int(k) for k in rng.integers(0, dim + 1, size=n_layers))
            entries.append(RankEntry(f"layers/{kind}/kernel", (n_layers, dim, dim), dim,
                                     tuple(rng.random(n_layers).tolist()), ks,
                                     tuple(k / dim for k in ks), tuple(rng.random(n_layers).tolist())))
            continue
        for i in range(n_layers):
            k = int(rng.integers(0, dim + 1))
            entries.append(RankEntry(f"layers/{i}/{kind}/kernel", (dim, dim), dim,
                                     float(rng.random()), k, k / dim, float(rng.random())))
    return RankPlan(tuple(entries), "paper", {"mrr": 0.1, "trr": 0.8})


@pytest.mark.parametrize("stacked", [False, True])
def test_plan_grid_from_plan_dict_and_json(stacked):
    rng = np.random.default_rng(1)
    plan = _plan(rng, stacked=stacked)
    g = plan_grid(plan, "k")
    for e in plan.entries:
        ks = e.k if isinstance(e.k, tuple) else (e.k,)
        layers = range(3) if isinstance(e.k, tuple) else [split_path(e.path)[0]]
        kind = split_path(e.path)[1]
        for layer, k in zip(layers, ks):
            assert g.values[g.layers.index(layer), g.kinds.index(kind)] == k
    # the saved JSON form gives the same grid
    again = plan_grid(json.loads(plan.to_json()), "k")
    np.testing.assert_array_equal(again.values, g.values)
    assert plan_values(plan, "protected_fraction") == {e.path: e.protected_fraction for e in plan.entries}
    with pytest.raises(ValueError, match="plan field"):
        plan_values(plan, "rank")
    with pytest.raises(TypeError, match="RankPlan"):
        plan_grid([1, 2, 3])


def test_plans_over_tasks_means_per_type_with_nan_for_missing_plans():
    rng = np.random.default_rng(2)
    plans = [None, _plan(rng), _plan(rng).to_dict()]
    kinds, table = plans_over_tasks(plans)
    assert kinds == ("attn/q_proj", "mlp/down_proj")
    assert table.shape == (3, 2) and np.isnan(table[0]).all()
    for t in (1, 2):
        for j, kind in enumerate(kinds):
            ref = np.mean([v for p, v in plan_values(plans[t]).items() if kind in p])
            assert table[t, j] == pytest.approx(ref, rel=1e-12)
