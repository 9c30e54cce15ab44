"""Flax NNX models that load real pretrained checkpoints (requires the `models` extra)."""

from asvd_jax.models._capture import assign_capture_names, capture, is_capturing, record

__all__ = ["assign_capture_names", "capture", "is_capturing", "record"]
