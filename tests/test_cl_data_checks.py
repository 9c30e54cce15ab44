"""Runner warnings: max_len truncating most inputs, labels longer than the generation budget."""

import types

from asvd_jax.cl._data_checks import data_warnings
from asvd_jax.data import Example, Task, format_prompt
from asvd_jax.models import get_family


class WordTokenizer:
    """One token per whitespace-separated word; BOS and EOS ids like a decoder's."""

    bos_id, eos_id = 1, 2

    def encode(self, text, add_special_tokens=False):
        return [7] * len(text.split())


def _adapter(family):
    return types.SimpleNamespace(family=family, tokenizer=WordTokenizer())


def _task(texts, labels=("yes", "no"), options=("yes", "no")):
    exs = tuple(Example(t, labels[i % len(labels)]) for i, t in enumerate(texts))
    return Task("t", "Answer now.", options, train=exs, dev=(), test=exs)


def test_input_length_by_family():
    task = _task(["a b c"])
    p = format_prompt(task, "a b c")
    words = len(p.head.split()) + 3 + len(p.tail.split())
    # decoder: BOS + prompt + " yes" + EOS; encoder: [CLS] instruction text [SEP]; T5: + EOS
    assert get_family("llama").input_length(WordTokenizer(), task, "a b c", "yes") == words + 1 + 2
    assert get_family("bert").input_length(WordTokenizer(), task, "a b c", None) == 2 + 2 + 3
    assert get_family("t5").input_length(WordTokenizer(), task, "a b c", None) == words + 1
    assert get_family("llama").answer_tokens(WordTokenizer(), "very long answer") == 3


def test_warns_when_most_inputs_are_truncated():
    task = _task(["w " * 50, "w " * 50, "w " * 50, "short"])
    a = _adapter("bert")
    # bert length = 2 + 2 + words: 54 for the long ones, 5 for "short"; 6 of 8 rows > 20.
    (msg,) = data_warnings(get_family(a.family), a, [task], max_len=20, max_new_tokens=None)
    assert "'t'" in msg and "6 of 8" in msg and "data.max_len=20" in msg
    assert data_warnings(get_family(a.family), a, [task], max_len=60, max_new_tokens=None) == []
    half = _task(["w " * 50, "short"])  # exactly half: no warning (most = more than half)
    assert data_warnings(get_family(a.family), a, [half], max_len=20, max_new_tokens=None) == []


def test_warns_about_labels_longer_than_the_generation_budget():
    task = _task(["a"], labels=("yes", "not at all"), options=("yes", "not at all"))
    a = _adapter("llama")
    (msg,) = data_warnings(get_family(a.family), a, [task], max_len=500, max_new_tokens=3)
    assert "'not at all' (3)" in msg and "max_new_tokens=3" in msg
    assert data_warnings(get_family(a.family), a, [task], max_len=500, max_new_tokens=4) == []
    assert data_warnings(get_family("bert"), _adapter("bert"), [task], max_len=500, max_new_tokens=1) == []
