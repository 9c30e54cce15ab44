"""Early stopping: the patience rule by hand, and a tiny run that stops and restores."""

import os

import jax
import numpy as np
import pytest
import yaml

from asvd_jax.cl import Runner, load_config
from asvd_jax.cl import _runner
from asvd_jax.cl._config import ConfigError
from asvd_jax.cl._early_stop import EarlyStopper, dev_accuracy, hold_out, make_stopper
from asvd_jax.cl._fixture import write_fixture


def test_patience_rule_by_hand():
    s = EarlyStopper(patience=2, min_delta=0.01, every=5, total_steps=23)
    assert [k for k in range(1, 24) if s.due(k)] == [5, 10, 15, 20, 23]
    w = {"x": jax.numpy.zeros(2)}
    assert not s.update(5, 0.50, {"x": w["x"] + 1})   # best 0.50 @5
    assert not s.update(10, 0.505, {"x": w["x"] + 2})  # +0.005 <= min_delta: bad 1
    assert not s.update(15, 0.60, {"x": w["x"] + 3})   # best 0.60 @15, bad 0
    assert not s.update(20, 0.60, {"x": w["x"] + 4})   # tie: bad 1 (earliest best kept)
    assert s.update(23, 0.55, {"x": w["x"] + 5})       # bad 2: stop
    assert s.best_step == 15 and s.stopped_at == 23
    np.testing.assert_array_equal(s.restore(w)["x"], [3.0, 3.0])
    r = s.record()
    assert r["best_dev_accuracy"] == 0.60 and [h["optimizer_step"] for h in r["history"]] == [5, 10, 15, 20, 23]
    # The state survives a JSON round trip (mid-task checkpoints).
    t = EarlyStopper(2, 0.01, 5, 23)
    t.load_state(yaml.safe_load(yaml.safe_dump(s.state())), {"x": np.ones(2)})
    assert (t.best, t.best_step, t.bad) == (0.60, 15, 2)


def test_config_and_factory():
    cfg = load_config(None, ["train.patience=3", "train.eval_every=4", "train.max_steps=40"])
    st = make_stopper(cfg.train, per_epoch_steps=7, total_steps=40)
    assert (st.patience, st.every, st.total) == (3, 4, 40)
    assert make_stopper(load_config(None, ["train.patience=2"]).train, 7, 40).every == 7  # per epoch
    assert make_stopper(load_config(None, []).train, 7, 40) is None
    with pytest.raises(ConfigError, match="train.patience"):
        load_config(None, ["train.patience=-1"])


def test_hold_out_takes_balanced_training_examples_out():
    from asvd_jax.data import Example, Task

    train = tuple(Example(f"text {i}", "ab"[i % 2]) for i in range(20))
    task = Task("t", "Pick.", ("a", "b"), train=train, dev=(), test=train[:2])
    (rest,), sets = hold_out([task], 6, seed=0)
    held = sets["t"]
    assert len(held) == 6 and sorted(e.label for e in held) == list("aaabbb")
    assert len(rest.train) == 14 and not {e.text for e in held} & {e.text for e in rest.train}
    assert hold_out([task], 6, seed=0)[1]["t"] == held  # seeded
    assert hold_out([task], 0, seed=0) == ((task,), {})
    with pytest.raises(ValueError, match="stop_holdout=20"):
        hold_out([task], 20, seed=0)
    # A task without dev examples cannot stop on dev, but can on a held-out set.
    with pytest.raises(ValueError, match="no dev examples"):
        dev_accuracy(None, types_ns(), None, None, [task])


def types_ns():
    import types

    return types.SimpleNamespace(effective_params=lambda t, f: None)


def _sequence_with_dev(tmp_path):
    fx = write_fixture(str(tmp_path / "fx"), n_train=32, n_test=8)
    with open(fx) as f:
        spec = yaml.safe_load(f)
    for t in spec["tasks"]:
        t["dev_path"] = t["test_path"]
    path = tmp_path / "fx" / "with_dev.yaml"
    path.write_text(yaml.safe_dump(spec))
    return str(path)


def test_tiny_run_stops_and_restores_the_best_weights(tmp_path, monkeypatch):
    # Scripted dev accuracies 0.5, 0.7, 0.6, 0.6 with patience 2 and an evaluation every
    # optimizer step: the task stops after step 4 (of a possible 8) and keeps step 2's weights.
    scores = [0.5, 0.7, 0.6, 0.6, 0.9, 0.9]
    seen = []

    def scripted(adapter, method, trainable, frozen, tasks, stop_sets=None):
        real = dev_accuracy(adapter, method, trainable, frozen, tasks, stop_sets)  # the real path too
        assert 0.0 <= real <= 1.0 and [t.name for t in tasks] == ["topic"]
        assert stop_sets == {}  # train.stop_holdout = 0: the dev split decides
        seen.append(jax.tree.map(lambda x: np.array(x), method.effective_params(trainable, frozen)))
        return scores[len(seen) - 1]

    from asvd_jax.cl import _loop

    monkeypatch.setattr(_loop, "dev_accuracy", scripted)  # the training loop's evaluation
    cfg = load_config(None, [
        "model.source=random", "model.random_width=32", "data.suite=custom",
        f"data.path={_sequence_with_dev(tmp_path)}", "data.max_len=64", "train.lr=3e-3",
        "train.batch_size=4", "train.epochs=1", "train.max_steps=8", "train.patience=2",
        "train.eval_every=1", "method.name=seqft", "eval.batch_size=8", "eval.lm_loss=false",
        "eval.zero_shot=false", "checkpoint.export_hf=false", "run.progress=false",
        "run.stop_after_task=0"])
    runner = Runner(cfg, run_dir=str(tmp_path / "run"))
    m = runner.run()
    train = m["rows"][0]["train"]
    assert train["micro_steps"] == 4 and len(seen) == 4
    es = train["early_stopping"]
    assert es["best_step"] == 2 and es["stopped_at"] == 4 and es["best_dev_accuracy"] == 0.7
    best, last = seen[1], seen[3]
    leaves = jax.tree.leaves(runner.params)
    for got, want in zip(leaves, jax.tree.leaves(best)):
        np.testing.assert_array_equal(np.asarray(got), want)
    # ...and not the last step's weights (training moved them).
    assert any(not np.array_equal(a, b) for a, b in zip(jax.tree.leaves(best), jax.tree.leaves(last)))
    assert os.path.isfile(tmp_path / "run" / "metrics.json")
    from asvd_jax.cl._report import summary_markdown

    assert "topic best 2 (70.0), stopped at 4" in summary_markdown(m)


class Killed(Exception):
    pass


@pytest.mark.slow  # three tiny runs (~40 s on the shared machine)
def test_kill_mid_task_resumes_the_patience_state_and_best_weights(tmp_path, monkeypatch):
    # min_delta 0.99: only the first evaluation (after step 1) can improve, so the best weights
    # are step 1's and must come back from the mid-task checkpoint after a kill at step 3.
    import json

    over = ["model.source=random", "model.random_width=32", "data.suite=custom",
            f"data.path={_sequence_with_dev(tmp_path)}", "data.max_len=64", "train.lr=3e-3",
            "train.batch_size=4", "train.max_steps=6", "train.patience=50", "train.eval_every=1",
            "train.min_delta=0.99", "method.name=seqft", "eval.batch_size=8", "eval.lm_loss=false",
            "eval.zero_shot=false", "checkpoint.export_hf=false", "checkpoint.every_steps=1",
            "run.progress=false", "run.stop_after_task=0"]
    full = Runner(load_config(None, over), run_dir=str(tmp_path / "full"))
    m_full = full.run()
    assert m_full["rows"][0]["train"]["early_stopping"]["best_step"] == 1

    original = _runner.make_train_step

    def dying(adapter, method, opt, *freeze):
        step = original(adapter, method, opt, *freeze)
        calls = {"n": 0}

        def wrapped(*args):
            calls["n"] += 1
            if calls["n"] == 3:
                raise Killed()
            return step(*args)
        return wrapped

    monkeypatch.setattr(_runner, "make_train_step", dying)
    with pytest.raises(Killed):
        Runner(load_config(None, over), run_dir=str(tmp_path / "k")).run()
    monkeypatch.setattr(_runner, "make_train_step", original)
    resumed = Runner(load_config(None, over), run_dir=str(tmp_path / "k"), resume=True)
    m_res = resumed.run()

    def strip(m):
        m = json.loads(json.dumps(m))
        m.pop("timing"), m.pop("name")
        for row in m["rows"]:
            row["train"].pop("seconds")
        return m

    assert strip(m_res) == strip(m_full)
    for a, b in zip(jax.tree.leaves(resumed.params), jax.tree.leaves(full.params)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
