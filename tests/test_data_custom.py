"""Custom sequences declared in YAML over local CSV / TSV / JSONL / JSON files."""

import csv
import json
import textwrap

import numpy as np
import pytest

from asvd_jax.data import SPLITS, DataFileNotFound, load_custom_sequence, suite_fingerprint

STARS = {1: "negative", 2: "negative", 4: "positive", 5: "positive"}


def _reviews_csv(path, rng, n=60):
    rows = [{"id": i, "body": f"review {i} {rng.integers(10**9)}", "stars": int(rng.choice([1, 2, 3, 4, 5]))}
            for i in range(n)]
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=["id", "body", "stars"])
        writer.writeheader()
        writer.writerows(rows)
    return rows


def _topics_jsonl(path, rng, n):
    rows = [{"text": f"topic text {i} {rng.integers(10**9)}", "label": ["sports", "science"][i % 2]} for i in range(n)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return rows


def _config(tmp_path, body):
    path = tmp_path / "seq.yaml"
    path.write_text(textwrap.dedent(body), encoding="utf-8")
    return path


BASE = """\
name: my-sequence
seed: {seed}
tasks:
  - name: reviews
    path: data/reviews.csv
    text_column: body
    label_column: stars
    instruction: "What is the sentiment of this review?"
    options: [negative, positive]
    label_map: {{1: negative, 2: negative, 4: positive, 5: positive}}
    ignore_unmapped: true
    split: {{train: 0.5, dev: 0.2, test: 0.3}}
  - name: topics
    train_path: data/topics_train.jsonl
    test_path: data/topics_test.jsonl
    instruction: "What is the topic of this text?"
    options: [sports, science]
"""


@pytest.fixture
def files(tmp_path):
    rng = np.random.default_rng(0)
    (tmp_path / "data").mkdir()
    reviews = _reviews_csv(tmp_path / "data" / "reviews.csv", rng)
    train = _topics_jsonl(tmp_path / "data" / "topics_train.jsonl", rng, 6)
    test = _topics_jsonl(tmp_path / "data" / "topics_test.jsonl", rng, 4)
    return tmp_path, reviews, train, test


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_yaml_sequence(files, seed):
    tmp_path, reviews, train, test = files
    sequence = load_custom_sequence(_config(tmp_path, BASE.format(seed=seed)))
    assert sequence.name == "my-sequence" and sequence.task_names == ("reviews", "topics")
    task = sequence[0]
    # Every mapped review lands in exactly one split, with its mapped label; 3-star ones are skipped.
    expected = sorted((r["body"], STARS[r["stars"]]) for r in reviews if r["stars"] in STARS)
    got = sorted((e.text, e.label) for s in SPLITS for e in task.split(s))
    assert got == expected
    for label in task.options:
        n = sum(1 for _, lab in expected if lab == label)
        assert task.class_counts("test")[label] == round(n * 0.3)
        assert task.class_counts("dev")[label] == round(n * 0.2)
    topics = sequence[1]
    assert [(e.text, e.label) for e in topics.train] == [(r["text"], r["label"]) for r in train]
    assert [(e.text, e.label) for e in topics.test] == [(r["text"], r["label"]) for r in test]
    assert topics.dev == ()
    again = load_custom_sequence(_config(tmp_path, BASE.format(seed=seed)))
    assert suite_fingerprint(again) == suite_fingerprint(sequence)
    if seed:
        other = load_custom_sequence(_config(tmp_path, BASE.format(seed=0)))
        assert other[0].test != task.test


def test_tsv_and_json_list(tmp_path):
    (tmp_path / "a.tsv").write_text("t\ty\nhello there\tyes\nbye now\tno\nmore\tyes\nless\tno\n", encoding="utf-8")
    (tmp_path / "b.json").write_text(json.dumps([{"t": "x1", "y": "yes"}, {"t": "x2", "y": "no"}]), encoding="utf-8")
    path = _config(tmp_path, """\
        tasks:
          - {name: a, path: a.tsv, text_column: t, label_column: y, instruction: "Q?", options: ["yes", "no"],
             split: {train: 0.5, test: 0.5}}
          - {name: b, train_path: b.json, test_path: b.json, text_column: t, label_column: y,
             instruction: "Q?", options: ["yes", "no"]}
        """)
    sequence = load_custom_sequence(path)
    assert sequence.name == "seq"
    assert sorted(e.text for e in sequence[0].train + sequence[0].test) == ["bye now", "hello there", "less", "more"]
    assert [e.text for e in sequence[1].train] == ["x1", "x2"]


def _one_task(tmp_path, **fields):
    task = {"name": "t", "path": "d.csv", "instruction": "Q?", "options": ["a", "b"], **fields}
    return _config(tmp_path, json.dumps({"name": "s", "tasks": [task]}))  # JSON is valid YAML


def _csv(tmp_path, text):
    (tmp_path / "d.csv").write_text(textwrap.dedent(text), encoding="utf-8")


def test_missing_files(tmp_path):
    with pytest.raises(DataFileNotFound, match="nothing.yaml"):
        load_custom_sequence(tmp_path / "nothing.yaml")
    with pytest.raises(FileNotFoundError, match=r"d\.csv: data file not found .*tasks\[0\]"):
        load_custom_sequence(_one_task(tmp_path))


def test_missing_column_names_file_and_key(tmp_path):
    _csv(tmp_path, "text,category\nx,a\n")
    with pytest.raises(ValueError, match=r"d\.csv:2: no column 'label' .*tasks\[0\]\.label_column"):
        load_custom_sequence(_one_task(tmp_path))
    (tmp_path / "d.jsonl").write_text('{"text": "x", "label": "a"}\n\n{"text": "y"}\n', encoding="utf-8")
    with pytest.raises(ValueError, match=r"d\.jsonl:3: no column 'label'"):
        load_custom_sequence(_one_task(tmp_path, path="d.jsonl"))


def test_label_not_among_options_names_line(tmp_path):
    _csv(tmp_path, """\
        text,label
        one,a
        "two
        lines",b
        three,c
        """)
    with pytest.raises(ValueError, match=r"d\.csv:5: label 'c' in column 'label' is not among the options"):
        load_custom_sequence(_one_task(tmp_path))


def test_class_without_examples(tmp_path):
    _csv(tmp_path, "text,label\none,a\ntwo,a\nthree,a\n")
    with pytest.raises(ValueError, match=r"d\.csv: no examples of class\(es\) \['b'\]"):
        load_custom_sequence(_one_task(tmp_path))
    _csv(tmp_path, "text,label\none,a\ntwo,a\nthree,a\nfour,b\n")
    with pytest.raises(ValueError, match=r"class 'b' has 1 example\(s\), too few"):
        load_custom_sequence(_one_task(tmp_path, split={"train": 0.4, "test": 0.6}))


def test_bad_config_keys(tmp_path):
    _csv(tmp_path, "text,label\none,a\ntwo,b\n")
    with pytest.raises(ValueError, match=r"tasks\[0\]: unknown key\(s\) 'lable_column' \(did you mean 'label_column'\?\)"):
        load_custom_sequence(_one_task(tmp_path, lable_column="x"))
    with pytest.raises(ValueError, match=r"tasks\[0\]\.split fractions must be >= 0 and sum to 1"):
        load_custom_sequence(_one_task(tmp_path, split={"train": 0.9, "test": 0.2}))
    with pytest.raises(ValueError, match=r"tasks\[0\]\.label_map\['1'\] = 'c' is not among the options"):
        load_custom_sequence(_one_task(tmp_path, label_map={"1": "c"}))
    with pytest.raises(ValueError, match=r"tasks\[0\]: give either path, or train_path"):
        load_custom_sequence(_one_task(tmp_path, train_path="d.csv"))
    with pytest.raises(TypeError, match=r"tasks\[0\]\.options must be a non-empty list"):
        load_custom_sequence(_one_task(tmp_path, options="a"))
    unquoted = _config(tmp_path, "tasks:\n  - {name: t, path: d.csv, instruction: q, options: [yes, no]}\n")
    with pytest.raises(TypeError, match=r"tasks\[0\]\.options\[0\]: got the boolean True; .* quote"):
        load_custom_sequence(unquoted)
    bad = _config(tmp_path, "tasks: []\n")
    with pytest.raises(ValueError, match="tasks must be a non-empty list"):
        load_custom_sequence(bad)
