"""How much of a weight change lies in the protected subspace.

For a delta ``D`` (e.g. params now minus params at task start) and the projection ``Pi`` of a
mode, the leakage of one matrix is ``||D - Pi(D)||_F / ||D||_F``: 0 when the change avoids the
protected subspace entirely, 1 when it lies entirely inside it. One projection per matrix
(four thin products), so it is cheap enough to log every few steps, under jit or not.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from asvd_jax._bases import align, leaf_array
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
