"""Tiny random Llama checkpoints in Hugging Face layout (the Llama and GGUF tests)."""

import numpy as np

from asvd_jax.models import llama
from asvd_jax.models.llama._io import hf_names

BASE = dict(vocab_size=61, hidden_size=32, intermediate_size=48, num_layers=2, num_heads=4,
            num_kv_heads=2, rope_theta=500.0, rms_norm_eps=1e-5, bos_token_id=1, eos_token_id=2)


def random_checkpoint(config: llama.LlamaConfig, seed: int) -> dict:
    """HF-named float32 tensors with O(1) activations (PyTorch (out, in) layout)."""
    rng = np.random.default_rng(seed)
    tensors = {}
    for path, (name, transposed) in hf_names(config).items():
        model_shape = param_shape(config, path)
        shape = model_shape[::-1] if transposed else model_shape
        if name.endswith("norm.weight") or "layernorm" in name:
            arr = 1.0 + 0.1 * rng.standard_normal(shape)
        elif name.endswith(".bias"):
            arr = 0.1 * rng.standard_normal(shape)
        else:
            arr = rng.standard_normal(shape) / np.sqrt(shape[-1])
        tensors[name] = arr.astype(np.float32)
    return tensors


def param_shape(config, path):
    """The model-layout shape of the parameter at `path`."""
    c, d, hd = config, config.hidden_size, config.head_size
    last = path.split("/")[-2:]
    if path == "embed/embedding":
        return (c.vocab_size, d)
    if path == "lm_head/kernel":
        return (d, c.vocab_size)
    if last[1] == "scale":
        return (d,)
    out = {"q_proj": c.num_heads * hd, "k_proj": c.num_kv_heads * hd, "v_proj": c.num_kv_heads * hd,
           "o_proj": d, "gate_proj": c.intermediate_size, "up_proj": c.intermediate_size,
           "down_proj": d}[last[0]]
    inp = {"o_proj": c.num_heads * hd, "down_proj": c.intermediate_size}.get(last[0], d)
    return (inp, out) if last[1] == "kernel" else (out,)
