"""BERT: hidden states against the PyTorch reference (float64), HF round trip, MiniLM, batching,
capture, errors."""

import importlib.util
import json
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from safetensors.numpy import load_file, save_file

from asvd_jax import flatten_with_paths
from asvd_jax.models import bert, capture
from asvd_jax.models._hf_io import CheckpointError
from tolerances import assert_close

VOCAB = 50
SMALL = dict(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
             intermediate_size=48, max_position_embeddings=32, type_vocab_size=2)
# Reference weights ~15x BERT's default init: activations reach the range where exact and
# tanh GELU, or a missing score scale, differ by more than the tolerance.
INIT_RANGE = 0.3


def _torch_folder(folder, seed, hidden_act="gelu"):
    import torch
    from transformers import BertConfig, BertModel

    torch.manual_seed(seed)
    model = BertModel(BertConfig(hidden_act=hidden_act, initializer_range=INIT_RANGE, **SMALL)).eval()
    model.save_pretrained(folder)
    return model.double()


def _batch(rng, batch=3, seq=9):
    ids = rng.integers(1, VOCAB, (batch, seq))
    mask = np.ones_like(ids)
    mask[1, seq - 3 :] = 0
    types = (np.arange(seq)[None] >= rng.integers(2, seq, (batch, 1))).astype(int)
    return ids, mask, types


def _torch_hidden(ref, ids, mask, types=None):
    import torch

    with torch.no_grad():
        out = ref(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask),
                  token_type_ids=None if types is None else torch.tensor(types))
    return out.last_hidden_state.numpy()


@pytest.mark.torch
@pytest.mark.parametrize("hidden_act", ["gelu", "gelu_new"])
def test_hidden_states_match_torch(tmp_path, hidden_act):
    ref = _torch_folder(tmp_path, seed=len(hidden_act), hidden_act=hidden_act)
    model, tokenizer = bert.load_hf(tmp_path)
    assert tokenizer is None and model.pooler is not None
    bf16 = bert.load_model(tmp_path, dtype=jnp.bfloat16)
    for seed in range(3):
        ids, mask, types = _batch(np.random.default_rng(seed))
        expected = _torch_hidden(ref, ids, mask, types)
        valid = mask.astype(bool)  # padded positions are not defined outputs
        scale = np.abs(expected).max()
        got = np.asarray(bert.forward(model, ids, mask, types))
        assert_close(got[valid], expected[valid], "float32", scale=scale)
        got16 = np.asarray(bert.forward(bf16, ids, mask, types), np.float32)
        assert_close(got16[valid], expected[valid], "bfloat16", scale=scale)
    expected = _torch_hidden(ref, ids, mask)
    assert_close(np.asarray(bert.forward(model, ids, mask))[valid], expected[valid], "float32", scale=scale)
    # Sentence embedding = normalised masked mean of the reference states (float64).
    pooled = (expected * mask[..., None]).sum(1) / mask.sum(1, keepdims=True)
    pooled /= np.linalg.norm(pooled, axis=-1, keepdims=True)
    assert_close(bert.embed(model, ids, mask), pooled, "float32")


@pytest.mark.torch
def test_export_round_trip(tmp_path):
    from transformers import BertModel

    _torch_folder(tmp_path / "src", seed=4)
    model = bert.load_model(tmp_path / "src")
    bert.export_hf(model, tmp_path / "out")
    again = bert.load_model(tmp_path / "out")
    assert again.config == model.config
    a, _ = flatten_with_paths(nnx.state(model, nnx.Param))
    b, _ = flatten_with_paths(nnx.state(again, nnx.Param))
    assert [p for p, _ in a] == [p for p, _ in b]
    for (path, x), (_, y) in zip(a, b):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y), err_msg=path)
    assert set(load_file(tmp_path / "out" / "model.safetensors")) == {
        k for k in load_file(tmp_path / "src" / "model.safetensors") if k != "embeddings.position_ids"
    }
    ref = BertModel.from_pretrained(tmp_path / "out").double().eval()
    ids, mask, types = _batch(np.random.default_rng(7))
    expected = _torch_hidden(ref, ids, mask, types)
    valid = mask.astype(bool)
    got = np.asarray(bert.forward(model, ids, mask, types))
    assert_close(got[valid], expected[valid], "float32", scale=np.abs(expected).max())


@pytest.fixture(scope="module")
def minilm():
    if importlib.util.find_spec(bert.MINILM_PACKAGE) is None:
        pytest.skip(f"MiniLM package missing: {bert.MINILM_PIP}")
    return bert.load_minilm()


def test_minilm_similarity(minilm):
    model, tok = minilm
    assert model.config.num_hidden_layers == 6 and model.config.hidden_size == 384
    sims = bert.score_options(model, tok, ["A man is eating food."],
                              ["A man is eating a piece of bread.", "A man is eating food."])
    assert abs(sims[0, 0] - 0.755) <= 0.005
    assert abs(sims[0, 1] - 1.0) <= 1e-5


def test_batching_does_not_change_embeddings(minilm):
    model, tok = minilm
    texts = ["short one", "a somewhat longer sentence about the weather in spring",
             "mid length text here", "x", "another sentence, with punctuation!"]
    together = bert.encode_texts(model, tok, texts, batch_size=4)
    alone = np.concatenate([bert.encode_texts(model, tok, [t], batch_size=4) for t in texts])
    assert_close(together, alone, "float32")
    np.testing.assert_allclose(np.linalg.norm(together, axis=-1), 1.0, rtol=1e-6)
    # Truncation keeps [CLS] ... [SEP] within max_len tokens.
    long = " ".join(["word"] * 40)
    ids = [tok.bos_id, *tok.encode(long)[:14], tok.eos_id]
    expected = np.asarray(bert.embed(model, np.array([ids]), np.ones((1, 16), int)))
    assert_close(bert.encode_texts(model, tok, [long], max_len=16, batch_size=1), expected, "float32")


def test_capture_names_and_default_targets():
    cfg = bert.BertConfig(**SMALL)
    model = bert.init_random(cfg, seed=1)
    leaves, _ = flatten_with_paths(nnx.state(model, nnx.Param))
    paths = [p for p, _ in leaves]
    targets = [p for p in paths if any(re.fullmatch(t, p) for t in bert.DEFAULT_TARGETS)]
    assert len(targets) == cfg.num_hidden_layers * 6
    assert {"embeddings/word/embedding", "layers/1/attn_norm/bias", "layers/0/mlp/down_proj/bias"} <= set(paths)
    ids = np.random.default_rng(0).integers(1, VOCAB, (2, 6))
    graphdef, state = nnx.split(model)

    @jax.jit
    def captured(state, ids):
        with capture() as acts:
            nnx.merge(graphdef, state)(ids, jnp.ones_like(ids))
        return acts

    acts = captured(state, jnp.asarray(ids))
    assert set(targets) == set(acts) - {"pooler/kernel"}
    assert acts["layers/1/mlp/down_proj/kernel"].shape == (2, 6, cfg.intermediate_size)
    # The first projections see the embedding LayerNorm output (float64 reference).
    emb = lambda name: np.asarray(getattr(model.embeddings, name).embedding[...], np.float64)
    x = emb("word")[ids] + emb("position")[:6][None] + emb("token_type")[0]
    x = (x - x.mean(-1, keepdims=True)) / np.sqrt(x.var(-1, keepdims=True) + cfg.layer_norm_eps)
    assert_close(acts["layers/0/attn/k_proj/kernel"], x, "float32")


def test_bad_checkpoints(tmp_path, monkeypatch):
    with pytest.raises(CheckpointError, match="config.json"):
        bert.load_model(tmp_path / "nothing")
    bert.export_hf(bert.init_random(bert.BertConfig(**SMALL)), tmp_path / "ok")
    tensors = load_file(tmp_path / "ok" / "model.safetensors")
    cfg = json.loads((tmp_path / "ok" / "config.json").read_text())

    def write(name, tensors, cfg):
        folder = tmp_path / name
        folder.mkdir()
        save_file(tensors, folder / "model.safetensors")
        (folder / "config.json").write_text(json.dumps(cfg))
        return folder

    bad = dict(tensors, **{"encoder.layer.1.intermediate.dense.weight": np.zeros((48, 31), np.float32)})
    with pytest.raises(CheckpointError, match=r"model\.safetensors.*intermediate\.dense\.weight.*\(48, 31\)"):
        bert.load_model(write("shape", bad, cfg))
    with pytest.raises(CheckpointError, match=r"model\.safetensors.*output\.LayerNorm\.bias.*missing"):
        bert.load_model(write("missing", {k: v for k, v in tensors.items() if k != "encoder.layer.0.output.LayerNorm.bias"}, cfg))
    with pytest.raises(CheckpointError, match=r"config\.json.*unknown architecture 't5'"):
        bert.load_model(write("arch", tensors, dict(cfg, model_type="t5", architectures=["T5Model"])))
    with pytest.raises(CheckpointError, match=r"config\.json.*hidden_size 32 is not divisible"):
        bert.load_model(write("heads", tensors, dict(cfg, num_attention_heads=5)))
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None)
    with pytest.raises(ModuleNotFoundError, match=re.escape(bert.MINILM_PIP)):
        bert.load_minilm()
