"""Figures for the analysis numbers. matplotlib is imported only when a plot is drawn.

Every function draws on ``ax`` when given (and returns its figure), otherwise on a new figure
from ``pyplot.subplots``; nothing here selects a backend, so the caller's (inline in a
notebook, Agg in scripts and tests) is used.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

from asvd_jax.analysis._spectra import MatrixSpectrum
from asvd_jax.analysis._tables import LayerGrid, plan_grid


def _axes(ax, figsize):
    if ax is not None:
        return ax.figure, ax
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=figsize, layout="constrained")
    return fig, ax


def plot_spectra(spectra: Mapping[str, Any], *, normalize: bool = True, log: bool = True,
                 ax=None, title: str | None = None):
    """Singular values against their relative index i / min dim, one line per matrix.

    Args:
      spectra: ``{label: singular values}`` or ``{path: MatrixSpectrum}`` (``spectra_table``);
        a stacked leaf's spectra are drawn one line per stack entry.
      normalize: divide each spectrum by its largest value, so shapes compare across layers.
      log: logarithmic y axis (the tail spans orders of magnitude).
    """
    fig, ax = _axes(ax, (6, 4))
    for label, s in spectra.items():
        s = s.singular_values if isinstance(s, MatrixSpectrum) else np.asarray(s, np.float64)
        rows = s.reshape(-1, s.shape[-1])
        for j, row in enumerate(rows):
            y = row / row[0] if normalize and row[0] > 0 else row
            x = np.arange(1, len(row) + 1) / len(row)
            ax.plot(x, y, label=label if j == 0 else None, lw=1.2)
    if log:
        ax.set_yscale("log")
    ax.set_xlabel("singular direction i / min(d_in, d_out)")
    ax.set_ylabel("s_i / s_1" if normalize else "s_i")
    if len(spectra) <= 12:
        ax.legend(fontsize=7)
    ax.set_title(title or "Singular spectra")
    ax.grid(alpha=0.3)
    return fig


def plot_layer_grid(grid: LayerGrid, *, ax=None, title: str = "", cmap: str = "viridis",
                    vmin: float | None = None, vmax: float | None = None, label: str = ""):
    """Heatmap of a :class:`LayerGrid`: layers down, matrix types across, NaN blank."""
    fig, ax = _axes(ax, (1.2 + 0.9 * len(grid.kinds), 1.5 + 0.18 * len(grid.layers)))
    data = np.ma.masked_invalid(grid.values)
    im = ax.imshow(data, aspect="auto", cmap=cmap, vmin=vmin, vmax=vmax, interpolation="nearest")
    ax.set_xticks(range(len(grid.kinds)), [k.split("/")[-1] for k in grid.kinds], rotation=45,
                  ha="right", fontsize=8)
    step = max(1, len(grid.layers) // 15)
    ax.set_yticks(range(0, len(grid.layers), step), [str(grid.layers[i]) for i in
                                                     range(0, len(grid.layers), step)], fontsize=8)
    ax.set_ylabel("layer")
    fig.colorbar(im, ax=ax, label=label)
    ax.set_title(title)
    return fig


def plot_rank_plan(plan: Any, field: str = "protected_fraction", *, ax=None, title: str | None = None):
    """A rank plan's ``field`` (default: protected fraction k / min dim) by layer and type."""
    grid = plan_grid(plan, field)
    bounded = field in ("protected_fraction", "energy_retained")
    return plot_layer_grid(grid, ax=ax, title=title or f"Rank plan: {field.replace('_', ' ')}",
                           vmin=0.0 if bounded else None, vmax=1.0 if bounded else None,
                           label=field.replace("_", " "))


def plot_output_norms(singular_values: Any, output_norms: Any, *, ax=None, title: str | None = None,
                      label: str | None = None, normalize: bool = True):
    """Output norm each singular direction produces on the data, against the singular value.

    With ``normalize`` both curves are divided by their first value, so a direction that
    responds exactly in proportion to its singular value lies on the spectrum's curve.
    """
    fig, ax = _axes(ax, (6, 4))
    s = np.asarray(singular_values, np.float64)
    n = np.asarray(output_norms, np.float64)
    if s.shape != n.shape or s.ndim != 1:
        raise ValueError(f"plot_output_norms: need two 1-D arrays of one length, got {s.shape}, {n.shape}")
    idx = np.arange(1, len(s) + 1)
    ax.plot(idx, s / s[0] if normalize else s, color="0.5", lw=1, label="singular value")
    ax.plot(idx, n / n[0] if normalize else n, lw=1.2, label=label or "output norm on task data")
    ax.set_yscale("log")
    ax.set_xlabel("singular direction i (descending s_i)")
    ax.set_ylabel("relative to direction 1" if normalize else "norm")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    ax.set_title(title or "Output norm per singular direction")
    return fig


def plot_accuracy_matrix(acc: Any, task_names: Sequence[str] | None = None, *, ax=None,
                         title: str | None = None):
    """Heatmap of R[i, j] (row: after training task i; column: evaluated on task j), annotated."""
    r = np.asarray(acc, np.float64)
    if r.ndim != 2 or r.shape[0] != r.shape[1]:
        raise ValueError(f"plot_accuracy_matrix: need a square matrix, got shape {r.shape}")
    names = list(task_names) if task_names is not None else [str(i) for i in range(len(r))]
    if len(names) != len(r):
        raise ValueError(f"plot_accuracy_matrix: {len(names)} task names for {len(r)} tasks")
    fig, ax = _axes(ax, (1.5 + 0.8 * len(r), 1.2 + 0.7 * len(r)))
    im = ax.imshow(np.ma.masked_invalid(r), vmin=0.0, vmax=1.0, cmap="viridis")
    for i in range(len(r)):
        for j in range(len(r)):
            if np.isfinite(r[i, j]):
                ax.text(j, i, f"{r[i, j]:.2f}", ha="center", va="center", fontsize=8,
                        color="white" if r[i, j] < 0.6 else "black")
    ax.set_xticks(range(len(r)), names, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(len(r)), names, fontsize=8)
    ax.set_xlabel("evaluated on task")
    ax.set_ylabel("after training task")
    fig.colorbar(im, ax=ax, label="accuracy")
    ax.set_title(title or "Accuracy matrix")
    return fig


def plot_forgetting(curves: Mapping[str, Any], *, ax=None, title: str | None = None):
    """Accuracy of every task after each training stage, one line per task.

    Args:
      curves: ``{task name: (stages, accuracies)}`` as returned by ``forgetting_curves``.
    """
    fig, ax = _axes(ax, (6, 4))
    from matplotlib.ticker import MaxNLocator

    for name, (stages, accs) in curves.items():
        ax.plot(np.asarray(stages), np.asarray(accs), marker="o", ms=3, label=name)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("after training stage (-1: zero-shot)")
    ax.set_ylabel("accuracy")
    ax.set_ylim(-0.02, 1.02)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    ax.set_title(title or "Accuracy of each task through the sequence")
    return fig


def plot_rank_plans_over_tasks(kinds: Sequence[str], values: Any, *, ax=None, title: str | None = None):
    """Mean protected fraction per matrix type at every task boundary (``plans_over_tasks``)."""
    from matplotlib.ticker import MaxNLocator

    fig, ax = _axes(ax, (6, 4))
    v = np.asarray(values, np.float64)
    for j, kind in enumerate(kinds):
        ax.plot(np.arange(len(v)), v[:, j], marker="o", ms=4, label=kind.split("/")[-1])
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlim(-0.5, len(v) - 0.5)
    ax.set_xlabel("task (0 trains without protection)")
    ax.set_ylabel("mean protected fraction")
    ax.set_ylim(-0.02, 1.02)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    ax.set_title(title or "Protected fraction by matrix type across tasks")
    return fig


def plot_rank_ablation(keep: Sequence[float], losses: Mapping[str, Sequence[float]], *,
                       baseline: float | None = None, ax=None, title: str | None = None):
    """Loss against the kept fraction k / min dim, one line per truncated layer type.

    Args:
      keep: kept fractions (x axis; drawn decreasing from left to right).
      losses: ``{layer type: loss at each kept fraction}``.
      baseline: the unmodified model's loss (a dashed line, kept fraction 1).
    """
    fig, ax = _axes(ax, (6, 4))
    x = np.asarray(keep, np.float64)
    for kind, ys in losses.items():
        ys = np.asarray(ys, np.float64)
        if ys.shape != x.shape:
            raise ValueError(f"plot_rank_ablation: {kind!r} has {ys.size} losses for {x.size} fractions")
        ax.plot(x, ys, marker="o", ms=3, label=kind.split("/")[-1])
    if baseline is not None:
        ax.axhline(baseline, color="0.4", ls="--", lw=1, label="full rank")
    ax.set_xlim(1.02, min(0.0, x.min()) - 0.02)
    ax.set_xlabel("kept fraction of singular directions k / min(d_in, d_out)")
    ax.set_ylabel("loss")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    ax.set_title(title or "Loss under rank-k truncation of one layer type")
    return fig
