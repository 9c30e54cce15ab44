"""``method.add_ewc``: this method with EWC's penalty added (the projection still last)."""

import numpy as np
import pytest
from _helpers.runs import TINY_RUN

from asvd_jax.cl import ConfigError, load_config, run

BASE = TINY_RUN + ["data.max_len=64", "train.batch_size=8", "eval.batch_size=16",
                   "checkpoint.export_hf=false", "eval.zero_shot=false", "method.ewc_lambda=1e6"]


def _losses(m):
    return [r["train"]["losses"] for r in m["rows"]]


def test_without_projection_it_is_the_ewc_baseline(tmp_path):
    # projection "none" keeps the bases but projects nothing, so asvd + EWC's penalty must
    # train exactly as the EWC baseline (same inner chain, same Fisher, same penalty).
    # The penalty's strength comes from add_ewc_lambda when it is set (ewc_lambda is EWC's).
    ewc = run(load_config(None, BASE + ["method.name=ewc"]), run_dir=str(tmp_path / "ewc"))
    both = run(load_config(None, BASE + ["method.name=asvd", "method.add_ewc=true",
                                         "method.ewc_lambda=1e2", "method.add_ewc_lambda=1e6",
                                         "method.projection=none"]), run_dir=str(tmp_path / "b"))
    np.testing.assert_allclose(np.concatenate(_losses(both)), np.concatenate(_losses(ewc)),
                               rtol=1e-5)
    assert both["accuracy_matrix"] == ewc["accuracy_matrix"]
    rec = both["rows"][0]["record"]["ewc"]
    assert rec["fisher_samples"] > 0 and rec["ewc_lambda"] == 1e6
    assert both["rows"][1]["record"]["ewc"]["fisher_skipped"]  # the last task: no Fisher


def test_penalty_changes_training_and_projection_stays_exact(tmp_path):
    plain = run(load_config(None, BASE + ["method.name=asvd"]), run_dir=str(tmp_path / "a"))
    both = run(load_config(None, BASE + ["method.name=asvd", "method.add_ewc=true"]),
               run_dir=str(tmp_path / "b"))
    first_p, second_p = _losses(plain)
    first_b, second_b = _losses(both)
    assert first_b == first_p  # no penalty before the first boundary
    assert second_b[0] == pytest.approx(second_p[0], rel=1e-6)  # penalty 0 at the anchor
    assert second_b[1:] != second_p[1:]  # then it pulls
    leak = both["rows"][1]["record"]["leakage"]
    assert leak["max"] < 1e-5, leak
    assert both["rows"][1]["record"]["ewc"]["ewc_lambda"] == 1e6  # add_ewc_lambda unset: ewc_lambda
    assert both["rows"][1]["record"]["rank_summary"] == plain["rows"][1]["record"]["rank_summary"]


def test_other_methods_ignore_it_and_bad_lambdas_are_named():
    # Like the rank policy, add_ewc is asvd's: a preset that sets it still runs its baselines
    # with --set method.name=seqft / ewc.
    from asvd_jax.cl._methods import SequentialFineTuning, build_method

    config = load_config(None, ["method.name=seqft", "method.add_ewc=true"])
    assert type(build_method(config.method, inner=None)) is SequentialFineTuning
    for key in ("ewc_lambda", "add_ewc_lambda"):
        with pytest.raises(ConfigError, match=f"method.{key}: must be >= 0"):
            load_config(None, [f"method.{key}=-1"])


@pytest.mark.slow  # a three-task run (~40 s here); the pieces have default-tier tests
def test_fisher_compiles_once_per_task_shape_and_not_after_the_last_task(tmp_path, monkeypatch):
    """Three tasks, the first two of one shape: the one jitted Fisher step of the run compiles
    once for both; the last task computes none."""
    import dataclasses

    from asvd_jax.cl._sequence import load_sequence
    from asvd_jax.cl.baselines import _ewc
    from asvd_jax.data import TaskSequence

    built = []

    def counting(*args, **kwargs):
        built.append(real(*args, **kwargs))
        return built[-1]

    real = _ewc.fisher_step
    monkeypatch.setattr(_ewc, "fisher_step", counting)
    config = load_config(None, BASE + ["method.name=asvd", "method.add_ewc=true", "data.max_train_per_task=8",
                                       "data.max_eval_per_task=4", "eval.lm_loss=false"])
    topic, mood = load_sequence(config.data).tasks
    again = dataclasses.replace(topic, name="topic_again", train=topic.train[::-1])
    m = run(config, run_dir=str(tmp_path / "r"), sequence=TaskSequence("three", (topic, again, mood)))
    records = [r["record"]["ewc"] for r in m["rows"]]
    assert [r["fisher_samples"] for r in records] == [8, 8, 0]
    assert records[2]["fisher_skipped"] == "last task of the sequence"
    assert len(built) == 1 and built[0]._cache_size() == 1
