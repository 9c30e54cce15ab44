"""The BERT family's record: loading from a config, the adapter, targets, token budgets."""

from __future__ import annotations

from typing import Any

from asvd_jax.models._family import Family, check_path, check_source, dtype_kwargs
from asvd_jax.models._tokenizer import byte_tokenizer
from asvd_jax.models.bert import _io
from asvd_jax.models.bert._adapter import EncoderAdapter
from asvd_jax.models.bert._model import DEFAULT_TARGETS, BertConfig


def load(model_config: Any) -> tuple[Any, Any]:
    """(model, tokenizer) for ``model.source``: minilm, hf or random (a tiny model with a
    byte-level tokenizer, ``model.random_width`` wide, ``model.random_layers`` deep)."""
    check_source(FAMILY, model_config)
    kw = dtype_kwargs(model_config)
    if model_config.source == "minilm":
        return _io.load_minilm(**kw)
    if model_config.source == "hf":
        return _io.load_hf(check_path(model_config, "Hugging Face folder"), **kw)
    tok = byte_tokenizer()
    width = model_config.random_width
    config = BertConfig(vocab_size=tok.vocab_size, hidden_size=width,
                        num_hidden_layers=model_config.random_layers,
                        num_attention_heads=max(1, width // 16), intermediate_size=2 * width,
                        max_position_embeddings=512, pad_token_id=tok.pad_id)
    return _io.init_random(config, seed=0, **kw), tok


def adapter(config: Any, model: Any, tokenizer: Any) -> EncoderAdapter:
    return EncoderAdapter(model, tokenizer, max_len=config.data.max_len, batch_size=config.train.batch_size,
                          eval_batch_size=config.eval.batch_size)


def input_length(tokenizer: Any, task: Any, text: str, label: str | None) -> int:
    """[CLS] instruction + "\\n" + text [SEP]; the label is an option, embedded on its own."""
    from asvd_jax.data import token_count

    specials = int(getattr(tokenizer, "bos_id", None) is not None) + int(getattr(tokenizer, "eos_id", None) is not None)
    return specials + token_count(tokenizer, f"{task.instruction}\n{text}")


FAMILY = Family(
    name="bert", adapter=adapter, default_targets=tuple(DEFAULT_TARGETS), load=load,
    sources=("minilm", "hf", "random"), protocols=("similarity",), compact_batches=True,
    # answer_tokens=None: option scoring by similarity generates nothing, so labels never
    # meet the generation budget.
    input_length=input_length, answer_tokens=None,
    pipeline_tag="text-classification", packaged=(("minilm", "sentence-transformers/all-MiniLM-L6-v2"),),
)
