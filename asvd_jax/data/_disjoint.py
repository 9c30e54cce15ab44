"""The disjoint-label offline sequence: five tasks, no label word shared between two tasks.

In the standard suite four tasks share negative / neutral / positive, so a later sentiment task
re-trains an earlier one instead of overwriting it. Here every task has its own answer words,
so training a task pulls the model's answers away from every earlier task's (where forgetting
shows). Built from the same asset packages and cleaning rules as the standard suite
(``_sources``), class-balanced with ``stratified_split``:

=================  =================================================  ===========================
task               source, relabelling                                 answers
=================  =================================================  ===========================
topic              BBC News, the five folders                          business entertainment
                                                                       politics sport tech
airline_feedback   airline tweets: negative/neutral/positive ->        complaint neutral praise
drug_rating        drug reviews, rating bins 1-4 / 5-6 / 7-10 ->       bad okay good
apple_tone         Apple tweets: negative/neutral/positive ->          critical factual enthusiastic
text_source        what kind of text: BBC articles and drug reviews    news review tweet
                   not used by ``topic`` / ``drug_rating``, Coachella
                   tweets (no other task uses that domain)
=================  =================================================  ===========================

``text_source`` is built last, from what the other tasks left, so no text appears in two tasks.
The drug reviews' "okay" class has 90 distinct texts, which bounds ``per_class_train + dev +
test`` at 90. Cached like the standard suite (``<data_dir>/offline_disjoint-v1-.../``).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from asvd_jax.data._cache import default_data_dir, load_or_build
from asvd_jax.data._suite import SuiteConfig, _pools
from asvd_jax.data._tasks import SPLITS, Task, TaskSequence, no_progress, stratified_split

DISJOINT_VERSION = 1
"""Bumped whenever the building rules change, so old caches are not reused."""

DISJOINT_TASKS: dict[str, tuple[str, str, dict[str, str]]] = {
    "topic": ("bbc_news", "What is the topic of this news article?",
              {"business": "business", "entertainment": "entertainment", "politics": "politics",
               "sport": "sport", "tech": "tech"}),
    "airline_feedback": ("airline", "What kind of feedback is this tweet to an airline?",
                         {"negative": "complaint", "neutral": "neutral", "positive": "praise"}),
    "drug_rating": ("drug_review", "How did the patient rate this medicine?",
                    {"negative": "bad", "neutral": "okay", "positive": "good"}),
    "apple_tone": ("apple", "What is the tone of this tweet about Apple products?",
                   {"negative": "critical", "neutral": "factual", "positive": "enthusiastic"}),
}
"""name -> (source pool, instruction, {source label: answer word}); ``text_source`` follows."""

TEXT_SOURCE = ("text_source", "What kind of text is this?", ("news", "review", "tweet"))

DISJOINT_ORDERS: dict[int, tuple[str, ...]] = {
    1: ("topic", "airline_feedback", "drug_rating", "apple_tone", "text_source"),
    2: ("text_source", "apple_tone", "drug_rating", "airline_feedback", "topic"),
    3: ("apple_tone", "topic", "text_source", "drug_rating", "airline_feedback"),
}
"""1: listing order; 2: its reverse; 3: no two tweet tasks in a row."""


def cache_key(config: SuiteConfig) -> str:
    return (f"offline_disjoint-v{DISJOINT_VERSION}-seed{config.seed}-train{config.per_class_train}"
            f"-dev{config.per_class_dev}-test{config.per_class_test}-chars{config.max_chars}")


def sample_disjoint_suite(config: SuiteConfig = SuiteConfig(), progress=no_progress) -> dict[str, Task]:
    """Build the five tasks from the asset packages (no cache), in order-1 listing."""
    pools = _pools(config.max_chars, progress)
    tasks: dict[str, Task] = {}
    used: dict[str, set[str]] = {}
    for name, (source, instruction, mapping) in DISJOINT_TASKS.items():
        pool = {mapping[label]: texts for label, texts in pools[source].items() if label in mapping}
        missing = [a for a in mapping.values() if not pool.get(a)]
        if missing:
            raise ValueError(f"offline_disjoint task {name!r}: no examples for class(es) {missing}")
        splits = stratified_split(pool, config.sizes, config.seed, salt=name,
                                  what=f"offline_disjoint task {name!r}")
        tasks[name] = Task(name, instruction, tuple(mapping.values()), **splits)
        used.setdefault(source, set()).update(ex.text for s in SPLITS for ex in splits[s])
    name, instruction, options = TEXT_SOURCE

    def rest(source: str) -> list[str]:
        return sorted(t for texts in pools[source].values() for t in texts if t not in used.get(source, ()))

    pool = {"news": rest("bbc_news"), "review": rest("drug_review"), "tweet": rest("coachella")}
    splits = stratified_split(pool, config.sizes, config.seed, salt=name, what=f"offline_disjoint task {name!r}")
    tasks[name] = Task(name, instruction, options, **splits)
    return tasks


def build_disjoint_suite(data_dir: str | Path | None = None, rebuild: bool = False,
                         progress=no_progress, **settings) -> dict[str, Task]:
    """The five tasks from cache or freshly built (``settings``: ``SuiteConfig``'s fields).

    Same caching rules as ``build_offline_suite``: one folder per setting, written
    atomically; ``rebuild=True`` checks a fresh build against the cached copy.
    """
    config = SuiteConfig(**settings)
    folder = Path(data_dir if data_dir is not None else default_data_dir()) / cache_key(config)
    return load_or_build(folder, lambda: sample_disjoint_suite(config, progress),
                         dataclasses.asdict(config) | {"disjoint_version": DISJOINT_VERSION}, rebuild)


def disjoint_sequence(order: int = 1, data_dir: str | Path | None = None, **settings) -> TaskSequence:
    """The disjoint-label suite as a ``TaskSequence`` in fixed order 1, 2 or 3."""
    if order not in DISJOINT_ORDERS:
        raise ValueError(f"offline_disjoint order must be one of {sorted(DISJOINT_ORDERS)}, got {order!r}")
    tasks = build_disjoint_suite(data_dir, **settings)
    return TaskSequence(f"offline_disjoint-order{order}", tuple(tasks[n] for n in DISJOINT_ORDERS[order]))
