"""Evaluation inside a run: every task after a stage, the general-text LM loss, the ASVD
capacity report, and the run's summary metrics after the last stage.

The accuracy-matrix metrics themselves (AA, BWT, FWT, forgetting, ...) are
``asvd_jax.metrics``; this module records what they are computed from.
"""

from __future__ import annotations

import os
import time
from typing import Any, Sequence

import numpy as np

from asvd_jax import metrics as _metrics
from asvd_jax.cl._option_pool import evaluate as pooled_evaluate
from asvd_jax.metrics import COLLAPSE_SHARE, prediction_stats


def annotate_evaluation(task, examples: Sequence, result: dict,
                        collapse_share: float = COLLAPSE_SHARE) -> dict:
    """``result`` of ``adapter.evaluate`` plus per-example correctness and ``prediction_stats``.

    For a classification task (``task.options``), each recorded prediction list
    (``predictions`` = the headline protocol's answers, ``option_predictions`` = option
    scoring's) adds ``correct`` (0/1 per example, the input of the per-example bootstrap) and
    ``per_class_accuracy``, ``macro_f1``, ``top_prediction``, ``top_share``, ``collapsed``
    (prefixed ``option_`` for option scoring). Generation tasks are returned unchanged.
    """
    if not task.options:
        return result
    from asvd_jax.data import normalize_answer

    labels = [normalize_answer(ex.label) for ex in examples]
    options = [normalize_answer(o) for o in task.options]
    out = dict(result)
    for prefix, key in (("", "predictions"), ("option_", "option_predictions")):
        pred = result.get(key)
        if pred is None:
            continue
        out[prefix + "correct"] = [int(p == lab) for p, lab in zip(pred, labels)]
        out.update({prefix + k: v for k, v in prediction_stats(labels, pred, options, collapse_share).items()})
    return out


def evaluate_all(runner, params, label: str) -> list[dict]:
    """Every task of the sequence on ``config.eval.split``: one row of the accuracy matrix."""
    t = time.perf_counter()
    out = []
    for task in runner.progress.bar(runner.tasks, len(runner.tasks), f"evaluate ({label})"):
        examples = task.split(runner.config.eval.split)
        res = annotate_evaluation(task, examples, pooled_evaluate(runner.adapter, params, task, examples,
                                                                  runner.option_pool))
        out.append({"task": task.name, **res})
    runner._timed("evaluation", time.perf_counter() - t)
    return out


def general_lm_loss(runner, params) -> float | None:
    """LM loss on general text outside all tasks (``data.general_text`` or the built-in
    paragraphs); None with ``eval.lm_loss`` off."""
    from asvd_jax.cl._errors import RunError

    if not runner.config.eval.lm_loss:
        return None
    if runner.config.data.general_text:
        path = runner.config.data.general_text
        if not os.path.isfile(path):
            raise RunError(f"data.general_text: {path!r} does not exist")
        with open(path) as f:
            texts = [p for p in f.read().split("\n\n") if p.strip()]
    else:
        from asvd_jax.cl._general_text import PARAGRAPHS

        texts = list(PARAGRAPHS)
    return runner.adapter.lm_loss(params, texts)


def capacity_report(runner, stage: int, name: str, params, record: dict) -> dict | None:
    """ASVD only: the capacity report of this stage into capacity.json (analysis._capacity)."""
    from asvd_jax.cl._config import to_dict

    if runner.config.method.name != "asvd":
        return None
    from asvd_jax.analysis import capacity_record, update_capacity_file

    t = time.perf_counter()
    plan = record.get("rank_plan")
    protected = None if plan is None else {e["path"]: e["k"] for e in plan["entries"]}
    policy = to_dict(runner.config.method)
    rec = capacity_record(params, runner.targets, protected, policy, stage, len(runner.stages), name,
                          getattr(runner.method, "singular_values", None))
    update_capacity_file(runner.run_dir, rec, policy)
    runner._timed("capacity", time.perf_counter() - t)
    return rec


def finish_run(runner, params, metrics: dict) -> None:
    """After the last stage: the accuracy matrices, summary metrics, general-ability retention
    and (``checkpoint.export_hf``) the model with its card."""
    c = runner.config
    rows = metrics["rows"]
    acc = [[e["accuracy"] for e in row["eval"]] for row in rows]
    metrics["accuracy_matrix"] = acc
    opt_acc = [[e.get("option_accuracy") for e in row["eval"]] for row in rows]
    if all(a is not None for r in opt_acc for a in r):
        metrics["option_accuracy_matrix"] = opt_acc
    zero = metrics.get("zero_shot")
    summary: dict[str, Any] = {}
    for prefix, mat, z in (("", acc, zero and zero["accuracy"]),
                           ("option_", metrics.get("option_accuracy_matrix"),
                            zero and zero.get("option_accuracy"))):
        if not mat:
            continue
        if len(mat) == len(mat[0]):
            zs = z if z and all(v is not None for v in z) else None
            s = _metrics.summarize(mat, zs)
        else:  # MTL: one joint stage, only the final row exists
            s = {"average_accuracy": float(np.mean(mat[-1]))}
        summary.update({prefix + k: v for k, v in s.items()})
        # Label collapse in the final row (one answer > 80% of a task's predictions).
        summary[prefix + "collapsed_tasks"] = _metrics.collapsed_tasks(rows[-1]["eval"], prefix)
    _metrics.choose_fwt(summary, zero and zero.get("eval"), metrics.get("protocol"))
    metrics["summary"] = summary
    g = metrics.get("general_ability")
    if g is not None:
        after = general_lm_loss(runner, params)
        metrics["general_ability"] = _metrics.general_ability_retention(g["lm_loss_before"], after)
    if c.checkpoint.export_hf:
        t = time.perf_counter()
        runner.adapter.export(params, os.path.join(runner.run_dir, "model"))
        from asvd_jax.cl._model_card import write_model_card

        write_model_card(os.path.join(runner.run_dir, "model"), metrics, c)
        runner._timed("export", time.perf_counter() - t)
