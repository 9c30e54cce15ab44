"""The optax transform that keeps every applied update out of the protected subspaces."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import optax

from asvd_jax._bases import SubspaceBasis, align, is_basis_or_none, leaf_array
from asvd_jax._paths import flatten_with_paths
from asvd_jax._projection import MODES, project_tree
from asvd_jax._targets import is_floating


class ProjectOutProtectedState(NamedTuple):
    """The bases (a pytree like the params, ``SubspaceBasis`` or None per leaf)."""

    bases: Any


def project_out_protected(bases: Any = None, mode: str = "strict") -> optax.GradientTransformation:
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
      With bfloat16 params the projected update is rounded to bfloat16, so the protected
      part of ``W_t - W_0`` is bounded by that rounding, not by float32's.

    The bases live in the optimizer state (arrays) and can be replaced at a task boundary with
    ``set_bases`` without changing the train step; the mode is static. New bases of different
    widths (new ranks) change array shapes, so a jitted step retraces once.

    Args:
      bases: from ``compute_bases``; None means nothing is protected until ``set_bases``.
      mode: ``"strict"``, ``"paper"``, ``"input"`` or ``"output"``.

    Returns:
      An ``optax.GradientTransformation`` with state ``ProjectOutProtectedState``.

    Examples:
      >>> tx = optax.chain(optax.adamw(1e-4, weight_decay=0.01),
      ...                  project_out_protected(bases))  # doctest: +SKIP
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    bases = pure_bases(bases)

    def init_fn(params):
        if bases is None:
            return ProjectOutProtectedState(jax.tree.map(lambda _: None, params))
        _validate(bases, params, "params")
        return ProjectOutProtectedState(bases)

    def update_fn(updates, state, params=None):
        del params
        return project_tree(updates, state.bases, mode), state

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
                    mode: str = "strict") -> optax.GradientTransformation:
    """``optax.chain(inner, project_out_protected(bases, mode))``: any optimizer, projected last."""
    return optax.chain(inner, project_out_protected(bases, mode))


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
            diff = next((f"{a!r} vs {b!r}" for (a, _), (b, _) in zip(old_leaves, new_leaves)
                         if a != b), f"{len(old_leaves)} vs {len(new_leaves)} leaves")
            raise ValueError(f"new bases do not have the structure of the state's bases: {diff}")
        found.append(True)
        return ProjectOutProtectedState(bases)

    out = jax.tree.map(swap, opt_state,
                       is_leaf=lambda x: isinstance(x, ProjectOutProtectedState))
    if not found:
        raise ValueError("opt_state holds no ProjectOutProtectedState: was the optimizer built "
                         "with project_out_protected / with_projection?")
    return out
