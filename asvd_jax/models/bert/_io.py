"""BERT checkpoints (HF folders, the packaged MiniLM), tokenizer, batched text embedding.

Texts are batched by length (sorted, then restored) and padded to power-of-two lengths and a
fixed batch size, so the jitted embedding compiles once per length bucket, not per call.
"""

from __future__ import annotations

import importlib.util
import os
from typing import Sequence

import jax.numpy as jnp
import numpy as np
from flax import nnx

from asvd_jax.data import bucket_length, pad_token_rows
from asvd_jax.models._hf_io import (CheckpointError, export_folder, params_from_hf, params_to_hf, read_config,
                                    read_safetensors)
from asvd_jax.models._tokenizer import TextTokenizer
from asvd_jax.models.bert._model import MINILM_PACKAGE, MINILM_PIP, Bert, BertConfig, embed

_ATTN = {"q_proj": "attention.self.query", "k_proj": "attention.self.key",
         "v_proj": "attention.self.value", "o_proj": "attention.output.dense"}
_LAYER = {"attn_norm": "attention.output.LayerNorm", "mlp/up_proj": "intermediate.dense",
          "mlp/down_proj": "output.dense", "mlp_norm": "output.LayerNorm"}
_EMB = {"word": "word_embeddings", "position": "position_embeddings", "token_type": "token_type_embeddings"}
_LEAF = {"kernel": "weight", "scale": "weight", "bias": "bias", "embedding": "weight"}


def hf_name(path: str) -> tuple[str, bool]:
    """HF ``BertModel`` tensor name of a parameter path, and whether it is transposed."""
    *module, leaf = path.split("/")
    transposed = leaf == "kernel"
    if module[0] == "embeddings":
        name = "embeddings.LayerNorm" if module[1] == "norm" else f"embeddings.{_EMB[module[1]]}"
    elif module[0] == "pooler":
        name = "pooler.dense"
    else:
        _, i, *rest = module
        rest = "/".join(rest)
        name = f"encoder.layer.{i}." + (_ATTN[rest.split("/")[1]] if rest.startswith("attn/") else _LAYER[rest])
    return f"{name}.{_LEAF[leaf]}", transposed


def load_model(folder: str | os.PathLike, *, dtype=jnp.float32, param_dtype=jnp.float32) -> Bert:
    """A BERT encoder from an HF folder; checks every tensor's shape against the config."""
    folder = os.fspath(folder)
    hf = read_config(folder)
    tensors = read_safetensors(folder)
    source = os.path.join(folder, "model.safetensors")
    if not any(k.startswith("embeddings.") for k in tensors) and any(k.startswith("bert.") for k in tensors):
        # Task-head checkpoints (BertFor...) nest the encoder under "bert."; heads are dropped.
        tensors = {k[5:]: v for k, v in tensors.items() if k.startswith("bert.")}
    hf["has_pooler"] = "pooler.dense.weight" in tensors
    cfg = BertConfig.from_hf_dict(hf, source=os.path.join(folder, "config.json"))
    return params_from_hf(lambda: Bert(cfg, dtype=dtype, param_dtype=param_dtype, rngs=nnx.Rngs(0)),
                          hf_name, tensors, source, param_dtype)


def load_tokenizer(folder: str | os.PathLike, config: BertConfig | None = None) -> TextTokenizer | None:
    """``tokenizer.json`` with padding and truncation off (batching pads); None if absent."""
    path = os.path.join(folder, "tokenizer.json")
    if not os.path.isfile(path):
        return None
    from tokenizers import Tokenizer

    backend = Tokenizer.from_file(path)
    backend.no_padding()
    backend.no_truncation()
    ids = {t: backend.token_to_id(t) for t in ("[CLS]", "[SEP]", "[PAD]")}
    for token, i in ids.items():
        if i is None:
            raise CheckpointError(f"{path}: token {token!r} is not in the vocabulary")
    return TextTokenizer(backend, bos_id=ids["[CLS]"], eos_id=ids["[SEP]"], pad_id=ids["[PAD]"])


def load_hf(folder: str | os.PathLike, *, dtype=jnp.float32, param_dtype=jnp.float32):
    """(model, tokenizer) from an HF folder; tokenizer is None without ``tokenizer.json``."""
    model = load_model(folder, dtype=dtype, param_dtype=param_dtype)
    return model, load_tokenizer(folder, model.config)


def minilm_folder() -> str:
    """The HF folder of all-MiniLM-L6-v2 inside its installed package (never imported)."""
    spec = importlib.util.find_spec(MINILM_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(
            f"the MiniLM weights ship in the package {MINILM_PACKAGE!r}, which is not installed; run: {MINILM_PIP}"
        )
    folder = os.path.join(list(spec.submodule_search_locations)[0], "model")
    if not os.path.isfile(os.path.join(folder, "model.safetensors")):
        raise CheckpointError(f"{folder}: model.safetensors missing; reinstall with: {MINILM_PIP}")
    return folder


def load_minilm(*, dtype=jnp.float32, param_dtype=jnp.float32):
    """(model, tokenizer) of the packaged all-MiniLM-L6-v2 sentence encoder."""
    return load_hf(minilm_folder(), dtype=dtype, param_dtype=param_dtype)


def hf_tensors(model: Bert) -> dict[str, np.ndarray]:
    """{HF name: float32 array in the HF (out, in) layout} for every parameter."""
    return params_to_hf(model, hf_name)


def export_hf(model: Bert, folder: str | os.PathLike, tokenizer: TextTokenizer | None = None) -> None:
    """Write ``config.json`` + ``model.safetensors`` (float32) that HF's ``BertModel`` loads."""
    export_folder(model, folder, hf_tensors(model), tokenizer)


def init_random(config: BertConfig, seed: int = 0, *, dtype=jnp.float32, param_dtype=jnp.float32) -> Bert:
    return Bert(config, dtype=dtype, param_dtype=param_dtype, rngs=nnx.Rngs(seed))


def encode_texts(model: Bert, tokenizer, texts: Sequence[str], max_len: int = 128, batch_size: int = 32) -> np.ndarray:
    """(len(texts), hidden) float32 L2-normalised mean-pooled embeddings.

    Each text becomes ``[CLS] tokens [SEP]``, truncated to ``max_len`` tokens in all.
    """
    if isinstance(texts, str):
        raise TypeError("encode_texts: texts must be a sequence of strings, not a string")
    limit = model.config.max_position_embeddings
    if not 2 < max_len <= limit:
        raise ValueError(f"encode_texts: max_len must be in (2, {limit}] (max_position_embeddings), got {max_len}")
    if batch_size <= 0:
        raise ValueError(f"encode_texts: batch_size must be positive, got {batch_size}")
    rows = [[tokenizer.bos_id, *tokenizer.encode(t)[: max_len - 2], tokenizer.eos_id] for t in texts]
    order = np.argsort([len(r) for r in rows], kind="stable")
    out = np.zeros((len(rows), model.config.hidden_size), np.float32)
    for lo in range(0, len(rows), batch_size):
        idx = order[lo : lo + batch_size]
        length = min(bucket_length(max(len(rows[i]) for i in idx)), limit)
        # Filler rows: one padding token each (a fixed batch shape), dropped below.
        filler = [[tokenizer.pad_id]] * (batch_size - len(idx))
        ids, mask = pad_token_rows([rows[i] for i in idx] + filler, length, tokenizer.pad_id)
        out[idx] = np.asarray(embed(model, ids, mask))[: len(idx)]
    return out


def score_options(model: Bert, tokenizer, inputs: Sequence[str], options: Sequence[str], *,
                  max_len: int = 128, batch_size: int = 32) -> np.ndarray:
    """(len(inputs), len(options)) cosine similarities of the sentence embeddings."""
    if not options:
        raise ValueError("score_options: options is empty")
    a = encode_texts(model, tokenizer, inputs, max_len=max_len, batch_size=batch_size)
    b = encode_texts(model, tokenizer, options, max_len=max_len, batch_size=batch_size)
    return a @ b.T
