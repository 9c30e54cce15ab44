"""Projection on an FSDP-style mesh of 8 fake CPU devices equals the unsharded result.

The device count flag must be set before jax starts, so the check runs in a subprocess and the
rest of the suite keeps one device.
"""

import os
import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent(r"""
    import os
    os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=8"
    import sys
    sys.path.insert(0, os.getcwd())
    sys.path.insert(0, os.path.join(os.getcwd(), "tests"))
    import jax, jax.numpy as jnp, numpy as np, optax
    from jax.sharding import AxisType, NamedSharding, PartitionSpec as P
    from tolerances import assert_close
    import asvd_jax as aj

    assert jax.device_count() == 8, jax.devices()
    mesh = jax.make_mesh((8,), ("fsdp",), axis_types=(AxisType.Auto,))
    rng = np.random.default_rng(0)
    params = {"mlp": {"kernel": jnp.asarray(rng.normal(size=(64, 48)), jnp.float32)},
              "mlp2": {"kernel": jnp.asarray(rng.normal(size=(64, 48)), jnp.float32)},
              "stack": {"kernel": jnp.asarray(rng.normal(size=(4, 32, 40)), jnp.float32)},
              "norm": {"scale": jnp.ones(48)}}
    targets = aj.select_targets(params, specs={"stack": aj.MatrixSpec((-2,), (-1,))})
    # Bases are computed on one device (SVD of sharded input is slow), then placed.
    bases = aj.compute_bases(params, {"mlp/kernel": 40, "mlp2/kernel": 40,
                                      "stack/kernel": [3, 30, 0, 32]}, targets)
    assert bases["mlp"]["kernel"].output_is_complement
    specs = {"mlp": {"kernel": P("fsdp", None)}, "mlp2": {"kernel": P("fsdp", None)}, "stack": {"kernel": P(None, "fsdp", None)},
             "norm": {"scale": P()}}
    put = lambda x, s: jax.device_put(x, NamedSharding(mesh, s))
    sharded_params = jax.tree.map(put, params, specs)

    def put_basis(b, s):
        # Each side's rows follow the matching matrix axis: FSDP on the leading matrix axis.
        if b is None:
            return None
        return jax.tree.map(lambda x: put(x, P(*s[:-2], "fsdp", None)), b)

    sharded_bases = jax.tree.map(put_basis, bases, specs,
                                 is_leaf=lambda x: x is None or isinstance(x, aj.SubspaceBasis))
    grads = jax.tree.map(lambda x: jnp.asarray(rng.normal(size=x.shape), jnp.float32), params)
    sharded_grads = jax.tree.map(put, grads, specs)

    # Leaf by leaf, and grouped by shape (mlp and mlp2 share one stacked projection).
    for mode, group in [(m, g) for m in aj.MODES for g in (False, True)]:
        want = jax.jit(aj.project_tree, static_argnums=2)(grads, bases, mode)
        got = jax.jit(aj.project_tree, static_argnums=(2, 3, 4))(sharded_grads, sharded_bases,
                                                                 mode, "highest", group)
        for (path, g), w, s, sg in zip(aj.flatten_with_paths(got)[0], jax.tree.leaves(want),
                                      jax.tree.leaves(sharded_grads), jax.tree.leaves(grads)):
            assert_close(g, np.asarray(w), "float32", scale=float(np.abs(sg).max()),
                         err_msg=f"{mode} {path}")
            assert g.sharding.is_equivalent_to(s.sharding, g.ndim), (mode, path, g.sharding)

    # A whole sharded train step: adamw with decay, projection last.
    tx = aj.with_projection(optax.adamw(1e-2, weight_decay=0.1), sharded_bases)
    state = tx.init(sharded_params)

    @jax.jit
    def step(p, s, g):
        u, s = tx.update(g, s, p)
        return optax.apply_updates(p, u), u

    new_p, u = step(sharded_params, state, sharded_grads)
    ref_tx = aj.with_projection(optax.adamw(1e-2, weight_decay=0.1), bases)
    ref_u, _ = jax.jit(ref_tx.update)(grads, ref_tx.init(params), params)
    ref_p = optax.apply_updates(params, ref_u)
    for a, b, s in zip(jax.tree.leaves(new_p), jax.tree.leaves(ref_p),
                       jax.tree.leaves(sharded_params)):
        assert_close(a, np.asarray(b), "float32", scale=float(np.abs(np.asarray(b)).max()))
        assert a.sharding.is_equivalent_to(s.sharding, a.ndim), a.sharding
    print("SHARDING_OK")
""")


def test_sharded_projection_matches_unsharded():
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8",
               JAX_PLATFORMS="cpu")
    proc = subprocess.run([sys.executable, "-c", SCRIPT], cwd=root, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and "SHARDING_OK" in proc.stdout, proc.stdout + proc.stderr
