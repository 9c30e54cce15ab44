"""Llama-family decoder on tiny random configs: torch reference, padding, cache, capture, I/O."""

import json
import os
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from asvd_jax import flatten_with_paths
from asvd_jax.models import capture
from asvd_jax.models import llama
from asvd_jax.models.llama import _decoding
from asvd_jax.models.llama._decoding import _generate_jit
from asvd_jax.models._hf_io import CheckpointError, write_safetensors
from asvd_jax.models.llama._io import hf_names
from asvd_jax.models.assets import AssetNotFoundError, package_dir
from _helpers.llama import BASE, random_checkpoint
from tolerances import assert_close

VARIANTS = {
    "gqa": {},
    "tied_bias_headdim": dict(tie_word_embeddings=True, attention_bias=True, mlp_bias=True,
                              head_dim=12, num_kv_heads=1),
    "llama3_rope": dict(num_kv_heads=4, rope_scaling=tuple(sorted(dict(
        rope_type="llama3", factor=4.0, low_freq_factor=1.0, high_freq_factor=4.0,
        original_max_position_embeddings=8).items()))),
}


def write_folder(tmp_path, variant="gqa", seed=0):
    config = llama.LlamaConfig(**{**BASE, **VARIANTS[variant]})
    folder = tmp_path / f"{variant}_{seed}"
    write_safetensors(folder, random_checkpoint(config, seed), config.to_hf_dict())
    return config, str(folder)


def torch_model(folder):
    # The reference is part of the test extras (`make test` installs it), so a missing torch
    # fails here as in test_t5/test_bert instead of skipping the parity checks.
    import torch
    import transformers
    from safetensors.torch import load_file

    cfg = transformers.AutoConfig.from_pretrained(folder)
    cfg._attn_implementation = "eager"
    model = transformers.LlamaForCausalLM(cfg)
    missing, unexpected = model.load_state_dict(load_file(os.path.join(folder, "model.safetensors")),
                                                strict=False)
    # Tied checkpoints carry no lm_head.weight; the rotary buffer is not a checkpoint tensor.
    assert not unexpected and all(m == "lm_head.weight" for m in missing), (missing, unexpected)
    return model.double().eval(), torch


def torch_logits(folder, ids, mask, model=None):
    model, torch = torch_model(folder) if model is None else model
    with torch.no_grad():
        out = model(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask))
    return out.logits.numpy()


def random_batch(rng, vocab, lengths, width):
    ids = rng.integers(3, vocab, size=(len(lengths), width)).astype(np.int32)
    mask = (np.arange(width)[None] < np.asarray(lengths)[:, None]).astype(np.int32)
    return ids * mask, mask


@pytest.mark.torch
@pytest.mark.parametrize("variant", sorted(VARIANTS))
@pytest.mark.parametrize("seed", [0, 1])
def test_logits_match_transformers(tmp_path, variant, seed):
    config, folder = write_folder(tmp_path, variant, seed)
    model, _ = llama.load_hf(folder)
    ids, mask = random_batch(np.random.default_rng(seed + 10), config.vocab_size, [11, 7, 11], 11)
    ours = np.asarray(llama.forward(model, ids, mask))
    ref = torch_logits(folder, ids, mask)
    valid = mask.astype(bool)
    assert_close(ours[valid], ref[valid], "float32", scale=np.abs(ref[valid]).max())


@pytest.mark.torch
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_token_logprobs_and_scores_match_transformers(tmp_path, seed):
    config, folder = write_folder(tmp_path, "gqa", seed)
    model, _ = llama.load_hf(folder)
    ids, mask = random_batch(np.random.default_rng(seed), config.vocab_size, [9, 5], 9)
    ref_logits = torch_logits(folder, ids, mask)
    ref_lp = ref_logits - np.log(np.exp(ref_logits).sum(-1, keepdims=True))
    ref = np.take_along_axis(ref_lp[:, :-1], ids[:, 1:, None], -1)[..., 0] * mask[:, 1:]
    ours = np.asarray(jax.jit(llama.token_logprobs)(model, jnp.asarray(ids), jnp.asarray(mask)))
    assert np.all(ours[:, 0] == 0)
    assert_close(ours[:, 1:], ref, "float32", scale=np.abs(ref).max())

    # Option scores: log p(option | prompt) summed over option tokens, from the same reference.
    prompts, options = [list(ids[0, :4]), list(ids[1, :3])], [[5], [7, 8, 9], [10, 11]]
    reference = torch_model(folder)
    want = np.zeros((len(prompts), len(options)))
    for i, p in enumerate(prompts):
        for j, o in enumerate(options):
            seq = np.asarray([p + o], np.int32)
            lg = torch_logits(folder, seq, np.ones_like(seq), reference)[0]
            lp = lg - np.log(np.exp(lg).sum(-1, keepdims=True))
            want[i, j] = sum(lp[len(p) - 1 + k, tok] for k, tok in enumerate(o))
    lengths = np.asarray([len(o) for o in options])
    for reduction, expected in (("sum", want), ("mean", want / lengths)):
        ours = _decoding.score_token_options(
            lambda *a: _decoding._decoder_option_logprobs(*nnx.split(model), *a),
            prompts, options, batch_size=4, reduction=reduction)
        assert_close(ours, expected, "float32", scale=np.abs(expected).max())


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_padding_does_not_change_real_tokens(tmp_path, seed):
    config, folder = write_folder(tmp_path, "gqa", seed)
    model, _ = llama.load_hf(folder)
    rng = np.random.default_rng(seed)
    rows = [rng.integers(3, config.vocab_size, size=n).tolist() for n in (9, 4, 6)]
    alone = [np.asarray(llama.forward(model, np.asarray([r], np.int32)))[0] for r in rows]
    scale = max(np.abs(a).max() for a in alone)
    for layout in ("right", "left", "middle"):
        ids = np.zeros((3, 12), np.int32)
        mask = np.zeros((3, 12), np.int32)
        for i, r in enumerate(rows):
            start = {"right": 0, "left": 12 - len(r), "middle": 2}[layout]
            ids[i, start:start + len(r)], mask[i, start:start + len(r)] = r, 1
        out = np.asarray(llama.forward(model, ids, mask))
        assert np.isfinite(out).all()
        for i in range(3):
            assert_close(out[i][mask[i] > 0], alone[i], "float32", scale=scale, err_msg=layout)


def test_bfloat16_compute_close_to_float32(tmp_path):
    config, folder = write_folder(tmp_path, "gqa", 3)
    model32, _ = llama.load_hf(folder)
    model16, _ = llama.load_hf(folder, dtype=jnp.bfloat16, param_dtype=jnp.bfloat16)
    ids, mask = random_batch(np.random.default_rng(3), config.vocab_size, [8, 8], 8)
    ref = np.asarray(llama.forward(model32, ids, mask), np.float64)
    out = llama.forward(model16, ids, mask)
    assert out.dtype == jnp.float32  # logits are returned in float32 whatever the compute dtype
    assert_close(out, ref, "bfloat16", scale=np.abs(ref).max())


def naive_greedy(model, prompt, n, eos, width=16):
    """Greedy decoding by full forwards without a cache (one right-padded shape: one compile)."""
    seq = list(prompt)
    for _ in range(n):
        ids = np.zeros((1, width), np.int32)
        ids[0, :len(seq)] = seq
        mask = (np.arange(width) < len(seq)).astype(np.int32)[None]
        logits = np.asarray(llama.forward(model, ids, mask))[0, len(seq) - 1]
        tok = int(np.argmax(logits))
        if tok == eos:
            break
        seq.append(tok)
    return seq[len(prompt):]


@pytest.mark.parametrize("seed", [0, 1])
def test_generate_matches_full_forward_greedy(tmp_path, seed):
    config, folder = write_folder(tmp_path, "tied_bias_headdim", seed)
    model, _ = llama.load_hf(folder)
    rng = np.random.default_rng(seed)
    prompts = [rng.integers(3, config.vocab_size, size=n).tolist() for n in (5, 1, 9)]
    want = [naive_greedy(model, p, 6, eos=None) for p in prompts]
    assert llama.generate(model, prompts, 6) == want
    # A stop id ends a row early (its tokens up to, not including, the stop id).
    stop = want[0][2]
    got = llama.generate(model, prompts, 6, eos_id=stop)
    for row, full in zip(got, want):
        assert row == (full[:full.index(stop)] if stop in full else full)


def test_generate_reuses_compiled_program(tmp_path):
    config, folder = write_folder(tmp_path, "gqa", 0)
    model, _ = llama.load_hf(folder)
    llama.generate(model, [[3, 4, 5], [6]], 4, eos_id=2)
    size = _generate_jit._cache_size()
    llama.generate(model, [[7, 8], [9, 10, 11, 12]], 4, eos_id=2)  # same buckets
    assert _generate_jit._cache_size() == size


class _CountingDecoder:
    """A model whose one-token ``decode`` calls tick a host counter (one per loop iteration)."""

    def __init__(self, model, ticks):
        self._model, self._ticks = model, ticks

    def __getattr__(self, name):
        return getattr(self._model, name)

    def decode(self, ids, *args):
        if ids.shape[1] == 1:
            jax.debug.callback(lambda: self._ticks.append(1))
        return self._model.decode(ids, *args)


@pytest.mark.parametrize("seed", [0, 1])
def test_generate_and_score_stops_when_every_row_ended(tmp_path, seed):
    """The while loop gives the fixed loop's tokens and scores, and runs no decode step once
    every row has produced EOS."""
    config, folder = write_folder(tmp_path, "tied_bias_headdim", seed)
    model, _ = llama.load_hf(folder)
    rng = np.random.default_rng(seed)
    ids, mask = random_batch(rng, config.vocab_size, [5, 9, 2, 7], 12)
    ids, mask = ids[:, ::-1].copy(), mask[:, ::-1].copy()  # left-padded, as the adapter builds them
    opt_ids = jnp.asarray(rng.integers(3, config.vocab_size, size=(3, 4)), jnp.int32)
    opt_mask = jnp.asarray([[1, 1, 0, 0], [1, 1, 1, 1], [1, 0, 0, 0]], jnp.int32)
    max_new, pad, ticks = 6, 0, []
    counting = _CountingDecoder(model, ticks)
    fns = {early: jax.jit(lambda i, k, eos, n, early=early: _decoding.generate_and_score(
        counting, i, k, opt_ids, opt_mask, max_new, eos, pad, early_exit=early,
        n_options=n if early else None)) for early in (True, False)}

    def run(early, eos, rows=None, n_options=3):
        i, k = (ids, mask) if rows is None else (ids[rows], mask[rows])
        ticks.clear()
        tokens, scores = fns[early](jnp.asarray(i), jnp.asarray(k), jnp.int32(eos), jnp.int32(n_options))
        jax.effects_barrier()
        return np.asarray(tokens), np.asarray(scores), len(ticks)

    free = run(False, -1)[0]  # no EOS: every row runs max_new tokens
    # EOS: none, a token that ends some rows early, every row's first token (all end at once;
    # the batch is one prompt repeated).
    same = np.zeros(ids.shape[0], int)
    k = next(t for t in range(1, max_new) if free[0, t] not in free[0, :t])
    for eos, rows, steps in ((-1, None, max_new - 1), (free[0, k], None, None),
                             (free[0, 0], same, 0), (free[0, k], same, k)):
        want, got = run(False, eos, rows), run(True, eos, rows)
        np.testing.assert_array_equal(got[0], want[0])
        np.testing.assert_array_equal(got[1], want[1])
        assert want[2] == max_new
        if steps is not None:
            assert got[2] == steps, (eos, got[2])
        if rows is same:
            np.testing.assert_array_equal(got[0], np.tile(list(free[0, :steps + 1]) + [pad] * (max_new - steps - 1),
                                                          (len(same), 1)))
    # Option slots past n_options are padding: not scored (0), the real ones unchanged.
    want, got = run(False, -1), run(True, -1, n_options=2)
    np.testing.assert_array_equal(got[1][:, :2], want[1][:, :2])
    assert not got[1][:, 2:].any()


def test_parameter_paths_targets_and_capture(tmp_path):
    config, folder = write_folder(tmp_path, "gqa", 0)
    model, _ = llama.load_hf(folder)
    leaves, _ = flatten_with_paths(nnx.state(model, nnx.Param))
    paths = {p for p, _ in leaves}
    assert paths == set(hf_names(config))
    targets = {p for p in paths if any(re.fullmatch(t, p) for t in llama.DEFAULT_TARGETS)}
    assert len(targets) == 7 * config.num_layers
    assert "layers/1/attn/q_proj/kernel" in targets and "lm_head/kernel" not in targets

    ids, mask = random_batch(np.random.default_rng(0), config.vocab_size, [6, 4], 6)

    @jax.jit
    def captured(ids):
        with capture() as acts:
            logits = model(ids)
        return logits, acts

    logits, acts = captured(jnp.asarray(ids))
    assert targets <= set(acts)
    assert_close(logits, llama.forward(model, ids), "float32", scale=np.abs(logits).max())
    # Layer 0's q_proj input is rms(embedding) * g, computed here in float64.
    emb = np.asarray(model.embed.embedding[...], np.float64)[ids]
    g = np.asarray(model.layers[0].input_norm.scale[...], np.float64)
    want = emb / np.sqrt((emb ** 2).mean(-1, keepdims=True) + config.rms_norm_eps) * g
    got = acts["layers/0/attn/q_proj/kernel"]
    assert got.shape == (2, 6, config.hidden_size)
    assert_close(got, want, "float32", scale=np.abs(want).max())


def test_export_round_trip_is_exact(tmp_path):
    config, folder = write_folder(tmp_path, "tied_bias_headdim", 4)
    model, _ = llama.load_hf(folder)
    llama.export_hf(model, tmp_path / "out")
    again, _ = llama.load_hf(tmp_path / "out")
    assert again.config == model.config
    a, _ = flatten_with_paths(nnx.state(model, nnx.Param))
    b, _ = flatten_with_paths(nnx.state(again, nnx.Param))
    assert [p for p, _ in a] == [p for p, _ in b]
    for (path, x), (_, y) in zip(a, b):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y), err_msg=path)


def test_sharded_folder_loads_like_single_file(tmp_path):
    from safetensors.numpy import save_file

    config, folder = write_folder(tmp_path, "gqa", 5)
    tensors = random_checkpoint(config, 5)
    sharded = tmp_path / "sharded"
    sharded.mkdir()
    names = sorted(tensors)
    weight_map = {}
    for k, part in enumerate((names[: len(names) // 2], names[len(names) // 2:])):
        shard = f"model-0000{k + 1}-of-00002.safetensors"
        save_file({n: tensors[n] for n in part}, str(sharded / shard))
        weight_map.update({n: shard for n in part})
    (sharded / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    (sharded / "config.json").write_text(json.dumps(config.to_hf_dict()))
    single, _ = llama.load_hf(folder)
    model, tok = llama.load_hf(sharded)
    assert tok is None  # no tokenizer files in the folder
    for (path, x), (_, y) in zip(flatten_with_paths(nnx.state(single, nnx.Param))[0],
                                 flatten_with_paths(nnx.state(model, nnx.Param))[0]):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y), err_msg=path)


def test_config_round_trip_and_transformers5_rope_layout():
    config = llama.LlamaConfig(**{**BASE, **VARIANTS["llama3_rope"]})
    assert llama.LlamaConfig.from_hf_dict(config.to_hf_dict()) == config
    d = config.to_hf_dict()
    d.pop("rope_theta"), d.pop("rope_scaling")
    d["rope_parameters"] = {**config.rope_scaling_dict, "rope_theta": config.rope_theta}
    assert llama.LlamaConfig.from_hf_dict(d) == config


def test_bad_inputs_name_the_file_and_tensor(tmp_path):
    with pytest.raises(CheckpointError, match="config.json"):
        llama.load_hf(tmp_path / "nothing")
    config, folder = write_folder(tmp_path, "gqa", 0)
    with open(os.path.join(folder, "config.json")) as f:
        raw = json.load(f)
    with open(os.path.join(folder, "config.json"), "w") as f:
        json.dump({**raw, "model_type": "gpt2", "architectures": ["GPT2LMHeadModel"]}, f)
    with pytest.raises(CheckpointError, match=r"config\.json.*unknown architecture"):
        llama.load_hf(folder)
    with open(os.path.join(folder, "config.json"), "w") as f:
        json.dump({**raw, "intermediate_size": 40}, f)
    with pytest.raises(CheckpointError,
                       match=r"model\.safetensors: tensor 'model\.layers\.0\.mlp\.\w+_proj\.weight' has shape"):
        llama.load_hf(folder)
    tensors = random_checkpoint(config, 0)
    del tensors["model.layers.1.self_attn.v_proj.weight"]
    write_safetensors(tmp_path / "missing", tensors, config.to_hf_dict())
    with pytest.raises(CheckpointError, match=r"'model\.layers\.1\.self_attn\.v_proj\.weight' is missing"):
        llama.load_hf(tmp_path / "missing")
    with pytest.raises(ValueError, match="num_kv_heads"):
        llama.LlamaConfig(**{**BASE, "num_kv_heads": 3})
    with pytest.raises(AssetNotFoundError, match="pip install --no-deps no-such-asset==1"):
        package_dir("no_such_asset_package", "no-such-asset==1")
    # Tests run offline (conftest): an uncached hub id fails with the repository named.
    with pytest.raises(CheckpointError, match="hub repository 'no-such-org/no-such-model'"):
        llama.load_hub("no-such-org/no-such-model")
