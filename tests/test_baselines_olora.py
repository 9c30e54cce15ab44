"""O-LoRA: penalty and gradient against float64 numpy, old adapters frozen, orthogonality."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _helpers.baselines import leaves_by_path, make_ctx, regression_adapter, run_task, task_batches, tiny_params
from tolerances import assert_close

import asvd_jax as aj
from asvd_jax.cl.baselines import LoRAConfig, OLoRAConfig, olora, orthogonality_loss
from asvd_jax.cl.baselines._common import lookup, nest

SEEDS = [0, 1, 2]
FORMS = list(itertools.product(["l1", "squared"], ["norm", "squared"]))


def _reference(old_a, a, b, lam1, lam2, orth_form, l2_form):
    """float64 penalty and its gradients w.r.t. A and B for one (possibly stacked) target."""
    overlap = np.einsum("...ij,...ik->...jk", old_a, a)
    if orth_form == "l1":
        orth, g_a = np.abs(overlap).sum(), lam1 * np.einsum("...ij,...jk->...ik", old_a, np.sign(overlap))
    else:
        orth, g_a = np.square(overlap).sum(), lam1 * 2 * np.einsum("...ij,...jk->...ik", old_a, overlap)
    if l2_form == "norm":
        na, nb = np.linalg.norm(a.ravel()), np.linalg.norm(b.ravel())
        l2, g_a, g_b = na + nb, g_a + lam2 * a / na, lam2 * b / nb
    else:
        l2, g_a, g_b = np.square(a).sum() + np.square(b).sum(), g_a + lam2 * 2 * a, lam2 * 2 * b
    return lam1 * orth + lam2 * l2, g_a, g_b


@pytest.mark.parametrize("orth_form,l2_form", FORMS)
@pytest.mark.parametrize("seed", SEEDS)
def test_penalty_and_gradient_match_float64(seed, orth_form, l2_form):
    rng = np.random.default_rng(seed)
    r, r_old = 3, 5
    params = {"w": jnp.asarray(rng.normal(size=(6, 4)), jnp.float32),
              "stack": jnp.asarray(rng.normal(size=(2, 6, 4)), jnp.float32)}
    targets = {"w": aj.MatrixSpec(), "stack": aj.MatrixSpec()}
    lam1, lam2 = float(rng.uniform(0.1, 2)), float(rng.uniform(0.1, 2))
    config = OLoRAConfig(lora=LoRAConfig(rank=r), lambda_1=lam1, lambda_2=lam2, orth_form=orth_form, l2_form=l2_form)
    method = olora(config)
    old = {"w": rng.normal(size=(6, r_old)), "stack": rng.normal(size=(2, 6, r_old))}
    method.restore_carry_state({"old_a": {k: jnp.asarray(v, jnp.float32) for k, v in old.items()}})
    _, frozen = method.start_task(make_ctx(1, params, None, [], targets=targets))
    factors = {k: {"a": rng.normal(size=old[k].shape[:-1] + (r,)).astype(np.float32),
                   "b": rng.normal(size=old[k].shape[:-2] + (r, 4)).astype(np.float32)} for k in old}

    value, grads = jax.value_and_grad(method.penalty)(nest(factors), frozen)

    total = 0.0
    for k in old:
        f64 = {n: factors[k][n].astype(np.float64) for n in "ab"}
        old64 = old[k].astype(np.float32).astype(np.float64)
        v, g_a, g_b = _reference(old64, f64["a"], f64["b"], lam1, lam2, orth_form, l2_form)
        total += v
        assert_close(grads[k]["a"], g_a, np.float32, err_msg=k)
        assert_close(grads[k]["b"], g_b, np.float32, err_msg=k)
    assert_close(value, total, np.float32)


def test_zero_b_has_a_finite_gradient_and_first_task_has_no_orthogonality_term():
    params, _ = tiny_params(0, "dict")
    method = olora(OLoRAConfig(lambda_2=1.0))
    trainable, frozen = method.start_task(make_ctx(0, params, None, []))
    assert frozen["old_a"] == {}
    value, grads = jax.value_and_grad(method.penalty)(trainable, frozen)
    # Task 0: only the L2 term, ||A|| summed over targets (B = 0 contributes 0, gradient 0).
    want = sum(np.linalg.norm(np.asarray(lookup(trainable, p)["a"], np.float64)) for p in ("l1/kernel", "l2/kernel"))
    assert_close(value, want, np.float32)
    for path, g in leaves_by_path(grads).items():
        assert np.all(np.isfinite(g)), path
        if path.endswith("/b"):
            assert not np.any(g), path


@pytest.mark.parametrize("kind", ["dict", "nnx"])
def test_old_adapters_stay_frozen_and_new_ones_turn_orthogonal(kind):
    params0, apply = tiny_params(0, kind)
    adapter = regression_adapter(apply)
    tasks = [task_batches(1), task_batches(2)]
    lora_cfg = LoRAConfig(rank=2, alpha=4.0, learning_rate=2e-2)
    overlaps = {}
    for lam1 in (0.0, 0.5):
        method = olora(OLoRAConfig(lora=lora_cfg, lambda_1=lam1))
        seen = {}
        p1, rec0, _ = run_task(method, make_ctx(0, params0, adapter, tasks[0]),
                               on_step=lambda tr, fr: seen.update(t0=tr))
        a0 = {p: np.asarray(lookup(seen["t0"], p)["a"]) for p in ("l1/kernel", "l2/kernel")}
        carry0 = leaves_by_path(method.carry_state()["old_a"])
        for p in a0:
            np.testing.assert_array_equal(carry0[p], a0[p])

        def check_frozen(tr, fr):
            # The earlier task's A reaches every step unchanged, and only through `frozen`.
            for p in a0:
                np.testing.assert_array_equal(lookup(fr["old_a"], p), a0[p])
            assert sorted(leaves_by_path(tr)) == ["l1/kernel/a", "l1/kernel/b", "l2/kernel/a", "l2/kernel/b"]
            seen["t1"] = tr

        p2, rec1, losses = run_task(method, make_ctx(1, p1, adapter, tasks[1], tasks[0]), on_step=check_frozen)
        assert losses[-1] < losses[0]
        carry1 = leaves_by_path(method.carry_state()["old_a"])
        before, after = leaves_by_path(p1), leaves_by_path(p2)
        overlaps[lam1] = 0.0
        for p in a0:
            a1 = np.asarray(lookup(seen["t1"], p)["a"])
            b1 = np.asarray(lookup(seen["t1"], p)["b"])
            np.testing.assert_array_equal(carry1[p], np.concatenate([a0[p], a1], axis=-1))
            # Task 0's delta stays merged in the base; task 1 adds only its own delta.
            want = np.asarray(before[p], np.float64) + 2.0 * a1.astype(np.float64) @ b1
            assert_close(after[p], want, np.float32, scale=np.abs(want).max(), err_msg=p)
            overlap = np.abs(a0[p].astype(np.float64).T @ a1).sum()
            assert_close(rec1["orthogonality"][p], overlap, np.float32)
            overlaps[lam1] += overlap
        np.testing.assert_array_equal(after["l1/bias"], before["l1/bias"])
        assert rec0["orthogonality"] == {} and rec1["task_ranks"] == [2, 2]
    assert overlaps[0.5] < 0.5 * overlaps[0.0], overlaps


def test_orthogonality_loss_is_zero_for_orthogonal_subspaces():
    q, _ = np.linalg.qr(np.random.default_rng(0).normal(size=(8, 8)))
    old, new = jnp.asarray(q[:, :3]), jnp.asarray(q[:, 3:5] * 7.0)
    assert float(orthogonality_loss(old, new)) < 1e-5
    assert float(orthogonality_loss(old, jnp.asarray(q[:, 2:4]))) > 0.99


def test_config_and_state_validation():
    with pytest.raises(ValueError, match="OLoRAConfig.orth_form"):
        OLoRAConfig(orth_form="l2")
    with pytest.raises(ValueError, match="OLoRAConfig.l2_form"):
        OLoRAConfig(l2_form="l1")
    with pytest.raises(ValueError, match="OLoRAConfig.lambda_1"):
        OLoRAConfig(lambda_1=-1.0)
    with pytest.raises(TypeError, match="OLoRAConfig.lora"):
        OLoRAConfig(lora={"rank": 4})
    with pytest.raises(ValueError, match="disagree on the total rank"):
        olora().restore_carry_state({"old_a": {"w": jnp.ones((4, 8)), "v": jnp.ones((4, 16))}})
    method = olora()
    method.restore_carry_state({"old_a": {"w": jnp.ones((5, 8))}})
    with pytest.raises(ValueError, match="stored A for 'w' has shape"):
        method.start_task(make_ctx(1, {"w": jnp.ones((4, 3))}, None, [], targets={"w": aj.MatrixSpec()}))
