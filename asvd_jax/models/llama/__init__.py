"""The Llama family: decoder model (``_model``), weight I/O (``_io``), generation and option
scoring (``_decoding``), the trainer's adapter (``_adapter``, ``_loss``) and its ``Family``
record (``_family``), registered on import."""

from asvd_jax.models._family import register_family
from asvd_jax.models.llama._decoding import forward, generate, score_options, token_logprobs
from asvd_jax.models.llama._family import FAMILY
from asvd_jax.models.llama._io import chat_prompt, export_hf, load_gguf, load_hf, load_hub, load_smollm2
from asvd_jax.models.llama._model import (
    DEFAULT_TARGETS,
    Block,
    Llama,
    LlamaConfig,
    init_llama,
    positions_from_mask,
    rope_inv_freq,
)

register_family(FAMILY)

__all__ = [
    "Block", "DEFAULT_TARGETS", "FAMILY", "LlamaConfig", "Llama", "init_llama", "positions_from_mask",
    "rope_inv_freq", "load_hf", "load_gguf", "load_smollm2", "load_hub", "export_hf",
    "chat_prompt", "forward", "generate", "score_options", "token_logprobs",
]
