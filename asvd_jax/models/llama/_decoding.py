"""Jitted forward, greedy generation with a KV cache, and log-likelihood scoring of options.

Every jitted function takes the model as ``nnx.split`` (graphdef static, state traced), so a
second call with the same shapes reuses the compiled program. Lengths and batch sizes are
rounded up to buckets (``_bucket``) so that varying prompts hit few shapes.

Scoring is generic: ``score_token_options`` needs only a function that returns, for a batch
of (prompt, option) pairs, the log-probability of each option token given the prompt and the
option tokens before it. The decoder adapter concatenates [left-padded prompt | right-padded
option]; an encoder-decoder adapter feeds the prompt to the encoder and the option to the
decoder (T5 reuses ``score_token_options`` that way).
"""

from __future__ import annotations

import functools
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from asvd_jax.data import bucket_length, pad_token_rows
from asvd_jax.models.llama._model import positions_from_mask


def _bucket(n: int, minimum: int = 16) -> int:
    """Decoder lengths: powers of two up to 256 tokens, multiples of 256 above (``bucket_length``)."""
    return bucket_length(n, minimum, linear_above=256)


# ---------------------------------------------------------------------------------------------
# Forward and per-token log-probabilities


@functools.partial(jax.jit, static_argnums=0)
def _forward_jit(graphdef, state, input_ids, attention_mask):
    return nnx.merge(graphdef, state)(input_ids, attention_mask)


def forward(model, input_ids, attention_mask=None) -> jax.Array:
    """Jitted ``model(input_ids, attention_mask)``: float32 logits (batch, seq, vocab)."""
    input_ids = jnp.asarray(input_ids, jnp.int32)
    if attention_mask is None:
        attention_mask = jnp.ones(input_ids.shape, jnp.int32)
    graphdef, state = nnx.split(model)
    return _forward_jit(graphdef, state, input_ids, jnp.asarray(attention_mask, jnp.int32))


def token_logprobs(model, input_ids, attention_mask=None) -> jax.Array:
    """out[b, t] = log p(input_ids[b, t] | input_ids[b, :t]) (float32), 0 at t = 0 and padding.

    Plain traced code: call it inside a jitted loss (answer-only LM loss = -sum(out * answer
    mask)) or through ``forward``-style jit yourself.
    """
    if attention_mask is None:
        attention_mask = jnp.ones(input_ids.shape, jnp.int32)
    logits = model(input_ids, attention_mask)[:, :-1]
    logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    picked = jnp.take_along_axis(logp, input_ids[:, 1:, None], axis=-1)[..., 0]
    # A token is scored only when both it and its predecessor are real tokens.
    valid = (attention_mask[:, 1:] > 0) & (attention_mask[:, :-1] > 0)
    picked = jnp.where(valid, picked, 0.0)
    return jnp.concatenate([jnp.zeros_like(picked[:, :1]), picked], axis=1)


# ---------------------------------------------------------------------------------------------
# Greedy generation


@functools.partial(jax.jit, static_argnums=(0, 4))
def _generate_jit(graphdef, state, ids, mask, max_new, stop_ids, pad_id):
    model = nnx.merge(graphdef, state)
    b, p = ids.shape
    cache = model.init_cache(b, p + max_new)
    key_valid = jnp.concatenate([mask, jnp.zeros((b, max_new), mask.dtype)], axis=1)
    hidden, cache = model.decode(ids, positions_from_mask(mask), key_valid, cache, 0)
    first = jnp.argmax(model.logits(hidden[:, -1:])[:, 0], axis=-1).astype(jnp.int32)
    lengths = mask.sum(axis=1).astype(jnp.int32)

    def cond(carry):
        t, _, done, *_ = carry
        return (t < max_new) & ~jnp.all(done)

    def body(carry):
        t, token, done, out, cache, key_valid = carry
        token = jnp.where(done, pad_id, token)
        out = out.at[:, t].set(token)
        done = done | jnp.isin(token, stop_ids)
        key_valid = key_valid.at[:, p + t].set(1)
        hidden, cache = model.decode(token[:, None], (lengths + t)[:, None], key_valid, cache, p + t)
        nxt = jnp.argmax(model.logits(hidden)[:, 0], axis=-1).astype(jnp.int32)
        return t + 1, nxt, done, out, cache, key_valid

    out = jnp.full((b, max_new), pad_id, jnp.int32)
    carry = (jnp.int32(0), first, jnp.zeros((b,), bool), out, cache, key_valid)
    return jax.lax.while_loop(cond, body, carry)[3]


def generate(model, prompt_ids: Sequence[Sequence[int]], max_new_tokens: int,
             eos_id: int | Sequence[int] | None = None, *, pad_id: int = 0) -> list[list[int]]:
    """Greedy continuation of each prompt; returns the new tokens, up to (excluding) eos.

    Prompts are left-padded to a bucketed length and the batch to a power of two, so calls
    with similar sizes share one compiled program; positions ignore the padding, so each row's
    tokens equal those of generating it alone. The loop stops once every row hit ``eos_id``.
    """
    if max_new_tokens < 1:
        raise ValueError(f"generate: max_new_tokens must be >= 1, got {max_new_tokens}")
    prompts = [list(map(int, p)) for p in prompt_ids]
    if not prompts or any(len(p) == 0 for p in prompts):
        raise ValueError("generate: prompt_ids must be a non-empty list of non-empty token lists")
    stops = [] if eos_id is None else ([eos_id] if isinstance(eos_id, int) else list(eos_id))
    # -1 never matches a token: it stands in for "no stop id" with a fixed-shape array.
    stop_arr = jnp.asarray(stops or [-1], jnp.int32)
    rows = prompts + [[pad_id]] * (_bucket(len(prompts), 1) - len(prompts))
    ids, mask = pad_token_rows(rows, _bucket(max(map(len, prompts))), pad_id, left=True)
    graphdef, state = nnx.split(model)
    out = np.asarray(_generate_jit(graphdef, state, jnp.asarray(ids), jnp.asarray(mask),
                                   int(max_new_tokens), stop_arr, jnp.int32(pad_id)))
    results = []
    for row in out[: len(prompts)].tolist():
        cut = next((i for i, tok in enumerate(row) if tok in stops), len(row))
        results.append(row[:cut])
    return results


# ---------------------------------------------------------------------------------------------
# Option scoring

# (prompt ids, prompt mask, option ids, option mask) -> log p of each option token (b, O)
OptionLogprobFn = Callable[[jax.Array, jax.Array, jax.Array, jax.Array], jax.Array]


def score_token_options(logprob_fn: OptionLogprobFn, prompt_ids: Sequence[Sequence[int]],
                        option_ids: Sequence[Sequence[int]], *, pad_id: int = 0,
                        batch_size: int = 16, reduction: str = "sum") -> np.ndarray:
    """Log-likelihood of every option given every prompt: array (n_prompts, n_options).

    score[i, j] = sum_k log p(o_jk | prompt_i, o_j<k), or that sum / len(o_j) with
    ``reduction="mean"``. Pairs run in fixed-size batches (the last one padded) over bucketed
    lengths; prompts are left-padded and options right-padded, the layout ``logprob_fn`` gets.
    ``logprob_fn`` should be jitted; it is called once per batch.
    """
    if reduction not in ("sum", "mean"):
        raise ValueError(f"score_token_options: reduction must be 'sum' or 'mean', got {reduction!r}")
    if not option_ids or any(len(o) == 0 for o in option_ids):
        raise ValueError("score_token_options: every option must have at least one token")
    if not prompt_ids:
        raise ValueError("score_token_options: no prompts")
    pairs = [(i, j) for i in range(len(prompt_ids)) for j in range(len(option_ids))]
    p_len = _bucket(max(map(len, prompt_ids)))
    o_len = _bucket(max(map(len, option_ids)), minimum=4)
    scores = np.zeros(len(pairs), np.float64)
    for start in range(0, len(pairs), batch_size):
        chunk = pairs[start:start + batch_size]
        chunk = chunk + [chunk[-1]] * (batch_size - len(chunk))  # fixed shape, results dropped
        pi, pm = pad_token_rows([prompt_ids[i] for i, _ in chunk], p_len, pad_id, left=True)
        oi, om = pad_token_rows([option_ids[j] for _, j in chunk], o_len, pad_id, left=False)
        lp = np.asarray(logprob_fn(jnp.asarray(pi), jnp.asarray(pm), jnp.asarray(oi),
                                   jnp.asarray(om)), np.float64)
        total = (lp * om).sum(axis=1)
        if reduction == "mean":
            total = total / om.sum(axis=1)
        n = min(batch_size, len(pairs) - start)
        scores[start:start + n] = total[:n]
    return scores.reshape(len(prompt_ids), len(option_ids))


@functools.partial(jax.jit, static_argnums=0)
def _decoder_option_logprobs(graphdef, state, pi, pm, oi, om):
    model = nnx.merge(graphdef, state)
    p = pi.shape[1]
    ids, mask = jnp.concatenate([pi, oi], axis=1), jnp.concatenate([pm, om], axis=1)
    # The token at slot p + k is predicted by the hidden state at slot p + k - 1; only those
    # positions go through the (vocabulary-wide) head.
    hidden = model.hidden_states(ids, mask)[:, p - 1:-1]
    logp = jax.nn.log_softmax(model.logits(hidden), axis=-1)
    return jnp.take_along_axis(logp, oi[..., None], axis=-1)[..., 0]


def score_options(model, tokenizer, prompts: Sequence[str], options: Sequence[str], *,
                  reduction: str = "sum", batch_size: int = 16) -> np.ndarray:
    """Decoder log-likelihood of each option text after each prompt: (n_prompts, n_options).

    Text is tokenised separately (prompt with the tokenizer's special tokens, option without),
    so write options with their leading space (" positive") as they follow the prompt.
    """
    prompt_ids = [tokenizer.encode(p, add_special_tokens=True) for p in prompts]
    option_ids = [tokenizer.encode(o) for o in options]
    if any(len(p) == 0 for p in prompt_ids):
        raise ValueError("score_options: a prompt encodes to no tokens")
    graphdef, state = nnx.split(model)
    fn = functools.partial(_decoder_option_logprobs, graphdef, state)
    return score_token_options(fn, prompt_ids, option_ids, pad_id=tokenizer.pad_id,
                               batch_size=batch_size, reduction=reduction)


# ---------------------------------------------------------------------------------------------
# Both evaluation protocols from one prompt pass (the trainer's evaluation)
#
# One prompt pass for both evaluation protocols of a decoder.
#
# The prompt (left-padded to a fixed length) runs once into a KV cache. From that cache:
#
# * greedy generation of ``max_new`` tokens (the paper's protocol: exact match of the answer);
# * the log-likelihood of every option (its tokens and EOS), each option decoded from the same
#   prompt cache: ``score[b, o] = sum_k log p(o_k | prompt_b, o_<k)``.
#
# The prompt dominates the cost (options and answers are a few tokens), so this is about half
# the cost of generating and scoring separately, and ``n_options`` times cheaper than scoring
# every (prompt, option) pair from scratch. With fixed shapes (prompt length, option slots)
# every task of a sequence shares one compiled program.


def generate_and_score(model, ids, mask, opt_ids, opt_mask, max_new: int, eos_id: int, pad_id: int,
                       *, early_exit: bool = True, n_options=None):
    """Traced. ids/mask (b, p) left-padded prompts; opt_ids/opt_mask (o, l) right-padded options.

    Returns (greedy tokens (b, max_new) with ``pad_id`` after EOS, option scores (b, o)).
    Greedy decoding stops once every row has produced EOS (a ``while_loop``; the tokens it
    would still have written are all ``pad_id``) and runs at most ``max_new - 1`` decode steps
    (the first token comes from the prompt pass). ``early_exit=False``: the former fixed
    ``fori_loop`` of ``max_new`` decode steps (same outputs; kept for the benchmark).
    ``n_options`` (may be traced): only the first ``n_options`` option slots are real; the
    others are not decoded and score 0 (a traced count keeps one program for every task).
    """
    b, p = ids.shape
    length = opt_ids.shape[1]
    cache = model.init_cache(b, p + max(length, max_new))
    span = cache[0][0].shape[1] - p
    key_valid = jnp.concatenate([mask, jnp.zeros((b, span), mask.dtype)], axis=1)
    hidden, cache = model.decode(ids, positions_from_mask(mask), key_valid, cache, 0)
    last = model.logits(hidden[:, -1:])[:, 0]  # (b, V): the distribution of the first new token
    start = mask.sum(axis=1).astype(jnp.int32)  # position of the first new token
    first = jnp.argmax(last, axis=-1).astype(jnp.int32)
    out = jnp.full((b, max_new), pad_id, jnp.int32)

    if early_exit:
        def cond(carry):
            t, _, done, *_ = carry
            return (t < max_new) & ~jnp.all(done)

        def step(carry):
            # Decode the token written at t - 1 (pad for a row that ended before it), write
            # the next one at t.
            t, prev, done, out, kv, c = carry
            kv = kv.at[:, p + t - 1].set(1)
            h, c = model.decode(prev[:, None], (start + t - 1)[:, None], kv, c, p + t - 1)
            token = jnp.argmax(model.logits(h)[:, 0], axis=-1).astype(jnp.int32)
            token = jnp.where(done, pad_id, token)
            return t + 1, token, done | (token == eos_id), out.at[:, t].set(token), kv, c

        carry = (jnp.int32(1), first, first == eos_id, out.at[:, 0].set(first), key_valid, cache)
        tokens = jax.lax.while_loop(cond, step, carry)[3]
    else:
        def greedy(t, carry):
            token, done, out, kv, c = carry
            token = jnp.where(done, pad_id, token)
            out = out.at[:, t].set(token)
            done = done | (token == eos_id)
            kv = kv.at[:, p + t].set(1)
            h, c = model.decode(token[:, None], (start + t)[:, None], kv, c, p + t)
            nxt = jnp.argmax(model.logits(h)[:, 0], axis=-1).astype(jnp.int32)
            return nxt, done, out, kv, c

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

    if opt_ids.shape[0] == 0:  # generation only: no option is decoded
        scores = jnp.zeros((b, 0), first_logp.dtype)
    elif n_options is None:
        scores = jax.lax.map(one_option, (opt_ids, opt_mask)).T
    else:
        def score_slot(j, acc):
            return acc.at[j].set(one_option((opt_ids[j], opt_mask[j])))

        acc = jnp.zeros((opt_ids.shape[0], b), first_logp.dtype)
        scores = jax.lax.fori_loop(0, n_options, score_slot, acc).T
    return tokens, scores
