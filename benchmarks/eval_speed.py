"""Decoder evaluation (``DecoderAdapter.evaluate`` -> ``generate_and_score``): before / after
greedy decoding that stops once every row has ended and skips padding option slots, and how
often the evaluation program compiles over a sequence.

    python benchmarks/eval_speed.py experiments/offline_smollm2_order1.yaml [--repeats 3]
        [--tasks 5] [--examples 0]

Loads the preset's model and data as ``asvd-jax run`` does and evaluates every task of the
sequence (``eval.split``, capped by ``data.max_eval_per_task`` or ``--examples``) with

* ``before``: ``adapter.early_exit = False``: ``max_new_tokens`` decode steps in a
  ``fori_loop`` and every option slot (8) scored, the former program;
* ``after``: the default: a ``while_loop`` that exits once every row has produced EOS and
  only the task's own option slots.

The first pass compiles (its seconds are printed per mode); each repeat then evaluates every
task with ``before`` and ``after`` in alternation, so both see the same load. Printed: the
median seconds per task and over the sequence, the ratio after / before, whether the two
gave the same predictions, option predictions and accuracies, and the compiles: the jitted
evaluation function's cache entries per mode against the number of distinct prompt widths
(multiples of 32) over the sequence's chunks, which is what one program per width bucket
shared by every task gives. The persistent compile cache is off. Run from the repository root.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ["ASVD_JAX_COMPILE_CACHE"] = "0"

import jax  # noqa: E402


class CompileLog(logging.Handler):
    """Counts jax's "Finished XLA compilation of <fn> in <s> sec" lines (jax_log_compiles)."""

    def __init__(self):
        super().__init__()
        self.seconds: dict[str, list[float]] = {}

    def emit(self, rec):
        msg = rec.getMessage()
        if msg.startswith("Finished XLA compilation of "):
            name, _, rest = msg[len("Finished XLA compilation of "):].partition(" in ")
            self.seconds.setdefault(name, []).append(float(rest.split()[0]))


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("config")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--tasks", type=int, default=0, help="first N tasks only (0: all)")
    ap.add_argument("--examples", type=int, default=0, help="cap per task (0: the config's)")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)

    from asvd_jax.cl import load_config
    from asvd_jax.cl._sequence import load_sequence
    from asvd_jax.data import compact_width, length_sorted_chunks
    from asvd_jax.models import get_family, load_model

    jax.config.update("jax_log_compiles", True)
    log = CompileLog()
    logging.getLogger("jax").addHandler(log)
    logging.getLogger("jax").setLevel(logging.WARNING)
    logging.getLogger("jax").propagate = False  # counted, not printed

    c = load_config(args.config, ["run.progress=false"])
    seq = load_sequence(c.data)
    tasks = seq.tasks[: args.tasks or None]
    model, tokenizer, _ = load_model(c.model)
    adapter = get_family(c.model.family).adapter(c, model, tokenizer)
    params = adapter.params
    examples = {t.name: list(t.split(c.eval.split))[: args.examples or None] for t in tasks}

    widths = set()
    for t in tasks:
        lengths = [len(p) for p in adapter._prompt_ids(t, examples[t.name])]
        for idx in length_sorted_chunks(lengths, adapter.eval_batch_size):
            widths.add(compact_width([lengths[i] for i in idx], adapter.max_len, 32))

    fns, results = {}, {}

    def evaluate(mode, task):
        adapter.early_exit = mode == "after"
        adapter._eval_fn = fns.get(mode)
        t = time.perf_counter()
        out = adapter.evaluate(params, task, examples[task.name])
        seconds = time.perf_counter() - t
        fns[mode] = adapter._eval_fn
        return out, seconds

    first = {}
    for mode in ("before", "after"):
        t = time.perf_counter()
        for task in tasks:
            results[(mode, task.name)] = evaluate(mode, task)[0]
        first[mode] = round(time.perf_counter() - t, 2)
        print(f"first pass ({mode}, compiles included): {first[mode]} s", flush=True)
    keys = ("predictions", "option_predictions", "accuracy", "option_accuracy")
    same = all(results[("before", t.name)].get(k) == results[("after", t.name)].get(k)
               for t in tasks for k in keys)
    times = {(m, t.name): [] for m in ("before", "after") for t in tasks}
    for r in range(args.repeats):
        for task in tasks:
            for mode in ("before", "after"):
                out, s = evaluate(mode, task)
                times[(mode, task.name)].append(s)
                same = same and all(out.get(k) == results[(mode, task.name)].get(k) for k in keys)
        print(f"repeat {r + 1}/{args.repeats} done", flush=True)

    row: dict = {"config": args.config, "model": f"{c.model.family}:{c.model.source}",
                 "examples": {t.name: len(examples[t.name]) for t in tasks},
                 "eval_batch_size": adapter.eval_batch_size, "max_new_tokens": adapter.max_new_tokens,
                 "repeats": args.repeats, "first_pass_s": first, "tasks": {}}
    for task in tasks:
        b = statistics.median(times[("before", task.name)])
        a = statistics.median(times[("after", task.name)])
        gen = results[("after", task.name)].get("predictions") or []
        row["tasks"][task.name] = {"before_s": round(b, 3), "after_s": round(a, 3), "ratio": round(a / b, 3),
                                   "accuracy": results[("after", task.name)].get("accuracy"),
                                   "empty_answers": sum(1 for g in gen if not g)}
    totals = {m: [sum(times[(m, t.name)][r] for t in tasks) for r in range(args.repeats)]
              for m in ("before", "after")}
    row["sequence_before_s"] = round(statistics.median(totals["before"]), 3)
    row["sequence_after_s"] = round(statistics.median(totals["after"]), 3)
    row["ratio"] = round(statistics.median(a / b for a, b in zip(totals["after"], totals["before"])), 3)
    row["same_outputs"] = bool(same)
    row["prompt_widths"] = sorted(widths)
    row["programs"] = {m: fns[m]._cache_size() for m in fns}
    row["compile_log"] = {k: {"count": len(v), "seconds": round(sum(v), 2)} for k, v in log.seconds.items()
                          if k == "jit(fn)"}  # the evaluation program (the adapter's jitted fn)
    print(json.dumps(row, indent=1))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(row, f, indent=1)
    return row


if __name__ == "__main__":
    main()
