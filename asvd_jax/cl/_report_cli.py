"""``asvd-jax report`` over several run directories: the comparison table and seed groups."""

from __future__ import annotations

import os
from typing import Sequence

# Metric columns averaged over the runs of a seed group.
GROUP_METRICS = ("AA", "BWT", "FWT", "forgetting", "AA (options)", "BWT (options)")


def comparison_output(run_dirs: Sequence[str], metrics_list: Sequence[dict], fmt: str) -> str:
    """Markdown (per-run table, then mean +- std of runs that differ only by seed) or CSV."""
    from asvd_jax.analysis._groups import group_by_seed, group_rows, seed_group_markdown
    from asvd_jax.cl._compare import comparison_rows, csv_table, markdown_table

    rows = comparison_rows(metrics_list)
    if fmt == "csv":
        return csv_table(rows)
    text = markdown_table(rows) + "\n"
    # Only finished runs are averaged: a partial run's metrics cover fewer tasks.
    by_dir = {os.fspath(d): r for d, r in zip(run_dirs, rows) if r["status"] == "complete"}
    groups = group_rows(group_by_seed(list(by_dir)), by_dir, GROUP_METRICS)
    if groups:
        text += ("\nRuns that differ only by seed (mean +- sample std over seeds; "
                 "complete runs only):\n\n" + seed_group_markdown(groups, GROUP_METRICS) + "\n")
    return text


def write_text_atomic(path: str, text: str) -> None:
    """Write ``text`` to ``path`` via a temporary file and a rename (never half-written)."""
    tmp = f"{path}.tmp{os.getpid()}"
    try:
        with open(tmp, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
