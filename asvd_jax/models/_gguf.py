"""Reading a llama.cpp GGUF file as a Hugging Face Llama checkpoint (numpy only).

GGUF stores each tensor quantised; ``gguf.quants.dequantize`` returns float32 in the PyTorch
(out, in) layout. llama.cpp's converter permutes the rows of q_proj and k_proj so that RoPE
acts on interleaved pairs (x_2i, x_2i+1): within each head the HF row order
[r_0 .. r_{h/2-1} | r_{h/2} .. r_{h-1}] becomes [r_0, r_{h/2}, r_1, r_{h/2+1}, ...].
``unpermute_rows`` inverts that, so the half-split HF rotary embedding applies unchanged.

The tokenizer is rebuilt from the metadata: byte-level BPE from ``tokenizer.ggml.tokens`` and
``tokenizer.ggml.merges``, the pre-tokenizer named by ``tokenizer.ggml.pre``.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from asvd_jax.models._hf_io import CheckpointError

# GGUF tensor name (after "blk.<i>.") -> HF name (after "model.layers.<i>.")
_BLOCK_NAMES = {
    "attn_q.weight": "self_attn.q_proj.weight",
    "attn_k.weight": "self_attn.k_proj.weight",
    "attn_v.weight": "self_attn.v_proj.weight",
    "attn_output.weight": "self_attn.o_proj.weight",
    "ffn_gate.weight": "mlp.gate_proj.weight",
    "ffn_up.weight": "mlp.up_proj.weight",
    "ffn_down.weight": "mlp.down_proj.weight",
    "attn_norm.weight": "input_layernorm.weight",
    "ffn_norm.weight": "post_attention_layernorm.weight",
    "attn_q.bias": "self_attn.q_proj.bias",
    "attn_k.bias": "self_attn.k_proj.bias",
    "attn_v.bias": "self_attn.v_proj.bias",
}
_TOP_NAMES = {
    "token_embd.weight": "model.embed_tokens.weight",
    "output_norm.weight": "model.norm.weight",
    "output.weight": "lm_head.weight",
}
# llama.cpp token types: 3 = control (special), 4 = user-defined (added, not special).
_CONTROL, _USER_DEFINED = 3, 4


def permute_rows(w: np.ndarray, n_heads: int) -> np.ndarray:
    """HF -> llama.cpp row order of a q/k weight (out, in) or bias (out,)."""
    rows = w.shape[0]
    return w.reshape(n_heads, 2, rows // n_heads // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def unpermute_rows(w: np.ndarray, n_heads: int) -> np.ndarray:
    """llama.cpp -> HF row order (the inverse of ``permute_rows``)."""
    rows = w.shape[0]
    return w.reshape(n_heads, rows // n_heads // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def _field(reader, key: str, path: str, default: Any = KeyError) -> Any:
    field = reader.fields.get(key)
    if field is None:
        if default is KeyError:
            raise CheckpointError(f"{path}: metadata key {key!r} is missing")
        return default
    return field.contents()


def open_reader(path: str, architecture: str):
    """A ``gguf.GGUFReader`` of ``path`` after checking the file exists, parses and holds
    ``architecture`` (CheckpointError naming the file otherwise)."""
    from gguf import GGUFReader

    if not os.path.isfile(path):
        raise CheckpointError(f"{path}: GGUF file not found")
    try:
        reader = GGUFReader(path)
    except Exception as e:  # gguf raises plain ValueError/struct errors on a bad file
        raise CheckpointError(f"{path}: cannot read as GGUF ({e})") from e
    arch = _field(reader, "general.architecture", path)
    if arch != architecture:
        raise CheckpointError(f"{path}: unknown architecture {arch!r} (this loader reads {architecture!r})")
    return reader


def read_gguf(path: str | os.PathLike) -> tuple[dict, dict[str, np.ndarray], dict]:
    """(HF config dict, {HF tensor name: float32 array (PyTorch layout)}, tokenizer metadata)."""
    from gguf.quants import dequantize

    path = os.fspath(path)
    reader = open_reader(path, "llama")
    heads = int(_field(reader, "llama.attention.head_count", path))
    kv_heads = int(_field(reader, "llama.attention.head_count_kv", path, heads))
    tokens = _field(reader, "tokenizer.ggml.tokens", path)
    tensors: dict[str, np.ndarray] = {}
    for t in reader.tensors:
        name = _TOP_NAMES.get(t.name)
        if name is None and t.name.startswith("blk."):
            _, layer, rest = t.name.split(".", 2)
            if rest in _BLOCK_NAMES:
                name = f"model.layers.{layer}.{_BLOCK_NAMES[rest]}"
        if name is None:
            continue  # e.g. rope_freqs: recomputed from the config
        arr = np.asarray(dequantize(t.data, t.tensor_type), np.float32)
        arr = arr.reshape(tuple(int(n) for n in reversed(t.shape)))
        if name.endswith(("q_proj.weight", "q_proj.bias")):
            arr = unpermute_rows(arr, heads)
        elif name.endswith(("k_proj.weight", "k_proj.bias")):
            arr = unpermute_rows(arr, kv_heads)
        tensors[name] = arr
    hidden = int(_field(reader, "llama.embedding_length", path))
    config = {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "vocab_size": int(_field(reader, "llama.vocab_size", path, len(tokens))),
        "hidden_size": hidden,
        "intermediate_size": int(_field(reader, "llama.feed_forward_length", path)),
        "num_hidden_layers": int(_field(reader, "llama.block_count", path)),
        "num_attention_heads": heads,
        "num_key_value_heads": kv_heads,
        "head_dim": int(_field(reader, "llama.rope.dimension_count", path, hidden // heads)),
        "rope_theta": float(_field(reader, "llama.rope.freq_base", path, 10000.0)),
        "rms_norm_eps": float(_field(reader, "llama.attention.layer_norm_rms_epsilon", path)),
        "max_position_embeddings": int(_field(reader, "llama.context_length", path, 2048)),
        "tie_word_embeddings": "lm_head.weight" not in tensors,
        "attention_bias": "model.layers.0.self_attn.q_proj.bias" in tensors,
        "bos_token_id": _field(reader, "tokenizer.ggml.bos_token_id", path, None),
        "eos_token_id": _field(reader, "tokenizer.ggml.eos_token_id", path, None),
        "pad_token_id": _field(reader, "tokenizer.ggml.padding_token_id", path, None),
    }
    tok_meta = {
        "model": _field(reader, "tokenizer.ggml.model", path),
        "pre": _field(reader, "tokenizer.ggml.pre", path, "default"),
        "tokens": tokens,
        "token_type": _field(reader, "tokenizer.ggml.token_type", path, None),
        "merges": _field(reader, "tokenizer.ggml.merges", path, []),
        "add_bos_token": bool(_field(reader, "tokenizer.ggml.add_bos_token", path, False)),
        "chat_template": _field(reader, "tokenizer.chat_template", path, None),
        "bos_id": config["bos_token_id"],
        "eos_id": config["eos_token_id"],
        "pad_id": config["pad_token_id"],
        "source": path,
    }
    return config, tensors, tok_meta


# Llama 3's split pattern (contractions, letters, up to 3 digits, punctuation, spaces).
_LLAMA3_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)


def build_tokenizer(meta: dict):
    """A ``TextTokenizer`` rebuilt from GGUF tokenizer metadata (byte-level BPE)."""
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers, processors

    from asvd_jax.models._tokenizer import TextTokenizer

    source = meta["source"]
    if meta["model"] != "gpt2":
        raise CheckpointError(
            f"{source}: tokenizer.ggml.model {meta['model']!r} is not supported (byte-level "
            "BPE 'gpt2' only); load the model from a HF folder with tokenizer.json instead"
        )
    tokens = list(meta["tokens"])
    merges = [tuple(m.split(" ", 1)) for m in meta["merges"]]
    tok = Tokenizer(models.BPE(vocab={t: i for i, t in enumerate(tokens)}, merges=merges))
    pre = meta["pre"]
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    if pre == "smollm":  # SmolLM / StarCoder style: every digit is its own pre-token
        tok.pre_tokenizer = pre_tokenizers.Sequence(
            [pre_tokenizers.Digits(individual_digits=True), byte_level])
    elif pre in ("gpt2", "default"):
        tok.pre_tokenizer = byte_level
    elif pre in ("llama-bpe", "llama3"):
        tok.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(_LLAMA3_PATTERN), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ])
    else:
        raise CheckpointError(f"{source}: tokenizer.ggml.pre {pre!r} is not supported")
    tok.decoder = decoders.ByteLevel()
    types = meta["token_type"] if meta["token_type"] is not None else [1] * len(tokens)
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False)
                            for t, kind in zip(tokens, types) if kind == _CONTROL])
    tok.add_tokens([AddedToken(t, normalized=False)
                    for t, kind in zip(tokens, types) if kind == _USER_DEFINED])
    bos = meta["bos_id"]
    if meta["add_bos_token"] and bos is not None:
        bos_tok = tokens[bos]
        tok.post_processor = processors.TemplateProcessing(
            single=f"{bos_tok} $A", pair=f"{bos_tok} $A {bos_tok} $B", special_tokens=[(bos_tok, bos)])
    eos = meta["eos_id"]
    pad = meta["pad_id"] if meta["pad_id"] is not None else (eos if eos is not None else 0)
    return TextTokenizer(tok, bos_id=bos, eos_id=eos, pad_id=int(pad))
