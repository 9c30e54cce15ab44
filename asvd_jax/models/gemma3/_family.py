"""The Gemma 3 family's record: loading from a config, the adapter, targets, token budgets.

Training, evaluation (greedy generation with a KV cache, option scoring), statistics capture
and the held-out LM loss are the decoder adapter's (``asvd_jax.models.llama._adapter``): the
model offers the same interface, and the adapter already runs the vocabulary-wide head only at
the positions that carry loss or are decoded.
"""

from __future__ import annotations

from typing import Any

from asvd_jax.models._family import Family, check_path, check_source, dtype_kwargs
from asvd_jax.models._tokenizer import byte_tokenizer
from asvd_jax.models.gemma3 import _io
from asvd_jax.models.gemma3._model import DEFAULT_TARGETS, Gemma3Config, init_gemma3
from asvd_jax.models.llama import _family as llama_family
from asvd_jax.models.llama._adapter import DecoderAdapter


class Gemma3Adapter(DecoderAdapter):
    """The decoder adapter, exporting in Gemma 3's HF layout."""

    family = "gemma3"

    def export(self, params, folder):
        _io.export_hf(self.model(params), folder, tokenizer=self.tokenizer)


def load(model_config: Any) -> tuple[Any, Any]:
    """(model, tokenizer) for ``model.source``: gemma3_270m (the packaged base model), hf, gguf
    or random (a tiny model with a byte-level tokenizer, ``model.random_width`` wide,
    ``model.random_layers`` deep, one global layer after every local one)."""
    check_source(FAMILY, model_config)
    kw = dtype_kwargs(model_config)
    source = model_config.source
    if source == "gemma3_270m":
        return _io.load_gemma3_270m(**kw)
    if source == "hf":
        return _io.load_hf(check_path(model_config, "Hugging Face folder"), **kw)
    if source == "gguf":
        return _io.load_gguf(check_path(model_config, "GGUF file"), **kw)
    tok = byte_tokenizer()
    width, layers = model_config.random_width, model_config.random_layers
    config = Gemma3Config(
        vocab_size=tok.vocab_size, hidden_size=width, intermediate_size=2 * width, num_layers=layers,
        num_heads=max(1, width // 16), num_kv_heads=1, head_dim=16, query_pre_attn_scalar=16,
        sliding_window=64, layer_types=tuple("full_attention" if i % 2 else "sliding_attention"
                                             for i in range(layers)),
        bos_token_id=tok.bos_id, eos_token_id=tok.eos_id, pad_token_id=tok.pad_id, max_position_embeddings=1024,
    )
    return init_gemma3(config, seed=0, **kw), tok


def adapter(config: Any, model: Any, tokenizer: Any) -> Gemma3Adapter:
    return Gemma3Adapter(model, tokenizer, max_len=config.data.max_len, batch_size=config.train.batch_size,
                         eval_batch_size=config.eval.batch_size, max_new_tokens=config.eval.max_new_tokens,
                         protocol=config.eval.protocol)


FAMILY = Family(
    name="gemma3", adapter=adapter, default_targets=tuple(DEFAULT_TARGETS), load=load,
    sources=("gemma3_270m", "hf", "gguf", "random"), protocols=("generate", "options"),
    compact_batches=True, input_length=llama_family.input_length, answer_tokens=llama_family.answer_tokens,
    pipeline_tag="text-generation", packaged=(("gemma3_270m", _io.GEMMA3_270M_HUB_ID),),
)
