"""``asvd-jax report`` over several run directories: the comparison table and seed groups."""

from __future__ import annotations

import os
import re
from typing import Sequence


def comparison_output(run_dirs: Sequence[str], metrics_list: Sequence[dict], fmt: str) -> str:
    """Markdown (per-run table, then mean +- std over seeds with intervals against SeqFT) or CSV."""
    from asvd_jax.analysis import group_by_seed, seed_table
    from asvd_jax.cl._compare import comparison_rows, csv_table, markdown_table

    rows = comparison_rows(metrics_list)
    for d, r in zip(run_dirs, rows):  # seed<k> of a multi-seed run: name it by its parent too
        parent, leaf = os.path.split(os.path.normpath(os.fspath(d)))
        if r["run"] == leaf and re.fullmatch(r"seed\d+", leaf):
            r["run"] = f"{os.path.basename(parent)}/{leaf}"
    if fmt == "csv":
        return csv_table(rows)
    text = markdown_table(rows) + "\n"
    # Only finished runs are averaged: a partial run's metrics cover fewer tasks.
    complete = [os.fspath(d) for d, r in zip(run_dirs, rows) if r["status"] == "complete"]
    try:
        groups = group_by_seed(complete)
    except ValueError as e:  # e.g. a run without config.yaml: the per-run table stands
        return text + f"\n(no table over seeds: {e})\n"
    if any(len(g.runs) > 1 for g in groups):
        text += ("\nOver seeds (mean +- sample std; complete runs only; intervals: "
                 "docs/analysis.md):\n\n" + seed_table(groups) + "\n")
    elif len(groups) > 1 and any(g.runs[0].method == "seqft" for g in groups):
        # One seed per group still pairs each run with SeqFT example by example: the
        # bootstrap over test examples is the interval to read (the seed one is the point).
        text += ("\nAgainst SeqFT, one seed per group (the interval to read is the one over test "
                 "examples; docs/analysis.md):\n\n" + seed_table(groups) + "\n")
    return text

