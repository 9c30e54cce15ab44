"""One stage of a run: set-up at the task boundary, training, and the stage's end.

``run_stage`` is what ``Runner._run_stage`` does for stage ``i`` (a task; MTL's joint stage):

1. ``begin_stage``: the method's ``start_task`` (ASVD: statistics, rank plan, bases), the
   run's one optax chain re-initialised for this task (fresh AdamW moments and schedule
   count, the schedule's length, the method's bases via ``init_task_state``), carried AdamW
   moments, and a mid-task step checkpoint when resuming.
2. ``_loop.train_stage``: the micro-batches through the run's one jitted step.
3. ``end_stage``: ``finish_task``, leakage, rank plan file, evaluation of every task (one
   row of the accuracy matrix), capacity report, trackers, the task-end checkpoint.
"""

from __future__ import annotations

import ctypes
import dataclasses
import gc
import os
import time
from typing import Any

import jax
import numpy as np

from asvd_jax.cl._checkpoint import write_json_atomic
from asvd_jax.cl._early_stop import EarlyStopper, make_stopper
from asvd_jax.cl._method import TaskContext
from asvd_jax.cl._sequence import TaskStream
from asvd_jax.cl._task_state import set_task_length
from asvd_jax.cl._train import adam_states, transplant_adam


@dataclasses.dataclass
class Stage:
    """The live state of one stage between its set-up and its end."""

    index: int
    name: str
    stream: TaskStream
    ctx: TaskContext
    trainable: Any
    frozen: Any
    opt_state: Any
    step_fn: Any
    stop: EarlyStopper | None
    tasks: list
    """The tasks early stopping evaluates: this stage's (MTL: all)."""
    start_seconds: float
    start_micro: int = 0
    losses: list = dataclasses.field(default_factory=list)


def run_stage(runner, stage: int, params, metrics: dict, step_meta: dict | None, moments):
    """Train stage ``stage`` from ``params``; returns (new params, AdamW moments to carry)."""
    from asvd_jax.cl._loop import train_stage

    st = begin_stage(runner, stage, params, step_meta, moments)
    train_seconds, leakage_log = train_stage(runner, st, metrics)
    return end_stage(runner, st, metrics, train_seconds, leakage_log)


def begin_stage(runner, stage: int, params, step_meta: dict | None, moments) -> Stage:
    from asvd_jax.cl._compact import stage_width
    from asvd_jax.cl._mesh import shard_tree

    c = runner.config
    name, items = runner.stages[stage]
    stream = TaskStream(items, c.train, stage)
    runner.adapter.min_width = stage_width(runner.family, runner.adapter, list(stream.chunks()))  # short stage: one shape
    prev = runner._stats_batches(stage) if stage > 0 and c.method.name != "mtl" else None
    ctx = TaskContext(
        index=stage, num_tasks=len(runner.stages), params=params, targets=runner.targets,
        adapter=runner.adapter, previous_batches=prev,
        current_batches=lambda: runner._method_batches(stage, stream),  # at the stage's largest shapes
        rng=jax.random.fold_in(jax.random.key(c.train.seed), stage),
    )
    t = time.perf_counter()
    trainable, frozen = runner.method.start_task(ctx)
    release_freed_memory()  # the float64 SVDs and statistics of start_task
    start_seconds = time.perf_counter() - t
    runner._timed("start_task", start_seconds)
    # The step donates its input buffers; ctx.params must survive (leakage, methods).
    trainable = shard_tree(jax.tree.map(lambda x: x.copy(), trainable), runner.mesh)
    frozen = shard_tree(frozen, runner.mesh)
    opt, step_fn = runner._train_step(ctx)
    opt_state = task_opt_state(runner, opt, trainable, ctx, stream.optimizer_steps)
    if not c.train.fresh_optimizer and moments is not None:
        if isinstance(moments, str):  # a checkpoint name: restore against this task's moments
            moments = runner.ckpt.restore(moments, {"adam": adam_states(opt_state)})["adam"]
        opt_state = transplant_adam(opt_state, moments)
    # Early stopping (train.patience): dev evaluations of this stage's own task(s).
    stop = make_stopper(c.train, stream.per_epoch // c.train.grad_accum, stream.optimizer_steps)
    st = Stage(index=stage, name=name, stream=stream, ctx=ctx, trainable=trainable, frozen=frozen,
               opt_state=opt_state, step_fn=step_fn, stop=stop,
               tasks=runner.train_tasks if c.method.name == "mtl" else [runner.train_tasks[stage]],
               start_seconds=start_seconds)
    if step_meta is not None:
        restore_step(runner, st, step_meta)
    return st


def task_opt_state(runner, opt, trainable, ctx: TaskContext, optimizer_steps: int):
    """The run's chain re-initialised for one task: what a chain built for this task alone
    would start from (fresh moments and count), with this task's schedule length and the
    method's bases (``init_task_state``, optional in the Method protocol)."""
    from asvd_jax.cl._mesh import shard_tree

    opt_state = set_task_length(opt.init(trainable), optimizer_steps)
    init = getattr(runner.method, "init_task_state", None)
    if init is not None:
        opt_state = init(opt_state, ctx)
    # Copied: the step donates the state, and its arrays may be shared (the method's bases).
    return shard_tree(jax.tree.map(lambda x: x.copy(), opt_state), runner.mesh)


def restore_step(runner, st: Stage, step_meta: dict) -> None:
    """Continue ``st`` from a mid-task step checkpoint (weights, optimizer state, losses,
    early-stopping state), restored against this stage's freshly set-up trees."""
    es = step_meta.get("early_stop")
    templates = {"trainable": st.trainable, "frozen": st.frozen, "opt_state": st.opt_state}
    if es and es.get("best") is not None:
        templates["best"] = st.trainable
    restored = runner.ckpt.restore(step_meta["name"], templates)
    st.trainable, st.frozen, st.opt_state = restored["trainable"], restored["frozen"], restored["opt_state"]
    st.start_micro, st.losses = step_meta["micro_step"], list(step_meta["losses"])
    if st.stop is not None and es:
        st.stop.load_state(es, restored.get("best"))


def end_stage(runner, st: Stage, metrics: dict, train_seconds: float, leakage_log: list):
    """The stage's results: new params, its accuracy-matrix row and the task-end checkpoint."""
    from asvd_jax.cl._evaluate import capacity_report, evaluate_all
    from asvd_jax.cl._mesh import shard_tree
    from asvd_jax.cl._resume import save_task_end

    c = runner.config
    stage, name, trainable, losses = st.index, st.name, st.trainable, st.losses
    if st.stop is not None:
        trainable = st.stop.restore(trainable)  # the best dev evaluation's weights
    new_moments = None if c.train.fresh_optimizer else adam_states(st.opt_state)
    t = time.perf_counter()
    params, record = runner.method.finish_task(trainable, st.frozen, st.ctx)
    runner._timed("finish_task", time.perf_counter() - t)  # EWC's Fisher, O-LoRA's merge...
    leak_fn = getattr(runner.method, "leakage", None)
    leak = leak_fn(trainable, st.ctx, st.opt_state) if leak_fn is not None else None
    if leak:
        record["leakage"] = leak
    params = shard_tree(params, runner.mesh)
    full_record = dict(record)
    if "rank_plan" in record:
        os.makedirs(os.path.join(runner.run_dir, "rank_plans"), exist_ok=True)
        write_json_atomic(os.path.join(runner.run_dir, "rank_plans", f"task-{stage:04d}-{name}.json"),
                          record.pop("rank_plan"))
    if leakage_log:
        record["leakage_log"] = leakage_log
    ev = evaluate_all(runner, params, f"after {name}")
    step0 = sum(r["train"]["micro_steps"] for r in metrics["rows"])  # earlier stages' steps
    metrics["rows"].append({
        "stage": name, "index": stage,
        "train": {"micro_steps": len(losses), "optimizer_steps": len(losses) // c.train.grad_accum,
                  "mean_loss": float(np.mean(losses)) if losses else float("nan"),
                  "last_loss": losses[-1] if losses else float("nan"),
                  "losses": losses, "seconds": train_seconds,
                  **({"early_stopping": st.stop.record()} if st.stop is not None else {})},
        "record": record,
        "eval": ev,
    })
    capacity = capacity_report(runner, stage, name, params, full_record)
    runner.trackers.task(step0 + len(losses), stage, metrics["rows"],
                         start_task_seconds=st.start_seconds, capacity=capacity)
    save_task_end(runner, stage, params, new_moments, full_record)
    runner.write_metrics(metrics)
    return params, new_moments


def release_freed_memory() -> None:
    """Return memory freed by the last stage to the OS (glibc's ``malloc_trim``; a no-op elsewhere).

    After a large free glibc raises its mmap threshold (up to 32 MB), so later arrays of a few
    MB -- most weight matrices, their gradients and AdamW moments -- come from the heap, and
    what a finished stage frees there stays resident. Measured on SmolLM2-135M (5 tasks, asvd,
    2 cores): resident memory grew ~1.9 GB per task to a 13.3 GB peak although each task's live
    arrays are the same size; with the mmap threshold pinned the same run peaked at 7.4 GB.
    """
    gc.collect()  # closures of the last stage's jitted step and optimizer can sit in cycles
    try:
        trim = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):  # not glibc (macOS, musl)
        return
    trim(0)
