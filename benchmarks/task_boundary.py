"""Where a task boundary's time goes for ASVD: weight SVDs, activation statistics, bases.

    python benchmarks/task_boundary.py experiments/offline_smollm2_order1.yaml [--repeats 2]

Loads the preset's model and data, then times (seconds, wall clock) the pieces of
``asvd.start_task`` on task 0's statistics examples (``method.stats_examples``):

* ``svds``: ``asvd_jax.weight_svds`` of every target (float32 host SVDs);
* ``statistics[full]`` / ``statistics[compact]``: ``ranks.collect_statistics`` over the
  statistics batches padded to ``max_len`` (the old layout) and at one compact width (the
  runner's ``same_width``), first call (compile included) and the median of the next
  ``--repeats`` calls (a fresh jit each, as the runner makes one per task; the persistent
  compile cache is on, in a fresh folder, as in the runner: the later calls hit it);
* ``bases``: ``compute_bases(..., svds=svds)`` at the paper policy's ranks.
The runner pays svds + statistics + bases once per task boundary. Run from the repository root.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("config")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    import tempfile

    # As the runner (run.blas_threads=1): host LAPACK single-threaded for the SVDs.
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

    # A fresh persistent compile cache, as the runner uses one: the first call compiles, the
    # next ones (new jits, as at each task boundary) hit the cache.
    jax.config.update("jax_compilation_cache_dir", tempfile.mkdtemp(prefix="asvd_bench_xla_"))

    import asvd_jax as aj
    from asvd_jax import ranks
    from asvd_jax.cl import load_config
    from asvd_jax.data import same_width
    from asvd_jax.models import get_family, load_model
    from asvd_jax.cl._sequence import load_sequence, statistics_items

    c = load_config(args.config, ["run.progress=false"])
    seq = load_sequence(c.data)
    model, tokenizer, default_targets = load_model(c.model)
    adapter = get_family(c.model.family).adapter(c, model, tokenizer)
    params = adapter.params
    targets = aj.select_targets(params, include=list(default_targets), exclude=aj.DEFAULT_EXCLUDE)
    items = statistics_items(seq.tasks[0], c.method.stats_examples, c.data.seed)
    bs = c.train.batch_size
    chunks = [items[s:s + bs] for s in range(0, len(items), bs)]
    row: dict = {"config": args.config, "stats_examples": len(items), "targets": len(aj.list_targets(targets))}

    t = time.perf_counter()
    svds = aj.weight_svds(params, targets)
    jax.block_until_ready(jax.tree.leaves(svds))
    row["svds_s"] = round(time.perf_counter() - t, 2)
    specs = dict(aj.list_targets(targets))
    for name, compact in (("full", False), ("compact", True)):
        adapter.compact = compact
        batches = same_width([adapter.train_batch(ch) for ch in chunks], tokenizer.pad_id)
        times = []
        for _ in range(1 + args.repeats):
            t = time.perf_counter()
            stats = ranks.collect_statistics(adapter.capture_fn, params, iter(batches), specs, svds=svds)
            times.append(time.perf_counter() - t)
        row[f"statistics_{name}"] = {"width": int(batches[0]["input_ids"].shape[1]),
                                     "first_s": round(times[0], 2),
                                     "median_next_s": round(statistics.median(times[1:]), 2)}
    plan = ranks.plan_ranks(stats, c.method.rank_policy)
    t = time.perf_counter()
    bases = aj.compute_bases(params, plan.ranks(), targets, svds=svds)
    jax.block_until_ready(jax.tree.leaves(bases))
    row["bases_s"] = round(time.perf_counter() - t, 2)
    row["blas_threads_env"] = os.environ.get("OPENBLAS_NUM_THREADS")
    print(json.dumps(row, indent=1))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(row, f, indent=1)
    return row


if __name__ == "__main__":
    main()
