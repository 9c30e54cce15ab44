"""T5 encoder-decoder in Flax NNX: the original (ReLU, tied rescaled head) and v1.1 / flan
(gated GELU, untied head) variants, loaded from and exported to Hugging Face folders.

Maths (per layer, pre-norm, no biases, RMS norm without mean subtraction):

    rms(x)   = x / sqrt(mean(x^2) + eps) * scale
    attn(x)  = softmax(Q K^T + B) V W_o            (no 1/sqrt(d_kv): T5 folds it into init)
    B[h,i,j] = table[bucket(j - i), h]              (first layer's table, shared by the stack)
    mlp(x)   = W_o act(W_i x)    or    W_o (act(W_i0 x) * W_i1 x)   (gated)
    logits   = h_dec W_vocab^T * d_model^-0.5  (tied + rescaled, original T5)
             = h_dec W_lm                      (untied, v1.1 / flan)

Decoder self-attention is causal with unidirectional buckets; cross-attention has no position
bias. Parameter paths (see ``DEFAULT_TARGETS``): ``shared/embedding``,
``encoder/layers/<i>/attn/{q,k,v,o}_proj/kernel``, ``encoder/layers/<i>/mlp/{wi|wi_0,wi_1,wo}/kernel``,
``decoder/layers/<i>/{self_attn,cross_attn}/{q,k,v,o}_proj/kernel``, norms ``.../<name>_norm/scale``,
the relative bias table at ``{encoder,decoder}/layers/0/{attn,self_attn}/relative_bias/embedding``,
``lm_head/kernel`` when untied. Kernels are (in, out).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from asvd_jax.models._capture import assign_capture_names
from asvd_jax.models._hf_io import CheckpointError
from asvd_jax.models._layers import ACTIVATIONS, Linear

DEFAULT_TARGETS = (
    r"(encoder|decoder)/layers/\d+/(attn|self_attn|cross_attn)/(q|k|v|o)_proj/kernel",
    r"(encoder|decoder)/layers/\d+/mlp/(wi|wi_0|wi_1|wo)/kernel",
)

# Masked scores; finite so that rows with every key masked stay finite (uniform), as in HF.
_NEG = -1e30


@dataclasses.dataclass(frozen=True)
class T5Config:
    """Architecture of a T5 model; field names follow the HF ``config.json`` keys."""

    vocab_size: int
    d_model: int
    d_kv: int
    d_ff: int
    num_layers: int
    num_heads: int
    num_decoder_layers: int | None = None
    """Defaults to ``num_layers``."""
    relative_attention_num_buckets: int = 32
    relative_attention_max_distance: int = 128
    layer_norm_epsilon: float = 1e-6
    feed_forward_proj: str = "relu"
    """``"<act>"`` (one input matrix ``wi``) or ``"gated-<act>"`` (``wi_0``, ``wi_1``)."""
    tie_word_embeddings: bool = True
    """The LM head is the shared embedding (no ``lm_head/kernel``)."""
    scale_decoder_outputs: bool = True
    """Multiply the decoder output by d_model^-0.5 before the head (original T5)."""
    pad_token_id: int = 0
    eos_token_id: int = 1
    decoder_start_token_id: int = 0

    def __post_init__(self):
        if self.num_decoder_layers is None:
            object.__setattr__(self, "num_decoder_layers", self.num_layers)
        self.activation  # validates feed_forward_proj
        for name in ("vocab_size", "d_model", "d_kv", "d_ff", "num_layers", "num_heads"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) <= 0:
                raise ValueError(f"T5Config.{name} must be a positive int, got {getattr(self, name)!r}")

    @property
    def is_gated(self) -> bool:
        return self.feed_forward_proj.split("-")[0] == "gated"

    @property
    def activation(self) -> str:
        parts = self.feed_forward_proj.split("-")
        if len(parts) > 2 or (len(parts) == 2 and parts[0] != "gated"):
            raise ValueError(
                f"T5Config.feed_forward_proj: {self.feed_forward_proj!r} is not '<act>' or 'gated-<act>'"
            )
        # HF's historical alias: flan / v1.1 "gated-gelu" means the tanh approximation.
        act = "gelu_new" if self.feed_forward_proj == "gated-gelu" else parts[-1]
        if act not in ACTIVATIONS:
            raise ValueError(
                f"T5Config.feed_forward_proj: activation {act!r} unsupported (known: {sorted(ACTIVATIONS)})"
            )
        return act

    @classmethod
    def from_hf_dict(cls, d: dict, source: str = "config.json") -> "T5Config":
        archs = d.get("architectures") or []
        # mT5 shares T5 v1.1's layout and tensor names; umT5 (per-layer bias tables) does not.
        if d.get("model_type") not in ("t5", "mt5") and not any(a.startswith(("T5", "MT5")) for a in archs):
            raise CheckpointError(
                f"{source}: unknown architecture {d.get('model_type') or archs!r} (expected model_type 't5' or 'mt5')"
            )
        fields = {f.name for f in dataclasses.fields(cls)}
        kwargs = {k: v for k, v in d.items() if k in fields}
        for key in ("vocab_size", "d_model", "d_kv", "d_ff", "num_layers", "num_heads"):
            if key not in kwargs:
                raise CheckpointError(f"{source}: key {key!r} is missing")
        tie = d.get("tie_word_embeddings", True) is not False
        kwargs["tie_word_embeddings"] = tie
        kwargs["scale_decoder_outputs"] = bool(d.get("scale_decoder_outputs", tie))
        for key in ("pad_token_id", "eos_token_id", "decoder_start_token_id"):
            if kwargs.get(key) is None:
                kwargs.pop(key, None)
            elif isinstance(kwargs[key], list):  # HF allows several eos ids; greedy stops at the first
                kwargs[key] = int(kwargs[key][0])
        try:
            return cls(**kwargs)
        except (TypeError, ValueError) as e:
            raise CheckpointError(f"{source}: {e}") from e

    def to_hf_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d.update(model_type="t5", architectures=["T5ForConditionalGeneration"], is_encoder_decoder=True)
        return d


def relative_bucket_table(bidirectional: bool, num_buckets: int, max_distance: int) -> np.ndarray:
    """Bucket of each relative position r = key - query in [-max_distance, max_distance].

    Exact buckets for |r| < n/2, logarithmic ones up to ``max_distance``, and one shared bucket
    beyond (so clipping r to the table's range is exact). Bidirectional tables give r > 0 the
    upper half of the buckets; unidirectional (causal) ones map every r > 0 to bucket 0. Float32
    arithmetic, as the reference implementation, so boundary cases round the same way.
    """
    rel = np.arange(-max_distance, max_distance + 1)
    buckets = np.zeros_like(rel)
    n = num_buckets
    if bidirectional:
        n //= 2
        buckets += (rel > 0) * n
        rel = np.abs(rel)
    else:
        rel = -np.minimum(rel, 0)
    max_exact = n // 2
    with np.errstate(divide="ignore"):
        ratio = np.log(rel.astype(np.float32) / np.float32(max_exact))
    large = ratio / np.float32(np.log(max_distance / max_exact)) * np.float32(n - max_exact)
    large = np.where(rel < max_exact, 0, large)  # those entries are not used; avoids -inf casts
    large = np.minimum(max_exact + large.astype(np.int64), n - 1)
    return (buckets + np.where(rel < max_exact, rel, large)).astype(np.int32)


class RMSNorm(nnx.Module):
    """x / sqrt(mean(x^2) + eps) * scale, statistics in float32 whatever the compute dtype."""

    def __init__(self, dim: int, eps: float, *, dtype, param_dtype):
        self.scale = nnx.Param(jnp.ones((dim,), param_dtype))
        self.eps = eps
        self.dtype = dtype

    def __call__(self, x: jax.Array) -> jax.Array:
        x32 = x.astype(jnp.float32)
        y = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + self.eps)
        return (y * self.scale[...].astype(jnp.float32)).astype(self.dtype)


class Attention(nnx.Module):
    """Multi-head attention without score scaling; optional relative-position bias table."""

    def __init__(self, cfg: T5Config, *, relative_bias: bool, bidirectional: bool, dtype, param_dtype, rngs):
        inner = cfg.num_heads * cfg.d_kv
        kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.q_proj = Linear(cfg.d_model, inner, **kw)
        self.k_proj = Linear(cfg.d_model, inner, **kw)
        self.v_proj = Linear(cfg.d_model, inner, **kw)
        self.o_proj = Linear(inner, cfg.d_model, **kw)
        self.relative_bias = (
            nnx.Embed(cfg.relative_attention_num_buckets, cfg.num_heads, param_dtype=param_dtype, rngs=rngs)
            if relative_bias
            else None
        )
        # A tuple of ints is static (part of the graph definition), so jit sees a constant.
        self.table = (
            tuple(relative_bucket_table(bidirectional, cfg.relative_attention_num_buckets,
                                        cfg.relative_attention_max_distance).tolist())
            if relative_bias
            else None
        )
        self.num_heads, self.d_kv, self.dtype = cfg.num_heads, cfg.d_kv, dtype

    def position_bias(self, query_pos: jax.Array, key_pos: jax.Array) -> jax.Array:
        """(heads, q, k) float32 bias for absolute query / key positions."""
        table = jnp.asarray(self.table, jnp.int32)
        max_distance = (len(self.table) - 1) // 2
        rel = jnp.clip(key_pos[None, :] - query_pos[:, None], -max_distance, max_distance)
        values = self.relative_bias.embedding[...].astype(jnp.float32)[table[rel + max_distance]]
        return jnp.transpose(values, (2, 0, 1))

    def keys_values(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        shape = (*x.shape[:2], self.num_heads, self.d_kv)
        return self.k_proj(x).reshape(shape), self.v_proj(x).reshape(shape)

    def __call__(self, x: jax.Array, k: jax.Array, v: jax.Array, bias: jax.Array) -> jax.Array:
        """x (b, q, d); k, v (b, k, h, d_kv); bias (b or 1, h, q, k) float32 with masks applied."""
        q = self.q_proj(x).reshape(*x.shape[:2], self.num_heads, self.d_kv)
        scores = jnp.einsum("bqhd,bkhd->bhqk", q, k.astype(q.dtype)).astype(jnp.float32) + bias
        probs = jax.nn.softmax(scores, axis=-1).astype(q.dtype)
        out = jnp.einsum("bhqk,bkhd->bqhd", probs, v.astype(q.dtype))
        return self.o_proj(out.reshape(*x.shape[:2], self.num_heads * self.d_kv))


class MLP(nnx.Module):
    def __init__(self, cfg: T5Config, *, dtype, param_dtype, rngs):
        kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        if cfg.is_gated:
            self.wi_0 = Linear(cfg.d_model, cfg.d_ff, **kw)
            self.wi_1 = Linear(cfg.d_model, cfg.d_ff, **kw)
        else:
            self.wi = Linear(cfg.d_model, cfg.d_ff, **kw)
        self.wo = Linear(cfg.d_ff, cfg.d_model, **kw)
        self.gated, self.act = cfg.is_gated, cfg.activation

    def __call__(self, x: jax.Array) -> jax.Array:
        act = ACTIVATIONS[self.act]
        h = act(self.wi_0(x)) * self.wi_1(x) if self.gated else act(self.wi(x))
        return self.wo(h)


class EncoderLayer(nnx.Module):
    def __init__(self, cfg: T5Config, first: bool, *, dtype, param_dtype, rngs):
        kw = dict(dtype=dtype, param_dtype=param_dtype)
        self.attn_norm = RMSNorm(cfg.d_model, cfg.layer_norm_epsilon, **kw)
        self.attn = Attention(cfg, relative_bias=first, bidirectional=True, rngs=rngs, **kw)
        self.mlp_norm = RMSNorm(cfg.d_model, cfg.layer_norm_epsilon, **kw)
        self.mlp = MLP(cfg, rngs=rngs, **kw)

    def __call__(self, x, bias):
        h = self.attn_norm(x)
        x = x + self.attn(h, *self.attn.keys_values(h), bias)
        return x + self.mlp(self.mlp_norm(x))


class DecoderLayer(nnx.Module):
    def __init__(self, cfg: T5Config, first: bool, *, dtype, param_dtype, rngs):
        kw = dict(dtype=dtype, param_dtype=param_dtype)
        self.self_attn_norm = RMSNorm(cfg.d_model, cfg.layer_norm_epsilon, **kw)
        self.self_attn = Attention(cfg, relative_bias=first, bidirectional=False, rngs=rngs, **kw)
        self.cross_attn_norm = RMSNorm(cfg.d_model, cfg.layer_norm_epsilon, **kw)
        self.cross_attn = Attention(cfg, relative_bias=False, bidirectional=False, rngs=rngs, **kw)
        self.mlp_norm = RMSNorm(cfg.d_model, cfg.layer_norm_epsilon, **kw)
        self.mlp = MLP(cfg, rngs=rngs, **kw)

    def __call__(self, y, self_bias, cross_kv, cross_bias, cache=None, index=None):
        """One layer over ``y`` (b, t, d); returns (y, self-attention keys/values).

        With ``cache`` (keys, values of shape (b, T, h, d_kv)) the new keys/values are written at
        position ``index`` and attention runs over the whole cache (``self_bias`` masks the
        positions not yet written).
        """
        h = self.self_attn_norm(y)
        k, v = self.self_attn.keys_values(h)
        if cache is not None:
            k = jax.lax.dynamic_update_slice(cache[0], k.astype(cache[0].dtype), (0, index, 0, 0))
            v = jax.lax.dynamic_update_slice(cache[1], v.astype(cache[1].dtype), (0, index, 0, 0))
        y = y + self.self_attn(h, k, v, self_bias)
        y = y + self.cross_attn(self.cross_attn_norm(y), *cross_kv, cross_bias)
        return y + self.mlp(self.mlp_norm(y)), (k, v)


class Stack(nnx.Module):
    def __init__(self, cfg: T5Config, layer_cls, n: int, *, dtype, param_dtype, rngs):
        self.layers = nnx.List(
            [layer_cls(cfg, i == 0, dtype=dtype, param_dtype=param_dtype, rngs=rngs) for i in range(n)]
        )
        self.final_norm = RMSNorm(cfg.d_model, cfg.layer_norm_epsilon, dtype=dtype, param_dtype=param_dtype)


def _key_mask(mask: jax.Array) -> jax.Array:
    """(b, k) 0/1 mask -> (b, 1, 1, k) boolean, broadcast over heads and queries."""
    return jnp.asarray(mask).astype(bool)[:, None, None, :]


class T5(nnx.Module):
    """``model(input_ids, attention_mask, decoder_input_ids, decoder_attention_mask=None)`` -> logits.

    ``dtype`` is the compute dtype (float32 or bfloat16), ``param_dtype`` the storage dtype.
    Logits come back in float32.
    """

    def __init__(self, config: T5Config, *, dtype=jnp.float32, param_dtype=jnp.float32, rngs: nnx.Rngs):
        kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.config = config
        self.dtype = dtype
        self.shared = nnx.Embed(config.vocab_size, config.d_model, param_dtype=param_dtype, rngs=rngs)
        self.encoder = Stack(config, EncoderLayer, config.num_layers, **kw)
        self.decoder = Stack(config, DecoderLayer, config.num_decoder_layers, **kw)
        self.lm_head = None if config.tie_word_embeddings else Linear(config.d_model, config.vocab_size, **kw)
        assign_capture_names(self)

    def embed(self, ids: jax.Array) -> jax.Array:
        return self.shared.embedding[...][ids].astype(self.dtype)

    def encode(self, input_ids: jax.Array, attention_mask: jax.Array) -> jax.Array:
        """Final-norm encoder states (b, s, d_model)."""
        x = self.embed(input_ids)
        pos = jnp.arange(x.shape[1])
        bias = jnp.where(_key_mask(attention_mask), self.encoder.layers[0].attn.position_bias(pos, pos)[None], _NEG)
        for layer in self.encoder.layers:
            x = layer(x, bias)
        return self.encoder.final_norm(x)

    def cross_keys_values(self, enc: jax.Array) -> list[tuple[jax.Array, jax.Array]]:
        return [layer.cross_attn.keys_values(enc) for layer in self.decoder.layers]

    def decode(self, decoder_input_ids, enc, attention_mask, decoder_attention_mask=None) -> jax.Array:
        """Logits (b, t, vocab) of a whole decoder sequence (teacher forcing)."""
        y = self.embed(decoder_input_ids)
        pos = jnp.arange(y.shape[1])
        allowed = (pos[None, :] <= pos[:, None])[None, None]
        if decoder_attention_mask is not None:
            allowed = allowed & _key_mask(decoder_attention_mask)
        self_bias = jnp.where(allowed, self.decoder.layers[0].self_attn.position_bias(pos, pos)[None], _NEG)
        cross_bias = jnp.where(_key_mask(attention_mask), 0.0, _NEG)
        for layer, cross_kv in zip(self.decoder.layers, self.cross_keys_values(enc)):
            y, _ = layer(y, self_bias, cross_kv, cross_bias)
        return self.head(self.decoder.final_norm(y))

    def head(self, y: jax.Array) -> jax.Array:
        if self.config.scale_decoder_outputs:
            y = y * jnp.asarray(self.config.d_model**-0.5, y.dtype)
        if self.lm_head is not None:
            return self.lm_head(y).astype(jnp.float32)
        return jnp.dot(y, self.shared.embedding[...].astype(y.dtype).T).astype(jnp.float32)

    def __call__(self, input_ids, attention_mask, decoder_input_ids, decoder_attention_mask=None) -> jax.Array:
        enc = self.encode(input_ids, attention_mask)
        return self.decode(decoder_input_ids, enc, attention_mask, decoder_attention_mask)
