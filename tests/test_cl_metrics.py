import math

import numpy as np
import pytest

from asvd_jax import metrics as m
from tolerances import assert_close


def test_hand_computed_three_tasks():
    # Rows: after task 0, 1, 2.  Worked by hand:
    # AA = (0.5 + 0.6 + 0.9) / 3 = 2/3
    # BWT = ((0.5 - 0.9) + (0.6 - 0.8)) / 2 = -0.3   (negative: forgetting)
    # FWT with z = (0.3, 0.2, 0.1): ((0.4 - 0.2) + (0.3 - 0.1)) / 2 = 0.2
    # forgetting: task 0 max(0.9, 0.7) - 0.5 = 0.4; task 1 max(0.4, 0.8) - 0.6 = 0.2 -> 0.3
    r = [[0.9, 0.4, 0.2], [0.7, 0.8, 0.3], [0.5, 0.6, 0.9]]
    assert_close(m.average_accuracy(r), 2 / 3, "float64")
    assert_close(m.backward_transfer(r), -0.3, "float64")
    assert_close(m.forward_transfer(r, [0.3, 0.2, 0.1]), 0.2, "float64")
    assert_close(m.forgetting(r), 0.3, "float64")


def test_no_forgetting_and_positive_transfer():
    # Accuracy only grows: BWT > 0 and forgetting negative (no clipping at 0).
    r = [[0.5, 0.0], [0.7, 0.9]]
    assert_close(m.backward_transfer(r), 0.2, "float64")
    assert_close(m.forgetting(r), -0.2, "float64")
    s = m.summarize(r, zero_shot=[0.1, 0.2])
    assert_close(s["fwt"], -0.2, "float64")
    assert_close(s["average_accuracy"], 0.8, "float64")


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_random_matrices_against_loops(seed):
    rng = np.random.default_rng(seed)
    t = int(rng.integers(2, 7))
    r = rng.uniform(size=(t, t))
    z = rng.uniform(size=t)
    bwt = sum(r[t - 1, j] - r[j, j] for j in range(t - 1)) / (t - 1)
    fwt = sum(r[j - 1, j] - z[j] for j in range(1, t)) / (t - 1)
    forg = sum(max(r[i, j] for i in range(j, t - 1)) - r[t - 1, j] for j in range(t - 1)) / (t - 1)
    assert_close(m.average_accuracy(r), r[t - 1].sum() / t, "float64")
    assert_close(m.backward_transfer(r), bwt, "float64")
    assert_close(m.forward_transfer(r, z), fwt, "float64")
    assert_close(m.forgetting(r), forg, "float64")
    assert m.forgetting(r) >= -m.backward_transfer(r) - 1e-12  # max >= the diagonal entry
    assert_close(m.plasticity(r), np.trace(r) / t, "float64")


def test_single_task_and_bad_input():
    assert math.isnan(m.backward_transfer([[0.5]]))
    assert m.average_accuracy([[0.5]]) == 0.5
    with pytest.raises(ValueError, match="square"):
        m.average_accuracy([[0.1, 0.2]])
    with pytest.raises(ValueError, match="NaN"):
        m.backward_transfer([[0.1, np.nan], [0.2, 0.3]])
    with pytest.raises(ValueError, match="zero_shot"):
        m.forward_transfer([[0.1, 0.2], [0.2, 0.3]], [0.1])


def test_general_ability_retention():
    g = m.general_ability_retention(2.0, 2.5)
    assert_close(g["lm_loss_delta"], 0.5, "float64")
    assert_close(g["perplexity_ratio"], math.exp(0.5), "float64")
    with pytest.raises(ValueError, match="lm_loss_after"):
        m.general_ability_retention(2.0, float("nan"))


def test_forgetting_ignores_rows_before_the_task_was_trained():
    # Task 1 scores 0.9 after task 0 (forward transfer), 0.6 after its own training, 0.6 at the
    # end: it lost nothing it had learned. By hand: task 0 0.8 - 0.5 = 0.3, task 1 0.6 - 0.6 = 0
    # -> 0.15 (the old max over all earlier rows gave (0.3 + 0.3) / 2 = 0.3).
    r = [[0.8, 0.9, 0.1], [0.7, 0.6, 0.2], [0.5, 0.6, 0.9]]
    assert_close(m.forgetting(r), 0.15, "float64")
    # plasticity = (0.8 + 0.6 + 0.9) / 3
    assert_close(m.plasticity(r), 2.3 / 3, "float64")
    assert_close(m.summarize(r)["plasticity"], 2.3 / 3, "float64")


def test_gaps_to_baseline():
    g = m.gaps({"average_accuracy": 0.6, "plasticity": 0.7, "bwt": -0.05, "forgetting": 0.1},
               {"average_accuracy": 0.5, "plasticity": 0.8, "bwt": -0.2})
    assert_close(g["average_accuracy_gap"], 0.1, "float64")
    assert_close(g["plasticity_gap"], -0.1, "float64")
    assert_close(g["bwt_gap"], 0.15, "float64")
    assert "forgetting_gap" not in g  # the baseline has none


def test_prediction_stats_hand_computed():
    labels = ["a", "a", "a", "b", "b", "c"]
    preds = ["a", "a", "b", "b", "a", "a"]
    s = m.prediction_stats(labels, preds, options=("a", "b", "c", "d"))
    # recall: a 2/3, b 1/2, c 0/1, d no examples
    assert s["per_class_accuracy"] == {"a": 2 / 3, "b": 0.5, "c": 0.0, "d": None}
    # F1 = 2tp / (n + p): a 4/(3+4), b 2/(2+2), c 0 -> mean over a, b, c
    assert_close(s["macro_f1"], (4 / 7 + 0.5 + 0.0) / 3, "float64")
    assert s["top_prediction"] == "a"
    assert_close(s["top_share"], 4 / 6, "float64")
    assert s["collapsed"] is False
    c = m.prediction_stats(["a", "b", "c", "a", "b"], ["x", "x", "x", "x", "x"], options=("a", "b", "c"))
    assert c["collapsed"] is True and c["top_prediction"] == "x" and c["macro_f1"] == 0.0
    assert c["per_class_accuracy"] == {"a": 0.0, "b": 0.0, "c": 0.0}
    # exactly at the threshold is not collapse (4 of 5 = 0.8)
    assert m.prediction_stats(list("aaaab"), list("aaaab"))["collapsed"] is False
    with pytest.raises(ValueError, match="predictions"):
        m.prediction_stats(["a"], ["a", "b"])


def test_bootstrap_over_seeds_hand_computed():
    # Two seeds with differences 0.1 and 0.3: resampled means are 0.1 (p 1/4), 0.2 (1/2),
    # 0.3 (1/4), so the 2.5th / 97.5th percentiles are exactly 0.1 and 0.3.
    b = m.paired_bootstrap([0.6, 0.8], [0.5, 0.5], n_boot=4000, seed=1)
    assert_close(b["estimate"], 0.2, "float64")
    assert_close(b["low"], 0.1, "float64")
    assert_close(b["high"], 0.3, "float64")
    # Three seeds: each extreme has probability 1/27 > 2.5%, so the interval is the range.
    d = [-0.016, 0.064, -0.024]
    b = m.paired_bootstrap(d, [0.0, 0.0, 0.0], n_boot=20000, seed=2)
    assert_close(b["low"], -0.024, "float64")
    assert_close(b["high"], 0.064, "float64")
    assert_close(b["estimate"], np.mean(d), "float64")
    # Equal differences: a zero-width interval.
    b = m.paired_bootstrap([0.7, 0.9, 0.4], [0.6, 0.8, 0.3], n_boot=500)
    assert_close(b["low"], 0.1, "float64")
    assert_close(b["high"], 0.1, "float64")


def test_bootstrap_over_seeds_matches_exact_enumeration():
    # Five seeds: the bootstrap distribution of the mean has 5**5 equally likely draws;
    # Monte Carlo percentiles must approach the exact ones.
    import itertools

    rng = np.random.default_rng(0)
    d = rng.normal(size=5)
    means = np.sort([np.mean(c) for c in itertools.product(d, repeat=5)])
    lo, hi = np.percentile(means, [2.5, 97.5])
    b = m.paired_bootstrap(d, np.zeros(5), n_boot=200000, seed=3)
    sd = np.std(means)
    assert abs(b["low"] - lo) < 0.05 * sd and abs(b["high"] - hi) < 0.05 * sd


def test_bootstrap_over_examples_hand_computed():
    # One seed, one task, two examples with differences 0 and 1 (method right on the second
    # only): resampled accuracy differences 0 (1/4), 0.5 (1/2), 1 (1/4) -> interval [0, 1].
    b = m.paired_bootstrap([[[1, 1]]], [[[1, 0]]], examples=True, n_boot=4000, seed=0)
    assert_close(b["estimate"], 0.5, "float64")
    assert b["low"] == 0.0 and b["high"] == 1.0
    # Identical predictions: the interval collapses to 0 whatever the resampling.
    same = [[np.array([1, 0, 1]), np.array([0, 1])]] * 3
    b = m.paired_bootstrap(same, same, examples=True, n_boot=300)
    assert b["low"] == b["high"] == b["estimate"] == 0.0
    # Task means, then the task average: (1 + 0) / 2 over two tasks of different sizes.
    b = m.paired_bootstrap([[[1, 1, 1], [0]]], [[[0, 0, 0], [0]]], examples=True, n_boot=200)
    assert b["low"] == b["high"] == b["estimate"] == 0.5
    with pytest.raises(ValueError, match="task 0"):
        m.paired_bootstrap([[[1, 1]]], [[[1]]], examples=True)
    with pytest.raises(ValueError, match="same number"):
        m.paired_bootstrap([0.1], [0.1, 0.2])


def test_bootstrap_over_examples_widens_the_seed_interval():
    # Per-seed AA differences equal across seeds but each from 40 noisy examples: the seed
    # bootstrap sees no spread, the two-stage one does (the finite test set).
    rng = np.random.default_rng(5)
    meth = [[rng.integers(0, 2, 40)] for _ in range(3)]
    base = [[np.roll(x[0], 1)] for x in meth]
    aa_m = [float(np.mean(x[0])) for x in meth]
    aa_b = [float(np.mean(x[0])) for x in base]
    seed_only = m.paired_bootstrap(aa_m, aa_b, n_boot=2000)
    both = m.paired_bootstrap(meth, base, examples=True, n_boot=2000)
    assert_close(both["estimate"], seed_only["estimate"], "float64")
    assert both["high"] - both["low"] > seed_only["high"] - seed_only["low"] + 0.05


def test_metrics_sit_below_the_trainer_and_the_analysis(tmp_path):
    # analysis reads run directories with the same metrics without importing the trainer.
    import json
    import subprocess
    import sys

    rows = [{"stage": s, "index": i, "eval": [{"task": "a", "accuracy": acc[0]},
                                               {"task": "b", "accuracy": acc[1]}]}
            for i, (s, acc) in enumerate((("a", (1.0, 0.0)), ("b", (0.5, 1.0))))]
    (tmp_path / "metrics.json").write_text(json.dumps({"tasks": ["a", "b"], "rows": rows}))
    code = ("import sys, asvd_jax.analysis as an; "
            f"print(an.run_summary({str(tmp_path)!r})['bwt']); "
            "print(sorted(m for m in sys.modules if m.startswith('asvd_jax.cl')))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["-0.5", "[]"]


def _zero_eval(predictions_per_task, classes=("negative", "positive")):
    return [{"task": f"t{j}", "predictions": list(p), "per_class_accuracy": {c: 0.0 for c in classes}}
            for j, p in enumerate(predictions_per_task)]


def test_zero_shot_answer_share_counts_label_answers():
    from asvd_jax.metrics import zero_shot_answer_share

    ev = _zero_eval([["", "", "negative", "positive"], ["positive", "no idea"]])
    assert_close(zero_shot_answer_share(ev), np.mean([2 / 4, 1 / 2]), "float64")
    assert zero_shot_answer_share([{"task": "gen", "accuracy": 0.3}]) is None  # no predictions
    assert zero_shot_answer_share(None) is None


def test_fwt_from_option_scoring_when_zero_shot_generation_gives_no_answers():
    from asvd_jax.metrics import choose_fwt

    eos = _zero_eval([[""] * 4, [""] * 4, ["negative", "", "", ""]])  # share 1/12
    s = {"fwt": 0.4, "option_fwt": -0.05, "average_accuracy": 0.6}
    choose_fwt(s, eos, "generate (greedy exact match)")
    assert s["fwt"] == -0.05 and s["generation_fwt"] == 0.4 and s["fwt_from"] == "options"
    assert_close(s["zero_shot_answer_share"], 1 / 12, "float64")
    # Without option scoring there is no fair reference: no headline FWT.
    s = {"fwt": 0.4}
    choose_fwt(s, eos, "generate (greedy exact match)")
    assert "fwt" not in s and s["generation_fwt"] == 0.4 and s["fwt_from"] == "none"


def test_fwt_stays_headline_when_answers_are_labels_or_protocol_scores_options():
    from asvd_jax.metrics import choose_fwt

    ok = _zero_eval([["negative", "positive", "positive", ""]])  # share 3/4
    s = {"fwt": 0.1, "option_fwt": 0.2}
    choose_fwt(s, ok, "generate (greedy exact match)")
    assert s["fwt"] == 0.1 and s["fwt_from"] == "headline" and "generation_fwt" not in s
    eos = _zero_eval([[""] * 4])
    for protocol in ("options (restricted scoring)", None):  # option scoring needs no format
        s = {"fwt": 0.1, "option_fwt": 0.2}
        choose_fwt(s, eos, protocol)
        assert s == {"fwt": 0.1, "option_fwt": 0.2, "fwt_from": "headline"}
