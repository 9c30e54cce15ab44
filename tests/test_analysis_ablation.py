"""Rank-k truncation of chosen matrices against float64 numpy SVD references."""

import numpy as np
import pytest
from tolerances import assert_close

from asvd_jax._targets import MatrixSpec
from asvd_jax.analysis import matrix_type_paths, truncate_ranks


def _truncate64(w, k):
    u, s, vt = np.linalg.svd(np.asarray(w, np.float64), full_matrices=False)
    return (u[:, :k] * s[:k]) @ vt[:k]


def _params(rng):
    return {
        "layers": {str(i): {"mlp": {"down_proj": {"kernel": rng.standard_normal((9, 5)).astype(np.float32)},
                                    "up_proj": {"kernel": rng.standard_normal((5, 9)).astype(np.float32)}}}
                   for i in range(2)},
        "stack": {"kernel": rng.standard_normal((3, 4, 6)).astype(np.float32)},
        "norm": {"scale": np.ones(5, np.float32)},
    }


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_truncation_matches_float64_reference(seed):
    rng = np.random.default_rng(seed)
    params = _params(rng)
    paths = matrix_type_paths(params, "mlp/down_proj")
    assert paths == ["layers/0/mlp/down_proj/kernel", "layers/1/mlp/down_proj/kernel"]
    ranks = {paths[0]: 2, paths[1]: 0, "stack/kernel": [0, 1, 4]}
    out = truncate_ranks(params, ranks)
    w0 = params["layers"]["0"]["mlp"]["down_proj"]["kernel"]
    got0 = out["layers"]["0"]["mlp"]["down_proj"]["kernel"]
    assert got0.shape == w0.shape and got0.dtype == w0.dtype
    assert_close(got0, _truncate64(w0, 2), "float32", scale=np.linalg.norm(w0, 2))
    # Eckart-Young: the Frobenius error is the norm of the dropped singular values.
    s = np.linalg.svd(w0.astype(np.float64), compute_uv=False)
    assert_close(np.linalg.norm(np.asarray(got0, np.float64) - w0), np.sqrt((s[2:] ** 2).sum()), "float32",
                 scale=s[0])
    assert np.all(np.asarray(out["layers"]["1"]["mlp"]["down_proj"]["kernel"]) == 0.0)
    for b, k in enumerate([0, 1, 4]):
        w = params["stack"]["kernel"][b]
        assert_close(out["stack"]["kernel"][b], _truncate64(w, k), "float32", scale=np.linalg.norm(w, 2))
    # untouched leaves are the same objects
    assert out["layers"]["0"]["mlp"]["up_proj"]["kernel"] is params["layers"]["0"]["mlp"]["up_proj"]["kernel"]
    assert out["norm"]["scale"] is params["norm"]["scale"]


def test_truncation_reads_a_transposed_layout_through_targets():
    rng = np.random.default_rng(4)
    w = rng.standard_normal((7, 4)).astype(np.float32)  # stored (out, in)
    params = {"w": w}
    out = truncate_ranks(params, {"w": 2}, targets={"w": MatrixSpec(in_axes=(1,), out_axes=(0,))})
    assert_close(out["w"], _truncate64(w, 2), "float32", scale=np.linalg.norm(w, 2))


def test_truncation_errors():
    params = _params(np.random.default_rng(0))
    with pytest.raises(ValueError, match="layers/7"):
        truncate_ranks(params, {"layers/7/mlp/down_proj/kernel": 1})
    with pytest.raises(ValueError, match=r"\[0, 5\]"):
        truncate_ranks(params, {"layers/0/mlp/down_proj/kernel": 6})
    with pytest.raises(TypeError, match="int"):
        truncate_ranks(params, {"layers/0/mlp/down_proj/kernel": 1.5})
    with pytest.raises(ValueError, match="attn/q_proj"):
        matrix_type_paths(params, "attn/q_proj")
