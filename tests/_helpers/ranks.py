"""Random per-matrix statistics for the rank-policy and rank-plan tests."""

import numpy as np

from asvd_jax.ranks._stats import MatrixStatistics

DIMS = [("layers/0/attn/q_proj/kernel", 48, 48), ("layers/0/attn/k_proj/kernel", 48, 16),
        ("layers/0/mlp/up_proj/kernel", 48, 128), ("layers/0/mlp/down_proj/kernel", 128, 48),
        ("layers/1/attn/q_proj/kernel", 48, 48), ("layers/1/mlp/down_proj/kernel", 128, 48)]


def make_stats(rng, cos_low=0.4, cos_high=0.6, dims=DIMS, stack=()):
    out = {}
    for path, d_in, d_out in dims:
        r = min(d_in, d_out)
        energy = rng.uniform(0.1, 2.0, size=(*stack, r))
        out[path] = MatrixStatistics(
            path=path, shape=(*stack, d_in, d_out), stack_shape=stack, d_in=d_in, d_out=d_out, tokens=100,
            cos_truncate=rng.uniform(cos_low, cos_high, size=stack),
            cos_polar=rng.uniform(cos_low, cos_high, size=stack),
            input_energy=energy,
            total_energy=energy.sum(-1) * rng.uniform(1.0, 1.5, size=stack),
            output_norm=rng.uniform(size=(*stack, r)),
            singular_values=np.sort(rng.uniform(size=(*stack, r)))[..., ::-1],
        )
    return out
