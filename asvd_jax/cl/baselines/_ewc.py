"""Elastic weight consolidation (Kirkpatrick et al. 2017), online form (Schwarz et al. 2018).

After task t the diagonal empirical Fisher of that task's loss is estimated at the task's
final params theta*_t from N samples (batches or single examples) of its training data,

    F_t = (1/N) sum_n (d loss_n / d theta)^2,

and folded into a running Fisher with the anchor moved to the newest params:

    F <- gamma F + F_t,        theta* <- theta*_t.

Every later task trains all params on its own loss plus

    penalty(theta) = lambda/2 * sum_i F_i (theta_i - theta*_i)^2

over the penalised leaves. gamma = 1 sums the Fishers of all past tasks around the latest
anchor (Huszar's correction of multi-anchor EWC); gamma < 1 lets old tasks fade (online EWC).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Iterable, Literal

import jax
import jax.numpy as jnp
import numpy as np
import optax

from asvd_jax._paths import flatten_with_paths
from asvd_jax.cl.baselines._common import (
    adamw,
    check_positive,
    floating_leaves,
    included_targets,
    lookup,
    nest,
    to_float,
)


OptimizerFactory = Callable[[Any], optax.GradientTransformation]


@dataclasses.dataclass(frozen=True)
class EWCConfig:
    """Settings of the EWC baseline."""

    ewc_lambda: float = 1000.0
    """lambda of the quadratic penalty. Its useful range depends on the Fisher's scale: a
    batch-mode Fisher is roughly batch-size times smaller than an example-mode one."""
    gamma: float = 1.0
    """Decay of the running Fisher per task (1 = plain sum over past tasks)."""
    fisher_mode: Literal["batch", "example"] = "example"
    """Square the gradient of each example's loss ("example", the textbook empirical Fisher;
    needs every batch leaf to share a leading batch axis) or of each batch's mean loss
    ("batch"). Both cost the same flops (one backward pass per token); "example" runs them
    one row at a time. Near a converged optimum the batch-mean gradient is mostly noise, so
    the "batch" estimate shrinks towards zero there."""
    fisher_batches: int | None = 16
    """How many of the finished task's batches the Fisher sees (None: all of them)."""
    fisher_chunk: int = 1
    """"example" mode: examples whose gradients are taken at once (``jax.vmap``; a batch whose
    size it does not divide uses its largest divisor). Gradient memory grows with it: each
    example in a chunk holds a full gradient (SmolLM2-135M: 0.54 GB per example). 1 on CPU:
    chunks of 2, 4 and 8 were 1.7-1.9x slower there (SmolLM2; benchmarks/ewc_fisher.py);
    larger chunks may pay on an accelerator (not measured)."""
    scope: Literal["all", "targets"] = "all"
    """Penalise every floating param ("all") or only the target matrices ("targets")."""
    learning_rate: float = 1e-5
    """AdamW learning rate (full fine-tuning range of the published runs)."""
    weight_decay: float = 0.0
    """AdamW decoupled weight decay."""

    def __post_init__(self):
        check_positive("EWCConfig.ewc_lambda", self.ewc_lambda, allow_zero=True)
        check_positive("EWCConfig.gamma", self.gamma, allow_zero=True)
        if self.gamma > 1:
            raise ValueError(f"EWCConfig.gamma must be in [0, 1], got {self.gamma}")
        if self.fisher_mode not in ("batch", "example"):
            raise ValueError(f"EWCConfig.fisher_mode must be 'batch' or 'example', got {self.fisher_mode!r}")
        if self.fisher_batches is not None and (
            not isinstance(self.fisher_batches, int) or self.fisher_batches < 1
        ):
            raise ValueError(f"EWCConfig.fisher_batches must be a positive int or None, got {self.fisher_batches!r}")
        if isinstance(self.fisher_chunk, bool) or not isinstance(self.fisher_chunk, int) or self.fisher_chunk < 1:
            raise ValueError(f"EWCConfig.fisher_chunk must be a positive int, got {self.fisher_chunk!r}")
        if self.scope not in ("all", "targets"):
            raise ValueError(f"EWCConfig.scope must be 'all' or 'targets', got {self.scope!r}")
        check_positive("EWCConfig.learning_rate", self.learning_rate)
        check_positive("EWCConfig.weight_decay", self.weight_decay, allow_zero=True)


def ewc_penalty(params: Any, fisher: dict, anchor: dict, strength: float) -> jax.Array:
    """lambda/2 * sum_i F_i (theta_i - theta*_i)^2, in float32, over the leaves of ``params``
    that have an entry in the path-nested ``fisher`` (and ``anchor``)."""
    total = jnp.zeros((), jnp.float32)
    for path, leaf in flatten_with_paths(params)[0]:
        f = lookup(fisher, path)
        if f is None:
            continue
        diff = leaf.astype(jnp.float32) - lookup(anchor, path).astype(jnp.float32)
        total = total + jnp.sum(f * jnp.square(diff))
    return 0.5 * strength * total


def _check_batch_axis(batch: dict) -> None:
    sizes = {}
    for path, leaf in flatten_with_paths(batch)[0]:
        shape = np.shape(leaf)
        if not shape:
            raise ValueError(f"fisher_mode='example': batch entry {path!r} has no batch axis")
        sizes[path] = shape[0]
    if len(set(sizes.values())) != 1:
        raise ValueError(f"fisher_mode='example': batch entries disagree on the batch size: {sizes}")


FISHER_CHUNK = 1
"""Default examples per ``jax.vmap`` of the example-mode Fisher (``EWCConfig.fisher_chunk``)."""


def fisher_step(loss_fn: Callable[[Any, dict], jax.Array], paths: Iterable[str],
                mode: Literal["batch", "example"] = "batch", chunk: int = FISHER_CHUNK):
    """The jitted ``(params, batch) -> ({path: sum_n g_n^2}, n)`` of :func:`diagonal_fisher`.

    Build it once and pass it as ``diagonal_fisher(..., step=)`` for every task: a jitted
    function compiles once per batch shape and reuses the program afterwards (EWC keeps one
    per run; the former code built a new jit per task, traced again and compiled or loaded
    from the persistent cache each time). In "example" mode the batch is cut into chunks of ``chunk`` examples (its largest
    divisor <= ``chunk``); each chunk's per-example gradients come from one
    ``jax.vmap(jax.grad(loss))`` over batches of one, squared and summed, and a ``lax.scan``
    runs over the chunks, so ``chunk`` gradients are alive at a time. A row whose gradient is
    exactly zero (a padding row that carries no loss) is not counted in n.
    """
    paths = tuple(paths)
    if isinstance(chunk, bool) or not isinstance(chunk, int) or chunk < 1:
        raise ValueError(f"fisher_step: chunk must be a positive int, got {chunk!r}")

    def squared_grads(p, batch):
        grads = dict(flatten_with_paths(jax.grad(loss_fn)(p, batch))[0])
        missing = [k for k in paths if k not in grads]
        if missing:
            raise ValueError(f"diagonal_fisher: paths {missing} are not params of the model")
        return {k: jnp.square(grads[k].astype(jnp.float32)) for k in paths}

    if mode == "batch":
        def step(p, batch):
            return squared_grads(p, batch), jnp.ones((), jnp.int32)
    elif mode == "example":
        def one_example(p, example):
            sq = squared_grads(p, jax.tree.map(lambda x: x[None], example))
            return sq, jnp.any(jnp.stack([jnp.any(v > 0) for v in sq.values()]))

        def step(p, batch):
            size = jax.tree.leaves(batch)[0].shape[0]
            c = max(d for d in range(1, min(chunk, size) + 1) if size % d == 0)
            chunks = jax.tree.map(lambda x: x.reshape(size // c, c, *x.shape[1:]), batch)

            def body(carry, examples):
                acc, count = carry
                sq, real = jax.vmap(one_example, in_axes=(None, 0))(p, examples)
                return ({k: acc[k] + sq[k].sum(axis=0) for k in paths},
                        count + real.sum(dtype=jnp.int32)), None

            leaves = floating_leaves(p)
            zeros = {k: jnp.zeros(leaves[k].shape, jnp.float32) for k in paths}
            return jax.lax.scan(body, (zeros, jnp.zeros((), jnp.int32)), chunks)[0]
    else:
        raise ValueError(f"diagonal_fisher: mode must be 'batch' or 'example', got {mode!r}")
    return jax.jit(step)


def diagonal_fisher(
    loss_fn: Callable[[Any, dict], jax.Array],
    params: Any,
    batches: Iterable[dict],
    paths: Iterable[str],
    mode: Literal["batch", "example"] = "batch",
    max_batches: int | None = None,
    *,
    chunk: int = FISHER_CHUNK,
    step: Callable | None = None,
) -> tuple[dict[str, jax.Array], int]:
    """Diagonal empirical Fisher ``{path: (1/N) sum_n g_n^2}`` (float32) and N.

    ``g_n`` is the gradient of ``loss_fn(params, batch)`` for batch n ("batch") or of the
    loss of example n alone, fed as a batch of one ("example"). In "example" mode a row whose
    gradient is exactly zero (a padding row that carries no loss) is not counted in N.
    ``step``: a :func:`fisher_step` of the same ``loss_fn``, ``paths`` and ``mode`` built
    earlier (its compiled programs are reused); by default one is built for this call, with
    ``chunk`` examples per ``vmap``.
    """
    paths = tuple(paths)
    if step is None:
        step = fisher_step(loss_fn, paths, mode, chunk)
    total, count = None, 0
    for i, batch in enumerate(batches):
        if max_batches is not None and i >= max_batches:
            break
        if mode == "example":
            _check_batch_axis(batch)
        sq, n = step(params, batch)
        count += int(n)
        total = sq if total is None else {k: total[k] + sq[k] for k in paths}
    if total is None:
        raise ValueError("diagonal_fisher: the task yielded no batches")
    if count == 0:
        raise ValueError("diagonal_fisher: every example has a zero gradient (all padding?)")
    fisher = {k: v / count for k, v in total.items()}
    for k, v in fisher.items():
        if not bool(jnp.all(jnp.isfinite(v))):
            raise ValueError(f"diagonal_fisher: the Fisher at {k!r} is not finite (loss NaN on some batch?)")
    return fisher, count


class EWC:
    """EWC as a :class:`~asvd_jax.cl.Method`: trains all params, adds the quadratic penalty.

    Host state between tasks: the running Fisher and the anchor (``carry_state``).
    """

    name = "ewc"

    def __init__(self, config: EWCConfig = EWCConfig(), optimizer: OptimizerFactory | None = None):
        if not isinstance(config, EWCConfig):
            raise TypeError(f"ewc(config): expected EWCConfig, got {type(config).__name__}")
        if optimizer is not None and not callable(optimizer):
            raise TypeError(f"ewc(optimizer=...): expected a callable ctx -> optax chain, got {optimizer!r}")
        self.config = config
        self._optimizer_factory = optimizer
        self._fisher: dict[str, jax.Array] = {}
        self._anchor: dict[str, jax.Array] = {}
        self._step_key, self._step = None, None  # the run's jitted Fisher step (fisher_step)

    def _fisher_step(self, loss_fn, paths: list[str]):
        """One jitted Fisher step per run, rebuilt only for another loss or other paths, so a
        batch shape seen at an earlier task reuses its compiled program."""
        key = (loss_fn, tuple(paths))
        if self._step is None or self._step_key != key:
            cfg = self.config
            self._step_key = key
            self._step = fisher_step(loss_fn, paths, cfg.fisher_mode, cfg.fisher_chunk)
        return self._step

    def _penalised_paths(self, ctx) -> list[str]:
        leaves = floating_leaves(ctx.params)
        if self.config.scope == "all":
            return list(leaves)
        specs = included_targets(ctx.targets)
        missing = [p for p in specs if p not in leaves]
        if missing:
            raise ValueError(f"EWC scope='targets': target paths not among the float params: {missing}")
        return list(specs)

    def start_task(self, ctx) -> tuple[Any, dict]:
        if not self._fisher:
            return ctx.params, {}
        leaves = floating_leaves(ctx.params)
        for path, f in self._fisher.items():
            if path not in leaves or leaves[path].shape != f.shape:
                got = None if path not in leaves else leaves[path].shape
                raise ValueError(f"EWC: stored Fisher for {path!r} has shape {f.shape}, params have {got}")
        return ctx.params, {"fisher": nest(self._fisher), "anchor": nest(self._anchor)}

    def effective_params(self, trainable: Any, frozen: dict) -> Any:
        return trainable

    def penalty(self, trainable: Any, frozen: dict) -> jax.Array:
        if not frozen:
            return jnp.zeros((), jnp.float32)
        return ewc_penalty(trainable, frozen["fisher"], frozen["anchor"], self.config.ewc_lambda)

    def optimizer(self, ctx) -> optax.GradientTransformation:
        if self._optimizer_factory is not None:
            return self._optimizer_factory(ctx)
        return adamw(self.config.learning_rate, self.config.weight_decay)

    def finish_task(self, trainable: Any, frozen: dict, ctx) -> tuple[Any, dict]:
        cfg = self.config
        paths = self._penalised_paths(ctx)
        if ctx.index >= ctx.num_tasks - 1:
            # The sequence's last task: no later task reads a Fisher or an anchor, so none is
            # computed; the carry state keeps the earlier tasks' (a resumed run needs no more).
            return trainable, {"method": self.name, "task": int(ctx.index),
                               "ewc_lambda": float(cfg.ewc_lambda), "gamma": float(cfg.gamma),
                               "fisher_mode": cfg.fisher_mode, "fisher_samples": 0,
                               "fisher_skipped": "last task of the sequence"}
        fisher_t, count = diagonal_fisher(
            ctx.adapter.loss, trainable, ctx.current_batches(), paths, cfg.fisher_mode, cfg.fisher_batches,
            step=self._fisher_step(ctx.adapter.loss, paths),
        )
        if self._fisher:
            self._fisher = {p: cfg.gamma * self._fisher[p] + fisher_t[p] for p in paths}
        else:
            self._fisher = fisher_t
        leaves = floating_leaves(trainable)
        # A copy: the runner may donate the params buffers to the next task's train step.
        self._anchor = {p: jnp.array(leaves[p], copy=True) for p in paths}
        total_size = sum(int(v.size) for v in self._fisher.values())
        record = {
            "method": self.name,
            "task": int(ctx.index),
            "ewc_lambda": float(cfg.ewc_lambda),
            "gamma": float(cfg.gamma),
            "fisher_mode": cfg.fisher_mode,
            "fisher_samples": int(count),
            "penalised_leaves": len(paths),
            "penalised_params": total_size,
            "fisher_task": {
                p: {"mean": to_float(jnp.mean(v)), "max": to_float(jnp.max(v))} for p, v in fisher_t.items()
            },
            "fisher_total": {
                "mean": sum(to_float(jnp.sum(v)) for v in self._fisher.values()) / max(total_size, 1),
                "max": max(to_float(jnp.max(v)) for v in self._fisher.values()),
            },
        }
        return trainable, record

    def carry_state(self) -> dict | None:
        """Arrays a resumed run needs: ``{"fisher", "anchor"}`` nested by path (None before task 1 ends)."""
        if not self._fisher:
            return None
        return {"fisher": nest(self._fisher), "anchor": nest(self._anchor)}

    def restore_carry_state(self, tree: dict | None) -> None:
        """Inverse of :meth:`carry_state`."""
        if tree is None:
            self._fisher, self._anchor = {}, {}
            return
        if not isinstance(tree, dict) or set(tree) != {"fisher", "anchor"}:
            raise ValueError(f"EWC carry state must be a dict with keys 'fisher' and 'anchor', got {tree!r:.200}")
        fisher = {p: jnp.asarray(v) for p, v in flatten_with_paths(tree["fisher"])[0]}
        anchor = {p: jnp.asarray(v) for p, v in flatten_with_paths(tree["anchor"])[0]}
        if set(fisher) != set(anchor):
            raise ValueError("EWC carry state: 'fisher' and 'anchor' name different params")
        self._fisher, self._anchor = fisher, anchor


def ewc(config: EWCConfig = EWCConfig(), optimizer: OptimizerFactory | None = None) -> EWC:
    """The EWC baseline for the continual-learning runner.

    ``optimizer``: a ``ctx -> optax.GradientTransformation`` factory used instead of the
    config's AdamW, e.g. the runner's full fine-tuning chain (schedule, clipping), so that EWC
    differs from sequential fine-tuning by the penalty alone.
    """
    return EWC(config, optimizer)
