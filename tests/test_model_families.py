"""Model families: one registry for the shipped families and a researcher's own, and a
models package whose modules import each other without cycles."""

import pathlib

import pytest

import asvd_jax
from asvd_jax.cl._config import ModelConfig
from asvd_jax.models import (Family, ModelSourceError, family_names, find_family, get_family, load_model,
                             register_family)
from asvd_jax.models import _family as registry
from _helpers.imports import cycle as _cycle, import_graph as _graph

ROOT = pathlib.Path(asvd_jax.__file__).parent


@pytest.fixture
def clean_registry(monkeypatch):
    """Registrations made in a test are dropped afterwards (the shipped ones stay)."""
    family_names()  # the shipped families are in before the copy
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))


def test_shipped_families_come_from_the_same_registry():
    from asvd_jax.models import bert, llama, t5

    assert family_names()[:3] == ("llama", "bert", "t5")
    for package in (llama, bert, t5):
        record = get_family(package.FAMILY.name)
        assert record is package.FAMILY and isinstance(record, Family)
        assert record.default_targets == tuple(package.DEFAULT_TARGETS)
        assert record.load is not None and record.sources
    assert get_family("bert").protocols == ("similarity",) and get_family("bert").answer_tokens is None
    assert get_family("llama").compact_batches and not get_family("t5").compact_batches


def test_a_registered_family_is_found_like_the_shipped_ones(clean_registry):
    model, tokenizer = object(), object()
    seen = {}

    def adapter(config, m, t):
        seen["adapter"] = (config, m, t)
        return "the adapter"

    mine = Family(name="toy", adapter=adapter, default_targets=("w",), load=lambda cfg: (model, tokenizer),
                  protocols=("options",))
    assert register_family(mine) is mine
    assert get_family("toy") is mine and family_names()[-1] == "toy"
    assert load_model(ModelConfig(family="toy", source="anything")) == (model, tokenizer, ("w",))

    from asvd_jax.cl import Family as ClFamily
    from asvd_jax.cl._families import build_adapter
    from asvd_jax.cl._config import ExperimentConfig

    assert ClFamily is Family  # the trainer's name for the same record
    config = ExperimentConfig(model=ModelConfig(family="toy"))
    family, built, targets = build_adapter(config)
    assert family is mine and built == "the adapter" and targets == ("w",)
    assert seen["adapter"] == (config, model, tokenizer)
    assert mine.describe_protocol("auto", []) == "options (restricted scoring)"

    with pytest.raises(ValueError, match="already registered"):
        register_family(Family(name="toy", adapter=adapter, default_targets=()))
    with pytest.raises(ValueError, match="built-in"):
        register_family(Family(name="t5", adapter=adapter, default_targets=()))
    other = register_family(Family(name="t5", adapter=adapter, default_targets=()), replace=True)
    assert get_family("t5") is other  # a shipped family is replaced the way any other is


def test_registry_errors_name_the_problem():
    with pytest.raises(ValueError, match="not a registered family.*'llama'"):
        get_family("lama")
    assert find_family("lama") is None
    with pytest.raises(TypeError, match="expected a Family"):
        register_family("llama")
    with pytest.raises(ValueError, match="protocols"):
        Family(name="x", adapter=None, default_targets=(), protocols=("beam",))
    with pytest.raises(ModelSourceError, match="model.source: 'gguf' is not available for family 'bert'"):
        load_model(ModelConfig(family="bert", source="gguf"))
    with pytest.raises(ModelSourceError, match="model.path"):
        load_model(ModelConfig(family="t5", source="hf", path=""))


def test_protocol_label_follows_the_record_and_eval_protocol():
    from asvd_jax.data import Example, Task

    task = Task("MeetingBank", "Summarize.", (), train=(Example("a", "b"),), dev=(), test=())
    llama = get_family("llama")
    assert llama.describe_protocol("auto", []) == "generate (greedy exact match)"
    assert llama.describe_protocol("options", []) == "options (restricted scoring)"
    assert "per-task metrics: rouge_l" in llama.describe_protocol("both", [task])
    assert get_family("bert").describe_protocol("generate", []) == "options (restricted scoring)"
    fixed = Family(name="x", adapter=None, default_targets=(), protocol_label="dot products")
    assert fixed.describe_protocol("auto", [task]) == "dot products"


# ------------------------------------------------------------------------- import graph

def test_models_has_no_import_cycles():
    graph = _graph()
    models = {n for n in graph if n.startswith("asvd_jax.models")}
    assert {"asvd_jax.models.llama._model", "asvd_jax.models.t5._io", "asvd_jax.models.bert._adapter"} <= models
    assert _cycle(graph, models) is None, " -> ".join(_cycle(graph, models))
    # The checker itself: a back edge is found.
    assert _cycle({"a": {"b"}, "b": {"a"}}, {"a", "b"}) == ["a", "b", "a"]


def test_layers_import_downward():
    """models and data never import the trainer; data never imports models; the trainer
    imports no family package (it asks the registry)."""
    graph = _graph()
    for name, targets in graph.items():
        if name.startswith(("asvd_jax.models", "asvd_jax.data")):
            assert not {t for t in targets if t.startswith("asvd_jax.cl")}, name
        if name.startswith("asvd_jax.data"):
            assert not {t for t in targets if t.startswith("asvd_jax.models")}, name
        if name.startswith("asvd_jax.cl") and name != "asvd_jax.cl._memory_plan":
            family_modules = {t for t in targets
                              if t.startswith(("asvd_jax.models.llama", "asvd_jax.models.t5", "asvd_jax.models.bert"))}
            assert not family_modules, (name, family_modules)
