"""Per-class accuracy, macro-F1 and label collapse of one task's predictions (pure numpy)."""

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
