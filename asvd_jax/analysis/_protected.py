"""Protected subspaces across tasks: how they move, and how much weight change lands in them.

Bases are the core's ``SubspaceBasis`` pytrees (``asvd_jax.compute_bases``). A side stored as a
complement C spans the *allowed* directions; the protected subspace is then its orthogonal
complement in R^d. Zero columns (padding of stacked leaves with different k) span nothing.

* angles between the protected subspaces of two tasks: principal angles (``principal_angles``)
  per target and side. The method recomputes the SVD of the merged weights at every task, so
  small angles mean the protected directions of task t are (nearly) those of task t-1.
* weight change in the protected subspace: for a task's change Delta = W_end - W_start and
  the bases the task trained under, ||Delta - project(Delta)||_F / ||Delta||_F, with the
  core's projection of the chosen mode. It is ~1e-6 (float32 rounding) for this method, and
  large for plain fine-tuning measured against the same bases.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from asvd_jax._paths import flatten_with_paths
from asvd_jax.analysis._subspaces import orthonormal_basis, principal_angles

_SIDES = ("input", "output")


def _is_basis(x: Any) -> bool:
    # Duck-typed on the core's SubspaceBasis fields.
    return hasattr(x, "input") and hasattr(x, "output") and hasattr(x, "input_is_complement")


def _bases_by_path(bases: Any, name: str) -> dict[str, Any]:
    leaves = flatten_with_paths(bases, is_leaf=lambda x: x is None or _is_basis(x))[0]
    out = {p: b for p, b in leaves if b is not None}
    if not out:
        raise ValueError(f"{name}: no SubspaceBasis leaves found")
    bad = [p for p, b in out.items() if not _is_basis(b)]
    if bad:
        raise TypeError(f"{name}: expected SubspaceBasis or None at every leaf, got something else at {bad[:3]}")
    return out


def protected_columns(basis: Any, side: str) -> list[np.ndarray]:
    """Orthonormal float64 bases of the protected subspace on ``side``, one per stacked matrix.

    Returns a list over the flattened batch axes of (d, k_b) arrays.
    """
    if side not in _SIDES:
        raise ValueError(f"side must be 'input' or 'output', got {side!r}")
    cols = np.asarray(getattr(basis, side), dtype=np.float64)
    complement = getattr(basis, f"{side}_is_complement")
    d = cols.shape[-2]
    out = []
    for c in cols.reshape(-1, d, cols.shape[-1]):
        q = orthonormal_basis(c, name=f"{side} basis")
        if complement:
            # Orthogonal complement of the allowed span within R^d.
            u = np.linalg.svd(q, full_matrices=True)[0] if q.shape[1] else np.eye(d)
            q = u[:, q.shape[1]:]
        out.append(q)
    return out


def protected_subspace_angles(bases_a: Any, bases_b: Any, side: str = "input") -> dict[str, np.ndarray]:
    """Principal angles (radians, ascending) between the protected subspaces of two bases trees.

    Args:
      bases_a, bases_b: ``SubspaceBasis`` pytrees for the same targets (e.g. tasks t-1 and t).
      side: ``"input"`` or ``"output"``.

    Returns:
      ``{path: angles}``: shape (n,) for a plain matrix, (*batch, n) for a stacked leaf with
      NaN padding where a batch index has fewer angles; n = the largest min(k_a, k_b).
    """
    a, b = _bases_by_path(bases_a, "bases_a"), _bases_by_path(bases_b, "bases_b")
    if set(a) != set(b):
        only = sorted(set(a) ^ set(b))
        raise ValueError(f"protected_subspace_angles: targets differ between the two bases: {only[:5]}")
    out = {}
    for path in a:
        batch = tuple(np.shape(getattr(a[path], side))[:-2])
        cols_a, cols_b = protected_columns(a[path], side), protected_columns(b[path], side)
        if len(cols_a) != len(cols_b) or cols_a[0].shape[0] != cols_b[0].shape[0]:
            raise ValueError(f"{path}: the two bases belong to matrices of different shapes")
        angles = [principal_angles(x, y) for x, y in zip(cols_a, cols_b)]
        width = max((len(t) for t in angles), default=0)
        padded = np.full((len(angles), width), np.nan)
        for i, t in enumerate(angles):
            padded[i, : len(t)] = t
        out[path] = padded.reshape(batch + (width,))
    return out


def protected_subspace_overlap(bases_a: Any, bases_b: Any, side: str = "input") -> dict[str, Any]:
    """Mean squared cosine of ``protected_subspace_angles`` per target (per stacked matrix).

    1 means the smaller protected subspace lies in the larger one; 0 means orthogonal (or an
    empty protected subspace on either side).
    """
    out = {}
    for path, angles in protected_subspace_angles(bases_a, bases_b, side).items():
        cos2 = np.cos(angles) ** 2
        count = np.sum(~np.isnan(angles), axis=-1)
        total = np.nansum(cos2, axis=-1)
        val = np.where(count > 0, total / np.maximum(count, 1), 0.0)
        out[path] = float(val) if np.ndim(val) == 0 else val
    return out


def weight_change_in_protected(delta: Any, bases: Any, mode: str = "strict") -> dict[str, Any]:
    """Fraction of each target's weight change that lies in its protected subspace.

    ``||Delta - project(Delta, basis, mode)||_F / ||Delta||_F`` per target (per stacked matrix,
    as an array over the batch axes); 0 where Delta is zero.

    Args:
      delta: pytree like the params, e.g. ``jax.tree.map(jnp.subtract, after, before)``.
      bases: the ``SubspaceBasis`` pytree the task trained under.
      mode: projection mode, as in ``asvd_jax.project``.
    """
    # The core's leakage diagnostic runs the same projection code as the optimizer.
    from asvd_jax._diagnostics import protected_leakage

    out = {}
    for path, frac in protected_leakage(delta, bases, mode).items():
        frac = np.asarray(frac, np.float64)
        out[path] = float(frac) if frac.ndim == 0 else frac
    return out
