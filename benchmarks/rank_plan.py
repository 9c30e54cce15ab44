"""Benchmark: a rank plan for every target matrix of SmolLM2-135M from one offline task.

Runs what a task boundary does before training the next task: one float32 SVD per target
matrix, streaming activation statistics over ``--examples`` examples of the previous task
(jitted, padding masked), then a policy. Prints the time of each stage and the protected
fraction by matrix type; ``--out`` saves the plan as JSON and ``--table`` prints all of it.

    python benchmarks/rank_plan.py                       # 128 bbc_news examples, paper policy
    python benchmarks/rank_plan.py --nonsquare polar --out /tmp/plan.json
"""

from __future__ import annotations

import argparse
import re
import time

import jax
import jax.numpy as jnp
import numpy as np


def _batches(task_name: str, examples: int, batch_size: int, max_len: int, tokenizer):
    from asvd_jax.data import OFFLINE_TASKS, SuiteConfig, decoder_batch, example_prompt, round_up
    from asvd_jax.data._suite import sample_offline_suite

    n_classes = len(OFFLINE_TASKS[task_name][1])
    per_class = -(-examples // n_classes)
    task = sample_offline_suite(SuiteConfig(per_class_train=per_class, per_class_dev=0, per_class_test=0))[task_name]
    rows = [example_prompt(task, ex) for ex in task.train[:examples]]
    if len(rows) < examples:
        raise ValueError(f"task {task_name!r} has only {len(rows)} training examples")
    # One padded length for every batch, so the statistics step compiles once.
    probe = decoder_batch(tokenizer, [p for p, _ in rows], [a for _, a in rows], max_len)
    pad_to = min(round_up(int(probe["attention_mask"].sum(1).max()), 16), max_len)
    out = []
    for start in range(0, examples, batch_size):
        chunk = rows[start:start + batch_size]
        b = decoder_batch(tokenizer, [p for p, _ in chunk], [a for _, a in chunk], max_len, pad_to=pad_to)
        if len(chunk) < batch_size:  # pad the last batch with fully masked rows
            fill = batch_size - len(chunk)
            b = {k: np.concatenate([v, np.zeros((fill, v.shape[1]), v.dtype)]) for k, v in b.items()}
        out.append({"input_ids": jnp.asarray(b["input_ids"]), "attention_mask": jnp.asarray(b["attention_mask"])})
    return out, pad_to


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--task", default="bbc_news")
    ap.add_argument("--examples", type=int, default=128)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--max-len", type=int, default=128)
    ap.add_argument("--nonsquare", choices=("truncate", "polar"), default="truncate")
    ap.add_argument("--mrr", type=float, default=0.1)
    ap.add_argument("--trr", type=float, default=0.8)
    ap.add_argument("--out", default=None, help="save the plan JSON here")
    ap.add_argument("--table", action="store_true", help="print the full per-matrix table")
    args = ap.parse_args()

    from flax import nnx

    from asvd_jax.models.llama import DEFAULT_TARGETS
    from asvd_jax.models.llama import load_smollm2
    from asvd_jax import weight_svds
    from asvd_jax.ranks import EnergyPolicy, PaperPolicy, collect_statistics_nnx, plan_ranks
    from asvd_jax import flatten_with_paths

    print(f"jax {jax.__version__} on {jax.devices()[0].platform}", flush=True)
    t0 = time.perf_counter()
    model, tokenizer = load_smollm2()
    t_load = time.perf_counter() - t0
    print(f"model loaded in {t_load:.1f} s", flush=True)

    t0 = time.perf_counter()
    batches, seq = _batches(args.task, args.examples, args.batch_size, args.max_len, tokenizer)
    t_data = time.perf_counter() - t0
    print(f"data ready in {t_data:.1f} s", flush=True)
    tokens = int(sum(int(b["attention_mask"].sum()) for b in batches))

    params = nnx.state(model, nnx.Param)
    pattern = re.compile("|".join(f"(?:{p})" for p in DEFAULT_TARGETS))
    targets = [p for p, _ in flatten_with_paths(params)[0] if pattern.fullmatch(p)]

    t0 = time.perf_counter()
    svds = weight_svds(params, targets)
    jax.block_until_ready(svds)
    t_svd = time.perf_counter() - t0
    print(f"SVD of {len(targets)} matrices in {t_svd:.1f} s", flush=True)

    t0 = time.perf_counter()
    # hidden_states: the forward without the LM head, which has no target matrix.
    stats = collect_statistics_nnx(model, lambda m, b: m.hidden_states(b["input_ids"], b["attention_mask"]),
                                   batches, targets, svds=svds)
    t_stats = time.perf_counter() - t0

    t0 = time.perf_counter()
    plan = plan_ranks(stats, PaperPolicy(mrr=args.mrr, trr=args.trr, nonsquare=args.nonsquare))
    t_plan = time.perf_counter() - t0

    print(f"task {args.task}: {args.examples} examples in {len(batches)} batches of "
          f"{args.batch_size} x {seq} tokens, {tokens} unmasked tokens; {len(targets)} target matrices")
    print(f"time: load model {t_load:.1f} s (not part of the plan), data {t_data:.1f} s, "
          f"SVD {t_svd:.1f} s, statistics {t_stats:.1f} s (incl. compile), policy {t_plan:.3f} s; "
          f"plan total (SVD + statistics + policy) {t_svd + t_stats + t_plan:.1f} s")
    kinds = plan.summary()
    imp: dict[str, list[float]] = {}
    for e in plan.entries:
        imp.setdefault(e.path.split("/")[-2], []).append(e.importance)
    print(f"{'matrix':<10} {'count':>5} {'importance mean':>16} {'protected min':>14} {'mean':>6} {'max':>6}")
    for kind, s in kinds.items():
        print(f"{kind:<10} {s['count']:>5d} {np.mean(imp[kind]):>16.3f} {s['min']:>14.3f} "
              f"{s['mean']:>6.3f} {s['max']:>6.3f}")
    fr = np.array([e.protected_fraction for e in plan.entries])
    clamped = sum(e.k == e.min_dim for e in plan.entries)
    print(f"all: mean protected fraction {fr.mean():.4f} (trr {args.trr}), "
          f"min {fr.min():.3f}, max {fr.max():.3f}, {clamped} matrices clamped at min dim")
    # The same statistics under the other importance mode and the energy policy: no new pass.
    other = "polar" if args.nonsquare == "truncate" else "truncate"
    for name, policy in ((f"paper, nonsquare={other}", PaperPolicy(mrr=args.mrr, trr=args.trr, nonsquare=other)),
                         ("energy tau=0.9", EnergyPolicy(0.9))):
        alt = plan_ranks(stats, policy)
        line = ", ".join(f"{k} {v['mean']:.3f}" for k, v in alt.summary().items())
        afr = np.mean([e.protected_fraction for e in alt.entries])
        print(f"{name}: mean protected fraction {afr:.4f}; by type: {line}")
    if args.table:
        print(plan.table())
    if args.out:
        plan.save(args.out)
        print(f"plan saved to {args.out}")


if __name__ == "__main__":
    main()
