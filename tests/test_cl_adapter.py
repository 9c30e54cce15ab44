"""Decoder adapter: fast option scoring, answer-only loss, exact-match normalisation."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from asvd_jax.data import normalize_answer
from asvd_jax.models.llama._adapter import DecoderAdapter
from asvd_jax.cl._config import ModelConfig
from asvd_jax.models import load_model
from tolerances import assert_close


@pytest.fixture(scope="module")
def adapter():
    model, tok, _ = load_model(ModelConfig(source="random", random_width=32))
    return DecoderAdapter(model, tok, max_len=64, batch_size=4, eval_batch_size=4)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_fused_eval_equals_generate_and_pairwise_scores(adapter, seed):
    from flax import nnx

    from asvd_jax.data import pad_token_rows
    from asvd_jax.models.llama._decoding import (_decoder_option_logprobs, generate, generate_and_score,
                                                 score_token_options)

    rng = np.random.default_rng(seed)
    # Prompts of different lengths (left padding differs per row), options of different
    # lengths plus EOS, and an empty option slot (all padding) as the runner passes them.
    prompts = [list(rng.integers(3, 250, size=rng.integers(3, 16))) for _ in range(4)]
    options = [list(rng.integers(3, 250, size=n)) + [2] for n in (rng.integers(1, 4), 3, rng.integers(1, 4))]
    pi, pm = pad_token_rows(prompts, 16, 0, left=True)
    oi, om = pad_token_rows(options + [[0]], 5, 0, left=False)
    model = adapter.model(adapter.params)
    fused = jax.jit(lambda p, a, b, c, d: generate_and_score(adapter.model(p), a, b, c, d, 5, 2, 0))
    tokens, scores = fused(adapter.params, pi, pm, oi, om)
    graphdef, state = nnx.split(model)
    fn = functools.partial(_decoder_option_logprobs, graphdef, state)
    want = score_token_options(fn, prompts, options, pad_id=0, batch_size=4)
    assert_close(np.asarray(scores)[:, :3], want, "float32", scale=np.abs(want).max())
    want_tokens = generate(model, prompts, 5, 2, pad_id=0)
    for row, ref in zip(np.asarray(tokens).tolist(), want_tokens):
        cut = row[: row.index(2)] if 2 in row else row
        assert cut == ref


def test_loss_counts_answer_tokens_only(adapter):
    from asvd_jax.data import Example, Task
    from asvd_jax.models.llama import token_logprobs

    task = Task("t", "Pick.", ("yes", "no"), (Example("a b c", "yes"), Example("d", "no")), (), ())
    batch = adapter.train_batch([(task, ex) for ex in task.train])
    assert batch["input_ids"].shape == (4, 48)  # rows padded to 4, tokens to the longest row, rounded up to 16
    lp = np.asarray(token_logprobs(adapter.model(adapter.params), jnp.asarray(batch["input_ids"]),
                                   jnp.asarray(batch["attention_mask"])), np.float64)
    mask = batch["loss_mask"].astype(np.float64)
    want = -(lp * mask).sum() / mask.sum()
    got = float(adapter.loss(adapter.params, {k: jnp.asarray(v) for k, v in batch.items()}))
    assert_close(got, want, "float32")
    tok = adapter.tokenizer
    answer_tokens = len(tok.encode(" yes")) + 1 + len(tok.encode(" no")) + 1  # each with EOS
    assert mask[2:].sum() == 0 and mask.sum() == answer_tokens


def test_normalize_answer():
    assert normalize_answer("  Positive.") == "positive"
    assert normalize_answer("sci-fi!") == "sci fi"
    assert normalize_answer("") == ""
