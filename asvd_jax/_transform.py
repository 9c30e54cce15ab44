"""The optax transform that keeps every applied update out of the protected subspaces."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import optax

from asvd_jax._bases import SubspaceBasis, align, is_basis_or_none, leaf_array
from asvd_jax._paths import flatten_with_paths
from asvd_jax._projection import MODES, check_precision, project_tree
from asvd_jax._targets import is_floating


class ProjectOutProtectedState(NamedTuple):
    """The bases (a pytree like the params, ``SubspaceBasis`` or None per leaf)."""

    bases: Any


def project_out_protected(bases: Any = None, mode: str = "strict", *,
                          precision: str = "highest",
                          group_shapes: bool = False) -> optax.GradientTransformation:
    r"""Project each update onto the allowed subspace of its target matrix.

    For a target with protected input/output projectors ``P_in``, ``P_out`` the update ``G``
    becomes ``(I - P_in) G (I - P_out)`` (``mode="strict"``), ``G - P_in G P_out``
    (``"paper"``), ``(I - P_in) G`` (``"input"``) or ``G (I - P_out)`` (``"output"``).
    Non-targets (None in the bases) pass unchanged.

    .. warning::
      Put this transform **last** in the chain, after the optimizer's scaling, weight decay
      and learning rate. Adam divides element-wise by ``sqrt(v)`` and decoupled weight decay
      adds ``-lr * wd * W``; both rotate a projected gradient back into the protected
      subspace. Only when the *final* update is projected does ``W_t - W_0`` stay in the
      allowed subspace (to float32 rounding), for any inner optimizer. Anything placed after
      it (clipping by a global norm is fine, it only rescales) must be linear per leaf.

    .. warning::
      Target params must be float32 (or wider): ``init`` and ``update`` raise on bfloat16 or
      float16 targets. Adding a projected update to a bf16 weight rounds the sum to bf16, and
      that rounding error, which is not in the allowed subspace, accumulates step after step
      (measured in docs/core.md: 0.03 of the change after 10 AdamW steps, 0.2 after 1000).
      For bf16 speed keep float32 master weights and compute in bf16: cast the params to
      bf16 inside the loss (e.g. the model's compute ``dtype=jnp.bfloat16`` with
      ``param_dtype=jnp.float32``); gradients, AdamW moments and bases stay float32.

    The bases live in the optimizer state (arrays) and can be replaced at a task boundary with
    ``set_bases`` without changing the train step; the mode is static. New bases of different
    widths (new ranks) change array shapes, so a jitted step retraces once, unless they were
    built with one fixed layout (``compute_bases(..., fixed_layout=...)``).

    Args:
      bases: from ``compute_bases``; None means nothing is protected until ``set_bases``.
      mode: ``"strict"``, ``"paper"``, ``"input"`` or ``"output"``.
      precision: matmul precision of the projection, ``"highest"`` (exact float32, the
        default), ``"high"`` or ``"default"`` (fewer bf16/tf32 passes on GPUs and TPUs;
        identical on CPU). Leakage and speed of each: docs/core.md.
      group_shapes: project the targets that share a matrix shape and basis layout as one
        stack (one batched product per shape instead of one product per matrix), for
        accelerators where hundreds of small kernels cost more than their arithmetic. Off by
        default: on CPU it measured 1.6x slower (stacking copies every update; docs/core.md).

    Returns:
      An ``optax.GradientTransformation`` with state ``ProjectOutProtectedState``.

    Examples:
      >>> tx = optax.chain(optax.adamw(1e-4, weight_decay=0.01),
      ...                  project_out_protected(bases))  # doctest: +SKIP
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    bases = pure_bases(bases)
    check_precision(precision)

    def init_fn(params):
        if bases is None:
            return ProjectOutProtectedState(jax.tree.map(lambda _: None, params))
        _validate(bases, params, "params")
        return ProjectOutProtectedState(bases)

    def update_fn(updates, state, params=None):
        if params is not None:
            _check_param_dtypes(state.bases, params)
        return project_tree(updates, state.bases, mode, precision, group_shapes), state

    return optax.GradientTransformation(init_fn, update_fn)


def _is_variable(x: Any) -> bool:
    # flax.nnx Variables (Param, OptArray, ...), recognised without importing flax.
    return hasattr(x, "get_value") and hasattr(x, "get_metadata")


def pure_bases(bases: Any) -> Any:
    """``bases`` with every Variable wrapper (``nnx.Param``) replaced by its value.

    ``compute_bases(nnx.state(model, nnx.Param), ...)`` returns an ``nnx.State`` whose leaves are
    Params holding ``SubspaceBasis`` objects. ``nnx.Optimizer`` rewrites pytree nodes stored
    inside Variables, which would take the bases apart; without the wrappers the bases live
    in the optimizer state like arrays (what ``nnx.as_pure(bases)`` does, done here for you).
    """
    if bases is None or not any(map(_is_variable, jax.tree.leaves(bases, is_leaf=_is_variable))):
        return bases  # nothing wrapped: the very same tree
    return jax.tree.map(lambda x: x.get_value() if _is_variable(x) else x, bases,
                        is_leaf=lambda x: is_basis_or_none(x) or _is_variable(x))


def _check_param_dtypes(bases: Any, params: Any) -> None:
    """TypeError at the first target param narrower than float32 (trace time, no cost)."""
    for path, basis, leaf in align(bases, params, "params")[0]:
        if basis is not None and hasattr(leaf, "dtype"):
            _require_float32(path, leaf)


def _require_float32(path: str, leaf: Any) -> None:
    if jax.numpy.issubdtype(leaf.dtype, jax.numpy.floating) and leaf.dtype.itemsize < 4:
        raise TypeError(
            f"{path}: target params are {leaf.dtype}; the projection keeps W_t - W_0 out of "
            "the protected subspace only with float32 params (each bf16 addition rounds the "
            "weight, and the rounding errors accumulate in the protected directions). Keep "
            "float32 master weights and compute in bf16 instead: cast inside the loss, or "
            "build the model with dtype=bfloat16, param_dtype=float32 (the runner's "
            "model.dtype: bfloat16 does this). See docs/core.md, 'bf16 training'.")


def _validate(bases: Any, params: Any, what: str) -> None:
    """Structure, shape and dtype of params (arrays or ShapeDtypeStructs) against the bases."""
    for path, basis, leaf in align(bases, params, what)[0]:
        leaf = leaf_array(leaf)
        if basis is None:
            continue
        if not isinstance(basis, SubspaceBasis):
            raise TypeError(f"{path}: expected a SubspaceBasis or None, got {type(basis).__name__}")
        if not hasattr(leaf, "shape"):
            if jax.tree.leaves(leaf):
                raise ValueError(f"{path}: expected an array leaf at a target, got "
                                 f"{type(leaf).__name__}")
            continue  # masked out by an enclosing optax.masked / partition
        if not is_floating(leaf):
            raise TypeError(f"{path}: target leaf must be floating, got dtype {leaf.dtype}")
        _require_float32(path, leaf)
        spec = basis.spec
        batch, m, n = basis.leaf_shape()
        try:
            fits = spec.matrix_shape(leaf.shape) == (batch, m, n)
        except IndexError:
            fits = False
        if not fits:
            raise ValueError(f"{path}: leaf of shape {tuple(leaf.shape)} does not fit the basis "
                             f"of matrices {batch} x ({m}, {n}) with {spec}")


def with_projection(inner: optax.GradientTransformation, bases: Any = None,
                    mode: str = "strict", **kwargs) -> optax.GradientTransformation:
    """``optax.chain(inner, project_out_protected(bases, mode, **kwargs))``: any optimizer,
    projected last."""
    return optax.chain(inner, project_out_protected(bases, mode, **kwargs))


def set_bases(opt_state: Any, bases: Any) -> Any:
    """``opt_state`` with the bases of every ``ProjectOutProtectedState`` inside it replaced.

    Works through any nesting of optax states (chain, inject_hyperparams, MultiSteps, masked,
    partition). The new bases must have the structure of the old ones (a bases leaf, SubspaceBasis
    or None, at the same paths). ValueError if the state holds no ``ProjectOutProtectedState``.
    """
    if hasattr(opt_state, "opt_state") and hasattr(opt_state, "tx"):
        raise TypeError("set_bases got an nnx.Optimizer; swap its bases in place with "
                        "asvd_jax.ranks.set_optimizer_bases(optimizer, bases)")
    bases = pure_bases(bases)
    new_leaves, new_def = flatten_with_paths(bases, is_leaf=is_basis_or_none)
    found = []

    def swap(node):
        if not isinstance(node, ProjectOutProtectedState):
            return node
        if any(_is_variable(x) for x in jax.tree.leaves(node.bases, is_leaf=_is_variable)):
            raise TypeError("opt_state holds flax nnx Variables (an nnx.Optimizer's opt_state); "
                            "swap its bases with asvd_jax.ranks.set_optimizer_bases(optimizer, bases)")
        old_leaves, old_def = flatten_with_paths(node.bases, is_leaf=is_basis_or_none)
        if old_def != new_def:
            raise ValueError("new bases do not have the structure of the state's bases: "
                             + _structure_diff([p for p, _ in old_leaves],
                                               [p for p, _ in new_leaves]))
        found.append(True)
        return ProjectOutProtectedState(bases)

    out = jax.tree.map(swap, opt_state,
                       is_leaf=lambda x: isinstance(x, ProjectOutProtectedState))
    if not found:
        raise ValueError("opt_state holds no ProjectOutProtectedState: was the optimizer built "
                         "with project_out_protected / with_projection?")
    return out


def _structure_diff(old_paths: list[str], new_paths: list[str]) -> str:
    """The first path that one side has and the other lacks (or the first that differs)."""
    old_set, new_set = set(old_paths), set(new_paths)
    extra = [p for p in new_paths if p not in old_set]
    if extra:
        return f"new bases entry {extra[0]!r} has no counterpart in the state's bases"
    missing = [p for p in old_paths if p not in new_set]
    if missing:
        return f"the state's bases entry {missing[0]!r} is missing from the new bases"
    return next((f"{a!r} vs {b!r}" for a, b in zip(old_paths, new_paths) if a != b),
                "same paths, different container types")
