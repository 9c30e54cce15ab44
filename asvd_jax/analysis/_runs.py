"""Continual-learning runs as numbers: the accuracy matrix, forgetting curves, rank plans.

A run directory written by the runner (``asvd_jax.cl.run``) holds ``metrics.json`` (one row per
training stage, each with the evaluation of every task), ``config.yaml`` and
``rank_plans/task-NNNN-<task>.json`` for the stages that planned ranks. Runs still in progress
(or stopped) load too: the accuracy matrix is rebuilt from the rows present.

Conventions follow ``asvd_jax.metrics``: R[i, j] is the accuracy on task j after
training stage i. The forgetting curve of task j is R[i, j] for the stages from the one that
trained j to the last; its drop is the task's forgetting.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from typing import Any, Mapping

import numpy as np

_PLAN_FILE = re.compile(r"^task-(\d+)-.*\.json$")


@dataclasses.dataclass(frozen=True)
class Run:
    """One run directory, read."""

    run_dir: str
    """Absolute path of the directory."""
    metrics: Mapping[str, Any]
    """The parsed ``metrics.json``."""
    tasks: tuple[str, ...]
    """Evaluated tasks, in sequence order (the columns of the accuracy matrix)."""
    stages: tuple[str, ...]
    """Names of the finished training stages (the rows): task names, or one joint stage."""
    rank_plans: tuple[Mapping[str, Any] | None, ...]
    """Per stage, the rank plan's dict (``RankPlan.from_dict`` reads it) or None."""
    config: Mapping[str, Any] | None = None
    """The parsed ``config.yaml`` when present (needs pyyaml)."""

    @property
    def method(self) -> str:
        return str(self.metrics.get("method", "?"))

    @property
    def complete(self) -> bool:
        return self.metrics.get("status") == "complete"


def _read_json(path: str) -> Any:
    try:
        with open(path) as f:
            return json.load(f)
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON ({err})") from None


def load_run(run_dir: str | os.PathLike) -> Run:
    """Read a run directory (``metrics.json`` required; plans and config when present)."""
    run_dir = os.path.abspath(os.fspath(run_dir))
    path = os.path.join(run_dir, "metrics.json")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: missing (is {run_dir!r} a run directory?)")
    metrics = _read_json(path)
    if not isinstance(metrics, dict) or not isinstance(metrics.get("rows"), list):
        raise ValueError(f"{path}: expected an object with a 'rows' list")
    tasks = metrics.get("tasks")
    if not isinstance(tasks, list) or not all(isinstance(t, str) for t in tasks):
        raise ValueError(f"{path}: 'tasks' must be a list of task names")
    stages = []
    for i, row in enumerate(metrics["rows"]):
        if not isinstance(row, dict) or "stage" not in row or not isinstance(row.get("eval"), list):
            raise ValueError(f"{path}: rows[{i}] needs 'stage' and an 'eval' list")
        stages.append(str(row["stage"]))
    plans: list[Any] = [None] * len(stages)
    plan_dir = os.path.join(run_dir, "rank_plans")
    if os.path.isdir(plan_dir):
        for name in sorted(os.listdir(plan_dir)):
            m = _PLAN_FILE.match(name)
            if m and int(m.group(1)) < len(stages):
                plans[int(m.group(1))] = _read_json(os.path.join(plan_dir, name))
    config = None
    cfg_path = os.path.join(run_dir, "config.yaml")
    if os.path.isfile(cfg_path):
        try:
            import yaml
        except ImportError:  # the config is a convenience; the numbers are in metrics.json
            yaml = None
        if yaml is not None:
            with open(cfg_path) as f:
                config = yaml.safe_load(f)
    return Run(run_dir, metrics, tuple(tasks), tuple(stages), tuple(plans), config)


def _as_run(run: Any) -> Run:
    if isinstance(run, Run):
        return run
    if isinstance(run, (str, os.PathLike)):
        return load_run(run)
    raise TypeError(f"expected a Run (load_run) or a run directory path, got {type(run).__name__}")


def accuracy_matrix(run: Any, key: str = "accuracy") -> np.ndarray:
    """R[i, j]: ``key`` (``"accuracy"``, ``"option_accuracy"``...) on task j after stage i.

    Shape (stages finished, tasks); NaN where a task was not evaluated or the metric is absent.
    """
    run = _as_run(run)
    out = np.full((len(run.stages), len(run.tasks)), np.nan)
    for i, row in enumerate(run.metrics["rows"]):
        for j, entry in enumerate(row["eval"]):
            name = entry.get("task", run.tasks[j] if j < len(run.tasks) else None)
            if name not in run.tasks:
                raise ValueError(f"{run.run_dir}: rows[{i}] evaluates unknown task {name!r}")
            value = entry.get(key)
            if value is not None:
                out[i, run.tasks.index(name)] = float(value)
    return out


def zero_shot_accuracy(run: Any, key: str = "accuracy") -> np.ndarray | None:
    """Accuracy of the initial model on every task, or None if the run did not measure it."""
    run = _as_run(run)
    zs = run.metrics.get("zero_shot")
    if not zs or key not in zs:
        return None
    return np.asarray([np.nan if v is None else v for v in zs[key]], np.float64)


def forgetting_curves(run: Any, key: str = "accuracy", *, from_start: bool = False) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``{task: (stage indices, accuracies)}`` through the sequence.

    Each curve starts at the stage that trained the task (``from_start=True``: at stage 0, and
    at the zero-shot point -1 when the run measured one). A task without a stage of its own
    (a joint multi-task stage) is followed from stage 0.
    """
    run = _as_run(run)
    r = accuracy_matrix(run, key)
    zero = zero_shot_accuracy(run, key) if from_start else None
    curves = {}
    for j, task in enumerate(run.tasks):
        first = 0 if from_start or task not in run.stages else run.stages.index(task)
        stages = np.arange(first, len(run.stages))
        accs = r[first:, j]
        if zero is not None:
            stages, accs = np.concatenate([[-1], stages]), np.concatenate([[zero[j]], accs])
        curves[task] = (stages, accs)
    return curves


def run_summary(run: Any, key: str = "accuracy") -> dict[str, float]:
    """AA, BWT and forgetting (and FWT with a zero-shot row) of a run's accuracy matrix.

    The headline FWT follows ``asvd_jax.metrics.choose_fwt`` as the runner's summary does
    (option scoring's FWT when zero-shot generation gave few label answers).

    Computed by ``asvd_jax.metrics`` from the rows, so a run in progress is summarised
    over the tasks trained so far (the square top-left block of R).
    """
    from asvd_jax.metrics import summarize

    run = _as_run(run)
    r = accuracy_matrix(run, key)
    if not all(s == t for s, t in zip(run.stages, run.tasks)):
        # A joint stage: only the final average is defined.
        return {"average_accuracy": float(np.nanmean(r[-1]))} if len(r) else {}
    n = len(run.stages)
    if n == 0:
        return {}
    zero = zero_shot_accuracy(run, key)
    out = summarize(r[:n, :n], None if zero is None or np.isnan(zero[:n]).any() else zero[:n])
    if key == "accuracy" and "fwt" in out:  # the runner's choice of FWT reference, same rule
        from asvd_jax.metrics import choose_fwt

        opt = accuracy_matrix(run, "option_accuracy")[:n, :n]
        opt = {} if np.isnan(opt).any() else run_summary(run, "option_accuracy")
        both = {**out, **{"option_" + k: v for k, v in opt.items()}}
        choose_fwt(both, (run.metrics.get("zero_shot") or {}).get("eval"), run.metrics.get("protocol"))
        # Numbers only (callers round and average them): which FWT it is stays in metrics.json.
        out = {k: v for k, v in both.items() if not k.startswith("option_") and k != "fwt_from"}
    return out


def stage_records(run: Any, field: str) -> list[Any]:
    """Per stage, the method record's ``field`` (e.g. ``"leakage"``, ``"rank_summary"``) or None."""
    run = _as_run(run)
    return [row.get("record", {}).get(field) for row in run.metrics["rows"]]
