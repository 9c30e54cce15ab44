"""The Llama family's record: loading from a config, the adapter, targets, token budgets."""

from __future__ import annotations

from typing import Any

from asvd_jax.models._family import Family, check_path, check_source, dtype_kwargs
from asvd_jax.models._tokenizer import byte_tokenizer
from asvd_jax.models.llama import _io
from asvd_jax.models.llama._adapter import DecoderAdapter
from asvd_jax.models.llama._model import DEFAULT_TARGETS, LlamaConfig, init_llama


def load(model_config: Any) -> tuple[Any, Any]:
    """(model, tokenizer) for ``model.source``: smollm2, hf, gguf, hub or random (a tiny model
    with a byte-level tokenizer, ``model.random_width`` wide, ``model.random_layers`` deep)."""
    check_source(FAMILY, model_config)
    kw = dtype_kwargs(model_config)
    source = model_config.source
    if source == "smollm2":
        return _io.load_smollm2(**kw)
    if source == "hf":
        return _io.load_hf(check_path(model_config, "Hugging Face folder"), **kw)
    if source == "gguf":
        return _io.load_gguf(check_path(model_config, "GGUF file"), **kw)
    if source == "hub":
        return _io.load_hub(check_path(model_config, "hub id"), **kw)
    tok = byte_tokenizer()
    width = model_config.random_width
    config = LlamaConfig(
        vocab_size=tok.vocab_size, hidden_size=width, intermediate_size=2 * width,
        num_layers=model_config.random_layers, num_heads=max(1, width // 16),
        num_kv_heads=max(1, width // 32), tie_word_embeddings=True,
        bos_token_id=tok.bos_id, eos_token_id=tok.eos_id, pad_token_id=tok.pad_id,
        max_position_embeddings=1024,
    )
    return init_llama(config, seed=0, **kw), tok


def adapter(config: Any, model: Any, tokenizer: Any) -> DecoderAdapter:
    return DecoderAdapter(model, tokenizer, max_len=config.data.max_len, batch_size=config.train.batch_size,
                          eval_batch_size=config.eval.batch_size, max_new_tokens=config.eval.max_new_tokens,
                          protocol=config.eval.protocol)


def _specials(tokenizer: Any) -> int:
    return int(getattr(tokenizer, "bos_id", None) is not None) + int(getattr(tokenizer, "eos_id", None) is not None)


def input_length(tokenizer: Any, task: Any, text: str, label: str | None) -> int:
    """Decoder training row before truncation: BOS + prompt + " " + answer + EOS."""
    from asvd_jax.data import format_prompt, token_count

    p = format_prompt(task, text)
    n = sum(token_count(tokenizer, part) for part in (p.head, p.text, p.tail))
    return n + _specials(tokenizer) + (token_count(tokenizer, " " + label) if label is not None else 0)


def answer_tokens(tokenizer: Any, label: str) -> int:
    """The answer follows the prompt after a space, as the model was trained to emit it."""
    from asvd_jax.data import token_count

    return token_count(tokenizer, " " + label)


FAMILY = Family(
    name="llama", adapter=adapter, default_targets=tuple(DEFAULT_TARGETS), load=load,
    sources=("smollm2", "hf", "gguf", "hub", "random"), protocols=("generate", "options"),
    compact_batches=True, input_length=input_length, answer_tokens=answer_tokens,
    pipeline_tag="text-generation", packaged=(("smollm2", "HuggingFaceTB/SmolLM2-135M-Instruct"),),
)
