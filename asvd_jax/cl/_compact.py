"""Compact training batches: fewer padded tokens, and the LM head only where the loss is.

Two costs of the fixed ``max_len`` layout that buy nothing:

* Padding. Rows are padded to the longest row of the batch rounded up to ``PAD_MULTIPLE``
  tokens (capped at ``max_len``), not to ``max_len``: a jitted step then sees at most
  ``max_len / PAD_MULTIPLE`` sequence lengths, so compiles stay bounded.
* The decoder's LM head. The answer-only loss reads log p at a handful of positions (the
  answer and EOS), but the full-logits loss projects every position onto the vocabulary
  (SmolLM2: 49152 x 576 per token, about a fifth of a step's work, plus a log-softmax over
  (batch, seq, vocab)). ``loss_positions`` lists the positions that carry loss, padded to a
  multiple of ``LOSS_SLOTS``; ``gathered_answer_loss`` gathers the final hidden states there
  and runs the head on those rows only. Same sum, same denominator: the loss equals the
  full-logits one up to float rounding (tests/test_cl_compact.py checks it in float64).

Every batch entry keeps the batch axis first (EWC's per-example Fisher slices rows).
"""

from __future__ import annotations

import numpy as np

PAD_MULTIPLE = 16
"""Sequence lengths are rounded up to a multiple of this (bounded number of compiles)."""
LOSS_SLOTS = 8
"""Loss positions per row are rounded up to a multiple of this (labels are 1-4 tokens)."""


def round_up(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple


def loss_positions(input_ids: np.ndarray, attention_mask: np.ndarray, loss_mask: np.ndarray,
                   slots: int = LOSS_SLOTS) -> dict[str, np.ndarray]:
    """Where the answer-only loss reads the logits, per row (int32 / float32, (B, K)).

    ``loss_index[b, k]``: the position whose logits predict target token
    ``loss_target[b, k] = input_ids[b, t]`` for the k-th t with ``loss_mask[b, t] = 1``
    (index t - 1); ``loss_weight`` is 1 there and 0 in unused slots. As in
    ``models.llama.token_logprobs``, a target counts only when it and its predecessor are real
    tokens (``attention_mask``), and position 0 has no predecessor.
    """
    b, length = input_ids.shape
    valid = np.zeros_like(loss_mask, dtype=bool)
    valid[:, 1:] = (loss_mask[:, 1:] > 0) & (attention_mask[:, 1:] > 0) & (attention_mask[:, :-1] > 0)
    counts = valid.sum(axis=1)
    k = max(round_up(int(counts.max(initial=0)), slots), slots)
    index = np.zeros((b, k), np.int32)
    target = np.zeros((b, k), np.int32)
    weight = np.zeros((b, k), np.float32)
    for i in range(b):
        ts = np.flatnonzero(valid[i])
        index[i, :len(ts)] = ts - 1
        target[i, :len(ts)] = input_ids[i, ts]
        weight[i, :len(ts)] = 1.0
    return {"loss_index": index, "loss_target": target, "loss_weight": weight}


def gathered_answer_loss(model, batch):
    """Traced. Mean negative log-likelihood over the answer tokens, head at loss positions only.

    Denominator: ``loss_mask.sum()``, as in the full-logits loss (the two agree whenever every
    masked token has a real predecessor, which ``decoder_batch`` guarantees).
    """
    import jax
    import jax.numpy as jnp

    hidden = model.hidden_states(batch["input_ids"], batch["attention_mask"])  # (B, L, D)
    picked_h = jnp.take_along_axis(hidden, batch["loss_index"][..., None], axis=1)  # (B, K, D)
    logp = jax.nn.log_softmax(model.logits(picked_h).astype(jnp.float32), axis=-1)
    picked = jnp.take_along_axis(logp, batch["loss_target"][..., None], axis=-1)[..., 0]
    weight = batch["loss_weight"].astype(jnp.float32)
    denom = jnp.maximum(batch["loss_mask"].astype(jnp.float32).sum(), 1.0)
    return -(picked * weight).sum() / denom


def compact_width(rows_lengths, max_len: int, multiple: int = PAD_MULTIPLE) -> int:
    """Longest length rounded up to ``multiple``, capped at ``max_len`` (at least 1)."""
    longest = max(rows_lengths, default=1)
    return max(1, min(round_up(longest, multiple), max_len))


def length_sorted_chunks(lengths, size: int) -> list[np.ndarray]:
    """Indices cut into chunks of ``size`` after a stable sort by length (less padding)."""
    order = np.argsort(np.asarray(lengths), kind="stable")
    return [order[s:s + size] for s in range(0, len(order), size)]


SEQ_KEYS = ("input_ids", "attention_mask", "loss_mask", "token_type_ids")
"""Batch entries whose second axis is the token axis (right padding: 0, input_ids: pad id)."""

SHORT_STAGE = 32
"""A stage with fewer micro-batches than this trains at one width (its longest batch's):
a compile of the step costs about as much as 6 steps (benchmarks/train_speed.py, MiniLM),
so a few extra compiles would eat what a short stage saves on padding."""


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


def stage_width(adapter, chunks: list) -> int | None:
    """The token width a short stage trains at (its widest batch), None for a long stage
    (each batch at its own rounded width) or for an adapter without compact batches."""
    if not getattr(adapter, "compact", False) or len(chunks) >= SHORT_STAGE:
        return None
    saved, adapter.min_width = getattr(adapter, "min_width", None), None
    try:
        return max(adapter.train_batch(ch)["input_ids"].shape[1] for ch in chunks)
    finally:
        adapter.min_width = saved
