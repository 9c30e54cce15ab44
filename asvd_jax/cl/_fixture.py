"""A tiny two-task custom sequence (keyword topic, keyword sentiment) for pulse checks.

``write_fixture(folder)`` writes two JSONL files and the sequence YAML that
``asvd_jax.data.load_custom_sequence`` reads; the labels follow from one keyword per text,
so even a tiny random model learns them in a few dozen steps.
"""

from __future__ import annotations

import json
import os

import numpy as np

_TOPIC = {"fruit": ("apple", "pear", "plum", "mango"), "vehicle": ("car", "bus", "tram", "truck")}
_MOOD = {"positive": ("good", "great", "lovely", "nice"), "negative": ("bad", "awful", "poor", "sad")}
_FILLER = ("today", "we saw a", "there was a", "it is a", "look at the", "my friend had a")


def _rows(classes: dict, n: int, rng: np.random.Generator) -> list[dict]:
    rows = []
    labels = sorted(classes)
    for i in range(n):
        label = labels[i % len(labels)]
        word = classes[label][rng.integers(len(classes[label]))]
        lead = _FILLER[rng.integers(len(_FILLER))]
        rows.append({"text": f"{lead} {word} {rng.integers(100)}", "label": label})
    return rows


def write_fixture(folder: str, n_train: int = 48, n_test: int = 16, seed: int = 0) -> str:
    """Write the fixture into ``folder``; returns the path of its sequence YAML."""
    os.makedirs(folder, exist_ok=True)
    rng = np.random.default_rng(seed)
    spec = {"name": "fixture", "seed": seed, "tasks": []}
    # Short instructions: the tiny test models use a byte-level tokenizer.
    for name, classes, instruction in (("topic", _TOPIC, "Fruit or vehicle?"),
                                       ("mood", _MOOD, "Good or bad?")):
        for split, n in (("train", n_train), ("test", n_test)):
            with open(os.path.join(folder, f"{name}_{split}.jsonl"), "w") as f:
                for row in _rows(classes, n, rng):
                    f.write(json.dumps(row) + "\n")
        spec["tasks"].append({"name": name, "train_path": f"{name}_train.jsonl",
                              "test_path": f"{name}_test.jsonl", "instruction": instruction,
                              "options": sorted(classes)})
    import yaml

    path = os.path.join(folder, "sequence.yaml")
    with open(path, "w") as f:
        yaml.safe_dump(spec, f, sort_keys=False)
    return path
