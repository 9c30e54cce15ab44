"""Model families: one public ``Family`` record each, and the registry the trainer asks.

A family is everything the trainer needs from a kind of model: how to load it, which weights
to protect by default, the adapter that turns task examples into batches, losses and
evaluations, and the few facts the trainer reports or checks (evaluation protocols, token
budgets). The built-in families (``asvd_jax.models.llama``, ``.bert``, ``.t5``) register
their records with ``register_family`` when their package is imported, exactly as research
code registers its own::

    from asvd_jax.models import Family, register_family   # also asvd_jax.cl.Family

    register_family(Family(
        name="bagmlp",
        adapter=lambda config, model, tokenizer: MyAdapter(model, tokenizer, config),
        default_targets=(r"mlp/.*/kernel",),
        load=lambda model_config: (MyModel(...), my_tokenizer),   # for config-driven runs
    ))
    run(load_config(None, ["model.family=bagmlp", ...]))

``experiments/custom_model.py`` is a complete, runnable example. The trainer (``asvd_jax.cl``)
never names a family: it looks the record up by ``config.model.family`` and asks it.
"""

from __future__ import annotations

import dataclasses
import importlib
import os
from typing import Any, Callable, Protocol, Sequence, runtime_checkable

import numpy as np

PROTOCOLS = ("generate", "options", "similarity")
"""Evaluation protocols a family's adapter can report: greedy generation scored by exact match
(TRACE tasks: their own metric), option scoring by log-likelihood, option scoring by embedding
similarity."""


@runtime_checkable
class ModelAdapter(Protocol):
    """The trainer's view of a model: the split model plus batches, loss, capture, evaluation.

    * ``train_batch(items)`` with ``items = [(task, example), ...]``: numpy batch, rows padded to
      the training batch size (fixed shapes, so the jitted step compiles a bounded number of times).
    * ``loss(params, batch)`` (traced): the mean training loss of the batch.
    * ``capture_fn(params, batch)`` (traced): ``({kernel path: inputs}, token mask)`` for
      ``asvd_jax.ranks.collect_statistics``.
    * ``evaluate(params, task, examples)``: ``{"n", "accuracy", ...}``, ``accuracy`` being the
      family's headline protocol (``option_accuracy``, ``predictions``, ... when it has them).
    * ``lm_loss(params, texts)``: held-out LM loss in nats per token (None without an LM head).
    * ``export(params, folder)``: the model in its published layout.

    Optional: ``capture_groups(paths) -> [(capture_fn, paths), ...]`` when targets see several
    token streams with their own masks (T5: encoder and decoder states); ASVD's statistics
    then run one capture per stream. ``widen_batch(batch, shapes) -> batch``: a training
    batch padded to at least ``shapes`` (``{entry: shape}``) with the same loss; the trainer
    then pads the batches it hands a method (``TaskContext.current_batches``, EWC's Fisher) to
    the task's largest shapes, so a program jitted over them compiles once per task shape.
    """

    family: str
    graphdef: Any
    params: Any
    tokenizer: Any

    def train_batch(self, items: Sequence[tuple[Any, Any]]) -> dict[str, np.ndarray]: ...

    def loss(self, params: Any, batch: dict) -> Any: ...

    def capture_fn(self, params: Any, batch: dict) -> tuple[dict, Any]: ...

    def evaluate(self, params: Any, task: Any, examples: Sequence[Any]) -> dict: ...

    def lm_loss(self, params: Any, texts: Sequence[str]) -> float | None: ...

    def export(self, params: Any, folder: str) -> None: ...


@dataclasses.dataclass(frozen=True)
class Family:
    """How the trainer builds, adapts, targets, evaluates and checks one model family."""

    name: str
    """The ``model.family`` value that selects it."""
    adapter: Callable[[Any, Any, Any], Any]
    """``adapter(experiment_config, model, tokenizer) -> ModelAdapter``."""
    default_targets: tuple[str, ...]
    """Target regexes over parameter paths when ``method.targets_include`` is empty."""
    load: Callable[[Any], tuple[Any, Any]] | None = None
    """``load(model_config) -> (model, tokenizer)`` for runs without a model object; None:
    the model must be passed to ``run(config, model=..., tokenizer=...)``."""
    sources: tuple[str, ...] | None = None
    """``model.source`` values ``load`` accepts (checked with the config); None: the loader
    reads the model section itself."""
    protocols: tuple[str, ...] = ("generate", "options")
    """What ``adapter.evaluate`` reports, from ``PROTOCOLS``; without ``"generate"`` the run is
    labelled option scoring whatever ``eval.protocol`` says."""
    protocol_label: str | None = None
    """The run's evaluation protocol as metrics.json states it; None: derived from
    ``protocols``, ``eval.protocol`` and the tasks' metrics (``describe_protocol``)."""
    compact_batches: bool = False
    """The adapter pads a training batch's token axis (``input_ids``, second axis) only to the
    batch's own longest row when its ``compact`` attribute is true, and at least to its
    ``min_width`` attribute: the trainer then pads a statistics pass to one width and trains a
    short stage at its widest batch's width (``asvd_jax.cl._compact``)."""
    input_length: Callable[[Any, Any, str, str | None], int] | None = None
    """``input_length(tokenizer, task, text, label)``: tokens of one input before truncation
    (label None: an evaluation input). None: no ``data.max_len`` truncation warning."""
    answer_tokens: Callable[[Any, str], int] | None = None
    """``answer_tokens(tokenizer, label)``: tokens to generate for ``label`` before the end of
    sequence. None: the family generates nothing, so no ``eval.max_new_tokens`` warning."""
    pipeline_tag: str = "text-generation"
    """The Hub pipeline of the exported model (its model card's ``pipeline_tag``)."""
    packaged: tuple[tuple[str, str], ...] = ()
    """``(model.source, Hub id)`` of the weights a source ships: the model card's base model."""

    def __post_init__(self):
        unknown = [p for p in self.protocols if p not in PROTOCOLS]
        if unknown:
            raise ValueError(f"Family {self.name!r}: protocols {unknown} are not among {PROTOCOLS}")

    def describe_protocol(self, eval_protocol: str, tasks: Sequence[Any]) -> str:
        """The label metrics.json records for this family under ``eval.protocol``."""
        if self.protocol_label:
            return self.protocol_label
        if "generate" not in self.protocols or eval_protocol not in ("auto", "generate", "both"):
            return "options (restricted scoring)"
        from asvd_jax.data import generation_metric

        metrics = sorted({m for t in tasks if (m := generation_metric(t))})
        if metrics:  # TRACE: each task scored by its benchmark's metric
            return f"generate (greedy; per-task metrics: {', '.join(metrics)}; exact match elsewhere)"
        return "generate (greedy exact match)"


# The package's own families, imported on the first look-up; each registers itself there.
_DISCOVER = ("asvd_jax.models.llama", "asvd_jax.models.bert", "asvd_jax.models.t5", "asvd_jax.models.gemma3")
_REGISTRY: dict[str, Family] = {}
_discovered = False


def _discover() -> None:
    global _discovered
    if not _discovered:
        _discovered = True  # set first: the imported packages call register_family
        for module in _DISCOVER:
            importlib.import_module(module)


def register_family(family: Family, *, replace: bool = False) -> Family:
    """Make ``family`` selectable as ``model.family``; returns it.

    ValueError when the name is taken (a shipped family or a registered one) unless ``replace``.
    """
    if not isinstance(family, Family):
        raise TypeError(f"register_family: expected a Family, got {type(family).__name__}")
    _discover()
    if family.name in _REGISTRY and not replace:
        what = "is a built-in family" if family.name in _builtin_names() else "is already registered"
        raise ValueError(f"register_family: {family.name!r} {what} (pass replace=True)")
    _REGISTRY[family.name] = family
    return family


def _builtin_names() -> tuple[str, ...]:
    return tuple(m.rsplit(".", 1)[1] for m in _DISCOVER)


def find_family(name: str) -> Family | None:
    """The family registered as ``name``, or None."""
    _discover()
    return _REGISTRY.get(name)


def get_family(name: str) -> Family:
    """The family registered as ``name``; ValueError naming the known ones otherwise."""
    family = find_family(name)
    if family is None:
        raise ValueError(f"model.family: {name!r} is not a registered family (known: {family_names()})")
    return family


def family_names() -> tuple[str, ...]:
    """Names of every registered family: the package's own (llama, bert, t5), then the
    others in registration order (a fixed order, whichever package was imported first)."""
    _discover()
    shipped = _builtin_names()
    return tuple(sorted(_REGISTRY, key=lambda n: shipped.index(n) if n in shipped else len(shipped)))


def load_model(model_config: Any) -> tuple[Any, Any, tuple[str, ...]]:
    """(model, tokenizer, default target regexes) for ``model_config`` (``ModelConfig``), by
    its family's loader. ``source="random"`` gives the shipped families' tiny random models."""
    family = get_family(model_config.family)
    if family.load is None:
        raise ValueError(f"model.family: {family.name!r} has no loader; pass the model to "
                         f"run(config, model=..., tokenizer=...)")
    model, tokenizer = family.load(model_config)
    if getattr(model_config, "remat", False):
        # A model opts in by a boolean ``remat`` attribute read when it is traced (Llama's
        # scan of checkpointed blocks); one that has none cannot honour the setting.
        if not isinstance(getattr(model, "remat", None), bool):
            raise ValueError(f"model.remat: family {family.name!r} has no rematerialised "
                             f"forward (its model has no boolean 'remat' attribute); the llama "
                             f"family has one")
        model.remat = True
    return model, tokenizer, tuple(family.default_targets)


# ------------------------------------------------------------------ helpers for families

class ModelSourceError(ValueError):
    """The configured model cannot be loaded (missing file, unknown source for a family)."""


def check_source(family: Family, model_config: Any) -> None:
    """ModelSourceError when ``model_config.source`` is not one of ``family.sources``."""
    if family.sources is not None and model_config.source not in family.sources:
        raise ModelSourceError(
            f"model.source: {model_config.source!r} is not available for family {family.name!r} "
            f"(choose from {family.sources})"
        )


def check_path(model_config: Any, kind: str) -> str:
    """``model_config.path``, checked to exist (hub ids are names, not files)."""
    if not model_config.path:
        raise ModelSourceError(f"model.path: source {model_config.source!r} needs a {kind} path")
    if model_config.source != "hub" and not os.path.exists(model_config.path):
        raise ModelSourceError(f"model.path: {model_config.path!r} does not exist ({kind} expected)")
    return model_config.path


def dtype_kwargs(model_config: Any) -> dict:
    """``dtype``/``param_dtype`` for a loader: compute in ``model.dtype``, float32 parameters.

    Parameters (and so AdamW moments and bases) stay float32 master weights: adding projected
    updates to bf16 weights would round every step's sum to bf16 and leak into the protected
    subspace (docs/core.md, bf16 training).
    """
    import jax.numpy as jnp

    return dict(dtype=jnp.bfloat16 if model_config.dtype == "bfloat16" else jnp.float32,
                param_dtype=jnp.float32)


def split_model(model: Any) -> tuple[Any, Any, Any]:
    """(graphdef, trainable ``nnx.Param`` state, the rest) of an nnx model."""
    from flax import nnx

    return nnx.split(model, nnx.Param, ...)


class SplitAdapter:
    """Base of the shipped adapters: the split model and the batch sizes of a run."""

    def __init__(self, model, tokenizer, *, max_len: int, batch_size: int, eval_batch_size: int = 16):
        self.graphdef, self.params, self.rest = split_model(model)
        self.tokenizer = tokenizer
        self.max_len = max_len
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size

    def model(self, params):
        from flax import nnx

        return nnx.merge(self.graphdef, params, self.rest)
