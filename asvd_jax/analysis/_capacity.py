"""Capacity report: how much of each target matrix is still free to learn, task by task.

After every task of an ASVD run, per target matrix (per stack entry of a stacked leaf):

- ``protected``: the rank k the task was trained with (the top-k singular directions of the
  weight were held fixed; 0 for the first task),
- ``free``: ``min_dim - protected``, the rank the task could change,
- ``free_energy``: share of the weight's squared singular values (the spectrum's energy) that
  lies beyond the top ``protected`` directions, in the spectrum the task's plan was made from
  (the SVD at the task boundary, which the method computes anyway; 1 for a task without
  protection). Computing it from the weights after the task instead would cost one more SVD
  per matrix: a first version did, and took 366 s for one task of notebook 2's SmolLM2-135M
  run on the shared 2-core machine (training took 106 s).
- ``projected_free``: the free rank at the next task under the run's rank policy. Exact for
  "progressive" and "uniform", whose ranks depend only on the task index; "paper" and
  "energy" decide from the next task's statistics, which do not exist yet, so their
  projection carries the current rank forward (for the first task: ``trr * min_dim`` for
  "paper", unknown (None) for "energy"). None after the last task.

``<run_dir>/capacity.json`` holds ``{"policy": ..., "tasks": [one record per task]}``, each
record ``{"stage", "task", "matrices": {path: {...}}, "by_type": {type: means}}``; values of a
stacked leaf are lists (one per layer). ``capacity_grid`` puts one field on the layers x
matrix-types grid that ``plot_layer_grid`` draws; ``low_capacity`` lists the matrices under
a free-rank floor.
"""

from __future__ import annotations

import json
import os
from typing import Any, Mapping, Sequence

import numpy as np

from asvd_jax.analysis._tables import LayerGrid, layer_grid, split_path

FILE = "capacity.json"


def _k_of_fraction(fraction: float, min_dim: int) -> int:
    from asvd_jax.ranks import fraction_to_k

    return int(fraction_to_k(np.asarray(fraction, np.float64), min_dim))


def rank_policy_of(method: Mapping[str, Any]) -> tuple[str, dict]:
    """``(name, fields)`` of the rank policy in a MethodConfig dict: ``rank_policy: {name:
    {fields}}``, or the flat layout of older run dirs (a name beside ``mrr``, ``trr``, ...)."""
    policy = method.get("rank_policy", "?")
    if isinstance(policy, Mapping) and len(policy) == 1:
        (name, fields), = policy.items()
        return str(name), dict(fields or {})
    return str(policy), {k: method[k] for k in ("mrr", "trr", "max_fraction", "fraction", "tau")
                         if k in method}


def projected_rank(policy: Mapping[str, Any], next_stage: int, num_stages: int, min_dim: int,
                   current: int, have_plan: bool) -> int | None:
    """Protected rank at 0-based stage ``next_stage`` under ``policy`` (see module docstring).

    ``policy``: a MethodConfig as a dict (``rank_policy_of`` reads it).
    """
    if next_stage >= num_stages:
        return None
    name, fields = rank_policy_of(policy)
    if name == "progressive":  # ProgressivePolicy(task=next_stage + 1): floor(t-1)/T * d
        return next_stage * min_dim // num_stages
    if name == "uniform":
        return _k_of_fraction(fields["fraction"], min_dim)
    if have_plan:
        return current
    return _k_of_fraction(fields["trr"], min_dim) if name == "paper" else None


def _free_energy(s: np.ndarray, k: int) -> float:
    e = np.square(s.astype(np.float64))
    total = float(e.sum())
    return float(e[k:].sum() / total) if total > 0 else 0.0


def capacity_record(params: Any, targets: Any, protected: Mapping[str, Any] | None,
                    policy: Mapping[str, Any], stage: int, num_stages: int, task: str,
                    singular_values: Mapping[str, Any] | None = None) -> dict:
    """The capacity of every target after stage ``stage``.

    ``protected``: ``{path: k}`` of the rank plan the stage trained with (ints, or flat
    lists for stacked leaves), None for a stage without one (every rank free).
    ``singular_values``: ``{path: (*stack, min_dim)}`` of the spectrum the plan was made from;
    a path without them is decomposed here (``params``, float64).
    """
    import jax

    from asvd_jax import flatten_with_paths, list_targets

    leaves = dict(flatten_with_paths(params)[0])
    matrices: dict[str, dict] = {}
    for path, spec in list_targets(targets):
        if path not in leaves:
            raise ValueError(f"capacity_record: no parameter at target path {path!r}")
        shape = np.shape(leaves[path])
        spec = spec.resolve(len(shape), path)
        stack_shape, d_in, d_out = spec.matrix_shape(shape)
        stack_size = int(np.prod(stack_shape, dtype=np.int64))
        ks = np.zeros(stack_size, np.int64) if protected is None else \
            np.broadcast_to(np.asarray(protected[path], np.int64).ravel(), (stack_size,))
        d = min(d_in, d_out)
        if singular_values is not None and path in singular_values:
            spectra = np.asarray(singular_values[path], np.float64).reshape(stack_size, d)
        elif not ks.any():  # nothing protected: all the energy is free, no SVD needed
            spectra = np.ones((stack_size, d))
        else:
            host = np.asarray(jax.device_get(leaves[path]), dtype=np.float64)
            view = spec.to_matrix(host).reshape(stack_size, d_in, d_out)
            spectra = np.stack([np.linalg.svd(m, compute_uv=False) for m in view])
        rows = []
        for b in range(stack_size):
            s = spectra[b]
            k = int(ks[b])
            nxt = projected_rank(policy, stage + 1, num_stages, d, k, protected is not None)
            rows.append({"protected": k, "free": d - k, "free_fraction": (d - k) / d,
                         "free_energy": _free_energy(s, k),
                         "projected_free": None if nxt is None else d - nxt})
        stacked = bool(stack_shape)
        entry: dict[str, Any] = {"min_dim": d}
        for key in rows[0]:
            vals = [r[key] for r in rows]
            entry[key] = vals if stacked else vals[0]
        matrices[path] = entry
    return {"stage": stage, "task": task, "matrices": matrices, "by_type": by_type(matrices)}


def _flat(v: Any) -> list:
    return list(v) if isinstance(v, list) else [v]


def by_type(matrices: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, float]]:
    """Per matrix type: mean free fraction and free energy, smallest free rank."""
    groups: dict[str, list[Mapping[str, Any]]] = {}
    for path, m in matrices.items():
        groups.setdefault(split_path(path)[1], []).append(m)
    out = {}
    for kind, ms in groups.items():
        out[kind] = {"free_fraction": float(np.mean([x for m in ms for x in _flat(m["free_fraction"])])),
                     "free_energy": float(np.mean([x for m in ms for x in _flat(m["free_energy"])])),
                     "min_free": int(min(x for m in ms for x in _flat(m["free"])))}
    return out


def load_capacity(run_dir: str) -> dict | None:
    """``capacity.json`` of ``run_dir``, or None if the run has none (not ASVD, or older)."""
    path = os.path.join(run_dir, FILE)
    if not os.path.isfile(path):
        return None
    with open(path) as f:
        try:
            return json.load(f)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}: not valid JSON ({e})") from e


def update_capacity_file(run_dir: str, record: dict, policy: Mapping[str, Any]) -> dict:
    """Put ``record`` at its stage in ``<run_dir>/capacity.json`` (later stages, left by a
    killed run, are dropped) and rewrite the file atomically; returns the whole file."""
    from asvd_jax._files import write_json_atomic

    data = load_capacity(run_dir) or {}
    tasks = [t for t in data.get("tasks", []) if t["stage"] < record["stage"]]
    data = {"policy": dict(policy), "tasks": tasks + [record]}
    write_json_atomic(os.path.join(run_dir, FILE), data)
    return data


def capacity_grid(record: Mapping[str, Any], field: str = "free_fraction") -> LayerGrid:
    """One field of a task's capacity record on the (layers x matrix types) grid."""
    vals = {}
    for path, m in record["matrices"].items():
        v = m[field]
        vals[path] = [np.nan if x is None else x for x in v] if isinstance(v, list) else \
            (np.nan if v is None else v)
    return layer_grid(vals)


def capacity_over_tasks(capacity: Mapping[str, Any], field: str = "free_fraction"
                        ) -> tuple[tuple[str, ...], np.ndarray]:
    """``(kinds, values)``: mean ``field`` per matrix type after every task, shape (tasks, kinds)."""
    grids = [capacity_grid(t, field) for t in capacity["tasks"]]
    kinds = tuple(dict.fromkeys(k for g in grids for k in g.kinds))
    out = np.full((len(grids), len(kinds)), np.nan)
    for i, g in enumerate(grids):
        for k, v in g.kind_means().items():
            out[i, kinds.index(k)] = v
    return kinds, out


def low_capacity(record: Mapping[str, Any], floor: float) -> list[tuple[str, int, int]]:
    """``(matrix, free rank, min_dim)`` of every matrix whose free rank -- now, or projected at
    the next task -- is below ``floor * min_dim`` (``floor`` a fraction in [0, 1])."""
    out = []
    for path, m in record["matrices"].items():
        d = m["min_dim"]
        free, proj = _flat(m["free"]), _flat(m["projected_free"])
        for i, (f, p) in enumerate(zip(free, proj)):
            worst = f if p is None else min(f, p)
            if worst < floor * d:
                out.append((f"{path}[{i}]" if isinstance(m["free"], list) else path, worst, d))
    return out


def capacity_warnings(capacity: Mapping[str, Any] | None, floor: float, limit: int = 8) -> list[str]:
    """Human-readable warnings for the newest task of ``capacity`` (empty when all is fine)."""
    if not capacity or not capacity.get("tasks"):
        return []
    last = capacity["tasks"][-1]
    low = low_capacity(last, floor)
    if not low:
        return []
    lines = [f"WARNING: {len(low)} matrices have (or will have at the next task) a free rank "
             f"below {floor:.0%} of their size after task {last['task']!r}:"]
    lines += [f"  {p}: free rank {f} of {d}" for p, f, d in low[:limit]]
    if len(low) > limit:
        lines.append(f"  ... and {len(low) - limit} more (see capacity.json)")
    return lines


def plot_capacity(record: Mapping[str, Any], path: str | None = None, field: str = "free_fraction",
                  floor: float | None = None):
    """Layers x matrix-types heatmap of one task's ``field``; saved to ``path`` when given."""
    from asvd_jax.analysis._plots import plot_layer_grid

    label = {"free_fraction": "free rank / min dim", "free_energy": "spectral energy in free subspace",
             "free": "free rank", "protected": "protected rank"}.get(field, field)
    title = f"capacity after {record['task']}: {label}"
    if floor is not None:
        title += f" (floor {floor:.0%})"
    fig = plot_layer_grid(capacity_grid(record, field), title=title, cmap="magma",
                          vmin=0.0 if field in ("free_fraction", "free_energy") else None,
                          vmax=1.0 if field in ("free_fraction", "free_energy") else None,
                          label=label)
    if path is not None:
        fig.savefig(path, dpi=110, bbox_inches="tight")
        import matplotlib.pyplot as plt

        plt.close(fig)
    return fig


def write_capacity_report(run_dir: str, floor: float = 0.1) -> tuple[str | None, list[str]]:
    """``capacity.png`` (free rank share and free spectral energy after the newest task, layers
    x matrix types) in ``run_dir``, and the floor warnings; ``(None, [])`` without a
    capacity.json, no image when the target paths carry no layer index."""
    capacity = load_capacity(run_dir)
    if not capacity or not capacity.get("tasks"):
        return None, []
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from asvd_jax.analysis._plots import plot_layer_grid

    last = capacity["tasks"][-1]
    try:
        grids = [(capacity_grid(last, f), lbl) for f, lbl in
                 (("free_fraction", "free rank / min dim"), ("free_energy", "energy in free subspace"))]
    except ValueError:
        # Matrices without a layer index (e.g. a registered single-block model) have no row in
        # a layers x types grid: no heatmap, the warnings still hold.
        return None, capacity_warnings(capacity, floor)
    g0 = grids[0][0]
    fig, axes = plt.subplots(1, 2, figsize=(2.4 + 1.8 * len(g0.kinds), 1.8 + 0.2 * len(g0.layers)))
    for ax, (grid, lbl) in zip(axes, grids):
        plot_layer_grid(grid, ax=ax, title=lbl, cmap="magma", vmin=0.0, vmax=1.0, label=lbl)
    # Cross out the cells under the floor (now or at the next task) on the free-rank panel.
    for name, _, _ in low_capacity(last, floor):
        base, _, idx = name.partition("[")
        layer, kind = split_path(base)
        layer = int(idx.rstrip("]")) if idx else layer
        if layer in g0.layers and kind in g0.kinds:
            axes[0].text(g0.kinds.index(kind), g0.layers.index(layer), "x", ha="center",
                         va="center", color="cyan", fontsize=9, fontweight="bold")
    fig.suptitle(f"Capacity after task {last['stage'] + 1} ({last['task']}), policy "
                 f"{rank_policy_of(capacity.get('policy', {}))[0]}; x: free rank under "
                 f"{floor:.0%} now or at the next task", y=1.04)
    path = os.path.join(run_dir, "capacity.png")
    tmp = path + ".tmp.png"
    fig.savefig(tmp, dpi=110, bbox_inches="tight")
    plt.close(fig)
    os.replace(tmp, path)
    return path, capacity_warnings(capacity, floor)
