"""Offline sequences shaped like the paper's benchmarks: ``standard4`` and ``long``.

The paper (Nayak et al. 2025) evaluates on the standard CL benchmark, DBpedia (14 classes) /
Amazon (polarity) / Yahoo (10 topics) / AG News (4 topics) in three orders, and on a 15-task
long benchmark. None of those datasets ships offline; each has a stand-in read from an
installed asset package (``_sources``):

=================  ==========================  ===========================================
task               stand-in for                source (answers)
=================  ==========================  ===========================================
mercari_women      DBpedia (14 classes)        Mercari listings of L1 "Women", L2 sub-category
                                               (14 answers: activewear, tops, shoes, ...)
rotten_tomatoes    Amazon (polarity)           Rotten Tomatoes snippets (negative, positive)
mercari_category   Yahoo Answers (10 topics)   Mercari L1 category (10 answers: women, ...)
bbc_news           AG News (4 topics)          BBC News (business, ..., tech: 5 topics)
=================  ==========================  ===========================================

``long`` adds the offline suite's sentiment tasks (``airline``, ``apple``, ``coachella``,
``drug_review``: negative / neutral / positive), ``health_outlet`` (which of 16 outlets
posted a health tweet) and ``news_outlet`` (which of 9 outlets published an early-2017
article): 10 tasks. There is no NLI or QA task offline.

Tasks are built in listing order and no text is used twice: each task draws from its pool
minus every text (case-folded) an earlier task took. So ``mercari_category`` never uses a
listing that ``mercari_women`` uses (its Women class draws from the other Women listings;
growing ``mercari_women``'s sizes can therefore swap a few of them), and the first four
tasks of ``long`` equal ``standard4``'s under the same settings. Sampling and caching follow the offline suite (``stratified_split``,
``load_or_build``); the cache folder is ``<data_dir>/<suite>-v<version>-seed..-chars../``.
"""

from __future__ import annotations

import dataclasses
import functools
from pathlib import Path

from asvd_jax.data import _sources
from asvd_jax.data._cache import default_data_dir, load_or_build
from asvd_jax.data._suite import OFFLINE_TASKS, SuiteConfig, _bbc_pool, _drug_pool, _tweet_pools
from asvd_jax.data._tasks import SPLITS, Task, TaskSequence, no_progress, stratified_split

PAPER_VERSION = 1
"""Bumped whenever the building rules change, so old caches are not reused."""


@dataclasses.dataclass(frozen=True)
class PaperSuiteConfig(SuiteConfig):
    """How ``standard4`` and ``long`` are sampled. Defaults fit a CPU run."""

    per_class_train: int = 16
    """Training examples per class (14 x 16 = 224 for mercari_women)."""
    per_class_dev: int = 8
    """Validation examples per class."""
    per_class_test: int = 16
    """Test examples per class."""
    seed: int = 0
    """Seed of the sha256 ranking that selects and orders examples."""
    max_chars: int = 200
    """Texts are cut at the last space before this many characters (about 50 tokens): with
    the 14 options of mercari_women (a 186-character head) a prompt stays under ~128 tokens."""
    suite: str = "standard4"
    """Which sequence: ``standard4`` or ``long`` (``PAPER_SUITES``)."""

    def __post_init__(self):
        super().__post_init__()
        _check_suite(self.suite)

    @property
    def cache_key(self) -> str:
        return (f"{self.suite}-v{PAPER_VERSION}-seed{self.seed}-train{self.per_class_train}"
                f"-dev{self.per_class_dev}-test{self.per_class_test}-chars{self.max_chars}")


def _same(*words: str) -> dict[str, str]:
    return {w: w for w in words}


# name -> (pool, instruction, {source label: answer word}); the answers are the task's
# options, in this order. Listing order is build order (standard4's four first).
PAPER_TASKS: dict[str, tuple[str, str, dict[str, str]]] = {
    "mercari_women": ("mercari_women", "Which kind of women's item is this product listing?", {
        "Athletic Apparel": "activewear", "Tops & Blouses": "tops", "Shoes": "shoes",
        "Jewelry": "jewelry", "Women's Handbags": "handbags", "Dresses": "dresses",
        "Women's Accessories": "accessories", "Sweaters": "sweaters", "Underwear": "underwear",
        "Jeans": "jeans", "Swimwear": "swimwear", "Coats & Jackets": "coats", "Skirts": "skirts",
        "Pants": "pants"}),
    "rotten_tomatoes": ("rotten_tomatoes", "What is the sentiment of this movie review?",
                        {"rotten": "negative", "fresh": "positive"}),
    "mercari_category": ("mercari_category",
                         "Which category of an online marketplace does this product listing belong to?", {
        "Women": "women", "Beauty": "beauty", "Kids": "kids", "Electronics": "electronics",
        "Men": "men", "Home": "home", "Vintage & Collectibles": "vintage", "Other": "other",
        "Handmade": "handmade", "Sports & Outdoors": "outdoors"}),
    "bbc_news": ("bbc_news", OFFLINE_TASKS["bbc_news"][0], _same(*OFFLINE_TASKS["bbc_news"][1])),
    **{name: (name, OFFLINE_TASKS[name][0], _same(*_sources.SENTIMENTS))
       for name in ("airline", "apple", "coachella", "drug_review")},
    "health_outlet": ("health_tweets", "Which news outlet posted this health tweet?", {
        "goodhealth": "good health", "nytimeshealth": "nytimes", "nprhealth": "npr",
        "reuters_health": "reuters", "latimeshealth": "latimes", "cnnhealth": "cnn",
        "bbchealth": "bbc", "cbchealth": "cbc", "NBChealth": "nbc", "KaiserHealthNews": "kaiser",
        "wsjhealth": "wsj", "msnhealthnews": "msn", "gdnhealthcare": "guardian",
        "everydayhealth": "everyday health", "foxnewshealth": "fox news", "usnewshealth": "us news"}),
    "news_outlet": ("news_articles", "Which news outlet published this article?", {
        "aljazeera.com": "al jazeera", "tass.com": "tass", "abcnews.go.com": "abc news",
        "rte.ie": "rte", "dw.com": "dw", "huffingtonpost.com": "huffpost",
        "europe.chinadaily.com.cn": "china daily", "bbc.co.uk": "bbc", "cnn.com": "cnn"}),
}
"""The Mercari "Other" sub-category of Women (a catch-all), "Maternity" and "Suits & Blazers"
(too few listings) are left out of ``mercari_women``. Answer words shared inside ``long``:
negative / positive (rotten_tomatoes and the four sentiment tasks), neutral (the four
sentiment tasks), bbc and cnn (health_outlet and news_outlet)."""

PAPER_SUITES: dict[str, tuple[str, ...]] = {
    "standard4": ("mercari_women", "rotten_tomatoes", "mercari_category", "bbc_news"),
    "long": tuple(PAPER_TASKS),
}
"""suite -> its tasks in build order."""

PAPER_ORDERS: dict[str, dict[int, tuple[str, ...]]] = {
    "standard4": {
        1: ("mercari_women", "rotten_tomatoes", "mercari_category", "bbc_news"),
        2: ("mercari_women", "rotten_tomatoes", "bbc_news", "mercari_category"),
        3: ("mercari_category", "rotten_tomatoes", "bbc_news", "mercari_women"),
    },
    "long": {
        1: ("health_outlet", "news_outlet", "coachella", "drug_review", "airline", "rotten_tomatoes",
            "apple", "mercari_women", "bbc_news", "mercari_category"),
    },
}
"""standard4: the paper's orders 1-3 of dbpedia / amazon / yahoo / agnews through the
stand-ins. long order 1 follows the paper's order 4 (mnli cb wic copa qqp boolqa rte imdb
yelp amazon sst-2 dbpedia agnews multirc yahoo): its NLI / QA places go to the tasks without
a counterpart (health_outlet, news_outlet, coachella), then the sentiment block
(imdb yelp amazon sst-2 -> drug_review airline rotten_tomatoes apple), then dbpedia agnews
yahoo -> mercari_women bbc_news mercari_category."""

# Reading the sources is most of a build; pools are never mutated, so they are cached per source.
_mercari_pools = functools.lru_cache(maxsize=4)(_sources.mercari_pools)
_rotten_tomatoes_pool = functools.lru_cache(maxsize=4)(_sources.rotten_tomatoes_pool)
_health_tweet_pool = functools.lru_cache(maxsize=4)(_sources.health_tweet_pool)
_news_article_pool = functools.lru_cache(maxsize=4)(_sources.news_article_pool)

_READERS = {  # pool name -> (reader, which part of its result)
    "mercari_women": (_mercari_pools, "women"),
    "mercari_category": (_mercari_pools, "category"),
    "rotten_tomatoes": (_rotten_tomatoes_pool, None),
    "bbc_news": (_bbc_pool, None),
    "airline": (_tweet_pools, "airline"),
    "apple": (_tweet_pools, "apple"),
    "coachella": (_tweet_pools, "coachella"),
    "drug_review": (_drug_pool, None),
    "health_tweets": (_health_tweet_pool, None),
    "news_articles": (_news_article_pool, None),
}


def _check_suite(suite: str) -> None:
    if suite not in PAPER_SUITES:
        raise ValueError(f"paper-shaped suite must be one of {sorted(PAPER_SUITES)}, got {suite!r}")


def paper_pools(suite: str, max_chars: int, progress=no_progress) -> dict[str, dict[str, list[str]]]:
    """{pool name: {source label: texts}} of the sources ``suite`` reads (cached per process)."""
    _check_suite(suite)
    names = list(dict.fromkeys(PAPER_TASKS[t][0] for t in PAPER_SUITES[suite]))
    readers = list(dict.fromkeys(_READERS[n][0] for n in names))
    read = {fn: fn(max_chars) for fn in progress(readers, len(readers), f"reading the {suite} sources")}
    return {n: read[_READERS[n][0]] if _READERS[n][1] is None else read[_READERS[n][0]][_READERS[n][1]]
            for n in names}


def sample_paper_suite(config: PaperSuiteConfig = PaperSuiteConfig(), progress=no_progress) -> dict[str, Task]:
    """Build ``config.suite``'s tasks from the asset packages (no cache), {name: Task} in
    build order. Each task draws from its pool minus the texts earlier tasks took (compared
    case-folded).
    """
    suite = config.suite
    pools = paper_pools(suite, config.max_chars, progress)
    tasks: dict[str, Task] = {}
    used: set[str] = set()
    for name in PAPER_SUITES[suite]:
        source, instruction, mapping = PAPER_TASKS[name]
        missing = [label for label in mapping if not pools[source].get(label)]
        if missing:
            raise ValueError(f"{suite} task {name!r}: no examples for source class(es) {missing}")
        pool = {answer: [t for t in pools[source][label] if t.casefold() not in used]
                for label, answer in mapping.items()}
        splits = stratified_split(pool, config.sizes, config.seed, salt=name, what=f"{suite} task {name!r}")
        tasks[name] = Task(name, instruction, tuple(mapping.values()), **splits)
        used.update(ex.text.casefold() for split in SPLITS for ex in splits[split])
    return tasks


def build_paper_suite(suite: str, data_dir: str | Path | None = None, rebuild: bool = False,
                      progress=no_progress, **settings) -> dict[str, Task]:
    """``suite``'s tasks from cache or freshly built (``settings``: ``PaperSuiteConfig``'s).

    Same caching rules as ``build_offline_suite``: one folder per setting, written
    atomically; ``rebuild=True`` checks a fresh build against the cached copy.
    """
    config = PaperSuiteConfig(suite=suite, **settings)
    folder = Path(data_dir if data_dir is not None else default_data_dir()) / config.cache_key
    record = dataclasses.asdict(config) | {"paper_version": PAPER_VERSION}
    return load_or_build(folder, lambda: sample_paper_suite(config, progress), record, rebuild)


def paper_sequence(suite: str, order: int = 1, data_dir: str | Path | None = None,
                   **settings) -> TaskSequence:
    """``standard4`` (orders 1-3) or ``long`` (order 1) as a ``TaskSequence``.

    ``settings`` are ``build_paper_suite``'s (per_class_train, ..., seed, max_chars, progress).
    """
    _check_suite(suite)
    orders = PAPER_ORDERS[suite]
    if order not in orders:
        raise ValueError(f"{suite} order must be one of {sorted(orders)}, got {order!r}")
    tasks = build_paper_suite(suite, data_dir, **settings)
    return TaskSequence(f"{suite}-order{order}", tuple(tasks[name] for name in orders[order]))
