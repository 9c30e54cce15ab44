"""``eval.option_pool``: which answers option scoring chooses from (and ``train.option_pool``:
which answers an option-contrastive training loss contrasts with).

``task`` scores each task against its own label words: the model is told which answers are
possible (a task-incremental protocol), which hides a drift towards a later task's answers.
``sequence`` scores against every label word of the sequence, as free generation would allow,
so a model that now maps an earlier task's inputs to a later task's answers is scored wrong.
The labels of different tasks must not collide for this to mean anything (the
``offline_disjoint`` suite shares no answer word between tasks).
"""

from __future__ import annotations

import inspect
from typing import Any, Sequence


def option_pool(name: str, tasks: Sequence[Any], adapter: Any) -> tuple[str, ...] | None:
    """The answers to score every task against (None: each task's own).

    ValueError when ``sequence`` is asked of an adapter whose ``evaluate`` takes no
    ``options`` argument, or of a sequence with a generation task (no label words).
    """
    if name == "task":
        return None
    if "options" not in inspect.signature(adapter.evaluate).parameters:
        raise ValueError(f"eval.option_pool={name}: the {type(adapter).__name__} adapter cannot "
                         f"score a pool of options (its evaluate() takes no `options`)")
    return answers(tasks, f"eval.option_pool={name}")


def answers(tasks: Sequence[Any], setting: str) -> tuple[str, ...]:
    """The label words of ``tasks`` in order, each once; ValueError naming ``setting`` when a
    task has none (a generation task)."""
    missing = [t.name for t in tasks if not t.options]
    if missing:
        raise ValueError(f"{setting}: task(s) {missing} have no label words")
    return tuple(dict.fromkeys(o for t in tasks for o in t.options))


def training_tasks(name: str, tasks: Sequence[Any], adapter: Any, joint: bool = False) -> tuple:
    """``train.option_pool``: the tasks as training and early stopping see them.

    ``task``: the tasks themselves. ``seen``: each task with the label words of every task up
    to it (all of them for a joint stage, ``joint``) as its options, its own first, so an
    option-contrastive loss also pushes its inputs away from earlier tasks' answers. ValueError
    for an adapter whose loss does not contrast options (``trains_on_options``) or a task
    without label words.
    """
    import dataclasses

    if name == "task":
        return tuple(tasks)
    if not getattr(adapter, "trains_on_options", False):
        raise ValueError(f"train.option_pool={name}: the {type(adapter).__name__} adapter's loss "
                         f"does not contrast answer options (no `trains_on_options`)")
    setting = f"train.option_pool={name}"
    answers(tasks, setting)
    # Own options first (a label keeps its index), then the earlier tasks' words.
    return tuple(dataclasses.replace(task, options=answers(
        [task, *(tasks if joint else tasks[: j + 1])], setting)) for j, task in enumerate(tasks))


def evaluate(adapter: Any, params: Any, task: Any, examples: Sequence[Any],
             pool: tuple[str, ...] | None) -> dict:
    """``adapter.evaluate`` over the task's own options or over ``pool``."""
    if pool is None:
        return adapter.evaluate(params, task, examples)
    return adapter.evaluate(params, task, examples, options=pool)
