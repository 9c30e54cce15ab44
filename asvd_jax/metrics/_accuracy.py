"""Continual-learning metrics over an accuracy matrix (pure numpy): AA, BWT, FWT, forgetting,
plasticity, general ability, gaps against a baseline and the paired bootstrap of AA.

Conventions (0-based, accuracies as fractions in [0, 1]):

* ``R[i, j]``: accuracy on task ``j`` after training task ``i``; row ``i`` is the evaluation
  after task ``i``, so ``R`` is ``(T, T)`` and ``R[T-1]`` is the final row.
* average accuracy     ``AA  = mean_j R[T-1, j]``
* backward transfer    ``BWT = mean_{j<T-1} (R[T-1, j] - R[j, j])``: **negative means
  forgetting** (the final model is worse on an old task than right after learning it).
* forward transfer     ``FWT = mean_{j>0} (R[j-1, j] - z[j])`` with ``z[j]`` the zero-shot
  accuracy of the initial model on task ``j``: positive means earlier tasks helped a task
  before it was trained.
* forgetting           ``F   = mean_{j<T-1} max_{j<=i<T-1} (R[i, j] - R[T-1, j])``: the
  drop from the best accuracy a task had *from its own training on* (before the last task)
  to its final accuracy. Rows ``i < j`` (before task ``j`` was trained) are left out: a high
  accuracy there is forward transfer, not something learned and then lost. Not clipped at 0:
  a task that only improved has negative forgetting.
* plasticity           ``P   = mean_j R[j, j]``: each task right after training it (how well
  the method still learns); stability is read from AA and BWT.

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
    """``mean_{j<T-1} max_{j<=i<T-1} (R[i, j] - R[T-1, j])``; nan for T = 1."""
    r = _matrix(acc)
    t = r.shape[0]
    if t < 2:
        return math.nan
    return float(np.mean([np.max(r[j: t - 1, j]) - r[-1, j] for j in range(t - 1)]))


def plasticity(acc) -> float:
    """``mean_j R[j, j]``: accuracy on each task right after training it."""
    return float(np.mean(np.diag(_matrix(acc))))


def summarize(acc, zero_shot: Sequence[float] | None = None) -> dict[str, float]:
    """All metrics of one accuracy matrix as a dict (``fwt`` only when zero-shot is given)."""
    out = {
        "average_accuracy": average_accuracy(acc),
        "bwt": backward_transfer(acc),
        "forgetting": forgetting(acc),
        "plasticity": plasticity(acc),
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


# ------------------------------------------------------------------ against a baseline

GAP_KEYS = ("average_accuracy", "plasticity", "bwt", "forgetting")


def gaps(summary: dict, baseline: dict, keys: Sequence[str] = GAP_KEYS) -> dict[str, float]:
    """``{key + "_gap": summary[key] - baseline[key]}`` for the metrics both summaries hold.

    Positive AA / plasticity / BWT gaps favour ``summary``; a positive forgetting gap means
    it forgets *more* than the baseline.
    """
    out = {}
    for k in keys:
        a, b = summary.get(k), baseline.get(k)
        if a is not None and b is not None:
            out[k + "_gap"] = float(a) - float(b)
    return out


# ------------------------------------------------------------------ paired bootstrap


def paired_bootstrap(method, baseline, *, examples: bool = False, n_boot: int = 10000,
                     level: float = 0.95, seed: int = 0) -> dict[str, float]:
    """Paired bootstrap interval of ``AA(method) - AA(baseline)`` over seeds (and examples).

    ``method`` / ``baseline``: one entry per seed, paired by position (the same seed's runs).

    * ``examples=False``: each entry is that seed's AA (a number). Resample the ``S`` seeds
      with replacement, average the per-seed differences ``d_s``; the interval is the
      ``(1-level)/2`` and ``(1+level)/2`` percentiles of those means.
    * ``examples=True``: each entry is a list over tasks of per-example correctness (0/1
      arrays; method and baseline scored on the same examples in the same order). Two stages:
      resample seeds, then within each drawn seed and task resample its test examples (the
      same indices for both methods, so the pairing is kept). AA of a draw is the mean over
      tasks of the per-task accuracy, as in the accuracy matrix.

    Returns ``{"estimate", "low", "high", "seeds", "level"}`` (``estimate``: mean of ``d_s``
    on the data as observed). See docs/analysis.md for when each mode is right.
    """
    if len(method) != len(baseline) or not len(method):
        raise ValueError(f"paired_bootstrap: need the same number (>= 1) of seeds, got "
                         f"{len(method)} and {len(baseline)}")
    if not 0 < level < 1:
        raise ValueError(f"level must lie in (0, 1), got {level}")
    rng = np.random.default_rng(seed)
    s = len(method)
    pick = rng.integers(0, s, size=(n_boot, s))
    if not examples:
        d = np.asarray(method, np.float64) - np.asarray(baseline, np.float64)
        if d.ndim != 1:
            raise ValueError("paired_bootstrap: with examples=False give one AA per seed")
        estimate, draws = float(d.mean()), d[pick].mean(axis=1)
    else:
        # diffs[k][j]: per-example difference of seed k, task j (values in -1, 0, 1).
        diffs = []
        for k, (m_seed, b_seed) in enumerate(zip(method, baseline)):
            if len(m_seed) != len(b_seed) or not len(m_seed):
                raise ValueError(f"seed {k}: {len(m_seed)} tasks for the method, {len(b_seed)} for the baseline")
            row = []
            for j, (a, b) in enumerate(zip(m_seed, b_seed)):
                a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
                if a.shape != b.shape or a.ndim != 1 or a.size == 0:
                    raise ValueError(f"seed {k}, task {j}: per-example correctness of shapes "
                                     f"{a.shape} and {b.shape}; need equal non-empty 1-d arrays")
                row.append(a - b)
            diffs.append(row)
        estimate = float(np.mean([np.mean([d.mean() for d in row]) for row in diffs]))
        # per_seed[k, t, b]: seed k's AA difference on an example resample of its own, one
        # independent resample per slot t of draw b (a seed drawn twice in one draw gets two).
        per_seed = np.stack([
            np.mean([d[rng.integers(0, d.size, size=(s, n_boot, d.size))].mean(axis=-1) for d in row], axis=0)
            for row in diffs])  # (S, s, n_boot)
        draws = per_seed[pick, np.arange(s)[None, :], np.arange(n_boot)[:, None]].mean(axis=1)
    lo, hi = np.percentile(draws, [100 * (1 - level) / 2, 100 * (1 + level) / 2])
    return {"estimate": estimate, "low": float(lo), "high": float(hi), "seeds": s, "level": level}
