"""Protected singular subspaces of one matrix: exact thin SVD or a randomized range finder.

For ``W`` of shape ``(m, n)`` in the ``(in, out)`` layout, ``W = A S B^T`` with ``A`` (m x r)
spanning input space and ``B`` (n x r) output space, ``r = min(m, n)``. The protected subspaces
are ``span(A[:, :k])`` (input side) and ``span(B[:, :k])`` (output side). Everything runs in
float32 whatever the parameter dtype.

``weight_svds`` is the one routine that decomposes target leaves (a batch of matrices each,
read through their ``MatrixSpec``); the rank statistics, ``compute_bases``, analysis and
ablations all take its ``MatrixSVD``s.
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from asvd_jax._paths import flatten_with_paths
from asvd_jax._targets import MatrixSpec, target_specs

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


class MatrixSVD(NamedTuple):
    """Thin SVD of one target leaf, batch axes first: ``W[b] = input[b] diag(s[b]) output[b]^T``.

    ``input``: ``(*batch, m, r)`` input-side singular vectors (the columns a
    ``SubspaceBasis.input`` is cut from); ``singular_values``: ``(*batch, r)``, descending;
    ``output``: ``(*batch, n, r)``; ``r = min(m, n)`` for the ``(m, n)`` matrix view of the
    leaf's ``MatrixSpec``.
    """

    input: jax.Array
    singular_values: jax.Array
    output: jax.Array

    def check(self, path: str, shape: Sequence[int], spec: MatrixSpec) -> None:
        """ValueError naming ``path`` unless this is the SVD of a leaf of ``shape`` read
        through ``spec`` (resolved)."""
        batch, m, n = spec.matrix_shape(shape)
        r = min(m, n)
        want = {"input": batch + (m, r), "singular_values": batch + (r,),
                "output": batch + (n, r)}
        for name, expected in want.items():
            got = tuple(np.shape(getattr(self, name)))
            if got != expected:
                raise ValueError(f"svds[{path!r}].{name}: expected shape {expected}, got {got}")


def leaf_matrices(path: str, leaf: Any, spec: MatrixSpec) -> tuple[np.ndarray, MatrixSpec]:
    """Host float32 ``(batch size, m, n)`` matrices of a target leaf and its resolved spec.

    Host copy first: SVDs of mesh-sharded arrays run as slow collectives (measured ~80x slower
    on fake CPU devices, and they can deadlock between tasks; jax-notes.md). ValueError naming
    ``path`` for a non-finite weight: an SVD of NaN/Inf gives all-NaN bases (LAPACK may only
    print a warning), and every later update of the matrix would be NaN.
    """
    spec = spec.resolve(np.ndim(leaf), path)
    _, m, n = spec.matrix_shape(np.shape(leaf))
    host = np.asarray(jax.device_get(leaf), dtype=np.float32)
    if not np.isfinite(host).all():
        bad = int(np.size(host) - np.isfinite(host).sum())
        raise ValueError(f"{path}: weight has {bad} non-finite value(s) (NaN or Inf); "
                         "cannot compute its singular bases")
    return np.asarray(spec.to_matrix(jnp.asarray(host))).reshape(-1, m, n), spec


def weight_svds(params: Any, targets: Any) -> dict[str, MatrixSVD]:
    """Exact thin float32 SVD of every target matrix, host side: ``{path: MatrixSVD}``.

    One ``exact_svd`` per matrix (per batch index of a stacked leaf; on CPU a batched SVD was
    measured slower). A task boundary computes them once and hands them to
    ``asvd_jax.ranks.collect_statistics(svds=...)`` and ``compute_bases(svds=...)``.

    Args:
      params: the weights (dict or ``nnx.State``).
      targets: anything ``list_targets`` reads (``select_targets``' tree, ``{path:
        MatrixSpec}``, or a list of paths of plain ``(in, out)`` kernels).
    """
    leaves = dict(flatten_with_paths(params)[0])
    specs = target_specs(targets)
    out = {}
    for path, spec in specs.items():
        if path not in leaves:
            raise ValueError(f"targets: no parameter at path {path!r}")
        mats, spec = leaf_matrices(path, leaves[path], spec)
        batch, m, n = spec.matrix_shape(np.shape(leaves[path]))
        r = min(m, n)
        parts = [exact_svd(jnp.asarray(mat)) for mat in mats]
        out[path] = MatrixSVD(
            input=jnp.stack([a for a, _, _ in parts]).reshape(batch + (m, r)),
            singular_values=jnp.stack([s for _, s, _ in parts]).reshape(batch + (r,)),
            output=jnp.stack([b for _, _, b in parts]).reshape(batch + (n, r)))
    return out

