"""A tiny continual-learning harness for the baselines: a two-layer model as a pure dict or an
nnx.State, a regression loss, and a generic train step written exactly as the Method protocol
states it."""

import types

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

import asvd_jax as aj
from asvd_jax.cl import TaskContext
from asvd_jax.models._layers import Linear

D_IN, D_HID, D_OUT = 5, 6, 3


class TinyMLP(nnx.Module):
    def __init__(self, rngs: nnx.Rngs):
        self.l1 = Linear(D_IN, D_HID, use_bias=True, rngs=rngs)
        self.l2 = Linear(D_HID, D_OUT, rngs=rngs)

    def __call__(self, x):
        return self.l2(jnp.tanh(self.l1(x)))


def tiny_params(seed: int, kind: str):
    """(params, apply) with params a pure dict or an nnx.State of the same two-layer MLP."""
    model = TinyMLP(nnx.Rngs(seed))
    graphdef, state = nnx.split(model, nnx.Param)
    # Non-zero biases so that a bug mixing up leaves shows up.
    state["l1"]["bias"][...] = 0.1 * jax.random.normal(jax.random.key(seed + 100), (D_HID,))
    if kind == "nnx":
        return state, lambda p, x: nnx.merge(graphdef, p)(x)
    params = {"l1": {"kernel": state["l1"]["kernel"][...], "bias": state["l1"]["bias"][...]},
              "l2": {"kernel": state["l2"]["kernel"][...]}}

    def apply(p, x):
        return jnp.tanh(x @ p["l1"]["kernel"] + p["l1"]["bias"]) @ p["l2"]["kernel"]

    return params, apply


def regression_adapter(apply):
    """An adapter whose loss is the mean squared error of ``apply`` on {"x", "y"} batches."""

    def loss(params, batch):
        return jnp.mean(jnp.square(apply(params, batch["x"]) - batch["y"]))

    return types.SimpleNamespace(loss=loss)


def task_batches(seed: int, n_batches: int = 4, batch: int = 8):
    """A regression task: targets of a random teacher, as a list of {"x", "y"} batches."""
    rng = np.random.default_rng(seed)
    teacher = rng.normal(size=(D_IN, D_OUT))
    out = []
    for _ in range(n_batches):
        x = rng.normal(size=(batch, D_IN)).astype(np.float32)
        out.append({"x": x, "y": np.tanh(x @ teacher).astype(np.float32)})
    return out


def make_ctx(index, params, adapter, batches, prev_batches=None, num_tasks=2, seed=0, targets=None):
    return TaskContext(
        index=index,
        num_tasks=num_tasks,
        params=params,
        targets=aj.select_targets(params) if targets is None else targets,
        adapter=adapter,
        previous_batches=None if prev_batches is None else (lambda: iter(prev_batches)),
        current_batches=lambda: iter(batches),
        rng=jax.random.key(1000 + seed + index),
    )


def run_task(method, ctx, epochs: int = 5, on_step=None):
    """The generic runner loop of the Method protocol; returns (params, record, losses)."""
    trainable, frozen = method.start_task(ctx)
    opt = method.optimizer(ctx)
    opt_state = opt.init(trainable)

    def total_loss(tr, fr, batch):
        return ctx.adapter.loss(method.effective_params(tr, fr), batch) + method.penalty(tr, fr)

    @jax.jit
    def step(tr, fr, state, batch):
        loss, grads = jax.value_and_grad(total_loss)(tr, fr, batch)
        updates, state = opt.update(grads, state, tr)
        return optax.apply_updates(tr, updates), state, loss

    losses = []
    for _ in range(epochs):
        for batch in ctx.current_batches():
            trainable, opt_state, loss = step(trainable, frozen, opt_state, batch)
            losses.append(float(loss))
            if on_step is not None:
                on_step(trainable, frozen)
    params, record = method.finish_task(trainable, frozen, ctx)
    return params, record, losses


def leaves_by_path(tree):
    return dict(aj.flatten_with_paths(tree)[0])
