"""EWC's per-example Fisher at a preset's shapes: the former per-example scan (a new jit per
task) against the chunked ``vmap(grad)`` step built once per run (``fisher_step``).

    python benchmarks/ewc_fisher.py experiments/offline_smollm2_order1.yaml [--tasks 3]
        [--batches 2] [--chunk 1] [--repeats 2] [--only before|after] [--pad stage|run|none]

Loads the preset's model and data as ``asvd-jax run`` does. For each of the first ``--tasks``
tasks (the tasks of a ``--tasks + 1``-task run that need a Fisher: none is computed after the
last one now) it takes the first ``--batches`` training batches of the runner's order and
computes the example-mode diagonal Fisher over every floating param (EWC's default scope) at
the preset's ``data.max_len``:

* ``before``: the former ``diagonal_fisher`` (copied below): a ``lax.scan`` over single
  examples, a new ``jax.jit`` per call (per task), each stage's batches at that stage's width
  (a short stage trains at one width, ``cl._compact.stage_width``);
* ``after``: ``fisher_step(..., chunk=--chunk)`` built once and reused for every task, the
  batches padded to their stage's largest shapes (``cl._compact.largest_shapes``,
  ``widen_batch``), as the runner now hands them to the method; ``--pad run``: to the run's
  largest shapes (one program per run); ``--pad none``: as trained.

Tasks as the runner trains them (``train.option_pool: seen`` widens the option lists).

The persistent compile cache is on, in a fresh folder, as in the runner (a rebuilt jit of a
shape seen before loads its program from there). Pass 1 is what a run pays (compiles
included); passes 2.. run again with warm caches. Each pass runs the tasks with ``before``
then ``after`` in alternation. Printed: seconds per task and pass, the medians, the ratio
after / before per pass, the relative L2 difference of the two Fishers (all leaves), and the
process's peak RSS after each mode's first task (``--only`` runs one mode, for its own peak).
Run from the repository root.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402


def fisher_before(loss_fn, params, batches, paths):
    """The example-mode ``diagonal_fisher`` as it was before the chunked vmap (commit 495a630)."""
    from asvd_jax._paths import flatten_with_paths
    from asvd_jax.cl.baselines._common import floating_leaves

    paths = tuple(paths)

    def squared_grads(p, batch):
        grads = dict(flatten_with_paths(jax.grad(loss_fn)(p, batch))[0])
        return {k: jnp.square(grads[k].astype(jnp.float32)) for k in paths}

    def step(p, batch):
        def body(carry, example):
            acc, count = carry
            sq = squared_grads(p, jax.tree.map(lambda x: x[None], example))
            real = jnp.any(jnp.stack([jnp.any(v > 0) for v in sq.values()]))
            return ({k: acc[k] + sq[k] for k in paths}, count + real.astype(jnp.int32)), None

        leaves = floating_leaves(p)
        zeros = {k: jnp.zeros(leaves[k].shape, jnp.float32) for k in paths}
        return jax.lax.scan(body, (zeros, jnp.zeros((), jnp.int32)), batch)[0]

    step = jax.jit(step)
    total, count = None, 0
    for batch in batches:
        sq, n = step(params, batch)
        count += int(n)
        total = sq if total is None else {k: total[k] + sq[k] for k in paths}
    return {k: v / count for k, v in total.items()}, count


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("config")
    ap.add_argument("--tasks", type=int, default=3)
    ap.add_argument("--batches", type=int, default=2)
    ap.add_argument("--chunk", type=int, default=1, help="examples per vmap (the library default: 1)")
    ap.add_argument("--repeats", type=int, default=2, help="passes over the tasks")
    ap.add_argument("--only", choices=("before", "after"), default=None)
    ap.add_argument("--pad", choices=("stage", "run", "none"), default="stage",
                    help="after: batches padded to their stage's largest shapes (stage, the runner), "
                         "to the run's largest (run), or as trained (none)")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)

    jax.config.update("jax_compilation_cache_dir", tempfile.mkdtemp(prefix="asvd_bench_xla_"))

    from asvd_jax.cl import load_config
    from asvd_jax.cl._compact import largest_shapes, stage_width
    from asvd_jax.cl._sequence import TaskStream, load_sequence
    from asvd_jax.cl.baselines import diagonal_fisher, fisher_step
    from asvd_jax.cl.baselines._common import floating_leaves
    from asvd_jax.models import get_family, load_model

    c = load_config(args.config, ["run.progress=false"])
    seq = load_sequence(c.data)
    family = get_family(c.model.family)
    model, tokenizer, _ = load_model(c.model)
    adapter = family.adapter(c, model, tokenizer)
    params = adapter.params
    paths = list(floating_leaves(params))
    from asvd_jax.cl._option_pool import training_tasks

    # As the runner trains them (train.option_pool: seen widens each task's option list).
    tasks = training_tasks(c.train.option_pool, seq.tasks, adapter, joint=False)
    stages = [(t.name, [(t, ex) for ex in t.train]) for t in tasks]
    run_max = largest_shapes(adapter, stages, c.train.batch_size)
    batches = {}
    for i, (name, items) in enumerate(stages[: args.tasks]):
        chunks = list(TaskStream(items, c.train, i).chunks())
        adapter.min_width = stage_width(family, adapter, chunks)  # as the runner trains the stage
        own = [adapter.train_batch(ch) for ch in chunks[: args.batches]]
        adapter.min_width = None
        pad_to = {"run": run_max, "none": None}.get(args.pad) or (
            largest_shapes(adapter, [stages[i]], c.train.batch_size) if args.pad == "stage" else None)
        batches[name] = {"before": own, "after": own if pad_to is None else [adapter.widen_batch(b, pad_to) for b in own]}
    modes = [args.only] if args.only else ["before", "after"]
    step = fisher_step(adapter.loss, paths, "example", args.chunk) if "after" in modes else None

    def fisher(mode, name):
        data = [{k: jnp.asarray(v) for k, v in b.items()} for b in batches[name][mode]]
        t = time.perf_counter()
        if mode == "before":
            out = fisher_before(adapter.loss, params, data, paths)
        else:
            out = diagonal_fisher(adapter.loss, params, data, paths, "example", step=step)
        jax.block_until_ready(out[0])
        return out, time.perf_counter() - t

    times = {(m, n): [] for m in modes for n in batches}
    rss, diff = {}, 0.0
    for r in range(args.repeats):
        for name in batches:
            got = {}
            for mode in modes:
                (f, n), s = fisher(mode, name)
                times[(mode, name)].append(s)
                got[mode] = (f, n)
                rss.setdefault(mode, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20)
            if len(got) == 2:
                # Over the whole Fisher: per-leaf relative errors are meaningless on leaves
                # whose exact gradient is 0 (attention key biases: rounding noise only).
                assert got["before"][1] == got["after"][1]
                err = sum(float(jnp.sum(jnp.square(got["after"][0][p] - got["before"][0][p]))) for p in paths)
                ref = sum(float(jnp.sum(jnp.square(got["before"][0][p]))) for p in paths)
                diff = max(diff, (err / ref) ** 0.5)
        print(f"pass {r + 1}/{args.repeats}: " + ", ".join(
            f"{m} {sum(times[(m, n)][r] for n in batches):.1f} s" for m in modes), flush=True)

    row: dict = {"config": args.config, "model": f"{c.model.family}:{c.model.source}",
                 "tasks": list(batches), "batches_per_task": args.batches, "pad": args.pad,
                 "examples_per_task": args.batches * c.train.batch_size, "chunk": args.chunk,
                 "shapes": {n: {m: {k: list(v.shape[1:]) for k, v in batches[n][m][0].items() if v.ndim > 1}
                                for m in ("before", "after")} for n in batches},
                 "params": len(paths), "repeats": args.repeats, "per_task_s": {}}
    for n in batches:
        row["per_task_s"][n] = {m: [round(x, 2) for x in times[(m, n)]] for m in modes}
    for m in modes:
        passes = [sum(times[(m, n)][r] for n in batches) for r in range(args.repeats)]
        row[f"{m}_pass1_s"] = round(passes[0], 2)
        if args.repeats > 1:
            row[f"{m}_later_median_s"] = round(statistics.median(passes[1:]), 2)
        row[f"{m}_peak_rss_gb_after_first_task"] = round(rss[m], 2)
    if len(modes) == 2:
        row["ratio_pass1"] = round(row["after_pass1_s"] / row["before_pass1_s"], 3)
        if args.repeats > 1:
            row["ratio_later"] = round(row["after_later_median_s"] / row["before_later_median_s"], 3)
        row["relative_l2_difference"] = diff
        row["after_step_programs"] = step._cache_size()
    print(json.dumps(row, indent=1))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(row, f, indent=1)
    return row


if __name__ == "__main__":
    main()
