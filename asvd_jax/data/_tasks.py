"""Tasks and task sequences: the objects every loader returns and the runner consumes.

A task is a labelled text set with three disjoint splits plus the instruction and the answer
options its prompts show. A classification task has ``options`` and every label is one of them;
a generation task (TRACE) has no options and its labels are free-form answers.

``suite_fingerprint`` is the sha256 of a canonical JSON rendering (sorted task names, fields in
a fixed order, UTF-8, no whitespace), so equal data gives equal hashes on any machine.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from typing import Iterable, Mapping, Union

SPLITS = ("train", "dev", "test")


class DataFileNotFound(FileNotFoundError, ValueError):
    """A data or config file that does not exist; also a ValueError, like every bad input here."""


@dataclasses.dataclass(frozen=True)
class Example:
    """One labelled text. ``label`` is the answer word the model must produce."""

    text: str
    """The input text (no instruction, no options)."""
    label: str
    """The label word, e.g. ``positive``; one of the task's options for classification."""

    def __post_init__(self):
        if not isinstance(self.text, str) or not isinstance(self.label, str):
            raise TypeError(
                f"Example text and label must be str, got {type(self.text).__name__} and "
                f"{type(self.label).__name__}"
            )


@dataclasses.dataclass(frozen=True)
class Task:
    """A task: instruction, answer options and train/dev/test examples."""

    name: str
    """Short identifier, unique within a sequence (used in file names and result tables)."""
    instruction: str
    """What the model is asked, e.g. "What is the sentiment of this tweet?"."""
    options: tuple[str, ...]
    """The label words shown in the prompt; empty for generation tasks."""
    train: tuple[Example, ...]
    """Training examples."""
    dev: tuple[Example, ...]
    """Validation examples (may be empty when a source has no dev split)."""
    test: tuple[Example, ...]
    """Test examples, the ones the accuracy matrix is computed on."""

    def __post_init__(self):
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"task name must be a non-empty str, got {self.name!r}")
        object.__setattr__(self, "options", tuple(self.options))
        if len(set(self.options)) != len(self.options):
            raise ValueError(f"task {self.name!r}: options repeat: {list(self.options)}")
        for split in SPLITS:
            examples = tuple(getattr(self, split))
            object.__setattr__(self, split, examples)
            for i, ex in enumerate(examples):
                if not isinstance(ex, Example):
                    raise TypeError(f"task {self.name!r}: {split}[{i}] is {type(ex).__name__}, not Example")
                if self.options and ex.label not in self.options:
                    raise ValueError(
                        f"task {self.name!r}: {split}[{i}] has label {ex.label!r}, "
                        f"not among the options {list(self.options)}"
                    )

    def split(self, name: str) -> tuple[Example, ...]:
        """The examples of split ``name`` (train, dev or test)."""
        if name not in SPLITS:
            raise ValueError(f"unknown split {name!r}; expected one of {SPLITS}")
        return getattr(self, name)

    def class_counts(self, split: str) -> dict[str, int]:
        """Examples per label in ``split``, options first (in their order), then other labels."""
        counts = {option: 0 for option in self.options}
        for ex in self.split(split):
            counts[ex.label] = counts.get(ex.label, 0) + 1
        return counts


@dataclasses.dataclass(frozen=True)
class TaskSequence:
    """Tasks in the order they are learned."""

    name: str
    """Identifier of the sequence, e.g. ``offline-order1``."""
    tasks: tuple[Task, ...]
    """The tasks, first learned first."""

    def __post_init__(self):
        object.__setattr__(self, "tasks", tuple(self.tasks))
        if not self.tasks:
            raise ValueError(f"sequence {self.name!r} has no tasks")
        names = [t.name for t in self.tasks]
        if len(set(names)) != len(names):
            raise ValueError(f"sequence {self.name!r}: task names repeat: {names}")

    @property
    def task_names(self) -> tuple[str, ...]:
        return tuple(t.name for t in self.tasks)

    def __len__(self) -> int:
        return len(self.tasks)

    def __iter__(self):
        return iter(self.tasks)

    def __getitem__(self, index: int) -> Task:
        return self.tasks[index]


def task_to_json(task: Task) -> dict:
    """A plain-JSON rendering of ``task`` (the cache format and the fingerprint's input)."""
    return {
        "name": task.name,
        "instruction": task.instruction,
        "options": list(task.options),
        **{split: [[ex.text, ex.label] for ex in task.split(split)] for split in SPLITS},
    }


TasksLike = Union[Mapping[str, Task], TaskSequence, Iterable[Task]]


def suite_fingerprint(tasks: TasksLike) -> str:
    """sha256 hex digest of the tasks' names, instructions, options and examples.

    Order-independent over tasks (they are sorted by name) and dependent on everything else,
    including the order of examples inside a split, since batching follows that order.
    """
    if isinstance(tasks, Mapping):
        task_list = list(tasks.values())
    else:
        task_list = list(tasks)
    rendered = sorted((task_to_json(t) for t in task_list), key=lambda d: d["name"])
    blob = json.dumps(rendered, ensure_ascii=False, separators=(",", ":"), sort_keys=True)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


def hash_order_key(seed: int, *parts: str) -> str:
    """A machine-independent pseudo-random sort key: sha256 of the seed and ``parts``.

    Sampling sorts candidates by this key instead of drawing from a PRNG, so the same seed
    selects the same examples whatever the numpy version or platform.
    """
    h = hashlib.sha256(str(int(seed)).encode("utf-8"))
    for part in parts:
        h.update(b"\x00")
        h.update(part.encode("utf-8"))
    return h.hexdigest()


def stratified_split(
    pool: Mapping[str, list[str]],
    sizes: Mapping[str, int],
    seed: int,
    salt: str,
    what: str,
) -> dict[str, tuple[Example, ...]]:
    """Class-balanced disjoint splits: ``sizes[split]`` texts of every class per split.

    ``pool`` maps label -> candidate texts (already deduplicated). Each class is sorted by
    ``hash_order_key(seed, salt, text)``; test takes the first texts, then dev, then train, so
    changing the train size never changes the test set. Each split is then ordered by the same
    kind of key, which interleaves the classes. ``what`` names the source in errors.
    """
    need = sum(sizes.get(s, 0) for s in SPLITS)
    out: dict[str, list[Example]] = {s: [] for s in SPLITS}
    for label, texts in pool.items():
        if len(texts) < need:
            raise ValueError(
                f"{what}: class {label!r} has {len(texts)} distinct examples, {need} are needed "
                f"({', '.join(f'{s} {sizes.get(s, 0)}' for s in SPLITS)} per class)"
            )
        ranked = sorted(texts, key=lambda t: hash_order_key(seed, salt, label, t))
        start = 0
        for split in ("test", "dev", "train"):
            n = sizes.get(split, 0)
            out[split].extend(Example(t, label) for t in ranked[start:start + n])
            start += n
    return {
        split: tuple(sorted(exs, key=lambda e: hash_order_key(seed, salt, split, e.label, e.text)))
        for split, exs in out.items()
    }


def no_progress(iterable, total=None, desc=""):
    """The default ``progress`` of the loaders: ``progress(iterable, total, desc)`` yields the
    items of ``iterable`` (a progress bar such as the runner's wraps them and shows an ETA)."""
    return iterable


def describe(sequence: TaskSequence) -> str:
    """A plain-text table: per task, split sizes and the class counts of each split."""
    lines = [f"sequence {sequence.name}: {len(sequence)} tasks, fingerprint {suite_fingerprint(sequence)[:16]}"]
    for i, task in enumerate(sequence, start=1):
        sizes = ", ".join(f"{s} {len(task.split(s))}" for s in SPLITS)
        lines.append(f"{i}. {task.name} ({len(task.options) or 'free-form'} classes): {sizes}")
        if task.options:
            for split in SPLITS:
                counts = " ".join(f"{k}={v}" for k, v in task.class_counts(split).items())
                lines.append(f"     {split:5s} {counts}")
    return "\n".join(lines)
