"""Target matrices seen as (stack, d_in, d_out), and their thin SVD computed once per task.

A target leaf is a matrix after grouping its axes by a matrix spec (any object with
``in_axes`` and ``out_axes``, such as the core's ``MatrixSpec``); every other axis is a stack
axis (scan-stacked layers). With ``K`` the (d_in, d_out) view, a layer computes ``y = x @ K``
and the thin SVD is

    K = I diag(s) O^T,   I: (d_in, r) input-side vectors,  O: (d_out, r) output-side vectors,

with r = min(d_in, d_out) and s descending. (In the PyTorch layout W = K^T = O diag(s) I^T, so
the input side is what the method page calls V.) The SVD runs host-side in float32 whatever
the parameter dtype, outside any jit, so the runner can reuse it for the protected bases.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from asvd_jax._paths import flatten_with_paths


class DefaultSpec(NamedTuple):
    """A plain Flax kernel: axis 0 is the input, axis 1 the output, no stack axes."""

    in_axes: tuple[int, ...] = (0,)
    out_axes: tuple[int, ...] = (1,)


class MatrixSVD(NamedTuple):
    """Thin SVD of one target, stack axes first: ``K[b] = I[b] diag(s[b]) O[b]^T``.

    input_vectors: (*stack, d_in, r); singular_values: (*stack, r), descending;
    output_vectors: (*stack, d_out, r).
    """

    input_vectors: jax.Array
    singular_values: jax.Array
    output_vectors: jax.Array


def _is_spec(x: Any) -> bool:
    return hasattr(x, "in_axes") and hasattr(x, "out_axes")


def target_specs(targets: Any) -> dict[str, Any]:
    """{path: matrix spec} from any of the accepted forms of ``targets``.

    Accepted: a pytree like params with a matrix spec at each target and ``None`` elsewhere
    (what ``select_targets`` returns), a mapping ``{path: spec or None}``, or a sequence of
    paths (each a plain ``(in, out)`` kernel).
    """
    if isinstance(targets, str):
        raise TypeError("targets: expected paths, a {path: spec} mapping or a targets pytree, got a str")
    if isinstance(targets, Mapping) and all(
        isinstance(k, str) and (v is None or _is_spec(v)) for k, v in targets.items()
    ):
        specs = {k: v for k, v in targets.items() if v is not None}
    elif isinstance(targets, Sequence) and all(isinstance(p, str) for p in targets):
        specs = {p: DefaultSpec() for p in targets}
    else:
        leaves, _ = flatten_with_paths(targets, is_leaf=lambda x: x is None or _is_spec(x))
        specs = {p: s for p, s in leaves if _is_spec(s)}
    if not specs:
        raise ValueError("targets: no target matrices given (every entry is None or the tree is empty)")
    return specs


def params_by_path(params: Any) -> dict[str, Any]:
    leaves, _ = flatten_with_paths(params)
    return dict(leaves)


def _axes(spec: Any, ndim: int, path: str) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
    raw = (*spec.in_axes, *spec.out_axes)
    if any(not -ndim <= a < ndim for a in raw):
        raise ValueError(f"{path}: matrix spec {spec!r} does not fit a {ndim}-d parameter")
    in_axes = tuple(a % ndim for a in spec.in_axes)
    out_axes = tuple(a % ndim for a in spec.out_axes)
    if not in_axes or not out_axes or len(set(in_axes + out_axes)) != len(raw):
        raise ValueError(f"{path}: matrix spec needs disjoint, non-empty in/out axes, got {spec!r}")
    stack_axes = tuple(a for a in range(ndim) if a not in in_axes and a not in out_axes)
    return stack_axes, in_axes, out_axes


class MatrixLayout(NamedTuple):
    """How one target leaf maps to a stack of (d_in, d_out) matrices."""

    path: str
    shape: tuple[int, ...]
    stack_shape: tuple[int, ...]
    in_dims: tuple[int, ...]
    d_in: int
    d_out: int
    perm: tuple[int, ...]

    @property
    def min_dim(self) -> int:
        return min(self.d_in, self.d_out)

    @property
    def stack_size(self) -> int:
        return math.prod(self.stack_shape)


def matrix_layout(path: str, shape: Sequence[int], spec: Any) -> MatrixLayout:
    shape = tuple(int(d) for d in shape)
    stack_axes, in_axes, out_axes = _axes(spec, len(shape), path)
    return MatrixLayout(
        path=path,
        shape=shape,
        stack_shape=tuple(shape[a] for a in stack_axes),
        in_dims=tuple(shape[a] for a in in_axes),
        d_in=math.prod(shape[a] for a in in_axes),
        d_out=math.prod(shape[a] for a in out_axes),
        perm=(*stack_axes, *in_axes, *out_axes),
    )


def matrix_view(leaf: jax.Array, layout: MatrixLayout) -> jax.Array:
    """(stack_size, d_in, d_out) view of a target leaf (a transpose when the axes need one)."""
    return jnp.transpose(leaf, layout.perm).reshape(layout.stack_size, layout.d_in, layout.d_out)


def target_layouts(params: Any, targets: Any) -> dict[str, MatrixLayout]:
    """{path: MatrixLayout} for every target, checking each path exists in ``params``."""
    leaves = params_by_path(params)
    layouts = {}
    for path, spec in target_specs(targets).items():
        if path not in leaves:
            raise ValueError(f"targets: no parameter at path {path!r}")
        layouts[path] = matrix_layout(path, np.shape(leaves[path]), spec)
    return layouts


def weight_svds(params: Any, targets: Any) -> dict[str, MatrixSVD]:
    """Thin float32 SVD of every target matrix, host-side: {path: MatrixSVD}.

    One SVD per matrix (per stack entry); pass the result to ``collect_statistics(svds=...)``
    and reuse it for the protected bases so a task boundary does each SVD once.
    """
    leaves = params_by_path(params)
    svds = {}
    for path, layout in target_layouts(params, targets).items():
        # Gather to the host first: an SVD of an array sharded over a mesh runs as collectives
        # (measured ~80x slower on fake CPU devices, and it can deadlock between tasks).
        host = np.asarray(jax.device_get(leaves[path]), dtype=np.float32)
        view = matrix_view(jnp.asarray(host), layout)
        # One matrix at a time: on CPU a batched (vmapped) SVD was measured slower.
        parts = [jnp.linalg.svd(view[b], full_matrices=False) for b in range(layout.stack_size)]
        r = layout.min_dim
        svds[path] = MatrixSVD(
            input_vectors=jnp.stack([u for u, _, _ in parts]).reshape(*layout.stack_shape, layout.d_in, r),
            singular_values=jnp.stack([s for _, s, _ in parts]).reshape(*layout.stack_shape, r),
            output_vectors=jnp.stack([vh.T for _, _, vh in parts]).reshape(
                *layout.stack_shape, layout.d_out, r),
        )
    return svds


def check_svd(svd: MatrixSVD, layout: MatrixLayout) -> None:
    r = layout.min_dim
    want = {
        "input_vectors": (*layout.stack_shape, layout.d_in, r),
        "singular_values": (*layout.stack_shape, r),
        "output_vectors": (*layout.stack_shape, layout.d_out, r),
    }
    for name, shape in want.items():
        got = tuple(np.shape(getattr(svd, name)))
        if got != shape:
            raise ValueError(f"svds[{layout.path!r}].{name}: expected shape {shape}, got {got}")
