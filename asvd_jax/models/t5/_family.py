"""The T5 family's record: loading from a config, the adapter, targets, token budgets."""

from __future__ import annotations

from typing import Any

from asvd_jax.models._family import Family, check_path, check_source, dtype_kwargs
from asvd_jax.models._tokenizer import byte_tokenizer
from asvd_jax.models.t5 import _io
from asvd_jax.models.t5._adapter import Seq2SeqAdapter
from asvd_jax.models.t5._model import DEFAULT_TARGETS, T5Config


def load(model_config: Any) -> tuple[Any, Any]:
    """(model, tokenizer) for ``model.source``: hf, hub or random (a tiny model with a
    byte-level tokenizer, ``model.random_width`` wide, ``model.random_layers`` deep)."""
    check_source(FAMILY, model_config)
    kw = dtype_kwargs(model_config)
    if model_config.source == "hf":
        return _io.load_hf(check_path(model_config, "Hugging Face folder"), **kw)
    if model_config.source == "hub":
        return _io.load_hub(check_path(model_config, "hub id"), **kw)
    tok = byte_tokenizer()
    width = model_config.random_width
    config = T5Config(vocab_size=tok.vocab_size, d_model=width, d_kv=16, d_ff=2 * width,
                      num_layers=model_config.random_layers, num_decoder_layers=model_config.random_layers,
                      num_heads=max(1, width // 16), pad_token_id=tok.pad_id,
                      eos_token_id=tok.eos_id, decoder_start_token_id=tok.pad_id)
    return _io.init_random(config, seed=0, **kw), tok


def adapter(config: Any, model: Any, tokenizer: Any) -> Seq2SeqAdapter:
    return Seq2SeqAdapter(model, tokenizer, max_new_tokens=config.eval.max_new_tokens,
                          protocol=config.eval.protocol, max_len=config.data.max_len,
                          batch_size=config.train.batch_size, eval_batch_size=config.eval.batch_size)


def input_length(tokenizer: Any, task: Any, text: str, label: str | None) -> int:
    """Encoder input before truncation: the prompt + EOS (the label is the decoder's)."""
    from asvd_jax.data import format_prompt, token_count

    p = format_prompt(task, text)
    return sum(token_count(tokenizer, part) for part in (p.head, p.text, p.tail)) + 1


def answer_tokens(tokenizer: Any, label: str) -> int:
    """The decoder emits the label word alone (no leading space)."""
    from asvd_jax.data import token_count

    return token_count(tokenizer, label)


FAMILY = Family(
    name="t5", adapter=adapter, default_targets=tuple(DEFAULT_TARGETS), load=load,
    sources=("hf", "hub", "random"), protocols=("generate", "options"),
    input_length=input_length, answer_tokens=answer_tokens, pipeline_tag="text2text-generation",
)
