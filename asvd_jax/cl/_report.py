"""What a run leaves behind: accuracy heatmap (PNG) and a markdown summary.

Both are rebuilt from ``metrics.json`` alone, so ``asvd-jax report RUN_DIR`` can redo them.
A run that has not finished (interrupted, failed, stopped after a task, still running) reports
what it has: the rows so far, and metrics over the tasks trained so far, marked partial
(:func:`report_view`).
"""

from __future__ import annotations

import json
import math
import os
from typing import Any

import numpy as np

from asvd_jax._files import write_text_atomic  # noqa: F401  (re-exported: asvd_jax.cl)


def load_metrics(run_dir: str) -> dict:
    path = os.path.join(run_dir, "metrics.json")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: missing (is {run_dir!r} a run directory?)")
    with open(path) as f:
        return json.load(f)


def report_view(metrics: dict) -> dict:
    """``metrics`` with the accuracy matrices and summary filled in for an unfinished run.

    A finished run is returned as it is. For a partial one (``"partial": "k/T stages"``) the
    matrices are the rows evaluated so far and the summary is that of the first k tasks alone
    (the square k x k corner): the metrics of the sequence as if it ended there.
    """
    if metrics.get("summary") and metrics.get("accuracy_matrix"):
        return metrics
    from asvd_jax import metrics as _metrics

    out = dict(metrics)
    rows = [r for r in metrics.get("rows") or [] if isinstance(r.get("eval"), list)]
    tasks = metrics.get("tasks") or []
    out["partial"] = f"{len(rows)}/{len(tasks)} stages"
    if not rows:
        return out
    acc = [[e.get("accuracy") for e in r["eval"]] for r in rows]
    out["accuracy_matrix"] = acc
    opt = [[e.get("option_accuracy") for e in r["eval"]] for r in rows]
    if all(a is not None for r in opt for a in r):
        out["option_accuracy_matrix"] = opt
    zero = metrics.get("zero_shot") or {}
    k = len(rows)
    summary: dict = {}
    if k <= len(tasks) and all(r.get("stage") == t for r, t in zip(rows, tasks)):
        for prefix, mat, z in (("", acc, zero.get("accuracy")),
                               ("option_", out.get("option_accuracy_matrix"), zero.get("option_accuracy"))):
            if not mat:
                continue
            corner = [row[:k] for row in mat]
            zs = z[:k] if z and all(v is not None for v in z[:k]) else None
            try:
                s = _metrics.summarize(corner, zs)
            except (ValueError, TypeError):  # a row with a missing evaluation
                continue
            summary.update({prefix + key: v for key, v in s.items()})
    _metrics.choose_fwt(summary, zero.get("eval"), metrics.get("protocol"))
    out["summary"] = summary
    return out


def plot_accuracy_matrix(metrics: dict, path: str, key: str = "accuracy_matrix") -> str | None:
    """Heatmap of R[i, j] (rows: after training stage i; columns: evaluated task j)."""
    rows = metrics.get(key) or []
    if not rows:
        return None
    # A standalone Figure draws with the Agg canvas without touching pyplot's global backend,
    # so a notebook that calls the runner keeps showing its own figures inline.
    from matplotlib.figure import Figure

    r = np.asarray(rows, np.float64) * 100
    tasks = metrics["tasks"]
    stages = [row["stage"] for row in metrics["rows"]][: len(r)]
    fig = Figure(figsize=(1.2 * len(tasks) + 2.5, 0.7 * len(r) + 2))
    ax = fig.subplots()
    im = ax.imshow(r, vmin=0, vmax=100, cmap="viridis")
    ax.set_xticks(range(len(tasks)), tasks, rotation=30, ha="right")
    ax.set_yticks(range(len(r)), [f"after {s}" for s in stages])
    for i in range(r.shape[0]):
        for j in range(r.shape[1]):
            ax.text(j, i, f"{r[i, j]:.0f}", ha="center", va="center",
                    color="white" if r[i, j] < 60 else "black", fontsize=9)
    what = "option scoring" if key.startswith("option") else metrics.get("protocol", "")
    ax.set_title(f"{metrics.get('method', '?')}: accuracy (%)\n{what}", fontsize=10)
    ax.set_xlabel("evaluated task")
    ax.set_ylabel("model after training")
    fig.colorbar(im, ax=ax, fraction=0.046)
    fig.tight_layout()
    tmp = path + ".tmp.png"
    fig.savefig(tmp, dpi=110)
    os.replace(tmp, path)
    return path


def _pct(x: Any) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "n/a"
    return f"{100 * x:.1f}"


def summary_markdown(metrics: dict) -> str:
    """A short human-readable report of one run (finished or not)."""
    metrics = report_view(metrics)
    tasks = metrics.get("tasks") or []
    lines = [f"# Run `{metrics.get('name', '')}`", "",
             f"- method: **{metrics.get('method')}**, model: {metrics.get('model')}, "
             f"sequence: {metrics.get('sequence')} ({len(tasks)} tasks)",
             f"- status: {metrics.get('status')}"
             + (f" ({metrics['status_detail']})" if metrics.get("status_detail") else ""),
             f"- headline protocol: {metrics.get('protocol')}", ""]
    s = metrics.get("summary") or {}
    if metrics.get("partial"):
        lines += [f"- **partial run**: {metrics['partial']} trained; the metrics below cover "
                  f"the tasks trained so far", ""]
    if s:
        lines += ["| metric | headline | option scoring |", "|---|---|---|"]
        for key, label in (("average_accuracy", "average accuracy (%)"),
                           ("plasticity", "plasticity (%, mean of R[j, j])"), ("bwt", "BWT (pts)"),
                           ("fwt", "FWT (pts)"), ("forgetting", "forgetting (pts)")):
            lines.append(f"| {label} | {_pct(s.get(key))} | {_pct(s.get('option_' + key))} |")
        if s.get("fwt_from") in ("options", "none"):
            lines += ["", f"FWT: the initial model's generated answers were a label in "
                      f"{_pct(s.get('zero_shot_answer_share'))}% of zero-shot examples, so its "
                      f"generation accuracy measures the answer format; the headline FWT is "
                      + ("option scoring's" if s["fwt_from"] == "options" else "not reported")
                      + f" (against zero-shot generation: {_pct(s.get('generation_fwt'))})."]
        lines.append("")
        for prefix, what in (("", "headline"), ("option_", "option scoring")):
            if s.get(prefix + "collapsed_tasks"):
                lines += [f"**Label collapse** ({what}, final row: one answer > 80% of a task's "
                          f"predictions): {', '.join(s[prefix + 'collapsed_tasks'])}", ""]
    for key, title in (("accuracy_matrix", "Accuracy matrix (%)"),
                       ("option_accuracy_matrix", "Option-scoring accuracy matrix (%)")):
        rows = metrics.get(key) or []
        if rows:
            lines += [f"## {title}", "", "| after \\ on | " + " | ".join(tasks) + " |",
                      "|---" * (len(tasks) + 1) + "|"]
            for row, acc in zip(metrics.get("rows") or [], rows):
                lines.append(f"| {row['stage']} | " + " | ".join(_pct(a) for a in acc) + " |")
            lines.append("")
    z = metrics.get("zero_shot") or {}
    if z.get("accuracy"):
        lines += ["Zero-shot: " + ", ".join(f"{t} {_pct(a)}" for t, a in zip(tasks, z["accuracy"])), ""]
    g = metrics.get("general_ability")
    if g and "lm_loss_after" in g:
        lines += [f"General-ability LM loss (held-out text): {g['lm_loss_before']:.3f} -> "
                  f"{g['lm_loss_after']:.3f} nats/token (perplexity x{g['perplexity_ratio']:.2f})", ""]
    elif g and "lm_loss_before" in g:
        lines += [f"General-ability LM loss (held-out text): {g['lm_loss_before']:.3f} nats/token "
                  f"before training (after: not measured, the run did not finish)", ""]
    lines += ["## Training", "", "| stage | micro-batches | mean loss | last loss | seconds | leakage max |",
              "|---|---|---|---|---|---|"]
    for row in metrics.get("rows") or []:
        t = row.get("train", {})
        leak = (row.get("record") or {}).get("leakage", {}).get("max")
        lines.append(f"| {row['stage']} | {t.get('micro_steps')} | {t.get('mean_loss', float('nan')):.4f} | "
                     f"{t.get('last_loss', float('nan')):.4f} | {t.get('seconds', 0):.0f} | "
                     f"{'' if leak is None else f'{leak:.2e}'} |")
    stops = [(row["stage"], row.get("train", {}).get("early_stopping")) for row in metrics["rows"]]
    if any(es for _, es in stops):
        lines += ["", "Early stopping (optimizer steps; dev accuracy %): " + "; ".join(
            f"{name} best {es['best_step']} ({_pct(es['best_dev_accuracy'])})"
            + (f", stopped at {es['stopped_at']}" if es.get("stopped_at") is not None else ", step cap")
            for name, es in stops if es)]
    timing = metrics.get("timing") or {}
    if timing:
        lines += ["", "Time (s): " + ", ".join(f"{k} {v:.0f}" for k, v in timing.items())]
    return "\n".join(lines) + "\n"


def write_report(run_dir: str, metrics: dict | None = None) -> dict[str, str]:
    """(Re)write heatmap(s) and summary.md of ``run_dir``; returns their paths."""
    metrics = report_view(metrics if metrics is not None else load_metrics(run_dir))
    out = {}
    for key, name in (("accuracy_matrix", "accuracy_matrix.png"),
                      ("option_accuracy_matrix", "option_accuracy_matrix.png")):
        p = plot_accuracy_matrix(metrics, os.path.join(run_dir, name), key)
        if p:
            out[key] = p
    from asvd_jax.analysis import write_capacity_report

    capacity_png, _ = write_capacity_report(run_dir)  # ASVD runs: capacity.json's heatmap
    if capacity_png:
        out["capacity"] = capacity_png
    path = os.path.join(run_dir, "summary.md")
    text = summary_markdown(metrics)  # built first: an error leaves no temporary file behind
    write_text_atomic(path, text)
    out["summary"] = path
    return out
