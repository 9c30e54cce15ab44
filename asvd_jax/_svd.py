"""Protected singular subspaces of one matrix: exact thin SVD or a randomized range finder.

For ``W`` of shape ``(m, n)`` in the ``(in, out)`` layout, ``W = A S B^T`` with ``A`` (m x r)
spanning input space and ``B`` (n x r) output space, ``r = min(m, n)``. The protected subspaces
are ``span(A[:, :k])`` (input side) and ``span(B[:, :k])`` (output side). Everything runs in
float32 whatever the parameter dtype.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

_HIGHEST = jax.lax.Precision.HIGHEST


@jax.jit
def exact_svd(mat: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Thin SVD ``(A, s, B)`` of a float32 ``(m, n)`` matrix, ``mat = A diag(s) B^T``."""
    a, s, bt = jnp.linalg.svd(mat.astype(jnp.float32), full_matrices=False)
    return a, s, bt.T


@functools.partial(jax.jit, static_argnames=("k", "oversample", "power_iters"))
def randomized_svd(
    mat: jax.Array, key: jax.Array, k: int, oversample: int = 10, power_iters: int = 2
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Approximate top-``k`` singular triplets ``(A_k, s_k, B_k)`` (Halko, Martinsson, Tropp 2011).

    Range finder: ``Q = orth(M Omega)`` with a Gaussian ``Omega`` of ``k + oversample``
    columns, refined by ``power_iters`` rounds of ``Q <- orth(M orth(M^T Q))`` (re-orthonormalised
    each half step so that float32 keeps the small directions); then the exact SVD of the small
    ``Q^T M``. Its error falls with the spectral gap ``(s_{k+p} / s_k)^(2 q + 1)``.
    """
    mat = mat.astype(jnp.float32)
    m, n = mat.shape
    width = min(k + oversample, m, n)
    omega = jax.random.normal(key, (n, width), jnp.float32)
    q, _ = jnp.linalg.qr(jnp.matmul(mat, omega, precision=_HIGHEST))
    for _ in range(power_iters):
        z, _ = jnp.linalg.qr(jnp.matmul(mat.T, q, precision=_HIGHEST))
        q, _ = jnp.linalg.qr(jnp.matmul(mat, z, precision=_HIGHEST))
    small = jnp.matmul(q.T, mat, precision=_HIGHEST)
    a_small, s, bt = jnp.linalg.svd(small, full_matrices=False)
    a = jnp.matmul(q, a_small, precision=_HIGHEST)
    return a[:, :k], s[:k], bt[:k].T


@functools.partial(jax.jit, static_argnames=("k",))
def orthogonal_complement(basis: jax.Array, k: int) -> jax.Array:
    """Orthonormal ``(d, d - k)`` complement of the first ``k`` columns of ``basis`` (d x >= k)."""
    q, _ = jnp.linalg.qr(basis[:, :k], mode="complete")
    return q[:, k:]
