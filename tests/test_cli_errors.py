"""Item 4 of issue 16: every bad input ends in one ``error:`` line naming the file, key or
line, and exit status 2 -- for each case the issue lists (no traceback)."""

import os

import pytest

from asvd_jax.cli import main
from asvd_jax.data.__main__ import main as data_main


def _one_error(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: "), err
    return err[0]


def _sequence(tmp_path, tasks_yaml: str, files: dict[str, str] | None = None):
    for name, text in (files or {}).items():
        (tmp_path / name).write_text(text)
    path = tmp_path / "seq.yaml"
    path.write_text(tasks_yaml)
    return path


GOOD_ROWS = "".join(f'{{"text": "item {i}", "label": "{lab}"}}\n' for i in range(6) for lab in ("a", "b"))


def test_set_typo_is_blamed_on_the_override(tmp_path, capsys):
    cfg = tmp_path / "exp.yaml"
    cfg.write_text("train: {lr: 3.0e-5}\n")
    assert main(["config", str(cfg), "--set", "train.lrr=1"]) == 2
    line = _one_error(capsys)
    assert line.startswith("error: --set train.lrr=1:") and "did you mean 'train.lr'" in line
    assert str(cfg) not in line
    # A typo inside the file is still blamed on the file.
    cfg.write_text("train: {lrr: 3.0e-5}\n")
    assert main(["config", str(cfg), "--set", "train.lr=1"]) == 2
    assert _one_error(capsys).startswith(f"error: {cfg}:")
    # A range error caused by an override names it too.
    assert main(["config", str(cfg.with_name("none.yaml"))]) == 2
    assert "none.yaml" in _one_error(capsys)
    cfg.write_text("method: {rank_policy: {paper: {trr: 0.5}}}\n")
    assert main(["config", str(cfg), "--set", "method.rank_policy.paper.mrr=0.9"]) == 2
    assert _one_error(capsys).startswith("error: --set method.rank_policy.paper.mrr=0.9: "
                                         "method.rank_policy.paper: PaperPolicy: need mrr <= trr")


@pytest.mark.parametrize("command", ["data", "run"])
def test_unquoted_yes_no_options(tmp_path, capsys, command):
    seq = _sequence(tmp_path, "tasks:\n  - name: q\n    path: rows.jsonl\n    instruction: Is it?\n"
                              "    options: [yes, no]\n", {"rows.jsonl": GOOD_ROWS})
    args = [command, "--set", "data.suite=custom", "--set", f"data.path={seq}",
            "--set", "run.progress=false"]
    if command == "run":
        args += ["--run-dir", str(tmp_path / "run")]
    assert main(args) == 2
    line = _one_error(capsys)
    assert "tasks[0].options[0]" in line and "quote" in line and str(seq) in line


def test_empty_sequence_yaml(tmp_path, capsys):
    seq = _sequence(tmp_path, "")
    assert main(["data", "--custom", str(seq)]) == 2
    assert f"{seq}: the file is empty" in _one_error(capsys)
    assert data_main(["--custom", str(seq)]) == 2
    assert "the file is empty" in _one_error(capsys)


def test_python_m_data_errors_are_one_line(tmp_path, capsys):
    seq = _sequence(tmp_path, "tasks:\n  - name: q\n    path: rows.jsonl\n    instruction: Which?\n"
                              "    labels: [a, b]\n", {"rows.jsonl": GOOD_ROWS})
    assert data_main(["--custom", str(seq)]) == 2
    assert "'labels' (did you mean 'options'?)" in _one_error(capsys)
    (tmp_path / "rows.jsonl").write_text('{"text": "x", "label": "a"}\nnot json\n')
    seq.write_text("tasks:\n  - name: q\n    path: rows.jsonl\n    instruction: Which?\n    options: [a, b]\n")
    assert data_main(["--custom", str(seq)]) == 2
    assert f"{tmp_path / 'rows.jsonl'}:2: not valid JSON" in _one_error(capsys)


def test_empty_train_file_says_so(tmp_path, capsys):
    seq = _sequence(tmp_path, "tasks:\n  - name: q\n    train_path: train.csv\n    test_path: test.csv\n"
                              "    instruction: Which?\n    options: [a, b]\n",
                    {"train.csv": "text,label\n", "test.csv": "text,label\nx,a\ny,b\n"})
    assert main(["data", "--custom", str(seq)]) == 2
    line = _one_error(capsys)
    assert "train.csv: the file has no data rows" in line


def test_missing_files_show_the_absolute_path(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["data", "--custom", "nowhere/seq.yaml"]) == 2
    line = _one_error(capsys)
    assert str(tmp_path / "nowhere" / "seq.yaml") in line and "working directory" in line
    (tmp_path / "sub").mkdir()
    _sequence(tmp_path / "sub", "tasks:\n  - name: q\n    path: rows.jsonl\n    instruction: Which?\n"
                                "    options: [a, b]\n")
    assert main(["data", "--custom", "sub/seq.yaml"]) == 2
    line = _one_error(capsys)
    assert str(tmp_path / "sub" / "rows.jsonl") in line and "relative to the YAML's own folder" in line


def test_data_path_without_custom_suite(capsys):
    assert main(["config", "--set", "data.path=my.yaml"]) == 2
    line = _one_error(capsys)
    assert "--set data.path=my.yaml" in line and "data.suite: custom" in line


def test_dev_split_without_dev_files_fails_before_the_model_loads(tmp_path, capsys, monkeypatch):
    from asvd_jax.cl import _families

    def no_model(*a, **k):
        raise AssertionError("the model must not load")

    monkeypatch.setattr(_families, "load_model", no_model)
    rows = "text,label\n" + "".join(f"t{i},{'ab'[i % 2]}\n" for i in range(8))
    seq = _sequence(tmp_path, "tasks:\n  - name: q\n    train_path: train.csv\n    test_path: test.csv\n"
                              "    instruction: Which?\n    options: [a, b]\n",
                    {"train.csv": rows, "test.csv": rows})
    assert main(["run", "--set", "data.suite=custom", "--set", f"data.path={seq}", "--set", "eval.split=dev",
                 "--set", "model.source=random", "--set", "run.progress=false",
                 "--run-dir", str(tmp_path / "run")]) == 2
    line = _one_error(capsys)
    assert "eval.split=dev" in line and "['q']" in line and "dev_path" in line
    assert not os.path.exists(tmp_path / "run" / "metrics.json")


# ------------------------------------------------- item 3: the custom-sequence path works

def test_data_custom_and_per_class_caps(tmp_path, capsys):
    rows = "".join(f'{{"text": "item {i} {lab}", "label": "{lab}"}}\n'
                   for i in range(20) for lab in ("a", "b", "b"))  # a: 20, b: 40 (unique texts below)
    rows = "".join(f'{{"text": "row {n} {line[10:]}' + "\n" for n, line in enumerate(rows.splitlines()))
    seq = _sequence(tmp_path, "name: mine\ntasks:\n  - name: q\n    path: rows.jsonl\n    instruction: Which?\n"
                              "    options: [a, b]\n", {"rows.jsonl": rows})
    assert main(["data", "--custom", str(seq)]) == 0
    out = capsys.readouterr().out
    assert "sequence mine: 1 tasks" in out and "train a=16 b=32" in out
    assert main(["data", "--custom", str(seq), "--set", "data.max_train_per_class=5",
                 "--set", "data.max_eval_per_class=2"]) == 0
    out = capsys.readouterr().out
    assert "train a=5 b=5" in out and "test  a=2 b=2" in out and "dev   a=2 b=2" in out


def test_per_class_cap_is_seeded_and_keeps_order(tmp_path):
    from asvd_jax.cl._config import DataConfig
    from asvd_jax.cl._sequence import load_sequence

    rows = "".join(f'{{"text": "t{i}", "label": "{"ab"[i % 3 == 0]}"}}\n' for i in range(60))
    seq = _sequence(tmp_path, "tasks:\n  - name: q\n    path: rows.jsonl\n    instruction: W?\n"
                              "    options: [a, b]\n", {"rows.jsonl": rows})
    full = load_sequence(DataConfig(suite="custom", path=str(seq))).tasks[0]
    cfg = DataConfig(suite="custom", path=str(seq), max_train_per_class=4)
    a, b = (load_sequence(cfg).tasks[0] for _ in range(2))
    assert a.train == b.train and a.class_counts("train") == {"a": 4, "b": 4}
    pos = [full.train.index(ex) for ex in a.train]
    assert pos == sorted(pos) and a.test == full.test
    other = load_sequence(DataConfig(suite="custom", path=str(seq), max_train_per_class=4, seed=1)).tasks[0]
    assert other.train != a.train
