import math

import numpy as np
import pytest

from asvd_jax.cl import _metrics as m
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
    forg = sum(max(r[i, j] for i in range(t - 1)) - r[t - 1, j] for j in range(t - 1)) / (t - 1)
    assert_close(m.average_accuracy(r), r[t - 1].sum() / t, "float64")
    assert_close(m.backward_transfer(r), bwt, "float64")
    assert_close(m.forward_transfer(r, z), fwt, "float64")
    assert_close(m.forgetting(r), forg, "float64")
    assert m.forgetting(r) >= -m.backward_transfer(r) - 1e-12  # max >= the diagonal entry


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
