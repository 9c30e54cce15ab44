"""Gemma 3 family: tiny random checkpoints against transformers' Gemma3ForCausalLM (float64),
GGUF reading, the tokenizer rebuilt from GGUF metadata, and the packaged 270M base model."""

import dataclasses
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from asvd_jax import flatten_with_paths
from asvd_jax.models import capture, gemma3, get_family, llama
from asvd_jax.models._hf_io import CheckpointError, write_safetensors
from asvd_jax.models.gemma3 import _io
from asvd_jax.models.llama._decoding import generate_and_score
from tolerances import assert_close

BASE = dict(vocab_size=67, hidden_size=32, intermediate_size=48, num_layers=3, num_heads=4, num_kv_heads=2,
            head_dim=12, rope_theta=900.0, rope_local_theta=50.0, query_pre_attn_scalar=10,
            sliding_window=64, layer_types=("sliding_attention", "full_attention", "sliding_attention"),
            rms_norm_eps=1e-6, bos_token_id=2, eos_token_id=1, pad_token_id=0)
VARIANTS = {
    "base": {},
    # A window shorter than the rows: local layers see only the last 3 positions.
    "window3": dict(sliding_window=3),
    "softcap_mqa": dict(num_kv_heads=1, final_logit_softcapping=3.0, hidden_activation="gelu"),
}


def random_checkpoint(config: gemma3.Gemma3Config, seed: int) -> dict:
    """HF-named float32 tensors with O(1) activations (PyTorch (out, in) layout)."""
    rng = np.random.default_rng(seed)
    model = nnx.eval_shape(lambda: gemma3.Gemma3(config, rngs=nnx.Rngs(0)))
    leaves, _ = flatten_with_paths(nnx.state(model, nnx.Param))
    tensors = {}
    for path, leaf in leaves:
        name, transposed = _io.hf_name(path)
        shape = tuple(leaf.shape[::-1]) if transposed else tuple(leaf.shape)
        if path.endswith("scale"):  # zero-centred norm weights: the multiplier is 1 + w
            arr = 0.2 * rng.standard_normal(shape)
        else:
            arr = rng.standard_normal(shape) / np.sqrt(shape[-1])
        tensors[name] = arr.astype(np.float32)
    return tensors


def write_folder(tmp_path, variant="base", seed=0):
    config = gemma3.Gemma3Config(**{**BASE, **VARIANTS[variant]})
    folder = tmp_path / f"{variant}_{seed}"
    write_safetensors(folder, random_checkpoint(config, seed), config.to_hf_dict())
    return config, str(folder)


def torch_model(folder):
    import torch
    import transformers
    from safetensors.torch import load_file

    cfg = transformers.AutoConfig.from_pretrained(folder)
    cfg._attn_implementation = "eager"
    model = transformers.Gemma3ForCausalLM(cfg)
    missing, unexpected = model.load_state_dict(load_file(os.path.join(folder, "model.safetensors")), strict=False)
    assert not unexpected and all(m == "lm_head.weight" for m in missing), (missing, unexpected)
    return model.double().eval(), torch


def random_batch(rng, vocab, lengths, width):
    ids = rng.integers(3, vocab, size=(len(lengths), width)).astype(np.int32)
    mask = (np.arange(width)[None] < np.asarray(lengths)[:, None]).astype(np.int32)
    return ids * mask, mask


@pytest.mark.torch
@pytest.mark.parametrize("variant", sorted(VARIANTS))
@pytest.mark.parametrize("seed", [0, 1])
def test_logits_match_transformers(tmp_path, variant, seed):
    config, folder = write_folder(tmp_path, variant, seed)
    model, _ = gemma3.load_hf(folder)
    # Full rows (the window test needs no padding: transformers counts windows in slots).
    ids, _ = random_batch(np.random.default_rng(seed + 10), config.vocab_size, [11, 11], 11)
    mask = np.ones_like(ids)
    ours = np.asarray(llama.forward(model, ids, mask))
    ref_model, torch = torch_model(folder)
    with torch.no_grad():
        ref = ref_model(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask)).logits.numpy()
    assert_close(ours, ref, "float32", scale=np.abs(ref).max())


@pytest.mark.torch
@pytest.mark.parametrize("variant", ["base", "window3"])
def test_every_gradient_matches_transformers(tmp_path, variant):
    """d(answer-only loss)/d(every parameter) against PyTorch's float64 autograd."""
    config, folder = write_folder(tmp_path, variant, 3)
    model, _ = gemma3.load_hf(folder)
    rng = np.random.default_rng(7)
    ids, _ = random_batch(rng, config.vocab_size, [10, 10], 10)
    mask = np.ones_like(ids)
    loss_mask = np.zeros(ids.shape, np.float32)
    loss_mask[:, 6:] = 1

    def loss(params):
        lp = llama.token_logprobs(nnx.merge(graphdef, params, rest), jnp.asarray(ids), jnp.asarray(mask))
        return -(lp * loss_mask).sum() / loss_mask.sum()

    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    grads = dict(flatten_with_paths(jax.grad(loss)(params))[0])

    ref_model, torch = torch_model(folder)
    out = ref_model(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask)).logits
    logp = torch.log_softmax(out[:, :-1], dim=-1)
    picked = torch.gather(logp, -1, torch.tensor(ids[:, 1:, None]).long())[..., 0]
    lm = torch.tensor(loss_mask[:, 1:], dtype=torch.float64)
    (-(picked * lm).sum() / lm.sum()).backward()
    ref = {name: p.grad.numpy() for name, p in ref_model.named_parameters()}
    assert len(grads) == len(ref)
    for path, g in grads.items():
        name, transposed = _io.hf_name(path)
        want = ref[name].T if transposed else ref[name]
        assert_close(np.asarray(g), want, "float32", scale=np.abs(want).max() + 1e-12, err_msg=path)


@pytest.mark.parametrize("window", [64, 3])
def test_padding_does_not_change_real_tokens(tmp_path, window):
    config = gemma3.Gemma3Config(**{**BASE, "sliding_window": window})
    model = gemma3.init_gemma3(config, seed=window)
    rng = np.random.default_rng(window)
    rows = [rng.integers(3, config.vocab_size, size=n).tolist() for n in (9, 4, 6)]
    alone = [np.asarray(llama.forward(model, np.asarray([r], np.int32)))[0] for r in rows]
    scale = max(np.abs(a).max() for a in alone)
    for layout in ("right", "left", "middle"):
        ids, mask = np.zeros((3, 12), np.int32), np.zeros((3, 12), np.int32)
        for i, r in enumerate(rows):
            start = {"right": 0, "left": 12 - len(r), "middle": 2}[layout]
            ids[i, start:start + len(r)], mask[i, start:start + len(r)] = r, 1
        out = np.asarray(llama.forward(model, ids, mask))
        assert np.isfinite(out).all()
        for i in range(3):
            assert_close(out[i][mask[i] > 0], alone[i], "float32", scale=scale, err_msg=layout)


def _greedy_reference(model, prompt, steps):
    seq = list(prompt)
    for _ in range(steps):
        seq.append(int(np.asarray(llama.forward(model, np.asarray([seq], np.int32)))[0, -1].argmax()))
    return seq[len(prompt):]


@pytest.mark.parametrize("window", [64, 3])
def test_cached_generation_and_scores_match_full_forward(window):
    """The KV-cache paths (generation, option scoring) equal full forwards, windows included."""
    config = gemma3.Gemma3Config(**{**BASE, "sliding_window": window, "eos_token_id": 999})
    model = gemma3.init_gemma3(config, seed=1)
    rng = np.random.default_rng(2)
    prompts = [rng.integers(3, config.vocab_size, size=n).tolist() for n in (7, 3)]
    got = llama.generate(model, prompts, 5, eos_id=None, pad_id=0)
    assert got == [_greedy_reference(model, p, 5) for p in prompts]

    options = [[5, 6], [9, 10, 11]]
    ids, mask = np.zeros((2, 8), np.int32), np.zeros((2, 8), np.int32)
    for i, p in enumerate(prompts):  # left-padded prompts, as the adapter lays them out
        ids[i, 8 - len(p):], mask[i, 8 - len(p):] = p, 1
    oi, om = np.zeros((2, 4), np.int32), np.zeros((2, 4), np.int32)
    for j, o in enumerate(options):
        oi[j, :len(o)], om[j, :len(o)] = o, 1
    tokens, scores = jax.jit(generate_and_score, static_argnums=(5, 6, 7))(
        model, jnp.asarray(ids), jnp.asarray(mask), jnp.asarray(oi), jnp.asarray(om), 5, 999, 0)
    assert np.asarray(tokens).tolist() == got
    for i, p in enumerate(prompts):
        for j, o in enumerate(options):
            logits = np.asarray(llama.forward(model, np.asarray([p + o], np.int32)))[0].astype(np.float64)
            lp = logits - np.log(np.exp(logits - logits.max(-1, keepdims=True)).sum(-1, keepdims=True)) \
                - logits.max(-1, keepdims=True)
            want = sum(lp[len(p) - 1 + k, t] for k, t in enumerate(o))
            assert_close(np.asarray(scores)[i, j], want, "float32", scale=abs(want))


@pytest.mark.parametrize("protocol", ["generate", "both"])
def test_adapter_evaluation_scores_options_only_when_asked(protocol):
    from asvd_jax.cl import load_config
    from asvd_jax.data import Example, Task
    from asvd_jax.models import load_model

    config = load_config(None, ["model.family=gemma3", "model.source=random", f"eval.protocol={protocol}",
                                "eval.max_new_tokens=3", "eval.batch_size=4"])
    model, tok, _ = load_model(config.model)
    adapter = get_family("gemma3").adapter(config, model, tok)
    task = Task("t", "Which?", ("yes", "no"), train=(), dev=(),
                test=tuple(Example(f"text {i}", "yes" if i % 2 else "no") for i in range(5)))
    out = adapter.evaluate(adapter.params, task, task.test)
    assert out["n"] == 5 and len(out["predictions"]) == 5
    assert out["accuracy"] == out["generate_accuracy"]
    assert ("option_accuracy" in out) == (protocol == "both")


def test_parameter_paths_targets_and_capture():
    config = gemma3.Gemma3Config(**BASE)
    model = gemma3.init_gemma3(config)
    paths = [p for p, _ in flatten_with_paths(nnx.state(model, nnx.Param))[0]]
    import re

    targets = [p for p in paths if any(re.fullmatch(t, p) for t in gemma3.DEFAULT_TARGETS)]
    assert len(targets) == 7 * config.num_layers
    assert "layers/0/attn/q_norm/scale" in paths and "layers/2/post_feedforward_norm/scale" in paths
    assert not any("norm" in t or "embed" in t for t in targets)
    ids = jnp.asarray([[3, 4, 5, 6]])
    with capture() as acts:
        model.hidden_states(ids)
    assert sorted(acts) == sorted(targets)
    # Layer 0's q_proj input is rms(sqrt(d) * embedding) * (1 + w), here in float64.
    emb = np.asarray(model.embed.embedding[...], np.float64)[np.asarray(ids)] * np.sqrt(config.hidden_size)
    w = np.asarray(model.layers[0].input_norm.scale[...], np.float64)
    want = emb / np.sqrt((emb ** 2).mean(-1, keepdims=True) + config.rms_norm_eps) * (1 + w)
    assert_close(acts["layers/0/attn/q_proj/kernel"], want, "float32", scale=np.abs(want).max())


def test_export_round_trip_is_exact_and_config_round_trips(tmp_path):
    config, folder = write_folder(tmp_path, "softcap_mqa", 4)
    model, _ = gemma3.load_hf(folder)
    gemma3.export_hf(model, tmp_path / "out")
    again, _ = gemma3.load_hf(tmp_path / "out")
    a = flatten_with_paths(nnx.state(model, nnx.Param))[0]
    b = flatten_with_paths(nnx.state(again, nnx.Param))[0]
    assert [p for p, _ in a] == [p for p, _ in b]
    for (_, x), (_, y) in zip(a, b):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    assert gemma3.Gemma3Config.from_hf_dict(config.to_hf_dict()) == config
    # transformers 4.x layout: rope bases as flat keys, the layer pattern as an int.
    legacy = {k: v for k, v in config.to_hf_dict().items() if k not in ("rope_parameters", "layer_types")}
    legacy.update(rope_theta=900.0, rope_local_base_freq=50.0, sliding_window_pattern=2)
    got = gemma3.Gemma3Config.from_hf_dict(legacy)
    assert got.rope_local_theta == 50.0 and got.layer_types == ("sliding_attention", "full_attention") * 1 + \
        ("sliding_attention",)


def test_bad_inputs_name_the_file_and_key(tmp_path):
    config, folder = write_folder(tmp_path)
    tensors = random_checkpoint(config, 0)
    del tensors["model.layers.1.self_attn.k_norm.weight"]
    write_safetensors(tmp_path / "missing", tensors, config.to_hf_dict())
    with pytest.raises(CheckpointError, match=r"model\.safetensors.*k_norm"):
        gemma3.load_hf(tmp_path / "missing")
    with pytest.raises(ValueError, match="no attention soft cap"):
        gemma3.Gemma3Config.from_hf_dict({**config.to_hf_dict(), "attn_logit_softcapping": 50.0})
    with pytest.raises(ValueError, match="layer_types"):
        gemma3.Gemma3Config(**{**BASE, "layer_types": ("full_attention",)})
    with pytest.raises(ValueError, match="rope type 'linear'"):
        gemma3.Gemma3Config.from_hf_dict({**config.to_hf_dict(), "rope_parameters": {
            "full_attention": {"rope_type": "linear", "factor": 8.0, "rope_theta": 1e6}}})
    with pytest.raises(CheckpointError, match="GGUF file not found"):
        gemma3.load_gguf(tmp_path / "nope.gguf")


# ------------------------------------------------------------------------------- GGUF

def _write_gguf(path, config, tensors, tokens, types):
    """A float32 Gemma 3 GGUF as llama.cpp writes one (norms stored as 1 + w)."""
    import gguf

    back = {v: k for k, v in _io._GGUF_TOP.items()}
    back.update({f"model.layers.{i}.{hf}": f"blk.{i}.{g}" for i in range(config.num_layers)
                 for g, hf in _io._GGUF_BLOCK.items()})
    w = gguf.GGUFWriter(str(path), "gemma3")
    w.add_context_length(config.max_position_embeddings)
    w.add_embedding_length(config.hidden_size)
    w.add_block_count(config.num_layers)
    w.add_feed_forward_length(config.intermediate_size)
    w.add_head_count(config.num_heads)
    w.add_head_count_kv(config.num_kv_heads)
    w.add_key_length(config.head_dim)
    w.add_value_length(config.head_dim)
    w.add_rope_freq_base(config.rope_theta)
    w.add_sliding_window(config.sliding_window)
    w.add_layer_norm_rms_eps(config.rms_norm_eps)
    w.add_tokenizer_model("llama")
    w.add_token_list(tokens)
    w.add_token_scores([0.0] * len(tokens))
    w.add_token_types(types)
    w.add_bos_token_id(2)
    w.add_eos_token_id(1)
    w.add_pad_token_id(0)
    w.add_unk_token_id(3)
    w.add_add_bos_token(True)
    for name, arr in tensors.items():
        w.add_tensor(back[name], arr + np.float32(1.0) if name.endswith("norm.weight") else arr)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


TOY_TOKENS = (["<pad>", "<eos>", "<bos>", "<unk>", "<start_of_turn>"] + [f"<0x{b:02X}>" for b in range(256)]
              + ["\u2581", "a", "b", "c", "ab", "\u2581a", "\u2581ab", "abc", "  ", "\n"])
TOY_TYPES = [3, 3, 3, 2, 3] + [6] * 256 + [1] * 10


def test_gguf_loads_like_the_hf_folder_and_rebuilds_the_tokenizer(tmp_path):
    config = gemma3.Gemma3Config(**{**BASE, "vocab_size": len(TOY_TOKENS), "layer_types": None,
                                    "rope_local_theta": 10_000.0, "query_pre_attn_scalar": BASE["head_dim"]})
    tensors = random_checkpoint(config, 5)
    write_safetensors(tmp_path / "hf", tensors, config.to_hf_dict())
    _write_gguf(tmp_path / "toy.gguf", config, tensors, TOY_TOKENS, TOY_TYPES)
    from_gguf, tok = gemma3.load_gguf(tmp_path / "toy.gguf")
    from_hf, _ = gemma3.load_hf(tmp_path / "hf")
    # GGUF keeps eps as a float32
    assert from_gguf.config == dataclasses.replace(from_hf.config, rms_norm_eps=float(np.float32(1e-6)))
    for (p, x), (_, y) in zip(flatten_with_paths(nnx.state(from_gguf, nnx.Param))[0],
                              flatten_with_paths(nnx.state(from_hf, nnx.Param))[0]):
        # norms go through 1 + w and back in float32: equal to rounding, everything else exactly
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=0, atol=1e-6 if "norm" in p else 0, err_msg=p)
    idx = {t: i for i, t in enumerate(TOY_TOKENS)}
    # Merges follow the list order: "ab" before "▁a"; "▁ab" = "▁a" + "b" or "▁" + "ab".
    assert tok.encode("ab abc") == [idx["ab"], idx["\u2581ab"], idx["c"]]
    assert tok.encode("ab", add_special_tokens=True) == [2, idx["ab"]]
    # A run of spaces is stored as real spaces in the file and matched as "▁▁" after normalising.
    assert tok.encode("a  b") == [idx["a"], idx["  "], idx["b"]]
    assert tok.encode("é") == [idx["<0xC3>"], idx["<0xA9>"]]  # byte fallback
    assert tok.decode(tok.encode("ab abc é\n")) == "ab abc é\n"
    assert tok.encode("<start_of_turn>a") == [4, idx["a"]]
    assert (tok.bos_id, tok.eos_id, tok.pad_id) == (2, 1, 0)


def test_sentencepiece_merges_rank_by_list_order_then_longer_left_piece():
    tokens = ["a", "b", "c", "ab", "bc", "abc"]
    assert _io.sentencepiece_merges(tokens) == [("a", "b"), ("b", "c"), ("ab", "c"), ("a", "bc")]


def test_family_record_random_source_and_adapter():
    from asvd_jax.cl import load_config
    from asvd_jax.models import load_model

    family = get_family("gemma3")
    assert family.sources == ("gemma3_270m", "hf", "gguf", "random")
    config = load_config(None, ["model.family=gemma3", "model.source=random", "model.random_layers=2"])
    model, tok, targets = load_model(config.model)
    assert isinstance(model, gemma3.Gemma3) and targets == gemma3.DEFAULT_TARGETS
    assert model.config.layer_types == ("sliding_attention", "full_attention")
    adapter = family.adapter(config, model, tok)
    assert adapter.family == "gemma3"
    with pytest.raises(ValueError, match="no rematerialised forward"):
        load_model(load_config(None, ["model.family=gemma3", "model.source=random", "model.remat=true"]).model)


# --------------------------------------------------------------------- the packaged model

EIFFEL = ("The Eiffel Tower is a wrought-iron lattice tower on the Champ de Mars in Paris, France. It is named "
          "after the engineer Gustave Eiffel, whose company designed and built the tower from 1887 to 1889. "
          "Locally nicknamed \"La dame de fer\", it was constructed as the centrepiece of the 1889 World's Fair.")
NUMPY_REFERENCE_PPL = 7.81
"""Perplexity of EIFFEL under an independent numpy forward of the same GGUF (measured once)."""


def _perplexity(model, ids):
    lp = np.asarray(jax.jit(llama.token_logprobs)(model, jnp.asarray([ids]), jnp.ones((1, len(ids)), jnp.int32)))
    return float(np.exp(-lp[0, 1:].mean()))


@pytest.fixture(scope="module")
def gemma270m():
    try:
        return gemma3.load_gemma3_270m()
    except FileNotFoundError as e:  # AssetNotFoundError: `make install` installs the packages
        pytest.fail(f"packaged Gemma 3 270M missing: {e}")


@pytest.mark.slow
def test_packaged_270m_perplexity_and_greedy_continuation(gemma270m):
    model, tok = gemma270m
    assert model.config.layer_types.count("full_attention") == 3 and model.config.vocab_size == 262144
    ids = tok.encode(EIFFEL, add_special_tokens=True)
    assert ids[0] == 2
    ppl = _perplexity(model, ids)
    assert abs(ppl - NUMPY_REFERENCE_PPL) / NUMPY_REFERENCE_PPL < 0.01, ppl
    prompts = ["The Eiffel Tower is located in the city of", "The capital of France is Paris. The capital of Germany is"]
    out = llama.generate(model, [tok.encode(p, add_special_tokens=True) for p in prompts], 4, tok.eos_id,
                         pad_id=tok.pad_id)
    assert [tok.decode(o).split()[0].strip(".,") for o in out] == ["Paris", "Berlin"]


@pytest.mark.slow
@pytest.mark.torch
def test_packaged_270m_matches_transformers_on_the_same_gguf(gemma270m, tmp_path):
    """transformers' GGUF tokenizer gives the same ids as ours, and transformers'
    Gemma3ForCausalLM on the same weights (the cached float32 folder) the same perplexity
    within 1%. (transformers' own GGUF model loader needs accelerate, not a dev dependency; the
    dequantisation is checked against the independent numpy forward's 7.81 above.)"""
    import torch
    import transformers

    model, tok = gemma270m
    path = gemma3.gemma3_270m_gguf()
    ref_tok = transformers.AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    for text in (EIFFEL, "  two spaces, tabs\tand\nnewlines; émoji 🙂 and digits 12345."):
        assert tok.encode(text) == ref_tok(text, add_special_tokens=False)["input_ids"], text
    ref = transformers.Gemma3ForCausalLM.from_pretrained(str(gemma3.model_dir() / "gemma-3-270m-f32-v1"),
                                                         torch_dtype=torch.float32).eval()
    ids = tok.encode(EIFFEL, add_special_tokens=True)
    with torch.no_grad():
        logits = ref(input_ids=torch.tensor([ids])).logits[0].double().numpy()
    lp = logits - logits.max(-1, keepdims=True)
    lp = lp - np.log(np.exp(lp).sum(-1, keepdims=True))
    ref_ppl = float(np.exp(-np.mean([lp[i, ids[i + 1]] for i in range(len(ids) - 1)])))
    assert abs(_perplexity(model, ids) - ref_ppl) / ref_ppl < 0.01


@pytest.mark.slow
def test_two_task_pulse_on_the_packaged_270m(tmp_path):
    """The real entry point on the real weights: two standard4 tasks, a few steps each, the
    paper's method with the embedding frozen; the run completes with a full accuracy matrix
    and the general-text LM loss before and after."""
    from asvd_jax.cl import load_config, run

    config = load_config(None, [
        "model.family=gemma3", "model.source=gemma3_270m", "data.suite=standard4",
        "data.tasks=[rotten_tomatoes, bbc_news]", "data.per_class_train=4", "data.per_class_dev=2",
        "data.per_class_test=2", "train.freeze=[embed/]", "train.lr=5e-5", "method.stats_examples=8",
        "eval.split=dev", "eval.protocol=generate", "eval.max_new_tokens=3",
        "checkpoint.export_hf=false", "run.progress=false"])
    m = run(config, run_dir=str(tmp_path / "run"))
    assert m["status"] == "complete" and len(m["rows"]) == 2
    assert all(len(r["eval"]) == 2 for r in m["rows"])
    assert {"lm_loss_before", "lm_loss_after"} <= set(m["general_ability"])
