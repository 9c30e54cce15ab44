"""Continual-learning metrics over an accuracy matrix (pure numpy).

Conventions (0-based, accuracies as fractions in [0, 1]):

* ``R[i, j]``: accuracy on task ``j`` after training task ``i``; row ``i`` is the evaluation
  after task ``i``, so ``R`` is ``(T, T)`` and ``R[T-1]`` is the final row.
* average accuracy     ``AA  = mean_j R[T-1, j]``
* backward transfer    ``BWT = mean_{j<T-1} (R[T-1, j] - R[j, j])``: **negative means
  forgetting** (the final model is worse on an old task than right after learning it).
* forward transfer     ``FWT = mean_{j>0} (R[j-1, j] - z[j])`` with ``z[j]`` the zero-shot
  accuracy of the initial model on task ``j``: positive means earlier tasks helped a task
  before it was trained.
* forgetting           ``F   = mean_{j<T-1} max_{i<T-1} (R[i, j] - R[T-1, j])``: the drop
  from the best accuracy a task ever had (before the last task) to its final accuracy.
  Entries ``R[i, j]`` with ``i < j`` count in the max as well (Chaudhry et al. take the max
  over all earlier rows); with no positive transfer they never win it. Not clipped at 0:
  a task that only improved has negative forgetting.

With one task BWT, FWT and forgetting are undefined and reported as ``nan``.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np


def _matrix(acc) -> np.ndarray:
    r = np.asarray(acc, dtype=np.float64)
    if r.ndim != 2 or r.shape[0] != r.shape[1] or r.shape[0] == 0:
        raise ValueError(f"accuracy matrix must be square (T, T) with T >= 1, got shape {r.shape}")
    if np.isnan(r).any():
        raise ValueError("accuracy matrix has NaN entries (a task was not evaluated)")
    return r


def average_accuracy(acc) -> float:
    """``mean_j R[T-1, j]``: final accuracy averaged over all tasks."""
    r = _matrix(acc)
    return float(r[-1].mean())


def backward_transfer(acc) -> float:
    """``mean_{j<T-1} (R[T-1, j] - R[j, j])``; negative = forgetting; nan for T = 1."""
    r = _matrix(acc)
    t = r.shape[0]
    if t < 2:
        return math.nan
    return float(np.mean([r[-1, j] - r[j, j] for j in range(t - 1)]))


def forward_transfer(acc, zero_shot: Sequence[float]) -> float:
    """``mean_{j>0} (R[j-1, j] - zero_shot[j])``; nan for T = 1."""
    r = _matrix(acc)
    z = np.asarray(zero_shot, dtype=np.float64)
    t = r.shape[0]
    if z.shape != (t,):
        raise ValueError(f"zero_shot must have one accuracy per task ({t}), got shape {z.shape}")
    if t < 2:
        return math.nan
    return float(np.mean([r[j - 1, j] - z[j] for j in range(1, t)]))


def forgetting(acc) -> float:
    """``mean_{j<T-1} max_{i<T-1} (R[i, j] - R[T-1, j])``; nan for T = 1."""
    r = _matrix(acc)
    t = r.shape[0]
    if t < 2:
        return math.nan
    return float(np.mean([np.max(r[: t - 1, j]) - r[-1, j] for j in range(t - 1)]))


def summarize(acc, zero_shot: Sequence[float] | None = None) -> dict[str, float]:
    """All metrics of one accuracy matrix as a dict (``fwt`` only when zero-shot is given)."""
    out = {
        "average_accuracy": average_accuracy(acc),
        "bwt": backward_transfer(acc),
        "forgetting": forgetting(acc),
    }
    if zero_shot is not None:
        out["fwt"] = forward_transfer(acc, zero_shot)
    return out


def general_ability_retention(lm_loss_before: float, lm_loss_after: float) -> dict[str, float]:
    """Change in held-out language-model loss on text outside all tasks.

    ``delta = after - before`` (nats per token; positive = the model got worse at general
    text) and ``perplexity_ratio = exp(delta)``.
    """
    for name, v in (("lm_loss_before", lm_loss_before), ("lm_loss_after", lm_loss_after)):
        if not math.isfinite(v):
            raise ValueError(f"{name} must be finite, got {v}")
    delta = float(lm_loss_after) - float(lm_loss_before)
    return {
        "lm_loss_before": float(lm_loss_before),
        "lm_loss_after": float(lm_loss_after),
        "lm_loss_delta": delta,
        "perplexity_ratio": float(math.exp(delta)),
    }
