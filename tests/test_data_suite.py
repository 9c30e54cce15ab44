"""The offline suite: built from the installed asset packages, cached atomically, pinned."""

import json
import time

import pytest

from asvd_jax.data import (
    OFFLINE_ORDERS, OFFLINE_TASKS, SPLITS, DataCacheError, build_offline_suite, offline_sequence,
    suite_fingerprint,
)
from asvd_jax.data import _cache, _suite
from asvd_jax.data._sources import clean_text, dedup_pool, rating_label, tweet_domain

# sha256 of the default suite (seed 0, 40/10/30 per class, 300 characters); changes only when
# the building rules or the asset files change, and then SUITE_VERSION must be bumped too.
DEFAULT_FINGERPRINT = "a228c60978dddf7977086eea67e90adee97395db266279dbae06916a5ef4c872"
SMALL = dict(per_class_train=8, per_class_dev=2, per_class_test=4, seed=3, max_chars=120)
SMALL_FINGERPRINT = "45dc671e1ed1ec8de609a164097b7d4643bf36ed7086e6efc8020d309a81ef6f"


@pytest.fixture(scope="module")
def default_suite(tmp_path_factory):
    start = time.perf_counter()
    tasks = build_offline_suite(tmp_path_factory.mktemp("data"))
    return tasks, time.perf_counter() - start


def test_default_suite_pinned_and_fast(default_suite):
    tasks, seconds = default_suite
    assert seconds < 60
    assert list(tasks) == list(OFFLINE_TASKS)
    assert suite_fingerprint(tasks) == DEFAULT_FINGERPRINT


def test_default_suite_balanced_disjoint_deduplicated(default_suite):
    tasks, _ = default_suite
    seen_anywhere = {}
    for name, task in tasks.items():
        instruction, options = OFFLINE_TASKS[name]
        assert task.instruction == instruction and task.options == options
        for split, n in (("train", 40), ("dev", 10), ("test", 30)):
            assert task.class_counts(split) == {o: n for o in options}
        keys = [ex.text.casefold() for split in SPLITS for ex in task.split(split)]
        assert len(keys) == len(set(keys)), f"{name}: a text repeats within or across splits"
        for key in keys:
            assert seen_anywhere.setdefault(key, name) == name, f"text shared by {name} and {seen_anywhere[key]}"
        assert all(0 < len(ex.text) <= 300 for split in SPLITS for ex in task.split(split))
        # Splits interleave classes rather than listing one class after another.
        first = [ex.label for ex in task.train[: len(options) * 3]]
        assert len(set(first)) > 1


def test_tweet_domains_follow_their_rules(default_suite):
    tasks, _ = default_suite
    for name in ("airline", "apple", "coachella"):
        for split in SPLITS:
            for ex in tasks[name].split(split):
                assert tweet_domain(ex.text) == name, ex.text


def test_cache_is_reused_and_rebuild_checks_it(tmp_path, monkeypatch):
    first = build_offline_suite(tmp_path, **SMALL)
    assert suite_fingerprint(first) == SMALL_FINGERPRINT
    folder = tmp_path / _suite.SuiteConfig(**SMALL).cache_key
    assert sorted(p.name for p in folder.iterdir()) == sorted([f"{n}.jsonl" for n in OFFLINE_TASKS] + ["manifest.json"])
    assert build_offline_suite(tmp_path, **SMALL, rebuild=True) == first

    def no_sources(config):
        raise AssertionError("rebuilt although a cache exists")

    monkeypatch.setattr(_suite, "sample_offline_suite", no_sources)
    assert build_offline_suite(tmp_path, **SMALL) == first


def test_tampered_cache_is_reported(tmp_path):
    build_offline_suite(tmp_path, **SMALL)
    path = tmp_path / _suite.SuiteConfig(**SMALL).cache_key / "apple.jsonl"
    lines = path.read_text(encoding="utf-8").splitlines()
    row = json.loads(lines[1])
    row["label"] = "positive" if row["label"] != "positive" else "negative"
    lines[1] = json.dumps(row)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.raises(DataCacheError, match="fingerprint"):
        build_offline_suite(tmp_path, **SMALL)
    path.write_text("{not json\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"apple\.jsonl:1"):
        build_offline_suite(tmp_path, **SMALL)


def test_interrupted_build_leaves_nothing(tmp_path, monkeypatch):
    calls = []
    real_dumps = _cache.json.dumps

    def dumps_then_die(obj, **kw):
        calls.append(1)
        if len(calls) == 100:  # the first task file is complete, the second half-written
            raise KeyboardInterrupt
        return real_dumps(obj, **kw)

    monkeypatch.setattr(_cache.json, "dumps", dumps_then_die)
    with pytest.raises(KeyboardInterrupt):
        build_offline_suite(tmp_path, **SMALL)
    assert list(tmp_path.iterdir()) == []
    monkeypatch.undo()
    assert suite_fingerprint(build_offline_suite(tmp_path, **SMALL)) == SMALL_FINGERPRINT


def test_seed_and_sizes(tmp_path):
    base = build_offline_suite(tmp_path, **SMALL)
    other_seed = build_offline_suite(tmp_path, **{**SMALL, "seed": 4})
    assert base["bbc_news"].train != other_seed["bbc_news"].train
    bigger = build_offline_suite(tmp_path, **{**SMALL, "per_class_train": 12})
    # Test and dev are drawn before train, so a larger train set keeps them.
    for name in OFFLINE_TASKS:
        assert bigger[name].test == base[name].test and bigger[name].dev == base[name].dev
        assert set(base[name].train) < set(bigger[name].train)


def test_too_few_examples_names_task_and_class(tmp_path):
    with pytest.raises(ValueError, match=r"drug_review.*'neutral'.*distinct examples"):
        build_offline_suite(tmp_path, per_class_train=100)
    assert list(tmp_path.iterdir()) == []


def test_sequences_follow_the_fixed_orders(tmp_path):
    for order, names in OFFLINE_ORDERS.items():
        sequence = offline_sequence(order, tmp_path, **SMALL)
        assert sequence.task_names == names and sorted(names) == sorted(OFFLINE_TASKS)
    assert len({OFFLINE_ORDERS[k] for k in OFFLINE_ORDERS}) == 3
    with pytest.raises(ValueError, match="order"):
        offline_sequence(4, tmp_path, **SMALL)
    with pytest.raises(ValueError, match="per_class_dev"):
        build_offline_suite(tmp_path, per_class_dev=-1)


def test_source_rules():
    assert tweet_domain("@united lost my bag") == "airline"
    assert tweet_domain("@UnitedAirlines is not a handle we list") is None
    assert tweet_domain("My new iPhone is great") == "apple"
    assert tweet_domain("I want a macbook") is None
    assert tweet_domain("#Coachella2015 lineup!") == "coachella"
    assert tweet_domain("@JetBlue wifi killed my iPad battery") is None  # two domains: neither
    assert [rating_label(v, "x") for v in ("1", "4", "5", "6", "7", "10", "neutral")] == [
        "negative", "negative", "neutral", "neutral", "positive", "positive", "neutral"]
    with pytest.raises(ValueError, match="file.tsv:3"):
        rating_label("11", "file.tsv:3")
    assert clean_text("a  b\n c &amp; d", 100) == "a b c & d"
    assert clean_text("one two three", 9) == "one two"
    assert dedup_pool([("A", "x"), ("a", "x"), ("b", "x"), ("b", "y"), ("c", "y")]) == {"x": ["A"], "y": ["c"]}
