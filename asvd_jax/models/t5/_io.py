"""T5 checkpoints: HF folder (and hub) loading with shape checks, export to the HF layout.

Every parameter path maps to one HF tensor name (``hf_name``); loading fills an abstract model
(``nnx.eval_shape``) leaf by leaf, and export walks the same map backwards, so load -> export ->
load reproduces the parameters exactly.
"""

from __future__ import annotations

import dataclasses
import os

import jax.numpy as jnp
import numpy as np
from flax import nnx

from asvd_jax.models._hf_io import (CheckpointError, export_folder, params_from_hf, params_to_hf, read_config,
                                    read_safetensors)
from asvd_jax.models._tokenizer import TextTokenizer
from asvd_jax.models.t5._model import T5, T5Config

_ATTN_HF = {"attn": "0.SelfAttention", "self_attn": "0.SelfAttention", "cross_attn": "1.EncDecAttention"}
_NORM_HF = {
    "encoder": {"attn_norm": 0, "mlp_norm": 1},
    "decoder": {"self_attn_norm": 0, "cross_attn_norm": 1, "mlp_norm": 2},
}


def hf_name(path: str) -> tuple[str, bool]:
    """HF tensor name of a parameter path, and whether the array is transposed ((in,out) vs (out,in))."""
    parts = path.split("/")
    if path == "shared/embedding":
        return "shared.weight", False
    if path == "lm_head/kernel":
        return "lm_head.weight", True
    if len(parts) == 3 and parts[1:] == ["final_norm", "scale"]:
        return f"{parts[0]}.final_layer_norm.weight", False
    stack, _, i, module, *rest = parts
    prefix = f"{stack}.block.{i}.layer"
    if module in _ATTN_HF:
        if rest == ["relative_bias", "embedding"]:
            return f"{prefix}.{_ATTN_HF[module]}.relative_attention_bias.weight", False
        return f"{prefix}.{_ATTN_HF[module]}.{rest[0][0]}.weight", True
    if module == "mlp":
        ff = 1 if stack == "encoder" else 2
        return f"{prefix}.{ff}.DenseReluDense.{rest[0]}.weight", True
    return f"{prefix}.{_NORM_HF[stack][module]}.layer_norm.weight", False


def _params_from_tensors(cfg, tensors, source, dtype, param_dtype) -> T5:
    return params_from_hf(lambda: T5(cfg, dtype=dtype, param_dtype=param_dtype, rngs=nnx.Rngs(0)),
                          hf_name, tensors, source, param_dtype)


def load_model(folder: str | os.PathLike, *, dtype=jnp.float32, param_dtype=jnp.float32) -> T5:
    """A T5 from an HF folder (config.json + safetensors); checks every tensor's shape."""
    folder = os.fspath(folder)
    cfg = T5Config.from_hf_dict(read_config(folder), source=os.path.join(folder, "config.json"))
    tensors = dict(read_safetensors(folder))
    source = os.path.join(folder, "model.safetensors")
    if "shared.weight" not in tensors and "encoder.embed_tokens.weight" in tensors:
        tensors["shared.weight"] = tensors["encoder.embed_tokens.weight"]
    # The head is untied when the checkpoint carries its own, different lm_head (flan / v1.1).
    head = tensors.get("lm_head.weight")
    if head is None and not cfg.tie_word_embeddings:
        raise CheckpointError(f"{source}: tensor 'lm_head.weight' is missing (config.json: tie_word_embeddings=false)")
    shared = tensors.get("shared.weight")
    untied = head is not None and not (shared is not None and np.array_equal(head, shared))
    cfg = dataclasses.replace(cfg, tie_word_embeddings=not untied)
    return _params_from_tensors(cfg, tensors, source, dtype, param_dtype)


def load_tokenizer(folder: str | os.PathLike, config: T5Config) -> TextTokenizer | None:
    """``tokenizer.json`` of the folder wrapped with T5's ids (pad, eos; no bos); None if absent."""
    path = os.path.join(folder, "tokenizer.json")
    if not os.path.isfile(path):
        return None
    from tokenizers import Tokenizer

    backend = Tokenizer.from_file(path)
    backend.no_padding()
    backend.no_truncation()
    return TextTokenizer(backend, bos_id=None, eos_id=config.eos_token_id, pad_id=config.pad_token_id)


def load_hf(folder: str | os.PathLike, *, dtype=jnp.float32, param_dtype=jnp.float32):
    """(model, tokenizer) from an HF folder; tokenizer is None without ``tokenizer.json``."""
    model = load_model(folder, dtype=dtype, param_dtype=param_dtype)
    return model, load_tokenizer(folder, model.config)


def load_hub(repo_id: str, *, revision: str | None = None, dtype=jnp.float32, param_dtype=jnp.float32):
    """Download (or reuse the local cache of) a hub repository, then ``load_hf``."""
    from huggingface_hub import snapshot_download

    folder = snapshot_download(
        repo_id, revision=revision, allow_patterns=["config.json", "*.safetensors", "*.safetensors.index.json", "tokenizer.json"]
    )
    return load_hf(folder, dtype=dtype, param_dtype=param_dtype)


def hf_tensors(model: T5) -> dict[str, np.ndarray]:
    """{HF name: float32 array in the HF (out, in) layout} for every parameter."""
    return params_to_hf(model, hf_name)


def export_hf(model: T5, folder: str | os.PathLike, tokenizer: TextTokenizer | None = None) -> None:
    """Write ``config.json`` + ``model.safetensors`` (float32) that HF's T5 classes load."""
    export_folder(model, folder, hf_tensors(model), tokenizer)


def init_random(config: T5Config, seed: int = 0, *, dtype=jnp.float32, param_dtype=jnp.float32) -> T5:
    return T5(config, dtype=dtype, param_dtype=param_dtype, rngs=nnx.Rngs(seed))
