"""The same run on 8 fake CPU devices (data 2 x fsdp 4) gives the losses of one device."""

import os
import subprocess
import sys
import textwrap

import pytest

from asvd_jax.cl._mesh import leaf_spec

SCRIPT = textwrap.dedent("""
    import json, sys
    import jax
    import numpy as np
    from asvd_jax.cl import Runner, load_config
    from asvd_jax.cl._fixture import write_fixture
    assert jax.device_count() == 8, jax.device_count()
    root = sys.argv[1]
    seq = write_fixture(root + "/fx", n_train=24, n_test=4)
    base = ["model.source=random", "model.random_width=32", "data.suite=custom", "data.max_len=64",
            f"data.path={seq}", "train.lr=3e-3", "train.batch_size=8", "train.max_steps=3",
            "eval.zero_shot=false", "eval.lm_loss=false", "checkpoint.export_hf=false",
            "method.stats_examples=8", "run.progress=false", "eval.batch_size=8"]
    out = {}
    for name, mesh in (("one", []), ("mesh", ["mesh.data=2", "mesh.fsdp=4"])):
        r = Runner(load_config(None, base + mesh), run_dir=f"{root}/{name}")
        m = r.run()
        out[name] = [row["train"]["losses"] for row in m["rows"]]
        out[name + "_acc"] = m["option_accuracy_matrix"]
        if name == "mesh":
            shardings = {str(x.sharding.spec) for x in jax.tree.leaves(r.params)}
            out["specs"] = sorted(shardings)
            out["ndev"] = sorted({len(x.sharding.device_set) for x in jax.tree.leaves(r.params)})
    print("RESULT" + json.dumps(out))
""")


def test_leaf_spec_rule():
    assert str(leaf_spec((64, 128), 4)) == str(leaf_spec((64, 128), 4))
    assert leaf_spec((64, 128), 4)[1] == "fsdp"          # the largest divisible axis
    assert leaf_spec((6, 7), 4) == leaf_spec((), 4)      # nothing divisible: replicated
    assert leaf_spec((128, 64), 1) == leaf_spec((), 1)


def test_eight_fake_devices_same_losses(tmp_path):
    from tolerances import assert_close

    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8", JAX_PLATFORMS="cpu")
    proc = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path)], env=env, cwd=os.getcwd(),
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    import json

    line = next(l for l in proc.stdout.splitlines() if l.startswith("RESULT"))
    out = json.loads(line[len("RESULT"):])
    assert any("fsdp" in s for s in out["specs"]), out["specs"]  # params really sharded
    assert max(out["ndev"]) == 8
    for one, mesh in zip(out["one"], out["mesh"]):
        assert len(one) == len(mesh) == 3
        assert_close(mesh, one, "float32")
    assert out["one_acc"] == out["mesh_acc"]
