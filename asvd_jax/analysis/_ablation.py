"""Low-rank ablation: replace chosen matrices by their best rank-k approximation.

For a matrix K = sum_i s_i a_i b_i^T (s descending), the rank-k truncation
K_k = sum_{i<=k} s_i a_i b_i^T is the closest rank-k matrix in Frobenius and spectral norm
(Eckart-Young), with ||K - K_k||_F^2 = sum_{i>k} s_i^2. Watching a task's loss as the matrices
of one layer type lose their low directions shows how much of the pretrained function lives
there: the room the method leaves for new tasks.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from asvd_jax._paths import flatten_with_paths


def matrix_type_paths(params: Any, kind: str) -> list[str]:
    """Paths of every leaf whose path, without a trailing ``kernel``/``weight``, ends in
    ``kind`` after a layer index (e.g. ``mlp/down_proj`` -> ``layers/<i>/mlp/down_proj/kernel``)."""
    from asvd_jax.analysis._tables import split_path

    paths = [p for p, _ in flatten_with_paths(params)[0] if split_path(p)[1] == kind]
    if not paths:
        raise ValueError(f"matrix_type_paths: no parameter of type {kind!r}")
    return paths


def truncate_ranks(params: Any, ranks: Mapping[str, Any], *, targets: Any = None,
                   svds: Mapping[str, Any] | None = None) -> Any:
    """``params`` with each matrix in ``ranks`` replaced by its rank-k truncation.

    Args:
      params: pytree of arrays (dict or ``nnx.State``); other leaves are returned as they are.
      ranks: ``{path: k}``, an int or one int per stack entry, 0 <= k <= min(d_in, d_out).
      targets: how to read the leaves as matrices (a targets tree or ``{path: MatrixSpec}``,
        as ``asvd_jax.list_targets`` reads them); default: every path in ``ranks`` is a Flax
        (in, out) kernel, leading axes are stack axes.
      svds: ``asvd_jax.weight_svds(params, targets)`` when already computed, so that
        sweeping k costs no new SVD.

    Returns:
      A pytree like ``params``; truncated leaves keep their shape and dtype (computed in
      float32).
    """
    import jax.numpy as jnp

    from asvd_jax import list_targets, weight_svds

    if not ranks:
        raise ValueError("truncate_ranks: no ranks given")
    specs = dict(list_targets(list(ranks) if targets is None else targets))
    leaves, treedef = flatten_with_paths(params)
    by_path = dict(leaves)
    unknown = [p for p in ranks if p not in by_path or p not in specs]
    if unknown:
        raise ValueError(f"truncate_ranks: paths not among the params' targets: {unknown[:5]}")
    if svds is None:
        svds = weight_svds(params, {p: specs[p] for p in ranks})
    out = []
    for path, leaf in leaves:
        if path not in ranks:
            out.append(leaf)
            continue
        if path not in svds:
            raise ValueError(f"truncate_ranks: svds has no entry for {path!r}")
        svd = svds[path]
        s = jnp.asarray(svd.singular_values, jnp.float32)
        r = s.shape[-1]
        k = np.asarray(ranks[path])
        if not np.issubdtype(k.dtype, np.integer):
            raise TypeError(f"truncate_ranks: {path}: rank must be an int or ints, got {ranks[path]!r}")
        k = np.broadcast_to(k, s.shape[:-1]) if k.ndim == 0 else k.reshape(s.shape[:-1])
        if k.size and (k.min() < 0 or k.max() > r):
            raise ValueError(f"truncate_ranks: {path}: k must lie in [0, {r}], got {k.ravel().tolist()}")
        keep = jnp.where(jnp.arange(r) < jnp.asarray(k)[..., None], s, 0.0)
        mat = jnp.einsum("...ir,...r,...or->...io", jnp.asarray(svd.input, jnp.float32), keep,
                         jnp.asarray(svd.output, jnp.float32),
                         precision="highest")
        spec = specs[path].resolve(np.ndim(leaf), path)
        out.append(spec.from_matrix(mat, np.shape(leaf)).astype(leaf.dtype))
    return treedef.unflatten(out)
