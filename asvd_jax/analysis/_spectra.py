"""Singular spectra of weight matrices, and two scalar summaries of a spectrum.

For a matrix W with singular values s_1 >= ... >= s_m >= 0 (m = min(d_in, d_out)):

* effective rank (Roy & Vetterli, 2007): p_i = s_i / sum_j s_j, H = -sum_i p_i log p_i,
  erank = exp(H). It lies in [1, rank(W)]: 1 for a rank-one matrix, m when all s_i are equal.
* stable rank: ||W||_F^2 / ||W||_2^2 = sum_i s_i^2 / s_1^2, also in [1, rank(W)], and
  insensitive to the many tiny singular values that quantisation noise adds.
* energy rank at tau: the smallest k with sum_{i<=k} s_i^2 >= tau * sum_i s_i^2.

Everything is computed host-side in float64 numpy: these are analysis numbers, not training
steps, and float64 keeps the small tail of a spectrum meaningful.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

import numpy as np

from asvd_jax import MatrixSpec, flatten_with_paths, list_targets


def as_matrices(leaf: Any, spec: MatrixSpec | None = None, *, name: str = "matrix") -> np.ndarray:
    """``leaf`` regrouped as float64 matrices of shape (*batch, d_in, d_out).

    ``spec``: the leaf's ``MatrixSpec`` (every other axis is a batch axis, e.g. scan-stacked
    layers). Without a spec, ``leaf`` must be 2-D and is read in the Flax (in, out) layout.
    """
    arr = np.asarray(leaf, dtype=np.float64)
    if spec is None:
        if arr.ndim != 2:
            raise ValueError(
                f"{name}: a {arr.ndim}-D array needs a MatrixSpec saying which axes are input "
                f"and output (shape {arr.shape})"
            )
        return arr
    if not isinstance(spec, MatrixSpec):
        raise TypeError(f"{name}: spec must be an asvd_jax.MatrixSpec, got {type(spec).__name__}")
    return spec.resolve(arr.ndim, name).to_matrix(arr)


def singular_spectrum(matrix: Any, spec: Any = None) -> np.ndarray:
    """Singular values of ``matrix`` in descending order, float64, shape (*batch, min dim).

    Args:
      matrix: a 2-D array in any layout (singular values do not depend on it), or an N-D
        leaf with ``spec`` (a MatrixSpec-like object) grouping its axes.
      spec: optional MatrixSpec; other axes are batch axes.
    """
    mats = as_matrices(matrix, spec)
    if not np.all(np.isfinite(mats)):
        raise ValueError("singular_spectrum: matrix contains NaN or Inf")
    return np.linalg.svd(mats, compute_uv=False)


def _check_spectrum(s: Any, fn: str) -> np.ndarray:
    s = np.asarray(s, dtype=np.float64)
    if s.ndim == 0:
        raise ValueError(f"{fn}: expected singular values along the last axis, got a scalar")
    if np.any(s < 0) or not np.all(np.isfinite(s)):
        raise ValueError(f"{fn}: singular values must be finite and >= 0")
    return s


def effective_rank(singular_values: Any) -> np.ndarray | float:
    """Entropy effective rank exp(-sum p_i log p_i), p_i = s_i / sum s (Roy & Vetterli 2007).

    Reduces the last axis. An all-zero spectrum (a zero matrix) has effective rank 0.
    """
    s = _check_spectrum(singular_values, "effective_rank")
    total = s.sum(axis=-1, keepdims=True)
    safe_total = np.where(total > 0, total, 1.0)
    p = s / safe_total
    # 0 log 0 = 0: zero singular values carry no mass.
    plogp = np.where(p > 0, p * np.log(np.where(p > 0, p, 1.0)), 0.0)
    erank = np.exp(-plogp.sum(axis=-1))
    erank = np.where(total[..., 0] > 0, erank, 0.0)
    return float(erank) if erank.ndim == 0 else erank


def stable_rank(singular_values: Any) -> np.ndarray | float:
    """Stable rank sum s_i^2 / max s_i^2 = ||W||_F^2 / ||W||_2^2. Reduces the last axis.

    An all-zero spectrum has stable rank 0.
    """
    s = _check_spectrum(singular_values, "stable_rank")
    top = s.max(axis=-1)
    srank = np.where(top > 0, (s**2).sum(axis=-1) / np.where(top > 0, top, 1.0) ** 2, 0.0)
    return float(srank) if srank.ndim == 0 else srank


def energy_rank(singular_values: Any, tau: float) -> np.ndarray | int:
    """Smallest k with sum_{i<=k} s_i^2 >= tau * sum s_i^2 (s sorted descending). Last axis.

    tau in [0, 1]; tau = 0 gives 0. A zero spectrum gives 0.
    """
    if not 0.0 <= tau <= 1.0:
        raise ValueError(f"energy_rank: tau must lie in [0, 1], got {tau}")
    s = _check_spectrum(singular_values, "energy_rank")
    e = np.sort(s, axis=-1)[..., ::-1] ** 2
    cum = np.cumsum(e, axis=-1)
    total = cum[..., -1:]
    # Relative slack so that tau = 1 is reached despite rounding in the cumulative sum.
    reached = cum >= tau * total * (1.0 - 1e-12)
    k = np.where(total[..., 0] > 0, np.argmax(reached, axis=-1) + 1, 0)
    k = np.where(tau == 0.0, 0, k)
    return int(k) if np.ndim(k) == 0 else k


@dataclasses.dataclass(frozen=True)
class MatrixSpectrum:
    """The spectrum of one target leaf (a stack of matrices for scan-stacked layers)."""

    path: str
    """Parameter path of the leaf, e.g. ``layers/3/mlp/down_proj/kernel``."""
    d_in: int
    """Input dimension of each matrix."""
    d_out: int
    """Output dimension of each matrix."""
    singular_values: np.ndarray
    """float64, descending, shape (*batch, min(d_in, d_out))."""

    @property
    def min_dim(self) -> int:
        return min(self.d_in, self.d_out)

    @property
    def effective_rank(self) -> np.ndarray | float:
        return effective_rank(self.singular_values)

    @property
    def stable_rank(self) -> np.ndarray | float:
        return stable_rank(self.singular_values)

    def energy_rank(self, tau: float) -> np.ndarray | int:
        return energy_rank(self.singular_values, tau)


def _is_float_matrix(leaf: Any) -> bool:
    dtype = getattr(leaf, "dtype", None)
    # bfloat16 is an ml_dtypes type that numpy does not count as floating.
    return np.ndim(leaf) == 2 and dtype is not None and (
        np.dtype(dtype).kind == "f" or np.dtype(dtype).name == "bfloat16")


def _target_specs(params: Any, targets: Any, fn: str) -> dict[str, MatrixSpec | None]:
    """{path: spec or None (a plain 2-D matrix)}: every floating 2-D leaf for None, the mapping
    itself for ``{path: MatrixSpec or None}``, else the core's ``list_targets``."""
    leaves = dict(flatten_with_paths(params)[0])
    if targets is None:
        specs = {p: None for p, leaf in leaves.items() if _is_float_matrix(leaf)}
    elif isinstance(targets, Mapping) and all(
        isinstance(k, str) and (v is None or isinstance(v, MatrixSpec)) for k, v in targets.items()
    ):
        specs = dict(targets)
    else:
        specs = dict(list_targets(targets))
    missing = [p for p in specs if p not in leaves]
    if missing:
        raise ValueError(f"{fn}: target paths not in params: {missing[:5]}")
    if not specs:
        raise ValueError(f"{fn}: no target matrices selected")
    return specs


def spectra_table(params: Any, targets: Any = None) -> dict[str, MatrixSpectrum]:
    """Singular spectrum of every target matrix of ``params``, keyed by parameter path.

    Args:
      params: a pytree of arrays (dict, ``nnx.State``, ...).
      targets: which leaves, and how to read them: a pytree like ``params`` with a
        MatrixSpec at each target and ``None`` elsewhere (``asvd_jax.select_targets``), a
        mapping ``{path: MatrixSpec or None}``, or ``None`` for every floating 2-D leaf in the
        Flax (in, out) layout.

    Returns:
      ``{path: MatrixSpectrum}`` in leaf order.
    """
    leaves = dict(flatten_with_paths(params)[0])
    table = {}
    for path, spec in _target_specs(params, targets, "spectra_table").items():
        mats = as_matrices(leaves[path], spec, name=path)
        if not np.all(np.isfinite(mats)):
            raise ValueError(f"spectra_table: {path} contains NaN or Inf")
        table[path] = MatrixSpectrum(
            path=path,
            d_in=mats.shape[-2],
            d_out=mats.shape[-1],
            singular_values=np.linalg.svd(mats, compute_uv=False),
        )
    return table
