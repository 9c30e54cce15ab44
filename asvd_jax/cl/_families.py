"""Model families the runner knows beyond the built-in ones: a documented registration.

The runner's built-in families (``llama``, ``bert``, ``t5``) are wired in ``_models`` and
``make_adapter``. Research code adds its own without editing them::

    from asvd_jax.cl import Family, register_family

    register_family(Family(
        name="bagmlp",
        adapter=lambda config, model, tokenizer: MyAdapter(model, tokenizer, config),
        default_targets=(r"mlp/.*/kernel",),
        load=lambda model_config: (MyModel(...), my_tokenizer),   # for config-driven runs
    ))
    run(load_config(None, ["model.family=bagmlp", ...]))

The adapter implements ``asvd_jax.cl._adapter.ModelAdapter`` (batches, loss, activation
capture, evaluation, LM loss or None, export); ``experiments/custom_model.py`` is a complete,
runnable example. A model object can also be handed to ``run(config, model=..., tokenizer=...)``
directly; its family (``config.model.family``) then decides only the adapter and targets.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

BUILTIN = ("llama", "bert", "t5")


@dataclasses.dataclass(frozen=True)
class Family:
    """How the runner builds, adapts and targets one model family."""

    name: str
    """The ``model.family`` value that selects it."""
    adapter: Callable[[Any, Any, Any], Any]
    """``adapter(experiment_config, model, tokenizer) -> ModelAdapter``."""
    default_targets: tuple[str, ...]
    """Target regexes over parameter paths when ``method.targets_include`` is empty."""
    load: Callable[[Any], tuple[Any, Any]] | None = None
    """``load(model_config) -> (model, tokenizer)`` for runs without a model object; None:
    the model must be passed to ``run(config, model=..., tokenizer=...)``."""


_REGISTRY: dict[str, Family] = {}


def register_family(family: Family, *, replace: bool = False) -> Family:
    """Make ``family`` selectable as ``model.family``; returns it.

    ValueError for a built-in name, or a registered one unless ``replace``.
    """
    if not isinstance(family, Family):
        raise TypeError(f"register_family: expected a Family, got {type(family).__name__}")
    if family.name in BUILTIN:
        raise ValueError(f"register_family: {family.name!r} is a built-in family")
    if family.name in _REGISTRY and not replace:
        raise ValueError(f"register_family: {family.name!r} is already registered (pass replace=True)")
    _REGISTRY[family.name] = family
    return family


def registered_family(name: str) -> Family | None:
    """The registered (non-built-in) family called ``name``, or None."""
    return _REGISTRY.get(name)


def family_names() -> tuple[str, ...]:
    return BUILTIN + tuple(_REGISTRY)


def build_adapter(config: Any, model: Any = None, tokenizer: Any = None) -> tuple[Any, tuple[str, ...]]:
    """(adapter, default target regexes) for ``config.model.family``.

    The model is loaded from ``config.model`` unless a ``model`` object (with its
    ``tokenizer``) is given; built-in families then use their own adapter and targets.
    """
    family = config.model.family
    custom = registered_family(family)
    if model is not None and tokenizer is None:
        raise ValueError("run(model=...): pass the model's tokenizer too (tokenizer=...)")
    if model is None:
        if custom is None:
            from asvd_jax.cl._models import load_model

            model, tokenizer, targets = load_model(config.model)
        else:
            if custom.load is None:
                raise ValueError(f"model.family: {family!r} has no loader; pass the model to "
                                 f"run(config, model=..., tokenizer=...)")
            model, tokenizer = custom.load(config.model)
            targets = custom.default_targets
    else:
        targets = custom.default_targets if custom is not None else _builtin_targets(family)
    if custom is not None:
        return custom.adapter(config, model, tokenizer), tuple(targets)
    from asvd_jax.cl._runner import make_adapter

    return make_adapter(config, model, tokenizer), tuple(targets)


def _builtin_targets(family: str) -> tuple[str, ...]:
    import importlib

    return tuple(importlib.import_module(f"asvd_jax.models.{family}").DEFAULT_TARGETS)
