"""Typed, frozen experiment configs; YAML files and ``--set a.b=v`` overrides on top.

An :class:`ExperimentConfig` has one section per concern (model, data, method, train, eval,
mesh, checkpoint, run). Every field has a default, so a YAML preset holds only what it
changes::

    method: {name: asvd, rank_policy: {budget: {trr: 0.6, max_fraction: 0.9}}}
    train: {lr: 3.0e-5}

``load_config(path, overrides)`` applies the YAML, then each ``section.field=value`` override
(values parsed as YAML scalars/lists). A misspelt key is an error that names it and suggests
the nearest valid key; a value of the wrong type names the key and the expected type.

``method.rank_policy`` is one of ``asvd_jax.ranks``' policy dataclasses, written as
``{name: {field: value}}`` (``--set method.rank_policy.budget.max_fraction=0.9``) or just its
name (``--set method.rank_policy=energy``: its defaults); the dataclass declares and validates
its fields. Loading and overrides live in ``_config_load``; the flat keys of older configs
(``method.mrr``, ``trr``, ``max_fraction``, ``fraction``, ``tau`` beside a policy name) still
load: ``_config_load._legacy_policy`` maps them.
"""

from __future__ import annotations

import dataclasses
import difflib
from typing import Any, Sequence

from asvd_jax.ranks import POLICIES, PaperPolicy, RankPolicy

_POLICY_TYPES = tuple(POLICIES.values())


class ConfigError(ValueError):
    """A config file or override names an unknown key or has a value of the wrong type."""


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    family: str = "llama"
    """Model family: ``llama`` (decoder), ``gemma3`` (decoder), ``bert`` (encoder, option
    scoring by similarity) or ``t5`` (encoder-decoder); or one registered with
    ``register_family``."""
    source: str = "smollm2"
    """Where the weights come from: ``smollm2`` / ``minilm`` / ``gemma3_270m`` (the packaged
    models; Gemma 3 270M is the base model, for ``family: gemma3``), ``hf``
    (a local Hugging Face folder in ``path``), ``gguf`` (a GGUF file in ``path``), ``hub``
    (a hub id in ``path``; needs a network) or ``random`` (a tiny random model for tests)."""
    path: str = ""
    """Folder, file or hub id for ``hf`` / ``gguf`` / ``hub`` sources."""
    dtype: str = "float32"
    """Compute dtype: ``float32`` or ``bfloat16``. Parameters, AdamW moments and bases are
    float32 either way (master weights): ``bfloat16`` runs the forward and backward matmuls in
    bf16 on float32 weights, which keeps the projection exact (docs/core.md)."""
    remat: bool = False
    """Recompute each layer in the backward pass instead of keeping its activations (and, under
    FSDP, its gathered weights): the llama family runs its blocks as a scan of checkpointed
    steps. Same values, about a third more forward compute; what lets LLaMA-2-7B fit 32 GB
    TPU cores (docs/scale.md)."""
    random_layers: int = 2
    """Layers of the ``random`` model."""
    random_width: int = 64
    """Hidden size of the ``random`` model (heads of 16 dims)."""


@dataclasses.dataclass(frozen=True)
class DataConfig:
    suite: str = "offline"
    """Task sequence: ``offline`` (the packaged five-task suite), ``offline_disjoint`` (five
    offline tasks without a shared label word, docs/data.md), ``standard4`` / ``long`` (offline
    stand-ins shaped like the paper's 4-task and long benchmarks: Mercari, Rotten Tomatoes,
    BBC News, ..., docs/data.md), ``olora`` / ``trace`` (the paper's benchmarks under
    ``root``), ``custom`` (a YAML sequence in ``path``) or ``fixture`` (two tiny keyword tasks
    for pulse checks)."""
    order: int = 1
    """Task order (offline, offline_disjoint, standard4: 1-3; long: 1; O-LoRA: 1-6)."""
    tasks: tuple[str, ...] = ()
    """Keep only these tasks of the order (in the order's sequence); empty = all."""
    root: str = ""
    """Benchmark root folder for ``olora`` / ``trace``."""
    path: str = ""
    """Sequence YAML for ``suite: custom`` (needs it; an error with another suite). A relative
    path is relative to the working directory; the data files named inside the YAML are
    relative to the YAML's own folder."""
    data_dir: str = ""
    """Cache folder for the built offline suites; empty = the data module's default."""
    per_class_train: int = 40
    """Training examples per class (offline, offline_disjoint, standard4, long)."""
    per_class_dev: int = 10
    """Dev examples per class (offline, offline_disjoint, standard4, long)."""
    per_class_test: int = 30
    """Test examples per class (offline, offline_disjoint, standard4, long)."""
    max_train_per_task: int = 0
    """Cap on training examples per task after loading (0 = no cap); class-balanced for
    classification tasks (seeded), a seeded random draw for generation tasks."""
    max_eval_per_task: int = 0
    """Cap on evaluation examples per task (0 = no cap), drawn like ``max_train_per_task``."""
    max_train_per_class: int = 0
    """Cap on training examples per class of every classification task, any suite (0 = no
    cap; a seeded draw, applied before ``max_train_per_task``): a preset's per-class budget on
    a custom sequence."""
    max_eval_per_class: int = 0
    """Cap on dev and test examples per class, any suite (0 = no cap), like
    ``max_train_per_class``."""
    max_len: int = 128
    """Maximum tokens per example; the text part of the prompt is truncated, never the
    answer."""
    general_text: str = ""
    """Text file for the general-ability LM loss (text outside all tasks); empty = the
    paragraphs shipped with the runner."""
    seed: int = 0
    """Seed for sampling and shuffling."""


@dataclasses.dataclass(frozen=True)
class MethodConfig:
    name: str = "asvd"
    """``asvd`` (this method), ``seqft`` (sequential full fine-tuning, k = 0), ``mtl``
    (joint multi-task training, upper bound), ``ewc``, ``lora``, ``olora``."""
    projection: str = "strict"
    """Projection mode: ``strict`` (I-P)G(I-P), ``paper`` G - P G P, ``input``, ``output``,
    or ``none`` (ablation: bases computed, nothing projected)."""
    rank_policy: RankPolicy = PaperPolicy()
    """``{name: {field: value}}`` or a name: ``paper`` (mrr, trr: importance-scaled; clamping
    makes its realised mean fall below trr), ``budget`` (mrr, trr, max_fraction: the paper's
    shape rescaled after clamping so the realised mean is trr), ``progressive`` ((t-1)/T of
    min dim), ``uniform`` (fraction), ``energy`` (tau). Fields and defaults: the policy
    dataclasses in ``asvd_jax.ranks`` (docs/ranks.md)."""
    stats_examples: int = 128
    """Examples of the previous task used for activation statistics."""
    targets_include: tuple[str, ...] = ()
    """Target regexes over parameter paths; empty = the model family's default targets."""
    targets_exclude: tuple[str, ...] = ()
    """Regexes removed from the targets."""
    projection_precision: str = "highest"
    """Matmul precision of the projection: ``highest`` (exact float32), ``high`` or
    ``default`` (fewer bf16/tf32 passes on GPUs/TPUs; the same on CPU). docs/core.md."""
    group_shapes: bool = False
    """Project same-shaped target matrices as one stack (one batched product per shape);
    for accelerators, slower on CPU (docs/core.md)."""
    fixed_layout: tuple[float, ...] = ()
    """``[lo, hi]``: store every boundary's bases at the widths fixed by fractions lo..hi of
    each matrix's min dim (``asvd_jax.compute_bases(fixed_layout=...)``), so every boundary's
    bases have one shape and new ranks need no new compile of the train step (a new batch
    width still needs one); each step then projects wider zero-padded bases. A planned rank
    outside the range raises. Empty (default) = exact widths, the cheapest step. The paper
    policy can protect a matrix fully, so it needs hi = 1.0 (docs/core.md, "Fixed layout",
    has the trade-off)."""
    leakage_from: str = "updates"
    """What the logged leakage measures: ``updates`` (the float32 sum of the applied updates,
    kept in the optimizer state: ~1e-6 for an exact run, one float32 copy of the targets in
    memory) or ``weights`` (``W_t - W_0``: no extra memory, but the weights' float32 rounding
    reads as up to ~1e-2 on nearly frozen matrices)."""
    train_non_targets: bool = True
    """Train embeddings, norms and head without constraint (as all public code does)."""
    ewc_lambda: float = 1000.0
    """EWC penalty strength (lambda/2 sum F (theta - theta*)^2) of the ``ewc`` baseline (and of
    ``add_ewc`` when ``add_ewc_lambda`` is unset)."""
    add_ewc: bool = False
    """``asvd`` only (other methods ignore it): add EWC's penalty (the Fisher of every earlier
    task around the last task's weights) to the loss. The projection stays last in the chain,
    so the update still never enters the protected subspaces: the penalty acts on the free
    subspace and on the non-target params (docs/forgetting.md)."""
    add_ewc_lambda: float | None = None
    """Strength of the penalty ``add_ewc`` adds; unset = ``ewc_lambda``. Its own field because
    the projection leaves the penalty less to hold than EWC alone has, so the two dev optima
    differ (a preset carries both: docs/forgetting.md)."""
    lora_rank: int = 8
    """LoRA / O-LoRA rank."""
    lora_alpha: float = 32.0
    """LoRA / O-LoRA scale numerator (scale = alpha / rank)."""
    lora_lr: float = 1e-3
    """LoRA / O-LoRA learning rate (adapters train with a larger rate than full
    fine-tuning; ``train.lr`` is used by the full fine-tuning methods)."""
    olora_lambda1: float = 0.5
    """O-LoRA orthogonality weight."""
    olora_lambda2: float = 0.0
    """O-LoRA L2 weight on the new LoRA."""


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    lr: float = 3e-5
    """Peak learning rate (AdamW)."""
    weight_decay: float = 0.0
    """Decoupled weight decay."""
    batch_size: int = 8
    """Examples per micro-batch."""
    grad_accum: int = 1
    """Micro-batches per optimizer step (asvd_jax.accumulate_gradients; projection once per step)."""
    epochs: int = 1
    """Epochs per task."""
    max_steps: int = 0
    """Cap on micro-batches per task (0 = epochs decide)."""
    schedule: str = "constant"
    """``constant``, ``linear`` (warmup then linear decay) or ``cosine``."""
    warmup_steps: int = 0
    """Warmup optimizer steps for scheduled learning rates."""
    fresh_optimizer: bool = True
    """A fresh AdamW state per task (False carries moments across tasks)."""
    max_grad_norm: float = 0.0
    """Global-norm gradient clipping before AdamW (0 = off)."""
    seed: int = 0
    """Seed for batching order and method randomness."""
    leakage_every: int = 0
    """Log protected-subspace leakage every N optimizer steps (0 = at task end only)."""
    patience: int = 0
    """Early stopping (0 = off): stop a task after this many dev evaluations in a row without
    a dev-accuracy gain above ``min_delta``, and restore the weights of the best one. Each
    task is scored on its own dev split (an MTL stage on the mean over tasks); set
    ``epochs`` high and ``max_steps`` as the step cap, since those still bound the task."""
    eval_every: int = 0
    """Early stopping: optimizer steps between dev evaluations (0 = once per epoch)."""
    min_delta: float = 0.0
    """Early stopping: a dev accuracy must exceed the best so far by more than this to count."""
    stop_holdout: int = 0
    """Early stopping on this many held-out training examples per task (class-balanced,
    removed from training) instead of the dev split; use it for dev sweeps
    (``eval.split: dev``), where stopping on dev would bias the diagonal R[j, j] upwards."""
    freeze: tuple[str, ...] = ()
    """Regexes (``re.search`` on parameter paths, e.g. ``embed/``) of parameters that no method
    trains: no gradient flows into them and the optimizer keeps no state for them. A pattern
    that matches no parameter is an error. For large vocabularies: Gemma 3 270M's tied
    embedding is 168M of its 268M parameters (docs/models.md has the measured cost)."""
    option_pool: str = "task"
    """Which answers an option-contrastive loss (the encoder's) contrasts a task's inputs
    with: ``task``, its own label words; ``seen``, the label words of every task trained so
    far, this one included (the class-incremental protocol; the answers of earlier tasks are
    negatives, not their data). Early stopping scores over the same answers. Goes with
    ``eval.option_pool: sequence``, which scores every answer of the sequence."""


@dataclasses.dataclass(frozen=True)
class EvalConfig:
    protocol: str = "auto"
    """``generate`` (greedy + exact match, the paper's), ``options`` (restricted label-option
    scoring), ``both``, or ``auto`` (decoders and T5: both, generation headline; encoder:
    options)."""
    option_pool: str = "task"
    """Answers option scoring chooses from: ``task`` (the task's own label words, a
    task-incremental protocol: the model is told which answers are possible) or ``sequence``
    (every label word of the sequence, as free generation would allow: a model that has
    drifted towards a later task's answers is scored wrong). Adapters that score options
    accept it (encoder); others raise at start."""
    split: str = "test"
    """Split evaluated after each task: ``test`` or ``dev`` (every task needs examples in it;
    checked before the model loads)."""
    batch_size: int = 16
    """Examples per evaluation batch."""
    max_new_tokens: int = 6
    """Generation budget (label words are 1-3 tokens)."""
    zero_shot: bool = True
    """Evaluate the initial model too (needed for forward transfer)."""
    lm_loss: bool = True
    """Held-out LM loss before and after the sequence (general-ability retention)."""


@dataclasses.dataclass(frozen=True)
class MeshConfig:
    data: int = 1
    """Data-parallel mesh axis size (-1 = all devices left)."""
    fsdp: int = 1
    """Parameter-sharding mesh axis size (-1 = all devices left)."""
    distributed: bool = False
    """Call ``jax.distributed.initialize()`` first (multi-host; see docs/runner.md)."""


@dataclasses.dataclass(frozen=True)
class CheckpointConfig:
    every_steps: int = 0
    """Also checkpoint every N optimizer steps inside a task (0 = task ends only)."""
    export_hf: bool = True
    """Export the final model in the HF safetensors layout."""
    keep_steps: int = 1
    """Mid-task checkpoints kept (they are deleted once their task ends)."""
    keep_tasks: int = 1
    """Task-end checkpoints kept, newest first (0 = all; one SmolLM2 checkpoint is ~0.5 GB)."""


@dataclasses.dataclass(frozen=True)
class RunConfig:
    out_dir: str = "runs"
    """Parent folder of run directories."""
    name: str = ""
    """Run directory name; empty = ``<method>-<suite><order>-<timestamp>``."""
    progress: bool = True
    """Progress bars on stderr."""
    stop_after_task: int = -1
    """Stop after this 0-based task (tests of resume); -1 = run the sequence."""
    seeds: tuple[int, ...] = ()
    """Run the config once per seed (e.g. ``[0, 1, 2]``), each in ``<run dir>/seed<k>`` with
    ``train.seed = data.seed = k`` (data sampling and order, batching, adapter init); empty =
    one run with the seeds as configured. ``asvd-jax report`` groups the seeds back."""
    blas_threads: int = 1
    """Threads of the host LAPACK (OpenBLAS) behind the CPU SVDs, set before its first use.
    1: a loaded 2-core machine ran SmolLM2's SVDs 3-10x faster than with the default
    (threads thrash); 0 keeps the library default (many-core hosts)."""
    trackers: tuple[str, ...] = ("jsonl", "tensorboard")
    """Where losses, accuracies, ranks and capacity stream while the run runs: "jsonl"
    (events.jsonl), "tensorboard" (tensorboard/ event files), "wandb" (offline; needs wandb)."""


@dataclasses.dataclass(frozen=True)
class ExperimentConfig:
    model: ModelConfig = ModelConfig()
    data: DataConfig = DataConfig()
    method: MethodConfig = MethodConfig()
    train: TrainConfig = TrainConfig()
    eval: EvalConfig = EvalConfig()
    mesh: MeshConfig = MeshConfig()
    checkpoint: CheckpointConfig = CheckpointConfig()
    run: RunConfig = RunConfig()


# ------------------------------------------------------------------ building from mappings


def _suggest(key: str, options: Sequence[str]) -> str:
    close = difflib.get_close_matches(key, list(options), n=1)
    return f" (did you mean {close[0]!r}?)" if close else f" (valid: {', '.join(options)})"


# Fields whose value must be one of a fixed set (checked after every change).
CHOICES: dict[str, tuple[str, ...]] = {
    "model.family": ("llama", "bert", "t5", "gemma3"),
    "model.source": ("smollm2", "minilm", "gemma3_270m", "hf", "gguf", "hub", "random"),
    "model.dtype": ("float32", "bfloat16"),
    "data.suite": ("offline", "offline_disjoint", "standard4", "long", "olora", "trace", "custom", "fixture"),
    "method.name": ("asvd", "seqft", "mtl", "ewc", "lora", "olora"),
    "method.projection": ("strict", "paper", "input", "output", "none"),
    "method.leakage_from": ("updates", "weights"),
    "method.projection_precision": ("highest", "high", "default"),
    "train.schedule": ("constant", "linear", "cosine"),
    "eval.protocol": ("auto", "generate", "options", "both"),
    "eval.split": ("test", "dev"),
    "eval.option_pool": ("task", "sequence"),
    "train.option_pool": ("task", "seen"),
}


def validate(config: ExperimentConfig) -> ExperimentConfig:
    """Check enumerated fields and ranges; ConfigError naming the key."""
    from asvd_jax.models import family_names, find_family

    family = find_family(config.model.family)
    custom_family = family is not None and family.sources is None
    for key, allowed in CHOICES.items():
        section, name = key.split(".")
        value = getattr(getattr(config, section), name)
        if key == "model.family":
            allowed = family_names()  # built-in plus registered (asvd_jax.cl.register_family)
        elif key == "model.source":
            if custom_family:
                continue  # a registered family's own loader reads the model section
            if family is not None:  # each family names the sources its loader reads
                allowed = family.sources
        if value not in allowed:
            raise ConfigError(f"{key}: {value!r} is not one of {allowed}" + _suggest(str(value), allowed))
    positive = ("train.batch_size", "train.grad_accum", "train.epochs", "eval.batch_size",
                "data.max_len", "eval.max_new_tokens", "method.lora_rank")
    for key in positive:
        section, name = key.split(".")
        if getattr(getattr(config, section), name) < 1:
            raise ConfigError(f"{key}: must be >= 1")
    d = config.data
    if d.path and d.suite != "custom":
        raise ConfigError(f"data.path: {d.path!r} is set but data.suite is {d.suite!r}, which does not "
                          f"read it; set data.suite: custom to run the sequence in data.path")
    for key in ("max_train_per_class", "max_eval_per_class", "max_train_per_task", "max_eval_per_task"):
        if getattr(d, key) < 0:
            raise ConfigError(f"data.{key}: must be >= 0 (0 = no cap)")
    m = config.method
    for key, value in (("ewc_lambda", m.ewc_lambda), ("add_ewc_lambda", m.add_ewc_lambda)):
        if value is not None and not value >= 0:
            raise ConfigError(f"method.{key}: must be >= 0, got {value}")
    layout = config.method.fixed_layout
    if layout and not (len(layout) == 2 and 0.0 <= layout[0] <= layout[1] <= 1.0):
        raise ConfigError(f"method.fixed_layout: expected [] or [lo, hi] with 0 <= lo <= hi <= 1, "
                          f"got {list(layout)}")
    if not isinstance(config.method.rank_policy, _POLICY_TYPES):
        raise ConfigError(f"method.rank_policy: expected one of the asvd_jax.ranks policies "
                          f"({', '.join(POLICIES)}), got {config.method.rank_policy!r}")
    t = config.train
    if t.patience < 0 or t.eval_every < 0 or t.min_delta < 0 or t.stop_holdout < 0:
        raise ConfigError(f"train.patience / eval_every / min_delta / stop_holdout: must be >= 0, "
                          f"got {t.patience}, {t.eval_every}, {t.min_delta}, {t.stop_holdout}")
    if not config.train.lr > 0:
        raise ConfigError(f"train.lr: must be > 0, got {config.train.lr}")
    from asvd_jax.cl._trackers import TRACKERS

    for name in config.run.trackers:
        if name not in TRACKERS:
            raise ConfigError(f"run.trackers: {name!r} is not one of {TRACKERS}" + _suggest(name, TRACKERS))
    return config


def policy_dict(policy: Any) -> dict:
    """``{name: {field: value}}`` of a rank policy, as a config writes it (unset fields, such
    as the progressive policy's per-task ones, left out)."""
    return {policy.name: {f.name: getattr(policy, f.name) for f in dataclasses.fields(policy)
                          if f.init and getattr(policy, f.name) is not None}}


def to_dict(config: Any) -> dict:
    """Plain nested dict (tuples as lists) for YAML/JSON output."""
    out = {}
    for f in dataclasses.fields(config):
        v = getattr(config, f.name)
        if isinstance(v, _POLICY_TYPES):
            out[f.name] = policy_dict(v)
        elif dataclasses.is_dataclass(v):
            out[f.name] = to_dict(v)
        elif isinstance(v, tuple):
            out[f.name] = list(v)
        else:
            out[f.name] = v
    return out


def to_yaml(config: ExperimentConfig) -> str:
    import yaml

    return yaml.safe_dump(to_dict(config), sort_keys=False)


def field_docs(cls: type) -> dict[str, str]:
    """``{field: docstring}`` read from the source (the string under each field)."""
    import ast
    import inspect
    import textwrap

    tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    body = tree.body[0].body
    docs = {}
    for a, b in zip(body, body[1:]):
        if isinstance(a, ast.AnnAssign) and isinstance(b, ast.Expr) and isinstance(b.value, ast.Constant):
            docs[a.target.id] = " ".join(str(b.value.value).split())
    return docs

