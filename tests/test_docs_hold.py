"""Item 6 of issue 16: the docs hold -- ``asvd-jax config`` documents every field, and the
README's Python snippets are complete and run (tiny stand-ins for the packaged models)."""

import dataclasses
import os
import re

import pytest
import yaml

from asvd_jax.cl import ExperimentConfig, apply_overrides, load_config
from asvd_jax.cl._config import field_docs
from asvd_jax.cli import main

ROOT = os.path.join(os.path.dirname(__file__), "..")


def test_config_prints_every_field_documented_and_loads_back(capsys, tmp_path):
    assert main(["config", os.path.join(ROOT, "experiments", "tiny_pulse.yaml"),
                 "--set", "data.tasks=[fruit]", "--set", "train.lr=1e-3"]) == 0
    out = capsys.readouterr().out
    config = load_config(os.path.join(ROOT, "experiments", "tiny_pulse.yaml"),
                         ["data.tasks=[fruit]", "train.lr=1e-3"])
    assert apply_overrides(ExperimentConfig(), yaml.safe_load(out)) == config
    comments = " ".join(line.strip()[2:] for line in out.splitlines() if line.strip().startswith("#"))
    for section in dataclasses.fields(ExperimentConfig):
        cls = type(getattr(config, section.name))
        docs = field_docs(cls)
        assert set(docs) == {f.name for f in dataclasses.fields(cls)}, cls  # none undocumented
        for doc in docs.values():
            assert doc.replace("``", "`")[:40] in comments


# ------------------------------------------------------------------ README snippets run

def _blocks(lang: str) -> list[tuple[str, str]]:
    """(heading above, code) of every fenced block in README.md in language ``lang``."""
    with open(os.path.join(ROOT, "README.md")) as f:
        text = f.read()
    out = []
    for m in re.finditer(r"^```(\w+)\n(.*?)^```", text, re.S | re.M):
        if m.group(1) == lang:
            heading = re.findall(r"^#+ (.*)$", text[:m.start()], re.M)[-1]
            out.append((heading, m.group(2)))
    return out


@pytest.fixture
def tiny_models(monkeypatch):
    """SmolLM2 and MiniLM replaced by tiny random models of the same families (the snippets'
    calls are unchanged; loading and running the real ones takes minutes here)."""
    from asvd_jax.cl._config import ModelConfig
    from asvd_jax.models import load_model
    from asvd_jax.models import bert, llama

    def tiny(family):
        model, tok, _ = load_model(ModelConfig(family=family, source="random", random_width=32))
        return model, tok

    monkeypatch.setattr(llama, "load_smollm2", lambda **kw: tiny("llama"))
    monkeypatch.setattr(bert, "load_minilm", lambda **kw: tiny("bert"))


def test_readme_has_the_python_snippets():
    headings = [h for h, _ in _blocks("python")]
    assert headings == ["Use it in an optax chain", "Models", "Rank selection", "Analysis and notebooks"]


@pytest.mark.parametrize("heading", ["Use it in an optax chain", "Models", "Rank selection"])
def test_readme_python_snippet_runs(heading, tiny_models, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    code = dict(_blocks("python"))[heading]
    namespace: dict = {}
    exec(compile(code, f"README.md ({heading})", "exec"), namespace)
    if heading == "Use it in an optax chain":
        leak = capsys.readouterr().out
        assert "mlp/up/kernel" in leak
        assert all(float(v) < 1e-4 for v in namespace["aj"].protected_leakage(
            __import__("jax").tree.map(lambda a, b: a - b, namespace["params"], namespace["start"]),
            namespace["bases"]).values())
    if heading == "Models":
        assert namespace["scores"].shape == (1, 2)
        assert (tmp_path / "out" / "smollm2" / "model.safetensors").is_file()
    if heading == "Rank selection":
        assert (tmp_path / "rank_plan.json").is_file()
        assert len(namespace["plan"].entries) == len(list(namespace["aj"].list_targets(namespace["targets"])))


def test_readme_analysis_snippet_runs_on_a_pulse_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = os.path.join(ROOT, "experiments", "tiny_pulse.yaml")
    assert main(["run", cfg, "--run-dir", "runs/pulse", "--set", "run.progress=false",
                 "--set", "eval.lm_loss=false"]) == 0
    namespace: dict = {}
    exec(compile(dict(_blocks("python"))["Analysis and notebooks"], "README.md (analysis)", "exec"), namespace)
    assert set(namespace["table"]) == {p for p, _ in namespace["aj"].list_targets(namespace["targets"])}
    assert namespace["run"].complete


@pytest.mark.slow
def test_readme_own_sequence_walkthrough(tmp_path, monkeypatch, capsys):
    """The section's YAML is the shipped example, and its commands run verbatim (CLI in-process)."""
    import shlex
    import shutil

    section = [code for h, code in _blocks("yaml") if h == "Run your own task sequence"]
    with open(os.path.join(ROOT, "experiments", "my_sequence", "sequence.yaml")) as f:
        shipped = yaml.safe_load(f)
    assert [yaml.safe_load(section[0])] == [shipped]
    shutil.copytree(os.path.join(ROOT, "experiments"), tmp_path / "experiments")
    monkeypatch.chdir(tmp_path)
    commands = [h_code for h_code in _blocks("bash") if h_code[0] == "Run your own task sequence"][0][1]
    for line in commands.splitlines():
        args = shlex.split(line, comments=True)
        assert args[0] == "asvd-jax"
        assert main(args[1:]) == 0, line
    out = capsys.readouterr().out.splitlines()
    # `report` prints the per-run table, then (one seed per group, a SeqFT run among them) the
    # paired table against SeqFT.
    head = [i for i, line in enumerate(out) if line.startswith("| run | method | status | AA")]
    table = out[head[-1]:head[-1] + 4]  # each `run` prints its own table first
    assert "| mine-asvd | asvd | complete |" in table[2] and "| mine-seqft | seqft | complete |" in table[3]
    paired = out[out.index(next(l for l in out if l.startswith("Against SeqFT, one seed per group"))):]
    assert paired[2].startswith("| group | seeds | AA |")
    assert any(l.startswith("| asvd | 0 |") for l in paired) and any(l.startswith("| seqft | 0 |") for l in paired)
