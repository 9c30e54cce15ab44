"""Remove the protected component of an update: a pure function over bases and updates.

For an update ``G`` (``(in, out)`` layout, ``m x n``) with input-side projector
``P_in = B_in B_in^T`` and output-side projector ``P_out = B_out B_out^T``:

- ``"strict"`` (default): ``G' = (I - P_in) G (I - P_out)``, so ``B_in^T G' = 0`` and
  ``G' B_out = 0``: neither protected inputs nor protected outputs are touched;
- ``"paper"``: ``G' = G - P_in G P_out`` (only the protected block is removed);
- ``"input"``: ``G' = (I - P_in) G``;  ``"output"``: ``G' = G (I - P_out)``.

A side stored as a complement ``C`` uses ``I - P = C C^T``. Strict mode first shrinks ``G`` by
every complement side (``C_in^T G``, ``G C_out``), removes the basis sides from that smaller
core, then expands; left and right products commute, so this order is exact and the cheapest.
All products run in float32 at HIGHEST precision; the result has the update's dtype.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from asvd_jax._bases import SubspaceBasis, align, leaf_array

MODES = ("strict", "paper", "input", "output")
_HIGHEST = jax.lax.Precision.HIGHEST


def _mm(a, b):
    return jnp.matmul(a, b, precision=_HIGHEST)


def _t(x):
    return jnp.swapaxes(x, -1, -2)


def _remove_left(g, b):
    """(I - B B^T) g."""
    return g - _mm(b, _mm(_t(b), g)) if b.shape[-1] else g


def _remove_right(g, b):
    """g (I - B B^T)."""
    return g - _mm(_mm(g, b), _t(b)) if b.shape[-1] else g


def _keep_left(g, b):
    """B B^T g."""
    return _mm(b, _mm(_t(b), g))


def _keep_right(g, b):
    """g B B^T."""
    return _mm(_mm(g, b), _t(b))


def _allowed_left(g, basis: SubspaceBasis):
    b = basis.input
    return _keep_left(g, b) if basis.input_is_complement else _remove_left(g, b)


def _allowed_right(g, basis: SubspaceBasis):
    b = basis.output
    return _keep_right(g, b) if basis.output_is_complement else _remove_right(g, b)


def _protected_left(g, basis: SubspaceBasis):
    """P_in g."""
    b = basis.input
    return g - _keep_left(g, b) if basis.input_is_complement else _keep_left(g, b)


def _protected_right(g, basis: SubspaceBasis):
    """g P_out."""
    b = basis.output
    return g - _keep_right(g, b) if basis.output_is_complement else _keep_right(g, b)


def _strict(g, basis: SubspaceBasis):
    c_in = basis.input if basis.input_is_complement else None
    c_out = basis.output if basis.output_is_complement else None
    if (c_in is not None and c_in.shape[-1] == 0) or (c_out is not None and c_out.shape[-1] == 0):
        return jnp.zeros_like(g)  # k = min dim: the matrix is frozen
    core = g
    if c_in is not None:
        core = _mm(_t(c_in), core)
    if c_out is not None:
        core = _mm(core, c_out)
    if c_in is None:
        core = _remove_left(core, basis.input)
    if c_out is None:
        core = _remove_right(core, basis.output)
    if c_out is not None:
        core = _mm(core, _t(c_out))
    if c_in is not None:
        core = _mm(c_in, core)
    return core


def _paper(g, basis: SubspaceBasis):
    if not basis.input_is_complement and not basis.output_is_complement:
        if basis.input.shape[-1] == 0 or basis.output.shape[-1] == 0:
            return g
        core = _mm(_mm(_t(basis.input), g), basis.output)
        return g - _mm(_mm(basis.input, core), _t(basis.output))
    return g - _protected_right(_protected_left(g, basis), basis)


def _check(update, basis: SubspaceBasis, path: str):
    batch, m, n = basis.leaf_shape()
    try:
        got = basis.spec.matrix_shape(update.shape)
    except (IndexError, TypeError):
        got = None
    if got != (batch, m, n):
        raise ValueError(f"{path}: update of shape {tuple(update.shape)} does not fit the basis "
                         f"of matrices {batch} x ({m}, {n}) with {basis.spec}")
    if not jnp.issubdtype(update.dtype, jnp.floating):
        raise TypeError(f"{path}: update must be floating, got dtype {update.dtype}")


def project(update: jax.Array, basis: SubspaceBasis | None, mode: str = "strict",
            path: str = "?") -> jax.Array:
    """The allowed part of one leaf's update (see the module docstring for the modes)."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if basis is None:
        return update
    _check(update, basis, path)
    spec = basis.spec
    g = spec.to_matrix(update.astype(jnp.float32))
    if mode == "strict":
        g = _strict(g, basis)
    elif mode == "paper":
        g = _paper(g, basis)
    elif mode == "input":
        g = _allowed_left(g, basis)
    else:
        g = _allowed_right(g, basis)
    return spec.from_matrix(g, update.shape).astype(update.dtype)


def project_tree(updates: Any, bases: Any, mode: str = "strict") -> Any:
    """``project`` at every target of a pytree (dict or ``nnx.State``) like the bases.

    Subtrees with no array leaves (e.g. optax's masked-out ``MaskedNode``) pass unchanged.
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    items, treedef = align(bases, updates, "updates")
    out = []
    for path, basis, upd in items:
        if basis is None or (not hasattr(upd, "shape") and not jax.tree.leaves(upd)):
            out.append(upd)
        elif not hasattr(leaf_array(upd), "shape"):
            raise ValueError(f"{path}: expected an array update at a target, got "
                             f"{type(upd).__name__}")
        else:  # an array, or one inside a Variable node (kept around the result)
            out.append(jax.tree.map(lambda u: project(u, basis, mode, path), upd))
    return treedef.unflatten(out)
