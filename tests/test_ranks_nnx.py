"""Statistics of a tiny nnx model through the capture protocol (Linear layers with biases)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from tolerances import assert_close

from asvd_jax import weight_svds
from asvd_jax.models._capture import assign_capture_names
from asvd_jax.models._layers import Linear
from asvd_jax.ranks import (
    PaperPolicy,
    collect_statistics_nnx,
    nnx_capture_fn,
    plan_ranks,
)


class TinyBlock(nnx.Module):
    def __init__(self, rngs):
        self.embed = nnx.Embed(11, 6, rngs=rngs)
        self.up = Linear(6, 10, use_bias=True, rngs=rngs)
        self.down = Linear(10, 6, use_bias=True, rngs=rngs)
        self.mix = Linear(6, 6, use_bias=True, rngs=rngs)

    def __call__(self, ids, mask):
        h = self.embed(ids)
        h = h + self.down(jax.nn.gelu(self.up(h)))
        return self.mix(h)


def _model(seed):
    model = TinyBlock(nnx.Rngs(seed))
    rng = np.random.default_rng(seed)
    # Non-zero biases: importance must use the output before the bias.
    for lin in (model.up, model.down, model.mix):
        lin.bias[...] = jnp.asarray(rng.normal(size=lin.bias.shape) * 3.0, jnp.float32)
    assign_capture_names(model)
    return model


def _reference_inputs(model, ids):
    """Inputs of up, down, mix recomputed in float64 numpy."""
    emb = np.asarray(model.embed.embedding[...], np.float64)
    w = {n: np.asarray(getattr(model, n).kernel[...], np.float64) for n in ("up", "down", "mix")}
    b = {n: np.asarray(getattr(model, n).bias[...], np.float64) for n in ("up", "down", "mix")}
    h = emb[ids]
    u = h @ w["up"] + b["up"]
    g = np.asarray(jax.nn.gelu(jnp.asarray(u, jnp.float32)), np.float64)
    h2 = h + g @ w["down"] + b["down"]
    return {"up/kernel": h, "down/kernel": g, "mix/kernel": h2}


@pytest.mark.parametrize("seed", (0, 1, 2))
def test_nnx_model_statistics_exclude_bias_and_padding(seed):
    model = _model(seed)
    rng = np.random.default_rng(seed + 10)
    ids = rng.integers(0, 11, size=(3, 6))
    mask = np.ones((3, 6), np.int32)
    mask[1, 4:] = 0
    mask[2, :2] = 0
    batches = [{"ids": jnp.asarray(ids), "attention_mask": jnp.asarray(mask)}]
    targets = ["up/kernel", "down/kernel", "mix/kernel"]
    stats = collect_statistics_nnx(model, lambda m, b: m(b["ids"], b["attention_mask"]), batches, targets)
    params = nnx.state(model, nnx.Param)
    svds = weight_svds(params, targets)
    refs = _reference_inputs(model, ids)
    keep = mask.reshape(-1) > 0
    for path in targets:
        x = refs[path].reshape(-1, refs[path].shape[-1])[keep]
        k = np.asarray(getattr(model, path.split("/")[0]).kernel[...], np.float64)
        y = x @ k  # before the bias
        m = min(k.shape)
        cos = np.sum(x[:, :m] * y[:, :m], 1) / (np.linalg.norm(x[:, :m], axis=1) * np.linalg.norm(y[:, :m], axis=1))
        st = stats[path]
        assert st.tokens == int(keep.sum())
        assert_close(st.cos_truncate, cos.mean(), "float32", err_msg=path)
        z = x @ np.asarray(svds[path].input, np.float64)
        assert_close(st.input_energy, (z**2).mean(0), "float32", scale=(z**2).mean(0).max(), err_msg=path)
    plan = plan_ranks(stats, PaperPolicy())
    assert [e.path for e in plan.entries] == targets


def test_nnx_capture_fn_needs_a_mask():
    model = _model(0)
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    fn = nnx_capture_fn(graphdef, lambda m, b: m(b["ids"], None), rest)
    with pytest.raises(ValueError, match="no token mask under key 'attention_mask'"):
        fn(params, {"ids": jnp.zeros((1, 2), jnp.int32)})
    fn = nnx_capture_fn(graphdef, lambda m, b: m(b["ids"], None), rest, mask=lambda b: b["m"])
    acts, mask = fn(params, {"ids": jnp.zeros((1, 2), jnp.int32), "m": jnp.ones((1, 2))})
    assert sorted(acts) == ["down/kernel", "mix/kernel", "up/kernel"] and mask.shape == (1, 2)


def test_tiny_llama_plan_for_every_target_and_left_padding_changes_nothing():
    """End to end on a random 2-layer Llama: positions follow the mask, so the same rows
    left-padded give the same statistics for all 14 target matrices."""
    import re

    from asvd_jax.models.llama import DEFAULT_TARGETS, LlamaConfig, init_llama

    config = LlamaConfig(vocab_size=50, hidden_size=16, intermediate_size=24, num_layers=2,
                         num_heads=4, num_kv_heads=2, rms_norm_eps=1e-5)
    model = init_llama(config, seed=0)
    params = nnx.state(model, nnx.Param)
    pattern = re.compile("|".join(f"(?:{p})" for p in DEFAULT_TARGETS))
    from asvd_jax import flatten_with_paths

    targets = [p for p, _ in flatten_with_paths(params)[0] if pattern.fullmatch(p)]
    assert len(targets) == 14
    rng = np.random.default_rng(0)
    ids = rng.integers(1, 50, size=(2, 7))
    plain = [{"input_ids": jnp.asarray(ids), "attention_mask": jnp.ones((2, 7), jnp.int32)}]
    padded_ids = np.concatenate([np.full((2, 3), 2), ids], axis=1)
    mask = np.concatenate([np.zeros((2, 3)), np.ones((2, 7))], axis=1).astype(np.int32)
    padded = [{"input_ids": jnp.asarray(padded_ids), "attention_mask": jnp.asarray(mask)}]

    def forward(m, b):
        return m.hidden_states(b["input_ids"], b["attention_mask"])

    svds = weight_svds(params, targets)
    a = collect_statistics_nnx(model, forward, plain, targets, svds=svds)
    b = collect_statistics_nnx(model, forward, padded, targets, svds=svds)
    for path in targets:
        for name in ("cos_truncate", "cos_polar", "input_energy", "total_energy", "output_norm"):
            assert_close(getattr(b[path], name), getattr(a[path], name), "float32",
                         scale=float(np.max(np.abs(getattr(a[path], name)))), err_msg=f"{path} {name}")
    plan = plan_ranks(a, PaperPolicy())
    assert len(plan.entries) == 14 and all(0 <= e.k <= e.min_dim for e in plan.entries)
