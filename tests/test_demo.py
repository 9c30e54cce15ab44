"""``asvd-jax demo``: the forgetting-regime preset at one seed, and the command end to end."""

import dataclasses
import os

from _helpers.runs import TINY_RUN

from asvd_jax.cl import DEMO_OVERRIDES, apply_overrides, load_config
from asvd_jax.cl._config import to_dict
from asvd_jax.cli import main

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_demo_is_the_forgetting_preset_at_seed_0():
    demo = apply_overrides(load_config(None, []), DEMO_OVERRIDES)
    preset = load_config(os.path.join(ROOT, "experiments", "forgetting_minilm.yaml"), [])
    assert preset.run.seeds and 0 in preset.run.seeds
    assert demo.train.seed == 0 and demo.data.seed == 0
    # Everything but the run bookkeeping (the preset runs three seeds) is the same.
    a, b = to_dict(demo), to_dict(preset)
    a.pop("run"), b.pop("run")
    assert a == b


def test_demo_runs_both_methods_and_prints_the_interval(tmp_path, capsys):
    sets = [*TINY_RUN, "data.max_len=64", "train.max_steps=3",
            "train.epochs=1", "train.patience=0", "train.eval_every=0", "train.stop_holdout=0",
            "data.max_train_per_task=16", "eval.batch_size=8"]
    argv = ["demo", "--out-dir", str(tmp_path)]
    for s in sets:
        argv += ["--set", s]
    assert main(argv) == 0
    out = capsys.readouterr().out
    runs = sorted(os.listdir(tmp_path))
    assert len(runs) == 2 and runs[0].endswith("-asvd") and runs[1].endswith("-seqft")
    for r in runs:
        assert os.path.isfile(os.path.join(tmp_path, r, "metrics.json"))
    assert "Against SeqFT, one seed per group" in out
    # The asvd row of the seed table carries both intervals; the examples one is a real
    # interval (low <= estimate <= high), not "n/a".
    row = next(line for line in out.splitlines() if line.startswith("| asvd |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    est, lo, hi = (float(x) for x in cells[8].replace("[", " ").replace("]", " ").replace(",", " ").split())
    assert lo <= est <= hi
