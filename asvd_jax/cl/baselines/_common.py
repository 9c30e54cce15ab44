"""Helpers every baseline shares: path-keyed trees, target listing, the optimizer.

Baselines keep their own arrays (Fisher diagonals, anchors, LoRA factors) in plain nested
dicts keyed by the parts of a parameter path (``layers/3/attn/q_proj/kernel`` ->
``{"layers": {"3": {"attn": {"q_proj": {"kernel": ...}}}}}``). That tree is the same whether
the model params are a pure dict or an ``nnx.State``, survives jit, optax and orbax
unchanged, and is looked up by the same path strings that target patterns use.
"""

from __future__ import annotations

import re
from typing import Any, Iterable, Mapping

import jax
import jax.numpy as jnp
import optax

from asvd_jax import MatrixSpec, flatten_with_paths, list_targets


def nest(flat: Mapping[str, Any]) -> dict:
    """``{"a/b/c": v}`` -> ``{"a": {"b": {"c": v}}}``."""
    out: dict = {}
    for path, value in flat.items():
        parts = path.split("/")
        node = out
        for part in parts[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ValueError(f"parameter path {path!r} runs through a leaf at {part!r}")
            node = child
        if parts[-1] in node:
            raise ValueError(f"parameter path {path!r} appears twice")
        node[parts[-1]] = value
    return out


def lookup(nested: Mapping[str, Any], path: str) -> Any | None:
    """The entry of ``nested`` at ``path``, or None when there is none."""
    node: Any = nested
    for part in path.split("/"):
        if not isinstance(node, Mapping) or part not in node:
            return None
        node = node[part]
    return node


def included_targets(targets: Any, include: Iterable[str] = ()) -> dict[str, MatrixSpec]:
    """``{path: MatrixSpec}`` of the targets (``asvd_jax.list_targets``), narrowed to paths
    matching ``include``.

    ``include`` holds regular expressions matched with ``re.search`` (case-insensitive, as in
    ``select_targets``) against the path string; empty keeps every target. A pattern that
    matches no target is an error, as is a targets tree without any MatrixSpec.
    """
    specs = dict(list_targets(targets))
    if not specs:
        raise ValueError("targets: the targets pytree holds no MatrixSpec (no target matrix)")
    include = tuple(include)
    if not include:
        return specs
    kept = {}
    for pattern in include:
        try:
            regex = re.compile(pattern, re.IGNORECASE)
        except re.error as err:
            raise ValueError(f"include pattern {pattern!r} is not a valid regex: {err}") from None
        hits = [p for p in specs if regex.search(p)]
        if not hits:
            names = sorted(specs)
            shown = ", ".join(names[:6]) + (f", ... ({len(names)} in all)" if len(names) > 6 else "")
            raise ValueError(f"include pattern {pattern!r} matches no target; targets: {shown}")
        kept.update({p: specs[p] for p in hits})
    return {p: specs[p] for p in specs if p in kept}


def floating_leaves(params: Any) -> dict[str, jax.Array]:
    """``{path: leaf}`` of every floating-point array leaf of ``params``."""
    flat, _ = flatten_with_paths(params)
    return {p: x for p, x in flat if hasattr(x, "dtype") and jnp.issubdtype(x.dtype, jnp.floating)}


def adamw(learning_rate: float, weight_decay: float) -> optax.GradientTransformation:
    """A fresh ``optax.adamw`` (decoupled weight decay on every trainable leaf)."""
    return optax.adamw(learning_rate=learning_rate, weight_decay=weight_decay)


def check_positive(name: str, value: float, allow_zero: bool = False) -> None:
    """ValueError naming the config field when ``value`` is out of range."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number, got {type(value).__name__}")
    if value < 0 or (value == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{name} must be {bound}, got {value}")


def to_float(x: Any) -> float:
    """A JSON-safe Python float from a scalar array."""
    return float(jax.device_get(x))
