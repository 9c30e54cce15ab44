import dataclasses

import pytest
import yaml

from asvd_jax.cl import _config as c
from asvd_jax.cl._config_load import apply_overrides, load_config, parse_override
from asvd_jax.cl._config_doc import documented_yaml
from asvd_jax.ranks import BudgetPolicy, EnergyPolicy, PaperPolicy, ProgressivePolicy, UniformPolicy


def test_defaults_and_every_field_documented():
    cfg = c.ExperimentConfig()
    assert cfg.method.name == "asvd" and cfg.train.schedule == "constant"
    for section in dataclasses.fields(cfg):
        cls = type(getattr(cfg, section.name))
        docs = c.field_docs(cls)
        missing = [f.name for f in dataclasses.fields(cls) if f.name not in docs]
        assert not missing, f"{cls.__name__} fields without a docstring: {missing}"


def test_yaml_then_overrides(tmp_path):
    p = tmp_path / "x.yaml"
    p.write_text("method: {name: seqft}\ntrain:\n  lr: 1.0e-4\n  batch_size: 4\ndata: {tasks: [a, b]}\n")
    cfg = load_config(p, ["train.lr=3e-5", "method.rank_policy.paper.trr=0.4", "data.order=2"])
    assert cfg.method.name == "seqft"
    assert cfg.train.lr == pytest.approx(3e-5) and isinstance(cfg.train.lr, float)
    assert cfg.train.batch_size == 4
    assert cfg.method.rank_policy == PaperPolicy(trr=0.4) and cfg.data.order == 2
    assert cfg.data.tasks == ("a", "b")
    # Round trip through the resolved YAML.
    again = apply_overrides(c.ExperimentConfig(), yaml.safe_load(c.to_yaml(cfg)))
    assert again == cfg


def test_typo_names_key_and_suggests(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("train: {learning_rate: 0.1}\n")
    with pytest.raises(c.ConfigError, match=r"train\.learning_rate"):
        load_config(p)
    with pytest.raises(c.ConfigError, match=r"did you mean 'train.batch_size'"):
        load_config(None, ["train.batchsize=3"])
    with pytest.raises(c.ConfigError, match=r"unknown config key 'trian'.*'train'"):
        load_config(None, ["trian.lr=3"])


def test_wrong_types_and_choices():
    with pytest.raises(c.ConfigError, match=r"train\.batch_size: expected an integer"):
        load_config(None, ["train.batch_size=abc"])
    with pytest.raises(c.ConfigError, match=r"method\.name: 'asdv'.*did you mean 'asvd'"):
        load_config(None, ["method.name=asdv"])
    with pytest.raises(c.ConfigError, match=r"train\.fresh_optimizer: expected true/false"):
        load_config(None, ["train.fresh_optimizer=3"])
    with pytest.raises(c.ConfigError, match="mrr"):
        load_config(None, ["method.mrr=0.9", "method.trr=0.5"])
    with pytest.raises(c.ConfigError, match="does not exist"):
        load_config("/nonexistent/config.yaml")
    with pytest.raises(c.ConfigError, match="section.key=value"):
        parse_override("train.lr")


def test_rank_policy_forms():
    assert c.ExperimentConfig().method.rank_policy == PaperPolicy()
    load = lambda *o: load_config(None, list(o)).method.rank_policy  # noqa: E731
    assert load("method.rank_policy=energy") == EnergyPolicy()
    assert load("method.rank_policy={uniform: {fraction: 0.3}}") == UniformPolicy(0.3)
    assert load("method.rank_policy.budget.max_fraction=0.9") == BudgetPolicy(max_fraction=0.9)
    # A name after the same policy's fields keeps them; another name starts from its defaults.
    assert load("method.rank_policy.budget.trr=0.6", "method.rank_policy=budget") == \
        BudgetPolicy(trr=0.6)
    assert load("method.rank_policy.budget.trr=0.6", "method.rank_policy=paper") == PaperPolicy()
    # Overrides apply together: raising mrr above the old trr first is fine.
    assert load("method.rank_policy.paper.mrr=0.9", "method.rank_policy.paper.trr=0.95") == \
        PaperPolicy(mrr=0.9, trr=0.95)
    assert load("method.rank_policy=progressive") == ProgressivePolicy()
    assert load("method.rank_policy.paper.nonsquare=polar").nonsquare == "polar"


def test_rank_policy_errors_name_the_key(tmp_path):
    cases = {
        "method.rank_policy=papr": r"--set method.rank_policy=papr: method.rank_policy: 'papr' "
                                   r"is not a rank policy \(did you mean 'paper'\?\)",
        "method.rank_policy.paper.tau=1": r"unknown config key 'method.rank_policy.paper.tau'",
        "method.rank_policy.paper.trr=1.5": r"--set method.rank_policy.paper.trr=1.5: "
                                            r"method.rank_policy.paper: PaperPolicy.trr must be",
        "method.rank_policy.paper.trr=high": r"method.rank_policy.paper.trr: expected a number",
        "method.rank_policy={paper: {}, budget: {}}": r"method.rank_policy: expected a policy name",
        "method.rank_policy={budget: {trr: 0.95, max_fraction: 0.9}}":
            r"method.rank_policy.budget: BudgetPolicy: need "
            r"mrr <= trr <= max_fraction",
    }
    for override, pattern in cases.items():
        with pytest.raises(c.ConfigError, match=pattern):
            load_config(None, [override])
    p = tmp_path / "p.yaml"
    p.write_text("method: {rank_policy: {energy: {tau: 2}}}\n")
    with pytest.raises(c.ConfigError, match=rf"{p}: method.rank_policy.energy: EnergyPolicy.tau"):
        load_config(p)


def test_flat_legacy_policy_keys_still_load(tmp_path):
    # A saved run dir's config.yaml from before the policy moved: every flat key written out.
    old = {"name": "asvd", "projection": "strict", "rank_policy": "budget", "mrr": 0.1, "trr": 0.6,
           "max_fraction": 0.9, "fraction": 0.5, "tau": 0.95, "stats_examples": 32}
    p = tmp_path / "config.yaml"
    p.write_text(yaml.safe_dump({"method": old}))
    cfg = load_config(p)
    assert cfg.method.rank_policy == BudgetPolicy(trr=0.6, max_fraction=0.9)
    assert cfg == apply_overrides(c.ExperimentConfig(), yaml.safe_load(p.read_text()))
    assert c.to_dict(cfg)["method"]["rank_policy"] == {"budget": {
        "mrr": 0.1, "trr": 0.6, "max_fraction": 0.9, "nonsquare": "truncate", "clip_negative": True}}
    # The old command-line forms.
    assert load_config(None, ["method.rank_policy=budget", "method.max_fraction=0.9"]).method \
        .rank_policy == BudgetPolicy(max_fraction=0.9)
    assert load_config(None, ["method.mrr=0.05", "method.trr=0.4"]).method.rank_policy == \
        PaperPolicy(mrr=0.05, trr=0.4)
    assert load_config(None, ["method.rank_policy=uniform", "method.fraction=0.3"]).method \
        .rank_policy == UniformPolicy(0.3)
    # A flat key the chosen policy does not have changed nothing before: unless it holds the
    # old default (a saved config lists them all), it is an error naming it.
    with pytest.raises(c.ConfigError, match=r"--set method.tau=0.5: method.tau: 0.5 does "
                                            r"nothing with rank policy 'paper'.*energy: \{tau: 0.5"):
        load_config(None, ["method.tau=0.5"])
    with pytest.raises(c.ConfigError, match=r"--set method.mrr=0.9: .*need mrr <= trr"):
        load_config(None, ["method.mrr=0.9"])
    with pytest.raises(c.ConfigError, match=r"method.trr: a flat policy key beside"):
        apply_overrides(c.ExperimentConfig(), {"method": {"rank_policy": {"paper": {}},
                                                            "trr": 0.5}})


@pytest.mark.parametrize("override", ["method.rank_policy=progressive",
                                      "method.rank_policy.budget.max_fraction=0.9",
                                      "method.rank_policy.uniform.fraction=0.25"])
def test_documented_config_loads_back_for_every_policy(tmp_path, override):
    cfg = load_config(None, [override])
    p = tmp_path / "c.yaml"
    p.write_text(documented_yaml(cfg))
    assert load_config(p) == cfg
