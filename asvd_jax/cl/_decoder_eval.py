"""One prompt pass for both evaluation protocols of a decoder.

The prompt (left-padded to a fixed length) runs once into a KV cache. From that cache:

* greedy generation of ``max_new`` tokens (the paper's protocol: exact match of the answer);
* the log-likelihood of every option (its tokens and EOS), each option decoded from the same
  prompt cache: ``score[b, o] = sum_k log p(o_k | prompt_b, o_<k)``.

The prompt dominates the cost (options and answers are a few tokens), so this is about half
the cost of generating and scoring separately, and ``n_options`` times cheaper than scoring
every (prompt, option) pair from scratch. With fixed shapes (prompt length, option slots)
every task of a sequence shares one compiled program.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def generate_and_score(model, ids, mask, opt_ids, opt_mask, max_new: int, eos_id: int, pad_id: int):
    """Traced. ids/mask (b, p) left-padded prompts; opt_ids/opt_mask (o, l) right-padded options.

    Returns (greedy tokens (b, max_new) with ``pad_id`` after EOS, option scores (b, o)).
    """
    from asvd_jax.models.llama import positions_from_mask

    b, p = ids.shape
    length = opt_ids.shape[1]
    cache = model.init_cache(b, p + max(length, max_new))
    span = cache[0][0].shape[1] - p
    key_valid = jnp.concatenate([mask, jnp.zeros((b, span), mask.dtype)], axis=1)
    hidden, cache = model.decode(ids, positions_from_mask(mask), key_valid, cache, 0)
    last = model.logits(hidden[:, -1:])[:, 0]  # (b, V): the distribution of the first new token
    start = mask.sum(axis=1).astype(jnp.int32)  # position of the first new token

    def greedy(t, carry):
        token, done, out, kv, c = carry
        token = jnp.where(done, pad_id, token)
        out = out.at[:, t].set(token)
        done = done | (token == eos_id)
        kv = kv.at[:, p + t].set(1)
        h, c = model.decode(token[:, None], (start + t)[:, None], kv, c, p + t)
        nxt = jnp.argmax(model.logits(h)[:, 0], axis=-1).astype(jnp.int32)
        return nxt, done, out, kv, c

    first = jnp.argmax(last, axis=-1).astype(jnp.int32)
    out = jnp.full((b, max_new), pad_id, jnp.int32)
    carry = (first, jnp.zeros((b,), bool), out, key_valid, cache)
    tokens = jax.lax.fori_loop(0, max_new, greedy, carry)[2]

    first_logp = jax.nn.log_softmax(last, axis=-1)

    def one_option(args):
        o_ids, o_mask = args
        valid = key_valid.at[:, p:p + length].set(jnp.broadcast_to(o_mask, (b, length)))
        pos = start[:, None] + jnp.arange(length)[None, :]
        h, _ = model.decode(jnp.broadcast_to(o_ids, (b, length)), pos, valid, cache, p)
        logp = jax.nn.log_softmax(model.logits(h[:, :-1]), axis=-1)
        rest = jnp.take_along_axis(logp, jnp.broadcast_to(o_ids[1:], (b, length - 1))[..., None], -1)[..., 0]
        tok = jnp.concatenate([first_logp[:, o_ids[0]][:, None], rest], axis=1)
        return (tok * o_mask[None, :].astype(tok.dtype)).sum(axis=1)

    scores = jax.lax.map(one_option, (opt_ids, opt_mask)).T
    return tokens, scores
