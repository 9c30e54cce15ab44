"""Flax NNX models that load real pretrained checkpoints (requires the `models` extra).

One package per model family (``llama``, ``t5``, ``bert``), each registering its ``Family``
record on import; ``Family`` and the registry are importable without flax.
"""

from asvd_jax.models._capture import assign_capture_names, capture, is_capturing, record
from asvd_jax.models._family import (
    PROTOCOLS,
    Family,
    ModelAdapter,
    ModelSourceError,
    family_names,
    find_family,
    get_family,
    load_model,
    register_family,
    split_model,
)
from asvd_jax.models._tokenizer import byte_tokenizer

__all__ = [
    "PROTOCOLS", "Family", "ModelAdapter", "ModelSourceError", "assign_capture_names", "byte_tokenizer",
    "capture", "family_names", "find_family", "get_family", "is_capturing", "load_model", "record",
    "register_family", "split_model",
]
