"""Prompts, tokenisation and batching against hand-built references, with random texts."""

import pickle
import re

import numpy as np
import pytest

from asvd_jax.data import (
    ANSWER_CUE, Example, Prompt, Task, batches, decoder_batch, encoder_batch, format_prompt, round_up,
    seq2seq_batch,
)

SEEDS = (0, 1, 2, 3)
WORDS = ("alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta", "iota", "kappa")


class WordTokenizer:
    """Each whitespace-prefixed word is one token; ids assigned in order of first sight."""

    def __init__(self, bos_id=1, eos_id=2, pad_id=0):
        self.bos_id, self.eos_id, self.pad_id = bos_id, eos_id, pad_id
        self.vocab = {}

    def encode(self, text, add_special_tokens=False):
        assert not add_special_tokens
        return [self.vocab.setdefault(tok, 10 + len(self.vocab)) for tok in re.findall(r"\s?\S+|\s+", text)]

    def decode(self, ids):
        inverse = {v: k for k, v in self.vocab.items()}
        return "".join(inverse.get(i, "") for i in ids)


def _task(options=("negative", "neutral", "positive")):
    return Task("t", "What is the sentiment of this text?", options, (Example("x", options[0]),), (), ())


def _random_text(rng, n_words):
    return " ".join(rng.choice(WORDS, size=n_words))


def test_format_prompt_paper_style():
    prompt = format_prompt(_task(), "I liked it.")
    assert str(prompt) == ("What is the sentiment of this text?\nOptions: negative, neutral, positive\n"
                           "I liked it.\nAnswer:")
    assert prompt.head + prompt.text + prompt.tail == prompt
    assert prompt.text == "I liked it." and prompt.tail == "\n" + ANSWER_CUE
    assert pickle.loads(pickle.dumps(prompt)).head == prompt.head


def test_generation_task_prompt_is_verbatim():
    task = Task("gen", "", (), (Example("Q: 1+1?\nAnswer:", "2"),), (), ())
    assert format_prompt(task, "Q: 1+1?\nAnswer:") == "Q: 1+1?\nAnswer:"


@pytest.mark.parametrize("seed", SEEDS)
def test_decoder_batch_masks_only_answer_and_eos(seed):
    rng = np.random.default_rng(seed)
    tok = WordTokenizer()
    task = _task()
    texts = [_random_text(rng, int(rng.integers(1, 12))) for _ in range(5)]
    answers = [str(rng.choice(task.options)) for _ in texts]
    prompts = [format_prompt(task, t) for t in texts]
    out = decoder_batch(tok, prompts, answers, max_len=64)
    assert set(out) == {"input_ids", "attention_mask", "loss_mask"}
    assert all(a.dtype == np.int32 for a in out.values())
    length = out["input_ids"].shape[1]
    assert length % 16 == 0 or length == 64
    for i, (p, a) in enumerate(zip(prompts, answers)):
        # Reference: the row built by hand from the separately tokenised parts.
        expected = ([tok.bos_id] + tok.encode(p.head) + tok.encode(p.text) + tok.encode(p.tail)
                    + tok.encode(" " + a) + [tok.eos_id])
        n = len(expected)
        np.testing.assert_array_equal(out["input_ids"][i, :n], expected)
        np.testing.assert_array_equal(out["input_ids"][i, n:], tok.pad_id)
        np.testing.assert_array_equal(out["attention_mask"][i], (np.arange(length) < n).astype(np.int32))
        n_answer = len(tok.encode(" " + a)) + 1
        np.testing.assert_array_equal(
            out["loss_mask"][i], ((np.arange(length) >= n - n_answer) & (np.arange(length) < n)).astype(np.int32)
        )


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("truncation", ["right", "left"])
def test_truncation_cuts_only_the_text(seed, truncation):
    rng = np.random.default_rng(seed)
    tok = WordTokenizer()
    task = _task()
    prompt = format_prompt(task, _random_text(rng, 80))
    answer = "positive"
    max_len = 40
    out = decoder_batch(tok, [prompt], [answer], max_len=max_len, truncation=truncation)
    row = out["input_ids"][0][out["attention_mask"][0] == 1].tolist()
    assert len(row) == max_len
    head, text, tail = tok.encode(prompt.head), tok.encode(prompt.text), tok.encode(prompt.tail)
    ans = tok.encode(" " + answer) + [tok.eos_id]
    room = max_len - 1 - len(head) - len(tail) - len(ans)
    kept = text[:room] if truncation == "right" else text[len(text) - room:]
    assert row == [tok.bos_id] + head + kept + tail + ans
    assert tok.decode(row[-len(ans) - len(tail):-len(ans)]) == "\n" + ANSWER_CUE


def test_prompt_that_cannot_fit_is_an_error():
    tok = WordTokenizer()
    prompt = format_prompt(_task(), "short text")
    with pytest.raises(ValueError, match="instruction, options and answer cue"):
        decoder_batch(tok, [prompt], ["positive"], max_len=8)
    with pytest.raises(ValueError, match="answer takes"):
        decoder_batch(tok, [prompt], [" ".join(WORDS)], max_len=5)


def test_pad_to_and_left_padding_for_generation():
    tok = WordTokenizer()
    prompts = [format_prompt(_task(), "a b c"), format_prompt(_task(), "a")]
    out = decoder_batch(tok, prompts, None, max_len=64, pad_to=40, padding_side="left")
    assert out["input_ids"].shape == (2, 40)
    assert not out["loss_mask"].any()
    # Every prompt ends in the last column, so generation continues all rows at one position.
    np.testing.assert_array_equal(out["attention_mask"][:, -1], 1)
    assert out["attention_mask"][0].sum() == out["attention_mask"][1].sum() + 2
    with pytest.raises(ValueError, match="pad_to"):
        decoder_batch(tok, prompts, None, max_len=64, pad_to=4)


def test_no_bos_tokenizer():
    tok = WordTokenizer(bos_id=None)
    out = decoder_batch(tok, ["hello world"], ["yes"], max_len=16)
    assert out["input_ids"][0, :2].tolist() == tok.encode("hello world")


@pytest.mark.parametrize("seed", SEEDS[:2])
def test_seq2seq_batch(seed):
    rng = np.random.default_rng(seed)
    tok = WordTokenizer(bos_id=None, eos_id=1, pad_id=0)
    task = _task()
    inputs = [format_prompt(task, _random_text(rng, int(rng.integers(1, 30)))) for _ in range(4)]
    targets = [_random_text(rng, int(rng.integers(1, 6))) for _ in range(4)]
    out = seq2seq_batch(tok, inputs, targets, max_len=24, max_target_len=4)
    assert out["input_ids"].shape[1] <= 24
    for i, (p, t) in enumerate(zip(inputs, targets)):
        enc = out["input_ids"][i][out["attention_mask"][i] == 1].tolist()
        assert enc[-1] == tok.eos_id and enc[-1 - len(tok.encode(p.tail)):-1] == tok.encode(p.tail)
        want = tok.encode(t)[:3] + [tok.eos_id]
        assert out["labels"][i][out["loss_mask"][i] == 1].tolist() == want
        np.testing.assert_array_equal(out["decoder_input_ids"][i, 0], tok.pad_id)
        np.testing.assert_array_equal(out["decoder_input_ids"][i, 1:], out["labels"][i, :-1])


def test_encoder_batch_adds_cls_sep():
    tok = WordTokenizer(bos_id=101, eos_id=102, pad_id=0)
    out = encoder_batch(tok, ["a b c", "a"], max_len=4)
    assert out["input_ids"].tolist() == [[101] + tok.encode("a b")[:2] + [102], [101] + tok.encode("a") + [102, 0]]
    assert out["token_type_ids"].sum() == 0


def test_round_up():
    assert [round_up(n, 16) for n in (1, 16, 17, 32)] == [16, 16, 32, 32]


@pytest.mark.parametrize("seed", SEEDS)
def test_batches_deterministic_and_complete(seed):
    items = [Example("w" * int(n), "x") for n in np.random.default_rng(seed).integers(1, 100, size=103)]
    a = [[id(e) for e in b] for b in batches(items, 8, seed=seed)]
    b = [[id(e) for e in b] for b in batches(items, 8, seed=seed)]
    c = [[id(e) for e in b] for b in batches(items, 8, seed=seed + 1)]
    assert a == b and a != c
    assert sorted(sum(a, [])) == sorted(id(e) for e in items)
    full = list(batches(items, 8, seed=seed, drop_last=True))
    assert len(full) == 103 // 8 and all(len(x) == 8 for x in full)
    plain = list(batches(items, 8, shuffle=False))
    assert [e for bt in plain for e in bt] == items


@pytest.mark.parametrize("seed", SEEDS)
def test_length_bucketing_reduces_padding(seed):
    items = [Example("w" * int(n), "x") for n in np.random.default_rng(seed).integers(1, 200, size=512)]

    def padding(batch_list):
        return sum(max(len(e.text) for e in b) * len(b) - sum(len(e.text) for e in b) for b in batch_list)

    bucketed = list(batches(items, 8, seed=seed, bucket_by_length=True, bucket_pool=16))
    assert sorted(id(e) for b in bucketed for e in b) == sorted(id(e) for e in items)
    assert padding(bucketed) < 0.25 * padding(list(batches(items, 8, seed=seed)))
    assert bucketed == list(batches(items, 8, seed=seed, bucket_by_length=True, bucket_pool=16))


def test_bad_arguments():
    tok = WordTokenizer()
    with pytest.raises(ValueError, match="batch_size"):
        list(batches([1, 2], 0))
    with pytest.raises(ValueError, match="truncation"):
        decoder_batch(tok, ["a"], ["b"], max_len=8, truncation="middle")
    with pytest.raises(ValueError, match="answers"):
        decoder_batch(tok, ["a", "b"], ["b"], max_len=8)
    with pytest.raises(TypeError, match="row 0"):
        decoder_batch(tok, [3], ["b"], max_len=8)
