"""O-LoRA CL_Benchmark and TRACE layouts, on fixture folders the tests write themselves."""

import json
import shutil

import numpy as np
import pytest

from asvd_jax.data import OLORA_ORDERS, TRACE_ORDER, DataFileNotFound, load_olora_sequence, load_trace_sequence
from asvd_jax.data._benchmarks import OLORA_GROUPS, load_olora_task

LABELS = {"agnews": ["World", "Sports", "Business", "Sci/Tech"], "CB": ["contradiction", "entailment", "neutral"],
          "COPA": ["A", "B"]}


def _write(path, obj):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj), encoding="utf-8")


def _records(rng, task, labels, n):
    return [{"sentence": f"{task} sentence {i} {rng.integers(1_000_000)}", "label": labels[i % len(labels)]}
            for i in range(n)]


@pytest.fixture
def olora_root(tmp_path):
    """All 15 tasks in the CL_Benchmark layout; yelp has no dev.json, like some published tasks."""
    rng = np.random.default_rng(0)
    root = tmp_path / "CL_Benchmark"
    for group, tasks in OLORA_GROUPS.items():
        for task in tasks:
            labels = LABELS.get(task, ["negative", "positive"])
            folder = root / group / task
            _write(folder / "labels.json", labels)
            for split, n in (("train", 6), ("dev", 3), ("test", 4)):
                if not (task == "yelp" and split == "dev"):
                    _write(folder / f"{split}.json", _records(rng, task, labels, n))
    return root


def test_all_six_orders(olora_root):
    for order, names in OLORA_ORDERS.items():
        sequence = load_olora_sequence(olora_root, order, cache_dir=str(olora_root.parent / "hf"))
        assert sequence.task_names == names
        assert len(names) == (4 if order <= 3 else 15)
    assert sorted(OLORA_ORDERS[4]) == sorted(OLORA_ORDERS[5]) == sorted(OLORA_ORDERS[6])


def test_task_contents_match_the_files(olora_root):
    task = load_olora_task(olora_root, "agnews", cache_dir=str(olora_root.parent / "hf"))
    assert task.options == tuple(LABELS["agnews"])
    for split in ("train", "dev", "test"):
        records = json.loads((olora_root / "TC" / "agnews" / f"{split}.json").read_text())
        assert [(e.text, e.label) for e in task.split(split)] == [(r["sentence"], r["label"]) for r in records]
    assert "topic" in task.instruction
    assert load_olora_task(olora_root, "yelp", cache_dir=str(olora_root.parent / "hf")).dev == ()


def test_per_class_subsampling(olora_root):
    hf = str(olora_root.parent / "hf")
    full = load_olora_task(olora_root, "CB", hf)
    for seed in (0, 1):
        small = load_olora_task(olora_root, "CB", hf, max_per_class={"train": 1, "test": 1}, seed=seed)
        assert small.class_counts("train") == {o: 1 for o in LABELS["CB"]}
        assert sum(small.class_counts("test").values()) == 3
        assert set(small.train) <= set(full.train) and small.dev == full.dev
    picks = {load_olora_task(olora_root, "CB", hf, max_per_class={"train": 1}, seed=s).train for s in range(6)}
    assert len(picks) > 1
    with pytest.raises(ValueError, match="unknown split"):
        load_olora_task(olora_root, "CB", hf, max_per_class={"validation": 1})


def test_flat_layout_is_accepted(olora_root):
    (olora_root / "SC" / "amazon").rename(olora_root / "amazon")
    assert load_olora_task(olora_root, "amazon", cache_dir=str(olora_root.parent / "hf")).name == "amazon"


def test_olora_bad_inputs(olora_root):
    hf = str(olora_root.parent / "hf")
    with pytest.raises(ValueError, match="order"):
        load_olora_sequence(olora_root, 7)
    with pytest.raises(ValueError, match="unknown O-LoRA task 'boolq'"):
        load_olora_task(olora_root, "boolq")
    folder = olora_root / "TC" / "dbpedia"
    (folder / "test.json").unlink()
    with pytest.raises(DataFileNotFound, match=r"dbpedia/test\.json"):
        load_olora_task(olora_root, "dbpedia", hf)
    (folder / "labels.json").unlink()
    with pytest.raises(FileNotFoundError, match=r"dbpedia/labels\.json"):
        load_olora_task(olora_root, "dbpedia", hf)
    shutil.rmtree(olora_root / "TC" / "yahoo")
    with pytest.raises(DataFileNotFound, match=r"TC/yahoo: O-LoRA task folder not found"):
        load_olora_task(olora_root, "yahoo", hf)

    path = olora_root / "NLI" / "CB" / "train.json"
    records = json.loads(path.read_text())
    _write(path, records[:2] + [{"sentence": "x", "label": "maybe"}] + records[2:])
    with pytest.raises(ValueError, match=r"CB/train\.json: record 2 has label 'maybe'"):
        load_olora_task(olora_root, "CB", hf)
    _write(path, [{"text": r["sentence"], "label": r["label"]} for r in records])
    with pytest.raises(ValueError, match=r"CB/train\.json: missing field\(s\) \['sentence'\]"):
        load_olora_task(olora_root, "CB", hf)
    _write(path, [r for r in records if r["label"] != "neutral"])
    with pytest.raises(ValueError, match=r"CB/train\.json: no examples of class\(es\) \['neutral'\]"):
        load_olora_task(olora_root, "CB", hf)
    path.write_text("[{\"sentence\": ", encoding="utf-8")
    with pytest.raises(ValueError, match=r"CB/train\.json: not a readable JSON"):
        load_olora_task(olora_root, "CB", hf)
    _write(olora_root / "COPA" / "COPA" / "labels.json", {"A": 0})
    with pytest.raises(ValueError, match=r"COPA/labels\.json: expected a non-empty JSON list"):
        load_olora_task(olora_root, "COPA", hf)


@pytest.fixture
def trace_root(tmp_path):
    rng = np.random.default_rng(1)
    root = tmp_path / "TRACE"
    for task in TRACE_ORDER:
        for split, n in (("train", 5), ("eval", 2), ("test", 3)):
            _write(root / task / f"{split}.json",
                   [{"prompt": f"{task} question {i} {rng.integers(1000)}\nAnswer:", "answer": f"{rng.integers(9)}"}
                    for i in range(n)])
    return root


def test_trace_sequence(trace_root):
    sequence = load_trace_sequence(trace_root, cache_dir=str(trace_root.parent / "hf"))
    assert sequence.task_names == TRACE_ORDER
    task = sequence[0]
    assert task.options == () and task.instruction == ""
    records = json.loads((trace_root / "C-STANCE" / "eval.json").read_text())
    assert [(e.text, e.label) for e in task.dev] == [(r["prompt"], r["answer"]) for r in records]


def test_trace_bad_inputs(trace_root):
    hf = str(trace_root.parent / "hf")
    (trace_root / "FOMC" / "eval.json").unlink()
    with pytest.raises(DataFileNotFound, match=r"FOMC/eval\.json"):
        load_trace_sequence(trace_root, hf)
    _write(trace_root / "FOMC" / "eval.json", [{"prompt": "p", "answer": None}])
    with pytest.raises(ValueError, match=r"FOMC/eval\.json: record 0 field 'answer'"):
        load_trace_sequence(trace_root, hf)
    with pytest.raises(DataFileNotFound, match="Nope"):
        load_trace_sequence(trace_root, hf, tasks=("Nope",))
