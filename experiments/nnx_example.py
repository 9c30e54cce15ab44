"""The transform in a Flax NNX training loop: python experiments/nnx_example.py

Three regression tasks on one small NNX MLP, trained with ``nnx.Optimizer`` and
``asvd_jax.with_projection``. Task 1 trains freely; at each task boundary the top singular
directions of every kernel are protected (bases from the current weights) and swapped into
the same optimizer with ``asvd_jax.ranks.set_optimizer_bases``, so the jitted step is reused.
No ``nnx.as_pure`` is needed: the transform unwraps ``nnx.State`` / ``nnx.Param`` bases.
Prints, per task, the protected share of the weight change (float32 rounding, ~1e-6) and the
first task's loss. Run by ``tests/test_research_api.py``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax
from flax import nnx

import asvd_jax as aj
from asvd_jax.ranks import set_optimizer_bases


class MLP(nnx.Module):
    def __init__(self, rngs: nnx.Rngs):
        self.up = nnx.Linear(32, 128, rngs=rngs)
        self.down = nnx.Linear(128, 32, rngs=rngs)

    def __call__(self, x):
        return self.down(jax.nn.gelu(self.up(x)))


TASKS = (jnp.sin, jnp.cos, jnp.tanh)  # task t: learn x -> f(x) on random inputs


def loss_fn(model, x, y):
    return jnp.mean((model(x) - y) ** 2)


@nnx.jit
def train_step(model, optimizer, x, y):
    loss, grads = nnx.value_and_grad(loss_fn)(model, x, y)
    optimizer.update(model, grads)
    return loss


def batch(task: int, step: int):
    x = jax.random.normal(jax.random.key(1000 * task + step), (64, 32))
    return x, TASKS[task](x)


def main(steps: int = 150, protected_fraction: float = 0.5) -> dict:
    model = MLP(nnx.Rngs(0))
    targets = aj.select_targets(nnx.state(model, nnx.Param))  # up/kernel, down/kernel
    # bases=None: nothing protected during task 1; the optimizer is built once.
    optimizer = nnx.Optimizer(model, aj.with_projection(optax.adamw(3e-3, weight_decay=0.01)),
                              wrt=nnx.Param)
    x1, y1 = batch(0, 10_000)  # held-out batch of task 1
    report = {"leakage": [], "task1_loss": []}
    for task in range(len(TASKS)):
        if task > 0:
            # Task boundary (host side): protect the top directions of the current weights.
            params = nnx.state(model, nnx.Param)
            ranks = {"up/kernel": int(protected_fraction * min(model.up.kernel.shape)),
                     "down/kernel": int(protected_fraction * min(model.down.kernel.shape))}
            bases = aj.compute_bases(params, ranks, targets)
            set_optimizer_bases(optimizer, bases)
        start = jax.tree.map(jnp.copy, nnx.to_pure_dict(nnx.state(model, nnx.Param)))
        for step in range(steps):
            train_step(model, optimizer, *batch(task, step))
        delta = jax.tree.map(lambda a, b: a - b, nnx.to_pure_dict(nnx.state(model, nnx.Param)), start)
        leak = aj.protected_leakage(delta, bases) if task > 0 else {}
        report["leakage"].append({k: float(v) for k, v in leak.items()})
        report["task1_loss"].append(float(loss_fn(model, x1, y1)))
        print(f"after task {task + 1}: task-1 loss {report['task1_loss'][-1]:.4f}; "
              f"protected share of this task's change {max(leak.values(), default=0.0):.1e}")
    return report


if __name__ == "__main__":
    main()
