import dataclasses

import pytest
import yaml

from asvd_jax.cl import _config as c


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
    cfg = c.load_config(p, ["train.lr=3e-5", "method.trr=0.4", "data.order=2"])
    assert cfg.method.name == "seqft"
    assert cfg.train.lr == pytest.approx(3e-5) and isinstance(cfg.train.lr, float)
    assert cfg.train.batch_size == 4
    assert cfg.method.trr == 0.4 and cfg.data.order == 2
    assert cfg.data.tasks == ("a", "b")
    # Round trip through the resolved YAML.
    again = c.apply_overrides(c.ExperimentConfig(), yaml.safe_load(c.to_yaml(cfg)))
    assert again == cfg


def test_typo_names_key_and_suggests(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("train: {learning_rate: 0.1}\n")
    with pytest.raises(c.ConfigError, match=r"train\.learning_rate"):
        c.load_config(p)
    with pytest.raises(c.ConfigError, match=r"did you mean 'train.batch_size'"):
        c.load_config(None, ["train.batchsize=3"])
    with pytest.raises(c.ConfigError, match=r"unknown config key 'trian'.*'train'"):
        c.load_config(None, ["trian.lr=3"])


def test_wrong_types_and_choices():
    with pytest.raises(c.ConfigError, match=r"train\.batch_size: expected an integer"):
        c.load_config(None, ["train.batch_size=abc"])
    with pytest.raises(c.ConfigError, match=r"method\.name: 'asdv'.*did you mean 'asvd'"):
        c.load_config(None, ["method.name=asdv"])
    with pytest.raises(c.ConfigError, match=r"train\.fresh_optimizer: expected true/false"):
        c.load_config(None, ["train.fresh_optimizer=3"])
    with pytest.raises(c.ConfigError, match="mrr"):
        c.load_config(None, ["method.mrr=0.9", "method.trr=0.5"])
    with pytest.raises(c.ConfigError, match="does not exist"):
        c.load_config("/nonexistent/config.yaml")
    with pytest.raises(c.ConfigError, match="section.key=value"):
        c.parse_override("train.lr")
