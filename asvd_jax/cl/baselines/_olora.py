"""O-LoRA (Wang et al. 2023, "Orthogonal Subspace Learning for Language Model Continual
Learning"): a new LoRA per task, kept orthogonal to the input subspaces of earlier tasks.

Task t trains a fresh pair (A_t, B_t) as in sequential LoRA (A_t: (d_in, r) on the input
side, the analogue of PyTorch's ``lora_A``; B_t: (r, d_out)) with the loss

    L = L_task + lambda_1 * sum_{i<t} sum_{j,k} |(A_i^T A_t)[j, k]|
               + lambda_2 * (||A_t||_F + ||B_t||_F).

The orthogonality term is the elementwise L1 norm of the r_i x r overlap matrix of the
input-side factors, as in the authors' released trainer (``abs(lora_A @ loranew_A.T).sum()``);
the paper's text writes the squared entries instead (``orth_form="squared"``). The L2 term is
the sum of the unsquared Frobenius norms of the new factors, as in the released trainer
(``l2_form="squared"`` gives ||A_t||_F^2 + ||B_t||_F^2); its default weight is 0.

Earlier adapters are frozen. Their deltas are merged into the base weight at the end of
their task (exact: a frozen delta contributes the same to every forward pass whether it is
merged or added on the side), so only the old A_i are kept, concatenated along the rank
axis, for the penalty. LoRA dropout (0.1 in the reference runs) is not applied: the Method
protocol's traced functions carry no rng.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Literal

import jax
import jax.numpy as jnp
import optax

from asvd_jax._paths import flatten_with_paths
from asvd_jax.cl.baselines._common import adamw, check_positive, lookup, nest, to_float
from asvd_jax.cl.baselines._lora import (
    AdapterTarget,
    LoRAConfig,
    adapter_record,
    add_deltas,
    build_layouts,
    new_adapters,
)


@dataclasses.dataclass(frozen=True)
class OLoRAConfig:
    """Settings of the O-LoRA baseline (defaults: the authors' released scripts)."""

    lora: LoRAConfig = dataclasses.field(default_factory=LoRAConfig)
    """Rank, alpha, targets, init and optimizer of each task's adapter (r 8, alpha 32, lr 1e-3)."""
    lambda_1: float = 0.5
    """Weight of the orthogonality term."""
    lambda_2: float = 0.0
    """Weight of the L2 term on the new adapter."""
    orth_form: Literal["l1", "squared"] = "l1"
    """Entrywise |.| of A_i^T A_t (released code) or its square (paper text)."""
    l2_form: Literal["norm", "squared"] = "norm"
    """Sum of Frobenius norms of A_t and B_t (released code) or of their squares."""

    def __post_init__(self):
        if not isinstance(self.lora, LoRAConfig):
            raise TypeError(f"OLoRAConfig.lora must be a LoRAConfig, got {type(self.lora).__name__}")
        check_positive("OLoRAConfig.lambda_1", self.lambda_1, allow_zero=True)
        check_positive("OLoRAConfig.lambda_2", self.lambda_2, allow_zero=True)
        if self.orth_form not in ("l1", "squared"):
            raise ValueError(f"OLoRAConfig.orth_form must be 'l1' or 'squared', got {self.orth_form!r}")
        if self.l2_form not in ("norm", "squared"):
            raise ValueError(f"OLoRAConfig.l2_form must be 'norm' or 'squared', got {self.l2_form!r}")


def _safe_norm(x: jax.Array) -> jax.Array:
    # ||x||_F with gradient 0 at x = 0 (B starts at zero; sqrt's gradient there is inf).
    sq = jnp.sum(jnp.square(x))
    positive = sq > 0
    return jnp.where(positive, jnp.sqrt(jnp.where(positive, sq, 1.0)), 0.0)


def orthogonality_loss(old_a: jax.Array, new_a: jax.Array, form: str = "l1") -> jax.Array:
    """sum_{j,k} |(A_old^T A_new)[j,k]| (or squared), summed over any leading batch axes.

    ``old_a``: (*batch, d_in, r_old) -- all earlier tasks' A side by side; ``new_a``:
    (*batch, d_in, r).
    """
    overlap = jnp.einsum("...ij,...ik->...jk", old_a.astype(jnp.float32), new_a.astype(jnp.float32))
    return jnp.sum(jnp.abs(overlap)) if form == "l1" else jnp.sum(jnp.square(overlap))


def olora_penalty(trainable: dict, old_a: dict, paths: list[str], config: OLoRAConfig) -> jax.Array:
    """lambda_1 * orthogonality + lambda_2 * L2 over the adapters at ``paths`` (float32)."""
    orth = jnp.zeros((), jnp.float32)
    l2 = jnp.zeros((), jnp.float32)
    for path in paths:
        pair = lookup(trainable, path)
        previous = lookup(old_a, path)
        if previous is not None:
            orth = orth + orthogonality_loss(previous, pair["a"], config.orth_form)
        for factor in (pair["a"], pair["b"]):
            x = factor.astype(jnp.float32)
            l2 = l2 + (_safe_norm(x) if config.l2_form == "norm" else jnp.sum(jnp.square(x)))
    return config.lambda_1 * orth + config.lambda_2 * l2


class OLoRA:
    """O-LoRA as a :class:`~asvd_jax.cl.Method`.

    Host state between tasks: the earlier tasks' A factors (``carry_state``).
    """

    name = "olora"

    def __init__(self, config: OLoRAConfig = OLoRAConfig()):
        if not isinstance(config, OLoRAConfig):
            raise TypeError(f"olora(config): expected OLoRAConfig, got {type(config).__name__}")
        self.config = config
        self._layouts: dict[str, AdapterTarget] = {}
        self._old_a: dict[str, jax.Array] = {}
        self._ranks: list[int] = []

    def start_task(self, ctx) -> tuple[dict, dict]:
        self._layouts = build_layouts(ctx.params, ctx.targets, self.config.lora.include)
        for path, a in self._old_a.items():
            layout = self._layouts.get(path)
            want = None if layout is None else layout.batch_shape + (layout.d_in,)
            if want != a.shape[:-1]:
                raise ValueError(f"O-LoRA: stored A for {path!r} has shape {a.shape}, target needs {want} + (r,)")
        trainable = new_adapters(ctx, self._layouts, self.config.lora)
        return trainable, {"base": ctx.params, "old_a": nest(self._old_a)}

    def effective_params(self, trainable: dict, frozen: dict) -> Any:
        return add_deltas(frozen["base"], trainable, self._layouts, self.config.lora.scale)

    def penalty(self, trainable: dict, frozen: dict) -> jax.Array:
        return olora_penalty(trainable, frozen["old_a"], sorted(self._layouts), self.config)

    def optimizer(self, ctx) -> optax.GradientTransformation:
        return adamw(self.config.lora.learning_rate, self.config.lora.weight_decay)

    def finish_task(self, trainable: dict, frozen: dict, ctx) -> tuple[Any, dict]:
        merged = jax.jit(self.effective_params)(trainable, frozen)
        overlap = {}
        for path in sorted(self._layouts):
            new_a = lookup(trainable, path)["a"]
            old = self._old_a.get(path)
            if old is not None:
                overlap[path] = to_float(orthogonality_loss(old, new_a, self.config.orth_form))
            # A copy: the runner may donate the trained factors' buffers.
            new_a = jnp.array(new_a, copy=True)
            self._old_a[path] = new_a if old is None else jnp.concatenate([old, new_a], axis=-1)
        self._ranks.append(self.config.lora.rank)
        record = {"method": self.name, "task": int(ctx.index)}
        record.update(adapter_record(trainable, self._layouts, self.config.lora))
        record.update(
            {
                "lambda_1": float(self.config.lambda_1),
                "lambda_2": float(self.config.lambda_2),
                "task_ranks": list(self._ranks),
                "orthogonality": overlap,
            }
        )
        return merged, record

    def carry_state(self) -> dict | None:
        """Arrays a resumed run needs: the earlier A factors nested by path (None before task 1 ends)."""
        return {"old_a": nest(self._old_a)} if self._old_a else None

    def restore_carry_state(self, tree: dict | None) -> None:
        """Inverse of :meth:`carry_state`."""
        if tree is None:
            self._old_a, self._ranks = {}, []
            return
        if not isinstance(tree, dict) or set(tree) != {"old_a"}:
            raise ValueError(f"O-LoRA carry state must be a dict with the key 'old_a', got {tree!r:.200}")
        old_a = {p: jnp.asarray(v) for p, v in flatten_with_paths(tree["old_a"])[0]}
        ranks = {int(a.shape[-1]) for a in old_a.values()}
        if len(ranks) > 1:
            raise ValueError(f"O-LoRA carry state: stored A factors disagree on the total rank: {sorted(ranks)}")
        self._old_a = old_a
        # Per-task ranks are in the task records; a restored run assumes the configured rank.
        total = ranks.pop() if ranks else 0
        self._ranks = [self.config.lora.rank] * (total // self.config.lora.rank)


def olora(config: OLoRAConfig = OLoRAConfig()) -> OLoRA:
    """The O-LoRA baseline for the continual-learning runner."""
    return OLoRA(config)
