"""Item 5 of issue 16: research code plugs in its own model, sequence, method and family."""

import importlib.util
import json
import os

import jax.numpy as jnp
import optax
import pytest

from asvd_jax.cl import ConfigError, Family, load_config, register_family, run
from asvd_jax.cli import main
from asvd_jax.data import Example, Task, TaskSequence

ROOT = os.path.join(os.path.dirname(__file__), "..")


def _load_example(name):
    spec = importlib.util.spec_from_file_location(name, os.path.join(ROOT, "experiments", f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_custom_model_example_runs_through_the_runner(tmp_path, capsys):
    example = _load_example("custom_model")
    m = example.main(str(tmp_path / "run"))
    assert m["status"] == "complete" and m["model"] == "bagmlp:random"
    assert m["protocol"] == "options (dot product of byte-bag codes)"
    assert len(m["accuracy_matrix"]) == 2 and "general_ability" not in m
    # Task 2 planned ranks from BagMLP's captured activations and kept the projection.
    assert os.listdir(tmp_path / "run" / "rank_plans") == ["task-0001-mood.json"]
    assert m["rows"][1]["record"]["leakage"]["max"] < 1e-4
    assert m["rows"][0]["eval"][0]["accuracy"] > 0.6  # it learns the first task (chance 0.5)
    capsys.readouterr()
    assert main(["report", str(tmp_path / "run")]) == 0
    assert "bagmlp" in capsys.readouterr().out


class PlainSGD:
    """A method written in research code: full fine-tuning with plain SGD."""

    name = "plain-sgd"

    def start_task(self, ctx):
        return ctx.params, None

    def effective_params(self, trainable, frozen):
        return trainable

    def penalty(self, trainable, frozen):
        return jnp.zeros((), jnp.float32)

    def optimizer(self, ctx):
        return optax.sgd(0.05)

    def finish_task(self, trainable, frozen, ctx):
        return trainable, {"custom": ctx.index}


def _sequence():
    def task(name, words):
        ex = [Example(f"{w} item {i}", lab) for i in range(8) for lab, w in words.items()]
        return Task(name, f"Which {name}?", tuple(words), train=tuple(ex), dev=(), test=tuple(ex[:4]))

    return TaskSequence("in-code", (task("colour", {"red": "rose", "blue": "sky"}),
                                    task("size", {"big": "whale", "small": "ant"})))


def test_run_with_model_tokenizer_sequence_and_method_objects(tmp_path, monkeypatch):
    from asvd_jax.cl import _families
    from asvd_jax.models import byte_tokenizer, llama

    tok = byte_tokenizer()
    model = llama.init_llama(llama.LlamaConfig(
        vocab_size=tok.vocab_size, hidden_size=32, intermediate_size=64, num_layers=1, num_heads=2,
        num_kv_heads=1, tie_word_embeddings=True, bos_token_id=tok.bos_id, eos_token_id=tok.eos_id,
        pad_token_id=tok.pad_id, max_position_embeddings=256), seed=0)

    def no_load(*a, **k):
        raise AssertionError("config.model must not be loaded when a model is passed")

    monkeypatch.setattr(_families, "load_model", no_load)
    # data.suite stays "offline": a passed sequence replaces it (nothing is built).
    cfg = load_config(None, ["data.max_len=48", "train.batch_size=8", "eval.batch_size=8",
                             "eval.lm_loss=false", "checkpoint.export_hf=false", "run.progress=false"])
    m = run(cfg, run_dir=str(tmp_path / "r"), model=model, tokenizer=tok, sequence=_sequence(),
            method=PlainSGD())
    assert m["status"] == "complete" and m["method"] == "plain-sgd"
    assert m["sequence"] == "in-code" and m["tasks"] == ["colour", "size"]
    assert m["model"] == "llama:Llama (passed to run)"
    assert [r["record"] for r in m["rows"]] == [{"custom": 0}, {"custom": 1}]
    with pytest.raises(ValueError, match="tokenizer"):
        run(cfg, run_dir=str(tmp_path / "r2"), model=model)


def test_register_family_rules(tmp_path):
    fam = Family(name="toyfam", adapter=lambda c, m, t: None, default_targets=("x",))
    with pytest.raises(ValueError, match="built-in"):
        register_family(Family(name="llama", adapter=fam.adapter, default_targets=()))
    register_family(fam, replace=True)
    with pytest.raises(ValueError, match="already registered"):
        register_family(fam)
    assert load_config(None, ["model.family=toyfam", "model.source=anything"]).model.family == "toyfam"
    with pytest.raises(ConfigError, match="did you mean 'toyfam'"):
        load_config(None, ["model.family=toyfan"])
    with pytest.raises(ValueError, match="no loader"):
        run(load_config(None, ["model.family=toyfam", "data.suite=fixture", "run.progress=false"]),
            run_dir=str(tmp_path / "t"))


# ---------------------------------------------------------------- Flax NNX without as_pure

def test_nnx_example_swaps_bases_between_tasks():
    report = _load_example("nnx_example").main(steps=40)
    assert report["leakage"][0] == {}
    for leak in report["leakage"][1:]:
        assert set(leak) == {"up/kernel", "down/kernel"} and max(leak.values()) < 1e-4


def test_nnx_optimizer_takes_state_bases_and_points_to_the_swap():
    import jax
    from flax import nnx

    import asvd_jax as aj
    from asvd_jax.ranks import set_optimizer_bases

    nnx_example = _load_example("nnx_example")
    model = nnx_example.MLP(nnx.Rngs(1))
    params = nnx.state(model, nnx.Param)
    targets = aj.select_targets(params)
    bases = aj.compute_bases(params, {"up/kernel": 24, "down/kernel": 24}, targets)  # Param-wrapped
    optimizer = nnx.Optimizer(model, aj.with_projection(optax.adam(1e-2), bases), wrt=nnx.Param)
    start = jax.tree.map(jnp.copy, nnx.to_pure_dict(nnx.state(model, nnx.Param)))
    for step in range(5):  # several jitted steps: the state survives nnx's own updates
        nnx_example.train_step(model, optimizer, *nnx_example.batch(0, step))
    delta = jax.tree.map(lambda a, b: a - b, nnx.to_pure_dict(nnx.state(model, nnx.Param)), start)
    assert max(float(v) for v in aj.protected_leakage(delta, bases).values()) < 1e-4
    for wrong in (optimizer, optimizer.opt_state):
        with pytest.raises(TypeError, match=r"asvd_jax\.ranks\.set_optimizer_bases\(optimizer, bases\)"):
            aj.set_bases(wrong, bases)
    with pytest.raises(TypeError, match="expected an nnx.Optimizer"):
        set_optimizer_bases(optimizer.opt_state, bases)


def test_projection_keeps_variable_wrapped_updates_wrapped():
    """Bases are stored without Variables; an nnx.State of Params still projects to Params."""
    import jax
    import numpy as np
    from flax import nnx
    from tolerances import assert_close

    import asvd_jax as aj
    from asvd_jax._projection import project_tree

    model = _load_example("nnx_example").MLP(nnx.Rngs(2))
    params = nnx.state(model, nnx.Param)
    bases = aj.compute_bases(params, {"up/kernel": 8, "down/kernel": 8}, aj.select_targets(params))
    pure = aj.pure_bases(bases)
    out = project_tree(params, pure)
    assert jax.tree_util.tree_structure(out) == jax.tree_util.tree_structure(params)
    ref = project_tree(nnx.to_pure_dict(params), pure)
    for a, b in zip(jax.tree.leaves(out), jax.tree.leaves(ref)):
        assert_close(np.asarray(a), np.asarray(b), "float32")
