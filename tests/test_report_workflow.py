"""Items 1-2 of issue 16: run status is always true, and ``asvd-jax report`` reads any run.

Tiny random Llama on the two-task fixture; interruptions are injected into the stage loop.
"""

import csv
import io
import json
import os
import signal

import numpy as np
import pytest

from asvd_jax.cl import load_config, run
from asvd_jax.cl._fixture import write_fixture
from asvd_jax.cli import main

TINY = ["model.source=random", "model.random_width=32", "data.suite=custom", "data.max_len=64",
        "train.lr=3e-3", "train.batch_size=8", "eval.batch_size=16", "method.stats_examples=16",
        "data.max_eval_per_task=8", "run.progress=false", "checkpoint.export_hf=false",
        "eval.lm_loss=false"]


@pytest.fixture(scope="module")
def fixture_yaml(tmp_path_factory):
    return write_fixture(str(tmp_path_factory.mktemp("fixture")), n_train=16, n_test=8)


def _cfg(fixture_yaml, *extra):
    return load_config(None, TINY + [f"data.path={fixture_yaml}", *extra])


def _listing(folder):
    return {os.path.join(r, f): os.stat(os.path.join(r, f)).st_mtime_ns
            for r, _, fs in os.walk(folder) for f in fs}


def _interrupt_at_stage(monkeypatch, stage_to_fail, exc_factory):
    from asvd_jax.cl import _runner

    original = _runner.Runner._run_stage

    def patched(self, stage, *args, **kwargs):
        if stage == stage_to_fail:
            exc_factory()
        return original(self, stage, *args, **kwargs)

    monkeypatch.setattr(_runner.Runner, "_run_stage", patched)


@pytest.fixture(scope="module")
def stopped(tmp_path_factory, fixture_yaml):
    d = tmp_path_factory.mktemp("runs") / "stopped"
    run(_cfg(fixture_yaml, "run.stop_after_task=0", "method.name=seqft"), run_dir=str(d))
    return d


def test_stopped_run_has_status_and_summary(stopped):
    m = json.loads((stopped / "metrics.json").read_text())
    assert m["status"] == "stopped_after_task" and "stage 0" in m["status_detail"]
    summary = (stopped / "summary.md").read_text()
    assert "partial run" in summary and "1/2 stages" in summary
    assert not [f for f in os.listdir(stopped) if ".tmp" in f]


def _raise_keyboard():
    raise KeyboardInterrupt


def _send_sigterm():
    os.kill(os.getpid(), signal.SIGTERM)


@pytest.mark.parametrize("how,signame", [(_raise_keyboard, "SIGINT"), (_send_sigterm, "SIGTERM")])
def test_interrupted_run_says_so_and_resumes(tmp_path, fixture_yaml, monkeypatch, how, signame):
    d = tmp_path / "r"
    _interrupt_at_stage(monkeypatch, 1, how)
    with pytest.raises(KeyboardInterrupt):
        run(_cfg(fixture_yaml, "method.name=seqft"), run_dir=str(d))
    m = json.loads((d / "metrics.json").read_text())
    assert m["status"] == "interrupted" and signame in m["status_detail"]
    assert len(m["rows"]) == 1 and (d / "summary.md").is_file()
    assert signal.getsignal(signal.SIGTERM) is not None  # the handler was put back
    monkeypatch.undo()
    resumed = run(_cfg(fixture_yaml, "method.name=seqft"), run_dir=str(d), resume=True)
    assert resumed["status"] == "complete" and "status_detail" not in resumed


def test_failed_run_records_the_error(tmp_path, fixture_yaml, monkeypatch):
    def boom():
        raise OSError("disk full (injected)")

    _interrupt_at_stage(monkeypatch, 1, boom)
    with pytest.raises(OSError):
        run(_cfg(fixture_yaml, "method.name=seqft"), run_dir=str(tmp_path / "f"))
    m = json.loads((tmp_path / "f" / "metrics.json").read_text())
    assert m["status"] == "failed" and m["status_detail"] == "OSError: disk full (injected)"
    assert "partial run" in (tmp_path / "f" / "summary.md").read_text()


def test_report_reads_partial_run_without_writing(stopped, capsys):
    before = _listing(stopped)
    assert main(["report", str(stopped)]) == 0
    out = capsys.readouterr().out
    assert "partial run" in out and "stopped_after_task" in out
    assert _listing(stopped) == before  # read-only by default
    os.remove(stopped / "summary.md")
    assert main(["report", str(stopped), "--write"]) == 0
    assert (stopped / "summary.md").is_file() and (stopped / "accuracy_matrix.png").is_file()
    assert not [f for f in os.listdir(stopped) if ".tmp" in f]


def test_partial_summary_is_the_corner_of_the_matrix(stopped):
    from asvd_jax.cl._report import report_view

    m = json.loads((stopped / "metrics.json").read_text())
    v = report_view(m)
    first = m["rows"][0]["eval"][0]["accuracy"]
    assert v["partial"] == "1/2 stages" and v["summary"]["average_accuracy"] == pytest.approx(first)
    assert np.isnan(v["summary"]["bwt"])  # one task: undefined


# ----------------------------------------------------- comparison table, CSV, seed groups

def _fake_run(folder, name, acc, seed, method="asvd", status="complete", lr=3e-5):
    """A run directory in the runner's layout (complete unless ``status`` says otherwise)."""
    tasks = ["a", "b"]
    rows = [{"stage": tasks[i], "index": i, "train": {"losses": [1.0]},
             "eval": [{"task": t, "accuracy": x} for t, x in zip(tasks, accs)]}
            for i, accs in enumerate(acc)]
    m = {"name": name, "method": method, "tasks": tasks, "rows": rows, "status": status,
         "timing": {"total": 120.0}}
    if status == "complete":
        from asvd_jax.metrics import summarize

        m["accuracy_matrix"] = acc
        m["summary"] = summarize(acc)
    folder.mkdir(parents=True)
    (folder / "metrics.json").write_text(json.dumps(m))
    (folder / "config.yaml").write_text(
        f"method: {{name: {method}}}\ntrain: {{seed: {seed}, lr: {lr}}}\nrun: {{name: {name}}}\n")
    return folder


def test_report_groups_seeds_mean_std_and_csv(tmp_path, capsys):
    rng = np.random.default_rng(0)
    mats = [rng.random((2, 2)).tolist() for _ in range(4)]
    dirs = [_fake_run(tmp_path / f"s{i}", f"asvd-s{i}", mats[i], seed=i) for i in range(3)]
    dirs.append(_fake_run(tmp_path / "other", "asvd-lr", mats[3], seed=0, lr=1e-4))  # not a seed
    dirs.append(_fake_run(tmp_path / "part", "asvd-part", mats[0][:1], seed=5, status="interrupted"))
    before = _listing(tmp_path)
    assert main(["report", *map(str, dirs)]) == 0
    out = capsys.readouterr().out
    assert _listing(tmp_path) == before
    assert "interrupted, partial 1/2" in out
    aa = [100 * np.mean(m[-1]) for m in mats[:3]]
    line = next(ln for ln in out.splitlines() if ln.startswith("| asvd | 0,1,2 |"))
    assert f"{np.mean(aa):.1f} +- {np.std(aa, ddof=1):.1f}" in line
    # The lr 1e-4 run is a group of its own (one seed: no std); the partial run is left out.
    other = next(ln for ln in out.splitlines() if ln.startswith("| asvd#2 | 0 |"))
    assert "+-" not in other and "| 5 |" not in out
    path = tmp_path / "table.csv"
    assert main(["report", *map(str, dirs), "--out", str(path)]) == 0
    rows = list(csv.DictReader(io.StringIO(path.read_text())))
    assert [r["run"] for r in rows] == ["asvd-s0", "asvd-s1", "asvd-s2", "asvd-lr", "asvd-part"]
    assert float(rows[0]["AA"]) == pytest.approx(aa[0]) and rows[0]["FWT"] == ""


def test_group_by_seed_ignores_run_section_only(tmp_path):
    from asvd_jax.analysis import group_by_seed

    a = _fake_run(tmp_path / "a", "a", [[1, 0], [1, 1]], seed=0)
    b = _fake_run(tmp_path / "b", "b", [[1, 0], [1, 1]], seed=1)
    c = _fake_run(tmp_path / "c", "c", [[1, 0], [1, 1]], seed=1, method="seqft")
    groups = group_by_seed([a, b, c])
    assert [len(g.runs) for g in groups] == [2, 1]
    assert groups[0].seeds == (0, 1) and groups[1].method == "seqft"


def test_report_missing_dir_is_one_error_line(tmp_path, capsys):
    assert main(["report", str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and "metrics.json" in err[0]


def test_seed_runs_are_named_by_their_parent_in_the_table():
    from asvd_jax.cl import comparison_output

    metrics = {"name": "seed1", "method": "seqft", "status": "running", "rows": []}
    text = comparison_output(["/r/minilm-seqft/seed1", "/r/other"], [metrics, dict(metrics, name="other")], "md")
    assert "| minilm-seqft/seed1 |" in text and "| other |" in text
