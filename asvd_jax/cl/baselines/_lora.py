"""Sequential LoRA: a fresh low-rank adapter per task, merged into the weights at its end.

For a target matrix W of shape (d_in, d_out) (the Flax layout; axes grouped by its
MatrixSpec, any other axis is a batch axis of stacked layers)

    W_eff = W + (alpha / r) * A @ B,     A: (d_in, r) ~ N(0, sigma^2),  B: (r, d_out) = 0,

so training starts at W_eff = W. Only A and B are trained (every other param is frozen);
at the end of the task W <- W_eff and the next task starts a new pair. A acts on the input
side (the analogue of ``lora_A`` in PyTorch-layout code) and B on the output side.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import jax
import jax.numpy as jnp
import optax

from asvd_jax._paths import flatten_with_paths
from asvd_jax._targets import MatrixSpec
from asvd_jax.cl.baselines._common import (
    adamw,
    check_positive,
    included_targets,
    lookup,
    nest,
    to_float,
)


@dataclasses.dataclass(frozen=True)
class LoRAConfig:
    """Settings of one LoRA adapter per task (defaults: the O-LoRA reference runs)."""

    rank: int = 8
    """r, the number of columns of A (rows of B)."""
    alpha: float = 32.0
    """The delta is scaled by alpha / r."""
    include: tuple[str, ...] = ()
    """Regular expressions (``re.search`` on parameter paths) narrowing the run's targets;
    empty: every target matrix gets an adapter."""
    init_std: float | None = None
    """Standard deviation of A's Gaussian init; None: 1/sqrt(d_in)."""
    factor_dtype: str = "float32"
    """dtype of A and B (the merge into the weight runs in the wider of this and W's dtype)."""
    learning_rate: float = 1e-3
    """AdamW learning rate (the O-LoRA reference runs use 1e-3, constant)."""
    weight_decay: float = 0.0
    """AdamW decoupled weight decay on the factors."""

    def __post_init__(self):
        if isinstance(self.rank, bool) or not isinstance(self.rank, int) or self.rank < 1:
            raise ValueError(f"LoRAConfig.rank must be a positive int, got {self.rank!r}")
        check_positive("LoRAConfig.alpha", self.alpha)
        if isinstance(self.include, str) or not all(isinstance(p, str) for p in self.include):
            raise TypeError(f"LoRAConfig.include must be a tuple of regex strings, got {self.include!r}")
        if self.init_std is not None:
            check_positive("LoRAConfig.init_std", self.init_std)
        try:
            dtype = jnp.dtype(self.factor_dtype)
        except TypeError as e:
            raise ValueError(f"LoRAConfig.factor_dtype: unknown dtype {self.factor_dtype!r}") from e
        if not jnp.issubdtype(dtype, jnp.floating):
            raise ValueError(f"LoRAConfig.factor_dtype must be a float dtype, got {self.factor_dtype!r}")
        check_positive("LoRAConfig.learning_rate", self.learning_rate)
        check_positive("LoRAConfig.weight_decay", self.weight_decay, allow_zero=True)

    @property
    def scale(self) -> float:
        return self.alpha / self.rank


@dataclasses.dataclass(frozen=True)
class AdapterTarget:
    """A target leaf's shape and its resolved MatrixSpec (static, per leaf).

    Not a second matrix view: the view is ``MatrixSpec``'s (``matrix_shape``,
    ``from_matrix``). A ``MatrixSpec`` holds axes only and fits leaves of any size; the traced
    ``add_deltas`` also needs each leaf's shape before it sees the leaf, so this binds the two.
    """

    shape: tuple[int, ...]
    spec: MatrixSpec

    @classmethod
    def of(cls, path: str, shape: tuple[int, ...], spec: MatrixSpec) -> "AdapterTarget":
        return cls(tuple(shape), spec.resolve(len(shape), path))

    @property
    def batch_shape(self) -> tuple[int, ...]:
        return self.spec.matrix_shape(self.shape)[0]

    @property
    def d_in(self) -> int:
        return self.spec.matrix_shape(self.shape)[1]

    @property
    def d_out(self) -> int:
        return self.spec.matrix_shape(self.shape)[2]

    def to_leaf(self, matrix: jax.Array) -> jax.Array:
        """A (*batch, d_in, d_out) matrix back in the leaf's own axis order and shape."""
        return self.spec.from_matrix(matrix, self.shape)


def init_factors(key: jax.Array, layout: AdapterTarget, config: LoRAConfig) -> dict[str, jax.Array]:
    """``{"a": A ~ N(0, sigma^2) (*batch, d_in, r), "b": zeros (*batch, r, d_out)}``."""
    dtype = jnp.dtype(config.factor_dtype)
    std = config.init_std if config.init_std is not None else 1.0 / math.sqrt(layout.d_in)
    a = std * jax.random.normal(key, layout.batch_shape + (layout.d_in, config.rank), jnp.float32)
    b = jnp.zeros(layout.batch_shape + (config.rank, layout.d_out), dtype)
    return {"a": a.astype(dtype), "b": b}


def lora_delta(factors: dict, layout: AdapterTarget, scale: float) -> jax.Array:
    """scale * A @ B in the leaf's layout (dtype of the factors)."""
    return layout.to_leaf(scale * jnp.matmul(factors["a"], factors["b"]))


def add_deltas(base: Any, factors: dict, layouts: dict[str, AdapterTarget], scale: float) -> Any:
    """``base`` with ``scale * A @ B`` added at every path that has factors (traceable).

    The sum runs in the wider of the weight's and the factors' dtypes and is stored back in
    the weight's dtype, so a bfloat16 model stays bfloat16.
    """
    flat, treedef = flatten_with_paths(base)
    leaves = []
    for path, leaf in flat:
        pair = lookup(factors, path)
        if pair is None:
            leaves.append(leaf)
            continue
        delta = lora_delta(pair, layouts[path], scale)
        # The wider float explicitly (promote_types refuses bf16 + f32 under strict promotion).
        wide = max(leaf.dtype, delta.dtype, key=lambda d: jnp.finfo(d).bits)
        leaves.append((leaf.astype(wide) + delta.astype(wide)).astype(leaf.dtype))
    return jax.tree_util.tree_unflatten(treedef, leaves)


def build_layouts(params: Any, targets: Any, include: tuple[str, ...]) -> dict[str, AdapterTarget]:
    """``{path: AdapterTarget}`` for every (included) target, checked against ``params``."""
    specs = included_targets(targets, include)
    leaves = dict(flatten_with_paths(params)[0])
    layouts = {}
    for path, spec in specs.items():
        if path not in leaves:
            raise ValueError(f"LoRA target {path!r} is not a parameter of the model")
        leaf = leaves[path]
        if not jnp.issubdtype(leaf.dtype, jnp.floating):
            raise ValueError(f"LoRA target {path!r} is not a float array (dtype {leaf.dtype})")
        layouts[path] = AdapterTarget.of(path, tuple(leaf.shape), spec)
    return layouts


def new_adapters(ctx, layouts: dict[str, AdapterTarget], config: LoRAConfig) -> dict:
    """Fresh path-nested factors, one key per target folded from the task's rng."""
    flat = {
        path: init_factors(jax.random.fold_in(ctx.rng, i), layout, config)
        for i, (path, layout) in enumerate(sorted(layouts.items()))
    }
    return nest(flat)


def adapter_record(trainable: dict, layouts: dict[str, AdapterTarget], config: LoRAConfig) -> dict:
    """JSON-safe summary: rank, scale, factor count and the norm of each merged delta."""
    norms = {}
    count = 0
    for path, layout in sorted(layouts.items()):
        pair = lookup(trainable, path)
        count += int(pair["a"].size + pair["b"].size)
        delta = config.scale * jnp.matmul(pair["a"].astype(jnp.float32), pair["b"].astype(jnp.float32))
        norms[path] = to_float(jnp.linalg.norm(delta.reshape(-1)))
    return {
        "rank": config.rank,
        "alpha": float(config.alpha),
        "scale": float(config.scale),
        "targets": sorted(layouts),
        "trainable_params": count,
        "delta_norm": norms,
    }


class SequentialLoRA:
    """Sequential LoRA as a :class:`~asvd_jax.cl.Method` (no state carried between tasks)."""

    name = "lora"

    def __init__(self, config: LoRAConfig = LoRAConfig()):
        if not isinstance(config, LoRAConfig):
            raise TypeError(f"lora(config): expected LoRAConfig, got {type(config).__name__}")
        self.config = config
        # Static per run (the targets of one model); read by the traced functions.
        self._layouts: dict[str, AdapterTarget] = {}

    def start_task(self, ctx) -> tuple[dict, dict]:
        self._layouts = build_layouts(ctx.params, ctx.targets, self.config.include)
        return new_adapters(ctx, self._layouts, self.config), {"base": ctx.params}

    def effective_params(self, trainable: dict, frozen: dict) -> Any:
        return add_deltas(frozen["base"], trainable, self._layouts, self.config.scale)

    def penalty(self, trainable: dict, frozen: dict) -> jax.Array:
        return jnp.zeros((), jnp.float32)

    def optimizer(self, ctx) -> optax.GradientTransformation:
        return adamw(self.config.learning_rate, self.config.weight_decay)

    def finish_task(self, trainable: dict, frozen: dict, ctx) -> tuple[Any, dict]:
        merged = jax.jit(self.effective_params)(trainable, frozen)
        record = {"method": self.name, "task": int(ctx.index)}
        record.update(adapter_record(trainable, self._layouts, self.config))
        return merged, record


def lora(config: LoRAConfig = LoRAConfig()) -> SequentialLoRA:
    """The sequential-LoRA baseline for the continual-learning runner."""
    return SequentialLoRA(config)
