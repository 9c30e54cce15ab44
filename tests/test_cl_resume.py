"""Resume after a kill in the middle of a task, and resume of methods with carry state."""

import json

import pytest
from _helpers.runs import TINY_RUN

from asvd_jax.cl import load_config, run
from asvd_jax.cl._checkpoint import Checkpointer

BASE = TINY_RUN + ["data.max_len=64", "train.batch_size=8", "eval.batch_size=16",
                   "checkpoint.export_hf=false", "eval.zero_shot=false"]


def _strip(m):
    m = json.loads(json.dumps(m))
    m.pop("timing", None)
    m.pop("name", None)
    for row in m["rows"]:
        row["train"].pop("seconds", None)
    return m


class Killed(Exception):
    pass


@pytest.mark.slow
def test_kill_mid_task_then_resume(tmp_path, monkeypatch):
    from asvd_jax.cl import _runner

    overrides = BASE + ["method.name=asvd", "checkpoint.every_steps=1"]
    full = run(load_config(None, overrides), run_dir=str(tmp_path / "full"))

    original = _runner.make_train_step

    from asvd_jax.cl._task_state import state_bases

    def dying(adapter, method, opt, *freeze):
        step = original(adapter, method, opt, *freeze)  # one step for the whole run
        calls = {"n": 0}

        def wrapped(*args):
            if state_bases(args[2]) is not None:  # the optimizer state protects: task 2
                calls["n"] += 1
                if calls["n"] == 3:  # its third batch
                    raise Killed()
            return step(*args)

        return wrapped

    monkeypatch.setattr(_runner, "make_train_step", dying)
    with pytest.raises(Killed):
        run(load_config(None, overrides), run_dir=str(tmp_path / "k"))
    latest = Checkpointer(tmp_path / "k").latest()
    assert latest["kind"] == "step" and latest["stage"] == 1 and latest["micro_step"] == 2
    killed_timing = json.loads((tmp_path / "k" / "metrics.json").read_text())["timing"]
    monkeypatch.setattr(_runner, "make_train_step", original)
    resumed = run(load_config(None, overrides), run_dir=str(tmp_path / "k"), resume=True)
    assert _strip(resumed) == _strip(full)
    # Times add up over the segments: the killed run's total and its model loading count too.
    timing = resumed["timing"]
    assert timing["total"] > killed_timing["total"] > 0
    assert timing["model"] > killed_timing["model"]
    assert timing["total"] >= sum(v for k, v in timing.items() if k != "total") * 0.99


@pytest.mark.slow
@pytest.mark.parametrize("method", [["method.name=ewc"], ["method.name=olora"],
                                    ["method.name=asvd", "method.add_ewc=true"]])
def test_carry_state_survives_resume(tmp_path, method):
    overrides = BASE + method
    full = run(load_config(None, overrides), run_dir=str(tmp_path / "full"))
    run(load_config(None, overrides + ["run.stop_after_task=0"]), run_dir=str(tmp_path / "r"))
    resumed = run(load_config(None, overrides), run_dir=str(tmp_path / "r"), resume=True)
    assert _strip(resumed) == _strip(full)


@pytest.mark.slow
def test_mtl_and_fresh_optimizer_off(tmp_path):
    m = run(load_config(None, BASE + ["method.name=mtl"]), run_dir=str(tmp_path / "mtl"))
    assert [r["stage"] for r in m["rows"]] == ["joint"] and len(m["accuracy_matrix"][0]) == 2
    overrides = BASE + ["method.name=asvd", "train.fresh_optimizer=false", "train.grad_accum=2"]
    full = run(load_config(None, overrides), run_dir=str(tmp_path / "carry"))
    assert full["rows"][1]["train"]["optimizer_steps"] == full["rows"][1]["train"]["micro_steps"] // 2
    run(load_config(None, overrides + ["run.stop_after_task=0"]), run_dir=str(tmp_path / "c2"))
    resumed = run(load_config(None, overrides), run_dir=str(tmp_path / "c2"), resume=True)
    assert _strip(resumed) == _strip(full)  # AdamW moments restored from the task-end checkpoint
