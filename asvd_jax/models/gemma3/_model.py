"""Gemma 3 decoder (text) in Flax NNX: the base models from 270M up, Hugging Face layout.

Each of the ``num_layers`` blocks computes, with n(.) Gemma's RMSNorm x / rms(x) * (1 + w),

    q = rope(n_q(q_proj(n1))),  k = rope(n_k(k_proj(n1))),  v = v_proj(n1),     n1 = n_in(h)
    a = h + n_post_attn(o_proj(attn(q, k, v)))
    h' = a + n_post_ffw(down_proj(gelu_tanh(gate_proj(n2)) * up_proj(n2))),     n2 = n_pre_ffw(a)

so a block has four norms plus a per-head RMSNorm of queries and keys (``q_norm``/``k_norm``,
over ``head_dim``). Layers come in two kinds (``layer_types``): ``sliding_attention`` (local:
a key is visible when it is fewer than ``sliding_window`` positions behind the query; RoPE
base ``rope_local_theta``) and ``full_attention`` (global, every sixth layer in the released
models; RoPE base ``rope_theta``). Scores are scaled by ``query_pre_attn_scalar ** -0.5``.
Embeddings are multiplied by sqrt(hidden_size) (in the compute dtype, as Hugging Face does);
the head is the transposed embedding (tied), optionally soft-capped.

Parameter paths (what target patterns, rank plans and captures key on)::

    embed/embedding                                        (vocab, d)
    layers/<i>/attn/{q,k,v,o}_proj/kernel                  (in, out)
    layers/<i>/attn/{q,k}_norm/scale                       (head_dim,)
    layers/<i>/mlp/{gate,up,down}_proj/kernel              (in, out)
    layers/<i>/{input,post_attention,pre_feedforward,post_feedforward}_norm/scale   (d,)
    final_norm/scale                                       (d,)

Norm scales are stored zero-centred like Hugging Face's ``weight`` (llama.cpp's GGUF stores
1 + w; the loader takes the 1 out). The model offers the interface the decoder adapter and
decoding use (``hidden_states``, ``logits``, ``decode``, ``init_cache``), so training, greedy
generation with a KV cache and option scoring are the llama family's code unchanged.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Mapping

import jax
import jax.numpy as jnp
from flax import nnx

from asvd_jax.models._capture import assign_capture_names
from asvd_jax.models._layers import ACTIVATIONS, Linear
from asvd_jax.models.llama._model import CausalDecoder, RMSNorm, _rotate, positions_from_mask

# Attention projections and MLP matrices of every block: what the method protects by default.
DEFAULT_TARGETS: tuple[str, ...] = (
    r"layers/\d+/attn/(q|k|v|o)_proj/kernel",
    r"layers/\d+/mlp/(gate|up|down)_proj/kernel",
)

LAYER_TYPES = ("sliding_attention", "full_attention")
ARCHITECTURES = ("Gemma3ForCausalLM",)
MODEL_TYPES = ("gemma3_text",)


def default_layer_types(num_layers: int, pattern: int = 6) -> tuple[str, ...]:
    """Every ``pattern``-th layer global, the rest local: the released Gemma 3 layout."""
    return tuple("full_attention" if (i + 1) % pattern == 0 else "sliding_attention" for i in range(num_layers))


@dataclasses.dataclass(frozen=True)
class Gemma3Config:
    """Shape and numerics of a Gemma 3 text decoder (the fields of a HF ``Gemma3TextConfig``)."""

    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int = 256
    rope_theta: float = 1_000_000.0
    """RoPE base of the global (full-attention) layers."""
    rope_local_theta: float = 10_000.0
    """RoPE base of the local (sliding-window) layers."""
    sliding_window: int = 512
    layer_types: tuple[str, ...] | None = None
    """One of ``LAYER_TYPES`` per layer; None: every sixth layer global (``default_layer_types``)."""
    query_pre_attn_scalar: int = 256
    rms_norm_eps: float = 1e-6
    hidden_activation: str = "gelu_pytorch_tanh"
    final_logit_softcapping: float | None = None
    """tanh soft cap of the logits (None in the released Gemma 3 models). Gemma 2's attention
    soft cap is gone in Gemma 3 (transformers ignores ``attn_logit_softcapping`` there too)."""
    attention_bias: bool = False
    max_position_embeddings: int = 32768
    bos_token_id: int | None = 2
    eos_token_id: int | tuple[int, ...] | None = 1
    pad_token_id: int | None = 0

    def __post_init__(self):
        for name in ("vocab_size", "hidden_size", "intermediate_size", "num_layers", "num_heads",
                     "num_kv_heads", "head_dim", "sliding_window", "query_pre_attn_scalar"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"Gemma3Config.{name} must be a positive int, got {value!r}")
        if self.num_heads % self.num_kv_heads:
            raise ValueError(f"Gemma3Config: num_heads={self.num_heads} is not a multiple of "
                             f"num_kv_heads={self.num_kv_heads}")
        if self.head_dim % 2:
            raise ValueError(f"Gemma3Config: head_dim={self.head_dim} must be even for RoPE")
        if self.layer_types is None:
            object.__setattr__(self, "layer_types", default_layer_types(self.num_layers))
        object.__setattr__(self, "layer_types", tuple(self.layer_types))
        if len(self.layer_types) != self.num_layers:
            raise ValueError(f"Gemma3Config.layer_types: {len(self.layer_types)} entries for "
                             f"num_layers={self.num_layers}")
        unknown = sorted(set(self.layer_types) - set(LAYER_TYPES))
        if unknown:
            raise ValueError(f"Gemma3Config.layer_types: {unknown} not among {LAYER_TYPES}")
        if self.hidden_activation not in ACTIVATIONS:
            raise ValueError(f"Gemma3Config.hidden_activation: {self.hidden_activation!r} is not "
                             f"supported (one of {sorted(ACTIVATIONS)})")

    @classmethod
    def from_hf_dict(cls, d: Mapping[str, Any], source: str = "config.json") -> "Gemma3Config":
        """Build from a HF ``config.json`` dict (``Gemma3TextConfig``; transformers 4.x or 5.x
        rope layout). A multimodal ``Gemma3Config`` is read through its ``text_config``."""
        if "text_config" in d and d.get("model_type") == "gemma3":
            d = {**d["text_config"], "model_type": "gemma3_text"}
        archs = d.get("architectures") or []
        if d.get("model_type") not in MODEL_TYPES and not any(a in ARCHITECTURES for a in archs):
            raise ValueError(f"{source}: unknown architecture (model_type={d.get('model_type')!r}, "
                             f"architectures={archs!r}); this loader reads {', '.join(ARCHITECTURES)}")
        if d.get("attn_logit_softcapping") is not None:
            raise ValueError(f"{source}: attn_logit_softcapping={d['attn_logit_softcapping']!r}: Gemma 3 "
                             f"has no attention soft cap (a Gemma 2 setting; transformers ignores it)")
        rope = d.get("rope_parameters") or {}
        full, local = rope.get("full_attention") or {}, rope.get("sliding_attention") or {}
        for kind, params in (("full_attention", full), ("sliding_attention", local)):
            if params.get("rope_type", "default") != "default":
                raise ValueError(f"{source}: rope type {params['rope_type']!r} of {kind} layers is not "
                                 f"supported (default only; the 270M and 1B models use it)")
        if (d.get("rope_scaling") or {}).get("rope_type", (d.get("rope_scaling") or {}).get("type", "default")) \
                not in ("default", None):
            raise ValueError(f"{source}: rope_scaling {d['rope_scaling']!r} is not supported (default only)")
        eos = d.get("eos_token_id", 1)
        try:
            return cls(
                vocab_size=d["vocab_size"], hidden_size=d["hidden_size"],
                intermediate_size=d["intermediate_size"], num_layers=d["num_hidden_layers"],
                num_heads=d["num_attention_heads"],
                num_kv_heads=d.get("num_key_value_heads") or d["num_attention_heads"],
                head_dim=d.get("head_dim", 256),
                rope_theta=float(full.get("rope_theta", d.get("rope_theta", 1_000_000.0))),
                rope_local_theta=float(local.get("rope_theta", d.get("rope_local_base_freq", 10_000.0))),
                sliding_window=int(d.get("sliding_window") or 4096),
                layer_types=tuple(d["layer_types"]) if d.get("layer_types") else
                default_layer_types(d["num_hidden_layers"], int(d.get("sliding_window_pattern", 6))),
                query_pre_attn_scalar=int(d.get("query_pre_attn_scalar", 256)),
                rms_norm_eps=float(d.get("rms_norm_eps", 1e-6)),
                hidden_activation=d.get("hidden_activation") or d.get("hidden_act") or "gelu_pytorch_tanh",
                final_logit_softcapping=d.get("final_logit_softcapping"),
                attention_bias=bool(d.get("attention_bias", False)),
                max_position_embeddings=int(d.get("max_position_embeddings", 32768)),
                bos_token_id=d.get("bos_token_id"),
                eos_token_id=tuple(eos) if isinstance(eos, list) else eos,
                pad_token_id=d.get("pad_token_id"),
            )
        except KeyError as e:
            raise ValueError(f"{source}: required key {e.args[0]!r} is missing") from e
        except ValueError as e:
            raise ValueError(f"{source}: {e}") from e

    def to_hf_dict(self) -> dict:
        """The ``config.json`` dict of a ``Gemma3ForCausalLM`` (transformers 5 rope layout)."""
        eos = list(self.eos_token_id) if isinstance(self.eos_token_id, tuple) else self.eos_token_id
        return {
            "architectures": ["Gemma3ForCausalLM"], "model_type": "gemma3_text",
            "vocab_size": self.vocab_size, "hidden_size": self.hidden_size,
            "intermediate_size": self.intermediate_size, "num_hidden_layers": self.num_layers,
            "num_attention_heads": self.num_heads, "num_key_value_heads": self.num_kv_heads,
            "head_dim": self.head_dim, "hidden_activation": self.hidden_activation,
            "rope_parameters": {"full_attention": {"rope_type": "default", "rope_theta": self.rope_theta},
                                "sliding_attention": {"rope_type": "default",
                                                      "rope_theta": self.rope_local_theta}},
            "sliding_window": self.sliding_window, "layer_types": list(self.layer_types),
            "query_pre_attn_scalar": self.query_pre_attn_scalar, "rms_norm_eps": self.rms_norm_eps,
            "attn_logit_softcapping": None,
            "final_logit_softcapping": self.final_logit_softcapping,
            "attention_bias": self.attention_bias, "tie_word_embeddings": True,
            "max_position_embeddings": self.max_position_embeddings,
            "bos_token_id": self.bos_token_id, "eos_token_id": eos, "pad_token_id": self.pad_token_id,
        }


def _inv_freq(head_dim: int, theta: float) -> jax.Array:
    return 1.0 / (theta ** (jnp.arange(0, head_dim, 2, dtype=jnp.float32) / head_dim))


def _softcap(x: jax.Array, cap: float | None) -> jax.Array:
    return x if cap is None else jnp.tanh(x / cap) * cap


class Attention(nnx.Module):
    """Grouped-query causal attention with per-head q/k RMSNorm, rotary positions, an optional
    sliding window (in the additive ``bias``) and an optional KV cache."""

    def __init__(self, config: Gemma3Config, *, dtype, param_dtype, rngs: nnx.Rngs):
        c = config
        kw = dict(use_bias=c.attention_bias, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.q_proj = Linear(c.hidden_size, c.num_heads * c.head_dim, **kw)
        self.k_proj = Linear(c.hidden_size, c.num_kv_heads * c.head_dim, **kw)
        self.v_proj = Linear(c.hidden_size, c.num_kv_heads * c.head_dim, **kw)
        self.o_proj = Linear(c.num_heads * c.head_dim, c.hidden_size, **kw)
        self.q_norm = RMSNorm(c.head_dim, c.rms_norm_eps, offset=1.0, param_dtype=param_dtype)
        self.k_norm = RMSNorm(c.head_dim, c.rms_norm_eps, offset=1.0, param_dtype=param_dtype)
        self.num_heads, self.num_kv_heads, self.head_dim = c.num_heads, c.num_kv_heads, c.head_dim
        self.scale = c.query_pre_attn_scalar ** -0.5

    def __call__(self, x, cos, sin, bias, cache=None, cache_index=None):
        """x (b, s, d); bias (b, s, t) additive mask; cache (k, v) each (b, T, kv, hd) or None."""
        b, s, _ = x.shape
        q = self.q_norm(self.q_proj(x).reshape(b, s, self.num_heads, self.head_dim))
        k = self.k_norm(self.k_proj(x).reshape(b, s, self.num_kv_heads, self.head_dim))
        q, k = _rotate(q, cos, sin), _rotate(k, cos, sin)
        v = self.v_proj(x).reshape(b, s, self.num_kv_heads, self.head_dim)
        if cache is not None:
            k = jax.lax.dynamic_update_slice(cache[0], k.astype(cache[0].dtype), (0, cache_index, 0, 0))
            v = jax.lax.dynamic_update_slice(cache[1], v.astype(cache[1].dtype), (0, cache_index, 0, 0))
            cache = (k, v)
        groups = self.num_heads // self.num_kv_heads
        q = q.reshape(b, s, self.num_kv_heads, groups, self.head_dim)
        scores = jnp.einsum("bskgd,btkd->bkgst", q, k.astype(q.dtype)).astype(jnp.float32)
        scores = scores * self.scale + bias[:, None, None]
        probs = jax.nn.softmax(scores, axis=-1).astype(v.dtype)
        out = jnp.einsum("bkgst,btkd->bskgd", probs, v).reshape(b, s, -1)
        return self.o_proj(out.astype(q.dtype)), cache


class MLP(nnx.Module):
    """GeGLU: down_proj(gelu_tanh(gate_proj(x)) * up_proj(x))."""

    def __init__(self, config: Gemma3Config, *, dtype, param_dtype, rngs: nnx.Rngs):
        kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        d, f = config.hidden_size, config.intermediate_size
        self.gate_proj = Linear(d, f, **kw)
        self.up_proj = Linear(d, f, **kw)
        self.down_proj = Linear(f, d, **kw)
        self.act = ACTIVATIONS[config.hidden_activation]

    def __call__(self, x):
        return self.down_proj(self.act(self.gate_proj(x)) * self.up_proj(x))


class Block(nnx.Module):
    def __init__(self, config: Gemma3Config, *, dtype, param_dtype, rngs: nnx.Rngs):
        norm = dict(offset=1.0, param_dtype=param_dtype)
        d, eps = config.hidden_size, config.rms_norm_eps
        self.input_norm = RMSNorm(d, eps, **norm)
        self.attn = Attention(config, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.post_attention_norm = RMSNorm(d, eps, **norm)
        self.pre_feedforward_norm = RMSNorm(d, eps, **norm)
        self.mlp = MLP(config, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.post_feedforward_norm = RMSNorm(d, eps, **norm)

    def __call__(self, h, cos, sin, bias, cache=None, cache_index=None):
        a, cache = self.attn(self.input_norm(h), cos, sin, bias, cache, cache_index)
        h = h + self.post_attention_norm(a)
        return h + self.post_feedforward_norm(self.mlp(self.pre_feedforward_norm(h))), cache


class Gemma3(CausalDecoder):
    """The decoder. ``model(input_ids, attention_mask=None)`` -> float32 logits (b, s, vocab).

    ``dtype`` is the compute dtype (``jnp.bfloat16`` for bf16 compute on float32 weights),
    ``param_dtype`` the storage dtype. Softmax, norms and logits stay in float32. Only the
    logits that are asked for are computed (``logits(hidden)`` on the rows you pass): with a
    262,144-word vocabulary the head costs as much per token as a third of the blocks.
    """

    def __init__(self, config: Gemma3Config, *, dtype=None, param_dtype=jnp.float32, rngs: nnx.Rngs):
        c = config
        self.config = c
        self.dtype = dtype
        self.embed = nnx.Embed(c.vocab_size, c.hidden_size, param_dtype=param_dtype, rngs=rngs)
        kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.layers = nnx.List([Block(c, **kw) for _ in range(c.num_layers)])
        self.final_norm = RMSNorm(c.hidden_size, c.rms_norm_eps, offset=1.0, param_dtype=param_dtype)
        assign_capture_names(self)

    def logits(self, hidden: jax.Array) -> jax.Array:
        emb = self.embed.embedding[...].astype(hidden.dtype)
        logits = jnp.einsum("...d,vd->...v", hidden, emb).astype(jnp.float32)
        return _softcap(logits, self.config.final_logit_softcapping)

    def decode(self, input_ids, positions, key_valid, cache, cache_index):
        """The stack on ``input_ids`` (b, s) written into cache slots [cache_index, +s).

        key_valid (b, T) marks real tokens among the T keys (T = s without a cache, the cache
        length with one); query slot i attends to valid keys in slots <= cache_index + i, and
        on local layers only to keys fewer than ``sliding_window`` positions behind it. Key
        positions are counted from ``key_valid`` (real tokens before the key), so padding
        anywhere in a row leaves every real token's window as it would be alone.
        Returns (final normalised hidden states, updated cache or None).
        """
        c = self.config
        b, s = input_ids.shape
        dtype = self.compute_dtype
        # HF multiplies by sqrt(d) cast to the weights' dtype; here the compute dtype.
        h = jnp.take(self.embed.embedding[...], input_ids, axis=0).astype(dtype)
        h = h * jnp.asarray(math.sqrt(c.hidden_size), dtype)
        t = key_valid.shape[1]
        query_slot = cache_index + jnp.arange(s)
        allowed = (jnp.arange(t)[None, :] <= query_slot[:, None])[None] & (key_valid[:, None, :] > 0)
        key_pos = positions_from_mask(key_valid)
        in_window = (positions[:, :, None] - key_pos[:, None, :]) < c.sliding_window
        floor = jnp.finfo(jnp.float32).min  # finite: padding queries with no valid key stay NaN-free
        global_bias = jnp.where(allowed, 0.0, floor).astype(jnp.float32)
        local_bias = jnp.where(allowed & in_window, 0.0, floor).astype(jnp.float32)
        rope = {}
        for kind, theta in (("full_attention", c.rope_theta), ("sliding_attention", c.rope_local_theta)):
            angles = positions.astype(jnp.float32)[..., None] * _inv_freq(c.head_dim, theta)
            rope[kind] = (jnp.cos(angles).astype(dtype), jnp.sin(angles).astype(dtype))
        new_cache = []
        for i, (layer, kind) in enumerate(zip(self.layers, c.layer_types)):
            bias = local_bias if kind == "sliding_attention" else global_bias
            h, layer_cache = layer(h, *rope[kind], bias, None if cache is None else cache[i], cache_index)
            new_cache.append(layer_cache)
        return self.final_norm(h), (None if cache is None else tuple(new_cache))

    def init_cache(self, batch: int, length: int) -> tuple:
        c = self.config
        zeros = jnp.zeros((batch, length, c.num_kv_heads, c.head_dim), self.compute_dtype)
        return tuple((zeros, zeros) for _ in range(c.num_layers))


def init_gemma3(config: Gemma3Config, *, seed: int = 0, dtype=None, param_dtype=jnp.float32) -> Gemma3:
    """A randomly initialised model (for tests and from-scratch training)."""
    return Gemma3(config, dtype=dtype, param_dtype=param_dtype, rngs=nnx.Rngs(seed))
