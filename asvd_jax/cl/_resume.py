"""Task-end checkpoints of a run and where a resumed run continues.

A task-end checkpoint holds the params, the method's carry state (EWC's Fisher, O-LoRA's old
factors) and, when ``train.fresh_optimizer`` is off, the AdamW moments; its meta holds the
method's record (rank plan included). A mid-task step checkpoint (``_loop.save_step``)
continues its stage (``_stage.restore_step``).
"""

from __future__ import annotations

from typing import Any


def resume_point(runner) -> tuple[Any, int, dict | None, Any]:
    """``(params, first stage to run, step checkpoint meta or None, moments)`` for the run:
    the initial model at stage 0, or what the latest checkpoint says with ``resume``.
    ``moments`` is None or the name of a task-end checkpoint that holds AdamW moments."""
    params = runner.params0
    start_stage, step_meta, moments = 0, None, None
    latest = runner.ckpt.latest() if runner.resume else None
    if latest is not None:
        stage = latest["stage"]
        if latest["kind"] == "task":
            params = restore_task_end(runner, latest["name"])
            start_stage = stage + 1
            if "adam" in latest["leaf_counts"]:
                moments = latest["name"]
        else:
            if stage > 0:
                params = restore_task_end(runner, f"task-{stage - 1:04d}")
            start_stage, step_meta = stage, latest
        runner.progress.log(f"[asvd-jax] resuming from checkpoint {latest['name']}")
    return params, start_stage, step_meta, moments


def _carry(method) -> dict | None:
    fn = getattr(method, "carry_state", None)
    return fn() if fn is not None else None


def restore_task_end(runner, name: str) -> Any:
    """The params of task-end checkpoint ``name``; the method's carry state is restored too."""
    groups = {"params": runner.params0}
    restored = runner.ckpt.restore(name, groups)
    carry = runner.ckpt.restore_raw(name, "carry")
    fn = getattr(runner.method, "restore_carry_state", None)
    if carry is not None and fn is not None:
        fn(carry)
    return restored["params"]


def save_task_end(runner, stage: int, params, moments, record: dict) -> None:
    groups = {"params": params}
    if moments is not None:
        groups["adam"] = moments
    # meta.json holds the method's record (rank plan included) beside the arrays.
    runner.ckpt.save(f"task-{stage:04d}", groups,
                     {"kind": "task", "stage": stage, "task_index": stage,
                      "rng_seed": runner.config.train.seed, "record": record},
                     raw={"carry": _carry(runner.method)})
    runner.ckpt.remove("step-")  # mid-task checkpoints of a finished task are spent
    runner.ckpt.prune("task-", keep=runner.config.checkpoint.keep_tasks)
