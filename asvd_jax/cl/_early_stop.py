"""Early stopping per task: train until the task's own dev accuracy stops improving.

With ``train.patience = p > 0`` the runner scores the current weights on the stage's dev
split every ``train.eval_every`` optimizer steps (0: once per epoch) and once more at the
stream's end. An evaluation *improves* when its accuracy exceeds the best so far by more
than ``train.min_delta``; after ``p`` evaluations in a row that do not, the task stops, and
the trainable weights of the best evaluation (the earliest one on ties) replace the current
ones. ``train.epochs`` and ``train.max_steps`` still bound the task (the step cap).

The stage's AdamW moments are not rolled back with the weights; they only matter with
``train.fresh_optimizer = false``, where the next task starts from the last step's moments.
"""

from __future__ import annotations

import math
from typing import Any

import jax
import numpy as np


class EarlyStopper:
    """Patience bookkeeping plus a device copy of the best trainable weights."""

    def __init__(self, patience: int, min_delta: float, every: int, total_steps: int):
        if patience < 1 or every < 1:
            raise ValueError(f"EarlyStopper: patience and every must be >= 1, got {patience}, {every}")
        self.patience, self.min_delta, self.every, self.total = patience, min_delta, every, total_steps
        self.best = -math.inf
        self.best_step = 0
        self.bad = 0
        self.history: list[dict] = []
        self.best_trainable: Any = None
        self.stopped_at: int | None = None

    def due(self, optimizer_step: int) -> bool:
        """Evaluate after this optimizer step (every ``every`` steps and at the last one)?"""
        return optimizer_step % self.every == 0 or optimizer_step == self.total

    def update(self, optimizer_step: int, dev_accuracy: float, trainable: Any) -> bool:
        """Record one evaluation; True when the task should stop now."""
        self.history.append({"optimizer_step": optimizer_step, "dev_accuracy": float(dev_accuracy)})
        if dev_accuracy > self.best + self.min_delta:
            self.best, self.best_step, self.bad = float(dev_accuracy), optimizer_step, 0
            # A copy: the train step donates (and overwrites) its input buffers.
            self.best_trainable = jax.tree.map(lambda x: x.copy(), trainable)
        else:
            self.bad += 1
        if self.bad >= self.patience:
            self.stopped_at = optimizer_step
            return True
        return False

    def restore(self, trainable: Any) -> Any:
        """The best evaluation's weights (``trainable`` itself if none was recorded)."""
        return trainable if self.best_trainable is None else self.best_trainable

    def record(self) -> dict:
        """What the run's metrics keep: the dev curve, the best step, where it stopped."""
        return {"history": self.history, "best_step": self.best_step,
                "best_dev_accuracy": self.best if self.history else None,
                "stopped_at": self.stopped_at}

    def state(self) -> dict:
        """JSON state for a mid-task checkpoint (the weights travel as an array group)."""
        return {"best": self.best if self.history else None, "best_step": self.best_step,
                "bad": self.bad, "history": self.history}

    def load_state(self, state: dict, best_trainable: Any) -> None:
        self.best = -math.inf if state["best"] is None else float(state["best"])
        self.best_step, self.bad = int(state["best_step"]), int(state["bad"])
        self.history = list(state["history"])
        self.best_trainable = best_trainable


def make_stopper(train, per_epoch_steps: int, total_steps: int) -> EarlyStopper | None:
    """The stage's stopper from the train config, or None when early stopping is off."""
    if train.patience <= 0:
        return None
    every = train.eval_every or max(per_epoch_steps, 1)
    return EarlyStopper(train.patience, train.min_delta, every, total_steps)


def dev_accuracy(adapter: Any, method: Any, trainable: Any, frozen: Any, tasks,
                 stop_sets: dict | None = None) -> float:
    """Mean accuracy over ``tasks`` (one task, or all for an MTL stage) of the current weights
    on each task's stopping set: ``stop_sets[name]`` when given (``train.stop_holdout``),
    else its dev split; a task with neither is an error naming it."""
    params = method.effective_params(trainable, frozen)
    scores = []
    for task in tasks:
        examples = (stop_sets or {}).get(task.name) or task.dev
        if not examples:
            raise ValueError(f"train.patience: task {task.name!r} has no dev examples to stop on "
                             f"(set train.stop_holdout to hold out training examples instead)")
        scores.append(adapter.evaluate(params, task, examples)["accuracy"])
    return float(np.mean(scores))


def hold_out(tasks, n: int, seed: int) -> tuple[tuple, dict]:
    """``(tasks without the held-out examples in train, {task name: held-out examples})``.

    ``n`` training examples per task (class-balanced for classification, a seeded draw) become
    the early-stopping set, so a run scored on the dev split (a dev sweep) does not pick its
    checkpoints on the very examples it reports: with stopping on dev and ``eval.split: dev``,
    R[j, j] is the best of several looks at the same examples and biased upwards.
    """
    import dataclasses

    from asvd_jax.cl._sequence import _subset

    if n <= 0:
        return tuple(tasks), {}
    out, sets = [], {}
    for task in tasks:
        if n >= len(task.train):
            raise ValueError(f"train.stop_holdout={n}: task {task.name!r} has only "
                             f"{len(task.train)} training examples")
        held = _subset(task.train, n, seed, ("stop_holdout", task.name), bool(task.options))
        ids = {id(ex) for ex in held}
        out.append(dataclasses.replace(task, train=tuple(ex for ex in task.train if id(ex) not in ids)))
        sets[task.name] = held
    return tuple(out), sets


__all__ = ["EarlyStopper", "dev_accuracy", "hold_out", "make_stopper"]
