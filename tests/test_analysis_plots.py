"""Plots draw what the analysis functions computed; matplotlib is imported lazily."""

import subprocess
import sys

import numpy as np
import pytest

matplotlib = pytest.importorskip("matplotlib")
matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from asvd_jax import analysis as an  # noqa: E402
from asvd_jax.ranks import RankEntry, RankPlan  # noqa: E402


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def test_import_does_not_pull_matplotlib():
    code = "import sys, asvd_jax.analysis; sys.exit('matplotlib' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


def test_plot_spectra_draws_normalised_spectra(tmp_path):
    rng = np.random.default_rng(0)
    params = {"a": {"kernel": rng.standard_normal((6, 4))}, "b": {"kernel": rng.standard_normal((5, 8))}}
    table = an.spectra_table(params)
    fig = an.plot_spectra(table)
    lines = fig.axes[0].get_lines()
    assert len(lines) == 2
    s = table["b/kernel"].singular_values
    np.testing.assert_allclose(lines[1].get_ydata(), s / s[0])
    np.testing.assert_allclose(lines[1].get_xdata(), np.arange(1, 6) / 5)
    fig.savefig(tmp_path / "spectra.png")
    assert (tmp_path / "spectra.png").stat().st_size > 1000


def test_plot_rank_plan_and_layer_grid(tmp_path):
    entries = tuple(RankEntry(f"layers/{i}/attn/{n}/kernel", (8, 8), 8, 0.5, k, k / 8, 0.5)
                    for i in range(3) for n, k in (("q_proj", i + 1), ("o_proj", 2 * i)))
    plan = RankPlan(entries, "paper", {})
    fig = an.plot_rank_plan(plan)
    img = fig.axes[0].get_images()[0].get_array()
    np.testing.assert_allclose(np.asarray(img), an.plan_grid(plan).values)
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == ["q_proj", "o_proj"]
    fig.savefig(tmp_path / "plan.png")

    kinds, values = an.plans_over_tasks([None, plan, plan])
    fig = an.plot_rank_plans_over_tasks(kinds, values)
    assert len(fig.axes[0].get_lines()) == 2


def test_plot_accuracy_matrix_annotates_entries(tmp_path):
    acc = np.array([[0.9, 0.1, np.nan], [0.5, 0.8, 0.2], [0.4, 0.6, 0.7]])
    fig = an.plot_accuracy_matrix(acc, ["a", "b", "c"])
    texts = sorted(t.get_text() for t in fig.axes[0].texts)
    assert texts == sorted(f"{v:.2f}" for v in acc[np.isfinite(acc)])
    fig.savefig(tmp_path / "acc.png")
    with pytest.raises(ValueError, match="task names"):
        an.plot_accuracy_matrix(acc, ["a"])
    with pytest.raises(ValueError, match="square"):
        an.plot_accuracy_matrix(np.zeros((2, 3)))


def test_plot_output_norms_and_forgetting(tmp_path):
    s = np.array([4.0, 2.0, 1.0])
    n = np.array([2.0, 0.5, 0.01])
    fig = an.plot_output_norms(s, n)
    np.testing.assert_allclose(fig.axes[0].get_lines()[1].get_ydata(), n / n[0])
    with pytest.raises(ValueError, match="1-D"):
        an.plot_output_norms(s, n[:2])
    fig = an.plot_forgetting({"t0": ([0, 1, 2], [0.9, 0.7, 0.6]), "t1": ([1, 2], [0.8, 0.75])})
    assert [list(line.get_xdata()) for line in fig.axes[0].get_lines()] == [[0, 1, 2], [1, 2]]
    fig.savefig(tmp_path / "forgetting.png")


def test_plot_rank_ablation():
    fig = an.plot_rank_ablation([0.75, 0.5, 0.1], {"mlp/down_proj": [1.0, 1.2, 3.0], "attn/q_proj": [1.0, 1.0, 1.1]},
                                baseline=0.9)
    lines = fig.axes[0].get_lines()
    np.testing.assert_allclose(lines[0].get_ydata(), [1.0, 1.2, 3.0])
    assert lines[-1].get_ydata()[0] == 0.9
    with pytest.raises(ValueError, match="down_proj"):
        an.plot_rank_ablation([0.5], {"mlp/down_proj": [1.0, 2.0]})
