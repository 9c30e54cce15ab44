"""Exactness and speed of the projection's options, each against its baseline in one run.

Sections (all by default, or name some with ``--only``):
- ``bf16``: protected share of ``W_t - W_0`` after 10 / 100 / 1000 AdamW steps on a small MLP,
  for bf16 params with the projection last (what the transform now refuses) and for bf16
  compute on float32 master weights (the supported path); float64 SVD reference.
- ``precision``: the same leakage after 1000 steps for each ``precision`` of the transform,
  and the time of one projection of SmolLM2's 30 layers per precision (medians).
- ``grouping``: ``project_tree`` of SmolLM2-135M's 210 target matrices (30 layers, 4 distinct
  shapes) at protection 0.8, leaf by leaf vs grouped by shape (one batched product per shape):
  median step time and compile time.
- ``layout``: the same tree with ranks drawn in the paper policy's range [0.1, 0.8] of each
  min dim, exact widths vs ``fixed_layout=(0.1, 0.8)``: step time, and compile time (what a
  task boundary with new ranks costs without the fixed layout).

Run: ``python benchmarks/projection_options.py`` (``--layers 8`` for a faster pass).
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
import asvd_jax as aj  # noqa: E402
from projection import SHAPES, random_basis, timeit_many  # noqa: E402

# SmolLM2-135M per layer: q, o (576, 576); k, v (576, 192); gate, up (576, 1536); down.
SMOLLM2_LAYER = {"q": "q/o", "o": "q/o", "k": "k/v", "v": "k/v", "gate": "gate/up",
                 "up": "gate/up", "down": "down"}


def reference_leakage(w0, delta, k):
    """Strict-mode protected share of delta for float64 SVD(w0) subspaces of rank k."""
    a, _, bt = np.linalg.svd(np.asarray(w0, np.float64), full_matrices=False)
    d = np.asarray(delta, np.float64)
    allowed = (d - a[:, :k] @ (a[:, :k].T @ d))
    allowed = allowed - (allowed @ bt[:k].T) @ bt[:k]
    return float(np.linalg.norm(d - allowed) / np.linalg.norm(d))


def mlp(seed=0, d_in=64, hidden=128, d_out=32, rows=256):
    rng = np.random.default_rng(seed)

    def spectrum(m, n):
        r = min(m, n)
        a, _ = np.linalg.qr(rng.normal(size=(m, r)))
        b, _ = np.linalg.qr(rng.normal(size=(n, r)))
        return (a * np.arange(r, 0, -1)) @ b.T / r

    params = {"up": {"kernel": jnp.asarray(spectrum(d_in, hidden), jnp.float32)},
              "down": {"kernel": jnp.asarray(spectrum(hidden, d_out), jnp.float32)}}
    x = jnp.asarray(rng.normal(size=(rows, d_in)), jnp.float32)
    y = jnp.asarray(rng.normal(size=(rows, d_out)), jnp.float32)
    ranks = {"up/kernel": d_in // 2, "down/kernel": d_out // 2}
    return params, x, y, ranks


def loss_bf16(p, x, y):
    c = jax.tree.map(lambda a: a.astype(jnp.bfloat16), p)
    h = jax.nn.gelu(x.astype(jnp.bfloat16) @ c["up"]["kernel"])
    return jnp.mean(((h @ c["down"]["kernel"]).astype(jnp.float32) - y) ** 2)


def train(params, tx, x, y, steps):
    @jax.jit
    def go(p, s):
        def body(carry, _):
            p, s = carry
            u, s = tx.update(jax.grad(loss_bf16)(p, x, y), s, p)
            return (optax.apply_updates(p, u), s), None
        return jax.lax.scan(body, (p, s), None, length=steps)[0]
    return go(params, tx.init(params))


def projected_last_unchecked(bases, lr, precision="highest"):
    """adamw then ``project_tree``: the transform's maths without its float32-params check."""
    def update_fn(updates, state, params=None):
        return aj.project_tree(updates, bases, "strict", precision), state
    return optax.chain(optax.adamw(lr, weight_decay=0.1),
                       optax.GradientTransformation(lambda p: optax.EmptyState(), update_fn))


def drift(p, params, ranks, bases=None):
    """Max over the targets of the protected share of ``W_t - W_0``: against float64 SVD(W_0)
    subspaces, or (``bases``) against the float64 span of the float32 bases the run used,
    which leaves out the float32 SVD's own error (~eps |W| / spectral gap)."""
    out = []
    for path, k in ranks.items():
        sub = path.split("/")[0]
        w0 = np.asarray(params[sub]["kernel"], np.float64)
        delta = np.asarray(p[sub]["kernel"], np.float64) - w0
        if bases is None:
            out.append(reference_leakage(w0, delta, k))
            continue
        b = bases[sub]["kernel"]
        assert not b.input_is_complement and not b.output_is_complement
        q_in = np.linalg.qr(np.asarray(b.input, np.float64))[0]
        q_out = np.linalg.qr(np.asarray(b.output, np.float64))[0]
        allowed = delta - q_in @ (q_in.T @ delta)
        allowed = allowed - (allowed @ q_out) @ q_out.T
        out.append(float(np.linalg.norm(delta - allowed) / np.linalg.norm(delta)))
    return max(out)


def section_bf16(args):
    params, x, y, ranks = mlp()
    bases = aj.compute_bases(params, ranks, aj.select_targets(params))
    bf16 = jax.tree.map(lambda a: a.astype(jnp.bfloat16), params)
    w0_bf16 = jax.tree.map(lambda a: a.astype(jnp.float32), bf16)
    print("\n## bf16: max protected share of W_t - W_0 over the two matrices, against the "
          "float64 span of the bases used (in parentheses: against float64 SVD(W_0) subspaces; "
          "in brackets: the protected share of the float32 sum of applied updates, the "
          "quantity the runner logs)")
    print("| params | lr | 10 steps | 100 steps | 1000 steps |\n|---|---|---|---|---|")
    for lr in (1e-2, 1e-3):
        for label, start, make in (
                ("bf16 (projection last)", bf16, lambda: projected_last_unchecked(bases, lr)),
                ("float32 master, bf16 compute", params,
                 lambda: aj.with_projection(optax.adamw(lr, weight_decay=0.1), bases))):
            w0 = jax.tree.map(lambda a: a.astype(jnp.float32), start)
            cells = []
            for steps in (10, 100, 1000):
                tx = optax.chain(make(), aj.track_applied_updates(bases))
                p, state = train(start, tx, x, y, steps)
                p = jax.tree.map(lambda a: a.astype(jnp.float32), p)
                cells.append(f"{drift(p, w0, ranks, bases):.2e} ({drift(p, w0, ranks):.2e})")
                if start is params:  # the logged quantity: the float32 sum of the updates
                    total = jax.tree.map(jnp.add, w0, aj.applied_updates(state))
                    cells[-1] += f" [{drift(total, w0, ranks, bases):.2e}]"
            print(f"| {label} | {lr:g} | " + " | ".join(cells) + " |")


def smollm2_tree(layers, fraction, seed=0, rank_range=None, fixed_layout=None):
    """(updates, bases) shaped like SmolLM2-135M's targets, random orthonormal bases."""
    rng = np.random.default_rng(seed)
    key = jax.random.key(seed)
    updates, bases = {}, {}
    for i in range(layers):
        for name, shape_name in SMOLLM2_LAYER.items():
            m, n = SHAPES["smollm2-135m"][shape_name]
            r = min(m, n)
            key, kg, kb = jax.random.split(key, 3)
            path = f"{i}_{name}"
            updates[path] = jax.random.normal(kg, (m, n), jnp.float32)
            if rank_range is None:
                k = int(fraction * r)
            else:
                k = int(rng.integers(math.ceil(rank_range[0] * r), int(rank_range[1] * r) + 1))
            bases[path] = (random_basis(kb, m, n, k) if fixed_layout is None
                           else fixed_basis(kb, m, n, k, fixed_layout))
    return updates, bases


def fixed_basis(key, m, n, k, layout):
    """Random orthonormal columns stored the way ``compute_bases(fixed_layout=layout)``
    stores rank k: the form and padded width depend on the layout, not on k."""
    r = min(m, n)
    lo, hi = math.floor(layout[0] * r), math.ceil(layout[1] * r)
    k_in, k_out = jax.random.split(key)

    def side(key, dim, complement, width):
        cols = r - k if complement else k
        q = (jnp.linalg.qr(jax.random.normal(key, (dim, cols), jnp.float32))[0] if cols
             else jnp.zeros((dim, 0), jnp.float32))
        return jnp.pad(q, ((0, 0), (0, width - cols)))

    in_comp, out_comp = m == r and r - lo < hi, n == r and r - lo < hi
    return aj.SubspaceBasis(side(k_in, m, in_comp, r - lo if in_comp else hi),
                            side(k_out, n, out_comp, r - lo if out_comp else hi),
                            aj.MatrixSpec((0,), (1,)), in_comp, out_comp)


def compile_seconds(fn, *args):
    t = time.perf_counter()
    jax.jit(fn).lower(*args).compile()
    return time.perf_counter() - t


def section_precision(args):
    params, x, y, ranks = mlp()
    bases = aj.compute_bases(params, ranks, aj.select_targets(params))
    updates, tree_bases = smollm2_tree(args.layers, 0.8)
    print(f"\n## precision: leakage after 1000 AdamW steps (lr 1e-2, float32 master, bf16 "
          f"compute) and one projection of SmolLM2's {args.layers} layers at 0.8 "
          f"({jax.default_backend()})")
    thunks, leaks = [], []
    for precision in aj.PRECISIONS:
        tx = aj.with_projection(optax.adamw(1e-2, weight_decay=0.1), bases, precision=precision)
        leaks.append(drift(train(params, tx, x, y, 1000)[0], params, ranks, bases))
        fn = jax.jit(lambda u, b, precision=precision: aj.project_tree(u, b, "strict", precision))
        thunks.append(lambda fn=fn: fn(updates, tree_bases))
    times = timeit_many(thunks, args.repeats)
    print("| precision | leakage after 1000 steps (vs the bases used) | projection ms | vs highest |\n|---|---|---|---|")
    for precision, leak, t in zip(aj.PRECISIONS, leaks, times):
        print(f"| {precision} | {leak:.2e} | {1e3 * t:.0f} | {t / times[0]:.2f} |")


def section_grouping(args):
    updates, bases = smollm2_tree(args.layers, 0.8)
    print(f"\n## grouping: project_tree of {len(updates)} SmolLM2-135M matrices at 0.8 "
          f"({args.layers} layers, 4 shapes), medians of {args.repeats}")
    fns = {g: jax.jit(lambda u, b, g=g: aj.project_tree(u, b, "strict", "highest", g))
           for g in (False, True)}
    comp = {g: compile_seconds(lambda u, b, g=g: aj.project_tree(u, b, "strict", "highest", g),
                               updates, bases) for g in fns}
    times = timeit_many([lambda f=f: f(updates, bases) for f in fns.values()], args.repeats)
    print("| layout | ms per projection | compile s |\n|---|---|---|")
    for (g, t) in zip(fns, times):
        print(f"| {'grouped by shape' if g else 'leaf by leaf'} | {1e3 * t:.0f} | {comp[g]:.1f} |")
    print(f"grouped / leaf by leaf: {times[1] / times[0]:.2f}")


def section_layout(args):
    rng_range = (0.1, 0.8)
    exact_u, exact_b = smollm2_tree(args.layers, None, seed=1, rank_range=rng_range)
    fixed_u, fixed_b = smollm2_tree(args.layers, None, seed=1, rank_range=rng_range,
                                    fixed_layout=rng_range)
    print(f"\n## layout: ranks drawn in [0.1, 0.8] of min dim per matrix ({len(exact_u)} "
          f"matrices), exact widths vs fixed_layout=(0.1, 0.8); leaf by leaf")
    fn = lambda u, b: aj.project_tree(u, b)  # noqa: E731
    comp = [compile_seconds(fn, exact_u, exact_b), compile_seconds(fn, fixed_u, fixed_b)]
    jf = jax.jit(fn)
    times = timeit_many([lambda: jf(exact_u, exact_b), lambda: jf(fixed_u, fixed_b)],
                        args.repeats)
    widths = lambda b: sum(x.input.shape[1] + x.output.shape[1] for x in b.values())  # noqa
    print("| layout | stored columns | ms per projection | compile s (paid at every rank "
          "change without the fixed layout) |\n|---|---|---|---|")
    for name, b, t, c in (("exact widths", exact_b, times[0], comp[0]),
                          ("fixed (0.1, 0.8)", fixed_b, times[1], comp[1])):
        print(f"| {name} | {widths(b)} | {1e3 * t:.0f} | {c:.1f} |")
    print(f"fixed / exact: {times[1] / times[0]:.2f}")


SECTIONS = {"bf16": section_bf16, "precision": section_precision, "grouping": section_grouping,
            "layout": section_layout}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--only", default=",".join(SECTIONS), help=f"subset of {list(SECTIONS)}")
    ap.add_argument("--layers", type=int, default=30, help="SmolLM2 layers (30 = the model)")
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args(argv)
    print(f"jax {jax.__version__} on {jax.default_backend()}, {jax.device_count()} device(s)")
    for name in args.only.split(","):
        SECTIONS[name](args)
        sys.stdout.flush()


if __name__ == "__main__":
    main()
