"""Padding and bucketing of token rows: the one place every batch gets its shape.

Tokenisation (``_batching``), the model families' generation and scoring, and the trainer's
compact batches all pad here, so a row's layout (which side, which fill, which mask) is the
same wherever it is built. Jitted code compiles once per shape, so lengths are rounded up
(``round_up``, ``bucket_length``, ``compact_width``): few shapes, few compiles.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

PAD_MULTIPLE = 16
"""Compact batches: sequence lengths are rounded up to a multiple of this (bounded compiles)."""

SEQ_KEYS = ("input_ids", "attention_mask", "loss_mask", "token_type_ids")
"""Batch entries whose second axis is the token axis (right padding: 0, input_ids: pad id)."""


def round_up(n: int, multiple: int) -> int:
    """Smallest multiple of ``multiple`` that is >= n (n itself when multiple <= 1)."""
    if multiple <= 1:
        return n
    return -(-n // multiple) * multiple


def bucket_length(n: int, minimum: int = 8, linear_above: int | None = None) -> int:
    """Smallest power of two >= max(n, minimum); with ``linear_above``, lengths past it round
    up to multiples of it instead of doubling.

    Two rules on purpose: decoder generation and scoring (Llama) pass ``linear_above=256``,
    since a prompt of 300 tokens padded to 512 would nearly double the attention work there;
    the encoder families (T5, BERT) keep doubling, which caps compiles for their scoring at
    one per power of two. Both are kept as they were, so the numbers (and the compiled
    shapes) do not change.
    """
    n = max(int(n), minimum)
    if linear_above is not None and n > linear_above:
        return -(-n // linear_above) * linear_above
    return 1 << max(0, n - 1).bit_length()


def pad_token_rows(rows: Sequence[Sequence[int]], length: int, pad_id: int, *,
                   left: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """(ids, mask), int32 (len(rows), length): each row right- (or left-) aligned, ``pad_id``
    elsewhere, mask 1 on the row's tokens. ValueError for a row longer than ``length``."""
    ids = np.full((len(rows), length), pad_id, np.int32)
    mask = np.zeros((len(rows), length), np.int32)
    for i, row in enumerate(rows):
        if len(row) > length:
            raise ValueError(f"row {i} has {len(row)} tokens, more than the length {length}")
        if len(row):
            sl = slice(length - len(row), length) if left else slice(0, len(row))
            ids[i, sl], mask[i, sl] = row, 1
    return ids, mask


def fix_width(arr: np.ndarray, width: int, fill: int) -> np.ndarray:
    """Pad (or cut) the last axis to ``width`` so every batch has one shape."""
    if arr.shape[-1] >= width:
        return arr[..., :width]
    pad = np.full((*arr.shape[:-1], width - arr.shape[-1]), fill, arr.dtype)
    return np.concatenate([arr, pad], axis=-1)


def pad_batch(batch: dict[str, np.ndarray], rows: int) -> dict[str, np.ndarray]:
    """Append all-zero rows (no attention, no loss) up to ``rows``: one batch shape for jit."""
    out = {}
    for k, v in batch.items():
        missing = rows - v.shape[0]
        if missing < 0:
            raise ValueError(f"batch has {v.shape[0]} rows, more than {rows}")
        fill = np.zeros((missing, *v.shape[1:]), v.dtype)
        out[k] = np.concatenate([v, fill], axis=0) if missing else v
    return out


def compact_width(rows_lengths, max_len: int, multiple: int = PAD_MULTIPLE) -> int:
    """Longest length rounded up to ``multiple``, capped at ``max_len`` (at least 1)."""
    longest = max(rows_lengths, default=1)
    return max(1, min(round_up(longest, multiple), max_len))


def length_sorted_chunks(lengths, size: int) -> list[np.ndarray]:
    """Indices cut into chunks of ``size`` after a stable sort by length (less padding)."""
    order = np.argsort(np.asarray(lengths), kind="stable")
    return [order[s:s + size] for s in range(0, len(order), size)]


def widen(batch: dict, width: int, pad_id: int) -> dict:
    """``batch`` with its token axis right-padded to ``width`` (no-op when already as wide)."""
    out = dict(batch)
    for key in SEQ_KEYS:
        if key in out and out[key].shape[1] < width:
            v = out[key]
            fill = pad_id if key == "input_ids" else 0
            out[key] = np.concatenate(
                [v, np.full((v.shape[0], width - v.shape[1], *v.shape[2:]), fill, v.dtype)], axis=1)
    return out


def same_width(batches: list[dict], pad_id: int) -> list[dict]:
    """Every batch padded to the widest one's token width (one compiled shape for the list)."""
    width = max((b["input_ids"].shape[1] for b in batches), default=0)
    return [widen(b, width, pad_id) for b in batches]
