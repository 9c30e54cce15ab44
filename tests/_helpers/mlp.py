"""A two-layer MLP regression with known spectra, its loss at a chosen compute dtype, and a
compiled multi-step optimizer run: the set-up of the precision and leakage-tracking tests."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
from _helpers.linalg import matrix_with_spectrum


def mlp(seed, d_in=16, hidden=32, d_out=8, rows=64):
    """params (float32, spectra with unit gaps) and data of a 2-layer MLP regression."""
    rng = np.random.default_rng(seed)
    params = {"up": {"kernel": jnp.asarray(matrix_with_spectrum(rng, d_in, hidden) / hidden,
                                           jnp.float32), "bias": jnp.zeros(hidden)},
              "down": {"kernel": jnp.asarray(matrix_with_spectrum(rng, hidden, d_out) / d_out,
                                             jnp.float32), "bias": jnp.zeros(d_out)}}
    x = jnp.asarray(rng.normal(size=(rows, d_in)), jnp.float32)
    y = jnp.asarray(rng.normal(size=(rows, d_out)), jnp.float32)
    return params, x, y


RANKS = {"up/kernel": 8, "down/kernel": 4}


def mlp_loss(compute_dtype):
    def loss(p, x, y):
        c = jax.tree.map(lambda a: a.astype(compute_dtype), p)  # bf16 compute on any params
        h = jax.nn.gelu(x.astype(compute_dtype) @ c["up"]["kernel"] + c["up"]["bias"])
        out = h @ c["down"]["kernel"] + c["down"]["bias"]
        return jnp.mean((out.astype(jnp.float32) - y) ** 2)
    return loss


def run(params, tx, loss, x, y, steps):
    """``steps`` optimizer steps in one compiled scan."""
    @jax.jit
    def go(p, s):
        def body(carry, _):
            p, s = carry
            u, s = tx.update(jax.grad(loss)(p, x, y), s, p)
            return (optax.apply_updates(p, u), s), None
        return jax.lax.scan(body, (p, s), None, length=steps)[0]
    return go(params, tx.init(params))
