"""Layers shared by every model: a capturable Linear in the Flax (in, out) layout."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from asvd_jax.models._capture import record

# Hugging Face config activation names -> functions, for every model here. "gelu" is the exact
# erf form; "gelu_new" / "gelu_pytorch_tanh" the tanh approximation; "swish" is SiLU.
ACTIVATIONS = {
    "relu": jax.nn.relu,
    "gelu": lambda x: jax.nn.gelu(x, approximate=False),
    "gelu_new": lambda x: jax.nn.gelu(x, approximate=True),
    "gelu_pytorch_tanh": lambda x: jax.nn.gelu(x, approximate=True),
    "silu": jax.nn.silu,
    "swish": jax.nn.silu,
}


class Linear(nnx.Module):
    """y = x @ kernel (+ bias), kernel stored (in_features, out_features).

    Hands its input to an active ``capture()`` block under ``capture_name`` (the kernel's
    parameter path, set by ``assign_capture_names``); with no block active nothing is traced.
    ``dtype`` is the compute dtype (bf16 inference on float32 weights, or bf16 weights).
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        *,
        use_bias: bool = False,
        dtype: jnp.dtype | None = None,
        param_dtype: jnp.dtype = jnp.float32,
        rngs: nnx.Rngs,
    ):
        init = jax.nn.initializers.lecun_normal()
        self.kernel = nnx.Param(init(rngs.params(), (in_features, out_features), param_dtype))
        self.bias = nnx.Param(jnp.zeros((out_features,), param_dtype)) if use_bias else None
        self.dtype = dtype
        self.capture_name: str | None = None

    def __call__(self, x: jax.Array) -> jax.Array:
        record(self.capture_name, x)
        kernel = self.kernel[...]
        dtype = self.dtype or jnp.result_type(x.dtype, kernel.dtype)
        y = jnp.dot(x.astype(dtype), kernel.astype(dtype))
        if self.bias is not None:
            y = y + self.bias[...].astype(dtype)
        return y
