"""End-to-end runner tests on a tiny random Llama and the two-task fixture."""

import json
import os
import platform

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _helpers.linalg import reference_leakage
from tolerances import tolerance

from asvd_jax.cl import RunError, load_config, run
from asvd_jax.cl._checkpoint import Checkpointer
from asvd_jax.cl._fixture import write_fixture
from asvd_jax.cli import main

TINY = ["model.source=random", "model.random_width=32", "data.suite=custom", "data.max_len=64",
        "train.lr=3e-3", "train.batch_size=8", "eval.batch_size=16", "method.stats_examples=16",
        "data.max_eval_per_task=8", "run.progress=false"]


def _strip_volatile(m: dict) -> dict:
    m = json.loads(json.dumps(m))
    m.pop("timing", None)
    m.pop("name", None)
    for row in m["rows"]:
        row["train"].pop("seconds", None)
    return m


@pytest.fixture(scope="module")
def fixture_yaml(tmp_path_factory):
    return write_fixture(str(tmp_path_factory.mktemp("fixture")), n_train=24, n_test=8)


@pytest.fixture(scope="module")
def pulse(tmp_path_factory, fixture_yaml):
    """The CLI end to end: `asvd-jax run CONFIG` with a YAML file and overrides."""
    out = tmp_path_factory.mktemp("runs")
    cfg = out / "tiny.yaml"
    # keep_tasks 0: both task ends stay, so the test can measure task 2's change itself.
    cfg.write_text("method: {name: asvd, rank_policy: paper}\n"
                   "checkpoint: {export_hf: true, keep_tasks: 0}\n")
    args = ["run", str(cfg), "--run-dir", str(out / "full")]
    for o in TINY + [f"data.path={fixture_yaml}"]:
        args += ["--set", o]
    assert main(args) == 0
    return out / "full"


def _reference_leakage_of_task_two(run_dir) -> dict[str, float]:
    """{matrix: protected share of task 2's weight change} for every matrix the rank plan
    leaves trainable, with the top-k singular vectors of a float64 numpy SVD of the weights at
    task 1's end (not the projection under test). Fully protected matrices must not move."""
    from flax import nnx

    from asvd_jax import flatten_with_paths
    from asvd_jax.models import llama

    model, _ = llama.load_hf(run_dir / "model")  # the exported final weights
    template = {"params": nnx.state(model, nnx.Param)}
    ck = Checkpointer(run_dir)
    start, end = (dict(flatten_with_paths(ck.restore(name, template)["params"])[0])
                  for name in ("task-0000", "task-0001"))
    plan = json.loads((run_dir / "rank_plans" / "task-0001-mood.json").read_text())
    out = {}
    for entry in plan["entries"]:
        w0 = np.asarray(start[entry["path"]], np.float64)
        delta = np.asarray(end[entry["path"]], np.float64) - w0
        if entry["k"] >= min(w0.shape):
            assert not delta.any(), f"{entry['path']} is fully protected but changed"
        else:
            out[entry["path"]] = reference_leakage(w0, delta, entry["k"])
    return out


def test_pulse_run_directory(pulse):
    for name in ("config.yaml", "metrics.json", "summary.md", "accuracy_matrix.png",
                 "model/model.safetensors", "model/config.json"):
        assert (pulse / name).is_file(), name
    plans = os.listdir(pulse / "rank_plans")
    assert plans == ["task-0001-mood.json"]  # statistics and a plan from task 2 on
    m = json.loads((pulse / "metrics.json").read_text())
    assert m["status"] == "complete"
    acc = np.asarray(m["accuracy_matrix"])
    acc_opt = np.asarray(m["option_accuracy_matrix"])
    assert acc.shape == (2, 2) and ((acc >= 0) & (acc <= 1)).all()
    assert set(m["summary"]) >= {"average_accuracy", "bwt", "fwt", "forgetting", "option_average_accuracy"}
    assert np.isclose(m["summary"]["average_accuracy"], acc[-1].mean())
    assert "lm_loss_delta" in m["general_ability"]
    # The projection held: the applied update's protected share is at float32 rounding, as
    # logged and as measured here against float64 SVDs of the weights task 2 started from.
    assert m["rows"][1]["record"]["leakage"]["max"] < 1e-4
    leak = _reference_leakage_of_task_two(pulse)
    assert len(leak) >= 4 and max(leak.values()) < tolerance("float32")["rtol"], leak
    assert all(np.isfinite(r["train"]["losses"]).all() for r in m["rows"])
    # Every evaluation records predictions, per-example correctness, per-class accuracy,
    # macro-F1 and the collapse flag; the correctness list reproduces the accuracy.
    assert np.isclose(m["summary"]["plasticity"], np.trace(acc) / 2)
    assert isinstance(m["summary"]["collapsed_tasks"], list)
    # The random model's zero-shot generations are no label at all: FWT comes from option
    # scoring (the same zero-shot for every answer format), and summary.md says so.
    s = m["summary"]
    assert s["zero_shot_answer_share"] < 0.5 and s["fwt_from"] == "options"
    zs = m["zero_shot"]["option_accuracy"]
    assert np.isclose(s["fwt"], acc_opt[0, 1] - zs[1]) and np.isclose(s["fwt"], s["option_fwt"])
    assert np.isclose(s["generation_fwt"], acc[0, 1] - m["zero_shot"]["accuracy"][1])
    assert "the headline FWT is option scoring's" in (pulse / "summary.md").read_text()
    from asvd_jax.analysis import load_run, run_summary  # the analysis reads the same choice

    rs = run_summary(load_run(pulse))
    assert np.isclose(rs["fwt"], s["fwt"]) and all(isinstance(v, float) for v in rs.values()), rs
    for row in m["rows"]:
        for e in row["eval"]:
            assert len(e["predictions"]) == len(e["correct"]) == e["n"]
            assert np.isclose(np.mean(e["correct"]), e["accuracy"])
            assert np.isclose(np.mean(e["option_correct"]), e["option_accuracy"])
            assert 0 <= e["macro_f1"] <= 1 and isinstance(e["collapsed"], bool)
            assert len(e["per_class_accuracy"]) >= 2


def test_resume_after_task_one_gives_identical_metrics(pulse, tmp_path, fixture_yaml):
    overrides = TINY + [f"data.path={fixture_yaml}", "method.name=asvd", "checkpoint.export_hf=true",
                        "method.rank_policy=paper"]
    stopped = run(load_config(None, overrides + ["run.stop_after_task=0"]), run_dir=str(tmp_path / "r"))
    assert stopped["status"].startswith("stopped") and len(stopped["rows"]) == 1
    assert Checkpointer(tmp_path / "r").latest()["name"] == "task-0000"
    resumed = run(load_config(None, overrides), run_dir=str(tmp_path / "r"), resume=True)
    full = json.loads((pulse / "metrics.json").read_text())
    assert _strip_volatile(resumed) == _strip_volatile(full)


def test_resume_refuses_changed_config(pulse, fixture_yaml):
    with pytest.raises(RunError, match=r"train\.lr"):
        run(load_config(None, TINY + [f"data.path={fixture_yaml}", "train.lr=1e-3"]),
            run_dir=str(pulse), resume=True)


def test_nan_loss_stops_and_keeps_checkpoint(tmp_path, fixture_yaml, monkeypatch):
    from asvd_jax.cl import _runner

    original = _runner.Runner._run_stage

    def poisoned(self, stage, *args, **kwargs):
        start = self.method.start_task
        if stage == 1:  # task 2 starts from NaN weights: every loss of it is NaN
            # (Through the weights, not the loss function: the run's one jitted step traced
            # the loss at task 1 and is reused, so a patched loss would not be seen.)
            def nan_start(ctx):
                trainable, frozen = start(ctx)
                return jax.tree.map(lambda x: x * np.nan if jnp.issubdtype(x.dtype, jnp.floating)
                                    else x, trainable), frozen

            monkeypatch.setattr(self.method, "start_task", nan_start)
        return original(self, stage, *args, **kwargs)

    monkeypatch.setattr(_runner.Runner, "_run_stage", poisoned)
    cfg = load_config(None, TINY + [f"data.path={fixture_yaml}", "method.name=seqft",
                                    "eval.zero_shot=false", "eval.lm_loss=false"])
    with pytest.raises(RunError, match=r"loss is nan.*Last good checkpoint: task-0000"):
        run(cfg, run_dir=str(tmp_path / "n"))
    m = json.loads((tmp_path / "n" / "metrics.json").read_text())
    assert m["status"].startswith("failed") and len(m["rows"]) == 1
    assert Checkpointer(tmp_path / "n").latest()["name"] == "task-0000"


def test_bad_input_messages(tmp_path, capsys, fixture_yaml):
    assert main(["run", "--set", "train.learning_rate=1"]) == 2
    assert "train.learning_rate" in capsys.readouterr().err
    assert main(["run", "--set", "data.suite=custom", "--set", f"data.path={tmp_path}/missing.yaml",
                 "--set", "run.progress=false", "--run-dir", str(tmp_path / "x")]) == 2
    assert "missing.yaml" in capsys.readouterr().err
    assert main(["run", "--set", "model.source=hf", "--set", f"model.path={tmp_path}/nomodel",
                 "--set", "data.suite=custom", "--set", f"data.path={fixture_yaml}",
                 "--set", "run.progress=false", "--run-dir", str(tmp_path / "y")]) == 2
    assert "nomodel" in capsys.readouterr().err


_TRIM_SCRIPT = """
import numpy as np
from asvd_jax.cl._runner import release_freed_memory
def rss():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS"):
            return int(line.split()[1]) * 1024
big = np.ones(2 << 20); del big    # a freed 16 MB block raises glibc's mmap threshold
blocks = [np.ones(512 << 10) for _ in range(100)]    # so these 100 x 4 MB come from the heap
keep = blocks[-1]
before = rss(); del blocks
freed = rss()
release_freed_memory()
print(before - freed, freed - rss())
"""


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's malloc_trim only")
def test_release_freed_memory_returns_heap_pages():
    # The mechanism behind a SmolLM2 run's resident memory growing ~1.9 GB per task: arrays
    # of a few MB freed after a large free stay resident until malloc_trim.
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    out = subprocess.run([sys.executable, "-c", _TRIM_SCRIPT], env=env, capture_output=True,
                         text=True, check=True).stdout.split()
    dropped_on_free, dropped_on_trim = map(int, out)
    assert dropped_on_free < 100e6, dropped_on_free  # glibc kept the freed 400 MB resident
    assert dropped_on_trim > 300e6, dropped_on_trim
