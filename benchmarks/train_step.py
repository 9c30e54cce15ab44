"""Train-step cost of the projection on a Llama-architecture decoder, adamw vs adamw+projection.

    python benchmarks/train_step.py [--configs smollm2-135m,llama-1b] [--dtype bfloat16]
        [--batch 8] [--seq 512] [--fractions 0.5,0.8] [--repeats 10]

Random weights in the named shapes (the cost of a step does not depend on the values, and no
checkpoint has to travel to the machine that runs this): ``smollm2-135m`` is SmolLM2-135M's
config, ``llama-1b`` a TinyLlama-1.1B-shaped model (2048 wide, 22 layers, 4 KV heads).
For each config it prints
  * the time to build the bases of every target matrix (host SVDs, ``aj.compute_bases``),
  * the median step time of plain AdamW and of ``aj.with_projection(adamw, bases)`` at each
    protected fraction (called in alternation so both see the same load), and their ratio.
Master weights and optimizer state are float32; ``--dtype`` is the compute dtype of the
forward/backward. The projection itself always runs in float32 at HIGHEST precision (it must
be exact), so on accelerators whose bf16 matmuls are much faster than float32 ones its share
of the step is larger than on a CPU. Run from the repository root.

``--tokens-per-step 4096,32768,262144`` measures instead the cost at realistic tokens per
optimizer step: micro-batches of ``--batch x --seq`` tokens go through
``aj.accumulate_gradients``, which runs AdamW and the projection once per optimizer step, and
the table gives the step ratio (projected / plain AdamW) per protected fraction beside the flop
model (projection flops per optimizer step against ``6 * T * params``). ``--layers N`` keeps
the config's matrix shapes but only N layers, and scales the vocabulary by N / layers so that
the embedding's share of the flops stays the full model's (``--keep-vocab`` turns that off).
``--timing direct`` times whole optimizer steps (k micro-steps each); ``composed`` times the
two kinds of micro-step once each (accumulate only; accumulate + AdamW + projection) and
sums ``(k - 1) * accumulate + apply``, which is exact for this step (the branch is a
``lax.cond`` on a counter) and what makes 256K tokens measurable on a small CPU; ``auto``
times directly up to ``--direct-max-k`` micro-steps and composes beyond.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import optax  # noqa: E402

import asvd_jax as aj  # noqa: E402
from asvd_jax.models.llama import LlamaConfig  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from projection import timeit_many  # noqa: E402  (alternating timed calls, medians)
from train_tokens import bench_tokens, random_llama  # noqa: E402

CONFIGS = {
    "smollm2-135m": LlamaConfig(vocab_size=49152, hidden_size=576, intermediate_size=1536,
                                num_layers=30, num_heads=9, num_kv_heads=3,
                                tie_word_embeddings=True, rope_theta=100000.0,
                                rms_norm_eps=1e-5),
    "llama-1b": LlamaConfig(vocab_size=32000, hidden_size=2048, intermediate_size=5632,
                            num_layers=22, num_heads=32, num_kv_heads=4, rms_norm_eps=1e-5),
}


def bench_config(name, args):
    cfg = CONFIGS[name]
    params, targets, listed, flat, n_params, loss_fn = random_llama(cfg, args.dtype)

    tokens = jax.random.randint(jax.random.key(1), (args.batch, args.seq + 1), 0, cfg.vocab_size)
    txs = {"adamw": optax.adamw(1e-5, weight_decay=0.01)}
    basis_s = {}
    for frac in args.fractions:
        ranks = {p: int(frac * min(s.matrix_shape(flat[p].shape)[1:])) for p, s in listed}
        t0 = time.perf_counter()
        bases = aj.compute_bases(params, ranks, targets)
        jax.block_until_ready(jax.tree.leaves(bases))
        basis_s[frac] = time.perf_counter() - t0
        print(f"  [{name}] bases at {frac:.2f} protected built in {basis_s[frac]:.1f} s", flush=True)
        txs[f"projection@{frac}"] = aj.with_projection(optax.adamw(1e-5, weight_decay=0.01), bases)

    thunks = []
    for label, tx in txs.items():
        @functools.partial(jax.jit, donate_argnums=())
        def step(p, s, tok, tx=tx):
            loss, g = jax.value_and_grad(loss_fn)(p, tok)
            u, s = tx.update(g, s, p)
            return optax.apply_updates(p, u), s, loss

        state = tx.init(params)
        thunks.append(functools.partial(step, params, state, tokens))
    times = dict(zip(txs, timeit_many(thunks, args.repeats)))
    row = dict(config=name, params_m=n_params / 1e6, targets=len(listed), dtype=args.dtype,
               tokens=args.batch * args.seq, basis_s=basis_s,
               step_ms={k: 1e3 * v for k, v in times.items()},
               ratio={k: v / times["adamw"] for k, v in times.items() if k != "adamw"})
    print(f"\n{name}: {n_params / 1e6:.0f}M params, {len(listed)} target leaves, compute "
          f"{args.dtype}, {args.batch}x{args.seq} tokens/step, medians of {args.repeats}")
    print(f"  adamw step {1e3 * times['adamw']:.1f} ms")
    for frac in args.fractions:
        k = f"projection@{frac}"
        print(f"  adamw+projection, {frac:.2f} protected: step {1e3 * times[k]:.1f} ms, "
              f"ratio {row['ratio'][k]:.3f}; bases built in {basis_s[frac]:.1f} s")
    sys.stdout.flush()
    return row


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--configs", default="smollm2-135m,llama-1b")
    ap.add_argument("--dtype", choices=("float32", "bfloat16"), default="bfloat16")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seq", type=int, default=512)
    ap.add_argument("--fractions", default="0.5,0.8")
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--json", default=None, help="also write the rows here")
    ap.add_argument("--tokens-per-step", default="",
                    help="e.g. 4096,32768,262144: token scaling through accumulate_gradients")
    ap.add_argument("--layers", type=int, default=0, help="keep only this many layers (0: all)")
    ap.add_argument("--keep-vocab", action="store_true",
                    help="with --layers, keep the full vocabulary instead of scaling it")
    ap.add_argument("--timing", choices=("auto", "direct", "composed"), default="auto")
    ap.add_argument("--direct-max-k", type=int, default=8,
                    help="with --timing auto: micro-steps up to which steps are timed whole")
    args = ap.parse_args(argv)
    args.fractions = [float(f) for f in args.fractions.split(",")]
    names = [c for c in args.configs.split(",") if c]
    unknown = [c for c in names if c not in CONFIGS]
    if unknown:
        ap.error(f"unknown config(s) {unknown}; choose from {list(CONFIGS)}")
    print(f"jax {jax.__version__} on {jax.devices()[0].device_kind} "
          f"({jax.devices()[0].platform}), {jax.device_count()} device(s)")
    if args.tokens_per_step:
        args.tokens_per_step = [int(t) for t in args.tokens_per_step.split(",")]
        micro = args.batch * args.seq
        bad = [t for t in args.tokens_per_step if t % micro]
        if bad:
            ap.error(f"--tokens-per-step {bad} not a multiple of --batch x --seq = {micro}")
        rows = [bench_tokens(n, CONFIGS[n], args) for n in names]
    else:
        rows = [bench_config(n, args) for n in names]
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)
    return rows


if __name__ == "__main__":
    main()
