"""Per-matrix numbers arranged by layer and matrix type, and rank plans across tasks.

A target path such as ``layers/3/attn/q_proj/kernel`` splits into a layer index (the first
all-digit component, 3) and a matrix type (the components after it, without the trailing
``kernel`` / ``weight``: ``attn/q_proj``). For a scan-stacked leaf (no index in the path) the
value's leading axis is the layer. Any per-matrix number (importance, protected rank or
fraction, effective rank, leakage) then becomes a (layers x types) grid for a heatmap.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping, Sequence

import numpy as np

_PARAM_NAMES = ("kernel", "weight")


def split_path(path: str) -> tuple[int | None, str]:
    """(layer index or None, matrix type) of a parameter path."""
    parts = path.split("/")
    if parts and parts[-1] in _PARAM_NAMES:
        parts = parts[:-1]
    for i, p in enumerate(parts):
        if p.isdigit():
            return int(p), "/".join(parts[i + 1:]) or "/".join(parts[:i])
    return None, "/".join(parts)


@dataclasses.dataclass(frozen=True)
class LayerGrid:
    """Values on a (layers x matrix types) grid; NaN where a layer has no such matrix."""

    layers: tuple[int, ...]
    kinds: tuple[str, ...]
    values: np.ndarray
    """float64, shape (len(layers), len(kinds))."""

    def column(self, kind: str) -> np.ndarray:
        if kind not in self.kinds:
            raise KeyError(f"no matrix type {kind!r}; have {list(self.kinds)}")
        return self.values[:, self.kinds.index(kind)]

    def kind_means(self) -> dict[str, float]:
        """Mean over layers per matrix type (ignoring missing entries)."""
        return {k: float(np.nanmean(self.values[:, j])) for j, k in enumerate(self.kinds)}


def layer_grid(values: Mapping[str, Any]) -> LayerGrid:
    """Arrange ``{path: number or per-layer sequence}`` as a :class:`LayerGrid`.

    A path with a layer index takes a scalar; a path without one (a scan-stacked leaf) takes
    one value per layer. Paths outside the layers (no index, scalar value) raise ValueError:
    they have no row.
    """
    cells: dict[tuple[int, str], float] = {}
    kinds: list[str] = []
    for path, v in values.items():
        layer, kind = split_path(path)
        arr = np.asarray(v, dtype=np.float64)
        if layer is not None:
            if arr.ndim != 0:
                raise ValueError(f"layer_grid: {path} names layer {layer} but has {arr.size} values")
            items = [(layer, float(arr))]
        elif arr.ndim == 1:
            items = list(enumerate(arr.tolist()))
        else:
            raise ValueError(f"layer_grid: {path} has no layer index and is not one value per layer")
        if kind not in kinds:
            kinds.append(kind)
        for layer_i, x in items:
            if (layer_i, kind) in cells:
                raise ValueError(f"layer_grid: two values for layer {layer_i}, type {kind!r} ({path})")
            cells[(layer_i, kind)] = x
    if not cells:
        raise ValueError("layer_grid: no values")
    layers = tuple(sorted({layer for layer, _ in cells}))
    grid = np.full((len(layers), len(kinds)), np.nan)
    for (layer, kind), x in cells.items():
        grid[layers.index(layer), kinds.index(kind)] = x
    return LayerGrid(layers, tuple(kinds), grid)


_PLAN_FIELDS = ("k", "protected_fraction", "importance", "energy_retained")


def _plan_entries(plan: Any, where: str) -> list[Mapping[str, Any]]:
    """Entries of a RankPlan, its ``to_dict()`` form, or the JSON-loaded dict."""
    if hasattr(plan, "entries") and not isinstance(plan, Mapping):
        return [dataclasses.asdict(e) for e in plan.entries]
    if isinstance(plan, Mapping) and "entries" in plan:
        return list(plan["entries"])
    raise TypeError(f"{where}: expected a RankPlan or its dict form, got {type(plan).__name__}")


def plan_values(plan: Any, field: str = "protected_fraction") -> dict[str, Any]:
    """``{path: value}`` of one rank-plan field (scalar, or a tuple per stack entry)."""
    if field not in _PLAN_FIELDS:
        raise ValueError(f"plan field must be one of {_PLAN_FIELDS}, got {field!r}")
    out = {}
    for i, e in enumerate(_plan_entries(plan, "plan_values")):
        if "path" not in e or field not in e:
            raise ValueError(f"plan_values: entries[{i}] lacks 'path' or {field!r}")
        v = e[field]
        out[e["path"]] = tuple(v) if isinstance(v, (list, tuple)) else v
    return out


def plan_grid(plan: Any, field: str = "protected_fraction") -> LayerGrid:
    """One rank-plan field on the (layers x matrix types) grid."""
    return layer_grid(plan_values(plan, field))


def plans_over_tasks(
    plans: Sequence[Any], field: str = "protected_fraction"
) -> tuple[tuple[str, ...], np.ndarray]:
    """Mean of ``field`` per matrix type at every task boundary.

    Args:
      plans: one rank plan per task in order; ``None`` for a task trained without one (the
        first task, plain fine-tuning, or a baseline) gives a NaN row.

    Returns:
      ``(kinds, values)`` with values of shape (tasks, kinds).
    """
    grids = [None if p is None else plan_grid(p, field) for p in plans]
    kinds: list[str] = []
    for g in grids:
        for k in g.kinds if g is not None else ():
            if k not in kinds:
                kinds.append(k)
    out = np.full((len(plans), len(kinds)), np.nan)
    for t, g in enumerate(grids):
        if g is not None:
            for k, mean in g.kind_means().items():
                out[t, kinds.index(k)] = mean
    return tuple(kinds), out
