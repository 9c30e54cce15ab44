"""Task sequences and deterministic batch streams for the runner.

Every stream is a pure function of (seed, task index, epoch), so a resumed run replays the
exact batches of an uninterrupted one: the data position is just the micro-batch count.
"""

from __future__ import annotations

import hashlib
import math
from typing import Any, Iterator, Sequence

import numpy as np

from asvd_jax.cl._config import DataConfig, TrainConfig


def derive_seed(seed: int, *parts: Any) -> int:
    """A 32-bit seed from ``seed`` and labels (stable across machines and Python runs)."""
    h = hashlib.sha256(repr((seed, *parts)).encode()).digest()
    return int.from_bytes(h[:4], "little")


def _subset(examples: Sequence[Any], cap: int, seed: int, what: Any, stratify: bool = False) -> tuple:
    """At most ``cap`` examples, in their original order, chosen by a seeded draw.

    With ``stratify`` (classification tasks) the draw is class-balanced: classes get
    ``cap // n_classes`` examples each (the remainder goes to classes in a seeded order, and a
    class that runs short leaves its share to the others). A plain random draw of 24 test
    examples over 5 classes can give one class 1 example and another 9, which makes small
    evaluations noisy and lets a model that drifts to one label look better or worse than it is.
    """
    if cap <= 0 or cap >= len(examples):
        return tuple(examples)
    rng = np.random.default_rng(derive_seed(seed, what))
    if not stratify:
        idx = np.sort(rng.permutation(len(examples))[:cap])
        return tuple(examples[i] for i in idx)
    by_label: dict[Any, list[int]] = {}
    for i, ex in enumerate(examples):
        by_label.setdefault(ex.label, []).append(i)
    labels = sorted(by_label)
    tie = rng.permutation(len(labels)).tolist()  # which class goes first in each round
    keys = []  # (position within its class, class tie-break, index): round-robin over classes
    for r, lab in enumerate(labels):
        members = by_label[lab]
        for pos, j in enumerate(rng.permutation(len(members)).tolist()):
            keys.append((pos, tie[r], members[j]))
    idx = sorted(i for _, _, i in sorted(keys)[:cap])
    return tuple(examples[i] for i in idx)


def _per_class(examples: Sequence[Any], cap: int, seed: int, what: Any) -> tuple:
    """At most ``cap`` examples of each label, in their original order (a seeded draw)."""
    if cap <= 0:
        return tuple(examples)
    rng = np.random.default_rng(derive_seed(seed, "per_class", what))
    by_label: dict[Any, list[int]] = {}
    for i, ex in enumerate(examples):
        by_label.setdefault(ex.label, []).append(i)
    keep = []
    for label in sorted(by_label):
        members = by_label[label]
        keep += [members[j] for j in rng.permutation(len(members))[:cap]]
    return tuple(examples[i] for i in sorted(keep))


def check_eval_split(sequence, split: str) -> None:
    """ValueError naming ``eval.split`` and the tasks without examples in ``split``."""
    empty = [t.name for t in sequence.tasks if not t.split(split)]
    if empty:
        other = "test" if split == "dev" else "dev"
        raise ValueError(
            f"eval.split={split}: task(s) {empty} of sequence {sequence.name!r} have no {split} "
            f"examples (a custom sequence gets them from {split}_path, or from split fractions with "
            f"path); give them, or evaluate on eval.split={other}")


def load_sequence(cfg: DataConfig, progress=None, sequence=None):
    """The ``TaskSequence`` of ``cfg`` with the task filter and size caps applied.

    ``progress(iterable, total, desc)``: a progress bar for the loaders (default none).
    ``sequence``: a ready ``TaskSequence`` used instead of the one ``cfg`` names (filter and
    caps still apply).
    """
    import dataclasses

    from asvd_jax import data
    from asvd_jax.data import no_progress

    progress = progress or no_progress
    if sequence is not None:
        seq = sequence
    elif cfg.suite == "offline":
        kw = dict(per_class_train=cfg.per_class_train, per_class_dev=cfg.per_class_dev,
                  per_class_test=cfg.per_class_test, seed=cfg.seed)
        seq = data.offline_sequence(cfg.order, data_dir=cfg.data_dir or None, progress=progress, **kw)
    elif cfg.suite == "offline_disjoint":  # no label word shared between tasks (data/_disjoint.py)
        from asvd_jax.data import disjoint_sequence

        seq = disjoint_sequence(cfg.order, data_dir=cfg.data_dir or None, progress=progress,
                                per_class_train=cfg.per_class_train, per_class_dev=cfg.per_class_dev,
                                per_class_test=cfg.per_class_test, seed=cfg.seed)
    elif cfg.suite in ("standard4", "long"):  # stand-ins shaped like the paper's (data/_paper_suites.py)
        seq = data.paper_sequence(cfg.suite, cfg.order, data_dir=cfg.data_dir or None, progress=progress,
                                  per_class_train=cfg.per_class_train, per_class_dev=cfg.per_class_dev,
                                  per_class_test=cfg.per_class_test, seed=cfg.seed)
    elif cfg.suite == "olora":
        if not cfg.root:
            raise ValueError("data.root: the O-LoRA benchmark needs its local folder")
        seq = data.load_olora_sequence(cfg.root, cfg.order, progress=progress)
    elif cfg.suite == "trace":
        if not cfg.root:
            raise ValueError("data.root: TRACE needs its local folder")
        seq = data.load_trace_sequence(cfg.root, progress=progress)
    elif cfg.suite == "fixture":
        import tempfile

        from asvd_jax.cl._fixture import write_fixture

        # Deterministic content, so a fresh folder per call is as good as a cache.
        seq = data.load_custom_sequence(write_fixture(tempfile.mkdtemp(prefix="asvd_fixture_"), seed=cfg.seed),
                                         progress=progress)
    else:
        if not cfg.path:
            raise ValueError("data.path: a custom sequence needs its YAML file")
        seq = data.load_custom_sequence(cfg.path, progress=progress)
    tasks = seq.tasks
    if cfg.tasks:
        names = [t.name for t in tasks]
        unknown = [n for n in cfg.tasks if n not in names]
        if unknown:
            raise ValueError(f"data.tasks: {unknown} not in sequence {seq.name!r} (tasks: {names})")
        tasks = tuple(t for t in tasks if t.name in cfg.tasks)
    out = []
    for t in tasks:
        # Classification tasks (a label set) are capped class by class; generation tasks,
        # whose labels are free-form answers, by a plain seeded draw.
        balanced = bool(t.options)
        caps = {"train": cfg.max_train_per_class, "dev": cfg.max_eval_per_class,
                "test": cfg.max_eval_per_class} if balanced else {}
        per_class = {s: _per_class(t.split(s), caps.get(s, 0), cfg.seed, (s, t.name))
                     for s in ("train", "dev", "test")}
        out.append(dataclasses.replace(
            t,
            train=_subset(per_class["train"], cfg.max_train_per_task, cfg.seed, ("train", t.name), balanced),
            dev=_subset(per_class["dev"], cfg.max_eval_per_task, cfg.seed, ("dev", t.name), balanced),
            test=_subset(per_class["test"], cfg.max_eval_per_task, cfg.seed, ("test", t.name), balanced),
        ))
        if not out[-1].train:
            raise ValueError(f"task {t.name!r} has no training examples")
    return type(seq)(seq.name, tuple(out))


class TaskStream:
    """The micro-batches of one training stage: items ``(task, example)``, epochs, cap."""

    def __init__(self, items: Sequence[tuple[Any, Any]], train: TrainConfig, stage: int):
        self.items = list(items)
        self.train = train
        self.stage = stage
        self.per_epoch = math.ceil(len(self.items) / train.batch_size)
        total = self.per_epoch * train.epochs
        if train.max_steps > 0:
            total = min(total, train.max_steps)
        # Whole optimizer steps only: a trailing partial accumulation would never be applied.
        self.micro_steps = (total // train.grad_accum) * train.grad_accum
        if self.micro_steps == 0:
            raise ValueError(
                f"stage {stage}: {len(self.items)} examples give {total} micro-batches, fewer than "
                f"train.grad_accum={train.grad_accum}; lower grad_accum or batch_size"
            )

    @property
    def optimizer_steps(self) -> int:
        return self.micro_steps // self.train.grad_accum

    def chunks(self, start: int = 0) -> Iterator[list[tuple[Any, Any]]]:
        """Lists of items for micro-batches ``start, start+1, ...`` (deterministic)."""
        from asvd_jax.data import batches

        step = 0
        for epoch in range(self.train.epochs):
            seed = derive_seed(self.train.seed, "stage", self.stage, "epoch", epoch)
            for chunk in batches(self.items, self.train.batch_size, seed=seed, shuffle=True):
                if step >= self.micro_steps:
                    return
                if step >= start:
                    yield list(chunk)
                step += 1


def statistics_items(task: Any, n: int, seed: int) -> list[tuple[Any, Any]]:
    """The first ``n`` examples of a seeded shuffle of ``task.train`` (for rank statistics)."""
    order = np.random.default_rng(derive_seed(seed, "stats", task.name)).permutation(len(task.train))
    return [(task, task.train[i]) for i in order[:n]]
