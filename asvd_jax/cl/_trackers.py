"""Experiment trackers: what a run streams while it runs (``run.trackers``).

- ``jsonl``: ``<run_dir>/events.jsonl``, one JSON object per line (``{"kind": "step" | "task",
  "step": global step, ...values}``), flushed line by line, appended to on resume.
- ``tensorboard``: event files under ``<run_dir>/tensorboard`` (tensorboardX; open with
  ``tensorboard --logdir <run_dir>/tensorboard``).
- ``wandb``: Weights & Biases, offline unless ``WANDB_MODE`` says otherwise (a run never
  makes a network call on its own; ``wandb sync`` uploads later). Needs ``pip install wandb``.

Per step (one micro-batch; the x axis is the micro-batch count over the whole run, so a
resumed run continues the curve; after a kill mid-task the
micro-batches since the last checkpoint are trained and logged again, so a step can appear
twice: the later entry is the one the run kept): ``train/loss``, ``train/lr``, ``train/grad_norm``,
``train/step_seconds``. Per task: ``eval/<task>`` (the accuracy row), ``eval/average_accuracy``
and ``eval/bwt`` over the tasks seen so far, ``ranks/<matrix type>/protected_fraction``,
``capacity/<matrix type>/free_fraction``, ``leakage/max`` / ``leakage/mean``, and
``time/start_task_seconds`` (statistics and SVDs) and ``time/train_seconds``.
"""

from __future__ import annotations

import json
import math
import os
from typing import Any, Mapping, Sequence

import numpy as np

TRACKERS = ("jsonl", "tensorboard", "wandb")


class TrackerError(RuntimeError):
    """A tracker cannot start (missing package, bad name); the message says what to do."""


def check_names(names: Sequence[str]) -> None:
    for n in names:
        if n not in TRACKERS:
            raise TrackerError(f"run.trackers: unknown tracker {n!r}; valid: {', '.join(TRACKERS)}")


class JsonlTracker:
    def __init__(self, run_dir: str):
        self.path = os.path.join(run_dir, "events.jsonl")
        self._f = open(self.path, "a", encoding="utf-8")

    def log(self, kind: str, step: int, values: Mapping[str, float], extra: Mapping[str, Any]):
        self._f.write(json.dumps({"kind": kind, "step": step, **extra, **values}) + "\n")
        self._f.flush()

    def flush(self) -> None:
        self._f.flush()

    def close(self) -> None:
        self._f.close()


class TensorBoardTracker:
    def __init__(self, run_dir: str):
        try:
            from tensorboardX import SummaryWriter
        except ImportError as e:
            raise TrackerError("run.trackers has 'tensorboard' but tensorboardX is not installed: "
                               "pip install 'asvd_jax[cli]' (or pip install tensorboardX), or "
                               "drop it from run.trackers") from e
        self.logdir = os.path.join(run_dir, "tensorboard")
        self._w = SummaryWriter(logdir=self.logdir, flush_secs=30)

    def log(self, kind: str, step: int, values: Mapping[str, float], extra: Mapping[str, Any]):
        del kind, extra
        for tag, v in values.items():
            self._w.add_scalar(tag, v, global_step=step)

    def flush(self) -> None:
        self._w.flush()

    def close(self) -> None:
        self._w.close()


class WandbTracker:
    def __init__(self, run_dir: str, config: Mapping[str, Any]):
        try:
            import wandb
        except ImportError as e:
            raise TrackerError("run.trackers has 'wandb' but the wandb package is not installed: "
                               "pip install 'asvd_jax[wandb]' (or pip install wandb), or drop it "
                               "from run.trackers") from e
        # Offline by default: the run writes <run_dir>/wandb and `wandb sync` uploads it.
        mode = os.environ.get("WANDB_MODE", "offline")
        self._run = wandb.init(project=os.environ.get("WANDB_PROJECT", "asvd-jax"),
                               name=os.path.basename(run_dir), dir=run_dir, mode=mode,
                               config=dict(config), resume="allow")

    def log(self, kind: str, step: int, values: Mapping[str, float], extra: Mapping[str, Any]):
        del kind, extra
        self._run.log(dict(values), step=step)

    def flush(self) -> None:
        pass

    def close(self) -> None:
        self._run.finish()


def _finite(values: Mapping[str, Any]) -> dict[str, float]:
    return {k: float(v) for k, v in values.items()
            if isinstance(v, (int, float, np.floating, np.integer)) and math.isfinite(float(v))}


class Trackers:
    """Fan-out to the configured trackers; ``step`` and ``task`` are the runner's two hooks."""

    def __init__(self, names: Sequence[str], run_dir: str, config: Mapping[str, Any] | None = None):
        check_names(names)
        self._all: list[Any] = []
        try:
            for n in dict.fromkeys(names):  # unique, in order
                if n == "jsonl":
                    self._all.append(JsonlTracker(run_dir))
                elif n == "tensorboard":
                    self._all.append(TensorBoardTracker(run_dir))
                else:
                    self._all.append(WandbTracker(run_dir, config or {}))
        except Exception:
            self.close()
            raise

    def _log(self, kind: str, step: int, values: Mapping[str, Any], extra: Mapping[str, Any]):
        values = _finite(values)
        for t in self._all:
            t.log(kind, step, values, extra)

    def step(self, step: int, *, loss: float, lr: float, grad_norm: float, seconds: float,
             stage: int) -> None:
        self._log("step", step, {"train/loss": loss, "train/lr": lr, "train/grad_norm": grad_norm,
                                 "train/step_seconds": seconds}, {"stage": stage})

    def task(self, step: int, stage: int, rows: Sequence[Mapping[str, Any]], *,
             start_task_seconds: float, capacity: Mapping[str, Any] | None = None) -> None:
        """The values of the newest row of ``rows`` (metrics.json's rows so far)."""
        self._log("task", step, task_values(rows, start_task_seconds, capacity),
                  {"stage": stage, "task": rows[-1]["stage"]})
        for t in self._all:
            t.flush()

    def close(self) -> None:
        for t in self._all:
            try:
                t.close()
            except Exception:  # closing one must not keep the others open
                pass
        self._all = []


def task_values(rows: Sequence[Mapping[str, Any]], start_task_seconds: float,
                capacity: Mapping[str, Any] | None = None) -> dict[str, float]:
    """Scalars of the newest row: accuracies, AA / BWT so far, ranks, capacity, leakage, times."""
    row = rows[-1]
    stage = len(rows) - 1
    acc = [e["accuracy"] for e in row["eval"]]
    out: dict[str, float] = {f"eval/{e['task']}": e["accuracy"] for e in row["eval"]}
    seen = acc[:stage + 1] if row["stage"] != "joint" else acc
    out["eval/average_accuracy"] = float(np.mean(seen))
    if stage > 0 and row["stage"] != "joint":
        # BWT over the tasks finished before this one: accuracy now minus just after training it.
        out["eval/bwt"] = float(np.mean([acc[j] - rows[j]["eval"][j]["accuracy"] for j in range(stage)]))
    rec = row.get("record") or {}
    for kind, s in (rec.get("rank_summary") or {}).items():
        out[f"ranks/{kind}/protected_fraction"] = s["mean"]
    for key in ("max", "mean"):
        if key in (rec.get("leakage") or {}):
            out[f"leakage/{key}"] = rec["leakage"][key]
    for kind, s in ((capacity or {}).get("by_type") or {}).items():
        out[f"capacity/{kind}/free_fraction"] = s["free_fraction"]
        out[f"capacity/{kind}/free_energy"] = s["free_energy"]
    out["time/start_task_seconds"] = start_task_seconds
    out["time/train_seconds"] = row["train"]["seconds"]
    return out
