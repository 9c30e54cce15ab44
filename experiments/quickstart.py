"""The optax transform on its own: python experiments/quickstart.py

Two tasks on a small MLP: fine-tune, then protect 80% of each matrix's singular directions and
keep training; the weight change of the second task stays out of the protected subspace.
"""

import jax
import jax.numpy as jnp
import optax

import asvd_jax as aj


def loss_fn(params, x, y):
    hidden = jax.nn.gelu(x @ params["mlp"]["up"]["kernel"])
    return jnp.mean((hidden @ params["mlp"]["down"]["kernel"] - y) ** 2)


def train(params, tx, target_fn, seed, steps=100):
    state = tx.init(params)

    @jax.jit
    def step(params, state, x):
        loss, grads = jax.value_and_grad(loss_fn)(params, x, target_fn(x))
        updates, state = tx.update(grads, state, params)
        return optax.apply_updates(params, updates), state, loss

    for i in range(steps):
        x = jax.random.normal(jax.random.PRNGKey(seed * 1000 + i), (32, 64))
        params, state, loss = step(params, state, x)
    return params, float(loss)


def main():
    k_up, k_down = jax.random.split(jax.random.PRNGKey(0))
    params = {"mlp": {"up": {"kernel": jax.random.normal(k_up, (64, 256)) / 8},
                      "down": {"kernel": jax.random.normal(k_down, (256, 64)) / 16}}}
    targets = aj.select_targets(params)  # every >= 2-D float kernel here
    print("targets:", [path for path, _ in aj.list_targets(targets)])

    # Task 1: plain fine-tuning (nothing protected).
    params, loss1 = train(params, optax.adamw(1e-3, weight_decay=0.01), jnp.sin, seed=1)
    # Task boundary, host side: protect the top 80% of each matrix's singular directions.
    ranks = {"mlp/up/kernel": 51, "mlp/down/kernel": 51}  # 0.8 * min(64, 256)
    bases = aj.compute_bases(params, ranks, targets)
    tx = aj.with_projection(optax.adamw(1e-3, weight_decay=0.01), bases)  # projection last
    start = params
    params, loss2 = train(params, tx, jnp.cos, seed=2)
    delta = jax.tree.map(lambda a, b: a - b, params, start)
    leakage = aj.protected_leakage(delta, bases)
    print(f"task 1 loss {loss1:.4f}, task 2 loss {loss2:.4f}")
    print("protected share of task 2's weight change:",
          {path: f"{float(v):.1e}" for path, v in leakage.items()})
    return {"leakage": leakage, "start": start, "end": params, "ranks": ranks}


if __name__ == "__main__":
    main()
