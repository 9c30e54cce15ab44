"""Cost of the strict projection per optimizer step, on real layer shapes, in one run.

For each matrix shape and protected fraction the table gives, as medians over repeats:
- ``proj``: ``aj.project`` of one update (jitted, float32), with the storage ``compute_bases``
  picks (basis or complement per side);
- ``mm``: the same matrix products with the same shapes, alone (no subtractions, no casts):
  ``proj / mm`` is the overhead of everything that is not a product (target <= 1.3);
- ``fb``: one forward + backward of that layer over ``--tokens`` tokens (three matmuls):
  ``proj / fb`` is the per-step cost relative to the layer's own training work.
Then the train-step time of ``with_projection(adamw)`` over plain ``adamw`` on a ~20M-parameter
transformer, both measured here, in this run.

Run: ``python benchmarks/projection.py`` (``--quick`` for a smaller, faster pass).
Numbers are machine-specific; compare ratios within one run only.
"""

from __future__ import annotations

import argparse
import functools
import statistics
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import asvd_jax as aj  # noqa: E402

_HIGHEST = jax.lax.Precision.HIGHEST  # the precision the library projects at by default

SHAPES = {
    # (in, out) kernels in the Flax layout; one entry per distinct shape.
    "smollm2-135m": {"q/o": (576, 576), "k/v": (576, 192), "gate/up": (576, 1536),
                     "down": (1536, 576)},
    "llama2-7b": {"q/k/v/o": (4096, 4096), "gate/up": (4096, 11008), "down": (11008, 4096)},
}
FRACTIONS = (0.25, 0.5, 0.8)


def timeit(fn, *args, repeats: int) -> float:
    """Median seconds of ``fn(*args)`` after one warm-up (compilation) call."""
    return timeit_many([lambda: fn(*args)], repeats)[0]


def timeit_many(fns, repeats: int) -> list[float]:
    """Median seconds of each thunk, called in alternation so that all of them see the same
    load on a shared machine (one warm-up call each first)."""
    for fn in fns:
        jax.block_until_ready(fn())
    times = [[] for _ in fns]
    for _ in range(repeats):
        for fn, ts in zip(fns, times):
            t0 = time.perf_counter()
            jax.block_until_ready(fn())
            ts.append(time.perf_counter() - t0)
    return [statistics.median(ts) for ts in times]


def random_basis(key, m, n, k) -> aj.SubspaceBasis:
    """Orthonormal random bases with the storage compute_bases would choose for rank k.

    Timing depends only on shapes, so a QR of a random matrix stands in for the SVD (which
    would cost minutes on the 7B shapes here).
    """
    r = min(m, n)
    in_comp = m == r and r - k < k
    out_comp = n == r and r - k < k
    k_in, k_out = jax.random.split(key)

    def cols(key, dim, width):
        if width == 0:
            return jnp.zeros((dim, 0), jnp.float32)
        q, _ = jnp.linalg.qr(jax.random.normal(key, (dim, width), jnp.float32))
        return q

    return aj.SubspaceBasis(cols(k_in, m, r - k if in_comp else k),
                            cols(k_out, n, r - k if out_comp else k),
                            aj.MatrixSpec((0,), (1,)), in_comp, out_comp)


def matmuls_only(g, basis: aj.SubspaceBasis):
    """The strict projection's products in its order, with nothing else."""
    mm = functools.partial(jnp.matmul, precision=_HIGHEST)
    b_in, b_out = basis.input, basis.output
    if basis.input_is_complement:
        g = mm(b_in.T, g)
    if basis.output_is_complement:
        g = mm(g, b_out)
    if not basis.input_is_complement and b_in.shape[1]:
        g = mm(b_in, mm(b_in.T, g))
    if not basis.output_is_complement and b_out.shape[1]:
        g = mm(mm(g, b_out), b_out.T)
    if basis.output_is_complement:
        g = mm(g, b_out.T)
    if basis.input_is_complement:
        g = mm(b_in, g)
    return g


def strict_flops(m, n, basis: aj.SubspaceBasis) -> float:
    """Multiply-add flops (2 per MAC) of the products in ``matmuls_only``."""
    rows, cols, flops = m, n, 0.0
    w_in, w_out = basis.input.shape[1], basis.output.shape[1]
    if basis.input_is_complement:
        flops += 2 * w_in * m * cols
        rows = w_in
    if basis.output_is_complement:
        flops += 2 * rows * n * w_out
        cols = w_out
    if not basis.input_is_complement:
        flops += 4 * w_in * m * cols
    if not basis.output_is_complement:
        flops += 4 * rows * n * w_out
    if basis.output_is_complement:
        flops += 2 * rows * w_out * n
    if basis.input_is_complement:
        flops += 2 * w_in * m * n
    return flops


def forward_backward(x, w, dy):
    mm = functools.partial(jnp.matmul, precision=_HIGHEST)
    return mm(x, w), mm(dy, w.T), mm(x.T, dy)


def layer_table(models, tokens, repeats, repeats_large):
    project = jax.jit(aj.project, static_argnames="mode")
    matmuls = jax.jit(matmuls_only)
    fb = jax.jit(forward_backward)
    rows = []
    key = jax.random.key(0)
    for model in models:
        for name, (m, n) in SHAPES[model].items():
            key, kg, kx, kd = jax.random.split(key, 4)
            g = jax.random.normal(kg, (m, n), jnp.float32)
            x = jax.random.normal(kx, (tokens, m), jnp.float32)
            dy = jax.random.normal(kd, (tokens, n), jnp.float32)
            reps = repeats if m * n < 10_000_000 else repeats_large
            t_fb = timeit(fb, x, g, dy, repeats=reps)
            for frac in FRACTIONS:
                k = int(frac * min(m, n))
                key, kb = jax.random.split(key)
                basis = random_basis(kb, m, n, k)
                t_proj, t_mm = timeit_many(
                    [lambda b=basis: project(g, b, mode="strict"), lambda b=basis: matmuls(g, b)],
                    reps)
                rows.append(dict(model=model, name=name, m=m, n=n, frac=frac, k=k,
                                 store=("C" if basis.input_is_complement else "B")
                                 + ("C" if basis.output_is_complement else "B"),
                                 gflop=strict_flops(m, n, basis) / 1e9, proj=t_proj, mm=t_mm,
                                 fb=t_fb))
                print_row(rows[-1])
                sys.stdout.flush()
    return rows


HEADER = ("| model | matrix (in x out) | protected | k | storage in/out | GFLOP | proj ms | "
          "matmuls ms | proj/matmuls | fwd+bwd ms | proj/fwd+bwd |\n"
          "|---|---|---|---|---|---|---|---|---|---|---|")


def print_row(r):
    print(f"| {r['model']} | {r['name']} {r['m']}x{r['n']} | {r['frac']:.2f} | {r['k']} | "
          f"{r['store']} | {r['gflop']:.3f} | {1e3 * r['proj']:.2f} | {1e3 * r['mm']:.2f} | "
          f"{r['proj'] / r['mm']:.2f} | {1e3 * r['fb']:.1f} | {r['proj'] / r['fb']:.3f} |")


def summarize(rows):
    """The two targets: proj/matmuls <= 1.3, and cost at 0.8 protection <= cost at 0.25."""
    ratios = np.array([r["proj"] / r["mm"] for r in rows])
    print(f"\nproj/matmuls: geometric mean {np.exp(np.log(ratios).mean()):.2f}, "
          f"median {np.median(ratios):.2f}, max {ratios.max():.2f} (target <= 1.3)")
    by_shape = {}
    for r in rows:
        by_shape.setdefault((r["model"], r["name"]), {})[r["frac"]] = r
    for (model, name), fr in by_shape.items():
        lo, hi = fr[min(fr)], fr[max(fr)]
        print(f"{model} {name}: {max(fr):.2f} vs {min(fr):.2f} protected: "
              f"{hi['gflop']:.3f} vs {lo['gflop']:.3f} GFLOP, "
              f"{1e3 * hi['proj']:.2f} vs {1e3 * lo['proj']:.2f} ms")


def tiny_transformer(key, vocab, d, ffn, layers):
    """Params of a pre-norm causal transformer (dict of (in, out) kernels)."""
    def dense(key, m, n):
        return jax.random.normal(key, (m, n), jnp.float32) / np.sqrt(m)

    keys = iter(jax.random.split(key, 2 + 6 * layers))
    params = {"embed": {"embedding": dense(next(keys), vocab, d) * np.sqrt(vocab / d)},
              "lm_head": {"kernel": dense(next(keys), d, vocab)}, "layers": {}}
    for i in range(layers):
        params["layers"][str(i)] = {
            "attn": {nm: {"kernel": dense(next(keys), d, d)} for nm in ("q", "k", "v", "o")},
            "mlp": {"up": {"kernel": dense(next(keys), d, ffn)},
                    "down": {"kernel": dense(next(keys), ffn, d)}},
            "norm1": {"scale": jnp.ones(d)}, "norm2": {"scale": jnp.ones(d)}}
    return params


def transformer_loss(params, tokens, heads):
    def norm(x, scale):
        return x * jax.lax.rsqrt(jnp.mean(x * x, -1, keepdims=True) + 1e-6) * scale

    x = params["embed"]["embedding"][tokens[:, :-1]]
    b, t, d = x.shape
    mask = jnp.tril(jnp.ones((t, t), bool))
    for layer in params["layers"].values():
        a = layer["attn"]
        h = norm(x, layer["norm1"]["scale"])
        q, k, v = (jnp.reshape(h @ a[nm]["kernel"], (b, t, heads, d // heads)) for nm in "qkv")
        s = jnp.einsum("bqhd,bkhd->bhqk", q, k) / np.sqrt(d // heads)
        p = jax.nn.softmax(jnp.where(mask, s, -1e9), -1)
        x = x + jnp.einsum("bhqk,bkhd->bqhd", p, v).reshape(b, t, d) @ a["o"]["kernel"]
        h = norm(x, layer["norm2"]["scale"])
        x = x + jax.nn.gelu(h @ layer["mlp"]["up"]["kernel"]) @ layer["mlp"]["down"]["kernel"]
    logits = x @ params["lm_head"]["kernel"]
    return optax.softmax_cross_entropy_with_integer_labels(logits, tokens[:, 1:]).mean()


def train_step_ratio(args):
    params = tiny_transformer(jax.random.key(1), args.vocab, args.d_model, 4 * args.d_model,
                              args.layers)
    n_params = sum(x.size for x in jax.tree.leaves(params))
    targets = aj.select_targets(params)
    ranks = {p: int(args.train_fraction * min(s.matrix_shape(_leaf(params, p).shape)[1:]))
             for p, s in aj.list_targets(targets)}
    bases = aj.compute_bases(params, ranks, targets)
    tokens = jax.random.randint(jax.random.key(2), (args.batch, args.seq + 1), 0, args.vocab)
    heads = args.d_model // 64
    thunks = {}
    for label, tx in (("adamw", optax.adamw(1e-4, weight_decay=0.01)),
                      ("adamw+projection",
                       aj.with_projection(optax.adamw(1e-4, weight_decay=0.01), bases))):
        @jax.jit
        def step(p, s, tok, tx=tx):
            loss, g = jax.value_and_grad(transformer_loss)(p, tok, heads)
            u, s = tx.update(g, s, p)
            return optax.apply_updates(p, u), s, loss

        state = tx.init(params)
        thunks[label] = functools.partial(step, params, state, tokens)
    results = dict(zip(thunks, timeit_many(list(thunks.values()), args.repeats)))
    ratio = results["adamw+projection"] / results["adamw"]
    print(f"\ntrain step, {n_params / 1e6:.1f}M params ({args.layers} layers, d {args.d_model}), "
          f"{args.batch}x{args.seq} tokens, protected fraction {args.train_fraction}: "
          f"adamw {1e3 * results['adamw']:.0f} ms, adamw+projection "
          f"{1e3 * results['adamw+projection']:.0f} ms, ratio {ratio:.3f}")
    return ratio


def _leaf(params, path):
    return dict(aj.flatten_with_paths(params)[0])[path]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true",
                    help="SmolLM2 shapes only, 1024 tokens, a smaller train-step model")
    ap.add_argument("--models", default="smollm2-135m,llama2-7b",
                    help=f"comma-separated subset of {list(SHAPES)}")
    ap.add_argument("--tokens", type=int, default=4096, help="tokens of the fwd+bwd reference")
    ap.add_argument("--repeats", type=int, default=5, help="timed calls per measurement (median)")
    ap.add_argument("--repeats-large", type=int, default=3,
                    help="timed calls for matrices of 10M entries or more (7B shapes)")
    ap.add_argument("--skip-train-step", action="store_true")
    ap.add_argument("--layers", type=int, default=6)
    ap.add_argument("--d-model", type=int, default=512)
    ap.add_argument("--vocab", type=int, default=2048)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--train-fraction", type=float, default=0.5)
    args = ap.parse_args(argv)
    if args.quick:
        args.models, args.tokens, args.repeats = "smollm2-135m", 1024, 3
        args.layers, args.d_model, args.vocab, args.batch, args.seq = 2, 256, 2048, 4, 64
    models = [m for m in args.models.split(",") if m]
    unknown = [m for m in models if m not in SHAPES]
    if unknown:
        ap.error(f"unknown model(s) {unknown}; choose from {list(SHAPES)}")
    print(f"jax {jax.__version__} on {jax.devices()[0].platform}, {jax.device_count()} device(s); "
          f"fwd+bwd over {args.tokens} tokens; medians of {args.repeats}\n")
    print(HEADER)
    rows = layer_table(models, args.tokens, args.repeats, args.repeats_large)
    summarize(rows)
    if not args.skip_train_step:
        train_step_ratio(args)


if __name__ == "__main__":
    main()
