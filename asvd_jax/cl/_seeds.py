"""Multi-seed runs: one config, one run directory per seed (``run.seeds``).

``run_seeds(config)`` runs ``config`` once per seed ``k`` of ``run.seeds`` in
``<run dir>/seed<k>`` with ``train.seed = data.seed = k``: the seed changes the offline
suite's class-balanced sample and the size caps' draws (data), the batch order, the rank
statistics' examples and the method's randomness (LoRA / O-LoRA init). Each seed directory is
an ordinary run directory (resumable on its own); ``asvd-jax report <run dir>`` reads them
back as one group (``asvd_jax.analysis.group_by_seed``).
"""

from __future__ import annotations

import dataclasses
import os

from asvd_jax.cl._config import ExperimentConfig, validate


def seed_dir(parent: str, seed: int) -> str:
    return os.path.join(parent, f"seed{seed}")


def seed_configs(config: ExperimentConfig) -> list[tuple[int, ExperimentConfig]]:
    """``[(k, config with train.seed = data.seed = k and run.seeds empty)]`` per seed."""
    seeds = list(config.run.seeds)
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"run.seeds: seeds repeat: {seeds}")
    if any(k < 0 for k in seeds):
        raise ValueError(f"run.seeds: seeds must be >= 0, got {seeds}")
    out = []
    for k in seeds:
        c = dataclasses.replace(config, train=dataclasses.replace(config.train, seed=k),
                                data=dataclasses.replace(config.data, seed=k),
                                run=dataclasses.replace(config.run, seeds=()))
        out.append((k, validate(c)))
    return out


def seeds_parent(config: ExperimentConfig, run_dir: str | None = None) -> str:
    """The folder holding the ``seed<k>`` run directories (``run_dir`` or out_dir/name)."""
    from asvd_jax.cl._runner import default_run_name

    c = config
    if run_dir is None and not c.run.name:
        # A timestamped default name would differ between this call and a resumption.
        run_dir = os.path.join(c.run.out_dir, default_run_name(c))
    return os.path.abspath(run_dir or os.path.join(c.run.out_dir, c.run.name))


def _status(run_dir: str) -> str | None:
    import json

    path = os.path.join(run_dir, "metrics.json")
    if not os.path.isfile(path):
        return None
    with open(path) as f:
        return json.load(f).get("status")


def run_seeds(config: ExperimentConfig, run_dir: str | None = None, resume: bool = False,
              log=print) -> list[dict]:
    """Run every seed of ``config.run.seeds`` under ``run_dir`` (default out_dir/name).

    With ``resume`` a seed whose run is complete is read back, not rerun, and a started one
    continues from its checkpoint; without it an existing seed directory is an error (the
    runner's), so nothing is overwritten.
    """
    from asvd_jax.cl._report import load_metrics
    from asvd_jax.cl._runner import run

    if not config.run.seeds:
        raise ValueError("run.seeds is empty: use asvd_jax.cl.run for a single run")
    parent = seeds_parent(config, run_dir)
    results = []
    for k, cfg in seed_configs(config):
        d = seed_dir(parent, k)
        status = _status(d)
        if resume and status == "complete":
            log(f"[asvd-jax] seed {k}: complete in {d}, not rerun")
            results.append(load_metrics(d))
            continue
        log(f"[asvd-jax] seed {k} -> {d}")
        started = resume and os.path.isfile(os.path.join(d, "config.yaml"))
        results.append(run(cfg, run_dir=d, resume=started))
    return results
