"""The runner's bf16 path is exact (bf16 compute on float32 master weights) and its logged
leakage separates an exact run from a leaking one."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _helpers.runs import TINY_RUN
from tolerances import assert_close

from asvd_jax.cl import load_config, run
from asvd_jax.models import load_model

BASE = TINY_RUN + ["data.max_len=64", "method.rank_policy.uniform.fraction=0.5",
                   "train.leakage_every=2"]


def test_bfloat16_model_dtype_means_bf16_compute_on_float32_params():
    cfg = load_config(None, BASE + ["model.dtype=bfloat16"])
    model, _, _ = load_model(cfg.model)
    from flax import nnx

    params = nnx.state(model, nnx.Param)
    assert {x.dtype for x in jax.tree.leaves(params)} == {jnp.dtype(jnp.float32)}
    assert model.compute_dtype == jnp.bfloat16


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    out = tmp_path_factory.mktemp("precision")
    exact = run(load_config(None, BASE + ["model.dtype=bfloat16"]), run_dir=str(out / "exact"))
    leaky = run(load_config(None, BASE + ["method.projection=none"]), run_dir=str(out / "none"))
    return exact, leaky


def test_exact_bf16_run_logs_zero_and_unprojected_run_a_real_leak(runs):
    exact, leaky = runs
    assert exact["status"] == leaky["status"] == "complete"
    rec = exact["rows"][1]["record"]
    # float32 sum of projected updates: its protected share is float32 rounding (~1e-6).
    assert rec["leakage"]["max"] < 1e-5, rec["leakage"]
    assert rec["leakage_log"] and all(e["max"] < 1e-5 for e in rec["leakage_log"])
    # The ablation computes the same kind of bases and projects nothing: a real share.
    assert leaky["rows"][1]["record"]["leakage"]["max"] > 1e-2
    assert all(np.isfinite(r["train"]["losses"]).all() for r in exact["rows"])


@pytest.mark.parametrize("preset", ["paper_llama2_7b_standard.yaml",
                                    "paper_trace_llama2_7b_chat.yaml"])
def test_paper_presets_train_bf16_on_float32_master_weights(preset):
    """The 7B presets' bf16 setting, on a tiny model of the same family: float32 params."""
    import os

    from flax import nnx

    path = os.path.join(os.path.dirname(__file__), "..", "experiments", preset)
    cfg = load_config(path, ["model.source=random", "model.random_width=32"])
    assert cfg.model.dtype == "bfloat16" and cfg.method.projection == "strict"
    model, _, _ = load_model(cfg.model)
    assert {x.dtype for x in jax.tree.leaves(nnx.state(model, nnx.Param))} == {
        jnp.dtype(jnp.float32)}
    assert model.compute_dtype == jnp.bfloat16


def test_projection_options_are_validated_and_reach_the_transform():
    from asvd_jax.cl._config import ConfigError
    from asvd_jax.cl._methods import ASVD

    with pytest.raises(ConfigError, match="method.projection_precision"):
        load_config(None, BASE + ["method.projection_precision=fast"])
    with pytest.raises(ConfigError, match="method.leakage_from"):
        load_config(None, BASE + ["method.leakage_from=nowhere"])
    cfg = load_config(None, BASE + ["method.projection_precision=high",
                                    "method.group_shapes=true"])
    import asvd_jax as aj
    import optax

    params = {"w": jnp.asarray(np.random.default_rng(0).normal(size=(6, 4)), jnp.float32)}
    method = ASVD(cfg.method, lambda ctx: optax.sgd(0.1))
    bases = aj.compute_bases(params, {"w": 2}, aj.select_targets(params))
    tx = method.optimizer(type("Ctx", (), {"targets": aj.select_targets(params)})())
    state = aj.set_bases(tx.init(params), bases)  # what init_task_state does at a boundary
    assert aj.applied_updates(state) is not None  # leakage_from: updates adds the tracker
    u, _ = tx.update({"w": jnp.ones((6, 4))}, state, params)
    want = aj.project_tree({"w": -0.1 * jnp.ones((6, 4))}, bases)
    assert_close(u["w"], np.asarray(want["w"], np.float64), "float32")


def test_fixed_layout_gives_every_boundary_one_shape_and_the_same_run(tmp_path, monkeypatch):
    """`method.fixed_layout` reaches compute_bases: each boundary's bases have the same shapes
    (so the run's jitted step is traced for them once), while the zero-padded columns change
    no projector, so the run's losses and accuracies are those of exact widths."""
    import asvd_jax as aj

    real = aj.compute_bases
    shapes = []

    def spy(*args, **kwargs):
        bases = real(*args, **kwargs)
        shapes.append([x.shape for x in jax.tree.leaves(bases)])
        return bases

    monkeypatch.setattr(aj, "compute_bases", spy)
    import yaml

    from asvd_jax.cl._fixture import write_fixture

    path = write_fixture(str(tmp_path / "data"), n_train=16, n_test=8)
    with open(path) as f:  # a third task (topic again) so that two boundaries can be compared
        spec = yaml.safe_load(f)
    spec["tasks"].append(dict(spec["tasks"][0], name="topic_again"))
    with open(path, "w") as f:
        yaml.safe_dump(spec, f)
    # progressive ranks: k grows per task, so exact widths give each boundary new shapes
    sets = TINY_RUN + ["data.suite=custom", f"data.path={path}", "data.max_len=64",
                       "method.rank_policy=progressive", "eval.lm_loss=false"]
    exact = run(load_config(None, sets), run_dir=str(tmp_path / "exact"))
    exact_shapes, shapes[:] = list(shapes), []
    padded = run(load_config(None, sets + ["method.fixed_layout=[0.0, 1.0]"]),
                 run_dir=str(tmp_path / "padded"))
    assert len(exact_shapes) == len(shapes) >= 2
    assert len({tuple(s) for s in exact_shapes}) > 1  # exact widths: new shapes per boundary
    assert len({tuple(s) for s in shapes}) == 1  # the layout: one set of shapes for the run
    assert exact["status"] == padded["status"] == "complete"
    for a, b in zip(exact["rows"], padded["rows"]):
        assert_close(np.asarray(b["train"]["losses"]), np.asarray(a["train"]["losses"], np.float64),
                     "float32")
        assert [e["accuracy"] for e in a["eval"]] == [e["accuracy"] for e in b["eval"]]


def test_fixed_layout_is_validated_and_a_rank_outside_it_names_the_matrix(tmp_path):
    from asvd_jax.cl._config import ConfigError

    for bad in ("[0.5]", "[0.6, 0.2]", "[0.0, 1.5]"):
        with pytest.raises(ConfigError, match="method.fixed_layout"):
            load_config(None, BASE + [f"method.fixed_layout={bad}"])
    cfg = load_config(None, BASE + ["method.fixed_layout=[0.0, 0.25]"])  # uniform 0.5 is outside
    with pytest.raises(ValueError, match="outside the fixed layout"):
        run(cfg, run_dir=str(tmp_path / "r"))
