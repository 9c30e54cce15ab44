"""Tiny 3-task runs through the runner: their metrics and how often the train step compiles.

    PYTHONPATH=$PWD python benchmarks/runner_compiles.py OUTDIR [case ...]
    python benchmarks/runner_compiles.py --compare BEFORE_DIR AFTER_DIR

A random 2-layer Llama (width 32) on the built-in fixture plus a third, shorter task, for
each method / optimizer case below; writes OUTDIR/results.json with every run's metrics
(timings dropped), the number of train steps built (``make_train_step`` calls) and their
compiles (jit cache entries). ``--compare`` reports whether two such files hold identical
metrics, e.g. before and after a change to the trainer. The persistent compilation cache is
off, so compiles are counted, not cache hits.
"""
import json, logging, os, sys, time
os.environ["ASVD_JAX_COMPILE_CACHE"] = "0"
import numpy as np
import jax
jax.config.update("jax_log_compiles", True)
from asvd_jax.cl import load_config, run
from asvd_jax.cl._fixture import _MOOD, _rows, write_fixture
import yaml

class Count(logging.Handler):
    def __init__(self):
        super().__init__(); self.n = 0; self.names = []
    def emit(self, rec):
        msg = rec.getMessage()
        if msg.startswith("Compiling step") or msg.startswith("Compiling jit(step)"):
            self.n += 1
        if "step" in msg.split(" ")[1:3] or "jit(step)" in msg:
            self.names.append(msg[:80])
counter = Count()
logging.getLogger("jax").addHandler(counter)
logging.getLogger("jax").setLevel(logging.WARNING)

if sys.argv[1] == "--compare":
    def _diff(x, y, path=""):
        if isinstance(x, dict) and isinstance(y, dict):
            if set(x) != set(y):
                return [f"{path}: keys {sorted(set(x) ^ set(y))}"]
            return [d for k in sorted(x) for d in _diff(x[k], y[k], f"{path}/{k}")]
        if isinstance(x, list) and isinstance(y, list):
            if len(x) != len(y):
                return [f"{path}: lengths {len(x)} vs {len(y)}"]
            return [d for i, (u, v) in enumerate(zip(x, y)) for d in _diff(u, v, f"{path}[{i}]")]
        return [] if x == y or (x != x and y != y) else [f"{path}: {x!r} vs {y!r}"]

    a, b = (json.load(open(os.path.join(d, "results.json"))) for d in sys.argv[2:4])
    for name in sorted(set(a) & set(b)):
        d = _diff(a[name]["metrics"], b[name]["metrics"])
        print(f"{name}: {'identical' if not d else f'{len(d)} differences'}; train steps built "
              f"{a[name]['train_step_builds']} -> {b[name]['train_step_builds']}, compiled "
              f"{a[name]['train_step_compiles']} -> {b[name]['train_step_compiles']}")
        for line in d[:10]:
            print("   ", line)
    sys.exit(0)
out = sys.argv[1]
os.makedirs(out, exist_ok=True)
fx = os.path.join(out, "fixture")
path = write_fixture(fx, n_train=24, n_test=8)
spec = yaml.safe_load(open(path))
rng = np.random.default_rng(7)
with open(os.path.join(fx, "third_train.jsonl"), "w") as f:
    for r in _rows(_MOOD, 16, rng): f.write(json.dumps(r) + "\n")
with open(os.path.join(fx, "third_test.jsonl"), "w") as f:
    for r in _rows(_MOOD, 8, rng): f.write(json.dumps(r) + "\n")
spec["tasks"].append({"name": "third", "train_path": "third_train.jsonl", "test_path": "third_test.jsonl",
                      "instruction": "Good or bad?", "options": sorted(_MOOD)})
seq3 = os.path.join(fx, "seq3.yaml")
yaml.safe_dump(spec, open(seq3, "w"), sort_keys=False)

TINY = ["model.source=random", "model.random_width=32", "data.suite=custom", "data.max_len=64",
        "train.lr=3e-3", "train.batch_size=8", "eval.batch_size=16", "method.stats_examples=16",
        "data.max_eval_per_task=8", "run.progress=false", f"data.path={seq3}", "eval.lm_loss=false"]
CASES = {
    "asvd": ["method.name=asvd", "method.rank_policy=paper"],
    "seqft": ["method.name=seqft"],
    "ewc": ["method.name=ewc"],
    "asvd_cos_accum_carry": ["method.name=asvd", "train.schedule=cosine", "train.warmup_steps=1",
                             "train.grad_accum=2", "train.fresh_optimizer=false", "train.max_grad_norm=1.0"],
    "asvd_none_linear": ["method.name=asvd", "method.projection=none", "train.schedule=linear",
                         "train.warmup_steps=2", "method.leakage_from=weights"],
    "asvd_frozen_nt": ["method.name=asvd", "method.train_non_targets=false", "train.leakage_every=1"],
    "ewc_linear": ["method.name=ewc", "train.schedule=linear", "train.warmup_steps=1"],
    "lora": ["method.name=lora"],
    "olora": ["method.name=olora"],
    "mtl": ["method.name=mtl", "train.schedule=cosine"],
}
import asvd_jax.cl._train as _tr
_orig = _tr.make_train_step
_made = []
def _counting(*a, **k):
    f = _orig(*a, **k); _made.append(f); return f
def _patch():
    for mod in list(sys.modules.values()):
        if mod is not None and getattr(mod, "make_train_step", None) is _orig:
            mod.make_train_step = _counting
names = sys.argv[2:] or list(CASES)
res = {}
for name in names:
    counter.n = 0; counter.names = []; _made.clear(); _patch()
    t = time.time()
    m = run(load_config(None, TINY + CASES[name]), run_dir=os.path.join(out, name))
    m = json.loads(json.dumps(m))
    m.pop("timing", None); m.pop("name", None)
    for row in m["rows"]:
        row["train"].pop("seconds", None)
    res[name] = {"metrics": m, "step_compiles": counter.n, "train_step_builds": len(_made),
                  "train_step_compiles": sum(f._cache_size() for f in _made), "seconds": time.time() - t}
    print(name, "compiles", counter.n, "train-step builds", len(_made), "compiles", sum(f._cache_size() for f in _made), "secs %.1f" % (time.time() - t), flush=True)
    json.dump(res, open(os.path.join(out, "results.json"), "w"), indent=1, sort_keys=True)
