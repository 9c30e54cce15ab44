"""Seed lists: per-seed configs, grouping run directories by seed, the report over seeds."""

import json
import os

import numpy as np
import pytest
import yaml

from asvd_jax.analysis._seeds import expand_run_dirs, group_by_seed, seed_summary, seed_table
from asvd_jax.cl import load_config
from asvd_jax.cl._config import ConfigError, to_dict
from asvd_jax.metrics import paired_bootstrap
from asvd_jax.cl._seeds import seed_configs
from tolerances import assert_close


def test_seed_configs_vary_train_and_data_seed():
    cfg = load_config(None, ["run.seeds=[0, 2, 5]", "train.lr=1e-4"])
    out = seed_configs(cfg)
    assert [k for k, _ in out] == [0, 2, 5]
    for k, c in out:
        assert c.train.seed == k and c.data.seed == k and c.run.seeds == () and c.train.lr == 1e-4
    with pytest.raises(ValueError, match="repeat"):
        seed_configs(load_config(None, ["run.seeds=[1, 1]"]))
    with pytest.raises(ConfigError, match="run.seeds"):
        load_config(None, ["run.seeds=abc"])


def _write_run(root, name, method, seed, acc, correct=None, lr=3e-5, sets=()):
    """A run directory by hand: config.yaml + metrics.json with accuracy matrix ``acc``."""
    d = os.path.join(root, name)
    os.makedirs(d)
    cfg = to_dict(load_config(None, [f"method.name={method}", f"train.seed={seed}", f"data.seed={seed}",
                                     f"train.lr={lr}", f"run.name={name}", *sets]))
    with open(os.path.join(d, "config.yaml"), "w") as f:
        yaml.safe_dump(cfg, f)
    tasks = [f"t{j}" for j in range(len(acc))]
    rows = []
    for i, r in enumerate(acc):
        ev = [{"task": t, "accuracy": a, "collapsed": bool(i == len(acc) - 1 and j == 0 and method == "seqft")}
              for j, (t, a) in enumerate(zip(tasks, r))]
        if correct is not None and i == len(acc) - 1:
            for e, c in zip(ev, correct):
                e["correct"] = c
        rows.append({"stage": tasks[i], "eval": ev})
    with open(os.path.join(d, "metrics.json"), "w") as f:
        json.dump({"name": name, "method": method, "tasks": tasks, "rows": rows, "status": "complete"}, f)
    return d


def test_group_and_summary_hand_computed(tmp_path):
    root = str(tmp_path)
    # asvd seeds 0, 1: AA 0.7 and 0.8, plasticity 0.8 / 0.9, BWT -0.2 / -0.2.
    # seqft seeds 0, 1: AA 0.6 and 0.8, plasticity 0.9 / 1.0, BWT -0.6 / -0.4.
    _write_run(root, "a0", "asvd", 0, [[0.8, 0.1], [0.6, 0.8]], correct=[[1, 1, 0, 1, 0], [1, 1, 1, 0, 1]])
    _write_run(root, "a1", "asvd", 1, [[0.9, 0.2], [0.7, 0.9]], correct=[[1, 1, 1, 1, 0], [1, 0, 1, 1, 1]])
    _write_run(root, "s0", "seqft", 0, [[0.9, 0.0], [0.3, 0.9]], correct=[[0, 1, 0, 0, 1], [1, 1, 0, 0, 1]])
    _write_run(root, "s1", "seqft", 1, [[1.0, 0.0], [0.6, 1.0]], correct=[[1, 1, 0, 1, 0], [1, 0, 1, 1, 1]])
    # A different learning rate is another group (another config), even with the same method.
    _write_run(root, "a0_lr", "asvd", 0, [[0.5, 0.5], [0.5, 0.5]], lr=1e-4)
    dirs = [os.path.join(root, n) for n in ("a0", "s0", "a1", "s1", "a0_lr")]
    groups = group_by_seed(dirs)
    assert [g.label for g in groups] == ["asvd", "seqft", "asvd#2"]
    assert groups[0].seeds == (0, 1) and groups[2].seeds == (0,)
    rows = seed_summary(groups, n_boot=4000)
    a, s = rows[0], rows[1]
    assert_close(a["mean"]["average_accuracy"], 0.75, "float64")
    assert_close(a["std"]["average_accuracy"], np.std([0.7, 0.8], ddof=1), "float64")
    assert_close(a["mean"]["plasticity"], 0.85, "float64")
    assert_close(s["mean"]["bwt"], -0.5, "float64")
    assert s["collapsed"] == 1.0 and a["collapsed"] == 0.0
    assert s["vs"] is None
    v = a["vs"]
    assert v["baseline"] == "seqft" and v["seeds"] == [0, 1]
    # AA differences 0.1 and 0.0 -> estimate 0.05, seed interval [0.0, 0.1] (two seeds).
    assert_close(v["gaps"]["average_accuracy_gap"], 0.05, "float64")
    assert_close(v["gaps"]["plasticity_gap"], -0.1, "float64")
    assert_close(v["gaps"]["bwt_gap"], 0.3, "float64")
    assert_close(v["interval_seeds"]["low"], 0.0, "float64")
    assert_close(v["interval_seeds"]["high"], 0.1, "float64")
    ex = v["interval_examples"]
    ref = paired_bootstrap([[[1, 1, 0, 1, 0], [1, 1, 1, 0, 1]], [[1, 1, 1, 1, 0], [1, 0, 1, 1, 1]]],
                           [[[0, 1, 0, 0, 1], [1, 1, 0, 0, 1]], [[1, 1, 0, 1, 0], [1, 0, 1, 1, 1]]],
                           examples=True, n_boot=4000)
    assert ex == ref
    # The lr=1e-4 group also pairs with SeqFT (same model/data/eval) on seed 0 only.
    assert rows[2]["vs"]["seeds"] == [0]
    table = seed_table(groups)
    assert "75.0 +- 7.1" in table and "+5.0 [+0.0, +10.0]" in table


def test_report_one_seed_pair_shows_the_examples_interval(tmp_path):
    from asvd_jax.cl import comparison_output

    root = str(tmp_path)
    a = _write_run(root, "a0", "asvd", 0, [[0.8, 0.1], [0.6, 0.8]], correct=[[1, 1, 0, 1, 0], [1, 1, 1, 0, 1]])
    s = _write_run(root, "s0", "seqft", 0, [[0.9, 0.0], [0.3, 0.9]], correct=[[0, 1, 0, 0, 1], [1, 1, 0, 0, 1]])

    def metrics(d):  # as a finished run writes it: summary and matrices filled in
        from asvd_jax.cl._report import report_view

        with open(os.path.join(d, "metrics.json")) as f:
            m = report_view(json.load(f))
        m.pop("partial")
        return m

    text = comparison_output([a, s], [metrics(a), metrics(s)], "md")
    assert "Against SeqFT, one seed per group" in text and "Over seeds" not in text
    # AA 0.7 against 0.6 on seed 0: the seed "interval" is the point; the examples one is the
    # paired bootstrap of the final row's per-example correctness (0.7 against 0.5 there).
    groups = group_by_seed([a, s])
    want = seed_summary(groups)[0]["vs"]["interval_examples"]
    row = next(line for line in text.splitlines() if line.startswith("| asvd |"))
    assert "+10.0 [+10.0, +10.0]" in row
    assert f"+20.0 [{100 * want['low']:+.1f}, {100 * want['high']:+.1f}]" in row
    assert want["low"] < 0.2 < want["high"]
    # Without a SeqFT run there is nothing to pair with: the per-run table only.
    alone = comparison_output([a], [metrics(a)], "md")
    assert "Against SeqFT" not in alone and "Over seeds" not in alone


def test_seed_parent_expands_and_repeated_seed_is_an_error(tmp_path):
    root = str(tmp_path)
    parent = os.path.join(root, "multi")
    for k in (0, 1, 10):
        os.makedirs(parent, exist_ok=True)
        _write_run(parent, f"seed{k}", "asvd", k, [[0.5]])
    assert [os.path.basename(d) for d in expand_run_dirs([parent])] == ["seed0", "seed1", "seed10"]
    with pytest.raises(FileNotFoundError, match="seed<k>"):
        expand_run_dirs([root])
    _write_run(root, "again", "asvd", 1, [[0.5]])
    with pytest.raises(ValueError, match="same config and seed"):
        group_by_seed([parent, os.path.join(root, "again")])


@pytest.mark.slow  # ~35 s on the shared 2-core machine (two tiny runs, compilation)
def test_cli_seeds_end_to_end(tmp_path, capsys):
    """`asvd-jax run --seeds 0,1` writes seed0/ and seed1/ (different data and batch seeds);
    `--resume` reads complete seeds back; `asvd-jax report PARENT` groups them."""
    from asvd_jax.cl._fixture import write_fixture
    from asvd_jax.cli import main

    fx = write_fixture(str(tmp_path / "fx"), n_train=16, n_test=8)
    parent = tmp_path / "multi"
    args = ["run", "--seeds", "0,1", "--run-dir", str(parent)]
    for o in ["model.source=random", "model.random_width=32", "data.suite=custom", f"data.path={fx}",
              "data.max_len=64", "train.lr=3e-3", "train.batch_size=8", "eval.batch_size=8",
              "train.max_steps=2", "method.name=seqft", "eval.lm_loss=false", "eval.zero_shot=false",
              "checkpoint.export_hf=false", "run.progress=false", "data.max_train_per_task=12"]:
        args += ["--set", o]
    assert main(args) == 0
    out = capsys.readouterr().out
    for k in (0, 1):
        cfg = yaml.safe_load((parent / f"seed{k}" / "config.yaml").read_text())
        assert cfg["train"]["seed"] == k and cfg["data"]["seed"] == k and cfg["run"]["seeds"] == []
        assert json.loads((parent / f"seed{k}" / "metrics.json").read_text())["status"] == "complete"
    assert "| multi | 0,1 |" in out and "| multi/seed1 | seqft | complete |" in out  # same tables as `report`
    mtime = os.path.getmtime(parent / "seed0" / "metrics.json")
    assert main(args + ["--resume"]) == 0  # both complete: nothing reruns
    assert os.path.getmtime(parent / "seed0" / "metrics.json") == mtime
    capsys.readouterr()
    assert main(["report", str(parent)]) == 0
    assert "| multi | 0,1 |" in capsys.readouterr().out  # the group is named by its parent


def test_groups_are_named_by_their_seed_parent(tmp_path):
    """A group whose runs are all seed<k>/ of one parent (what `run.seeds` writes) carries the
    parent's name, so orders and models stay apart in the table; other groups keep the
    method's name, and a repeated name gets #n."""
    root = str(tmp_path)
    for parent, method, lr in (("minilm-o1-asvd", "asvd", 3e-5), ("minilm-o1-seqft", "seqft", 3e-5),
                               ("x/minilm-o1-asvd", "asvd", 1e-4)):
        os.makedirs(os.path.join(root, parent))
        for k in (0, 1):
            _write_run(os.path.join(root, parent), f"seed{k}", method, k, [[0.5]], lr=lr)
    _write_run(root, "flat", "asvd", 0, [[0.5]], lr=1e-3)
    # a group mixing two parents' seed folders is named by its method
    _write_run(os.path.join(root, "x"), "seed0", "asvd", 0, [[0.5]], lr=2e-3)
    os.makedirs(os.path.join(root, "y"))
    _write_run(os.path.join(root, "y"), "seed1", "asvd", 1, [[0.5]], lr=2e-3)
    dirs = [os.path.join(root, d) for d in ("minilm-o1-asvd", "minilm-o1-seqft", "x/minilm-o1-asvd",
                                            "flat", "x/seed0", "y/seed1")]
    labels = [g.label for g in group_by_seed(dirs)]
    assert labels == ["minilm-o1-asvd", "minilm-o1-seqft", "minilm-o1-asvd#2", "asvd", "asvd#2"]
    rows = seed_summary(group_by_seed(dirs[:2]), n_boot=100)
    assert rows[0]["vs"]["baseline"] == "minilm-o1-seqft"


def test_grouping_ignores_only_the_method_fields_a_method_does_not_read(tmp_path):
    import dataclasses

    from asvd_jax.analysis import ewc_penalty_lambda, unread_method_fields
    from asvd_jax.analysis._seeds import _READ_BY
    from asvd_jax.cl import MethodConfig

    assert set(_READ_BY) <= {f.name for f in dataclasses.fields(MethodConfig)}  # no stale name
    root, acc = str(tmp_path), [[0.5, 0.0], [0.5, 0.5]]
    runs = [  # (name, method, seed, overrides) -> expected group
        ("seqft0", "seqft", 0, ["method.ewc_lambda=1e6", "method.lora_lr=1e-4"]),
        ("seqft1", "seqft", 1, ["method.rank_policy=uniform"]),  # the same SeqFT: one group
        ("ewc0", "ewc", 0, ["method.ewc_lambda=1e6"]),
        ("ewc1", "ewc", 1, ["method.ewc_lambda=1e5"]),            # EWC reads its lambda: two groups
        ("asvd0", "asvd", 0, ["method.ewc_lambda=1e6"]),
        ("asvd1", "asvd", 1, ["method.lora_rank=4"]),             # unread by asvd: one group
        ("asvd_ewc0", "asvd", 0, ["method.add_ewc=true", "method.ewc_lambda=1e5"]),
        ("asvd_ewc1", "asvd", 1, ["method.add_ewc=true", "method.ewc_lambda=1e6"]),  # read: two
        # The same penalty (1e5) set through add_ewc_lambda: asvd_ewc0's group.
        ("asvd_ewc2", "asvd", 2, ["method.add_ewc=true", "method.ewc_lambda=1e6",
                                  "method.add_ewc_lambda=1e5"]),
        ("asvd_u", "asvd", 2, ["method.rank_policy=uniform"]),   # asvd reads its policy: its own
    ]
    dirs = [_write_run(root, n, m, k, acc, sets=o) for n, m, k, o in runs]
    groups = group_by_seed(dirs)
    names = [[os.path.basename(r.run_dir) for r in g.runs] for g in groups]
    assert names == [["seqft0", "seqft1"], ["ewc0"], ["ewc1"], ["asvd0", "asvd1"],
                     ["asvd_ewc0", "asvd_ewc2"], ["asvd_ewc1"], ["asvd_u"]]
    assert unread_method_fields({"name": "asvd", "add_ewc": True, "ewc_lambda": 1.0}) == frozenset()
    assert unread_method_fields({"name": "ewc", "ewc_lambda": 1.0, "add_ewc": False}) == {"add_ewc"}
    both = {"name": "asvd", "add_ewc": True, "ewc_lambda": 1.0, "add_ewc_lambda": 2.0}
    assert unread_method_fields(both) == {"ewc_lambda"} and ewc_penalty_lambda(both) == 2.0
    assert unread_method_fields({**both, "add_ewc": False}) == {"ewc_lambda", "add_ewc_lambda"}
    assert ewc_penalty_lambda({**both, "add_ewc": False}) is None
    assert ewc_penalty_lambda({**both, "add_ewc_lambda": None}) == 1.0
    assert ewc_penalty_lambda({**both, "name": "ewc"}) == 1.0
