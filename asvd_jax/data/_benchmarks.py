"""Loaders for the paper's benchmarks in their published folder layouts (local copies).

O-LoRA ``CL_Benchmark`` layout (one folder per task, grouped by task type)::

    <root>/TC/agnews/{train,dev,test}.json + labels.json
    <root>/SC/{amazon,yelp,IMDB,SST-2}/...   <root>/NLI/{MNLI,CB,RTE}/...
    <root>/{QQP,WiC,MultiRC,COPA,BoolQA}/<same name>/...

Each split file is a JSON list of ``{"sentence": str, "label": str}``; ``labels.json`` lists
the label words (the prompt's options). ``dev.json`` may be absent (the task then has no dev
examples). A task folder directly under ``root`` (``<root>/agnews/``) is accepted too.

TRACE layout: ``<root>/<task>/{train,eval,test}.json``, each a JSON list of
``{"prompt": str, "answer": str}``; prompts already carry their instruction, so the tasks are
generation tasks (no options) whose prompts are used verbatim.

Files are read with the ``datasets`` library's JSON builder (imported only here), which also
caches them as Arrow under ``cache_dir``.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Mapping, Sequence

from asvd_jax.data._tasks import (
    DataFileNotFound, Example, Task, TaskSequence, hash_order_key, no_progress,
)

OLORA_GROUPS = {
    "TC": ("agnews", "dbpedia", "yahoo"),
    "SC": ("amazon", "yelp", "IMDB", "SST-2"),
    "NLI": ("MNLI", "CB", "RTE"),
    "QQP": ("QQP",), "WiC": ("WiC",), "MultiRC": ("MultiRC",), "COPA": ("COPA",), "BoolQA": ("BoolQA",),
}
OLORA_TASK_GROUP = {task: group for group, tasks in OLORA_GROUPS.items() for task in tasks}

OLORA_INSTRUCTIONS = {
    "TC": "What is the topic of the following text? Choose one of the options.",
    "SC": "What is the sentiment of the following review? Choose one of the options.",
    "NLI": "What is the logical relation between sentence 1 and sentence 2? Choose one of the options.",
    "QQP": "Do the first and the second question ask the same thing? Choose one of the options.",
    "WiC": "Is the word used with the same meaning in both sentences? Choose one of the options.",
    "MultiRC": "Given the passage and the question, is the candidate answer correct? Choose one of the options.",
    "COPA": "Which alternative is the more plausible cause or effect of the premise? Choose one of the options.",
    "BoolQA": "According to the passage, is the statement true or false? Choose one of the options.",
}
"""The project's own wording of one instruction per task type, in the benchmark's style."""

OLORA_ORDERS: dict[int, tuple[str, ...]] = {
    1: ("dbpedia", "amazon", "yahoo", "agnews"),
    2: ("dbpedia", "amazon", "agnews", "yahoo"),
    3: ("yahoo", "amazon", "agnews", "dbpedia"),
    4: ("MNLI", "CB", "WiC", "COPA", "QQP", "BoolQA", "RTE", "IMDB", "yelp", "amazon", "SST-2",
        "dbpedia", "agnews", "MultiRC", "yahoo"),
    5: ("MultiRC", "BoolQA", "WiC", "MNLI", "CB", "COPA", "QQP", "RTE", "IMDB", "SST-2", "dbpedia",
        "agnews", "yelp", "amazon", "yahoo"),
    6: ("yelp", "amazon", "MNLI", "CB", "COPA", "QQP", "RTE", "IMDB", "SST-2", "dbpedia", "agnews",
        "yahoo", "MultiRC", "BoolQA", "WiC"),
}
"""Orders 1-3: the standard 4-task benchmark; 4-6: the long 15-task benchmark."""

TRACE_ORDER = ("C-STANCE", "FOMC", "MeetingBank", "Py150", "ScienceQA", "NumGLUE-cm", "NumGLUE-ds", "20Minuten")


@contextlib.contextmanager
def _quiet_datasets():
    import datasets

    was_disabled = datasets.are_progress_bars_disabled()
    datasets.disable_progress_bars()
    try:
        yield datasets
    finally:
        if not was_disabled:
            datasets.enable_progress_bars()


def read_json_records(path: Path, columns: Sequence[str], cache_dir: str | None = None) -> list[dict]:
    """Records of a JSON list (or JSON-lines) file through ``datasets``; checks ``columns``.

    Errors name the file; a record whose field is not a string names its index in the list.
    """
    if not path.is_file():
        raise DataFileNotFound(f"{path}: file not found")
    with _quiet_datasets() as datasets:
        try:
            ds = datasets.load_dataset("json", data_files=str(path), split="train", cache_dir=cache_dir)
        except Exception as err:  # the builder raises several types for malformed files
            raise ValueError(f"{path}: not a readable JSON list of records ({type(err).__name__}: {err})") from None
    missing = [c for c in columns if c not in ds.column_names]
    if missing:
        raise ValueError(f"{path}: missing field(s) {missing}; the records have {ds.column_names}")
    records = ds.select_columns(list(columns)).to_list()
    for i, rec in enumerate(records):
        for c in columns:
            value = rec[c]
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                rec[c] = str(value)
            elif not isinstance(value, str):
                raise ValueError(f"{path}: record {i} field {c!r} is {value!r}, not a string")
    return records


def olora_task_dir(root: Path, task: str) -> Path:
    group = OLORA_TASK_GROUP.get(task)
    if group is None:
        raise ValueError(f"unknown O-LoRA task {task!r}; known: {sorted(OLORA_TASK_GROUP)}")
    for candidate in (root / group / task, root / task):
        if candidate.is_dir():
            return candidate
    raise DataFileNotFound(f"{root / group / task}: O-LoRA task folder not found (nor {root / task})")


def subsample_per_class(examples, n: int | None, seed: int, salt: str) -> tuple[Example, ...]:
    """At most ``n`` examples of every label, chosen and ordered by sha256 rank (all if None)."""
    if n is None:
        return tuple(examples)
    if n < 0:
        raise ValueError(f"max_per_class must be >= 0, got {n}")
    ranked = sorted(examples, key=lambda e: hash_order_key(seed, salt, e.label, e.text))
    taken: dict[str, int] = {}
    kept = []
    for ex in ranked:
        if taken.get(ex.label, 0) < n:
            taken[ex.label] = taken.get(ex.label, 0) + 1
            kept.append(ex)
    return tuple(kept)


def load_olora_task(
    root: str | Path,
    task: str,
    cache_dir: str | None = None,
    max_per_class: Mapping[str, int | None] | None = None,
    seed: int = 0,
) -> Task:
    """One task of the O-LoRA layout (see module docstring).

    ``max_per_class`` ({"train": 100, "test": 50}, say) keeps at most that many examples of
    each label per split, picked by a sha256 rank with ``seed`` (for CPU-sized runs of the
    real benchmark); splits not named are kept whole.
    """
    limits = dict(max_per_class or {})
    unknown = set(limits) - {"train", "dev", "test"}
    if unknown:
        raise ValueError(f"max_per_class: unknown split(s) {sorted(unknown)}; use train, dev, test")
    folder = olora_task_dir(Path(root), task)
    labels_path = folder / "labels.json"
    if not labels_path.is_file():
        raise DataFileNotFound(f"{labels_path}: labels file not found")
    try:
        options = json.loads(labels_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ValueError(f"{labels_path}: not valid JSON ({err.msg}, line {err.lineno})") from None
    if not isinstance(options, list) or not options or not all(isinstance(o, str) for o in options):
        raise ValueError(f"{labels_path}: expected a non-empty JSON list of label strings")
    splits = {}
    for split in ("train", "dev", "test"):
        path = folder / f"{split}.json"
        if split == "dev" and not path.exists():
            splits[split] = ()
            continue
        records = read_json_records(path, ("sentence", "label"), cache_dir)
        for i, rec in enumerate(records):
            if rec["label"] not in options:
                raise ValueError(f"{path}: record {i} has label {rec['label']!r}, not in {labels_path} {options}")
        examples = [Example(r["sentence"], r["label"]) for r in records]
        splits[split] = subsample_per_class(examples, limits.get(split), seed, f"{task}/{split}")
    present = {ex.label for ex in splits["train"]}
    empty = [o for o in options if o not in present]
    if empty:
        raise ValueError(f"{folder / 'train.json'}: no examples of class(es) {empty} listed in {labels_path}")
    return Task(task, OLORA_INSTRUCTIONS[OLORA_TASK_GROUP[task]], tuple(options), **splits)


def load_olora_sequence(
    root: str | Path,
    order: int,
    cache_dir: str | None = None,
    tasks: Sequence[str] | None = None,
    max_per_class: Mapping[str, int | None] | None = None,
    seed: int = 0,
    progress=no_progress,
) -> TaskSequence:
    """O-LoRA benchmark tasks in published order 1-6 (``OLORA_ORDERS``), from a local copy.

    ``tasks`` overrides the order with any list of O-LoRA task names; ``max_per_class`` and
    ``seed`` subsample every task (see ``load_olora_task``). ``progress(iterable, total, desc)``
    wraps the per-task loads (a progress bar; default none).
    """
    if tasks is None:
        if order not in OLORA_ORDERS:
            raise ValueError(f"O-LoRA order must be one of {sorted(OLORA_ORDERS)}, got {order!r}")
        tasks = OLORA_ORDERS[order]
    loaded = tuple(load_olora_task(root, name, cache_dir, max_per_class, seed)
                   for name in progress(tasks, len(tasks), "loading O-LoRA tasks"))
    return TaskSequence(f"olora-order{order}", loaded)


def load_trace_task(root: str | Path, task: str, cache_dir: str | None = None) -> Task:
    """One TRACE task: ``<root>/<task>/{train,eval,test}.json`` with prompt/answer records."""
    folder = Path(root) / task
    if not folder.is_dir():
        raise DataFileNotFound(f"{folder}: TRACE task folder not found")
    splits = {}
    for split, file in (("train", "train.json"), ("dev", "eval.json"), ("test", "test.json")):
        records = read_json_records(folder / file, ("prompt", "answer"), cache_dir)
        splits[split] = tuple(Example(r["prompt"], r["answer"]) for r in records)
    if not splits["train"]:
        raise ValueError(f"{folder / 'train.json'}: no records")
    return Task(task, "", (), **splits)


def load_trace_sequence(
    root: str | Path, cache_dir: str | None = None, tasks: Sequence[str] = TRACE_ORDER,
    progress=no_progress,
) -> TaskSequence:
    """The TRACE benchmark's eight tasks in its published order, from a local copy."""
    return TaskSequence("trace", tuple(load_trace_task(root, name, cache_dir)
                                       for name in progress(tasks, len(tasks), "loading TRACE tasks")))
