"""Files the library writes follow the user's umask (issue 16, item 6): not 0600 temp files."""

import os
import stat

import numpy as np
import pytest


@pytest.fixture
def umask_027():
    old = os.umask(0o027)
    yield 0o640
    os.umask(old)


def _mode(path):
    return stat.S_IMODE(os.stat(path).st_mode)


def test_safetensors_export_mode(tmp_path, umask_027):
    from asvd_jax.models._hf_io import write_safetensors

    write_safetensors(tmp_path / "m", {"w": np.ones((2, 2), np.float32)}, {"model_type": "x"})
    assert _mode(tmp_path / "m" / "model.safetensors") == umask_027
    assert _mode(tmp_path / "m" / "config.json") == umask_027


def test_rank_plan_save_mode(tmp_path, umask_027):
    from asvd_jax.ranks import RankEntry, RankPlan

    entry = RankEntry(path="a/kernel", shape=(4, 6), min_dim=4, importance=1.0, k=2,
                      protected_fraction=0.5, energy_retained=0.9)
    plan = RankPlan(entries=(entry,), policy="uniform", policy_params={"fraction": 0.5})
    plan.save(tmp_path / "plan.json")
    assert _mode(tmp_path / "plan.json") == umask_027
    assert RankPlan.load(tmp_path / "plan.json").ranks() == plan.ranks()
