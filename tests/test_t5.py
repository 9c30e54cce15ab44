"""T5: logits against the PyTorch reference (float64), HF round trip, cache, scoring, capture, errors."""

import json
import os
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from safetensors.numpy import load_file, save_file

from asvd_jax import flatten_with_paths
from asvd_jax.models import capture, t5
from asvd_jax.models._hf_io import CheckpointError
from asvd_jax.models._tokenizer import TextTokenizer
from tolerances import assert_close

VOCAB = 64
SMALL = dict(vocab_size=VOCAB, d_model=32, d_kv=8, d_ff=48, num_layers=2, num_heads=4,
             relative_attention_num_buckets=8, relative_attention_max_distance=16, decoder_start_token_id=0)
# (feed_forward_proj, tied head, decoder layers): original T5, flan / v1.1, v1.1 saved by HF 5.x.
VARIANTS = {
    "relu-tied": ("relu", True, 3),
    "gated-gelu-untied": ("gated-gelu", False, 2),
    "gated-silu-tied-unscaled": ("gated-silu", None, 2),
}


def _torch_folder(folder, variant, seed):
    """A random HF T5 written to ``folder``; returns the float64 torch model that is the reference."""
    import torch
    from transformers import T5Config, T5ForConditionalGeneration

    ff, tie, n_dec = VARIANTS[variant]
    # HF 5.x: tie_word_embeddings=False only switches the rescale off; the head stays tied.
    cfg = T5Config(feed_forward_proj=ff, num_decoder_layers=n_dec, tie_word_embeddings=tie is not False, **SMALL)
    if tie is None:
        cfg = T5Config(feed_forward_proj=ff, num_decoder_layers=n_dec, tie_word_embeddings=False, **SMALL)
    torch.manual_seed(seed)
    model = T5ForConditionalGeneration(cfg).eval()
    if tie is False:
        # flan layout: a separate head, no rescale; written by hand since HF 5.x always ties.
        model.lm_head.weight = torch.nn.Parameter(torch.randn(VOCAB, SMALL["d_model"]))
        model.config.scale_decoder_outputs = False
        tensors = {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}
        os.makedirs(folder, exist_ok=True)
        save_file(tensors, os.path.join(folder, "model.safetensors"), metadata={"format": "pt"})
        hf = model.config.to_dict()
        hf["tie_word_embeddings"] = False
        with open(os.path.join(folder, "config.json"), "w") as f:
            json.dump(hf, f)
    else:
        model.save_pretrained(folder)
    return model.double()


def _batch(rng, batch=3, src=7, tgt=5):
    ids = rng.integers(2, VOCAB, (batch, src))
    mask = np.ones_like(ids)
    mask[1, src - 2 :] = 0
    dec = rng.integers(2, VOCAB, (batch, tgt))
    dec_mask = np.ones_like(dec)
    dec_mask[2, tgt - 1 :] = 0
    return ids, mask, dec, dec_mask


def _torch_logits(ref, ids, mask, dec, dec_mask=None):
    import torch

    with torch.no_grad():
        out = ref(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask),
                  decoder_input_ids=torch.tensor(dec),
                  decoder_attention_mask=None if dec_mask is None else torch.tensor(dec_mask))
    return out.logits.numpy()


@pytest.mark.torch
def test_bucket_table_matches_reference():
    import torch
    from transformers.models.t5.modeling_t5 import T5Attention

    for bidirectional in (True, False):
        for buckets, distance in ((32, 128), (8, 16), (16, 40)):
            rel = torch.arange(-distance - 20, distance + 21)
            ref = T5Attention._relative_position_bucket(rel, bidirectional, buckets, distance).numpy()
            table = t5.relative_bucket_table(bidirectional, buckets, distance)
            ours = table[np.clip(rel.numpy(), -distance, distance) + distance]
            np.testing.assert_array_equal(ours, ref)


@pytest.mark.torch
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_logits_match_torch(tmp_path, variant):
    ref = _torch_folder(tmp_path, variant, seed=len(variant))
    model, tokenizer = t5.load_hf(tmp_path)
    assert tokenizer is None
    assert model.config.tie_word_embeddings == (VARIANTS[variant][1] is not False)
    assert model.config.scale_decoder_outputs == (VARIANTS[variant][1] is True)
    bf16 = t5.load_model(tmp_path, dtype=jnp.bfloat16)
    for seed in range(3):
        ids, mask, dec, dec_mask = _batch(np.random.default_rng(seed))
        expected = _torch_logits(ref, ids, mask, dec, dec_mask)
        scale = np.abs(expected).max()
        assert_close(t5.forward(model, ids, mask, dec, dec_mask), expected, "float32", scale=scale)
        assert_close(t5.forward(bf16, ids, mask, dec, dec_mask), expected, "bfloat16", scale=scale)
    expected = _torch_logits(ref, ids, mask, dec)
    assert_close(t5.forward(model, ids, mask, dec), expected, "float32", scale=np.abs(expected).max())


@pytest.mark.torch
@pytest.mark.parametrize("variant", ["relu-tied", "gated-gelu-untied"])
def test_export_round_trip(tmp_path, variant):
    from transformers import T5ForConditionalGeneration

    _torch_folder(tmp_path / "src", variant, seed=1)
    model = t5.load_model(tmp_path / "src")
    t5.export_hf(model, tmp_path / "out")
    again = t5.load_model(tmp_path / "out")
    assert again.config == model.config
    a, _ = flatten_with_paths(nnx.state(model, nnx.Param))
    b, _ = flatten_with_paths(nnx.state(again, nnx.Param))
    assert [p for p, _ in a] == [p for p, _ in b]
    for (path, x), (_, y) in zip(a, b):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y), err_msg=path)
    # The export leaves the project: HF's own class reads it and computes the same logits.
    ref = T5ForConditionalGeneration.from_pretrained(tmp_path / "out").double().eval()
    ids, mask, dec, dec_mask = _batch(np.random.default_rng(5))
    expected = _torch_logits(ref, ids, mask, dec, dec_mask)
    assert_close(t5.forward(model, ids, mask, dec, dec_mask), expected, "float32", scale=np.abs(expected).max())


def _tiny_config(ff="gated-gelu", tie=False, n_dec=2):
    return t5.T5Config(feed_forward_proj=ff, tie_word_embeddings=tie, scale_decoder_outputs=tie,
                       num_decoder_layers=n_dec, **SMALL)


def _uncached_greedy(model, ids, mask, steps):
    """Greedy decoding that recomputes the whole decoder each step (no cache).

    The decoder input has a fixed length (causal attention: later slots do not affect earlier
    positions), so one compiled forward serves every step.
    """
    cfg = model.config
    dec = np.full((ids.shape[0], steps), cfg.pad_token_id, np.int32)
    dec[:, 0] = cfg.decoder_start_token_id
    out = np.zeros((ids.shape[0], steps), np.int32)
    done = np.zeros(ids.shape[0], bool)
    for t in range(steps):
        nxt = np.asarray(t5.forward(model, ids, mask, dec))[:, t].argmax(-1)
        nxt = np.where(done, cfg.pad_token_id, nxt)
        done |= nxt == cfg.eos_token_id
        out[:, t] = nxt
        if t + 1 < steps:
            dec[:, t + 1] = nxt
    return out


@pytest.mark.parametrize("seed", [0, 1])
def test_cached_generation_equals_full_recompute(seed):
    model = t5.init_random(_tiny_config(tie=False), seed=seed)
    # Larger embeddings make a random model's greedy path vary from step to step.
    model.shared.embedding[...] = model.shared.embedding[...] * 8.0
    rng = np.random.default_rng(seed)
    ids = rng.integers(2, VOCAB, (3, 6))
    mask = np.ones_like(ids)
    mask[0, 4:] = 0
    got = t5.generate(model, ids, mask, max_new_tokens=7)
    assert got.shape == (3, 7)
    np.testing.assert_array_equal(got, _uncached_greedy(model, ids, mask, 7))


@pytest.mark.torch
def test_generation_matches_torch(tmp_path):
    import torch

    # Equal encoder / decoder depth: HF 5.x generate raises IndexError otherwise.
    ref = _torch_folder(tmp_path, "gated-silu-tied-unscaled", seed=3)
    model = t5.load_model(tmp_path)
    ids, mask, _, _ = _batch(np.random.default_rng(2))
    with torch.no_grad():
        expected = ref.generate(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask),
                                max_new_tokens=6, do_sample=False).numpy()[:, 1:]
    got = t5.generate(model, ids, mask, max_new_tokens=6)[:, : expected.shape[1]]
    np.testing.assert_array_equal(got, expected)


def _word_tokenizer():
    from tokenizers import Tokenizer, models, pre_tokenizers

    words = ["<pad>", "</s>", "<unk>"] + [f"w{i}" for i in range(VOCAB - 3)]
    backend = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    return TextTokenizer(backend, bos_id=None, eos_id=1, pad_id=0)


def _reference_scores(model, tok, inputs, options):
    """float64 log-likelihoods from one full forward over every (input, option) pair."""
    pairs = [(tok.encode(x) + [1], tok.encode(o) + [1]) for x in inputs for o in options]
    src, tgt = max(len(p[0]) for p in pairs), max(len(p[1]) for p in pairs)
    ids, mask = np.zeros((len(pairs), src), np.int32), np.zeros((len(pairs), src), np.int32)
    dec = np.zeros((len(pairs), tgt), np.int32)
    for r, (x, y) in enumerate(pairs):
        ids[r, : len(x)], mask[r, : len(x)] = x, 1
        dec[r, 1 : len(y)] = y[:-1]
    logits = np.asarray(t5.forward(model, ids, mask, dec), np.float64)
    logp = logits - logits.max(-1, keepdims=True)
    logp -= np.log(np.exp(logp).sum(-1, keepdims=True))
    scores = [logp[r, np.arange(len(y)), y].sum() for r, (_, y) in enumerate(pairs)]
    return np.array(scores).reshape(len(inputs), len(options))


@pytest.mark.parametrize("seed", [0, 1])
def test_score_options_is_sequence_log_likelihood(seed):
    model = t5.init_random(_tiny_config(ff="relu", tie=True), seed=seed)
    tok = _word_tokenizer()
    rng = np.random.default_rng(seed)
    sentence = lambda n: " ".join(f"w{k}" for k in rng.integers(0, VOCAB - 3, n))
    inputs = [sentence(n) for n in (3, 9, 5)]
    options = [sentence(n) for n in (1, 3, 2, 1)]
    got = t5.score_options(model, tok, inputs, options, batch_size=2)
    assert got.shape == (3, 4)
    assert_close(got, _reference_scores(model, tok, inputs, options), "float32", scale=np.abs(got).max())
    np.testing.assert_allclose(t5.score_options(model, tok, inputs, options, batch_size=4), got, rtol=1e-6)


def test_capture_names_and_default_targets():
    cfg = _tiny_config()
    model = t5.init_random(cfg)
    leaves, _ = flatten_with_paths(nnx.state(model, nnx.Param))
    targets = [p for p, _ in leaves if any(re.fullmatch(t, p) for t in t5.DEFAULT_TARGETS)]
    n_mlp = 3  # gated: wi_0, wi_1, wo
    assert len(targets) == cfg.num_layers * (4 + n_mlp) + cfg.num_decoder_layers * (8 + n_mlp)
    assert "decoder/layers/1/cross_attn/v_proj/kernel" in targets
    assert "encoder/layers/0/attn/relative_bias/embedding" in dict(leaves)
    ids = np.random.default_rng(0).integers(2, VOCAB, (2, 5))
    mask = np.ones_like(ids)
    graphdef, state = nnx.split(model)

    @jax.jit
    def captured(state, ids, mask):
        with capture() as acts:
            nnx.merge(graphdef, state)(ids, mask, ids[:, :3])
        return acts

    acts = captured(state, jnp.asarray(ids), jnp.asarray(mask))
    assert set(targets) <= set(acts)
    assert acts["decoder/layers/0/cross_attn/k_proj/kernel"].shape == (2, 5, cfg.d_model)
    assert acts["decoder/layers/1/mlp/wo/kernel"].shape == (2, 3, cfg.d_ff)
    # The first query projection sees the normalised embeddings (float64 reference).
    x = np.asarray(model.shared.embedding[...], np.float64)[ids]
    scale = np.asarray(model.encoder.layers[0].attn_norm.scale[...], np.float64)
    expected = x / np.sqrt((x**2).mean(-1, keepdims=True) + cfg.layer_norm_epsilon) * scale
    assert_close(acts["encoder/layers/0/attn/q_proj/kernel"], expected, "float32")


def test_bad_checkpoints(tmp_path):
    with pytest.raises(CheckpointError, match="config.json"):
        t5.load_model(tmp_path / "nothing")
    model = t5.init_random(_tiny_config())
    t5.export_hf(model, tmp_path / "ok")
    tensors = load_file(tmp_path / "ok" / "model.safetensors")
    cfg = json.loads((tmp_path / "ok" / "config.json").read_text())

    def write(name, tensors, cfg):
        folder = tmp_path / name
        folder.mkdir()
        save_file(tensors, folder / "model.safetensors")
        (folder / "config.json").write_text(json.dumps(cfg))
        return folder

    bad = dict(tensors)
    bad["decoder.block.1.layer.1.EncDecAttention.k.weight"] = np.zeros((5, 32), np.float32)
    with pytest.raises(CheckpointError, match=r"model\.safetensors.*EncDecAttention\.k\.weight.*\(5, 32\)"):
        t5.load_model(write("shape", bad, cfg))
    missing = {k: v for k, v in tensors.items() if "layer.2.DenseReluDense.wo" not in k}
    with pytest.raises(CheckpointError, match=r"DenseReluDense\.wo\.weight.*missing"):
        t5.load_model(write("missing", missing, cfg))
    with pytest.raises(CheckpointError, match=r"config\.json.*unknown architecture 'bert'"):
        t5.load_model(write("arch", tensors, dict(cfg, model_type="bert", architectures=["BertModel"])))
    with pytest.raises(CheckpointError, match=r"config\.json.*feed_forward_proj"):
        t5.load_model(write("act", tensors, dict(cfg, feed_forward_proj="gated-gelu-relu")))
    os.remove(tmp_path / "ok" / "model.safetensors")
    with pytest.raises(CheckpointError, match="no model.safetensors"):
        t5.load_model(tmp_path / "ok")
    with pytest.raises(ValueError, match="max_new_tokens"):
        t5.generate(model, np.ones((1, 3), int), np.ones((1, 3), int), 0)


def test_tokenizer_and_bf16_params_round_trip(tmp_path):
    tok = _word_tokenizer()
    model = t5.init_random(_tiny_config(), seed=2, param_dtype=jnp.bfloat16)
    t5.export_hf(model, tmp_path, tokenizer=tok)
    again, tok2 = t5.load_hf(tmp_path, param_dtype=jnp.bfloat16)
    assert (tok2.eos_id, tok2.pad_id, tok2.bos_id) == (1, 0, None)
    assert tok2.encode("w3 w7 nope") == tok.encode("w3 w7 nope") == [6, 10, 2]
    a, _ = flatten_with_paths(nnx.state(model, nnx.Param))
    b, _ = flatten_with_paths(nnx.state(again, nnx.Param))
    for (path, x), (_, y) in zip(a, b):
        assert x.dtype == y.dtype == jnp.bfloat16, path
        np.testing.assert_array_equal(np.asarray(x, np.float32), np.asarray(y, np.float32), err_msg=path)
