"""The runner on the encoder (BERT) and encoder-decoder (T5) families, tiny random models."""

import numpy as np
import pytest
from _helpers.runs import TINY_RUN
from tolerances import tolerance

from asvd_jax.cl import load_config, run

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
