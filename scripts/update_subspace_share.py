"""Where a run's weight changes went: the share of each task's change that lies in the subspace
this method would have protected at that task's start (docs/forgetting.md, "Where EWC learns").

    python scripts/update_subspace_share.py RUN_DIR [RUN_DIR ...] [--fractions 0.25,0.5]
                                            [--rank-plans ASVD_RUN_DIR] [--json OUT.json]

Each RUN_DIR must hold every task-end checkpoint (run with ``--set checkpoint.keep_tasks=0``).
For the task t >= 1 of a run, Delta_t = W(end of t) - W(end of t - 1) at every target matrix,
and the protected subspace is that of the strict projection, (I - P_U) Delta (I - P_V) kept,
with U, V the top-k singular vectors of W(end of t - 1): k = fraction * min dim (``--fractions``,
the ``uniform`` rank policy), or the k this method chose at that boundary (``--rank-plans``:
an asvd run's rank_plans/, the paper's policy). The share is ||Delta - kept||^2 / ||Delta||^2,
summed over the targets; a change with no preferred direction would put
1 - (1 - k/m)(1 - k/n) of its energy there (the "random" column), so a share above that says
the run learned mostly along the top singular directions the method protects.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import sys

import jax
import numpy as np


def _task_params(run_dir: str):
    """The run's params at every task end, and its target matrices."""
    from asvd_jax.cl import load_config
    from asvd_jax.cl._checkpoint import Checkpointer
    from asvd_jax.cl._families import build_adapter, select_run_targets

    config = load_config(os.path.join(run_dir, "config.yaml"), [])
    _, adapter, default_targets = build_adapter(config)
    ckpt = Checkpointer(run_dir)
    names = sorted(n for n in ckpt.committed() if n.startswith("task-"))
    stages = [int(n.split("-")[1]) for n in names]
    if stages != list(range(len(stages))) or len(stages) < 2:
        raise SystemExit(f"{run_dir}: task-end checkpoints {names}; every task's is needed "
                         f"(run with --set checkpoint.keep_tasks=0)")
    params = [ckpt.restore(n, {"params": adapter.params})["params"] for n in names]
    return params, select_run_targets(config.method, params[0], default_targets)


def _ranks_from_plan(plan_dir: str, stage: int) -> dict[str, int]:
    pattern = os.path.join(plan_dir, "rank_plans", f"task-{stage:04d}-*.json")
    found = glob.glob(pattern)
    if len(found) != 1:
        raise SystemExit(f"--rank-plans: {len(found)} files match {pattern} (one per task "
                         f"boundary expected: an asvd run directory of the same sequence)")
    with open(found[0]) as f:
        return {e["path"]: int(e["k"]) for e in json.load(f)["entries"]}


def shares(run_dir: str, fractions: list[float], plan_dir: str | None) -> list[dict]:
    import asvd_jax as aj
    from asvd_jax import analysis as an

    params, targets = _task_params(run_dir)
    paths = [p for p, _ in aj.list_targets(targets)]
    rows = []
    for t in range(1, len(params)):
        before = params[t - 1]
        delta = jax.tree.map(lambda a, b: np.asarray(a, np.float64) - np.asarray(b, np.float64),
                             params[t], before)
        leaves = {p: v for p, v in aj.flatten_with_paths(delta)[0] if p in paths}
        energy = {p: float(np.sum(v ** 2)) for p, v in leaves.items()}
        shape = {p: v.shape for p, v in leaves.items()}
        total = sum(energy.values())
        svds = aj.weight_svds(before, targets)  # one SVD per matrix, cut to every k below
        options = [(f"uniform {f:g}", None, f) for f in fractions]
        if plan_dir:
            options.append(("this method's plan", _ranks_from_plan(plan_dir, t), None))
        for label, ranks, fraction in options:
            if ranks is None:
                ranks = {p: int(fraction * min(shape[p])) for p in paths}
            bases = aj.compute_bases(before, ranks, targets, svds=svds)
            ratio = an.weight_change_in_protected(delta, bases)
            share = sum(float(ratio[p]) ** 2 * energy[p] for p in paths) / total
            # An isotropic change: 1 - (1 - k/rows)(1 - k/cols) of its energy is protected.
            rand = sum((1 - (1 - ranks[p] / shape[p][0]) * (1 - ranks[p] / shape[p][1]))
                       * energy[p] for p in paths) / total
            rows.append({"run": run_dir, "task": t, "subspace": label, "share": share,
                         "random": rand, "matrices": len(paths)})
    return rows


def _label(run_dir: str) -> str:
    """``parent/seed0`` for a seed of a multi-seed run, else the folder name."""
    head, tail = os.path.split(os.path.normpath(run_dir))
    return f"{os.path.basename(head)}/{tail}" if tail.startswith("seed") else tail


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("run_dirs", nargs="+")
    ap.add_argument("--fractions", default="0.25,0.5")
    ap.add_argument("--rank-plans", default=None, help="an asvd run directory with rank_plans/")
    ap.add_argument("--json", default=None)
    a = ap.parse_args(argv)
    fractions = [float(x) for x in a.fractions.split(",") if x]
    rows = [r for d in a.run_dirs for r in shares(d, fractions, a.rank_plans)]
    print("| run | task | protected subspace | share of the change's energy | random subspace |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(f"| {_label(r['run'])} | {r['task']} | {r['subspace']} | "
              f"{r['share']:.3f} | {r['random']:.3f} |")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(rows, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
