"""Step ratio (projected / plain AdamW) at realistic tokens per optimizer step.

Used by ``benchmarks/train_step.py --tokens-per-step ...`` (see its docstring); kept apart so
that each file stays small. Micro-batches go through ``aj.accumulate_gradients``: AdamW and
the projection run once per optimizer step, inside a ``lax.cond`` on the micro-step counter.
"""

from __future__ import annotations

import dataclasses
import functools
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

import asvd_jax as aj
from asvd_jax.models.llama import init_llama
from projection import strict_flops, timeit_many


def reduced_config(cfg, layers: int, keep_vocab: bool):
    """``cfg`` with ``layers`` layers; the vocabulary scaled alike unless ``keep_vocab``.

    Scaling the vocabulary keeps the (tied or untied) head's share of the training flops, so
    projection flops / training flops per token stay those of the full model.
    """
    if not layers or layers >= cfg.num_layers:
        return cfg
    vocab = cfg.vocab_size if keep_vocab else max(256, round(cfg.vocab_size * layers / cfg.num_layers))
    return dataclasses.replace(cfg, num_layers=layers, vocab_size=vocab)


def _optimizer_step_thunk(step, params, state, micro_batches):
    """One optimizer step = len(micro_batches) calls of the jitted micro-step."""
    def run():
        p, s = params, state
        for tok in micro_batches:
            p, s, loss = step(p, s, tok)
        return loss
    return run


def random_llama(cfg, dtype_name: str):
    """A random Llama of ``cfg`` split for a pure step: ``(params, targets, listed, flat,
    n_params, loss_fn)``, ``loss_fn(params, tokens)`` the next-token cross-entropy."""
    dtype = None if dtype_name == "float32" else jnp.bfloat16
    model = init_llama(cfg, seed=0, dtype=dtype)
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    n_params = sum(x.size for x in jax.tree.leaves(params))
    targets = aj.select_targets(params)
    listed = aj.list_targets(targets)
    flat = dict(aj.flatten_with_paths(params)[0])

    def loss_fn(p, tokens):
        logits = nnx.merge(graphdef, p, rest)(tokens[:, :-1])
        return optax.softmax_cross_entropy_with_integer_labels(logits, tokens[:, 1:]).mean()

    return params, targets, listed, flat, n_params, loss_fn


def bench_tokens(name, cfg, args):
    cfg = reduced_config(cfg, args.layers, args.keep_vocab)
    params, targets, listed, flat, n_params, loss_fn = random_llama(cfg, args.dtype)
    micro = args.batch * args.seq

    max_k = max(args.tokens_per_step) // micro
    keys = jax.random.split(jax.random.key(1), max_k)
    batches = [jax.random.randint(k, (args.batch, args.seq + 1), 0, cfg.vocab_size) for k in keys]

    inner = {"adamw": lambda: optax.adamw(1e-5, weight_decay=0.01)}
    proj_gflop = {"adamw": 0.0}
    for frac in args.fractions:
        ranks = {p: int(frac * min(s.matrix_shape(flat[p].shape)[1:])) for p, s in listed}
        t0 = time.perf_counter()
        bases = aj.compute_bases(params, ranks, targets)
        jax.block_until_ready(jax.tree.leaves(bases))
        label = f"projection@{frac}"
        print(f"  [{name}] bases at {frac:.2f} protected built in {time.perf_counter() - t0:.1f} s",
              flush=True)
        inner[label] = functools.partial(
            lambda b: aj.with_projection(optax.adamw(1e-5, weight_decay=0.01), b), bases)
        proj_gflop[label] = sum(
            strict_flops(b.input.shape[-2], b.output.shape[-2], b) * int(np.prod(b.input.shape[:-2]))
            for b in jax.tree.leaves(bases, is_leaf=lambda x: isinstance(x, aj.SubspaceBasis))
            if isinstance(b, aj.SubspaceBasis)) / 1e9

    def make_step(tx):
        @jax.jit
        def step(p, s, tok):
            loss, g = jax.value_and_grad(loss_fn)(p, tok)
            u, s = tx.update(g, s, p)
            return optax.apply_updates(p, u), s, loss
        return step

    rows = []
    for tokens in args.tokens_per_step:
        k = tokens // micro
        composed = args.timing == "composed" or (args.timing == "auto" and k > args.direct_max_k)
        if k == 1:  # accumulate_gradients(inner, 1) is inner itself
            thunks = [_optimizer_step_thunk(make_step(f()), params, f().init(params), batches[:1])
                      for f in inner.values()]
            times = timeit_many(thunks, args.repeats)
            how = "direct"
        elif not composed:
            thunks = []
            for f in inner.values():
                tx = aj.accumulate_gradients(f(), k)
                thunks.append(_optimizer_step_thunk(make_step(tx), params, tx.init(params),
                                                    batches[:k]))
            times = timeit_many(thunks, args.repeats)
            how = "direct"
        else:
            thunks = []
            for f in inner.values():
                tx = aj.accumulate_gradients(f(), k)
                state = tx.init(params)
                step = make_step(tx)
                # The same jitted step; the counter in the state picks the branch.
                last = state._replace(mini_step=jnp.asarray(k - 1, jnp.int32))
                thunks += [functools.partial(step, params, state, batches[0]),
                           functools.partial(step, params, last, batches[0])]
            parts = timeit_many(thunks, args.repeats)
            times = [(k - 1) * acc + apply for acc, apply in zip(parts[::2], parts[1::2])]
            how = (f"composed: (k-1) x accumulate + apply, accumulate "
                   + "/".join(f"{1e3 * a:.0f}" for a in parts[::2]) + " ms, apply "
                   + "/".join(f"{1e3 * a:.0f}" for a in parts[1::2]) + " ms")
        t = dict(zip(inner, times))
        train_gflop = 6 * tokens * n_params / 1e9
        row = dict(config=name, layers=cfg.num_layers, vocab=cfg.vocab_size,
                   params_m=n_params / 1e6, dtype=args.dtype, micro_batch=[args.batch, args.seq],
                   tokens_per_step=tokens, micro_steps=k, timing=how,
                   step_s={lbl: v for lbl, v in t.items()},
                   ratio={lbl: v / t["adamw"] for lbl, v in t.items() if lbl != "adamw"},
                   flop_share={lbl: proj_gflop[lbl] / train_gflop for lbl in t if lbl != "adamw"},
                   proj_gflop=proj_gflop, train_gflop=train_gflop)
        rows.append(row)
        print_token_row(row, args.repeats)
    return rows


TOKEN_HEADER = ("| tokens / step | micro-steps | AdamW step | fraction | + projection | ratio | "
                "flop model 1 + proj / 6TP |\n|---|---|---|---|---|---|---|")


def print_token_row(row, repeats):
    print(f"\n{row['config']} ({row['layers']} layers, vocab {row['vocab']}, "
          f"{row['params_m']:.1f}M params), {row['dtype']} compute, micro-batch "
          f"{row['micro_batch'][0]}x{row['micro_batch'][1]}, medians of {repeats}; {row['timing']}")
    print(TOKEN_HEADER)
    base = row["step_s"]["adamw"]
    for lbl, r in row["ratio"].items():
        frac = lbl.split("@")[1]
        print(f"| {row['tokens_per_step']} | {row['micro_steps']} | {base:.2f} s | {frac} | "
              f"{row['step_s'][lbl]:.2f} s | {r:.3f} | {1 + row['flop_share'][lbl]:.3f} |")
    sys.stdout.flush()
