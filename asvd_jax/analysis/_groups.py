"""Runs that differ only by their seeds, grouped: mean and standard deviation per metric.

Two run directories belong to one group when their ``config.yaml`` files are equal after the
seed keys (:data:`SEED_KEYS`) and the run-bookkeeping section (``run.*``: name, folder,
progress) are removed. A run without ``config.yaml`` forms a group of its own.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from typing import Any, Mapping, Sequence

import numpy as np

SEED_KEYS: tuple[tuple[str, str], ...] = (("train", "seed"), ("data", "seed"))
"""Config keys that only change the random draw (batch order, method randomness, sampling)."""


@dataclasses.dataclass(frozen=True)
class SeedGroup:
    """Runs whose configs match except for :data:`SEED_KEYS`."""

    run_dirs: tuple[str, ...]
    seeds: tuple[dict, ...]
    """Per run, ``{"train.seed": ..., "data.seed": ...}`` (empty without config.yaml)."""
    config: Mapping[str, Any] | None
    """The shared config with the seed keys removed (None without config.yaml)."""


def _read_config(run_dir: str) -> dict | None:
    path = os.path.join(run_dir, "config.yaml")
    if not os.path.isfile(path):
        return None
    import yaml

    with open(path) as f:
        cfg = yaml.safe_load(f)
    return cfg if isinstance(cfg, dict) else None


def _strip_seeds(cfg: dict) -> tuple[dict, dict]:
    rest = {k: dict(v) if isinstance(v, dict) else v for k, v in cfg.items() if k != "run"}
    seeds = {}
    for section, key in SEED_KEYS:
        if isinstance(rest.get(section), dict) and key in rest[section]:
            seeds[f"{section}.{key}"] = rest[section].pop(key)
    return rest, seeds


def group_by_seed(run_dirs: Sequence[str | os.PathLike]) -> list[SeedGroup]:
    """Groups in order of first appearance; every directory in exactly one group."""
    groups: dict[str, list[tuple[str, dict]]] = {}
    shared: dict[str, dict | None] = {}
    for i, d in enumerate(run_dirs):
        d = os.fspath(d)
        cfg = _read_config(d)
        if cfg is None:
            key, rest, seeds = f"#{i}", None, {}
        else:
            rest, seeds = _strip_seeds(cfg)
            key = json.dumps(rest, sort_keys=True, default=str)
        groups.setdefault(key, []).append((d, seeds))
        shared[key] = rest
    return [SeedGroup(tuple(d for d, _ in members), tuple(s for _, s in members), shared[key])
            for key, members in groups.items()]


def mean_std(values: Sequence[float]) -> tuple[float, float, int]:
    """(mean, sample standard deviation (ddof 1; NaN for one value), count) over finite values."""
    v = np.asarray([x for x in values if x is not None and math.isfinite(x)], np.float64)
    if v.size == 0:
        return math.nan, math.nan, 0
    return float(v.mean()), float(v.std(ddof=1)) if v.size > 1 else math.nan, int(v.size)


def group_rows(groups: Sequence[SeedGroup], rows: Mapping[str, Mapping[str, Any]],
               metrics: Sequence[str]) -> list[dict[str, Any]]:
    """Per group with more than one run: ``{"runs", "seeds", "n", metric: (mean, std), ...}``.

    ``rows`` maps a run directory to its table row (numbers per metric column).
    """
    out = []
    for g in groups:
        if len(g.run_dirs) < 2:
            continue
        first = rows[g.run_dirs[0]]
        entry: dict[str, Any] = {"runs": ", ".join(str(rows[d].get("run")) for d in g.run_dirs),
                                 "method": first.get("method"), "n": len(g.run_dirs),
                                 "seeds": "; ".join(",".join(f"{k}={v}" for k, v in s.items()) for s in g.seeds)}
        for m in metrics:
            entry[m] = mean_std([rows[d].get(m) for d in g.run_dirs])
        out.append(entry)
    return out


def format_mean_std(ms: tuple[float, float, int]) -> str:
    mean, std, n = ms
    if n == 0:
        return "n/a"
    return f"{mean:.1f}" if n == 1 or math.isnan(std) else f"{mean:.1f} +- {std:.1f}"


def seed_group_markdown(entries: Sequence[dict[str, Any]], metrics: Sequence[str]) -> str:
    """Markdown table of :func:`group_rows` output (mean +- sample std over seeds)."""
    cols = ["method", "runs", "n", *metrics]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for e in entries:
        cells = [str(e["method"]), e["runs"], str(e["n"])] + [format_mean_std(e[m]) for m in metrics]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
