"""The trainer's one question to a model family: its adapter and default targets.

Families are ``asvd_jax.models.Family`` records (the shipped ones and any registered with
``register_family``); the trainer looks the record up by ``config.model.family`` and never
names a family itself.
"""

from __future__ import annotations

from typing import Any, Sequence

from asvd_jax.models import Family, get_family, load_model


def build_adapter(config: Any, model: Any = None, tokenizer: Any = None) -> tuple[Family, Any, tuple[str, ...]]:
    """(family record, adapter, default target regexes) for ``config.model.family``.

    The model is loaded from ``config.model`` by the family's loader unless a ``model`` object
    (with its ``tokenizer``) is given.
    """
    family = get_family(config.model.family)
    if model is not None and tokenizer is None:
        raise ValueError("run(model=...): pass the model's tokenizer too (tokenizer=...)")
    if model is None:
        model, tokenizer, targets = load_model(config.model)
    else:
        targets = tuple(family.default_targets)
    return family, family.adapter(config, model, tokenizer), tuple(targets)


def select_run_targets(method: Any, params: Any, default_targets: Sequence[str]) -> Any:
    """The targets of a run: ``method.targets_include`` (else the family's defaults) less
    ``method.targets_exclude`` (else ``asvd_jax.DEFAULT_EXCLUDE``), as ``select_targets``
    returns them. The runner and anything that re-reads a run's checkpoints call this."""
    import asvd_jax as aj

    include = list(method.targets_include) or list(default_targets)
    exclude = list(method.targets_exclude) or aj.DEFAULT_EXCLUDE
    return aj.select_targets(params, include=include, exclude=exclude)

