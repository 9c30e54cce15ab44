"""Cost of training a preset's parameters that ``train.freeze`` could hold fixed (Gemma's embedding).

    python benchmarks/freeze_step.py experiments/standard4_gemma3.yaml [--freeze embed/]
        [--batches 4] [--repeats 3] [--task 0]

Loads the preset's model and data as ``asvd-jax run`` does and times the runner's jitted
SeqFT step (``cl._train.make_train_step`` with the preset's AdamW) over the first
``--batches`` micro-batches of task ``--task``, twice: every parameter trained (``all``), and
the parameters matching ``--freeze`` held fixed (``frozen``: stopped gradient, no AdamW
moments). One untimed pass compiles; each repeat then runs one pass of each, alternating, so
both see the same load. Printed: median seconds per step, the ratio all / frozen, the AdamW
state's bytes and XLA's temporary bytes of each compiled step. Run from the repository root.
"""

from __future__ import annotations

import argparse
import dataclasses
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
    ap.add_argument("--freeze", action="append", default=None, help="regex (repeatable; default embed/)")
    ap.add_argument("--batches", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--task", type=int, default=0)
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)

    from asvd_jax.cl import load_config
    from asvd_jax.cl._sequence import TaskStream, load_sequence
    from asvd_jax.cl._train import inner_optimizer, make_train_step
    from asvd_jax.models import get_family, load_model

    c = load_config(args.config, ["run.progress=false"])
    freeze = tuple(args.freeze or ["embed/"])
    task = load_sequence(c.data).tasks[args.task]
    model, tokenizer, _ = load_model(c.model)
    adapter = get_family(c.model.family).adapter(c, model, tokenizer)
    stream = TaskStream([(task, ex) for ex in task.train], c.train, args.task)
    chunks = [ch for _, ch in zip(range(args.batches), stream.chunks())]
    batches = [{k: jax.numpy.asarray(v) for k, v in adapter.train_batch(ch).items()} for ch in chunks]

    class Plain:  # SeqFT: the params themselves are trained
        def effective_params(self, t, frozen):
            return t

        def penalty(self, t, frozen):
            return 0.0

    runs = {}
    for name, patterns in (("all", ()), ("frozen", freeze)):
        opt = inner_optimizer(dataclasses.replace(c.train, freeze=patterns), stream.optimizer_steps)
        trainable = jax.tree.map(lambda x: x.copy(), adapter.params)  # the step donates its inputs
        state = opt.init(trainable)
        step = make_train_step(adapter, Plain(), opt, patterns)
        memory = step.lower(trainable, {}, state, batches[0]).compile().memory_analysis()
        runs[name] = {"step": step, "state": [trainable, state], "times": [],
                      "opt_state_bytes": sum(x.nbytes for x in jax.tree.leaves(state)),
                      "temp_bytes": getattr(memory, "temp_size_in_bytes", None)}

    def one_pass(run):
        start = time.perf_counter()
        for b in batches:
            t, s, loss, *_ = run["step"](run["state"][0], {}, run["state"][1], b)
            run["state"] = [t, s]
            jax.block_until_ready(loss)
        return (time.perf_counter() - start) / len(batches)

    first = {name: round(one_pass(run), 2) for name, run in runs.items()}
    for _ in range(args.repeats):
        for run in runs.values():
            run["times"].append(one_pass(run))
    med = {k: statistics.median(v["times"]) for k, v in runs.items()}
    row = {"config": args.config, "task": task.name, "freeze": list(freeze), "batches": len(batches),
           "batch_size": c.train.batch_size, "widths": sorted({b["input_ids"].shape[1] for b in batches}),
           "repeats": args.repeats, "first_pass_s": first, "step_s": {k: round(v, 3) for k, v in med.items()},
           "ratio_all_over_frozen": round(med["all"] / med["frozen"], 3),
           "opt_state_gb": {k: round(v["opt_state_bytes"] / 2**30, 3) for k, v in runs.items()},
           "temp_gb": {k: round(v["temp_bytes"] / 2**30, 3) for k, v in runs.items() if v["temp_bytes"]}}
    print(json.dumps(row, indent=1))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(row, f, indent=1)
    return row


if __name__ == "__main__":
    main()
