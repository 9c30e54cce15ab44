"""The experiment scripts (scripts/*.sh) run every cell they name with a valid configuration.

A fake CLI (``ASVD_JAX_CLI``) records each call instead of training, so these tests read what
the scripts would run: every sweep cell's overrides load (a typo in a key fails here, not an
hour into a sweep), and the seed list reaches each run.
"""

from __future__ import annotations

import os
import shlex
import stat
import subprocess

import pytest

from asvd_jax.cl import load_config

ROOT = os.path.join(os.path.dirname(__file__), "..")


def _fake_cli(tmp_path):
    log = tmp_path / "calls.txt"
    cli = tmp_path / "fake-cli"
    # One line per call, every argument shell-quoted, so the test can split it back. With
    # FINISH=1 a `run --run-dir D` leaves D/seed0/metrics.json, as a finished seed would.
    cli.write_text('#!/usr/bin/env bash\nprintf "%q " "$@" >> "$CALLS"\necho >> "$CALLS"\n'
                   'prev=""\nfor a in "$@"; do\n'
                   '  if [ "$prev" = --run-dir ] && [ "${FINISH:-0}" = 1 ]; then\n'
                   '    mkdir -p "$a/seed0" && echo "{}" > "$a/seed0/metrics.json"\n  fi\n'
                   '  prev=$a\ndone\n')
    cli.chmod(cli.stat().st_mode | stat.S_IXUSR)
    return cli, log


def _run_script(tmp_path, script, args, **env):
    cli, log = _fake_cli(tmp_path)
    full_env = {**os.environ, "ASVD_JAX_CLI": str(cli), "CALLS": str(log), **env}
    proc = subprocess.run(["bash", os.path.join("scripts", script), *args], cwd=ROOT,
                          env=full_env, capture_output=True, text=True, timeout=60)
    calls = [shlex.split(line) for line in log.read_text().splitlines()] if log.exists() else []
    return proc, calls


def _config_and_overrides(call):
    """(config path, [k=v, ...], run dir) of one recorded `run CONFIG --set ... --run-dir D`."""
    assert call[0] == "run", call
    config, sets, run_dir = call[1], [], None
    i = 2
    while i < len(call):
        if call[i] == "--set":
            sets.append(call[i + 1])
            i += 2
        elif call[i] == "--run-dir":
            run_dir = call[i + 1]
            i += 2
        else:
            i += 1
    return config, sets, run_dir


def _run_configs(calls):
    """``{run dir name: loaded config}`` of the recorded `run` calls, in call order (loading
    raises on an unknown key or value)."""
    out = {}
    for call in calls:
        if call[0] == "run":
            config, sets, run_dir = _config_and_overrides(call)
            out[os.path.basename(run_dir)] = load_config(os.path.join(ROOT, config), sets)
    return out


def _sweep_names():
    with open(os.path.join(ROOT, "scripts", "forgetting_sweep.sh")) as f:
        text = f.read()
    body = text.split("NAMES=(", 1)[1].split(")", 1)[0]
    return body.split()


def test_forgetting_sweep_every_cell_loads(tmp_path):
    names = _sweep_names()
    assert len(names) == len(set(names)), "a sweep cell is listed twice"
    proc, calls = _run_script(tmp_path, "forgetting_sweep.sh", [str(tmp_path / "out"), *names],
                              SEEDS="0,1", SPLIT="dev", FINISH="1")
    assert proc.returncode == 0, proc.stderr
    assert sum(c[0] == "run" for c in calls) == len(names)  # each cell run once
    assert calls[-1] == ["report", *(str(tmp_path / "out" / n) for n in names)]
    cfgs = _run_configs(calls)  # raises on an unknown key or value
    assert list(cfgs) == names
    for name, cfg in cfgs.items():
        assert cfg.run.seeds == (0, 1), name
        assert cfg.eval.split == "dev" and cfg.train.stop_holdout == 30, name
    # The preset's method carries EWC's penalty; each cell of the method alone must turn it off
    # and each "-ewc<lambda>" cell must train with its own lambda, whatever the preset says.
    from asvd_jax.analysis import ewc_penalty_lambda
    from asvd_jax.cl._config import to_dict

    for name, cfg in cfgs.items():
        if cfg.method.name != "asvd":
            continue
        tag = next((p[3:] for p in name.split("-") if p.startswith("ewc")), None)
        want = float(tag) if tag else None
        assert ewc_penalty_lambda(to_dict(cfg.method)) == want, name


def test_update_subspace_share_script(tmp_path):
    """scripts/update_subspace_share.py: a run of this method puts none of a task's change in
    the subspace its own rank plan protected; SeqFT's change has energy there; a run without
    every task-end checkpoint is refused by name."""
    import sys

    from _helpers.runs import TINY_RUN

    from asvd_jax.cl import run

    sys.path.insert(0, os.path.join(ROOT, "scripts"))
    try:
        from update_subspace_share import shares
    finally:
        sys.path.pop(0)
    base = TINY_RUN + ["checkpoint.export_hf=false", "eval.zero_shot=false"]
    dirs = {}
    for method, keep in (("asvd", 0), ("seqft", 0), ("ewc", 1)):
        dirs[method] = str(tmp_path / method)
        run(load_config(None, base + [f"method.name={method}", f"checkpoint.keep_tasks={keep}"]),
            run_dir=dirs[method])
    own = shares(dirs["asvd"], [0.5], dirs["asvd"])
    seq = shares(dirs["seqft"], [0.5], dirs["asvd"])
    assert [r["subspace"] for r in own] == ["uniform 0.5", "this method's plan"]
    assert own[1]["share"] < 1e-8 < own[1]["random"]  # the projection kept it out
    assert 0.05 < seq[1]["share"] < 1 and 0 < seq[0]["share"] < 1
    for r in own + seq:  # 1 - (1 - k/m)(1 - k/n) of an isotropic change, k = m/2 here
        assert 0 < r["random"] < 1
    with pytest.raises(SystemExit, match="keep_tasks=0"):
        shares(dirs["ewc"], [0.5], None)
    with pytest.raises(SystemExit, match="--rank-plans: 0 files match"):  # SeqFT plans nothing
        shares(dirs["seqft"], [0.5], dirs["seqft"])


@pytest.mark.parametrize("order, want", [(None, 1), ("3", 3)])
def test_forgetting_sweep_order(tmp_path, order, want):
    env = {} if order is None else {"ORDER": order}
    proc, calls = _run_script(tmp_path, "forgetting_sweep.sh",
                              [str(tmp_path / "out"), "minilm-seqft-seen", "minilm-ewc1e6-seen"], **env)
    assert proc.returncode == 0, proc.stderr
    cfgs = _run_configs(calls)
    assert [c.data.order for c in cfgs.values()] == [want, want]


def test_forgetting_sweep_unknown_cell_fails_before_running(tmp_path):
    proc, calls = _run_script(tmp_path, "forgetting_sweep.sh",
                              [str(tmp_path / "out"), "minilm-seqft-seen", "minilm-nosuch"])
    assert proc.returncode == 2 and "unknown run 'minilm-nosuch'" in proc.stderr
    assert calls == []


@pytest.mark.parametrize("seeds, want", [(None, (0, 1, 2)), ("4", (4,))])
def test_results_table_passes_the_seed_list(tmp_path, seeds, want):
    env = {} if seeds is None else {"SEEDS": seeds}
    names = ["minilm-o3-lora", "smollm2-o2-asvd", "smollm2-o1-seqft", "minilm-o1-asvd"]
    out = tmp_path / "t"
    proc, calls = _run_script(tmp_path, "results_table.sh", [str(out), *names], FINISH="1", **env)
    assert proc.returncode == 0, proc.stderr
    cfgs = _run_configs(calls)
    assert list(cfgs) == names
    for name, cfg in cfgs.items():
        assert cfg.run.seeds == want
        assert cfg.method.name == name.rsplit("-", 1)[1]
    # The table reads the finished runs in its order (MiniLM order 1, SmolLM2, ...), then the rest.
    assert calls[-1] == ["report", *(str(out / n) for n in ("minilm-o1-asvd", "smollm2-o1-seqft",
                                                           "minilm-o3-lora", "smollm2-o2-asvd"))]


@pytest.mark.parametrize("script, name", [("results_table.sh", "minilm-o1-asvd"),
                                          ("forgetting_sweep.sh", "minilm-seqft-seen"),
                                          ("dev_sweep.sh", "minilm-ewc1e4")])
def test_no_finished_run_no_report(tmp_path, script, name):
    proc, calls = _run_script(tmp_path, script, [str(tmp_path / "t"), name])
    assert proc.returncode == 0, proc.stderr
    assert [c[0] for c in calls] == ["run"]


def test_results_table_bad_name(tmp_path):
    proc, calls = _run_script(tmp_path, "results_table.sh", [str(tmp_path / "t"), "minilm-o4-asvd"])
    assert proc.returncode == 2 and "bad run name 'minilm-o4-asvd'" in proc.stderr
    assert calls == []


def test_dev_sweep_every_cell_loads_on_dev(tmp_path):
    with open(os.path.join(ROOT, "scripts", "dev_sweep.sh")) as f:
        names = f.read().split("NAMES=(", 1)[1].split(")", 1)[0].split()
    assert len(names) == len(set(names)), "a sweep cell is listed twice"
    proc, calls = _run_script(tmp_path, "dev_sweep.sh", [str(tmp_path / "out"), *names], FINISH="1")
    assert proc.returncode == 0, proc.stderr
    assert calls[-1] == ["report", *(str(tmp_path / "out" / n) for n in names)]
    cfgs = _run_configs(calls)
    assert list(cfgs) == names
    for name, cfg in cfgs.items():
        assert cfg.eval.split == "dev", name  # never the test split
        assert (cfg.model.family == "bert") == name.startswith("minilm-"), name
    cfg = cfgs["minilm-ewc1e4"]
    assert cfg.method.name == "ewc" and cfg.method.ewc_lambda == 1e4
    cfg = cfgs["minilm-olora-lr1e-4"]
    assert cfg.method.name == "olora" and cfg.method.lora_lr == 1e-4
    assert cfg.train.lr == 5e-5 and cfg.train.epochs == 2  # the MiniLM preset underneath


def test_minilm_orders_share_the_dev_chosen_baseline_settings():
    """The baselines' settings were chosen once, on order 1's dev split; every order's preset
    (what results_table.sh runs) carries the same ones."""
    cfgs = [load_config(os.path.join(ROOT, "experiments", f"offline_minilm_order{o}.yaml"))
            for o in (1, 2, 3)]
    assert {(c.method.ewc_lambda, c.method.lora_lr, c.method.lora_rank) for c in cfgs} == {(1e5, 1e-3, 8)}
    assert [c.data.order for c in cfgs] == [1, 2, 3]
