"""How strongly each singular direction of a matrix responds to a task's data.

Write a target kernel in the Flax layout, K (d_in x d_out), y = x K, as its SVD
K = sum_i s_i a_i b_i^T with input-side vectors a_i and output-side vectors b_i. On input x,
direction i contributes s_i (a_i . x) b_i to the output, of norm s_i |a_i . x|. Over the
task's tokens x_t (padding excluded) this module reports, per direction,

* ``"rms"``:  sqrt(mean_t (s_i a_i . x_t)^2) = s_i sqrt(a_i^T C a_i),  C = mean_t x_t x_t^T
* ``"mean"``: mean_t s_i |a_i . x_t|

The paper's figure on down-projection layers plots this against i: the low singular
directions produce almost no output on the tasks the model has learned, which is why
protecting only the top directions leaves room for a new task.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from asvd_jax.analysis._spectra import as_matrices


def _flat_tokens(inputs: Any, mask: Any, d_in: int) -> np.ndarray:
    x = np.asarray(inputs, dtype=np.float64)
    if x.shape[-1] != d_in:
        raise ValueError(f"output_norm_per_direction: inputs end in {x.shape[-1]}, kernel has d_in {d_in}")
    if mask is not None:
        m = np.asarray(mask).astype(bool)
        if m.shape != x.shape[:-1]:
            raise ValueError(
                f"output_norm_per_direction: mask shape {m.shape} does not match inputs {x.shape[:-1]}"
            )
        x = x[m]
    x = x.reshape(-1, d_in)
    if x.shape[0] == 0:
        raise ValueError("output_norm_per_direction: no tokens (empty inputs or all-zero mask)")
    return x


def output_norm_per_direction(
    kernel: Any,
    inputs: Any = None,
    *,
    mask: Any = None,
    second_moment: Any = None,
    spec: Any = None,
    reduce: str = "rms",
) -> tuple[np.ndarray, np.ndarray]:
    """Singular values of ``kernel`` and the output norm each direction produces on the data.

    Args:
      kernel: one matrix, (d_in, d_out) Flax layout, or any leaf with a MatrixSpec ``spec``
        that groups it into a single matrix (index a scan-stacked leaf first).
      inputs: the kernel's input activations, (..., d_in), e.g. captured (batch, seq, d_in).
      mask: optional boolean token mask shaped like ``inputs[..., 0]``; False entries
        (padding) are excluded.
      second_moment: instead of ``inputs``, the (d_in, d_in) matrix C = mean_t x_t x_t^T of
        the tokens (what activation statistics accumulate); only ``reduce="rms"`` can use it.
      spec: optional MatrixSpec for ``kernel``.
      reduce: ``"rms"`` or ``"mean"`` over tokens (see the module docstring).

    Returns:
      ``(singular_values, output_norms)``, both float64 of length min(d_in, d_out), in
      descending order of singular value.
    """
    if reduce not in ("rms", "mean"):
        raise ValueError(f"output_norm_per_direction: reduce must be 'rms' or 'mean', got {reduce!r}")
    if (inputs is None) == (second_moment is None):
        raise ValueError("output_norm_per_direction: pass exactly one of inputs and second_moment")
    k = as_matrices(kernel, spec, name="output_norm_per_direction: kernel")
    if k.ndim != 2:
        raise ValueError(
            f"output_norm_per_direction: kernel groups into a stack {k.shape}; index one matrix first"
        )
    d_in = k.shape[0]
    a, s, _ = np.linalg.svd(k, full_matrices=False)  # a: (d_in, m) input-side vectors
    if second_moment is not None:
        if reduce != "rms":
            raise ValueError("output_norm_per_direction: a second moment only gives reduce='rms'")
        c = np.asarray(second_moment, dtype=np.float64)
        if c.shape != (d_in, d_in):
            raise ValueError(f"output_norm_per_direction: second_moment must be ({d_in}, {d_in}), got {c.shape}")
        # Quadratic forms a_i^T C a_i; clip rounding below zero for a PSD C.
        energy = np.maximum(np.einsum("ji,jk,ki->i", a, c, a), 0.0)
        return s, s * np.sqrt(energy)
    x = _flat_tokens(inputs, mask, d_in)
    proj = x @ a  # (tokens, m): a_i . x_t
    if reduce == "rms":
        return s, s * np.sqrt(np.mean(proj**2, axis=0))
    return s, s * np.mean(np.abs(proj), axis=0)


def output_norm_from_statistics(statistics: Any, reduce: str = "mean") -> tuple[np.ndarray, np.ndarray]:
    """``(singular_values, output_norms)`` from the rank module's activation statistics.

    ``statistics`` is one ``MatrixStatistics`` (``asvd_jax.ranks``), which accumulates
    mean_t s_i |a_i . x_t| (``"mean"``) and mean_t (a_i . x_t)^2 (giving ``"rms"``) in the same
    pass that collects importance, so no activations need to be kept. Stack axes lead.
    """
    if reduce not in ("rms", "mean"):
        raise ValueError(f"output_norm_from_statistics: reduce must be 'rms' or 'mean', got {reduce!r}")
    for field in ("singular_values", "output_norm", "input_energy"):
        if not hasattr(statistics, field):
            raise TypeError(f"output_norm_from_statistics: statistics has no field {field!r}")
    s = np.asarray(statistics.singular_values, np.float64)
    if reduce == "mean":
        return s, np.asarray(statistics.output_norm, np.float64)
    return s, s * np.sqrt(np.maximum(np.asarray(statistics.input_energy, np.float64), 0.0))
