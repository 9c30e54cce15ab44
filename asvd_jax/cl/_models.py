"""Model loading for the runner: a ``ModelConfig`` in, (model, tokenizer, default targets) out.

``source="random"`` builds a tiny random model with a byte-level tokenizer (256 byte tokens
plus pad/bos/eos), so tests and the pulse check need no files at all.
"""

from __future__ import annotations

import os
from typing import Any

from asvd_jax.cl._config import ModelConfig


class ModelSourceError(ValueError):
    """The configured model cannot be loaded (missing file, unknown source for a family)."""


SOURCES = {
    "llama": ("smollm2", "hf", "gguf", "hub", "random"),
    "bert": ("minilm", "hf", "random"),
    "t5": ("hf", "hub", "random"),
}


def byte_tokenizer():
    """A byte-level tokenizer: ids 0/1/2 = pad/bos/eos, then the 256 bytes (no merges)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors

    from asvd_jax.models._tokenizer import TextTokenizer

    byte_chars = pre_tokenizers.ByteLevel.alphabet()
    vocab = {"<pad>": 0, "<s>": 1, "</s>": 2}
    for ch in sorted(byte_chars):
        vocab[ch] = len(vocab)
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens(["<pad>", "<s>", "</s>"])
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    return TextTokenizer(tok, bos_id=1, eos_id=2, pad_id=0)


def _check_path(cfg: ModelConfig, kind: str) -> str:
    if not cfg.path:
        raise ModelSourceError(f"model.path: source {cfg.source!r} needs a {kind} path")
    if cfg.source != "hub" and not os.path.exists(cfg.path):
        raise ModelSourceError(f"model.path: {cfg.path!r} does not exist ({kind} expected)")
    return cfg.path


def load_model(cfg: ModelConfig) -> tuple[Any, Any, tuple[str, ...]]:
    """(nnx model, tokenizer, default target regexes) for ``cfg``."""
    import jax.numpy as jnp

    if cfg.source not in SOURCES.get(cfg.family, ()):
        raise ModelSourceError(
            f"model.source: {cfg.source!r} is not available for family {cfg.family!r} "
            f"(choose from {SOURCES.get(cfg.family)})"
        )
    # model.dtype is the compute dtype; parameters (and so AdamW moments and bases) stay
    # float32 master weights: adding projected updates to bf16 weights would round every
    # step's sum to bf16 and leak into the protected subspace (docs/core.md, bf16 training).
    kw = dict(dtype=jnp.bfloat16 if cfg.dtype == "bfloat16" else jnp.float32,
              param_dtype=jnp.float32)
    if cfg.family == "llama":
        from asvd_jax.models import llama

        if cfg.source == "smollm2":
            model, tok = llama.load_smollm2(**kw)
        elif cfg.source == "hf":
            model, tok = llama.load_hf(_check_path(cfg, "Hugging Face folder"), **kw)
        elif cfg.source == "gguf":
            model, tok = llama.load_gguf(_check_path(cfg, "GGUF file"), **kw)
        elif cfg.source == "hub":
            model, tok = llama.load_hub(_check_path(cfg, "hub id"), **kw)
        else:
            tok = byte_tokenizer()
            width = cfg.random_width
            config = llama.LlamaConfig(
                vocab_size=tok.vocab_size, hidden_size=width, intermediate_size=2 * width,
                num_layers=cfg.random_layers, num_heads=max(1, width // 16),
                num_kv_heads=max(1, width // 32), tie_word_embeddings=True,
                bos_token_id=tok.bos_id, eos_token_id=tok.eos_id, pad_token_id=tok.pad_id,
                max_position_embeddings=1024,
            )
            model = llama.init_llama(config, seed=0, **kw)
        return model, tok, tuple(llama.DEFAULT_TARGETS)
    if cfg.family == "bert":
        from asvd_jax.models import bert

        if cfg.source == "minilm":
            model, tok = bert.load_minilm(**kw)
        elif cfg.source == "hf":
            model, tok = bert.load_hf(_check_path(cfg, "Hugging Face folder"), **kw)
        else:
            tok = byte_tokenizer()
            model = bert.init_random(_tiny_bert_config(bert, cfg, tok), seed=0, **kw)
        return model, tok, tuple(bert.DEFAULT_TARGETS)
    from asvd_jax.models import t5

    if cfg.source == "hf":
        model, tok = t5.load_hf(_check_path(cfg, "Hugging Face folder"), **kw)
    elif cfg.source == "hub":
        model, tok = t5.load_hub(_check_path(cfg, "hub id"), **kw)
    else:
        tok = byte_tokenizer()
        model = t5.init_random(_tiny_t5_config(t5, cfg, tok), seed=0, **kw)
    return model, tok, tuple(t5.DEFAULT_TARGETS)


def _tiny_bert_config(bert, cfg: ModelConfig, tok):
    width = cfg.random_width
    return bert.BertConfig(vocab_size=tok.vocab_size, hidden_size=width,
                           num_hidden_layers=cfg.random_layers,
                           num_attention_heads=max(1, width // 16), intermediate_size=2 * width,
                           max_position_embeddings=512, pad_token_id=tok.pad_id)


def _tiny_t5_config(t5, cfg: ModelConfig, tok):
    width = cfg.random_width
    return t5.T5Config(vocab_size=tok.vocab_size, d_model=width, d_kv=16, d_ff=2 * width,
                       num_layers=cfg.random_layers, num_decoder_layers=cfg.random_layers,
                       num_heads=max(1, width // 16), pad_token_id=tok.pad_id,
                       eos_token_id=tok.eos_id, decoder_start_token_id=tok.pad_id)
