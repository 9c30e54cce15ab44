"""Runs that differ only by seed, summarised: mean +- std and intervals against a baseline.

``group_by_seed(run_dirs)`` groups run directories whose configs are equal once the seeds
(``train.seed``, ``data.seed``), the run bookkeeping (``run.*``) and the ``method.*`` fields
the run's method never reads (``unread_method_fields``: SeqFT's ``ewc_lambda``) are ignored.
A directory without ``metrics.json`` whose ``seed<k>/`` subfolders hold runs (what
``run.seeds`` writes) stands for those runs. ``seed_summary`` gives each group's mean and
sample standard deviation (ddof = 1) of the final metrics over its seeds, and, against the
baseline group (SeqFT by default: the group with that method and the same model, data and
eval settings), the mean gaps and the paired bootstrap 95% intervals of AA(group) -
AA(baseline) over the seeds both groups ran (``asvd_jax.metrics.paired_bootstrap``;
docs/analysis.md explains the two intervals).
"""

from __future__ import annotations

import dataclasses
import glob
import os
import re
from typing import Any, Mapping, Sequence

import numpy as np

from asvd_jax.analysis._runs import Run, load_run, run_summary

_SEED_DIR = re.compile(r"seed(\d+)$")
_IGNORED = {("train", "seed"), ("data", "seed")}
METRICS = ("average_accuracy", "plasticity", "bwt", "forgetting")


@dataclasses.dataclass(frozen=True)
class SeedGroup:
    """Runs of one config over several seeds."""

    label: str
    """The multi-seed parent's folder name when every run is one of its ``seed<k>/`` (what
    ``run.seeds`` writes, e.g. ``minilm-o2-asvd``), else ``method``; ``#n`` is appended
    when two groups would share a label."""
    key: tuple
    """The config with seeds, ``run.*`` and the method's unread fields removed, as a hashable
    tuple."""
    runs: tuple[Run, ...]
    """The runs, by increasing seed."""
    seeds: tuple[int, ...]
    """``train.seed`` of each run."""

    @property
    def method(self) -> str:
        return self.runs[0].method


def expand_run_dirs(run_dirs: Sequence[str]) -> list[str]:
    """Each directory, or its ``seed<k>/`` run directories when it is a multi-seed parent."""
    out = []
    for d in run_dirs:
        if os.path.isfile(os.path.join(d, "metrics.json")):
            out.append(d)
            continue
        subs = sorted((p for p in glob.glob(os.path.join(d, "seed*"))
                       if _SEED_DIR.search(p) and os.path.isfile(os.path.join(p, "metrics.json"))),
                      key=lambda p: int(_SEED_DIR.search(p).group(1)))
        if not subs:
            raise FileNotFoundError(f"{os.path.join(d, 'metrics.json')}: missing, and no seed<k>/ "
                                    f"run directories under {d!r}")
        out.extend(subs)
    return out


def _freeze(x: Any) -> Any:
    if isinstance(x, dict):
        return tuple(sorted((k, _freeze(v)) for k, v in x.items()))
    if isinstance(x, list):
        return tuple(_freeze(v) for v in x)
    return x


# The method.* fields (cl's MethodConfig) only some methods read; every other field is read by
# every method. Two runs that differ in a field their method does not read (SeqFT at the
# preset's EWC lambda and at another) ran the same experiment, so grouping by seed ignores it.
_ASVD_ONLY = ("projection", "rank_policy", "projection_precision", "group_shapes", "fixed_layout",
              "leakage_from", "train_non_targets", "add_ewc")
_READ_BY = {**dict.fromkeys(_ASVD_ONLY, ("asvd",)), "ewc_lambda": ("ewc",),
            "add_ewc_lambda": (),
            **dict.fromkeys(("lora_rank", "lora_alpha", "lora_lr"), ("lora", "olora")),
            **dict.fromkeys(("olora_lambda1", "olora_lambda2"), ("olora",))}
"""Field -> the methods that always read it. ``asvd`` with ``add_ewc`` also reads
``add_ewc_lambda``, or ``ewc_lambda`` when that is unset (``ewc_penalty_lambda``)."""


def ewc_penalty_lambda(method: Mapping[str, Any]) -> float | None:
    """The strength of the EWC penalty ``method`` (a MethodConfig as a dict) trains with, or
    None when it has none: ``ewc_lambda`` for ``ewc``; for ``asvd`` with ``add_ewc``,
    ``add_ewc_lambda`` or, unset (and in runs made before it existed), ``ewc_lambda``."""
    name = method.get("name")
    if name == "ewc":
        return method.get("ewc_lambda")
    if name == "asvd" and method.get("add_ewc"):
        lam = method.get("add_ewc_lambda")
        return method.get("ewc_lambda") if lam is None else lam
    return None


def unread_method_fields(method: Mapping[str, Any]) -> frozenset[str]:
    """The fields of ``method`` (a MethodConfig as a dict, e.g. a saved run's ``method:``
    section) that its method never reads: the EWC lambdas it does not train with
    (``ewc_penalty_lambda``), the adapter fields unless LoRA / O-LoRA, the projection and rank
    fields unless ``asvd``."""
    name = method.get("name")
    read = {f for f, names in _READ_BY.items() if name in names}
    if name == "asvd" and method.get("add_ewc"):
        read.add("ewc_lambda" if method.get("add_ewc_lambda") is None else "add_ewc_lambda")
    return frozenset(f for f in _READ_BY if f in method and f not in read)


def _key(run: Run) -> tuple:
    if run.config is None:
        raise ValueError(f"{run.run_dir}: config.yaml missing; cannot tell which runs differ only by seed")
    cfg = {s: dict(v) for s, v in run.config.items() if s != "run" and isinstance(v, dict)}
    for section, name in _IGNORED:
        cfg.get(section, {}).pop(name, None)
    method = cfg.get("method", {})
    if method.get("name") == "asvd" and method.get("add_ewc"):
        # One key for one penalty, however it was set (add_ewc_lambda, or ewc_lambda alone).
        method["add_ewc_lambda"] = ewc_penalty_lambda(method)
    for name in unread_method_fields(method):
        del method[name]
    return _freeze(cfg)


def _seed(run: Run) -> int:
    return int(((run.config or {}).get("train") or {}).get("seed", 0))


def _parent_name(runs: Sequence[Run]) -> str | None:
    """The folder name of the one multi-seed parent holding every run as ``seed<k>/``."""
    parents = set()
    for run in runs:
        path = os.path.normpath(os.path.abspath(run.run_dir))
        if not _SEED_DIR.match(os.path.basename(path)):
            return None
        parents.add(os.path.dirname(path))
    return os.path.basename(parents.pop()) if len(parents) == 1 else None


def group_by_seed(run_dirs: Sequence[str]) -> list[SeedGroup]:
    """Group run directories (multi-seed parents expanded) by config minus seeds.

    Groups keep the order of their first directory; a seed may appear once per group.
    """
    groups: dict[tuple, list[Run]] = {}
    for d in expand_run_dirs(run_dirs):
        run = load_run(d)
        groups.setdefault(_key(run), []).append(run)
    out, used = [], {}
    for key, runs in groups.items():
        runs = sorted(runs, key=_seed)
        seeds = tuple(_seed(r) for r in runs)
        if len(set(seeds)) != len(seeds):
            dup = sorted({s for s in seeds if seeds.count(s) > 1})
            raise ValueError(f"runs {[r.run_dir for r in runs]} have the same config and seed(s) {dup}")
        name = _parent_name(runs) or runs[0].method
        used[name] = used.get(name, 0) + 1
        label = name if used[name] == 1 else f"{name}#{used[name]}"
        out.append(SeedGroup(label, key, tuple(runs), seeds))
    return out


def _final_correct(run: Run, prefix: str = "") -> list[np.ndarray] | None:
    rows = run.metrics.get("rows") or []
    if len(rows) == 0:
        return None
    ev = rows[-1]["eval"]
    if not all(prefix + "correct" in e for e in ev):
        return None
    return [np.asarray(e[prefix + "correct"], np.float64) for e in ev]


def _comparable_to(group: SeedGroup, other: SeedGroup) -> bool:
    """Same model, data and eval settings (methods and training may differ)."""
    a, b = dict(group.key), dict(other.key)
    return all(a.get(s) == b.get(s) for s in ("model", "data", "eval"))


def seed_summary(groups: Sequence[SeedGroup], baseline: str = "seqft", key: str = "accuracy",
                 n_boot: int = 10000) -> list[dict]:
    """Per group: ``{label, method, seeds, mean: {metric}, std: {metric}, collapsed, vs}``.

    ``vs`` (None for the baseline itself or when no comparable baseline group exists):
    ``{baseline, seeds (paired), gaps: {metric_gap: mean over paired seeds},
    interval_seeds: paired_bootstrap over seed AAs, interval_examples: two-stage bootstrap
    (seeds, then test examples) or None when per-example correctness was not recorded}``.
    """
    from asvd_jax.metrics import paired_bootstrap

    prefix = "" if key == "accuracy" else key[: -len("accuracy")]
    per_run = {id(g): [run_summary(r, key) for r in g.runs] for g in groups}
    out = []
    for g in groups:
        sums = per_run[id(g)]
        mean = {m: float(np.mean([s[m] for s in sums])) for m in METRICS if all(m in s for s in sums)}
        std = {m: float(np.std([s[m] for s in sums], ddof=1)) if len(sums) > 1 else float("nan")
               for m in mean}
        collapsed = [sum(bool(e.get(prefix + "collapsed")) for e in r.metrics["rows"][-1]["eval"])
                     if r.metrics.get("rows") else 0 for r in g.runs]
        entry = {"label": g.label, "method": g.method, "seeds": list(g.seeds), "mean": mean,
                 "std": std, "collapsed": float(np.mean(collapsed)), "vs": None}
        base = next((b for b in groups if b.method == baseline and b is not g and _comparable_to(g, b)), None)
        if base is not None and g.method != baseline:
            paired = [s for s in g.seeds if s in base.seeds]
            if paired:
                mine = [sums[g.seeds.index(s)] for s in paired]
                theirs = [per_run[id(base)][base.seeds.index(s)] for s in paired]
                gaps = {f"{m}_gap": float(np.mean([a[m] - b[m] for a, b in zip(mine, theirs)]))
                        for m in METRICS if all(m in a for a in mine) and all(m in b for b in theirs)}
                iv_seeds = paired_bootstrap([a["average_accuracy"] for a in mine],
                                            [b["average_accuracy"] for b in theirs], n_boot=n_boot)
                iv_ex = None
                cm = [_final_correct(g.runs[g.seeds.index(s)], prefix) for s in paired]
                cb = [_final_correct(base.runs[base.seeds.index(s)], prefix) for s in paired]
                if all(c is not None for c in cm + cb) and all(
                        [x.shape for x in a] == [x.shape for x in b] for a, b in zip(cm, cb)):
                    iv_ex = paired_bootstrap(cm, cb, examples=True, n_boot=n_boot)
                entry["vs"] = {"baseline": base.label, "seeds": paired, "gaps": gaps,
                               "interval_seeds": iv_seeds, "interval_examples": iv_ex}
        out.append(entry)
    return out


def seed_table(groups: Sequence[SeedGroup], baseline: str = "seqft", key: str = "accuracy") -> str:
    """Markdown: mean +- std over seeds and the gaps / 95% intervals against ``baseline``."""
    def ms(e, m):
        if m not in e["mean"]:
            return "n/a"
        sd = e["std"][m]
        return f"{100 * e['mean'][m]:.1f}" + ("" if sd != sd else f" +- {100 * sd:.1f}")

    def iv(x):
        return "n/a" if x is None else f"{100 * x['estimate']:+.1f} [{100 * x['low']:+.1f}, {100 * x['high']:+.1f}]"

    rows = seed_summary(groups, baseline, key)
    lines = [f"| group | seeds | AA | plasticity | BWT | forgetting | collapsed tasks | "
             f"dAA vs {baseline} [95% CI seeds] | [95% CI seeds+examples] | dplasticity | dBWT |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for e in rows:
        v = e["vs"]
        gap = (lambda m: "n/a" if v is None or m not in v["gaps"] else f"{100 * v['gaps'][m]:+.1f}")
        lines.append(f"| {e['label']} | {','.join(map(str, e['seeds']))} | {ms(e, 'average_accuracy')} | "
                     f"{ms(e, 'plasticity')} | {ms(e, 'bwt')} | {ms(e, 'forgetting')} | {e['collapsed']:.1f} | "
                     f"{iv(v and v['interval_seeds'])} | {iv(v and v['interval_examples'])} | "
                     f"{gap('plasticity_gap')} | {gap('bwt_gap')} |")
    return "\n".join(lines)
