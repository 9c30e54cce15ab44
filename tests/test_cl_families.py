"""The runner on the encoder (BERT) and encoder-decoder (T5) families, tiny random models."""

import numpy as np
import pytest
from _helpers.runs import TINY_RUN
from tolerances import tolerance

from asvd_jax.cl import RunError, load_config, run

BASE = TINY_RUN + ["data.max_len=96"]


@pytest.mark.slow
@pytest.mark.parametrize("family", ["bert", "t5"])
def test_family_runs_end_to_end(tmp_path, family):
    m = run(load_config(None, BASE + [f"model.family={family}"]), run_dir=str(tmp_path / family))
    assert m["status"] == "complete"
    assert np.asarray(m["accuracy_matrix"]).shape == (2, 2)
    # The applied update's protected share is at float32 rounding (~6e-6 measured).
    assert m["rows"][1]["record"]["leakage"]["max"] < tolerance("float32")["rtol"]
    assert (tmp_path / family / "model" / "model.safetensors").is_file()
    if family == "bert":
        assert m["protocol"].startswith("options") and "general_ability" not in m
    else:
        assert "option_accuracy_matrix" in m


def test_option_pool_scores_over_every_answer_of_the_sequence(tmp_path):
    """eval.option_pool=sequence: the encoder may answer with another task's label word."""
    from asvd_jax.cl._option_pool import option_pool

    cfg = BASE + ["model.family=bert", "eval.option_pool=sequence", "method.name=seqft",
                  "checkpoint.export_hf=false", "eval.zero_shot=false", "eval.lm_loss=false"]
    m = run(load_config(None, cfg), run_dir=str(tmp_path / "pool"))
    assert m["status"] == "complete" and "all" in m["protocol"]
    evals = m["rows"][-1]["eval"]
    own = [{o.lower() for o in e["per_class_accuracy"]} for e in evals]
    pool = set().union(*own)
    preds = [set(e["predictions"]) for e in evals]
    assert all(p <= pool for p in preds)  # every prediction is a label word of the sequence
    # With 2 tasks' words in the pool, the random tiny model answers some inputs with the
    # other task's word (scored wrong), which restricted scoring could never do.
    assert any(p - o for p, o in zip(preds, own))

    class NoPool:
        def evaluate(self, params, task, examples):
            return {}

    from types import SimpleNamespace

    tasks = [SimpleNamespace(name="a", options=("x", "y")), SimpleNamespace(name="b", options=("y", "z"))]
    assert option_pool("task", tasks, NoPool()) is None
    with pytest.raises(ValueError, match="NoPool adapter cannot score"):
        option_pool("sequence", tasks, NoPool())


def test_training_tasks_see_the_answers_of_every_task_so_far():
    from types import SimpleNamespace

    from asvd_jax.cl._option_pool import training_tasks
    from asvd_jax.data import Example, Task

    ex = lambda label: Example(text="t", label=label)  # noqa: E731
    tasks = [Task("a", "i", ("x", "y"), (ex("x"),), (), (ex("y"),)),
             Task("b", "i", ("z", "w"), (ex("w"),), (), (ex("z"),)),
             Task("c", "i", ("v", "x"), (ex("v"),), (), (ex("x"),))]
    enc = SimpleNamespace(trains_on_options=True)
    assert training_tasks("task", tasks, enc) == tuple(tasks)
    seen = training_tasks("seen", tasks, enc)
    # Own options first (labels keep their place), then the earlier tasks' answers, no repeats.
    assert [t.options for t in seen] == [("x", "y"), ("z", "w", "x", "y"), ("v", "x", "y", "z", "w")]
    assert [t.train for t in seen] == [t.train for t in tasks]
    joint = training_tasks("seen", tasks, enc, joint=True)
    assert joint[0].options == ("x", "y", "z", "w", "v")
    with pytest.raises(ValueError, match="does not contrast answer options"):
        training_tasks("seen", tasks, SimpleNamespace())


def test_training_option_pool_seen_trains_the_encoder_against_earlier_answers(tmp_path):
    """train.option_pool=seen: stage 2's batches and early stopping score over both tasks' words."""
    from asvd_jax.cl import Runner

    cfg = BASE + ["model.family=bert", "eval.option_pool=sequence", "train.option_pool=seen",
                  "method.name=asvd", "checkpoint.export_hf=false", "eval.zero_shot=false",
                  "eval.lm_loss=false", "train.patience=2", "train.eval_every=1",
                  "train.stop_holdout=4", "train.epochs=2"]
    runner = Runner(load_config(None, cfg), run_dir=str(tmp_path / "seen"))
    runner.setup()
    first, second = (items[0][0] for _, items in runner.stages)
    t0, t1 = runner.tasks
    assert first.options == t0.options
    assert second.options == tuple(dict.fromkeys([*t1.options, *t0.options]))
    batch = runner.adapter.train_batch(runner.stages[1][1][:4])
    runner.trackers.close()
    assert (batch["option_valid"].sum(1) == len(second.options)).all()
    m = run(load_config(None, cfg), run_dir=str(tmp_path / "run"))
    assert m["status"] == "complete"
    assert all(r["train"]["early_stopping"]["history"] for r in m["rows"])
    with pytest.raises(RunError, match="train.option_pool=seen: the DecoderAdapter"):
        run(load_config(None, BASE + ["train.option_pool=seen"]), run_dir=str(tmp_path / "dec"))
