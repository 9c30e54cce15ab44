"""The runner on the encoder (BERT) and encoder-decoder (T5) families, tiny random models."""

import numpy as np
import pytest
from tolerances import tolerance

from asvd_jax.cl import load_config, run

BASE = ["model.source=random", "model.random_width=32", "data.suite=fixture", "data.max_len=96",
        "train.lr=3e-3", "method.stats_examples=16", "data.max_eval_per_task=8",
        "run.progress=false"]


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
