"""The training loop of one stage: micro-batches through the run's jitted step.

Per micro-batch: the step, the trackers' step event, a non-finite loss stops the run (the
last checkpoint stays), early stopping's dev evaluation when due, a mid-task step checkpoint
every ``checkpoint.every_steps`` optimizer steps, and the leakage log every
``train.leakage_every`` optimizer steps.
"""

from __future__ import annotations

import math
import time

from asvd_jax.cl._early_stop import dev_accuracy
from asvd_jax.cl._progress import counter


def train_stage(runner, st, metrics: dict) -> tuple[float, list[dict]]:
    """Train ``st`` (a ``_stage.Stage``) in place from ``st.start_micro``; returns the
    training seconds and the leakage log."""
    from asvd_jax.cl._train import stage_lr

    c = runner.config
    stream, stage = st.stream, st.index
    every = c.checkpoint.every_steps * c.train.grad_accum
    t = time.perf_counter()
    leakage_log: list[dict] = []
    step0 = sum(r["train"]["micro_steps"] for r in metrics["rows"])  # earlier stages' steps
    label = f"train {stage + 1}/{len(runner.stages)} ({st.name})"
    lr_at = stage_lr(c.train, c.method, stream.optimizer_steps)
    with counter(runner.progress, stream.micro_steps, label, st.start_micro) as bar:
        micro = st.start_micro
        for chunk in stream.chunks(st.start_micro):
            t_step = time.perf_counter()
            st.trainable, st.opt_state, loss, pen, gnorm = st.step_fn(
                st.trainable, st.frozen, st.opt_state, runner._device_batch(chunk))
            loss = float(loss)
            runner.trackers.step(step0 + micro + 1, loss=loss, grad_norm=float(gnorm),
                                 lr=lr_at(micro // c.train.grad_accum),
                                 seconds=time.perf_counter() - t_step, stage=stage)
            check_finite(runner, st, metrics, micro, loss, float(pen))
            st.losses.append(loss)
            micro += 1
            bar.update(1, loss=loss)
            if (st.stop is not None and micro % c.train.grad_accum == 0
                    and st.stop.due(micro // c.train.grad_accum)):
                score = dev_accuracy(runner.adapter, runner.method, st.trainable, st.frozen, st.tasks,
                                     runner.stop_sets)
                if st.stop.update(micro // c.train.grad_accum, score, st.trainable):
                    break
            if every and micro % every == 0 and micro < stream.micro_steps:
                save_step(runner, st, micro)
            leak_fn = getattr(runner.method, "leakage", None)
            if (leak_fn is not None and c.train.leakage_every
                    and (micro // c.train.grad_accum) % c.train.leakage_every == 0
                    and micro % c.train.grad_accum == 0):
                leakage_log.append({"optimizer_step": micro // c.train.grad_accum,
                                    **leak_fn(st.trainable, st.ctx, st.opt_state)})
    train_seconds = time.perf_counter() - t
    runner._timed("train", train_seconds)
    return train_seconds, leakage_log


def check_finite(runner, st, metrics: dict, micro: int, loss: float, penalty: float) -> None:
    """RunError (and metrics marked failed) at a non-finite loss or penalty."""
    from asvd_jax.cl._errors import RunError

    if math.isfinite(loss) and math.isfinite(penalty):
        return
    latest = runner.ckpt.latest()
    metrics["status"] = "failed"
    metrics["status_detail"] = f"non-finite loss at stage {st.index} micro-batch {micro}"
    raise RunError(
        f"stage {st.index} ({st.name}), micro-batch {micro}: loss is {loss} (penalty "
        f"{penalty}); the run stopped. Last good checkpoint: "
        f"{latest['name'] if latest else 'none (nothing finished yet)'} in "
        f"{runner.ckpt.root}. Lower train.lr or enable train.max_grad_norm."
    )


def save_step(runner, st, micro: int) -> None:
    """A mid-task checkpoint after ``micro`` micro-batches (what ``_stage.restore_step`` reads)."""
    c = runner.config
    groups = {"trainable": st.trainable, "frozen": st.frozen, "opt_state": st.opt_state}
    meta = {"kind": "step", "stage": st.index, "micro_step": micro, "losses": st.losses}
    if st.stop is not None:
        meta["early_stop"] = st.stop.state()
        if st.stop.best_trainable is not None:
            groups["best"] = st.stop.best_trainable
    runner.ckpt.save(f"step-{st.index:04d}-{micro:06d}", groups, meta)
    runner.ckpt.prune("step-", keep=max(c.checkpoint.keep_steps, 1))
