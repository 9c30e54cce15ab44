"""User-declared task sequences: local CSV/TSV/JSONL files described by a YAML file.

```yaml
name: my-sequence
seed: 0                                  # optional: the split and order seed
tasks:
  - name: reviews
    path: data/reviews.csv               # relative to this YAML file
    text_column: body                    # default "text"
    label_column: stars                  # default "label"
    instruction: "What is the sentiment of this review?"
    options: [negative, positive]
    label_map: {1: negative, 5: positive}   # optional: raw value -> option
    ignore_unmapped: true                # optional: skip rows whose label is no option
    split: {train: 0.8, dev: 0.1, test: 0.1}  # optional (this is the default)
  - name: topics
    train_path: data/topics_train.jsonl  # or separate files (dev_path optional)
    test_path: data/topics_test.jsonl
    instruction: "What is the topic of this text?"
    options: [sports, science]
```

With ``path``, duplicate texts are merged (a text seen with two labels is dropped) and each
class is split by the fractions, ranked by a sha256 of the seed and the text, so splits are
disjoint and reproducible. Errors name the YAML key (``tasks[0].label_column``) or the data
file and line (CSV: the physical line where the record ends; JSONL: the line; JSON list: the
record index).
"""

from __future__ import annotations

import csv
import dataclasses
import json
from pathlib import Path
from typing import Any, Iterator

from asvd_jax.data._sources import dedup_pool
from asvd_jax.data._tasks import (
    SPLITS, DataFileNotFound, Example, Task, TaskSequence, hash_order_key, no_progress,
)

class SequenceConfigError(TypeError, ValueError):
    """A sequence YAML value of the wrong kind (a ValueError like every bad input, and a
    TypeError for code that caught the earlier type errors)."""


_TASK_KEYS = {"name", "path", "train_path", "dev_path", "test_path", "format", "delimiter", "text_column",
              "label_column", "instruction", "options", "label_map", "ignore_unmapped", "split"}
_FORMATS = {".csv": "csv", ".tsv": "tsv", ".jsonl": "jsonl", ".json": "json"}


@dataclasses.dataclass(frozen=True)
class CustomTaskSpec:
    """One task of a custom sequence (see the module docstring for the YAML form)."""

    name: str
    instruction: str
    options: tuple[str, ...]
    path: Path | None = None
    """One file split by ``split``; or give ``train_path``/``test_path`` (+ ``dev_path``)."""
    train_path: Path | None = None
    dev_path: Path | None = None
    test_path: Path | None = None
    text_column: str = "text"
    label_column: str = "label"
    label_map: tuple[tuple[str, str], ...] = ()
    """(raw value as a string, option) pairs."""
    ignore_unmapped: bool = False
    """Skip rows whose label (after ``label_map``) is not an option, instead of raising."""
    split: tuple[float, float, float] = (0.8, 0.1, 0.1)
    """train, dev, test fractions (with ``path`` only)."""
    format: str | None = None
    """csv, tsv, jsonl or json; by default from the file extension."""
    delimiter: str | None = None
    where: str = "tasks[0]"
    """The YAML key path, for error messages."""

    def build(self, seed: int = 0) -> Task:
        mapping = dict(self.label_map)
        if self.path is not None:
            pool = dedup_pool(self._read(self.path, mapping))
            self._check_classes(set(pool), self.path)
            return Task(self.name, self.instruction, self.options, **self._split(pool, seed))
        splits = {}
        for split, path in zip(SPLITS, (self.train_path, self.dev_path, self.test_path)):
            rows = list(self._read(path, mapping)) if path is not None else []
            if split == "train":
                self._check_classes({label for _, label in rows}, path)
            splits[split] = tuple(Example(t, lab) for t, lab in rows)
        return Task(self.name, self.instruction, self.options, **splits)

    def _check_classes(self, present: set[str], path: Path) -> None:
        if not present:
            raise ValueError(f"{path}: the file has no data rows ({self.where}); "
                             f"a training file needs examples of every option {list(self.options)}")
        empty = [o for o in self.options if o not in present]
        if empty:
            raise ValueError(f"{path}: no examples of class(es) {empty} ({self.where}.options)")

    def _split(self, pool: dict[str, list[str]], seed: int) -> dict[str, tuple[Example, ...]]:
        out: dict[str, list[Example]] = {s: [] for s in SPLITS}
        for label in self.options:
            texts = sorted(pool[label], key=lambda t: hash_order_key(seed, self.name, label, t))
            n_test = round(len(texts) * self.split[2])
            n_dev = round(len(texts) * self.split[1])
            if len(texts) - n_test - n_dev < 1:
                raise ValueError(f"{self.path}: class {label!r} has {len(texts)} example(s), too few to "
                                 f"split by {self.where}.split {list(self.split)}")
            out["test"] += [Example(t, label) for t in texts[:n_test]]
            out["dev"] += [Example(t, label) for t in texts[n_test:n_test + n_dev]]
            out["train"] += [Example(t, label) for t in texts[n_test + n_dev:]]
        return {s: tuple(sorted(exs, key=lambda e: hash_order_key(seed, self.name, s, e.label, e.text)))
                for s, exs in out.items()}

    def _read(self, path: Path, mapping: dict[str, str]) -> Iterator[tuple[str, str]]:
        """(text, option) per row, checked."""
        if not path.is_file():
            raise DataFileNotFound(f"{path}: data file not found ({self.where}; absolute path tried: "
                                   f"{path.resolve()}; paths in a sequence YAML are relative to the "
                                   f"YAML's own folder)")
        fmt = self.format or _FORMATS.get(path.suffix.lower())
        if fmt is None:
            raise ValueError(f"{path}: unknown extension; set {self.where}.format to one of {sorted(set(_FORMATS.values()))}")
        rows = _csv_rows(path, fmt, self.delimiter) if fmt in ("csv", "tsv") else _json_rows(path, fmt)
        for where, record in rows:
            for key, column in (("text_column", self.text_column), ("label_column", self.label_column)):
                if column not in record:
                    raise ValueError(f"{where}: no column {column!r} ({self.where}.{key}); "
                                     f"found {sorted(record)}")
            text, raw = record[self.text_column], record[self.label_column]
            if not isinstance(text, str) or not text.strip():
                raise ValueError(f"{where}: empty or non-text value in column {self.text_column!r}")
            raw = "" if raw is None else str(raw).strip()
            label = mapping.get(raw, raw)
            if label not in self.options:
                if self.ignore_unmapped:
                    continue
                raise ValueError(f"{where}: label {raw!r} in column {self.label_column!r} is not among "
                                 f"the options {list(self.options)} of {self.where}; map it with "
                                 f"label_map or set ignore_unmapped")
            yield text.strip(), label


def _csv_rows(path: Path, fmt: str, delimiter: str | None):
    with open(path, encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f, delimiter=delimiter or ("\t" if fmt == "tsv" else ","))
        if not reader.fieldnames:
            raise ValueError(f"{path}:1: empty file, expected a header line")
        for record in reader:
            yield f"{path}:{reader.line_num}", {k: v for k, v in record.items() if k is not None}


def _json_rows(path: Path, fmt: str):
    content = path.read_text(encoding="utf-8")
    if fmt == "json" and content.lstrip().startswith("["):
        try:
            records = json.loads(content)
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}:{err.lineno}: not valid JSON ({err.msg})") from None
        entries = ((f"{path}: record {i}", r) for i, r in enumerate(records))
    else:
        def lines():
            for lineno, line in enumerate(content.splitlines(), start=1):
                if not line.strip():
                    continue
                try:
                    yield f"{path}:{lineno}", json.loads(line)
                except json.JSONDecodeError as err:
                    raise ValueError(f"{path}:{lineno}: not valid JSON ({err.msg})") from None
        entries = lines()
    for where, record in entries:
        if not isinstance(record, dict):
            raise ValueError(f"{where}: expected a JSON object, got {type(record).__name__}")
        yield where, record


def _scalar_str(value: Any, where: str) -> str:
    if isinstance(value, bool):
        raise SequenceConfigError(f"{where}: got the boolean {value!r}; YAML reads unquoted yes/no/true/false/on/off "
                        f"as booleans, so quote the word")
    if not isinstance(value, (str, int, float)):
        raise SequenceConfigError(f"{where}: expected a string, got {value!r}")
    return str(value)


def _task_spec(raw: Any, index: int, base: Path, source: str) -> CustomTaskSpec:
    where = f"tasks[{index}]"
    if not isinstance(raw, dict):
        raise SequenceConfigError(f"{source}: {where} must be a mapping, got {type(raw).__name__}")
    unknown = sorted(set(map(str, raw)) - _TASK_KEYS)
    if unknown:
        import difflib

        hints = [f"{k!r} (did you mean {close[0]!r}?)" if (close := difflib.get_close_matches(
            k, sorted(_TASK_KEYS), n=1, cutoff=0.5)) else repr(k) for k in unknown]
        if "labels" in unknown and "options" not in raw:
            hints[unknown.index("labels")] = "'labels' (did you mean 'options'?)"
        raise ValueError(f"{source}: {where}: unknown key(s) {', '.join(hints)}; allowed: {sorted(_TASK_KEYS)}")
    for key in ("name", "instruction", "options"):
        if key not in raw:
            raise ValueError(f"{source}: {where}.{key} is required")
    options = raw["options"]
    if not isinstance(options, list) or not options:
        raise SequenceConfigError(f"{source}: {where}.options must be a non-empty list")
    options = tuple(_scalar_str(o, f"{source}: {where}.options[{i}]") for i, o in enumerate(options))
    if len(set(options)) != len(options):
        raise ValueError(f"{source}: {where}.options repeat: {list(options)}")
    label_map = raw.get("label_map") or {}
    if not isinstance(label_map, dict):
        raise SequenceConfigError(f"{source}: {where}.label_map must be a mapping")
    pairs = []
    for key, value in label_map.items():
        value = _scalar_str(value, f"{source}: {where}.label_map[{key!r}]")
        if value not in options:
            raise ValueError(f"{source}: {where}.label_map[{key!r}] = {value!r} is not among the options {list(options)}")
        pairs.append((_scalar_str(key, f"{source}: {where}.label_map key"), value))
    paths = {k: (base / str(raw[k])) for k in ("path", "train_path", "dev_path", "test_path") if raw.get(k)}
    if ("path" in paths) == ("train_path" in paths or "test_path" in paths):
        raise ValueError(f"{source}: {where}: give either path, or train_path and test_path")
    if "path" not in paths and not ("train_path" in paths and "test_path" in paths):
        raise ValueError(f"{source}: {where}: train_path and test_path are both required")
    fractions = raw.get("split") or {"train": 0.8, "dev": 0.1, "test": 0.1}
    if not isinstance(fractions, dict) or set(fractions) - set(SPLITS) or "train" not in fractions:
        raise ValueError(f"{source}: {where}.split must map train (and optionally dev, test) to fractions")
    split = tuple(float(fractions.get(s, 0.0)) for s in SPLITS)
    if any(f < 0 for f in split) or abs(sum(split) - 1.0) > 1e-9:
        raise ValueError(f"{source}: {where}.split fractions must be >= 0 and sum to 1, got {fractions}")
    fmt = raw.get("format")
    if fmt is not None and fmt not in set(_FORMATS.values()):
        raise ValueError(f"{source}: {where}.format must be one of {sorted(set(_FORMATS.values()))}, got {fmt!r}")
    return CustomTaskSpec(
        name=_scalar_str(raw["name"], f"{source}: {where}.name"),
        instruction=_scalar_str(raw["instruction"], f"{source}: {where}.instruction"),
        options=options, path=paths.get("path"), train_path=paths.get("train_path"),
        dev_path=paths.get("dev_path"), test_path=paths.get("test_path"),
        text_column=_scalar_str(raw.get("text_column", "text"), f"{source}: {where}.text_column"),
        label_column=_scalar_str(raw.get("label_column", "label"), f"{source}: {where}.label_column"),
        label_map=tuple(pairs), ignore_unmapped=bool(raw.get("ignore_unmapped", False)), split=split,
        format=fmt, delimiter=raw.get("delimiter"), where=f"{source}: {where}",
    )


def load_custom_sequence(yaml_path: str | Path, progress=no_progress) -> TaskSequence:
    """The task sequence a YAML file declares (tasks in the listed order).

    ``progress(iterable, total, desc)`` wraps the per-task reads (a progress bar; default none).
    """
    import yaml

    yaml_path = Path(yaml_path)
    if not yaml_path.is_file():
        import os

        raise DataFileNotFound(f"{yaml_path}: sequence config not found (absolute path tried: "
                               f"{yaml_path.resolve()}; a relative data.path is relative to the "
                               f"working directory {os.getcwd()})")
    try:
        config = yaml.safe_load(yaml_path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        raise ValueError(f"{yaml_path}: not valid YAML ({err})") from None
    if config is None:
        raise SequenceConfigError(f"{yaml_path}: the file is empty; expected a mapping with keys name and tasks")
    if not isinstance(config, dict):
        raise SequenceConfigError(f"{yaml_path}: expected a mapping with keys name and tasks, got "
                                  f"{type(config).__name__}")
    unknown = sorted(set(map(str, config)) - {"name", "seed", "tasks"})
    if unknown:
        raise ValueError(f"{yaml_path}: unknown top-level key(s) {unknown}; allowed: name, seed, tasks")
    tasks = config.get("tasks")
    if not isinstance(tasks, list) or not tasks:
        raise ValueError(f"{yaml_path}: tasks must be a non-empty list")
    seed = config.get("seed", 0)
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise SequenceConfigError(f"{yaml_path}: seed must be an int, got {seed!r}")
    name = _scalar_str(config.get("name", yaml_path.stem), f"{yaml_path}: name")
    specs = [_task_spec(raw, i, yaml_path.parent, str(yaml_path)) for i, raw in enumerate(tasks)]
    return TaskSequence(name, tuple(spec.build(seed) for spec in
                                    progress(specs, len(specs), f"reading tasks of {yaml_path.name}")))
