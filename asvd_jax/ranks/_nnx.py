"""Capture functions for Flax NNX models built from capturable layers, and new bases for an
``nnx.Optimizer`` at a task boundary.

Kept apart so ``import asvd_jax.ranks`` needs jax only: flax is imported when these run.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from asvd_jax import MatrixSVD
from asvd_jax.ranks._stats import CaptureFn, MatrixStatistics, collect_statistics

MaskSpec = str | Callable[[Any], Any]


def _mask_of(batch: Any, mask: MaskSpec) -> Any:
    if callable(mask):
        return mask(batch)
    if not isinstance(batch, Mapping) or mask not in batch:
        keys = sorted(batch) if isinstance(batch, Mapping) else type(batch).__name__
        raise ValueError(f"batch has no token mask under key {mask!r} (batch keys: {keys}); "
                         "pass mask= a key or a function batch -> (batch, seq) mask")
    return batch[mask]


def nnx_capture_fn(graphdef: Any, forward: Callable[[Any, Any], Any], *rest: Any,
                   mask: MaskSpec = "attention_mask") -> CaptureFn:
    """``capture_fn(params, batch)`` for a model split as ``nnx.split(model, nnx.Param, ...)``.

    It merges ``graphdef`` with the (traced) params and the fixed ``rest`` states, runs
    ``forward(model, batch)`` inside ``capture()`` (its result is discarded: XLA drops what
    the statistics do not use, so only the layers before the last target cost anything) and
    returns the recorded ``{kernel path: inputs}`` with the batch's token mask.
    """
    from flax import nnx

    from asvd_jax.models import capture

    def capture_fn(params, batch):
        model = nnx.merge(graphdef, params, *rest)
        with capture() as acts:
            forward(model, batch)
        return dict(acts), _mask_of(batch, mask)

    return capture_fn


def collect_statistics_nnx(
    model: Any,
    forward: Callable[[Any, Any], Any],
    batches: Iterable[Any],
    targets: Any,
    *,
    mask: MaskSpec = "attention_mask",
    svds: Mapping[str, MatrixSVD] | None = None,
) -> dict[str, MatrixStatistics]:
    """``collect_statistics`` for an nnx model whose capturable layers carry their kernel
    paths (``assign_capture_names``); ``targets`` key on paths of ``nnx.state(model, nnx.Param)``.

    Example: ``collect_statistics_nnx(model, lambda m, b: m(b["input_ids"], b["attention_mask"]),
    batches, targets)``.
    """
    from flax import nnx

    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    capture_fn = nnx_capture_fn(graphdef, forward, rest, mask=mask)
    return collect_statistics(capture_fn, params, batches, targets, svds=svds)


def set_optimizer_bases(optimizer: Any, bases: Any) -> None:
    """Swap the bases inside an ``nnx.Optimizer`` built with ``with_projection`` (in place).

    The optax-level ``asvd_jax.set_bases`` works on pure optimizer states; an
    ``nnx.Optimizer`` keeps its state in Variables, so this takes the state out of them, swaps,
    and wraps it again (new ranks may change the bases' shapes; the next step retraces once).
    ``bases``: from ``compute_bases``, ``nnx.State`` or dict. Adam's moments are kept.
    """
    from flax import nnx
    from flax.nnx.training.optimizer import to_opt_state

    from asvd_jax._transform import set_bases

    if not isinstance(optimizer, nnx.Optimizer):
        raise TypeError(f"set_optimizer_bases: expected an nnx.Optimizer, got {type(optimizer).__name__} "
                        "(for an optax state use asvd_jax.set_bases(opt_state, bases))")
    optimizer.opt_state = nnx.data(to_opt_state(set_bases(nnx.as_pure(optimizer.opt_state), bases)))
