"""Sequential LoRA: effective params against float64 numpy for every matrix layout, training
touches only the factors, the merged update has rank <= r, dtypes and errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _helpers.baselines import leaves_by_path, make_ctx, regression_adapter, run_task, task_batches, tiny_params
from tolerances import assert_close

import asvd_jax as aj
from asvd_jax.cl.baselines import LoRAConfig, lora
from asvd_jax.cl.baselines._common import lookup, nest

SEEDS = [0, 1, 2]


def _layout_zoo(rng, dtype=np.float32):
    """Leaves in four layouts, their specs, and numpy maps (*batch, d_in, d_out) -> leaf."""
    params = {
        "dense": {"kernel": rng.normal(size=(4, 6))},             # Flax (in, out)
        "stacked": {"kernel": rng.normal(size=(3, 4, 5))},        # scan-stacked (layer, in, out)
        "heads": {"kernel": rng.normal(size=(2, 3, 5))},          # (heads, head_dim) -> out
        "torch": {"weight": rng.normal(size=(6, 4))},             # PyTorch (out, in)
        "norm": {"scale": rng.normal(size=(6,))},                 # not a target
    }
    params = jax.tree.map(lambda x: jnp.asarray(x, dtype), params)
    targets = {
        "dense": {"kernel": aj.MatrixSpec()},
        "stacked": {"kernel": aj.MatrixSpec()},
        "heads": {"kernel": aj.MatrixSpec(in_axes=(0, 1), out_axes=(2,))},
        "torch": {"weight": aj.MatrixSpec(in_axes=(1,), out_axes=(0,))},
        "norm": {"scale": None},
    }
    to_leaf = {
        "dense/kernel": lambda m: m,
        "stacked/kernel": lambda m: m,
        "heads/kernel": lambda m: m.reshape(2, 3, 5),
        "torch/weight": lambda m: m.T,
    }
    return params, targets, to_leaf


@pytest.mark.parametrize("seed", SEEDS)
def test_effective_params_match_float64_in_every_layout(seed):
    rng = np.random.default_rng(seed)
    params, targets, to_leaf = _layout_zoo(rng)
    config = LoRAConfig(rank=2, alpha=float(rng.uniform(1, 8)))
    method = lora(config)
    trainable, frozen = method.start_task(make_ctx(0, params, None, [], targets=targets))
    shapes = {p: (lookup(trainable, p)["a"].shape, lookup(trainable, p)["b"].shape) for p in to_leaf}
    assert shapes == {
        "dense/kernel": ((4, 2), (2, 6)),
        "stacked/kernel": ((3, 4, 2), (3, 2, 5)),
        "heads/kernel": ((6, 2), (2, 5)),
        "torch/weight": ((4, 2), (2, 6)),
    }
    factors = {p: {"a": rng.normal(size=sa).astype(np.float32), "b": rng.normal(size=sb).astype(np.float32)}
               for p, (sa, sb) in shapes.items()}

    out = leaves_by_path(method.effective_params(nest(factors), frozen))

    base = leaves_by_path(params)
    for path, leaf in out.items():
        if path not in to_leaf:
            np.testing.assert_array_equal(leaf, base[path])
            continue
        a, b = factors[path]["a"].astype(np.float64), factors[path]["b"].astype(np.float64)
        want = np.asarray(base[path], np.float64) + config.alpha / config.rank * to_leaf[path](a @ b)
        assert_close(leaf, want, np.float32, err_msg=path)


@pytest.mark.parametrize("kind", ["dict", "nnx"])
def test_start_is_the_base_model_and_init_scale(kind):
    params, _ = tiny_params(0, kind)
    method = lora(LoRAConfig(rank=3))
    trainable, frozen = method.start_task(make_ctx(0, params, None, []))
    # Zero B: training starts from exactly the base model.
    out = leaves_by_path(method.effective_params(trainable, frozen))
    for path, leaf in leaves_by_path(params).items():
        np.testing.assert_array_equal(out[path], leaf)
    assert sorted(leaves_by_path(trainable)) == ["l1/kernel/a", "l1/kernel/b", "l2/kernel/a", "l2/kernel/b"]
    big = lora(LoRAConfig(rank=400))
    tr, _ = big.start_task(make_ctx(0, params, None, []))
    a = np.asarray(lookup(tr, "l2/kernel")["a"])
    # 2400 draws of N(0, 1/d_in): the sample std is within 5% of 1/sqrt(6) with overwhelming odds.
    assert abs(a.std() * np.sqrt(6) - 1) < 0.05
    assert not np.any(np.asarray(lookup(tr, "l2/kernel")["b"]))


@pytest.mark.parametrize("kind", ["dict", "nnx"])
def test_training_moves_only_targets_by_a_rank_r_update(kind):
    params, apply = tiny_params(3, kind)
    rank = 2
    method = lora(LoRAConfig(rank=rank, alpha=4.0, learning_rate=1e-2))
    last = {}
    merged, record, losses = run_task(
        method, make_ctx(0, params, regression_adapter(apply), task_batches(5)),
        on_step=lambda tr, fr: last.update(trainable=tr),
    )
    assert losses[-1] < losses[0]
    before, after = leaves_by_path(params), leaves_by_path(merged)
    np.testing.assert_array_equal(after["l1/bias"], before["l1/bias"])
    for path in ("l1/kernel", "l2/kernel"):
        delta = np.asarray(after[path], np.float64) - np.asarray(before[path], np.float64)
        pair = lookup(last["trainable"], path)
        want = 2.0 * np.asarray(pair["a"], np.float64) @ np.asarray(pair["b"], np.float64)
        assert_close(delta, want, np.float32, scale=np.abs(before[path]).max(), err_msg=path)
        sv = np.linalg.svd(delta, compute_uv=False)
        assert sv[0] > 0 and np.all(sv[rank:] <= 1e-5 * sv[0]), (path, sv)
        assert_close(record["delta_norm"][path], np.linalg.norm(want), np.float32)
    assert record["rank"] == rank and record["trainable_params"] == rank * (5 + 6) + rank * (6 + 3)


def test_bfloat16_weights_stay_bfloat16():
    rng = np.random.default_rng(0)
    params = {"w": jnp.asarray(rng.normal(size=(4, 6)), jnp.bfloat16)}
    method = lora(LoRAConfig(rank=2, alpha=2.0))
    _, frozen = method.start_task(make_ctx(0, params, None, [], targets={"w": aj.MatrixSpec()}))
    a, b = rng.normal(size=(4, 2)).astype(np.float32), rng.normal(size=(2, 6)).astype(np.float32)
    out = method.effective_params({"w": {"a": a, "b": b}}, frozen)["w"]
    assert out.dtype == jnp.bfloat16
    want = np.asarray(params["w"], np.float64) + a.astype(np.float64) @ b.astype(np.float64)
    assert_close(out, want, "bfloat16")


def test_include_patterns_and_errors():
    params, _ = tiny_params(0, "dict")
    method = lora(LoRAConfig(include=("L2/",)))
    trainable, _ = method.start_task(make_ctx(0, params, None, []))
    assert sorted(leaves_by_path(trainable)) == ["l2/kernel/a", "l2/kernel/b"]
    with pytest.raises(ValueError, match="'nothing' matches no target"):
        lora(LoRAConfig(include=("nothing",))).start_task(make_ctx(0, params, None, []))
    with pytest.raises(ValueError, match="not a valid regex"):
        lora(LoRAConfig(include=("(",))).start_task(make_ctx(0, params, None, []))
    with pytest.raises(ValueError, match="'l3/kernel' is not a parameter"):
        lora().start_task(make_ctx(0, params, None, [], targets={"l3": {"kernel": aj.MatrixSpec()}}))
    with pytest.raises(ValueError, match="no MatrixSpec"):
        lora().start_task(make_ctx(0, params, None, [], targets=jax.tree.map(lambda x: None, params)))
    with pytest.raises(ValueError, match="LoRAConfig.rank"):
        LoRAConfig(rank=0)
    with pytest.raises(TypeError, match="LoRAConfig.include"):
        LoRAConfig(include="l1")
    with pytest.raises(ValueError, match="LoRAConfig.factor_dtype"):
        LoRAConfig(factor_dtype="int8")
    with pytest.raises(ValueError, match="LoRAConfig.alpha"):
        LoRAConfig(alpha=0.0)
