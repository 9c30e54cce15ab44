"""``model.remat``: the Llama blocks as a scan of checkpointed steps give the loop's values.

The memory side (the backward pass no longer keeps every block's activations and gathered
weights) is checked by compilation in tests/test_memory_plan.py.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from _helpers.runs import TINY_RUN
from flax import nnx

from asvd_jax.cl import ExperimentConfig
from asvd_jax.models import capture, load_model
from asvd_jax.models.llama import LlamaConfig, init_llama


def _model(seed: int, dtype=None):
    config = LlamaConfig(vocab_size=53, hidden_size=32, intermediate_size=48, num_layers=3,
                         num_heads=4, num_kv_heads=2, tie_word_embeddings=False)
    return init_llama(config, seed=seed, dtype=dtype)


def _loss_and_grads(model, ids, mask, remat):
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)

    def loss(p):
        m = nnx.merge(graphdef, p, rest)
        m.remat = remat
        logits = m(ids, mask)
        return optax.softmax_cross_entropy_with_integer_labels(logits[:, :-1], ids[:, 1:]).mean()

    value, grads = jax.jit(jax.value_and_grad(loss))(params)
    return float(value), {k: np.asarray(v[...]) for k, v in nnx.to_flat_state(grads)}


def test_remat_gives_the_loops_loss_and_gradients():
    seed = int(np.random.default_rng().integers(1 << 30))
    ids = jax.random.randint(jax.random.key(seed), (3, 9), 0, 53)
    mask = jnp.ones_like(ids).at[0, 6:].set(0)  # one padded row
    l0, g0 = _loss_and_grads(_model(seed), ids, mask, False)
    l1, g1 = _loss_and_grads(_model(seed), ids, mask, True)
    np.testing.assert_allclose(l1, l0, rtol=1e-6, err_msg=f"seed {seed}")
    # Same parameter tree, and a gradient reaches every block's weights through the stack.
    assert g0.keys() == g1.keys() and sum("layers" in str(k) for k in g1) == 3 * 9
    for k in g0:
        scale = np.abs(g0[k]).max() + 1e-30
        assert np.abs(g1[k] - g0[k]).max() <= 1e-5 * scale, (k, seed)


def test_remat_in_bfloat16_is_as_close_to_float32_as_the_loop():
    # XLA fuses the scanned step and the unrolled blocks differently (which intermediates are
    # rounded to bf16), so the two bf16 runs differ by bf16 roundings; each must be as close
    # to the float32 gradients as the other.
    seed = int(np.random.default_rng().integers(1 << 30))
    ids = jax.random.randint(jax.random.key(seed), (3, 9), 0, 53)
    mask = jnp.ones_like(ids)
    _, ref = _loss_and_grads(_model(seed), ids, mask, False)
    errors = {}
    for remat in (False, True):
        _, g = _loss_and_grads(_model(seed, jnp.bfloat16), ids, mask, remat)
        # Relative error of the whole gradient (every leaf together).
        errors[remat] = np.sqrt(sum(np.sum((g[k] - ref[k]) ** 2) for k in ref)
                                / sum(np.sum(ref[k] ** 2) for k in ref))
    assert errors[False] < 0.08 and errors[True] < 0.08, (errors, seed)
    assert errors[True] <= 1.5 * errors[False], (errors, seed)


def test_remat_model_still_records_statistics_and_decodes():
    model = _model(0)
    ids = jax.random.randint(jax.random.key(1), (2, 5), 0, 53)
    plain = model(ids)
    model.remat = True
    with capture() as acts:
        logits = model(ids)
    # Capture runs the plain loop (the recorded inputs are per block, outside any scan).
    assert sum("layers/2/" in name for name in acts) == 7
    np.testing.assert_allclose(logits, plain, rtol=1e-6, atol=1e-6)
    cache = model.init_cache(2, 8)
    h, new_cache = model.decode(ids, jnp.broadcast_to(jnp.arange(5), (2, 5)),
                                jnp.ones((2, 8), jnp.int32), cache, 0)
    assert new_cache is not None and h.shape == (2, 5, 32)


def test_remat_is_refused_by_a_family_without_it():
    config = ExperimentConfig()
    model_config = dataclasses.replace(config.model, family="bert", source="random", remat=True)
    with pytest.raises(ValueError, match=r"model.remat: family 'bert'"):
        load_model(model_config)
    llama_config = dataclasses.replace(config.model, source="random", remat=True)
    model, _, _ = load_model(llama_config)
    assert model.remat is True


def test_runner_trains_the_same_with_model_remat(tmp_path):
    from asvd_jax.cl import load_config, run

    base = TINY_RUN + ["data.max_len=64"]
    plain = run(load_config(None, base), run_dir=str(tmp_path / "plain"))
    remat = run(load_config(None, base + ["model.remat=true"]), run_dir=str(tmp_path / "remat"))
    assert plain["status"] == remat["status"] == "complete"
    for a, b in zip(plain["rows"], remat["rows"]):
        np.testing.assert_allclose(b["train"]["losses"], a["train"]["losses"], rtol=1e-4)
        # The ranks come from statistics captured by the plain loop in both runs.
        assert b["record"].get("rank_summary") == a["record"].get("rank_summary")
    assert remat["rows"][1]["record"]["rank_summary"]
