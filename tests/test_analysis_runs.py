"""Run directories: accuracy matrix, forgetting curves, summary, rank plans, bad input."""

import json

import numpy as np
import pytest
from tolerances import assert_close

from asvd_jax.analysis import (
    accuracy_matrix,
    forgetting_curves,
    load_run,
    run_summary,
    stage_records,
    zero_shot_accuracy,
)

TASKS = ["bbc_news", "airline", "apple"]


def _write_run(folder, acc, *, zero=None, status="complete", plans=(), shuffle_eval=False):
    """A run directory in the runner's layout with accuracy matrix ``acc`` (rows = stages)."""
    rows = []
    for i, accs in enumerate(acc):
        ev = [{"task": t, "accuracy": a, "option_accuracy": a / 2} for t, a in zip(TASKS, accs)]
        if shuffle_eval:
            ev = ev[::-1]
        rows.append({"stage": TASKS[i], "index": i, "train": {"losses": [1.0, 0.5]},
                     "record": {"leakage": {"max": 1e-6 * (i + 1)}} if i else {}, "eval": ev})
    metrics = {"name": folder.name, "method": "asvd", "tasks": TASKS, "rows": rows, "status": status}
    if zero is not None:
        metrics["zero_shot"] = {"accuracy": list(zero)}
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "metrics.json").write_text(json.dumps(metrics))
    (folder / "config.yaml").write_text("method:\n  name: asvd\n")
    if plans:
        (folder / "rank_plans").mkdir()
        for stage, plan in plans:
            (folder / "rank_plans" / f"task-{stage:04d}-{TASKS[stage]}.json").write_text(json.dumps(plan))
    return folder


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_accuracy_matrix_and_summary_match_hand_computation(tmp_path, seed):
    rng = np.random.default_rng(seed)
    acc = rng.random((3, 3))
    zero = rng.random(3)
    run = load_run(_write_run(tmp_path / "run", acc, zero=zero, shuffle_eval=bool(seed % 2)))
    assert run.tasks == tuple(TASKS) and run.stages == tuple(TASKS) and run.complete
    assert run.config == {"method": {"name": "asvd"}}
    assert_close(accuracy_matrix(run), acc, "float64")
    assert_close(accuracy_matrix(run, "option_accuracy"), acc / 2, "float64")
    assert_close(zero_shot_accuracy(run), zero, "float64")

    s = run_summary(run)
    assert_close(s["average_accuracy"], acc[-1].mean(), "float64")
    assert_close(s["bwt"], np.mean([acc[2, j] - acc[j, j] for j in range(2)]), "float64")
    assert_close(s["forgetting"], np.mean([acc[j:2, j].max() - acc[2, j] for j in range(2)]), "float64")
    assert_close(s["fwt"], np.mean([acc[j - 1, j] - zero[j] for j in (1, 2)]), "float64")
    assert stage_records(run, "leakage") == [None, {"max": 2e-6}, {"max": 3e-6}]


def test_forgetting_curves_start_where_each_task_was_trained(tmp_path):
    acc = np.array([[0.9, 0.2, 0.1], [0.7, 0.8, 0.3], [0.6, 0.5, 0.9]])
    run = load_run(_write_run(tmp_path / "run", acc, zero=[0.1, 0.2, 0.3]))
    curves = forgetting_curves(run)
    np.testing.assert_array_equal(curves["bbc_news"][0], [0, 1, 2])
    np.testing.assert_array_equal(curves["bbc_news"][1], [0.9, 0.7, 0.6])
    np.testing.assert_array_equal(curves["airline"][0], [1, 2])
    np.testing.assert_array_equal(curves["apple"][1], [0.9])
    full = forgetting_curves(run, from_start=True)
    np.testing.assert_array_equal(full["apple"][0], [-1, 0, 1, 2])
    np.testing.assert_array_equal(full["apple"][1], [0.3, 0.1, 0.3, 0.9])


def test_a_run_in_progress_loads_and_summarises_its_square_block(tmp_path):
    acc = np.array([[0.9, 0.2, 0.1], [0.7, 0.8, 0.3]])
    plan = {"format_version": 1, "entries": [{"path": "layers/0/q/kernel", "k": 3}]}
    run = load_run(_write_run(tmp_path / "run", acc, status="running", plans=[(1, plan)]))
    assert not run.complete and run.stages == ("bbc_news", "airline")
    assert run.rank_plans == (None, plan)
    assert accuracy_matrix(run).shape == (2, 3)
    s = run_summary(run)
    assert_close(s["average_accuracy"], acc[1, :2].mean(), "float64")
    assert_close(s["bwt"], acc[1, 0] - acc[0, 0], "float64")


def test_bad_run_directories(tmp_path):
    with pytest.raises(FileNotFoundError, match="metrics.json"):
        load_run(tmp_path)
    (tmp_path / "metrics.json").write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        load_run(tmp_path)
    (tmp_path / "metrics.json").write_text(json.dumps({"tasks": TASKS}))
    with pytest.raises(ValueError, match="rows"):
        load_run(tmp_path)
    (tmp_path / "metrics.json").write_text(json.dumps(
        {"tasks": TASKS, "rows": [{"stage": "x", "eval": [{"task": "nope", "accuracy": 1.0}]}]}))
    with pytest.raises(ValueError, match="nope"):
        accuracy_matrix(load_run(tmp_path))
    with pytest.raises(TypeError, match="Run"):
        accuracy_matrix(42)


@pytest.mark.slow
def test_reads_a_real_runner_directory(tmp_path):
    """The runner's own output on a tiny random model: the format this module reads."""
    from asvd_jax.analysis import plan_grid
    from asvd_jax.cl import load_config, run
    from asvd_jax.cl._fixture import write_fixture

    data = write_fixture(str(tmp_path / "fixture"), n_train=16, n_test=8)
    overrides = ["model.source=random", "model.random_width=32", "data.suite=custom",
                 f"data.path={data}", "data.max_len=64", "train.batch_size=8", "eval.batch_size=16",
                 "method.name=asvd", "method.stats_examples=8", "checkpoint.export_hf=false",
                 "run.progress=false",
                 # A weight change well above float32 rounding of W: at the default lr the tiny
                 # model's change is ~1e-4 of W and its rounding alone reads as 3e-4 leakage.
                 "train.lr=3e-3"]
    metrics = run(load_config(None, overrides), run_dir=str(tmp_path / "run"))
    r = load_run(tmp_path / "run")
    assert r.complete and r.method == "asvd" and r.config["method"]["name"] == "asvd"
    assert_close(accuracy_matrix(r), metrics["accuracy_matrix"], "float64")
    for key, value in metrics["summary"].items():
        if key in ("average_accuracy", "bwt", "forgetting", "fwt"):
            assert_close(run_summary(r)[key], value, "float64")
    # Numbers only (notebooks round every value), the FWT choice included.
    assert "generation_fwt" in run_summary(r) and all(
        isinstance(v, float) for v in run_summary(r).values()), run_summary(r)
    assert r.rank_plans[0] is None and r.rank_plans[1] is not None
    grid = plan_grid(r.rank_plans[1], "k")
    assert np.isfinite(grid.values).any()
    assert stage_records(r, "leakage")[1]["max"] < 1e-4
