"""The offline standard suite: five classification tasks from installed asset packages.

Tasks (see ``_sources`` for how each is read): ``bbc_news`` (topic, 5 classes) and four
sentiment tasks (negative / neutral / positive) in different domains: ``airline``,
``drug_review``, ``apple``, ``coachella``. Mixed topic + multi-domain sentiment mirrors the
published benchmark (AG News / Amazon / Yelp / DBpedia / Yahoo), none of which ships offline.

Sampling is class-balanced: every class gets exactly ``per_class_<split>`` examples per split,
chosen by ``stratified_split`` (sha256 ranking with the seed; test first, then dev, then
train, so growing the train size keeps the test set). The built suite is cached as JSONL under
``<data_dir>/<key>/`` where the key spells out every setting, and rebuilt when missing.
"""

from __future__ import annotations

import dataclasses
import functools
from pathlib import Path

from asvd_jax.data import _sources
from asvd_jax.data._cache import default_data_dir, load_or_build
from asvd_jax.data._tasks import Task, TaskSequence, no_progress, stratified_split

SUITE_VERSION = 1
"""Bumped whenever the building rules change, so old caches are not reused."""

OFFLINE_TASKS: dict[str, tuple[str, tuple[str, ...]]] = {
    "bbc_news": ("What is the topic of this news article?",
                 ("business", "entertainment", "politics", "sport", "tech")),
    "airline": ("What is the sentiment of this tweet about an airline?", _sources.SENTIMENTS),
    "drug_review": ("What is the sentiment of this review of a medicine?", _sources.SENTIMENTS),
    "apple": ("What is the sentiment of this tweet about Apple products?", _sources.SENTIMENTS),
    "coachella": ("What is the sentiment of this tweet about the Coachella festival?", _sources.SENTIMENTS),
}
"""name -> (instruction, options), in the canonical order (= order 1)."""

OFFLINE_ORDERS: dict[int, tuple[str, ...]] = {
    1: ("bbc_news", "airline", "drug_review", "apple", "coachella"),
    2: ("coachella", "apple", "drug_review", "airline", "bbc_news"),
    3: ("apple", "bbc_news", "coachella", "drug_review", "airline"),
}
"""Three fixed task orders: 1 is the listing order (topic first), 2 its reverse (topic last),
3 alternates tweet and non-tweet tasks so that no two tweet domains follow each other."""


@dataclasses.dataclass(frozen=True)
class SuiteConfig:
    """How the offline suite is sampled. Defaults fit a CPU demo (~1 epoch per task)."""

    per_class_train: int = 40
    """Training examples per class (5 x 40 = 200 for bbc_news, 3 x 40 = 120 for the others)."""
    per_class_dev: int = 10
    """Validation examples per class."""
    per_class_test: int = 30
    """Test examples per class."""
    seed: int = 0
    """Seed of the sha256 ranking that selects and orders examples."""
    max_chars: int = 300
    """Texts are cut at the last space before this many characters (about 75 tokens)."""

    def __post_init__(self):
        for field in ("per_class_train", "per_class_dev", "per_class_test", "seed", "max_chars"):
            value = getattr(self, field)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ValueError(f"SuiteConfig.{field} must be a non-negative int, got {value!r}")
        if self.per_class_train + self.per_class_test == 0:
            raise ValueError("SuiteConfig: per_class_train and per_class_test are both 0")
        if self.max_chars < 16:
            raise ValueError(f"SuiteConfig.max_chars must be >= 16, got {self.max_chars}")

    @property
    def cache_key(self) -> str:
        return (f"offline-v{SUITE_VERSION}-seed{self.seed}-train{self.per_class_train}"
                f"-dev{self.per_class_dev}-test{self.per_class_test}-chars{self.max_chars}")

    @property
    def sizes(self) -> dict[str, int]:
        return {"train": self.per_class_train, "dev": self.per_class_dev, "test": self.per_class_test}


# Reading the sources is most of a build; pools are never mutated, so they are cached per source.
_tweet_pools = functools.lru_cache(maxsize=4)(_sources.tweet_pools)
_bbc_pool = functools.lru_cache(maxsize=4)(_sources.bbc_pool)
_drug_pool = functools.lru_cache(maxsize=4)(_sources.drug_pool)


def _pools(max_chars: int, progress=no_progress) -> dict[str, dict[str, list[str]]]:
    sources = (("tweets", _tweet_pools), ("bbc_news", _bbc_pool), ("drug_review", _drug_pool))
    read = {name: fn(max_chars) for name, fn in
            progress(sources, len(sources), "reading offline sources")}
    return {
        "bbc_news": read["bbc_news"],
        "airline": read["tweets"]["airline"],
        "drug_review": read["drug_review"],
        "apple": read["tweets"]["apple"],
        "coachella": read["tweets"]["coachella"],
    }


def sample_offline_suite(config: SuiteConfig = SuiteConfig(), progress=no_progress) -> dict[str, Task]:
    """Build the suite from the asset packages (no cache involved).

    ``progress(iterable, total, desc)`` wraps the source reads (a progress bar; default none).
    """
    pools = _pools(config.max_chars, progress)
    tasks = {}
    for name, (instruction, options) in OFFLINE_TASKS.items():
        pool = pools[name]
        missing = [o for o in options if not pool.get(o)]
        if missing:
            raise ValueError(f"offline task {name!r}: no examples for class(es) {missing}")
        splits = stratified_split(
            {o: pool[o] for o in options}, config.sizes, config.seed, salt=name,
            what=f"offline task {name!r}",
        )
        tasks[name] = Task(name, instruction, options, **splits)
    return tasks


def build_offline_suite(
    data_dir: str | Path | None = None,
    per_class_train: int = SuiteConfig.per_class_train,
    per_class_dev: int = SuiteConfig.per_class_dev,
    per_class_test: int = SuiteConfig.per_class_test,
    seed: int = SuiteConfig.seed,
    max_chars: int = SuiteConfig.max_chars,
    rebuild: bool = False,
    progress=no_progress,
) -> dict[str, Task]:
    """The five offline tasks, {name: Task} in canonical order, from cache or freshly built.

    ``data_dir`` (default ``default_data_dir()``) holds one folder per setting; a missing
    folder is built and written atomically. ``rebuild=True`` builds again and checks that the
    result equals the cached copy (a ValueError says so if the sources changed).
    ``progress(iterable, total, desc)`` shows a build's progress (see ``no_progress``).
    """
    config = SuiteConfig(per_class_train, per_class_dev, per_class_test, seed, max_chars)
    folder = Path(data_dir if data_dir is not None else default_data_dir()) / config.cache_key
    return load_or_build(folder, lambda: sample_offline_suite(config, progress),
                         dataclasses.asdict(config) | {"suite_version": SUITE_VERSION}, rebuild)


def offline_sequence(order: int = 1, data_dir: str | Path | None = None, **settings) -> TaskSequence:
    """The offline suite as a ``TaskSequence`` in fixed order 1, 2 or 3 (``OFFLINE_ORDERS``).

    ``settings`` are ``build_offline_suite``'s (per_class_train, ..., seed, max_chars).
    """
    if order not in OFFLINE_ORDERS:
        raise ValueError(f"offline order must be one of {sorted(OFFLINE_ORDERS)}, got {order!r}")
    tasks = build_offline_suite(data_dir, **settings)  # settings may include progress=
    return TaskSequence(f"offline-order{order}", tuple(tasks[name] for name in OFFLINE_ORDERS[order]))
