"""Which parameters are target matrices, and how each leaf's axes form a matrix.

A target leaf ``W`` of shape ``(*batch, *in_dims, *out_dims)`` (after moving axes) is a batch of
matrices ``W_b`` of shape ``(prod(in_dims), prod(out_dims))``; ``y = x @ W_b`` in the Flax
``(in, out)`` convention. ``MatrixSpec`` names the input and output axes; every other axis is a
batch axis (scan-stacked layers), each batch index an independent matrix.
"""

from __future__ import annotations

import dataclasses
import math
import re
from typing import Any, Mapping, Sequence

import jax
import numpy as np

from asvd_jax._paths import flatten_with_paths

DEFAULT_EXCLUDE: tuple[str, ...] = (
    r"embed",
    r"(^|/)(wte|wpe|shared)(/|$)",
    r"pos(ition)?_?(emb|ids)",
    r"norm",
    r"(^|/)ln_?\w*(/|$)",
    r"bias",
    r"(^|/)(lm_)?head(/|$)",
    r"classifier",
)
"""Paths (``re.search``, case-insensitive) left out of the default selection: embeddings,
norms, biases, position tables and output heads, which every public implementation of the
method trains without constraint."""


@dataclasses.dataclass(frozen=True)
class MatrixSpec:
    """Which axes of a leaf form the matrix ``(prod(in_axes), prod(out_axes))``.

    Axes may be negative; ``resolve`` makes them absolute for a given ``ndim``. Axes in
    neither tuple are batch axes.
    """

    in_axes: tuple[int, ...] = (-2,)
    """Axes whose flattened index is the matrix row (the layer's input features)."""
    out_axes: tuple[int, ...] = (-1,)
    """Axes whose flattened index is the matrix column (the layer's output features)."""

    def __post_init__(self):
        for name in ("in_axes", "out_axes"):
            axes = getattr(self, name)
            if isinstance(axes, (int, np.integer)):
                axes = (int(axes),)
            axes = tuple(int(a) for a in axes)
            if not axes:
                raise ValueError(f"MatrixSpec.{name} must name at least one axis")
            object.__setattr__(self, name, axes)

    def resolve(self, ndim: int, path: str = "?") -> "MatrixSpec":
        """This spec with absolute axes for a leaf of rank ``ndim``; ValueError if it does not fit."""
        axes = []
        for a in self.in_axes + self.out_axes:
            if not -ndim <= a < ndim:
                raise ValueError(f"{path}: MatrixSpec{self.in_axes, self.out_axes} axis {a} "
                                 f"out of range for a leaf of rank {ndim}")
            axes.append(a % ndim)
        if len(set(axes)) != len(axes):
            raise ValueError(f"{path}: MatrixSpec{self.in_axes, self.out_axes} repeats an axis")
        n_in = len(self.in_axes)
        return MatrixSpec(tuple(axes[:n_in]), tuple(axes[n_in:]))

    def batch_axes(self, ndim: int) -> tuple[int, ...]:
        """Axes in neither tuple (absolute spec assumed)."""
        used = set(self.in_axes) | set(self.out_axes)
        return tuple(a for a in range(ndim) if a not in used)

    def permutation(self, ndim: int) -> tuple[int, ...]:
        """Axis order (batch, in, out) that ``to_matrix`` transposes to."""
        return self.batch_axes(ndim) + self.in_axes + self.out_axes

    def matrix_shape(self, shape: Sequence[int]) -> tuple[tuple[int, ...], int, int]:
        """(batch shape, rows m, columns n) of a leaf of this shape."""
        batch = tuple(shape[a] for a in self.batch_axes(len(shape)))
        m = math.prod(shape[a] for a in self.in_axes)
        n = math.prod(shape[a] for a in self.out_axes)
        return batch, m, n

    def to_matrix(self, x):
        """View ``x`` as ``(*batch, m, n)``; a free reshape when the axes are already in order."""
        perm = self.permutation(x.ndim)
        batch, m, n = self.matrix_shape(x.shape)
        if perm != tuple(range(x.ndim)):
            x = x.transpose(perm)
        return x.reshape(batch + (m, n))

    def from_matrix(self, mat, shape: Sequence[int]):
        """Inverse of ``to_matrix`` for a leaf of ``shape``."""
        perm = self.permutation(len(shape))
        x = mat.reshape(tuple(shape[a] for a in perm))
        if perm != tuple(range(len(shape))):
            x = x.transpose(np.argsort(perm))
        return x


def is_floating(leaf: Any) -> bool:
    """True for float arrays and ShapeDtypeStructs (bf16 included)."""
    dtype = getattr(leaf, "dtype", None)
    return dtype is not None and jax.numpy.issubdtype(dtype, jax.numpy.floating)


def _compile(patterns, what: str) -> list[re.Pattern]:
    if isinstance(patterns, str):
        patterns = (patterns,)
    try:
        return [re.compile(p, re.IGNORECASE) for p in patterns]
    except re.error as err:
        raise ValueError(f"bad {what} regex: {err}") from None


def select_targets(
    params: Any,
    include: str | Sequence[str] | None = None,
    exclude: str | Sequence[str] | None = DEFAULT_EXCLUDE,
    specs: Mapping[str, MatrixSpec] | None = None,
    batch_axes: int = 0,
) -> Any:
    """Pytree like ``params`` with a resolved ``MatrixSpec`` at each target leaf, None elsewhere.

    A leaf is a target when it is floating with ``ndim >= 2``, its path matches an ``include``
    pattern (``None``: every such leaf) and no ``exclude`` pattern (``re.search`` on
    ``path_str``, case-insensitive). Its spec comes from the first ``specs`` pattern that
    matches its path; otherwise the last two axes after ``batch_axes`` leading batch axes must
    be ``(in, out)``.

    Raises:
      ValueError: an include/exclude/spec pattern matches no leaf (no silent fall-back to
        plain fine-tuning), no target is left, or a leaf's axes cannot form a matrix.
      TypeError: an explicit include pattern matches a non-floating leaf.
    """
    if not isinstance(batch_axes, int) or batch_axes < 0:
        raise ValueError(f"batch_axes must be a non-negative int, got {batch_axes!r}")
    inc = None if include is None else _compile(include, "include")
    exc = _compile(exclude or (), "exclude")
    user_exclude = exclude is not DEFAULT_EXCLUDE
    spec_items = [(p, s) for p, s in (specs or {}).items()]
    spec_res = _compile([p for p, _ in spec_items], "specs")
    for p, s in spec_items:
        if not isinstance(s, MatrixSpec):
            raise TypeError(f"specs[{p!r}] must be a MatrixSpec, got {type(s).__name__}")

    leaves, treedef = flatten_with_paths(params)
    used_inc, used_exc, used_spec = set(), set(), set()
    used_matrix: set = set()  # include patterns that matched at least one leaf with ndim >= 2
    non_matrix: dict = {}  # pattern index -> (first non-matrix leaf it matched, its shape)
    spec_non_matrix: dict = {}
    out = []
    for path, leaf in leaves:
        excluded = [i for i, r in enumerate(exc) if r.search(path)]
        used_exc.update(excluded)
        hits = [i for i, r in enumerate(inc) if r.search(path)] if inc is not None else [None]
        used_inc.update(h for h in hits if h is not None)
        if not hits:
            out.append(None)
            continue
        if getattr(leaf, "ndim", 0) < 2:
            shape = tuple(getattr(leaf, "shape", ()))
            for h in hits:
                if h is None:
                    continue
                if inc[h].fullmatch(path):
                    raise ValueError(f"{path}: include pattern {_pattern(include, h)!r} names "
                                     f"a leaf of shape {shape}, which is not a matrix "
                                     "(targets need ndim >= 2)")
                non_matrix.setdefault(h, (path, shape))
            for i, r in enumerate(spec_res):
                if r.search(path):
                    spec_non_matrix.setdefault(i, (path, shape))
            out.append(None)
            continue
        used_matrix.update(h for h in hits if h is not None)
        if not is_floating(leaf):
            if inc is not None:
                raise TypeError(f"{path}: include pattern {include!r} matches a non-floating "
                                f"leaf of dtype {getattr(leaf, 'dtype', None)}")
            out.append(None)
            continue
        if excluded:
            out.append(None)
            continue
        out.append(_spec_for(path, leaf, spec_items, spec_res, used_spec, batch_axes))

    if inc is not None:
        # A pattern that picked up only vectors/scalars was meant for something that is not a
        # matrix: say which leaf, not just that the pattern selected nothing.
        for i, (path, shape) in non_matrix.items():
            if i not in used_matrix:
                raise ValueError(f"{path}: include pattern {_pattern(include, i)!r} matches "
                                 f"only leaves that are not matrices (this one has shape "
                                 f"{shape}); only leaves with ndim >= 2 can be targets")
        unused = [include if isinstance(include, str) else include[i]
                  for i in range(len(inc)) if i not in used_inc]
        if unused:
            raise ValueError(f"include pattern(s) {unused} match no parameter path")
    if user_exclude and exc:
        excl = (exclude,) if isinstance(exclude, str) else tuple(exclude)
        unused = [excl[i] for i in range(len(exc)) if i not in used_exc]
        if unused:
            raise ValueError(f"exclude pattern(s) {unused} match no parameter path")
    for i, (path, shape) in spec_non_matrix.items():
        if i not in used_spec:
            raise ValueError(f"{path}: specs pattern {spec_items[i][0]!r} matches only leaves "
                             f"that are not matrices (this one has shape {shape})")
    unused = [spec_items[i][0] for i in range(len(spec_items)) if i not in used_spec]
    if unused:
        raise ValueError(f"specs pattern(s) {unused} match no target")
    if all(s is None for s in out):
        raise ValueError("no target matrix selected: check include/exclude patterns "
                         f"(include={include!r}, exclude={exclude!r})")
    return treedef.unflatten(out)


def _pattern(patterns, i: int) -> str:
    return patterns if isinstance(patterns, str) else patterns[i]


def _spec_for(path, leaf, spec_items, spec_res, used_spec, batch_axes) -> MatrixSpec:
    ndim = leaf.ndim
    for i, r in enumerate(spec_res):
        if r.search(path):
            used_spec.add(i)
            return spec_items[i][1].resolve(ndim, path)
    if ndim - batch_axes != 2:
        raise ValueError(
            f"{path}: leaf of shape {tuple(leaf.shape)} with batch_axes={batch_axes} is not a "
            "matrix; pass specs={pattern: MatrixSpec(in_axes, out_axes)} or exclude it")
    return MatrixSpec((batch_axes,), (batch_axes + 1,))


def is_spec_or_none(x: Any) -> bool:
    return x is None or isinstance(x, MatrixSpec)


def list_targets(targets: Any) -> list[tuple[str, MatrixSpec]]:
    """``[(path, spec)]`` of the targets, in order; the one reader of every targets form.

    Accepted: the tree ``select_targets`` returns (a ``MatrixSpec`` at each target, None
    elsewhere), a mapping ``{path: MatrixSpec or None}``, or a sequence of paths (each a plain
    kernel, ``MatrixSpec()``: the last two axes are ``(in, out)``, leading axes batch axes).
    """
    if isinstance(targets, str):
        raise TypeError("targets: expected paths, a {path: MatrixSpec} mapping or a targets "
                        "pytree, got a str")
    # A flat {path: spec} mapping and a targets tree agree where both readings apply (a flat
    # params dict), so a mapping whose values are all specs or None is read by path.
    if isinstance(targets, Mapping) and all(
            isinstance(k, str) and is_spec_or_none(v) for k, v in targets.items()):
        items = list(targets.items())
    elif isinstance(targets, Sequence) and targets and all(isinstance(p, str) for p in targets):
        items = [(p, MatrixSpec()) for p in targets]
    else:
        items, _ = flatten_with_paths(targets, is_leaf=is_spec_or_none)
    for path, spec in items:
        if not is_spec_or_none(spec):
            raise TypeError(f"targets[{path!r}]: expected a MatrixSpec or None, got "
                            f"{type(spec).__name__}")
    return [(p, s) for p, s in items if s is not None]


def target_specs(targets: Any) -> dict[str, MatrixSpec]:
    """``{path: MatrixSpec}`` from ``list_targets``; ValueError when there is no target."""
    specs = dict(list_targets(targets))
    if not specs:
        raise ValueError("targets: no target matrices given (every entry is None or the tree "
                         "is empty)")
    return specs
