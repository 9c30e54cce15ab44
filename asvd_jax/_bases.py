"""Protected singular bases of every target matrix, as a pytree that mirrors the params.

For a target ``W = A S B^T`` (``(in, out)`` layout, ``r = min(m, n)``) and rank ``k``, the
protected subspaces are ``span(A_k)`` on the input side and ``span(B_k)`` on the output side.
A side whose dimension is ``r`` is *complete*: there ``I - A_k A_k^T = A_rest A_rest^T`` with
``A_rest = A[:, k:r]``, so the smaller of basis (``k`` columns) and complement (``r - k``
columns) is stored. ``k = 0`` protects nothing; ``k = r`` freezes the matrix (the complete
side's complement is empty).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from asvd_jax._paths import flatten_with_paths
from asvd_jax._svd import (
    MatrixSVD,
    exact_svd,
    leaf_matrices,
    orthogonal_complement,
    randomized_svd,
)
from asvd_jax._targets import MatrixSpec, is_floating, is_spec_or_none


@jax.tree_util.register_pytree_node_class
@dataclasses.dataclass(frozen=True)
class SubspaceBasis:
    """Orthonormal columns describing one target's protected subspaces (float32).

    ``input``: ``(*batch, m, w_in)``, ``output``: ``(*batch, n, w_out)``. When
    ``input_is_complement`` the columns span the *allowed* input subspace (``I - P_in = C C^T``),
    otherwise the protected one (``P_in = B B^T``); likewise for the output side. Stacked leaves
    with a different ``k`` per batch index pad with zero columns, which change no projector.
    The arrays are pytree children; ``spec`` and the two flags are static.
    """

    input: jax.Array
    output: jax.Array
    spec: MatrixSpec
    input_is_complement: bool = False
    output_is_complement: bool = False

    def tree_flatten(self):
        return (self.input, self.output), (self.spec, self.input_is_complement,
                                           self.output_is_complement)

    @classmethod
    def tree_unflatten(cls, aux, children):
        return cls(children[0], children[1], *aux)

    def leaf_shape(self) -> tuple[tuple[int, ...], int, int]:
        """(batch shape, m, n) of the matrices this basis belongs to."""
        return tuple(self.input.shape[:-2]), self.input.shape[-2], self.output.shape[-2]


def is_basis_or_none(x: Any) -> bool:
    return x is None or isinstance(x, SubspaceBasis)


def leaf_array(sub: Any) -> Any:
    """The array at a target: ``sub`` itself, or the single array inside a wrapper node (an
    ``nnx.Param`` in an ``nnx.State`` matched against bases without Variables)."""
    leaves = jax.tree.leaves(sub)
    return leaves[0] if len(leaves) == 1 and leaves[0] is not sub else sub


def align(bases: Any, tree: Any, what: str) -> tuple[list[tuple[str, Any, Any]], Any]:
    """``[(path, basis or None, subtree of tree)]`` and the treedef to rebuild ``tree`` with.

    ``tree`` must have the bases' structure down to each bases leaf (e.g. the params, or the
    updates, a dict or an ``nnx.State``). Failing that, leaves are matched by path string, so
    bases built from an ``nnx.State`` with Variables also fit its pure (Variable-free) form.
    ValueError naming a path when neither works.
    """
    b_leaves, b_def = flatten_with_paths(bases, is_leaf=is_basis_or_none)
    try:
        subtrees = b_def.flatten_up_to(tree)
        return [(p, b, s) for (p, b), s in zip(b_leaves, subtrees)], b_def
    except (ValueError, TypeError):
        pass
    t_leaves, t_def = flatten_with_paths(tree)
    by_path = dict(b_leaves)
    t_paths = {p for p, _ in t_leaves}
    extra = [p for p, _ in t_leaves if p not in by_path]
    missing = [p for p, _ in b_leaves if p not in t_paths]
    if extra or missing or len(by_path) != len(b_leaves):
        where = (f"{what} leaf {extra[0]!r} has no bases entry" if extra else
                 f"bases entry {missing[0]!r} has no {what} leaf" if missing else
                 "bases paths are not unique")
        raise ValueError(f"bases and {what} have different structures: {where}")
    return [(p, by_path[p], leaf) for p, leaf in t_leaves], t_def


def _normalize_ranks(ranks: Any, target_paths: Sequence[str], params: Any) -> dict[str, Any]:
    """{path: int | array of ints} for every target, from a mapping or a params-like pytree."""
    def is_rank_leaf(x):
        return x is None or isinstance(x, (int, np.integer, list, tuple, np.ndarray))

    # A flat {path: rank} mapping and a params-like tree of ranks agree where both readings
    # apply (a flat params dict), so a mapping whose values are all ranks is read by path.
    if isinstance(ranks, Mapping) and all(isinstance(v, (int, np.integer, list, tuple,
                                                         np.ndarray)) for v in ranks.values()):
        mapping = {str(k): v for k, v in ranks.items()}
    else:
        leaves, _ = flatten_with_paths(ranks, is_leaf=is_rank_leaf)
        mapping = {p: r for p, r in leaves if r is not None}
    targets = set(target_paths)
    stray = [p for p in mapping if p not in targets]
    if stray:
        raise ValueError(f"ranks given for non-target path(s) {stray}")
    missing = [p for p in target_paths if p not in mapping]
    if missing:
        raise ValueError(f"no rank for target path(s) {missing} (give 0 to protect nothing)")
    return mapping


def _rank_array(path: str, rank: Any, batch: tuple[int, ...], r: int) -> np.ndarray:
    arr = np.asarray(rank)
    if not np.issubdtype(arr.dtype, np.integer):
        raise TypeError(f"{path}: rank must be an int or ints, got {rank!r}")
    if arr.ndim == 0:
        arr = np.broadcast_to(arr, batch)
    elif arr.size == math.prod(batch):
        arr = arr.reshape(batch)
    else:
        raise ValueError(f"{path}: {arr.size} ranks given for {math.prod(batch)} stacked "
                         f"matrices (batch shape {batch})")
    if arr.size and (arr.min() < 0 or arr.max() > r):
        raise ValueError(f"{path}: rank out of range 0..{r} (min dim): got {arr.ravel().tolist()}")
    return arr


def compute_bases(
    params: Any,
    ranks: Any,
    targets: Any,
    method: str = "exact",
    *,
    oversample: int = 10,
    power_iters: int = 2,
    seed: int = 0,
    fixed_layout: tuple[float, float] | None = None,
    svds: Mapping[str, MatrixSVD] | None = None,
) -> Any:
    """Pytree like ``params`` with a ``SubspaceBasis`` at each target and None elsewhere.

    Host side, outside jit: one float32 SVD per matrix (per batch index for stacked leaves).

    Args:
      params: the current weights (dict or ``nnx.State``).
      ranks: ``{path: k}`` (an int, or ints per batch index for stacked leaves), or a pytree
        like params with those at the targets. ``0 <= k <= min(m, n)``.
      targets: from ``select_targets(params)``.
      method: ``"exact"`` thin SVD, or ``"randomized"`` range finder (cheaper for small k).
      oversample, power_iters, seed: randomized range finder settings.
      fixed_layout: ``(lo, hi)`` fractions of ``min(m, n)`` that bound every rank of a run
        (e.g. the rank policy's floor and ceiling). Each side then stores, at a width fixed
        by ``(lo, hi)`` and the shape alone, the narrower of the basis padded to
        ``ceil(hi r)`` columns and the complement padded to ``r - floor(lo r)`` columns, so
        the bases of every task have the same shapes and storage flags and ``set_bases``
        does not retrace a jitted step. ``None`` (default): the exact width for these ranks
        (cheapest per step, but new ranks mean new shapes). A rank outside the range raises.
      svds: ``{path: MatrixSVD}`` from ``weight_svds(params, targets)`` when already computed
        (e.g. for the rank statistics): the bases are cut from them and no SVD runs here. The
        same numbers as ``method="exact"`` (``weight_svds`` is that SVD).
    """
    if method not in ("exact", "randomized"):
        raise ValueError(f"method must be 'exact' or 'randomized', got {method!r}")
    if svds is not None and method != "exact":
        raise ValueError("svds= holds exact SVDs: use it with method='exact' (the default)")
    if fixed_layout is not None:
        lo, hi = fixed_layout
        if not 0.0 <= lo <= hi <= 1.0:
            raise ValueError(f"fixed_layout must be (lo, hi) with 0 <= lo <= hi <= 1, got "
                             f"{fixed_layout!r}")
    t_leaves, t_def = flatten_with_paths(targets, is_leaf=is_spec_or_none)
    try:
        p_leaves = t_def.flatten_up_to(params)
    except (ValueError, TypeError):
        raise ValueError("targets and params have different structures") from None
    target_paths = [p for p, s in t_leaves if s is not None]
    rank_map = _normalize_ranks(ranks, target_paths, params)
    key = jax.random.key(seed)
    out = []
    for (path, spec), leaf in zip(t_leaves, p_leaves):
        if spec is None:
            out.append(None)
            continue
        if not is_floating(leaf):
            raise TypeError(f"{path}: target leaf must be floating, got dtype "
                            f"{getattr(leaf, 'dtype', type(leaf).__name__)}")
        key, sub = jax.random.split(key)
        svd = None
        if svds is not None:
            if path not in svds:
                raise ValueError(f"svds: no SVD for target {path!r}")
            svd = svds[path]
            if not isinstance(svd, MatrixSVD):
                raise TypeError(f"svds[{path!r}]: expected a MatrixSVD (from weight_svds), "
                                f"got {type(svd).__name__}")
            svd.check(path, leaf.shape, spec.resolve(leaf.ndim, path))
        out.append(_leaf_basis(path, leaf, spec, rank_map[path], method, sub,
                               oversample, power_iters, fixed_layout, svd))
    return t_def.unflatten(out)


def _leaf_basis(path, leaf, spec, rank, method, key, oversample, power_iters,
                fixed_layout=None, svd=None) -> SubspaceBasis:
    spec = spec.resolve(leaf.ndim, path)
    batch, m, n = spec.matrix_shape(leaf.shape)
    r = min(m, n)
    ks = _rank_array(path, rank, batch, r)
    k_max = int(ks.max()) if ks.size else 0
    k_min = int(ks.min()) if ks.size else 0
    if fixed_layout is not None:
        lo, hi = math.floor(fixed_layout[0] * r), math.ceil(fixed_layout[1] * r)
        if ks.size and (k_min < lo or k_max > hi):
            raise ValueError(f"{path}: rank(s) {ks.ravel().tolist()} outside the fixed layout's "
                             f"range {lo}..{hi} (fixed_layout={fixed_layout!r}, min dim {r})")
        # The layout depends on the range, not on these ranks: same shapes every task.
        k_min, k_max = lo, hi
    # Stacked leaves share one storage form; pick the narrower padded width per complete side.
    in_comp = m == r and (r - k_min) < k_max
    out_comp = n == r and (r - k_min) < k_max
    w_in = r - k_min if in_comp else k_max
    w_out = r - k_min if out_comp else k_max
    if svd is None:
        mats, _ = leaf_matrices(path, leaf, spec)
    else:
        ins_all = jnp.asarray(svd.input, jnp.float32).reshape(-1, m, r)
        outs_all = jnp.asarray(svd.output, jnp.float32).reshape(-1, n, r)
    ins, outs = [], []
    for i, k in enumerate(ks.ravel().tolist()):
        if k == 0:  # nothing protected (and a complement is never stored when some k is 0)
            ins.append(jnp.zeros((m, w_in), jnp.float32))  # nothing protected: no SVD needed
            outs.append(jnp.zeros((n, w_out), jnp.float32))
            continue
        if svd is not None:
            a, b = ins_all[i], outs_all[i]
        else:
            a, b = _side_bases(mats[i], k, method, jax.random.fold_in(key, i), oversample,
                               power_iters)
        ins.append(_side(a, k, r, in_comp, w_in, m))
        outs.append(_side(b, k, r, out_comp, w_out, n))
    stack_in = jnp.stack(ins).reshape(batch + (m, w_in)) if ins else jnp.zeros(batch + (m, w_in))
    stack_out = (jnp.stack(outs).reshape(batch + (n, w_out)) if outs
                 else jnp.zeros(batch + (n, w_out)))
    return SubspaceBasis(stack_in, stack_out, spec, in_comp, out_comp)


def _reorthonormalize(cols):
    """The columns made orthonormal in float64, then rounded to float32.

    A float32 SVD returns singular vectors orthonormal only to ~1e-6 (|V^T V - I| 0.7-1.3e-6
    on a 64-128-32 MLP, 5e-6 at 4096 x 3276). The projector ``I - V V^T`` built from them then
    leaves ~1e-6 of each update in the protected span, with the same sign step after step, so
    it adds up: the protected share of W_t - W_0 after 1000 AdamW steps (lr 1e-2) was 1.4e-5.
    Re-orthonormalised columns are orthonormal to float32 rounding (~1e-8) and that share is
    8e-7 (``benchmarks/projection_options.py --only bf16``; docs/core.md).

    Nearly orthonormal columns (the SVD's) take one Newton-Schulz step in float64,
    V (3 I - V^T V) / 2, which squares the error and stays within their span; it costs two
    n x w x w products, 2-3x less than a Householder QR of the same columns (measured 0.49 s
    against 1.29 s at 4096 x 820). Columns further from orthonormal (never seen from the SVD)
    get the QR, each column's sign kept.
    """
    if cols.shape[-1] == 0:
        return cols
    v = np.asarray(cols, np.float64)
    err = v.T @ v
    err[np.diag_indices_from(err)] -= 1.0
    if np.abs(err).max() < 1e-4:
        q = v - 0.5 * (v @ err)
    else:
        q, r = np.linalg.qr(v)
        q = q * np.where(np.diagonal(r) < 0, -1.0, 1.0)
    return jnp.asarray(q, jnp.float32)


def _side_bases(mat, k, method, key, oversample, power_iters):
    """Input- and output-side singular vectors: all r of them (exact) or the top k."""
    if method == "exact":
        a, _, b = exact_svd(jnp.asarray(mat))
        return a, b
    a, _, b = randomized_svd(jnp.asarray(mat), key, k, oversample, power_iters)
    return a, b


def _side(vectors, k, r, complement, width, dim):
    """Stored columns for one side and one matrix, zero-padded to ``width``."""
    if complement:
        cols = vectors[:, k:r] if vectors.shape[1] == r else orthogonal_complement(vectors, k)
    else:
        cols = vectors[:, :k]
    cols = _reorthonormalize(cols)
    pad = width - cols.shape[1]
    return jnp.pad(cols, ((0, 0), (0, pad))) if pad else cols
