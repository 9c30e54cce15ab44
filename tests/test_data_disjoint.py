"""The disjoint-label offline sequence: pinned, no shared label words, no shared texts."""

import pytest

from asvd_jax.cl import load_config
from asvd_jax.cl._sequence import load_sequence
from asvd_jax.data import SPLITS, suite_fingerprint
from asvd_jax.data._disjoint import (
    DISJOINT_ORDERS,
    DISJOINT_TASKS,
    build_disjoint_suite,
    disjoint_sequence,
    sample_disjoint_suite,
)
from asvd_jax.data._suite import SuiteConfig

# sha256 of the default build (seed 0, 40/10/30 per class, 300 characters); changes only when
# the building rules or the asset files change, and then DISJOINT_VERSION must be bumped too.
DEFAULT_FINGERPRINT = "4aac9dc974e4779629c4d89b1bb051ad2549a802addb6349226b8c31863f9ace"


@pytest.fixture(scope="module")
def suite(tmp_path_factory):
    folder = tmp_path_factory.mktemp("data")
    return folder, build_disjoint_suite(folder)


def test_default_build_is_pinned(suite):
    _, tasks = suite
    assert list(tasks) == [*DISJOINT_TASKS, "text_source"]
    assert suite_fingerprint(tasks) == DEFAULT_FINGERPRINT


def test_labels_disjoint_balanced_and_texts_unique(suite):
    _, tasks = suite
    words = [o for t in tasks.values() for o in t.options]
    assert len(words) == len(set(words)) == 17  # no answer word in two tasks
    texts = [ex.text for t in tasks.values() for s in SPLITS for ex in t.split(s)]
    assert len(texts) == len(set(texts))  # no text in two tasks or two splits
    for t in tasks.values():
        for split, n in (("train", 40), ("dev", 10), ("test", 30)):
            assert set(t.class_counts(split).values()) == {n}, (t.name, split)
    # the relabelling keeps the source's classes: every drug "okay" is a neutral drug review
    assert tasks["drug_rating"].options == ("bad", "okay", "good")
    assert all("coachella" in ex.text.lower()
               for ex in tasks["text_source"].train if ex.label == "tweet")


def test_cache_reused_and_checked(suite):
    folder, tasks = suite
    assert build_disjoint_suite(folder) == tasks
    assert build_disjoint_suite(folder, rebuild=True) == tasks


def test_orders_and_runner_config(suite):
    folder, tasks = suite
    for order, names in DISJOINT_ORDERS.items():
        seq = disjoint_sequence(order, data_dir=folder)
        assert seq.task_names == names and sorted(names) == sorted(tasks)
    with pytest.raises(ValueError, match="order"):
        disjoint_sequence(4, data_dir=folder)
    cfg = load_config(None, ["data.suite=offline_disjoint", "data.order=2", f"data.data_dir={folder}"])
    seq = load_sequence(cfg.data)
    assert seq.name == "offline_disjoint-order2" and seq.task_names == DISJOINT_ORDERS[2]


def test_too_large_a_sample_names_the_task_and_class():
    with pytest.raises(ValueError, match="drug_rating.*okay"):
        sample_disjoint_suite(SuiteConfig(per_class_train=60, per_class_dev=10, per_class_test=30))
