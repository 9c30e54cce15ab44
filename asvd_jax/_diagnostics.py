"""How much of a weight change lies in the protected subspace.

For a delta ``D`` (e.g. params now minus params at task start) and the projection ``Pi`` of a
mode, the leakage of one matrix is ``||D - Pi(D)||_F / ||D||_F``: 0 when the change avoids the
protected subspace entirely, 1 when it lies entirely inside it. One projection per matrix
(four thin products), so it is cheap enough to log every few steps, under jit or not.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from asvd_jax._bases import align, leaf_array
from asvd_jax._paths import flatten_with_paths
from asvd_jax._projection import MODES, project


def protected_leakage(delta: Any, bases: Any, mode: str = "strict") -> dict[str, jax.Array]:
    """``{path: ||protected part of delta|| / ||delta||}`` for every target.

    Stacked leaves give one value per batch index (an array of the batch shape); a zero
    delta gives 0. Norms are taken in float32.
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    items, _ = align(bases, delta, "delta")
    out = {}
    for path, basis, d in items:
        d = leaf_array(d)
        if basis is None or not hasattr(d, "shape"):
            continue
        d32 = d.astype(jnp.float32)
        protected = d32 - project(d32, basis, mode, path)
        spec = basis.spec
        num = _matrix_norms(spec.to_matrix(protected))
        den = _matrix_norms(spec.to_matrix(d32))
        out[path] = jnp.where(den > 0, num / jnp.where(den > 0, den, 1.0), 0.0)
    return out


def _matrix_norms(mat: jax.Array) -> jax.Array:
    return jnp.sqrt(jnp.sum(jnp.square(mat), axis=(-2, -1)))


class TrackAppliedUpdatesState(NamedTuple):
    """Float32 sum of the updates emitted so far at the tracked leaves (None elsewhere)."""

    total: Any


def track_applied_updates(where: Any) -> optax.GradientTransformation:
    """Pass updates through unchanged, keeping their float32 running sum at the leaves where
    ``where`` (the bases, or the targets of ``select_targets``) is not None.

    Place it last in the chain (after ``project_out_protected``). ``protected_leakage`` of
    the sum (``applied_updates(opt_state)``) is the protected share of what the optimizer
    applied this task, free of the weights' own rounding: ``W_t - W_0`` of float32 weights
    also holds every step's rounding of ``W + u`` (about ``2^-24 |W|`` per element), which
    for a nearly frozen matrix with a tiny change reads as a leak of 1e-3..1e-2 although the
    optimizer emitted none. An exact run then logs ~1e-6 and a leaking one (projection
    before Adam, no projection) its real share. Costs one float32 copy of the tracked leaves.
    """
    def init_fn(params):
        items, treedef = align(where, params, "params")
        return TrackAppliedUpdatesState(treedef.unflatten([
            None if w is None or not hasattr(p, "shape") else jnp.zeros(p.shape, jnp.float32)
            for _, w, p in items]))

    def update_fn(updates, state, params=None):
        del params
        items, treedef = align(where, updates, "updates")
        totals = [t for _, t in flatten_with_paths(state.total, is_leaf=lambda x: x is None)[0]]
        new = [t if t is None else t + u.astype(jnp.float32)
               for (_, _, u), t in zip(items, totals)]
        return updates, TrackAppliedUpdatesState(treedef.unflatten(new))

    return optax.GradientTransformation(init_fn, update_fn)


def applied_updates(opt_state: Any) -> Any:
    """The running sum of the first ``TrackAppliedUpdatesState`` inside ``opt_state`` (any
    nesting of optax states), or None when there is none."""
    found = []
    jax.tree.map(lambda n: found.append(n.total) if isinstance(n, TrackAppliedUpdatesState)
                 else None, opt_state,
                 is_leaf=lambda n: isinstance(n, TrackAppliedUpdatesState))
    return found[0] if found else None
