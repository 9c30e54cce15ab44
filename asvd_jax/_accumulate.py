"""Gradient accumulation that runs the inner chain (and so the projection) once per real step."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax


class AccumulateGradientsState(NamedTuple):
    mini_step: jax.Array  # int32 scalar in [0, every_k)
    accumulated: Any  # running sum of the micro-batch gradients, float32
    inner_state: Any


def accumulate_gradients(inner: optax.GradientTransformation, every_k: int) -> optax.GradientTransformation:
    r"""Average ``every_k`` micro-batch gradients, then apply ``inner`` once.

    With :math:`g_1, \dots, g_k` the micro-batch gradients, the k-th call returns
    ``inner.update(mean(g), ...)`` and the other calls return zeros; ``inner``'s state only
    advances on the k-th call. This is what ``optax.MultiSteps`` computes, but optax evaluates
    the inner chain at *every* micro-step and discards the result (it selects with
    ``jnp.where``), so a projection placed in the chain would be paid ``k`` times. Here the
    inner update sits in a ``lax.cond`` on the step counter: on CPU and GPU only the taken
    branch runs, so the projection costs once per optimizer step and its relative cost falls
    as ``1/k`` with the tokens per step.

    The branch depends on a counter in the state, never on data, and both branches have the
    same output structure, so a jitted step compiles once.

    Args:
      inner: the whole optimizer chain, projection last (e.g. ``with_projection(adamw, ...)``).
      every_k: micro-batches per optimizer step (1 returns ``inner`` unchanged).

    Returns:
      An ``optax.GradientTransformation`` with state ``AccumulateGradientsState``.
    """
    if not isinstance(every_k, int) or isinstance(every_k, bool) or every_k < 1:
        raise ValueError(f"every_k must be a positive int, got {every_k!r}")
    if every_k == 1:
        return inner

    def init_fn(params):
        accumulated = jax.tree.map(lambda p: jnp.zeros(p.shape, jnp.float32), params)
        return AccumulateGradientsState(jnp.zeros((), jnp.int32), accumulated, inner.init(params))

    def update_fn(updates, state, params=None):
        accumulated = jax.tree.map(lambda a, g: a + g.astype(jnp.float32), state.accumulated, updates)
        emit = state.mini_step == every_k - 1

        def apply_inner(operands):
            accumulated, inner_state = operands
            mean = jax.tree.map(
                lambda a, g: (a / every_k).astype(g.dtype), accumulated, updates
            )
            new_updates, new_inner = inner.update(mean, inner_state, params)
            return new_updates, new_inner, jax.tree.map(jnp.zeros_like, accumulated)

        def keep_accumulating(operands):
            accumulated, inner_state = operands
            shapes = jax.eval_shape(lambda: apply_inner(operands)[0])
            zeros = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)
            return zeros, inner_state, accumulated

        new_updates, inner_state, accumulated = jax.lax.cond(
            emit, apply_inner, keep_accumulating, (accumulated, state.inner_state)
        )
        mini_step = jnp.where(emit, 0, state.mini_step + 1).astype(jnp.int32)
        return new_updates, AccumulateGradientsState(mini_step, accumulated, inner_state)

    return optax.GradientTransformation(init_fn, update_fn)
