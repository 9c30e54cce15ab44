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
All products run in float32, at HIGHEST precision unless told otherwise (``precision``); the
result has the update's dtype. ``project_tree(..., group_shapes=True)`` stacks the matrices
that share a shape and a basis layout and projects each such group with one batched product
per step of the formula (a transformer's layers have a handful of distinct shapes) instead of
one small product per matrix.
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from asvd_jax._bases import SubspaceBasis, align, leaf_array

MODES = ("strict", "paper", "input", "output")
PRECISIONS = {"highest": jax.lax.Precision.HIGHEST, "high": jax.lax.Precision.HIGH,
              "default": jax.lax.Precision.DEFAULT}
"""Matmul precision of the projection's products. On CPU all three are exact float32; on GPUs
and TPUs ``"high"`` and ``"default"`` allow fewer bf16/tf32 passes (faster, less exact)."""
_HIGHEST = jax.lax.Precision.HIGHEST


def check_precision(precision: str) -> jax.lax.Precision:
    """The ``jax.lax.Precision`` for a name of ``PRECISIONS``; ValueError otherwise."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {tuple(PRECISIONS)}, got {precision!r}")
    return PRECISIONS[precision]


def _t(x):
    return jnp.swapaxes(x, -1, -2)


class _Ops:
    """The projection's products at one matmul precision."""

    def __init__(self, precision: jax.lax.Precision):
        self.precision = precision

    def mm(self, a, b):
        return jnp.matmul(a, b, precision=self.precision)

    def remove_left(self, g, b):
        """(I - B B^T) g."""
        return g - self.mm(b, self.mm(_t(b), g)) if b.shape[-1] else g

    def remove_right(self, g, b):
        """g (I - B B^T)."""
        return g - self.mm(self.mm(g, b), _t(b)) if b.shape[-1] else g

    def keep_left(self, g, b):
        """B B^T g."""
        return self.mm(b, self.mm(_t(b), g))

    def keep_right(self, g, b):
        """g B B^T."""
        return self.mm(self.mm(g, b), _t(b))

    def allowed_left(self, g, basis: SubspaceBasis):
        b = basis.input
        return self.keep_left(g, b) if basis.input_is_complement else self.remove_left(g, b)

    def allowed_right(self, g, basis: SubspaceBasis):
        b = basis.output
        return self.keep_right(g, b) if basis.output_is_complement else self.remove_right(g, b)

    def protected_left(self, g, basis: SubspaceBasis):
        """P_in g."""
        b = basis.input
        return g - self.keep_left(g, b) if basis.input_is_complement else self.keep_left(g, b)

    def protected_right(self, g, basis: SubspaceBasis):
        """g P_out."""
        b = basis.output
        return g - self.keep_right(g, b) if basis.output_is_complement else self.keep_right(g, b)

    def strict(self, g, basis: SubspaceBasis):
        c_in = basis.input if basis.input_is_complement else None
        c_out = basis.output if basis.output_is_complement else None
        if ((c_in is not None and c_in.shape[-1] == 0)
                or (c_out is not None and c_out.shape[-1] == 0)):
            return jnp.zeros_like(g)  # k = min dim: the matrix is frozen
        core = g
        if c_in is not None:
            core = self.mm(_t(c_in), core)
        if c_out is not None:
            core = self.mm(core, c_out)
        if c_in is None:
            core = self.remove_left(core, basis.input)
        if c_out is None:
            core = self.remove_right(core, basis.output)
        if c_out is not None:
            core = self.mm(core, _t(c_out))
        if c_in is not None:
            core = self.mm(c_in, core)
        return core

    def paper(self, g, basis: SubspaceBasis):
        if not basis.input_is_complement and not basis.output_is_complement:
            if basis.input.shape[-1] == 0 or basis.output.shape[-1] == 0:
                return g
            core = self.mm(self.mm(_t(basis.input), g), basis.output)
            return g - self.mm(self.mm(basis.input, core), _t(basis.output))
        return g - self.protected_right(self.protected_left(g, basis), basis)

    def apply(self, g, basis: SubspaceBasis, mode: str):
        """The allowed part of float32 matrices ``g`` (``(*batch, m, n)``)."""
        if mode == "strict":
            return self.strict(g, basis)
        if mode == "paper":
            return self.paper(g, basis)
        if mode == "input":
            return self.allowed_left(g, basis)
        return self.allowed_right(g, basis)


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
            path: str = "?", precision: str = "highest") -> jax.Array:
    """The allowed part of one leaf's update (see the module docstring for the modes)."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    ops = _Ops(check_precision(precision))
    if basis is None:
        return update
    _check(update, basis, path)
    spec = basis.spec
    g = ops.apply(spec.to_matrix(update.astype(jnp.float32)), basis, mode)
    return spec.from_matrix(g, update.shape).astype(update.dtype)


def project_tree(updates: Any, bases: Any, mode: str = "strict", precision: str = "highest",
                 group_shapes: bool = False) -> Any:
    """``project`` at every target of a pytree (dict or ``nnx.State``) like the bases.

    Subtrees with no array leaves (e.g. optax's masked-out ``MaskedNode``) pass unchanged.
    With ``group_shapes`` (off by default) the matrices of equal shape and basis layout
    (widths, basis or complement per side) are stacked and projected together: the same
    products, batched, so a model with 30 identical layers issues a few batched matmuls
    instead of hundreds of small ones. The result is the same as leaf by leaf (each batch
    index is projected on its own); on CPU it measured slower (docs/core.md).
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    ops = _Ops(check_precision(precision))
    items, treedef = align(bases, updates, "updates")
    out: list = [None] * len(items)
    groups: dict = {}
    for i, (path, basis, upd) in enumerate(items):
        if basis is None or (not hasattr(upd, "shape") and not jax.tree.leaves(upd)):
            out[i] = upd
        elif not hasattr(leaf_array(upd), "shape"):
            raise ValueError(f"{path}: expected an array update at a target, got "
                             f"{type(upd).__name__}")
        elif not hasattr(upd, "shape") or not group_shapes:
            # An array, or one inside a Variable node (kept around the result).
            out[i] = jax.tree.map(lambda u: project(u, basis, mode, path, precision), upd)
        else:
            _check(upd, basis, path)
            _, m, n = basis.leaf_shape()
            key = (m, n, basis.input.shape[-1], basis.output.shape[-1],
                   basis.input_is_complement, basis.output_is_complement)
            groups.setdefault(key, []).append(i)
    for members in groups.values():
        _project_group(ops, mode, [items[i] for i in members], members, out)
    return treedef.unflatten(out)


def _project_group(ops: _Ops, mode: str, group: list, members: list[int], out: list) -> None:
    """Project leaves whose matrices and bases share shapes as one stack; results into out."""
    first = group[0][1]
    m, n = first.leaf_shape()[1:]
    mats, ins, outs, counts = [], [], [], []
    for _, basis, upd in group:
        count = math.prod(basis.leaf_shape()[0])
        mats.append(basis.spec.to_matrix(upd.astype(jnp.float32)).reshape(count, m, n))
        ins.append(basis.input.reshape((count,) + basis.input.shape[-2:]))
        outs.append(basis.output.reshape((count,) + basis.output.shape[-2:]))
        counts.append(count)
    if len(group) == 1:
        stacked = SubspaceBasis(ins[0], outs[0], first.spec, first.input_is_complement,
                                first.output_is_complement)
        results = [ops.apply(mats[0], stacked, mode)]
    else:
        stacked = SubspaceBasis(jnp.concatenate(ins), jnp.concatenate(outs), first.spec,
                                first.input_is_complement, first.output_is_complement)
        projected = ops.apply(jnp.concatenate(mats), stacked, mode)
        results = jnp.split(projected, np.cumsum(counts)[:-1].tolist())
    for i, (_, basis, upd), res in zip(members, group, results):
        mat = res.reshape(basis.leaf_shape()[0] + (m, n))
        out[i] = basis.spec.from_matrix(mat, upd.shape).astype(upd.dtype)
