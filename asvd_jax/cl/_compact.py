"""Compact training batches, the trainer's part: one token width per short stage.

A family whose record says ``compact_batches`` pads each training batch only to its own
longest row, rounded up to ``asvd_jax.data.PAD_MULTIPLE`` tokens (capped at ``max_len``): a
jitted step then sees at most ``max_len / PAD_MULTIPLE`` sequence lengths, so compiles stay
bounded. A short stage would pay a compile for each of those widths; ``stage_width`` trains it
at one. The batch layouts themselves are the family's (``asvd_jax.models.<family>``).
``largest_shapes`` gives a stage's largest batch shapes, to which the runner pads the batches
it hands a method (EWC's Fisher: one program per stage shape, shared by stages of equal shapes).
"""

from __future__ import annotations

from asvd_jax.data import same_width  # noqa: F401  (the statistics pass pads to one width)

SHORT_STAGE = 32
"""A stage with fewer micro-batches than this trains at one width (its longest batch's):
a compile of the step costs about as much as 6 steps (benchmarks/train_speed.py, MiniLM),
so a few extra compiles would eat what a short stage saves on padding."""


def compact(family, adapter) -> bool:
    """Whether ``adapter`` builds compact batches (its family has them and they are on)."""
    return family.compact_batches and bool(adapter.compact)


def stage_width(family, adapter, chunks: list) -> int | None:
    """The token width a short stage trains at (its widest batch), None for a long stage
    (each batch at its own rounded width) or for an adapter without compact batches."""
    if not compact(family, adapter) or len(chunks) >= SHORT_STAGE:
        return None
    saved, adapter.min_width = adapter.min_width, None
    try:
        return max(adapter.train_batch(ch)["input_ids"].shape[1] for ch in chunks)
    finally:
        adapter.min_width = saved


def largest_shapes(adapter, stages, batch_size: int) -> dict | None:
    """``{entry: largest shape}`` over the training batches of ``stages`` (``[(name, items)]``,
    each stage's items in chunks of ``batch_size``), for ``adapter.widen_batch``; None for an
    adapter without it.

    A batch's shapes depend only on its longest row and largest label set, so the maximum over
    any chunking of the items is the maximum over the batches the stages train on.
    """
    if getattr(adapter, "widen_batch", None) is None:
        return None
    saved, adapter.min_width = getattr(adapter, "min_width", None), None
    shapes: dict = {}
    try:
        for _, items in stages:
            for s in range(0, len(items), batch_size):
                for key, value in adapter.train_batch(items[s:s + batch_size]).items():
                    old = shapes.get(key, value.shape)
                    shapes[key] = tuple(max(a, b) for a, b in zip(old, value.shape))
    finally:
        adapter.min_width = saved
    return shapes
