"""Jitted T5 inference: forward, greedy generation with a KV cache, option scoring.

Option scoring is classification as generation: for input x and candidate answer y (tokens
y_1..y_n followed by EOS),

    score(x, y) = sum_t log p(y_t | x, y_<t)       (teacher forcing, one decoder pass)

Greedy generation encodes once, precomputes every layer's cross-attention keys/values, and
decodes one token per step against a self-attention cache of fixed length ``max_new_tokens``
(so one compiled program serves every step).

Jitted functions take ``(graphdef, state)`` from ``nnx.split``: the graph definition is static,
the parameters are ordinary arguments, so a fine-tuned model reuses the compiled program.
Token batches are padded to power-of-two lengths and fixed batch sizes for the same reason.
"""

from __future__ import annotations

import functools
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from asvd_jax.data import bucket_length, pad_token_rows

_NEG = -1e30


@functools.partial(jax.jit, static_argnums=0)
def _forward(graphdef, state, input_ids, attention_mask, decoder_input_ids, decoder_attention_mask):
    return nnx.merge(graphdef, state)(input_ids, attention_mask, decoder_input_ids, decoder_attention_mask)


def forward(model, input_ids, attention_mask, decoder_input_ids, decoder_attention_mask=None) -> jax.Array:
    """Jitted ``model(...)``: float32 logits (batch, target_len, vocab)."""
    graphdef, state = nnx.split(model)
    return _forward(graphdef, state, jnp.asarray(input_ids), jnp.asarray(attention_mask),
                    jnp.asarray(decoder_input_ids),
                    None if decoder_attention_mask is None else jnp.asarray(decoder_attention_mask))


@functools.partial(jax.jit, static_argnums=(0, 4))
def _generate(graphdef, state, input_ids, attention_mask, max_new_tokens):
    model = nnx.merge(graphdef, state)
    cfg = model.config
    batch = input_ids.shape[0]
    enc = model.encode(input_ids, attention_mask)
    cross_kv = model.cross_keys_values(enc)
    cross_bias = jnp.where(attention_mask.astype(bool)[:, None, None, :], 0.0, _NEG)
    cache_shape = (batch, max_new_tokens, cfg.num_heads, cfg.d_kv)
    caches = [(jnp.zeros(cache_shape, model.dtype), jnp.zeros(cache_shape, model.dtype))
              for _ in model.decoder.layers]
    key_pos = jnp.arange(max_new_tokens)
    rel_attn = model.decoder.layers[0].self_attn

    def step(i, carry):
        token, caches, done, out = carry
        y = model.embed(token[:, None])
        written = (key_pos <= i)[None, None, None, :]
        self_bias = jnp.where(written, rel_attn.position_bias(i[None], key_pos)[None], _NEG)
        new_caches = []
        for layer, kv, cache in zip(model.decoder.layers, cross_kv, caches):
            y, cache = layer(y, self_bias, kv, cross_bias, cache=cache, index=i)
            new_caches.append(cache)
        logits = model.head(model.decoder.final_norm(y))[:, 0]
        nxt = jnp.where(done, cfg.pad_token_id, jnp.argmax(logits, axis=-1).astype(jnp.int32))
        return nxt, new_caches, done | (nxt == cfg.eos_token_id), out.at[:, i].set(nxt)

    start = jnp.full((batch,), cfg.decoder_start_token_id, jnp.int32)
    init = (start, caches, jnp.zeros((batch,), bool), jnp.zeros((batch, max_new_tokens), jnp.int32))
    return jax.lax.fori_loop(0, max_new_tokens, step, init)[3]


def generate(model, input_ids, attention_mask, max_new_tokens: int) -> np.ndarray:
    """Greedy decoding: (batch, max_new_tokens) int32; after EOS a row holds ``pad_token_id``.

    The decoder start token is not included.
    """
    if not isinstance(max_new_tokens, int) or max_new_tokens <= 0:
        raise ValueError(f"generate: max_new_tokens must be a positive int, got {max_new_tokens!r}")
    input_ids = jnp.asarray(input_ids, jnp.int32)
    attention_mask = jnp.asarray(attention_mask, jnp.int32)
    if input_ids.ndim != 2 or attention_mask.shape != input_ids.shape:
        raise ValueError(
            f"generate: input_ids {input_ids.shape} and attention_mask {attention_mask.shape} must be equal (batch, seq)"
        )
    graphdef, state = nnx.split(model)
    return np.asarray(_generate(graphdef, state, input_ids, attention_mask, max_new_tokens))


@functools.partial(jax.jit, static_argnums=0)
def _score(graphdef, state, input_ids, attention_mask, decoder_input_ids, targets, target_mask):
    """(b, m) summed log-likelihoods of m targets (m, t) for each of b inputs."""
    model = nnx.merge(graphdef, state)
    b, m = input_ids.shape[0], targets.shape[0]
    enc = jnp.repeat(model.encode(input_ids, attention_mask), m, axis=0)
    mask = jnp.repeat(attention_mask, m, axis=0)
    logits = model.decode(jnp.tile(decoder_input_ids, (b, 1)), enc, mask)
    logp = jax.nn.log_softmax(logits, axis=-1)
    picked = jnp.take_along_axis(logp, jnp.tile(targets, (b, 1))[..., None], axis=-1)[..., 0]
    return jnp.sum(picked * jnp.tile(target_mask, (b, 1)), axis=-1).reshape(b, m)


def score_options(model, tokenizer, inputs: Sequence[str], options: Sequence[str], *,
                  batch_size: int = 8, max_input_len: int = 512) -> np.ndarray:
    """(len(inputs), len(options)) float32: log p(option + EOS | input), summed over tokens.

    Inputs are encoded without special tokens plus EOS (T5's format), truncated to
    ``max_input_len`` tokens. ``batch_size`` inputs are scored per call, each against every option.
    """
    if isinstance(inputs, str) or isinstance(options, str):
        raise TypeError("score_options: inputs and options must be sequences of strings, not a string")
    if not options:
        raise ValueError("score_options: options is empty")
    cfg = model.config
    eos = cfg.eos_token_id if tokenizer.eos_id is None else tokenizer.eos_id
    pad = cfg.pad_token_id
    enc_rows = [list(tokenizer.encode(t))[: max_input_len - 1] + [eos] for t in inputs]
    opt_rows = [list(tokenizer.encode(o)) + [eos] for o in options]
    t_len = bucket_length(max(map(len, opt_rows)))
    targets, target_mask = pad_token_rows(opt_rows, t_len, pad)
    decoder_in = np.concatenate([np.full((len(options), 1), cfg.decoder_start_token_id, np.int32), targets[:, :-1]], 1)
    graphdef, state = nnx.split(model)
    out = np.zeros((len(inputs), len(options)), np.float32)
    for lo in range(0, len(inputs), batch_size):
        chunk = enc_rows[lo : lo + batch_size]
        # Fixed batch shape: filler rows hold one EOS token and are dropped afterwards.
        chunk = chunk + [[eos]] * (batch_size - len(chunk))
        ids, mask = pad_token_rows(chunk, bucket_length(max(map(len, chunk))), pad)
        scores = _score(graphdef, state, ids, mask, decoder_in, targets, target_mask.astype(np.float32))
        n = min(batch_size, len(inputs) - lo)
        out[lo : lo + n] = np.asarray(scores)[:n]
    return out
