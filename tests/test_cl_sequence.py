"""Per-task size caps of the runner's sequences (cl/_sequence._subset)."""

from collections import Counter

import numpy as np
import pytest

from asvd_jax.cl._sequence import _subset
from asvd_jax.data import Example


def _examples(counts, seed):
    rng = np.random.default_rng(seed)
    labels = [lab for lab, n in counts.items() for _ in range(n)]
    rng.shuffle(labels)
    return tuple(Example(f"text {i}", lab) for i, lab in enumerate(labels))


@pytest.mark.parametrize("seed", range(5))
def test_stratified_cap_is_balanced_ordered_and_deterministic(seed):
    counts = {"business": 30, "politics": 12, "sport": 30, "tech": 25, "entertainment": 19}
    exs = _examples(counts, seed)
    got = _subset(exs, 24, seed, ("test", "bbc"), stratify=True)
    per_class = Counter(e.label for e in got)
    assert len(got) == 24 and set(per_class) == set(counts)
    assert max(per_class.values()) - min(per_class.values()) <= 1  # 24 = 5 x 4 + 4
    pos = [exs.index(e) for e in got]
    assert pos == sorted(pos)  # original order kept
    assert got == _subset(exs, 24, seed, ("test", "bbc"), stratify=True)
    assert got != _subset(exs, 24, seed, ("dev", "bbc"), stratify=True)


def test_short_class_leaves_its_share_to_the_others():
    exs = _examples({"a": 2, "b": 40, "c": 40}, 0)
    per_class = Counter(e.label for e in _subset(exs, 30, 0, "x", stratify=True))
    assert per_class == {"a": 2, "b": 14, "c": 14}


def test_plain_draw_for_generation_tasks_and_no_cap():
    exs = tuple(Example(f"q{i}", f"answer {i}") for i in range(50))
    got = _subset(exs, 10, 3, "x")
    assert len(got) == 10 and len(set(got)) == 10
    assert _subset(exs, 0, 3, "x") == exs and _subset(exs, 50, 3, "x", stratify=True) == exs


def test_random_draw_is_unbalanced_where_stratified_is_not():
    """The reason for stratifying: over seeds a plain draw of 24 from 5 equal classes is often
    off by 4 or more between classes; the stratified draw never is."""
    exs = _examples({c: 30 for c in "abcde"}, 1)
    spread = lambda got: (lambda c: max(c.values()) - min(c.values()))(Counter(e.label for e in got))
    plain = [spread(_subset(exs, 24, s, "x")) for s in range(20)]
    strat = [spread(_subset(exs, 24, s, "x", stratify=True)) for s in range(20)]
    assert max(strat) <= 1 and max(plain) >= 4


def test_loaders_report_progress(tmp_path):
    """The runner's progress bar sees every loader step (offline sources, custom tasks)."""
    from asvd_jax.cl._config import DataConfig
    from asvd_jax.cl._sequence import load_sequence

    calls = []

    def progress(iterable, total, desc):
        items = list(iterable)
        calls.append((desc, total, len(items)))
        return items

    seq = load_sequence(DataConfig(suite="offline", data_dir=str(tmp_path)), progress)
    assert calls == [("reading offline sources", 3, 3)] and len(seq.tasks) == 5
    calls.clear()
    load_sequence(DataConfig(suite="offline", data_dir=str(tmp_path)), progress)
    assert calls == []  # cached: nothing to build
    seq = load_sequence(DataConfig(suite="fixture"), progress)
    assert len(calls) == 1 and calls[0][0].startswith("reading tasks of") and calls[0][1] == len(seq.tasks)
