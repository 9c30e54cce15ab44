"""Llama-family decoder in Flax NNX: LLaMA-2/3, Mistral-style models and SmolLM2.

For hidden states h (batch, seq, d) each of the ``num_layers`` blocks computes

    a = h + o_proj(attn(rope(q_proj(n1)), rope(k_proj(n1)), v_proj(n1))),   n1 = rms(h) * g1
    h' = a + down_proj(silu(gate_proj(n2)) * up_proj(n2)),                   n2 = rms(a) * g2

with rms(x) = x / sqrt(mean(x^2) + eps), grouped-query causal attention (``num_heads`` query
heads share ``num_kv_heads`` key/value heads) and the Hugging Face rotary embedding, which
rotates the pairs (x_i, x_{i + head_dim/2}). Logits are rms(h_L) * g_f @ lm_head, where the
head is the transposed embedding when ``tie_word_embeddings``.

Parameter paths (what target patterns, rank plans and captures key on)::

    embed/embedding                                (vocab, d)
    layers/<i>/attn/{q,k,v,o}_proj/kernel          (in, out)
    layers/<i>/mlp/{gate,up,down}_proj/kernel      (in, out)
    layers/<i>/{input,post_attention}_norm/scale   (d,)
    final_norm/scale                               (d,)
    lm_head/kernel                                 (d, vocab), absent when tied

Positions are ``cumsum(attention_mask) - 1``, so right padding, left padding and padding in
the middle (prompt left-padded, answer right-padded) all give every real token the position it
would have alone. Loaders and export are in ``_io``, generation and scoring in ``_decoding``;
the package re-exports them.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Mapping

import jax
import jax.numpy as jnp
from flax import nnx

from asvd_jax.models._capture import assign_capture_names, is_capturing
from asvd_jax.models._layers import Linear

# Attention projections and MLP matrices of every block: what the method protects by default.
DEFAULT_TARGETS: tuple[str, ...] = (
    r"layers/\d+/attn/(q|k|v|o)_proj/kernel",
    r"layers/\d+/mlp/(gate|up|down)_proj/kernel",
)

ARCHITECTURES = ("LlamaForCausalLM", "MistralForCausalLM")
MODEL_TYPES = ("llama", "mistral")
_ROPE_TYPES = ("default", "linear", "llama3")


@dataclasses.dataclass(frozen=True)
class LlamaConfig:
    """Shape and numerics of a Llama-family decoder (the fields of a HF ``config.json``)."""

    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int | None = None
    """Per-head width; ``None`` means ``hidden_size // num_heads``."""
    rope_theta: float = 10000.0
    rope_scaling: tuple[tuple[str, Any], ...] | None = None
    """HF ``rope_scaling`` as sorted (key, value) pairs (hashable); types default/linear/llama3."""
    rms_norm_eps: float = 1e-6
    tie_word_embeddings: bool = False
    attention_bias: bool = False
    mlp_bias: bool = False
    max_position_embeddings: int = 2048
    bos_token_id: int | None = None
    eos_token_id: int | tuple[int, ...] | None = None
    pad_token_id: int | None = None
    model_type: str = "llama"

    def __post_init__(self):
        for name in ("vocab_size", "hidden_size", "intermediate_size", "num_layers",
                     "num_heads", "num_kv_heads"):
            value = getattr(self, name)
            if not isinstance(value, int) or value <= 0:
                raise ValueError(f"LlamaConfig.{name} must be a positive int, got {value!r}")
        if self.num_heads % self.num_kv_heads:
            raise ValueError(
                f"LlamaConfig: num_heads={self.num_heads} is not a multiple of "
                f"num_kv_heads={self.num_kv_heads}"
            )
        if self.head_dim is None and self.hidden_size % self.num_heads:
            raise ValueError(
                f"LlamaConfig: hidden_size={self.hidden_size} is not divisible by "
                f"num_heads={self.num_heads}; set head_dim"
            )
        if self.head_dim is None:  # normalised so that configs compare equal after a round trip
            object.__setattr__(self, "head_dim", self.hidden_size // self.num_heads)
        if self.head_size % 2:
            raise ValueError(f"LlamaConfig: head_dim={self.head_size} must be even for RoPE")
        rope_type = self.rope_scaling_dict.get("rope_type", "default")
        if rope_type not in _ROPE_TYPES:
            raise ValueError(
                f"LlamaConfig.rope_scaling: rope_type {rope_type!r} is not supported "
                f"(supported: {', '.join(_ROPE_TYPES)})"
            )

    @property
    def head_size(self) -> int:
        return self.head_dim

    @property
    def rope_scaling_dict(self) -> dict:
        return dict(self.rope_scaling or ())

    @classmethod
    def from_hf_dict(cls, d: Mapping[str, Any], source: str = "config.json") -> "LlamaConfig":
        """Build from a HF ``config.json`` dict (transformers 4.x or 5.x rope layout)."""
        archs = d.get("architectures") or []
        model_type = d.get("model_type")
        if model_type not in MODEL_TYPES and not any(a in ARCHITECTURES for a in archs):
            raise ValueError(
                f"{source}: unknown architecture (model_type={model_type!r}, architectures="
                f"{archs!r}); this loader reads {', '.join(ARCHITECTURES)}"
            )
        if d.get("hidden_act", "silu") != "silu":
            raise ValueError(f"{source}: hidden_act {d['hidden_act']!r} is not supported (silu only)")
        # transformers 5 nests rope settings in rope_parameters; 4.x uses rope_theta/rope_scaling.
        rope = dict(d.get("rope_parameters") or d.get("rope_scaling") or {})
        theta = float(d.get("rope_theta", rope.pop("rope_theta", 10000.0)))
        rope.pop("rope_theta", None)
        if "type" in rope and "rope_type" not in rope:
            rope["rope_type"] = rope.pop("type")
        if rope.get("rope_type", "default") == "default":
            rope = {}
        eos = d.get("eos_token_id")
        try:
            return cls(
                vocab_size=d["vocab_size"],
                hidden_size=d["hidden_size"],
                intermediate_size=d["intermediate_size"],
                num_layers=d["num_hidden_layers"],
                num_heads=d["num_attention_heads"],
                num_kv_heads=d.get("num_key_value_heads") or d["num_attention_heads"],
                head_dim=d.get("head_dim"),
                rope_theta=theta,
                rope_scaling=tuple(sorted(rope.items())) or None,
                rms_norm_eps=float(d.get("rms_norm_eps", 1e-6)),
                tie_word_embeddings=bool(d.get("tie_word_embeddings", False)),
                attention_bias=bool(d.get("attention_bias", False)),
                mlp_bias=bool(d.get("mlp_bias", False)),
                max_position_embeddings=int(d.get("max_position_embeddings", 2048)),
                bos_token_id=d.get("bos_token_id"),
                eos_token_id=tuple(eos) if isinstance(eos, list) else eos,
                pad_token_id=d.get("pad_token_id"),
                model_type=model_type if model_type in MODEL_TYPES else "llama",
            )
        except KeyError as e:
            raise ValueError(f"{source}: required key {e.args[0]!r} is missing") from e
        except ValueError as e:
            raise ValueError(f"{source}: {e}") from e

    def to_hf_dict(self) -> dict:
        """The ``config.json`` dict (legacy rope keys, which transformers 4.x and 5.x both read)."""
        eos = list(self.eos_token_id) if isinstance(self.eos_token_id, tuple) else self.eos_token_id
        arch = "MistralForCausalLM" if self.model_type == "mistral" else "LlamaForCausalLM"
        return {
            "architectures": [arch],
            "model_type": self.model_type,
            "vocab_size": self.vocab_size,
            "hidden_size": self.hidden_size,
            "intermediate_size": self.intermediate_size,
            "num_hidden_layers": self.num_layers,
            "num_attention_heads": self.num_heads,
            "num_key_value_heads": self.num_kv_heads,
            "head_dim": self.head_size,
            "hidden_act": "silu",
            "rope_theta": self.rope_theta,
            "rope_scaling": self.rope_scaling_dict or None,
            "rms_norm_eps": self.rms_norm_eps,
            "tie_word_embeddings": self.tie_word_embeddings,
            "attention_bias": self.attention_bias,
            "mlp_bias": self.mlp_bias,
            "max_position_embeddings": self.max_position_embeddings,
            "bos_token_id": self.bos_token_id,
            "eos_token_id": eos,
            "pad_token_id": self.pad_token_id,
        }


def rope_inv_freq(config: LlamaConfig) -> jax.Array:
    """Inverse frequencies theta^(-2i/head_dim), rescaled as HF does for linear / llama3 rope."""
    dim = config.head_size
    inv = 1.0 / (config.rope_theta ** (jnp.arange(0, dim, 2, dtype=jnp.float32) / dim))
    scaling = config.rope_scaling_dict
    kind = scaling.get("rope_type", "default")
    if kind == "linear":
        inv = inv / scaling["factor"]
    elif kind == "llama3":
        # Long wavelengths are slowed by `factor`, short ones kept, a smooth blend in between.
        factor, low, high = scaling["factor"], scaling["low_freq_factor"], scaling["high_freq_factor"]
        old_len = scaling["original_max_position_embeddings"]
        wavelen = 2 * math.pi / inv
        smooth = (old_len / wavelen - low) / (high - low)
        blended = (1 - smooth) * inv / factor + smooth * inv
        inv = jnp.where(wavelen > old_len / low, inv / factor, inv)
        medium = (wavelen <= old_len / low) & (wavelen >= old_len / high)
        inv = jnp.where(medium, blended, inv)
    return inv


def _rotate(x: jax.Array, cos: jax.Array, sin: jax.Array) -> jax.Array:
    """HF rotary embedding on half-split pairs; x (b, s, heads, d), cos/sin (b, s, d/2)."""
    half = x.shape[-1] // 2
    x1, x2 = x[..., :half], x[..., half:]
    cos, sin = cos[:, :, None, :], sin[:, :, None, :]
    return jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1).astype(x.dtype)


class RMSNorm(nnx.Module):
    """y = x / sqrt(mean(x^2) + eps) * (offset + scale), the statistics in float32 whatever the dtype.

    ``offset=1`` is Gemma's zero-centred weight (HF stores ``scale`` with the 1 taken out, and
    a fresh norm is the identity at ``scale = 0``); Llama stores the multiplier itself.
    """

    def __init__(self, dim: int, eps: float, *, offset: float = 0.0, param_dtype=jnp.float32):
        self.scale = nnx.Param(jnp.full((dim,), 1.0 - offset, param_dtype))
        self.eps = eps
        self.offset = offset

    def __call__(self, x: jax.Array) -> jax.Array:
        xf = x.astype(jnp.float32)
        y = xf * jax.lax.rsqrt(jnp.mean(xf * xf, axis=-1, keepdims=True) + self.eps)
        return (y * (self.offset + self.scale[...].astype(jnp.float32))).astype(x.dtype)


class Attention(nnx.Module):
    """Grouped-query causal self-attention with rotary positions and an optional KV cache."""

    def __init__(self, config: LlamaConfig, *, dtype, param_dtype, rngs: nnx.Rngs):
        c = config
        kw = dict(use_bias=c.attention_bias, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.q_proj = Linear(c.hidden_size, c.num_heads * c.head_size, **kw)
        self.k_proj = Linear(c.hidden_size, c.num_kv_heads * c.head_size, **kw)
        self.v_proj = Linear(c.hidden_size, c.num_kv_heads * c.head_size, **kw)
        self.o_proj = Linear(c.num_heads * c.head_size, c.hidden_size, **kw)
        self.num_heads, self.num_kv_heads, self.head_dim = c.num_heads, c.num_kv_heads, c.head_size

    def __call__(self, x, cos, sin, bias, cache=None, cache_index=None):
        """x (b, s, d); bias (b, s, t) additive mask; cache (k, v) each (b, T, kv, hd) or None."""
        b, s, _ = x.shape
        q = _rotate(self.q_proj(x).reshape(b, s, self.num_heads, self.head_dim), cos, sin)
        k = _rotate(self.k_proj(x).reshape(b, s, self.num_kv_heads, self.head_dim), cos, sin)
        v = self.v_proj(x).reshape(b, s, self.num_kv_heads, self.head_dim)
        if cache is not None:
            k = jax.lax.dynamic_update_slice(cache[0], k.astype(cache[0].dtype), (0, cache_index, 0, 0))
            v = jax.lax.dynamic_update_slice(cache[1], v.astype(cache[1].dtype), (0, cache_index, 0, 0))
            cache = (k, v)
        groups = self.num_heads // self.num_kv_heads
        q = q.reshape(b, s, self.num_kv_heads, groups, self.head_dim)
        scores = jnp.einsum("bskgd,btkd->bkgst", q, k.astype(q.dtype)).astype(jnp.float32)
        scores = scores / math.sqrt(self.head_dim) + bias[:, None, None]
        probs = jax.nn.softmax(scores, axis=-1).astype(v.dtype)
        out = jnp.einsum("bkgst,btkd->bskgd", probs, v).reshape(b, s, -1)
        return self.o_proj(out.astype(q.dtype)), cache


class MLP(nnx.Module):
    """SwiGLU: down_proj(silu(gate_proj(x)) * up_proj(x))."""

    def __init__(self, config: LlamaConfig, *, dtype, param_dtype, rngs: nnx.Rngs):
        kw = dict(use_bias=config.mlp_bias, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        d, f = config.hidden_size, config.intermediate_size
        self.gate_proj = Linear(d, f, **kw)
        self.up_proj = Linear(d, f, **kw)
        self.down_proj = Linear(f, d, **kw)

    def __call__(self, x):
        return self.down_proj(jax.nn.silu(self.gate_proj(x)) * self.up_proj(x))


class Block(nnx.Module):
    def __init__(self, config: LlamaConfig, *, dtype, param_dtype, rngs: nnx.Rngs):
        kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.input_norm = RMSNorm(config.hidden_size, config.rms_norm_eps, param_dtype=param_dtype)
        self.attn = Attention(config, **kw)
        self.post_attention_norm = RMSNorm(config.hidden_size, config.rms_norm_eps,
                                           param_dtype=param_dtype)
        self.mlp = MLP(config, **kw)

    def __call__(self, h, cos, sin, bias, cache=None, cache_index=None):
        a, cache = self.attn(self.input_norm(h), cos, sin, bias, cache, cache_index)
        h = h + a
        return h + self.mlp(self.post_attention_norm(h)), cache


class CausalDecoder(nnx.Module):
    """What decoding, scoring and the decoder adapter use of a causal decoder, built on its
    ``decode(input_ids, positions, key_valid, cache, cache_index)`` and ``logits(hidden)``
    (Llama, Gemma 3): the compute dtype, the plain forward and the final hidden states."""

    @property
    def compute_dtype(self):
        return self.dtype or self.embed.embedding[...].dtype

    def __call__(self, input_ids: jax.Array, attention_mask: jax.Array | None = None) -> jax.Array:
        return self.logits(self.hidden_states(input_ids, attention_mask))

    def hidden_states(self, input_ids, attention_mask=None) -> jax.Array:
        """Final normalised hidden states (b, s, d): the logits before the head."""
        if attention_mask is None:
            attention_mask = jnp.ones(input_ids.shape, jnp.int32)
        h, _ = self.decode(input_ids, positions_from_mask(attention_mask), attention_mask, None, 0)
        return h


class Llama(CausalDecoder):
    """The decoder. ``model(input_ids, attention_mask=None)`` -> float32 logits (b, s, vocab).

    ``dtype`` is the compute dtype (``jnp.bfloat16`` for bf16 compute on float32 weights),
    ``param_dtype`` the storage dtype. Softmax, norms and logits stay in float32.

    ``remat=True`` runs the blocks as one ``jax.lax.scan`` over their stacked weights with
    every step under ``jax.checkpoint``: the backward pass keeps each block's input and
    recomputes the rest, and an FSDP step gathers one block's weights at a time instead of
    keeping every gathered weight for the backward pass (docs/scale.md: the LLaMA-2-7B step's
    temporaries at fsdp 8 drop from 22.7 to ~10 GB per device). Same values as the loop; the
    parameter tree (``layers/<i>/...``) does not change, so checkpoints, targets and bases
    are the same. Decoding with a cache and statistics capture run the plain loop.
    """

    def __init__(self, config: LlamaConfig, *, dtype=None, param_dtype=jnp.float32,
                 rngs: nnx.Rngs, remat: bool = False):
        c = config
        self.config = c
        self.dtype = dtype
        self.remat = bool(remat)
        self.embed = nnx.Embed(c.vocab_size, c.hidden_size, param_dtype=param_dtype, rngs=rngs)
        kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.layers = nnx.List([Block(c, **kw) for _ in range(c.num_layers)])
        self.final_norm = RMSNorm(c.hidden_size, c.rms_norm_eps, param_dtype=param_dtype)
        self.lm_head = None if c.tie_word_embeddings else Linear(c.hidden_size, c.vocab_size, **kw)
        assign_capture_names(self)

    def logits(self, hidden: jax.Array) -> jax.Array:
        if self.lm_head is None:
            emb = self.embed.embedding[...].astype(hidden.dtype)
            return jnp.einsum("bsd,vd->bsv", hidden, emb).astype(jnp.float32)
        return self.lm_head(hidden).astype(jnp.float32)

    def decode(self, input_ids, positions, key_valid, cache, cache_index):
        """The stack on ``input_ids`` (b, s) written into cache slots [cache_index, +s).

        key_valid (b, T) marks real tokens among the T keys (T = s without a cache, the cache
        length with one); query slot i attends to valid keys in slots <= cache_index + i.
        Returns (final normalised hidden states, updated cache or None).
        """
        b, s = input_ids.shape
        h = jnp.take(self.embed.embedding[...], input_ids, axis=0).astype(self.compute_dtype)
        angles = positions.astype(jnp.float32)[..., None] * rope_inv_freq(self.config)
        cos, sin = jnp.cos(angles).astype(h.dtype), jnp.sin(angles).astype(h.dtype)
        t = key_valid.shape[1]
        query_slot = cache_index + jnp.arange(s)
        allowed = (jnp.arange(t)[None, :] <= query_slot[:, None])[None] & (key_valid[:, None, :] > 0)
        # A finite floor (not -inf) keeps rows with no valid key (padding queries) free of NaN.
        bias = jnp.where(allowed, 0.0, jnp.finfo(jnp.float32).min).astype(jnp.float32)
        if self.remat and cache is None and not is_capturing():
            return self.final_norm(self._scan_layers(h, cos, sin, bias)), None
        new_cache = []
        for i, layer in enumerate(self.layers):
            h, layer_cache = layer(h, cos, sin, bias, None if cache is None else cache[i], cache_index)
            new_cache.append(layer_cache)
        return self.final_norm(h), (None if cache is None else tuple(new_cache))

    def _scan_layers(self, h, cos, sin, bias):
        """The blocks as one scan over their stacked weights, each step recomputed in backward.

        The stack is built inside the traced step (one copy of the block weights, sharded like
        them); its gradient flows back to each ``layers/<i>`` parameter unchanged. Every block
        has the same structure, so block 0's graph serves all of them (only the capture names
        differ, and capture never takes this path).
        """
        graphdefs, states = zip(*(nnx.split(b) for b in self.layers))
        stacked = jax.tree.map(lambda *xs: jnp.stack(xs), *states)

        @jax.checkpoint
        def step(h, state):
            h, _ = nnx.merge(graphdefs[0], state)(h, cos, sin, bias)
            return h, None

        h, _ = jax.lax.scan(step, h, stacked)
        return h

    def init_cache(self, batch: int, length: int) -> tuple:
        c = self.config
        shape = (batch, length, c.num_kv_heads, c.head_size)
        zeros = jnp.zeros(shape, self.compute_dtype)
        return tuple((zeros, zeros) for _ in range(c.num_layers))


def positions_from_mask(attention_mask: jax.Array) -> jax.Array:
    """Position of every token = number of real tokens before it (0 for leading padding)."""
    return jnp.maximum(jnp.cumsum(attention_mask, axis=-1) - 1, 0).astype(jnp.int32)


def init_llama(config: LlamaConfig, *, seed: int = 0, dtype=None, param_dtype=jnp.float32) -> Llama:
    """A randomly initialised model (for tests and from-scratch training)."""
    return Llama(config, dtype=dtype, param_dtype=param_dtype, rngs=nnx.Rngs(seed))
