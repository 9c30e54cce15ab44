"""This library against Hugging Face PEFT's ``osf`` tuner on the same random Llama, CPU.

    python benchmarks/vs_peft.py [--layers 2] [--batches 8x64,8x512] [--fractions 0.5,0.8]
        [--steps 100] [--repeats 5]

Needs the ``bench`` extra (``pip install -e .[bench,dev]``: peft, torch, transformers).
A random SmolLM2-135M-shaped Llama (``--layers`` of its 30 layers; the vocabulary scaled by
the same factor unless ``--keep-vocab``, so the head's share of the flops stays the full
model's) is written once as a Hugging Face folder and loaded by both frameworks, so both
start from the same weights and see the same token batches. Both train with AdamW (lr 1e-4,
weight decay 0.01), float32:
  * torch: plain AdamW on every parameter ("full FT"), and ``peft.get_peft_model`` with
    ``OSFConfig(effective_rank=fraction, target_modules=<the 7 Llama projections>)`` (OSF
    trains only the low singular part of the targets; everything else is frozen);
  * jax: plain ``optax.adamw`` on every parameter, and ``aj.with_projection(adamw, bases)``
    with ``k = fraction * min(m, n)`` protected directions per target (full fine-tuning).
Reported per framework and batch: the step time of each method over the framework's own plain
AdamW (medians, calls alternated in one process), the peak RSS of a process that runs only
that configuration, the bytes of the bases / adapter state, and, after ``--steps`` steps on
the first batch shape, the protected share of every target's ``W_t - W_0``:
``||D - (I - U_k U_k^T) D (I - V_k V_k^T)||_F / ||D||_F`` with ``U_k, V_k`` the top-k singular
vectors of ``W_0`` from a float64 SVD, the same function for both frameworks.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SMOLLM2 = dict(vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
               num_attention_heads=9, num_key_value_heads=3, tie_word_embeddings=True,
               rope_theta=100000.0, rms_norm_eps=1e-5, max_position_embeddings=2048)
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
LR, WD = 1e-4, 0.01


def protected_share(w0: np.ndarray, wt: np.ndarray, k: int) -> float:
    """Share of ``wt - w0`` that touches the top-k singular directions of ``w0`` (float64)."""
    w0, d = np.asarray(w0, np.float64), np.asarray(wt, np.float64) - np.asarray(w0, np.float64)
    norm = np.linalg.norm(d)
    if norm == 0 or k == 0:
        return 0.0
    u, _, vt = np.linalg.svd(w0, full_matrices=False)
    u, v = u[:, :k], vt[:k].T
    allowed = d - u @ (u.T @ d)
    allowed = allowed - (allowed @ v) @ v.T
    return float(np.linalg.norm(d - allowed) / norm)


def write_model(folder: str, layers: int, keep_vocab: bool) -> dict:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = dict(SMOLLM2, num_hidden_layers=layers)
    if not keep_vocab:
        cfg["vocab_size"] = max(256, round(SMOLLM2["vocab_size"] * layers / 30))
    torch.manual_seed(0)
    LlamaForCausalLM(LlamaConfig(**cfg)).save_pretrained(folder)
    return cfg


def batches(vocab: int, batch: int, seq: int, n: int) -> np.ndarray:
    return np.random.default_rng(1).integers(0, vocab, (n, batch, seq + 1), dtype=np.int64)


# ---------------------------------------------------------------- torch / peft


def torch_setup(folder: str, method: str):
    import torch
    from transformers import LlamaForCausalLM

    model = LlamaForCausalLM.from_pretrained(folder, torch_dtype=torch.float32)
    model.train()
    extra = 0
    if method != "full":
        from peft import OSFConfig, get_peft_model

        model = get_peft_model(model, OSFConfig(effective_rank=float(method),
                                                target_modules=TARGETS))
        for mod in model.modules():
            for name in ("_osf_U_low_init", "_osf_S_low_init", "_osf_V_low_init",
                         "_osf_U_high", "_osf_V_high", "osf_svd_params"):
                for t in getattr(mod, name, {}).values():
                    tensors = t.values() if isinstance(t, torch.nn.ParameterDict) else [t]
                    extra += sum(x.numel() * x.element_size() for x in tensors)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=LR, weight_decay=WD)

    def step(tokens):
        tok = torch.from_numpy(tokens)
        logits = model(input_ids=tok[:, :-1]).logits
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]),
                                                 tok[:, 1:].reshape(-1))
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return float(loss)

    return model, step, extra


def torch_weights(model) -> dict:
    """{path: (W_0, W_t, k)} of every OSF target (W_t = base weight + OSF delta)."""
    import torch

    out = {}
    with torch.no_grad():
        for name, mod in model.named_modules():
            if hasattr(mod, "osf_svd_params") and "default" in mod.osf_svd_params:
                w0 = mod.get_base_layer().weight.detach().numpy().copy()
                d = mod.get_delta_weight("default").detach().numpy()
                out[name] = (w0, w0.astype(np.float64) + d, mod.effective_rank["default"])
    return out


# ---------------------------------------------------------------- jax


def jax_setup(folder: str, method: str):
    import jax
    import optax
    from flax import nnx

    import asvd_jax as aj
    from asvd_jax.models.llama import load_hf

    model, _ = load_hf(folder)
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    tx = optax.adamw(LR, weight_decay=WD)
    extra, ranks = 0, {}
    if method != "full":
        targets = aj.select_targets(params)
        flat = dict(aj.flatten_with_paths(params)[0])
        ranks = {p: int(float(method) * min(s.matrix_shape(flat[p].shape)[1:]))
                 for p, s in aj.list_targets(targets)}
        bases = aj.compute_bases(params, ranks, targets)
        extra = sum(x.nbytes for x in jax.tree.leaves(bases))
        tx = aj.with_projection(tx, bases)

    def loss_fn(p, tok):
        logits = nnx.merge(graphdef, p, rest)(tok[:, :-1])
        return optax.softmax_cross_entropy_with_integer_labels(logits, tok[:, 1:]).mean()

    @jax.jit
    def jstep(p, s, tok):
        loss, g = jax.value_and_grad(loss_fn)(p, tok)
        u, s = tx.update(g, s, p)
        return optax.apply_updates(p, u), s, loss

    state = {"p": params, "s": tx.init(params)}

    def step(tokens):
        state["p"], state["s"], loss = jstep(state["p"], state["s"], tokens.astype(np.int32))
        return float(loss)

    return (params, state, ranks), step, extra


def jax_weights(handle) -> dict:
    import asvd_jax as aj

    params0, state, ranks = handle
    w0 = dict(aj.flatten_with_paths(params0)[0])
    wt = dict(aj.flatten_with_paths(state["p"])[0])
    return {p: (np.asarray(w0[p]), np.asarray(wt[p]), k) for p, k in ranks.items()}


# ---------------------------------------------------------------- child roles


def peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9  # Linux: KiB


def child_time(args) -> dict:
    """Alternate one step of each method; medians after one warm-up step each."""
    setup = torch_setup if args.framework == "torch" else jax_setup
    methods = ["full"] + args.fractions.split(",")
    steps = [setup(args.folder, m)[1] for m in methods]
    b, s = (int(x) for x in args.batch.split("x"))
    data = batches(args.vocab, b, s, args.repeats + 1)
    for st in steps:
        st(data[0])
    times = [[] for _ in steps]
    for i in range(args.repeats):
        for st, ts in zip(steps, times):
            t0 = time.perf_counter()
            st(data[i + 1])
            ts.append(time.perf_counter() - t0)
    med = [statistics.median(t) for t in times]
    return dict(step_s=dict(zip(methods, med)),
                ratio={m: t / med[0] for m, t in zip(methods[1:], med[1:])})


def child_run(args) -> dict:
    """One configuration alone: ``--steps`` steps, then peak RSS, extra bytes, protected share."""
    setup = torch_setup if args.framework == "torch" else jax_setup
    handle, step, extra = setup(args.folder, args.method)
    b, s = (int(x) for x in args.batch.split("x"))
    data = batches(args.vocab, b, s, args.steps)
    losses = [step(data[i]) for i in range(args.steps)]
    out = dict(peak_rss_gb=peak_rss_gb(), extra_bytes=extra, first_loss=losses[0],
               last_loss=losses[-1])
    if args.method != "full" and args.leak:
        weights = (torch_weights if args.framework == "torch" else jax_weights)(handle)
        shares = [protected_share(w0, wt, k) for w0, wt, k in weights.values()]
        out.update(share_median=float(np.median(shares)), share_max=float(np.max(shares)),
                   share_min=float(np.min(shares)), matrices=len(shares))
    return out


def spawn(role: str, framework: str, **kw) -> dict:
    cmd = [sys.executable, __file__, "--role", role, "--framework", framework]
    for k, v in kw.items():
        if v is True:
            cmd.append(f"--{k}")
        elif v is not False:
            cmd += [f"--{k.replace('_', '-')}", str(v)]
    env = dict(os.environ, PYTHONPATH=str(ROOT), JAX_PLATFORMS="cpu")
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--keep-vocab", action="store_true")
    ap.add_argument("--batches", default="8x64,8x512")
    ap.add_argument("--fractions", default="0.5,0.8")
    ap.add_argument("--steps", type=int, default=100, help="steps before the protected share")
    ap.add_argument("--rss-steps", type=int, default=3, help="steps of the RSS-only runs")
    ap.add_argument("--repeats", type=int, default=5, help="timed steps per method (median)")
    ap.add_argument("--frameworks", default="torch,jax")
    ap.add_argument("--json", default=None)
    # child process arguments
    ap.add_argument("--role", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--framework", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--folder", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--vocab", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--batch", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--method", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--leak", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.role:
        print(json.dumps(child_time(args) if args.role == "time" else child_run(args)))
        return None

    import peft
    import torch

    import jax

    versions = dict(peft=peft.__version__, torch=torch.__version__, jax=jax.__version__)
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        cfg = write_model(folder, args.layers, args.keep_vocab)
        print(f"{versions}; SmolLM2-135M shapes, {args.layers} layers, vocab {cfg['vocab_size']}; "
              f"AdamW lr {LR} wd {WD}; medians of {args.repeats}", flush=True)
        common = dict(folder=folder, vocab=cfg["vocab_size"], fractions=args.fractions)
        for i, batch in enumerate(args.batches.split(",")):
            for fw in args.frameworks.split(","):
                row = dict(framework=fw, batch=batch,
                           time=spawn("time", fw, batch=batch, repeats=args.repeats, **common))
                for method in ["full"] + args.fractions.split(","):
                    leak = i == 0 and method != "full"
                    row[method] = spawn("run", fw, batch=batch, method=method,
                                        steps=args.steps if leak else args.rss_steps,
                                        leak=leak, **common)
                rows.append(row)
                print(json.dumps(row), flush=True)
                if args.json:
                    Path(args.json).write_text(json.dumps(dict(versions=versions, layers=args.layers,
                                                               vocab=cfg["vocab_size"], rows=rows),
                                                          indent=1))
    print(table(rows, args))
    return rows


def table(rows, args) -> str:
    lines = ["| framework | batch | method | step / own AdamW | peak RSS GB | bases / adapter MB "
             f"| protected share after {args.steps} steps (median, max) |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        for m in ["full"] + args.fractions.split(","):
            name = ("AdamW" if m == "full" else
                    (f"osf {m}" if r["framework"] == "torch" else f"asvd_jax {m}"))
            ratio = 1.0 if m == "full" else r["time"]["ratio"][m]
            run = r[m]
            share = (f"{run['share_median']:.3g}, {run['share_max']:.3g}" if "share_median" in run
                     else "-")
            lines.append(f"| {r['framework']} | {r['batch']} | {name} | {ratio:.2f}x "
                         f"({1e3 * r['time']['step_s'][m]:.0f} ms) | {run['peak_rss_gb']:.2f} | "
                         f"{run['extra_bytes'] / 1e6:.1f} | {share} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
