"""Principal angles and overlap between subspaces given by spanning columns.

For subspaces span(A) and span(B) of R^n with orthonormal bases Q_A (n x p), Q_B (n x q), the
principal angles 0 <= theta_1 <= ... <= theta_m <= pi/2, m = min(p, q), satisfy
cos theta_i = sigma_i(Q_A^T Q_B) (Bjorck & Golub 1973). The cosine is flat near 0, so small
angles are taken from the sines instead: sin theta_i are the singular values of the smaller
basis with the larger subspace projected out, (I - Q_A Q_A^T) Q_B for q <= p (Knyazev &
Argentati 2002). Each angle uses whichever of the two is better conditioned (cos^2 >= 1/2:
arcsin of the sine; else arccos of the cosine).

The overlap is the mean squared cosine, ||Q_A^T Q_B||_F^2 / m, in [0, 1]: 1 when the smaller
subspace lies inside the larger, 0 when they are orthogonal.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def orthonormal_basis(a: Any, *, name: str = "A") -> np.ndarray:
    """Orthonormal float64 basis of the column span of ``a`` (n x p), dropping dependent columns.

    Uses the SVD rather than QR so that rank-deficient inputs give a basis of the true span
    (the tolerance is numpy's matrix_rank default, max(n, p) * eps * sigma_max).
    """
    a = np.asarray(a, dtype=np.float64)
    if a.ndim == 1:
        a = a[:, None]
    if a.ndim != 2:
        raise ValueError(f"{name}: expected an (n, k) matrix of spanning columns, got shape {a.shape}")
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{name}: contains NaN or Inf")
    if a.shape[1] == 0:
        return a
    u, s, _ = np.linalg.svd(a, full_matrices=False)
    tol = (s[0] if s.size else 0.0) * max(a.shape) * np.finfo(np.float64).eps
    return u[:, s > tol]


def principal_angles(a: Any, b: Any) -> np.ndarray:
    """Principal angles (radians, ascending, float64) between span(a) and span(b).

    Args:
      a: (n, p) matrix whose columns span the first subspace (need not be orthonormal).
      b: (n, q) matrix whose columns span the second subspace.

    Returns:
      ``min(rank a, rank b)`` angles in [0, pi/2], smallest first.
    """
    qa = orthonormal_basis(a, name="principal_angles: a")
    qb = orthonormal_basis(b, name="principal_angles: b")
    if qa.shape[0] != qb.shape[0]:
        raise ValueError(
            f"principal_angles: a and b live in different spaces (rows {qa.shape[0]} vs {qb.shape[0]})"
        )
    m = min(qa.shape[1], qb.shape[1])
    if m == 0:
        return np.zeros((0,))
    cross = qa.T @ qb
    cosines = np.clip(np.linalg.svd(cross, compute_uv=False)[:m], 0.0, 1.0)  # descending
    # Residual of the smaller basis after removing the larger subspace: its singular values
    # are the sines of the same m angles.
    if qb.shape[1] <= qa.shape[1]:
        residual = qb - qa @ cross
    else:
        residual = qa - qb @ cross.T
    sines = np.clip(np.sort(np.linalg.svd(residual, compute_uv=False)[:m]), 0.0, 1.0)  # ascending
    angles = np.where(cosines**2 >= 0.5, np.arcsin(sines), np.arccos(cosines))
    return np.sort(angles)


def subspace_overlap(a: Any, b: Any) -> float:
    """Mean squared cosine of the principal angles, ||Q_a^T Q_b||_F^2 / min(p, q), in [0, 1].

    An empty subspace on either side gives 0.
    """
    angles = principal_angles(a, b)
    return float(np.mean(np.cos(angles) ** 2)) if angles.size else 0.0
