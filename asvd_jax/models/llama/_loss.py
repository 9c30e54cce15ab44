"""Compact decoder training batches: the LM head only where the answer-only loss is.

The answer-only loss reads log p at a handful of positions (the answer and EOS), but the
full-logits loss projects every position onto the vocabulary (SmolLM2: 49152 x 576 per
token, about a fifth of a step's work, plus a log-softmax over (batch, seq, vocab)).
``loss_positions`` lists the positions that carry loss, padded to a multiple of
``LOSS_SLOTS``; ``gathered_answer_loss`` gathers the final hidden states there and runs the
head on those rows only. Same sum, same denominator: the loss equals the full-logits one up
to float rounding (tests/test_cl_compact.py checks it in float64). Rows are padded to the
batch's longest row rounded up to ``asvd_jax.data.PAD_MULTIPLE`` tokens, not to ``max_len``.

Every batch entry keeps the batch axis first (EWC's per-example Fisher slices rows).
"""

from __future__ import annotations

import numpy as np

from asvd_jax.data import round_up

LOSS_SLOTS = 8
"""Loss positions per row are rounded up to a multiple of this (labels are 1-4 tokens)."""


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
