"""The generic jitted train step, the inner optimizer, and optimizer-state carry-over.

The step is the same for every method::

    loss = adapter.loss(method.effective_params(trainable, frozen), batch)
           + method.penalty(trainable, frozen)
    grads = d loss / d trainable
    updates, opt_state = opt.update(grads, opt_state, trainable)

With ``grad_accum > 1`` the method's whole chain is wrapped in ``asvd_jax.accumulate_gradients``:
gradients are averaged over micro-batches and the chain (projection included) runs once per
optimizer step, inside a ``lax.cond``, so the projection cost is paid per step, not per
micro-batch (``optax.MultiSteps`` would evaluate the chain at every micro-step).
"""

from __future__ import annotations

import re
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import optax

from asvd_jax._accumulate import accumulate_gradients
from asvd_jax._paths import flatten_with_paths, path_str
from asvd_jax.cl._config import TrainConfig


def learning_rate(train: TrainConfig, total_steps: int) -> optax.Schedule | float:
    """Constant, or warmup then linear / cosine decay to 0 over ``total_steps``."""
    if train.schedule == "constant":
        if train.warmup_steps:
            return optax.linear_schedule(0.0, train.lr, train.warmup_steps)
        return train.lr
    total = max(total_steps, train.warmup_steps + 1)
    if train.schedule == "linear":
        return optax.join_schedules(
            [optax.linear_schedule(0.0, train.lr, max(train.warmup_steps, 1)),
             optax.linear_schedule(train.lr, 0.0, total - train.warmup_steps)],
            [max(train.warmup_steps, 1)])
    cosine = optax.warmup_cosine_decay_schedule(0.0, train.lr, max(train.warmup_steps, 1), total)
    # optax's cosine decay takes min(count, float decay_steps), which strict dtype promotion
    # refuses for the int32 step count; a float32 count gives the same values either way.
    return lambda count: cosine(jnp.asarray(count, jnp.float32))


def trains(patterns: Sequence[str]) -> Callable[[Any], Any]:
    """``mask(tree)``: a tree of bools, False at the leaves whose path matches a ``train.freeze``
    pattern (``re.search``): what ``optax.masked`` takes and the train step stops gradients at."""
    compiled = [re.compile(p) for p in patterns]

    def mask(tree):
        return jax.tree_util.tree_map_with_path(
            lambda kp, _: not any(c.search(path_str(kp)) for c in compiled), tree)

    return mask


def check_freeze(patterns: Sequence[str], params: Any) -> None:
    """ConfigError naming each ``train.freeze`` pattern that matches no parameter path."""
    from asvd_jax.cl._config import ConfigError

    paths = [p for p, _ in flatten_with_paths(params)[0]]
    unmatched = [p for p in patterns if not any(re.search(p, path) for path in paths)]
    if unmatched:
        raise ConfigError(f"train.freeze: {unmatched} match no parameter path (e.g. {paths[0]!r})")


def inner_optimizer(train: TrainConfig, total_steps: int | None = None) -> optax.GradientTransformation:
    """(clip) + AdamW with the configured schedule: what every full fine-tuning method wraps.

    ``total_steps=None``: the one chain of a whole run, whose schedule length is set per task
    in the state (``_task_state.set_task_length``); a constant rate needs no length.
    """
    if total_steps is None:
        if train.schedule == "constant":  # the rate does not depend on the task's length
            return inner_optimizer(train, 0)
        from asvd_jax.cl._task_state import per_task_length

        return per_task_length(lambda n: inner_optimizer(train, n))
    parts = []
    if train.max_grad_norm > 0:
        parts.append(optax.clip_by_global_norm(train.max_grad_norm))
    parts.append(optax.adamw(learning_rate(train, total_steps), weight_decay=train.weight_decay))
    chain = optax.chain(*parts)
    # Frozen leaves get no AdamW moments (Gemma's embedding: 1.3 GB of them); their updates
    # pass through as the zeros the train step's stopped gradient makes them.
    return optax.masked(chain, trains(train.freeze)) if train.freeze else chain


def with_accumulation(opt: optax.GradientTransformation, grad_accum: int) -> optax.GradientTransformation:
    if grad_accum <= 1:
        return opt
    return accumulate_gradients(opt, grad_accum)


def make_train_step(adapter: Any, method: Any, opt: optax.GradientTransformation, freeze: Sequence[str] = ()):
    """Jitted ``(trainable, frozen, opt_state, batch) -> (trainable, opt_state, loss, penalty,
    grad_norm)``; ``grad_norm`` is the global norm of this micro-batch's raw gradient.
    Parameters matching a ``freeze`` pattern get a zero gradient (``train.freeze``)."""
    mask = trains(freeze)

    def step(trainable, frozen, opt_state, batch):
        def total(t):
            if freeze:  # XLA then drops their backward pass (Gemma: the embedding's scatter)
                t = jax.tree.map(lambda x, m: x if m else jax.lax.stop_gradient(x), t, mask(t))
            task_loss = adapter.loss(method.effective_params(t, frozen), batch)
            pen = jnp.asarray(method.penalty(t, frozen), jnp.float32)
            return task_loss + pen, (task_loss, pen)

        (_, (task_loss, pen)), grads = jax.value_and_grad(total, has_aux=True)(trainable)
        updates, opt_state = opt.update(grads, opt_state, trainable)
        trainable = optax.apply_updates(trainable, updates)
        return trainable, opt_state, task_loss, pen, optax.tree.norm(grads)

    return jax.jit(step, donate_argnums=(0, 2))


def adam_states(opt_state: Any) -> list[optax.ScaleByAdamState]:
    """Every AdamW moment state inside a (nested) optax state, in traversal order."""
    found = []
    jax.tree.map(lambda n: found.append(n) if isinstance(n, optax.ScaleByAdamState) else None,
                 opt_state, is_leaf=lambda n: isinstance(n, optax.ScaleByAdamState))
    return found


def transplant_adam(new_state: Any, moments: list[optax.ScaleByAdamState]) -> Any:
    """``new_state`` with its AdamW moments replaced by ``moments`` (carried from the last task).

    Used when ``train.fresh_optimizer`` is off: the run's chain is re-initialised at each
    task (its bases, of new ranks, swapped in) but its AdamW moments have the shapes of the
    params, so they carry over; a research method's chain may differ in structure elsewhere.
    """
    it = iter(moments)

    def swap(node):
        if not isinstance(node, optax.ScaleByAdamState):
            return node
        old = next(it, None)
        if old is None or jax.tree.structure(old) != jax.tree.structure(node):
            raise ValueError("cannot carry AdamW moments across tasks: the optimizer structure "
                             "changed (set train.fresh_optimizer=true)")
        return old

    return jax.tree.map(swap, new_state, is_leaf=lambda n: isinstance(n, optax.ScaleByAdamState))


def stage_lr(train: Any, method: Any, total_steps: int) -> Callable[[int], float]:
    """``lr_at(step)``: the learning rate of optimizer step ``step`` of a stage of
    ``total_steps`` steps (the train schedule, or LoRA's constant rate), built once per stage so
    the logging in the training loop does not rebuild the schedule at every micro-batch."""
    if method.name in ("lora", "olora"):
        return lambda step: float(method.lora_lr)
    lr = learning_rate(train, total_steps)
    return (lambda step: float(lr(step))) if callable(lr) else (lambda step: float(lr))
