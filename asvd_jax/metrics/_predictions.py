"""Per-class accuracy, macro-F1, label collapse and zero-shot answer validity of predictions
(pure numpy)."""

from __future__ import annotations

from typing import Sequence

import numpy as np

COLLAPSE_SHARE = 0.8
"""A task's evaluation is flagged ``collapsed`` when one answer exceeds this share."""


def prediction_stats(labels: Sequence[str], predictions: Sequence[str],
                     options: Sequence[str] = (), collapse_share: float = COLLAPSE_SHARE) -> dict:
    """Per-class accuracy, macro-F1 and label collapse of one task's predictions.

    ``labels`` and ``predictions`` are normalised answer strings of the same length. Classes
    are ``options`` (plus any label outside them); for class ``c`` with ``tp`` correct,
    ``n_c`` gold and ``p_c`` predicted examples: accuracy ``tp / n_c`` (the class's recall,
    None when ``n_c = 0``), ``F1_c = 2 tp / (n_c + p_c)`` (0 when ``tp = 0``).
    ``macro_f1`` averages ``F1_c`` over the classes with ``n_c > 0``. ``top_share`` is the
    share of the most frequent prediction; ``collapsed`` = ``top_share > collapse_share``.
    """
    if len(labels) != len(predictions):
        raise ValueError(f"{len(labels)} labels but {len(predictions)} predictions")
    if not labels:
        raise ValueError("prediction_stats: no examples")
    classes = list(dict.fromkeys([*options, *sorted(set(labels) - set(options))]))
    lab = np.asarray(labels, dtype=object)
    pred = np.asarray(predictions, dtype=object)
    per_class, f1s = {}, []
    for c in classes:
        n_c = int(np.sum(lab == c))
        p_c = int(np.sum(pred == c))
        tp = int(np.sum((lab == c) & (pred == c)))
        per_class[c] = tp / n_c if n_c else None
        if n_c:
            f1s.append(2 * tp / (n_c + p_c))
    values, counts = np.unique(pred.astype(str), return_counts=True)
    top = int(np.argmax(counts))
    share = float(counts[top] / len(pred))
    return {"per_class_accuracy": per_class,
            "macro_f1": float(np.mean(f1s)),
            "top_prediction": str(values[top]),
            "top_share": share,
            "collapsed": share > collapse_share}


def collapsed_tasks(row_eval: Sequence[dict], prefix: str = "") -> list[str]:
    """Names of the tasks of one accuracy-matrix row whose evaluation is flagged collapsed."""
    return [e["task"] for e in row_eval if e.get(prefix + "collapsed")]


# A generated answer counts as an answer when it is one of the task's labels. Below this share
# of answers at zero-shot, the initial model's generation accuracy measures whether it follows
# the answer format (SmolLM2-Instruct answers the raw prompt with EOS: share 0), not what it
# knows, and FWT against it would credit training with teaching the format.
ZERO_SHOT_ANSWER_SHARE = 0.5


def zero_shot_answer_share(zero_eval: Sequence[dict]) -> float | None:
    """Share of the zero-shot headline predictions that are one of their task's labels (mean
    over tasks); None when no task recorded predictions (generation-only tasks, old runs)."""
    shares = []
    for e in zero_eval or []:
        pred, classes = e.get("predictions"), e.get("per_class_accuracy")
        if pred and classes is not None:
            shares.append(float(np.mean([p in classes for p in pred])))
    return float(np.mean(shares)) if shares else None


def choose_fwt(summary: dict, zero_eval: Sequence[dict] | None, protocol: str | None) -> None:
    """Say in ``summary`` what FWT was measured against (``fwt_from``), in place.

    ``summary``: the headline metrics plus option scoring's with an ``option_`` prefix (as a
    run's metrics.json holds them); ``zero_eval``: the zero-shot evaluation records;
    ``protocol``: the run's headline protocol label (generation labels start "generate").

    Option scoring needs no answer format, so its zero-shot is fair. With a generation
    headline whose zero-shot answers are mostly not labels (share below
    ``ZERO_SHOT_ANSWER_SHARE``), the headline ``fwt`` is replaced by option scoring's
    (``fwt_from: "options"``; the generation value is kept as ``generation_fwt``), or dropped
    (``fwt_from: "none"``) when option scoring did not run; ``zero_shot_answer_share`` records
    the share. Otherwise ``fwt_from`` is ``"headline"``.
    """
    if "fwt" not in summary:
        return
    share = zero_shot_answer_share(zero_eval)
    summary["fwt_from"] = "headline"
    if not (protocol or "").startswith("generate") or share is None:
        return
    summary["zero_shot_answer_share"] = share
    if share < ZERO_SHOT_ANSWER_SHARE:
        summary["generation_fwt"] = summary.pop("fwt")
        if "option_fwt" in summary:
            summary["fwt"], summary["fwt_from"] = summary["option_fwt"], "options"
        else:
            summary["fwt_from"] = "none"
