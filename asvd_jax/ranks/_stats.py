"""Streaming activation statistics of every target matrix, accumulated in one jitted step.

For a target with (d_in, d_out) view K = I diag(s) O^T (its ``MatrixSpec`` view and the core's
``weight_svds``: I = ``MatrixSVD.input``, O = ``MatrixSVD.output``), an input token x
(a row, d_in), its output before bias y = x K, and z = x I (coordinates of x along the
input-side singular directions), the step adds over the unmasked tokens:

* cos_truncate = <x[:m], y[:m]> / (|x[:m]| |y[:m]|),  m = min(d_in, d_out): the paper's
  importance, the plain cos(x, W x) for a square W and the authors' truncation otherwise;
* cos_polar = <x, P x> / (|x| |P x|) = sum_j s_j z_j^2 / (|x| |s * z|), with P = I diag(s) I^T
  the input-side polar factor of K (K = P Q for an isometry Q = I O^T): how far the layer
  bends x beyond a rigid change of coordinates, defined for every shape (docs/ranks.md);
* z_j^2 (activation energy along input direction j) and |x|^2 (all of it);
* s_j |z_j|, the norm of the output that direction j produces (|O_j| = 1).

The state is a fixed set of sums (one scalar or one length-r vector per matrix), so memory
does not depend on the number of batches, and the step compiles once for a fixed batch shape.
Padding is excluded through the (batch, seq) token mask: masked tokens contribute exact zeros.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from asvd_jax import MatrixSpec, MatrixSVD, flatten_with_paths, list_targets, weight_svds

CaptureFn = Callable[[Any, Any], tuple[Mapping[str, jax.Array], jax.Array]]
"""capture_fn(params, batch) -> ({path: inputs (*stack, batch, seq, *in_dims)}, mask (batch, seq))."""

_HIGHEST = jax.lax.Precision.HIGHEST


class MatrixSums(NamedTuple):
    """Running sums over unmasked tokens for one target (stack axis flattened first)."""

    cos_truncate: jax.Array  # (n,)
    cos_polar: jax.Array  # (n,)
    input_energy: jax.Array  # (n, r)
    total_energy: jax.Array  # (n,)
    output_norm: jax.Array  # (n, r)


class StatisticsState(NamedTuple):
    tokens: jax.Array  # () int32, unmasked tokens seen
    sums: dict[str, MatrixSums]


class _Target(NamedTuple):
    """A target leaf's shape and resolved spec, with the (stack, d_in, d_out) sizes."""

    path: str
    shape: tuple[int, ...]
    spec: MatrixSpec
    stack_shape: tuple[int, ...]
    d_in: int
    d_out: int

    @property
    def stack_size(self) -> int:
        return int(np.prod(self.stack_shape, dtype=np.int64))

    @property
    def min_dim(self) -> int:
        return min(self.d_in, self.d_out)

    @property
    def in_dims(self) -> tuple[int, ...]:
        return tuple(self.shape[a] for a in self.spec.in_axes)

    def matrices(self, leaf: jax.Array) -> jax.Array:
        return self.spec.to_matrix(leaf).reshape(self.stack_size, self.d_in, self.d_out)


def _targets(params: Any, targets: Any) -> dict[str, _Target]:
    leaves = dict(flatten_with_paths(params)[0])
    specs = dict(list_targets(targets))
    if not specs:
        raise ValueError("targets: no target matrices given (every entry is None or the tree is empty)")
    out = {}
    for path, spec in specs.items():
        if path not in leaves:
            raise ValueError(f"targets: no parameter at path {path!r}")
        shape = tuple(int(d) for d in np.shape(leaves[path]))
        spec = spec.resolve(len(shape), path)
        out[path] = _Target(path, shape, spec, *spec.matrix_shape(shape))
    return out


def _zero_sums(layout: _Target) -> MatrixSums:
    n, r = layout.stack_size, layout.min_dim
    vec, mat = jnp.zeros((n,), jnp.float32), jnp.zeros((n, r), jnp.float32)
    return MatrixSums(vec, vec, mat, vec, mat)


def _ratio(num: jax.Array, den: jax.Array) -> jax.Array:
    # A zero input (or an output W maps to zero) has no direction: it counts as cos 0.
    ok = den > 0
    return jnp.where(ok, num / jnp.where(ok, den, 1.0), 0.0)


def _matrix_sums(x: jax.Array, kernel: jax.Array, vectors: jax.Array, values: jax.Array,
                 weight: jax.Array) -> MatrixSums:
    """Sums for x (n, T, d_in), kernel (n, d_in, d_out), input vectors (n, d_in, r),
    singular values (n, r) and token weights (T,) in {0, 1}."""
    # Padded tokens become exact zeros first (NaN-safe); every sum below then skips them
    # without a mask per statistic, and their cosines are 0 by _ratio's convention.
    x = jnp.where(weight[None, :, None] > 0, x, 0.0)
    m = min(kernel.shape[-2:])
    # Only the first m output coordinates enter the truncated cosine: skip the other columns
    # (a 576 x 1536 up-projection then costs 576 x 576 per token, not a second forward).
    xt = x[..., :m]
    yt = jnp.einsum("nti,nio->nto", x, kernel[..., :m], precision=_HIGHEST)
    cos_t = _ratio(jnp.sum(xt * yt, -1), jnp.sqrt(jnp.sum(xt * xt, -1) * jnp.sum(yt * yt, -1)))
    z = jnp.einsum("nti,nir->ntr", x, vectors, precision=_HIGHEST)
    z2 = z * z
    # <x, xP> = sum_j s_j z_j^2 and |xP|^2 = sum_j s_j^2 z_j^2: two small matmuls over z^2.
    num_p = jnp.einsum("ntr,nr->nt", z2, values, precision=_HIGHEST)
    px2 = jnp.einsum("ntr,nr->nt", z2, values * values, precision=_HIGHEST)
    x2 = jnp.sum(x * x, -1)
    cos_p = _ratio(num_p, jnp.sqrt(x2 * px2))
    return MatrixSums(
        cos_truncate=jnp.sum(cos_t, 1),
        cos_polar=jnp.sum(cos_p, 1),
        input_energy=jnp.sum(z2, 1),
        total_energy=jnp.sum(x2, 1),
        output_norm=values * jnp.sum(jnp.abs(z), 1),
    )


def _flat_inputs(path: str, inputs: jax.Array, layout: _Target, mask_shape: tuple) -> jax.Array:
    want = (*layout.stack_shape, *mask_shape, *layout.in_dims)
    if tuple(inputs.shape) != want:
        raise ValueError(
            f"capture_fn: inputs for {path!r} have shape {tuple(inputs.shape)}, expected {want} "
            "(stack axes, batch, seq, input dims of the matrix spec)"
        )
    return inputs.astype(jnp.float32).reshape(layout.stack_size, -1, layout.d_in)


def make_accumulate(capture_fn: CaptureFn, layouts: Mapping[str, _Target]):
    """Jitted ``step(state, params, kernels, svds, batch) -> state``; compiled once per batch shape.

    ``kernels`` is {path: target leaf}, ``svds`` {path: MatrixSVD}; the forward (capture_fn)
    and every reduction run in the same program, so activations never leave the device.
    """

    def step(state: StatisticsState, params, kernels, svds, batch) -> StatisticsState:
        acts, mask = capture_fn(params, batch)
        mask = jnp.asarray(mask)
        if mask.ndim != 2:
            raise ValueError(f"capture_fn: mask must be (batch, seq), got shape {tuple(mask.shape)}")
        missing = [p for p in layouts if p not in acts]
        if missing:
            raise ValueError(
                f"capture_fn: no captured inputs for target(s) {missing}; captured: {sorted(acts)}"
            )
        weight = mask.reshape(-1).astype(jnp.float32)
        sums = {}
        for path, layout in layouts.items():
            x = _flat_inputs(path, acts[path], layout, tuple(mask.shape))
            kernel = layout.matrices(kernels[path]).astype(jnp.float32)
            svd = svds[path]
            n, r = layout.stack_size, layout.min_dim
            new = _matrix_sums(x, kernel, svd.input.reshape(n, layout.d_in, r),
                               svd.singular_values.reshape(n, r), weight)
            sums[path] = jax.tree.map(jnp.add, state.sums[path], new)
        tokens = state.tokens + jnp.sum(mask > 0).astype(jnp.int32)
        return StatisticsState(tokens, sums)

    return jax.jit(step)


@dataclasses.dataclass(frozen=True)
class MatrixStatistics:
    """Per-token means over the unmasked tokens for one target; stack axes lead every array.

    cos_truncate, cos_polar, total_energy: (*stack,); input_energy, output_norm,
    singular_values: (*stack, r), r = min(d_in, d_out), in descending singular value order.
    """

    path: str
    shape: tuple[int, ...]
    stack_shape: tuple[int, ...]
    d_in: int
    d_out: int
    tokens: int
    cos_truncate: np.ndarray
    cos_polar: np.ndarray
    input_energy: np.ndarray
    total_energy: np.ndarray
    output_norm: np.ndarray
    singular_values: np.ndarray

    @property
    def min_dim(self) -> int:
        return min(self.d_in, self.d_out)

    @property
    def square(self) -> bool:
        return self.d_in == self.d_out

    def mean_cosine(self, nonsquare: str = "truncate") -> np.ndarray:
        """Mean cos(x, W x) per stack entry; for a non-square W, ``nonsquare`` picks
        "truncate" (the paper's first-min(d_in, d_out)-coordinates) or "polar"."""
        if nonsquare not in ("truncate", "polar"):
            raise ValueError(f"nonsquare must be 'truncate' or 'polar', got {nonsquare!r}")
        if self.square or nonsquare == "truncate":
            return self.cos_truncate
        return self.cos_polar

    def energy_retained(self) -> np.ndarray:
        """(*stack, r + 1): fraction of input activation energy in the top-k input directions,
        for k = 0..r (measured against all of |x|^2, so it stays below 1 when d_in > d_out)."""
        cum = np.cumsum(self.input_energy, axis=-1)
        cum = np.concatenate([np.zeros_like(cum[..., :1]), cum], axis=-1)
        total = self.total_energy[..., None]
        with np.errstate(invalid="ignore", divide="ignore"):
            frac = np.where(total > 0, cum / np.where(total > 0, total, 1.0), 0.0)
        return np.minimum(frac, 1.0)


def _finish(layout: _Target, sums: MatrixSums, svd: MatrixSVD, tokens: int) -> MatrixStatistics:
    def mean(a, trailing=()):
        return (np.asarray(a, np.float64) / tokens).reshape((*layout.stack_shape, *trailing))

    r = layout.min_dim
    return MatrixStatistics(
        path=layout.path,
        shape=layout.shape,
        stack_shape=layout.stack_shape,
        d_in=layout.d_in,
        d_out=layout.d_out,
        tokens=tokens,
        cos_truncate=mean(sums.cos_truncate),
        cos_polar=mean(sums.cos_polar),
        input_energy=mean(sums.input_energy, (r,)),
        total_energy=mean(sums.total_energy),
        output_norm=mean(sums.output_norm, (r,)),
        singular_values=np.asarray(svd.singular_values, np.float64),
    )


def collect_statistics(
    capture_fn: CaptureFn,
    params: Any,
    batches: Iterable[Any],
    targets: Any,
    *,
    svds: Mapping[str, MatrixSVD] | None = None,
) -> dict[str, MatrixStatistics]:
    """Activation statistics of every target over ``batches``: {path: MatrixStatistics}.

    Args:
      capture_fn: ``capture_fn(params, batch) -> (acts, mask)``, traced inside the jitted step;
        ``acts`` maps each target path to its input activations ``(*stack, batch, seq,
        *in_dims)`` and ``mask`` (batch, seq) is nonzero on real tokens. Any model works; for
        nnx models see ``nnx_capture_fn``.
      params: the parameter pytree handed to ``capture_fn`` (targets are read from it by path).
      batches: an iterable of batches of one fixed shape (pad the last one and mask it).
      targets: a targets pytree, a ``{path: spec}`` mapping or a list of paths (plain kernels).
      svds: ``asvd_jax.weight_svds(params, targets)`` if already computed (it is reused for
        the bases: ``compute_bases(..., svds=svds)``).

    Returns:
      {path: MatrixStatistics} in target order; means over all unmasked tokens.
    """
    layouts = _targets(params, targets)
    if svds is None:
        svds = weight_svds(params, targets)
    for path, layout in layouts.items():
        if path not in svds:
            raise ValueError(f"svds: no SVD for target {path!r}")
        if not isinstance(svds[path], MatrixSVD):
            raise TypeError(f"svds[{path!r}]: expected a MatrixSVD (from asvd_jax.weight_svds), "
                            f"got {type(svds[path]).__name__}")
        svds[path].check(path, layout.shape, layout.spec)
    leaves = dict(flatten_with_paths(params)[0])
    kernels = {p: leaves[p] for p in layouts}
    svds = {p: svds[p] for p in layouts}
    step = make_accumulate(capture_fn, layouts)
    state = StatisticsState(jnp.zeros((), jnp.int32), {p: _zero_sums(l) for p, l in layouts.items()})
    for batch in batches:
        state = step(state, params, kernels, svds, batch)
    tokens = int(state.tokens)
    if tokens == 0:
        raise ValueError("collect_statistics: no unmasked tokens in batches (empty iterable or all padding)")
    return {p: _finish(l, state.sums[p], svds[p], tokens) for p, l in layouts.items()}
