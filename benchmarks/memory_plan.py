"""Per-device memory of the sharded train step of LLaMA-2-7B and T5-large, by compilation.

    python benchmarks/memory_plan.py [--model llama2-7b,t5-large] [--mesh fsdp=8,data=2:fsdp=4]
        [--protected 0.8] [--json plan.json]

For each model and mesh, a subprocess with 8 fake CPU devices
(``XLA_FLAGS=--xla_force_host_platform_device_count=8``) compiles the train step from shapes
(``asvd_jax.cl._memory_plan.plan_memory``: the project's model class, float32 master weights,
AdamW moments, float32 bases, the strict projection, donated state) and prints XLA's
per-device memory analysis. Batch, sequence length, compute dtype and protected fraction come
from the model's preset (``--protected`` overrides; the presets' ``trr`` is the mean protected
fraction of the paper's rank policy). Nothing is allocated; a 7B plan takes minutes of CPU.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

MODELS = {
    # name: (family, preset, config kwargs)
    "llama2-7b": ("llama", "experiments/paper_llama2_7b_standard.yaml",
                  dict(vocab_size=32000, hidden_size=4096, intermediate_size=11008,
                       num_layers=32, num_heads=32, num_kv_heads=32, rms_norm_eps=1e-5)),
    "t5-large": ("t5", "experiments/paper_t5_large_order1.yaml",
                 dict(vocab_size=32128, d_model=1024, d_kv=64, d_ff=4096, num_layers=24,
                      num_heads=16)),
}
CAPACITY_GB = {"80 GB GPU": 80, "32 GB TPU core": 32, "16 GB TPU core": 16}
HEADROOM = 0.9  # a plan "fits" when its peak is at most 90% of the device (runtime reserve)


def parse_mesh(text: str) -> dict:
    """'fsdp=8' or 'data=2:fsdp=4' -> {'data': d, 'fsdp': f}."""
    mesh = {"data": 1, "fsdp": 1}
    for part in text.split(":"):
        key, _, value = part.partition("=")
        if key not in mesh or not value.isdigit():
            raise ValueError(f"--mesh entry {text!r}: expected e.g. fsdp=8 or data=2:fsdp=4")
        mesh[key] = int(value)
    return mesh


def preset_values(preset: str) -> dict:
    """The preset as a run loads it (defaults filled in): dtype, batch, length, trr, remat."""
    from asvd_jax.cl import load_config

    cfg = load_config(str(ROOT / preset))
    return dict(compute_dtype=cfg.model.dtype, batch=cfg.train.batch_size, seq=cfg.data.max_len,
                protected=float(cfg.method.rank_policy.trr), remat=cfg.model.remat)


def run_one(model: str, mesh: dict, protected: float | None, target_len: int,
            batch: int | None = None, remat: bool = False) -> dict:
    """Compile in this process (jax must already see enough devices)."""
    from asvd_jax.cl._memory_plan import PlanSpec, plan_memory

    family, preset, kwargs = MODELS[model]
    if family == "llama":
        from asvd_jax.models.llama import LlamaConfig as Config
    else:
        from asvd_jax.models.t5 import T5Config as Config
    values = preset_values(preset)
    if protected is not None:
        values["protected"] = protected
    if batch is not None:
        values["batch"] = batch
    values["remat"] = (values["remat"] or remat) and family == "llama"  # t5 fits without it
    spec = PlanSpec(family, Config(**kwargs), target_len=target_len, **values, **mesh)
    out = plan_memory(spec)
    out.update(model=model, preset=preset)
    return out


def run_subprocess(model: str, mesh: dict, args) -> dict:
    n = mesh["data"] * mesh["fsdp"]
    env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={n}",
               JAX_PLATFORMS="cpu", PYTHONPATH=str(ROOT))
    cmd = [sys.executable, __file__, "--one", model, "--mesh", ":".join(f"{k}={v}" for k, v in
                                                                        mesh.items()),
           "--target-len", str(args.target_len)]
    if args.protected is not None:
        cmd += ["--protected", str(args.protected)]
    if args.batch is not None:
        cmd += ["--batch", str(args.batch)]
    if args.remat:
        cmd.append("--remat")
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if proc.returncode:
        raise RuntimeError(f"{model} on {mesh} failed:\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def table(rows: list[dict]) -> str:
    gb = lambda b: f"{b / 1e9:.2f}"  # noqa: E731
    lines = ["| model | mesh | batch | params | AdamW | bases | gradients + activations (temp) "
             "| peak | fits (peak <= 90%) |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        d = r["per_device"]
        fits = ", ".join(k for k, cap in CAPACITY_GB.items() if d["peak"] <= HEADROOM * cap * 1e9) or "none"
        mesh = f"data {r['mesh']['data']} x fsdp {r['mesh']['fsdp']}"
        shape = f"{r['batch']} x {r['seq']}" + (f" -> {r['target_len']}" if r["target_len"] else "")
        remat = ", remat" if r.get("remat") else ""
        lines.append(f"| {r['model']} ({r['compute_dtype']} compute, {r['protected']} protected"
                     f"{remat}) "
                     f"| {mesh} | {shape} | {gb(d['params'])} | {gb(d['adam'])} | "
                     f"{gb(d['bases'])} | {gb(d['temp'])} | {gb(d['peak'])} | {fits} |")
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="llama2-7b,t5-large")
    ap.add_argument("--mesh", default="fsdp=8,data=2:fsdp=4",
                    help="comma-separated meshes, each 'fsdp=8' or 'data=2:fsdp=4'")
    ap.add_argument("--protected", type=float, default=None,
                    help="protected fraction of every matrix (default: the preset's trr)")
    ap.add_argument("--batch", type=int, default=None, help="rows per step (default: preset)")
    ap.add_argument("--target-len", type=int, default=64, help="T5 decoder tokens per row")
    ap.add_argument("--remat", action="store_true",
                    help="llama: the model's remat option (model.remat: the blocks as a scan of checkpointed steps)")
    ap.add_argument("--json", default=None)
    ap.add_argument("--one", default=None, help=argparse.SUPPRESS)  # child process
    args = ap.parse_args(argv)
    if args.one:
        row = run_one(args.one, parse_mesh(args.mesh), args.protected, args.target_len,
                      args.batch, args.remat)
        print(json.dumps(row))
        return [row]
    models = [m for m in args.model.split(",") if m]
    unknown = [m for m in models if m not in MODELS]
    if unknown:
        ap.error(f"unknown model(s) {unknown}; choose from {list(MODELS)}")
    meshes = [parse_mesh(m) for m in args.mesh.split(",") if m]
    rows = []
    for model in models:
        for mesh in meshes:
            rows.append(run_subprocess(model, mesh, args))
            d = rows[-1]["per_device"]
            print(f"{model} {mesh}: peak {d['peak'] / 1e9:.2f} GB per device "
                  f"(params {d['params'] / 1e9:.2f}, AdamW {d['adam'] / 1e9:.2f}, bases "
                  f"{d['bases'] / 1e9:.2f}, temp {d['temp'] / 1e9:.2f})", flush=True)
            if args.json:  # written after each plan, so a finished plan is never lost
                Path(args.json + ".tmp").write_text(json.dumps(rows, indent=1))
                os.replace(args.json + ".tmp", args.json)
    print(table(rows))
    return rows


if __name__ == "__main__":
    main()
