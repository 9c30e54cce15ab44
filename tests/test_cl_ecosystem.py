"""Trackers (events.jsonl, TensorBoard, W&B), the capacity report and the model card.

One tiny ASVD run (progressive policy, two tasks), killed after task 1 and resumed, serves
the run-level tests; the rest are unit tests on small inputs.
"""

import json
import struct
import sys

import numpy as np
import pytest

from asvd_jax.cl import load_config, run
from asvd_jax.cl._config import ConfigError
from asvd_jax.cl._fixture import write_fixture
from tolerances import assert_close

TINY = ["model.source=random", "model.random_width=32", "data.suite=custom", "data.max_len=64",
        "train.lr=3e-3", "train.batch_size=8", "eval.batch_size=16", "method.stats_examples=16",
        "data.max_eval_per_task=8", "run.progress=false", "eval.zero_shot=false",
        "method.name=asvd", "method.rank_policy=progressive", "train.schedule=linear"]


@pytest.fixture(scope="module")
def resumed_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("eco")
    fx = write_fixture(str(root / "fixture"), n_train=16, n_test=8)
    overrides = TINY + [f"data.path={fx}"]
    run_dir = str(root / "run")
    # The first segment through Runner, to keep the weights task 2's plan is made from.
    from asvd_jax.cl._runner import Runner
    from asvd_jax import flatten_with_paths

    first = Runner(load_config(None, overrides + ["run.stop_after_task=0"]), run_dir=run_dir)
    first.run()
    first.trackers.close()
    q = np.asarray(dict(flatten_with_paths(first.params)[0])["layers/0/attn/q_proj/kernel"],
                   np.float64)
    metrics = run(load_config(None, overrides), run_dir=run_dir, resume=True)
    _TASK1_END["q_proj"] = q
    return root / "run", metrics


_TASK1_END = {}  # layers/0/attn/q_proj/kernel after task 1 (filled by the fixture)


def _read_events(folder):
    """Scalars of every TensorBoard event file in ``folder``: {tag: [(step, value)]}.

    Reads the TFRecord framing directly (u64 length, u32 crc, payload, u32 crc) and decodes
    each payload with the Event protobuf that tensorboardX ships: no TensorFlow needed.
    """
    from tensorboardX.proto.event_pb2 import Event

    out = {}
    files = sorted(folder.glob("events.out.tfevents.*"))
    assert files, f"no event file in {folder}"
    for path in files:
        data = path.read_bytes()
        pos = 0
        while pos < len(data):
            (length,) = struct.unpack("<Q", data[pos:pos + 8])
            event = Event.FromString(data[pos + 12:pos + 12 + length])
            pos += 12 + length + 4
            for v in event.summary.value:
                out.setdefault(v.tag, []).append((event.step, v.simple_value))
    return out


# ------------------------------------------------------------------------------- trackers
def test_tensorboard_event_file_reads_back(resumed_run):
    run_dir, metrics = resumed_run
    scalars = _read_events(run_dir / "tensorboard")
    losses = [l for row in metrics["rows"] for l in row["train"]["losses"]]
    steps, values = zip(*scalars["train/loss"])
    # One point per micro-batch, numbered over the whole run: the resumed segment continues.
    assert list(steps) == list(range(1, len(losses) + 1))
    np.testing.assert_allclose(values, losses, rtol=1e-6)  # TensorBoard stores float32
    for tag in ("train/lr", "train/grad_norm", "train/step_seconds"):
        assert len(scalars[tag]) == len(losses)
    assert all(v > 0 for _, v in scalars["train/grad_norm"])
    # The linear schedule (warm-up step, then decay to 0) restarts with every task.
    from asvd_jax.cl._train import learning_rate

    train = load_config(None, TINY).train
    want = [float(learning_rate(train, r["train"]["optimizer_steps"])(i))
            for r in metrics["rows"] for i in range(r["train"]["optimizer_steps"])]
    np.testing.assert_allclose([v for _, v in scalars["train/lr"]], want, rtol=1e-6)
    assert max(want) == pytest.approx(3e-3)
    # Per task: the accuracy row and AA at the task's last step.
    acc = metrics["accuracy_matrix"]
    end = np.cumsum([r["train"]["micro_steps"] for r in metrics["rows"]])
    for j, task in enumerate(metrics["tasks"]):
        got = dict(scalars[f"eval/{task}"])
        for i in range(len(acc)):
            assert got[int(end[i])] == pytest.approx(acc[i][j], abs=1e-6)
    aa = dict(scalars["eval/average_accuracy"])
    assert aa[int(end[-1])] == pytest.approx(np.mean(acc[-1]), abs=1e-6)
    assert aa[int(end[0])] == pytest.approx(acc[0][0], abs=1e-6)  # tasks seen so far only
    assert dict(scalars["eval/bwt"])[int(end[1])] == pytest.approx(acc[1][0] - acc[0][0], abs=1e-6)
    # Task 2 trained with a plan: ranks, capacity, leakage, statistics/SVD time are there.
    for tag in ("ranks/q_proj/protected_fraction", "capacity/attn/q_proj/free_fraction",
                "leakage/max", "time/start_task_seconds"):
        assert int(end[1]) in dict(scalars[tag]), tag
    assert dict(scalars["ranks/q_proj/protected_fraction"])[int(end[1])] == pytest.approx(0.5)


def test_jsonl_events_match_metrics(resumed_run):
    run_dir, metrics = resumed_run
    events = [json.loads(line) for line in (run_dir / "events.jsonl").read_text().splitlines()]
    steps = [e for e in events if e["kind"] == "step"]
    losses = [l for row in metrics["rows"] for l in row["train"]["losses"]]
    assert [e["train/loss"] for e in steps] == losses  # exact: JSON keeps the float64
    assert [e["step"] for e in steps] == list(range(1, len(losses) + 1))
    tasks = [e for e in events if e["kind"] == "task"]
    assert [e["task"] for e in tasks] == metrics["tasks"]
    assert tasks[1]["leakage/max"] == metrics["rows"][1]["record"]["leakage"]["max"]


def test_tracker_names_are_checked():
    with pytest.raises(ConfigError, match="run.trackers.*tensorbord.*did you mean 'tensorboard'"):
        load_config(None, ["run.trackers=[jsonl, tensorbord]"])
    assert load_config(None, ["run.trackers=[]"]).run.trackers == ()


def test_wandb_missing_is_a_clear_error(tmp_path, monkeypatch):
    from asvd_jax.cl._trackers import TrackerError, Trackers

    monkeypatch.setitem(sys.modules, "wandb", None)  # as if not installed
    with pytest.raises(TrackerError, match=r"pip install 'asvd_jax\[wandb\]'"):
        Trackers(["jsonl", "wandb"], str(tmp_path))


def test_wandb_offline_when_installed(tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    from asvd_jax.cl._trackers import Trackers

    monkeypatch.delenv("WANDB_MODE", raising=False)  # the default must be offline by itself
    t = Trackers(["wandb"], str(tmp_path), {"train": {"lr": 1e-3}})
    t.step(1, loss=1.0, lr=1e-3, grad_norm=2.0, seconds=0.1, stage=0)
    t.close()
    assert list((tmp_path / "wandb").glob("offline-run-*"))


def test_train_step_returns_the_gradient_norm():
    import jax
    import optax

    from asvd_jax.cl._config import ModelConfig, MethodConfig
    from asvd_jax.cl._methods import build_method
    from asvd_jax.models import load_model
    from asvd_jax.models.llama._adapter import DecoderAdapter
    from asvd_jax.cl._train import make_train_step
    from asvd_jax.data import Example, Task

    model, tok, _ = load_model(ModelConfig(family="llama", source="random", random_width=32))
    adapter = DecoderAdapter(model, tok, max_len=96, batch_size=2, eval_batch_size=2)
    method = build_method(MethodConfig(name="seqft"), lambda ctx: optax.sgd(0.0))
    task = Task("t", "Answer yes or no.", ("yes", "no"), (), (), ())
    batch = adapter.train_batch([(task, Example("a b c", "yes")), (task, Example("d e", "no"))])
    params = adapter.params
    grads = jax.grad(lambda p: adapter.loss(p, batch))(params)
    want = np.sqrt(sum(np.sum(np.asarray(g, np.float64) ** 2) for g in jax.tree.leaves(grads)))
    opt = optax.sgd(0.0)
    step = make_train_step(adapter, method, opt)
    copy = jax.tree.map(lambda x: x.copy(), params)
    *_, gnorm = step(copy, None, opt.init(copy), batch)
    assert float(gnorm) == pytest.approx(want, rel=1e-5)


# ------------------------------------------------------------------------------- capacity
def test_capacity_file_after_each_task(resumed_run):
    from safetensors.numpy import load_file

    run_dir, metrics = resumed_run
    cap = json.loads((run_dir / "capacity.json").read_text())
    assert [t["task"] for t in cap["tasks"]] == metrics["tasks"]  # resume rewrote, no duplicates
    first, second = cap["tasks"]
    q = "layers/0/attn/q_proj/kernel"
    m0, m1 = first["matrices"][q], second["matrices"][q]
    d = m0["min_dim"]
    # Task 1: nothing protected; progressive policy: task 2 of 2 protects floor(d / 2).
    assert (m0["protected"], m0["free"], m0["free_energy"], m0["projected_free"]) == (0, d, 1.0, d - d // 2)
    plan = json.loads(next((run_dir / "rank_plans").glob("task-0001-*.json")).read_text())
    k = {e["path"]: e["k"] for e in plan["entries"]}[q]
    assert (m1["protected"], m1["free"], m1["projected_free"]) == (k, d - k, None)  # last task
    # Free energy of the spectrum task 2's plan was made from (the weights after task 1),
    # against a float64 SVD; the method's own SVD ran in float32.
    s = np.linalg.svd(_TASK1_END["q_proj"], compute_uv=False)
    assert_close(m1["free_energy"], np.sum(s[k:] ** 2) / np.sum(s ** 2), "float32")
    # The exported model is the one after task 2: it differs from the weights after task 1.
    w = load_file(str(run_dir / "model" / "model.safetensors"))["model.layers.0.self_attn.q_proj.weight"]
    assert not np.allclose(w.T, _TASK1_END["q_proj"])
    assert second["by_type"]["attn/q_proj"]["free_fraction"] == pytest.approx((d - k) / d)


def test_capacity_record_on_known_spectrum():
    import asvd_jax as aj
    from asvd_jax.analysis._capacity import capacity_record

    rng = np.random.default_rng()
    u, _ = np.linalg.qr(rng.normal(size=(6, 6)))
    v, _ = np.linalg.qr(rng.normal(size=(4, 4)))
    s = np.sort(rng.uniform(0.5, 3.0, 4))[::-1]
    w = (u[:, :4] * s) @ v.T
    params = {"layers": {"0": {"q_proj": {"kernel": w}}, "1": {"q_proj": {"kernel": w.copy()}}}}
    targets = aj.select_targets(params, include=["q_proj"])
    policy = {"rank_policy": "uniform", "fraction": 0.5, "trr": 0.8}
    rec = capacity_record(params, targets, {"layers/0/q_proj/kernel": 1, "layers/1/q_proj/kernel": 3},
                          policy, stage=1, num_stages=3, task="t")
    m = rec["matrices"]["layers/0/q_proj/kernel"]
    assert (m["min_dim"], m["protected"], m["free"], m["projected_free"]) == (4, 1, 3, 2)
    assert m["free_energy"] == pytest.approx(np.sum(s[1:] ** 2) / np.sum(s ** 2), rel=1e-12)
    m = rec["matrices"]["layers/1/q_proj/kernel"]
    assert m["free_energy"] == pytest.approx(s[3] ** 2 / np.sum(s ** 2), rel=1e-12)
    # Given the spectrum the plan was made from, no SVD of params: those values are used.
    given = capacity_record(params, targets, {"layers/0/q_proj/kernel": 1, "layers/1/q_proj/kernel": 3},
                            policy, 1, 3, "t", {"layers/0/q_proj/kernel": np.array([2.0, 1.0, 1.0, 0.0])})
    assert given["matrices"]["layers/0/q_proj/kernel"]["free_energy"] == pytest.approx(2 / 6)
    assert given["matrices"]["layers/1/q_proj/kernel"]["free_energy"] == m["free_energy"]
    assert rec["by_type"]["q_proj"] == {"free_fraction": pytest.approx(0.5), "min_free": 1,
                                        "free_energy": pytest.approx(np.mean(
                                            [np.sum(s[1:] ** 2), s[3] ** 2]) / np.sum(s ** 2))}


def test_projected_rank_per_policy():
    from asvd_jax.analysis._capacity import projected_rank

    prog = {"rank_policy": "progressive"}
    assert [projected_rank(prog, t, 4, 10, 0, True) for t in range(5)] == [0, 2, 5, 7, None]
    paper = {"rank_policy": "paper", "trr": 0.8}
    assert projected_rank(paper, 1, 3, 10, 0, False) == 8  # no plan yet: trr * d
    assert projected_rank(paper, 2, 3, 10, 6, True) == 6  # carried forward
    assert projected_rank({"rank_policy": "energy"}, 1, 3, 10, 0, False) is None


def test_report_heatmap_and_floor_warning(resumed_run, capsys):
    from asvd_jax.cli import main

    run_dir, _ = resumed_run
    assert main(["report", str(run_dir), "--capacity-floor", "0.6", "--write"]) == 0
    out = capsys.readouterr().out
    assert (run_dir / "capacity.png").stat().st_size > 0
    assert "WARNING: 14 matrices" in out and "layers/0/attn/q_proj/kernel: free rank" in out
    assert main(["report", str(run_dir), "--capacity-floor", "0.0"]) == 0
    assert "WARNING" not in capsys.readouterr().out


def test_low_capacity_uses_the_projection():
    from asvd_jax.analysis._capacity import capacity_warnings, low_capacity

    rec = {"task": "b", "matrices": {
        "layers/0/q/kernel": {"min_dim": 10, "free": 8, "projected_free": 0},
        "layers/0/k/kernel": {"min_dim": 10, "free": 8, "projected_free": None},
        "stack/v/kernel": {"min_dim": 10, "free": [9, 1], "projected_free": [9, 1]}}}
    assert low_capacity(rec, 0.2) == [("layers/0/q/kernel", 0, 10), ("stack/v/kernel[1]", 1, 10)]
    assert capacity_warnings({"tasks": [rec]}, 0.2)[0].startswith("WARNING: 2 matrices")
    assert capacity_warnings({"tasks": [rec]}, 0.0) == []


# ----------------------------------------------------------------------------- model card
def test_model_card_in_hf_export(resumed_run):
    import yaml

    run_dir, metrics = resumed_run
    text = (run_dir / "model" / "README.md").read_text()
    assert text.startswith("---\n")
    front, body = text[4:].split("\n---\n", 1)
    meta = yaml.safe_load(front)
    assert meta["library_name"] == "transformers" and meta["pipeline_tag"] == "text-generation"
    assert {"asvd-jax", "continual-learning", "asvd"} <= set(meta["tags"])
    assert "base_model" not in meta  # a random init has none
    assert "randomly initialised llama" in body
    for i, task in enumerate(metrics["tasks"]):
        assert f"{i + 1}. {task}" in body
    assert "rank policy: `progressive`" in body
    acc = metrics["accuracy_matrix"]
    row = f"| {metrics['tasks'][1]} | " + " | ".join(f"{100 * a:.1f}" for a in acc[1]) + " |"
    assert row in body
    assert f"| average accuracy (%) | {100 * metrics['summary']['average_accuracy']:.1f} |" in body


def test_model_card_base_model_of_packaged_and_hub_models():
    from asvd_jax.cl._model_card import base_model

    assert base_model(load_config(None, [])) == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert base_model(load_config(None, ["model.family=bert", "model.source=minilm"])) == \
        "sentence-transformers/all-MiniLM-L6-v2"
    assert base_model(load_config(None, ["model.source=hub", "model.path=org/name"])) == "org/name"


@pytest.mark.parametrize("sets, want", [
    (["method.name=ewc", "method.ewc_lambda=1e6", "method.add_ewc_lambda=5"], "1e+06"),
    (["method.add_ewc=true", "method.ewc_lambda=1e6"], "1e+06"),
    (["method.add_ewc=true", "method.ewc_lambda=5", "method.add_ewc_lambda=1e6"], "1e+06"),
    (["method.ewc_lambda=1e6", "method.add_ewc_lambda=5"], None),
    (["method.name=seqft", "method.add_ewc=true", "method.ewc_lambda=1e6"], None)])
def test_model_card_names_the_ewc_penalty(sets, want):
    from asvd_jax.cl._model_card import model_card

    metrics = {"tasks": ["a"], "rows": [], "protocol": "options"}
    card = model_card(metrics, load_config(None, sets))
    lines = [ln for ln in card.splitlines() if ln.startswith("- EWC penalty")]
    assert lines == ([f"- EWC penalty, lambda {want}"] if want else [])


# --------------------------------------------------------------------- old checkpoint layout
@pytest.mark.slow
def test_run_directory_of_the_old_layout_resumes(tmp_path, monkeypatch):
    """Task 1 checkpointed as versions before CheckpointManager did (checkpoints/task-0000/
    with meta.json); the resumed run reads it and ends with the uninterrupted run's metrics."""
    from _helpers.checkpoint import save_legacy

    from asvd_jax.cl import _runner
    from asvd_jax.cl._checkpoint import Checkpointer

    class OldLayout(Checkpointer):
        def save(self, name, groups, meta, raw=None):
            save_legacy(self.root, name, groups, meta, {g: v for g, v in (raw or {}).items() if v})
            return name

    fx = write_fixture(str(tmp_path / "fixture"), n_train=16, n_test=8)
    overrides = TINY + [f"data.path={fx}", "run.trackers=[]", "checkpoint.export_hf=false"]
    full = run(load_config(None, overrides), run_dir=str(tmp_path / "full"))
    monkeypatch.setattr(_runner, "Checkpointer", OldLayout)
    run(load_config(None, overrides + ["run.stop_after_task=0"]), run_dir=str(tmp_path / "old"))
    assert (tmp_path / "old" / "checkpoints" / "task-0000" / "meta.json").is_file()
    tasks = tmp_path / "old" / "checkpoints" / "tasks"  # the managers' folders stay empty
    assert not tasks.exists() or not any(tasks.iterdir())
    monkeypatch.setattr(_runner, "Checkpointer", Checkpointer)
    resumed = run(load_config(None, overrides), run_dir=str(tmp_path / "old"), resume=True)
    for m in (full, resumed):
        m.pop("timing"), m.pop("name")
        for row in m["rows"]:
            row["train"].pop("seconds")
    assert json.loads(json.dumps(resumed)) == json.loads(json.dumps(full))
    assert Checkpointer(tmp_path / "old").latest()["name"] == "task-0001"
