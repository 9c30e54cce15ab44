"""The comparison table of several runs: one row per run, as markdown or CSV.

Runs that have not finished are reported with what they have (``_report.report_view``): the
metrics over the tasks trained so far, and a status column that says ``partial k/T``.
"""

from __future__ import annotations

import csv
import io
import math
from typing import Any, Sequence

# (column, how to read it from a run's metrics); percentages are stored as fractions.
COLUMNS: tuple[str, ...] = ("run", "method", "status", "AA", "plasticity", "BWT", "FWT", "forgetting",
                            "AA (options)", "BWT (options)", "LM loss delta", "minutes")


def _num(x: Any) -> float:
    return float("nan") if x is None else float(x)


def row_values(metrics: dict) -> dict[str, Any]:
    """One run's row: raw numbers (accuracies in points, NaN where unmeasured)."""
    from asvd_jax.cl._report import report_view

    m = report_view(metrics)
    s = m.get("summary") or {}
    g = m.get("general_ability") or {}
    status = str(m.get("status", "?"))
    if m.get("partial"):
        status = f"{status}, partial {m['partial'].split()[0]}"
    pts = {key: 100 * _num(s.get(name)) for key, name in (
        ("AA", "average_accuracy"), ("plasticity", "plasticity"), ("BWT", "bwt"), ("FWT", "fwt"), ("forgetting", "forgetting"),
        ("AA (options)", "option_average_accuracy"), ("BWT (options)", "option_bwt"))}
    return {"run": m.get("name"), "method": m.get("method"), "status": status, **pts,
            "LM loss delta": _num(g.get("lm_loss_delta")),
            "minutes": _num((m.get("timing") or {}).get("total")) / 60}


def _fmt(column: str, v: Any) -> str:
    if isinstance(v, float):
        if math.isnan(v):
            return "n/a"
        return f"{v:+.3f}" if column == "LM loss delta" else f"{v:.1f}"
    return "" if v is None else str(v)


def markdown_table(rows: Sequence[dict[str, Any]], columns: Sequence[str] = COLUMNS) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for r in rows:
        lines.append("| " + " | ".join(_fmt(c, r.get(c)) for c in columns) + " |")
    return "\n".join(lines)


def csv_table(rows: Sequence[dict[str, Any]], columns: Sequence[str] = COLUMNS) -> str:
    """CSV with full-precision numbers (empty cell = not measured)."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(columns)
    for r in rows:
        w.writerow(["" if isinstance(r.get(c), float) and math.isnan(r[c]) else r.get(c) for c in columns])
    return buf.getvalue()


def comparison_rows(metrics_list: Sequence[dict]) -> list[dict[str, Any]]:
    return [row_values(m) for m in metrics_list]
