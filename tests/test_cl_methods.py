"""ASVD's method plumbing: bases from the statistics' SVDs equal the core's bases."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import asvd_jax as aj
from asvd_jax.cl._methods import bases_from_svds
from asvd_jax.ranks import weight_svds
from tolerances import assert_close


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_bases_from_svds_project_like_compute_bases(seed):
    rng = np.random.default_rng(seed)
    params = {"tall": jnp.asarray(rng.normal(size=(12, 5)), jnp.float32),
              "wide": jnp.asarray(rng.normal(size=(4, 9)), jnp.float32),
              "square": jnp.asarray(rng.normal(size=(6, 6)), jnp.float32),
              "norm": jnp.ones((6,), jnp.float32)}
    targets = aj.select_targets(params)
    ranks = {"tall": int(rng.integers(0, 6)), "wide": 4, "square": int(rng.integers(1, 6))}
    ours = bases_from_svds(params, targets, ranks, weight_svds(params, targets))
    core = aj.compute_bases(params, ranks, targets)
    for path in ranks:
        g = jnp.asarray(rng.normal(size=params[path].shape), jnp.float32)
        for mode in ("strict", "paper", "input", "output"):
            got = aj.project(g, ours[path], mode)
            want = aj.project(g, core[path], mode)
            assert_close(got, want, "float32", scale=float(jnp.abs(g).max()), err_msg=f"{path} {mode}")
    # k = min dim on the tall matrix's complete (output) side freezes it in strict mode.
    frozen = bases_from_svds(params, targets, {"tall": 5, "wide": 0, "square": 0},
                             weight_svds(params, targets))
    g = jnp.asarray(rng.normal(size=(12, 5)), jnp.float32)
    assert float(jnp.abs(aj.project(g, frozen["tall"], "strict")).max()) < 1e-5
    np.testing.assert_array_equal(aj.project(params["wide"], frozen["wide"], "strict"), params["wide"])
