"""Runner train-step time at a preset's shapes: the fixed max_len layout vs compact batches.

    python benchmarks/train_speed.py experiments/offline_smollm2_order1.yaml [--batches 8]
        [--repeats 5] [--task 0] [--protect 0.0]

Loads the preset's model and data as ``asvd-jax run`` does, takes the first ``--batches``
micro-batches of task ``--task`` in the runner's order, and times the runner's jitted step
(``cl._train.make_train_step``: loss, gradient, the preset's AdamW; with ``--protect f`` also
the strict projection onto bases that protect a fraction f of every target's rank) on

* ``full``: every row padded to ``data.max_len``, the decoder's LM head at every position
  (encoder: 8 option slots of 16 tokens), i.e. ``adapter.compact = False``;
* ``compact``: rows padded to the batch's longest row rounded up to 16, the decoder's head
  only at answer positions, encoder option slots and widths per batch (``models/llama/_loss.py``, ``cl/_compact.py``).

After one untimed pass over the batches (compiles every shape; the compile seconds are
printed), each repeat runs one pass of ``full`` then one of ``compact`` over the same batches,
so both see the same load on a shared machine. Printed: median seconds per step of each and
the ratio full / compact (> 1: compact is faster). Run from the repository root.
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
import numpy as np  # noqa: E402


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("config")
    ap.add_argument("--batches", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--task", type=int, default=0)
    ap.add_argument("--protect", type=float, default=0.0,
                    help="protected rank fraction of the strict projection (0: plain AdamW)")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)

    import optax

    import asvd_jax as aj
    from asvd_jax.cl import load_config
    from asvd_jax.models import get_family, load_model
    from asvd_jax.cl._sequence import TaskStream, load_sequence
    from asvd_jax.cl._train import inner_optimizer, make_train_step

    c = load_config(args.config, ["run.progress=false"])
    seq = load_sequence(c.data)
    task = seq.tasks[args.task]
    model, tokenizer, default_targets = load_model(c.model)
    adapter = get_family(c.model.family).adapter(c, model, tokenizer)
    stream = TaskStream([(task, ex) for ex in task.train], c.train, args.task)
    chunks = [ch for _, ch in zip(range(args.batches), stream.chunks())]

    class Plain:  # SeqFT's step: the params themselves are trained
        def effective_params(self, t, frozen):
            return t

        def penalty(self, t, frozen):
            return 0.0

    opt = inner_optimizer(c.train, stream.optimizer_steps)
    if args.protect > 0:
        targets = aj.select_targets(adapter.params, include=list(default_targets),
                                    exclude=aj.DEFAULT_EXCLUDE)
        flat = dict(aj.flatten_with_paths(adapter.params)[0])
        ranks = {p: int(args.protect * min(s.matrix_shape(flat[p].shape)[1:]))
                 for p, s in aj.list_targets(targets)}
        opt = aj.with_projection(opt, aj.compute_bases(adapter.params, ranks, targets))

    layouts = {}
    for name, compact in (("full", False), ("compact", True)):
        adapter.compact = compact
        batches = [{k: jax.numpy.asarray(v) for k, v in adapter.train_batch(ch).items()} for ch in chunks]
        # Copies: the step donates its inputs, and the state holds the shared bases.
        trainable = jax.tree.map(lambda x: x.copy(), adapter.params)
        step = make_train_step(adapter, Plain(), opt)
        layouts[name] = {"step": step, "batches": batches, "state": [trainable, jax.tree.map(lambda x: x.copy(), opt.init(trainable))],
                         "shapes": sorted({b["input_ids"].shape[1] for b in batches}), "times": []}

    def one_pass(lay):
        start = time.perf_counter()
        for b in lay["batches"]:
            t, s, loss, _ = lay["step"](lay["state"][0], {}, lay["state"][1], b)
            lay["state"] = [t, s]
            jax.block_until_ready(loss)
        return (time.perf_counter() - start) / len(lay["batches"])

    compile_s = {}
    for name, lay in layouts.items():
        start = time.perf_counter()
        one_pass(lay)  # compiles every distinct shape
        compile_s[name] = time.perf_counter() - start
    for _ in range(args.repeats):
        for lay in layouts.values():
            lay["times"].append(one_pass(lay))
    med = {k: statistics.median(v["times"]) for k, v in layouts.items()}
    row = {"config": args.config, "task": task.name, "batches": len(chunks),
           "batch_size": c.train.batch_size, "max_len": c.data.max_len, "protect": args.protect,
           "repeats": args.repeats, "seq_lengths": {k: v["shapes"] for k, v in layouts.items()},
           "first_pass_s": {k: round(v, 2) for k, v in compile_s.items()},
           "step_s": {k: round(v, 4) for k, v in med.items()},
           "ratio_full_over_compact": round(med["full"] / med["compact"], 3)}
    print(json.dumps(row, indent=1))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(row, f, indent=1)
    return row


if __name__ == "__main__":
    np.set_printoptions(precision=4)
    main()
