"""The Gemma 3 family (text decoder): model (``_model``), weight I/O and the packaged 270M base
model (``_io``), and its ``Family`` record (``_family``), registered on import. Training,
generation and scoring are the decoder code the llama family uses (``asvd_jax.models.llama``)."""

from asvd_jax.models._family import register_family
from asvd_jax.models.gemma3._family import FAMILY, Gemma3Adapter
from asvd_jax.models.gemma3._io import (build_tokenizer, export_hf, gemma3_270m_gguf, load_gemma3_270m, load_gguf,
                                        load_hf, model_dir, read_gguf, sentencepiece_merges)
from asvd_jax.models.gemma3._model import (DEFAULT_TARGETS, LAYER_TYPES, Block, Gemma3, Gemma3Config,
                                           default_layer_types, init_gemma3)

register_family(FAMILY)

__all__ = [
    "Block", "DEFAULT_TARGETS", "FAMILY", "Gemma3", "Gemma3Adapter", "Gemma3Config", "LAYER_TYPES",
    "build_tokenizer", "default_layer_types", "export_hf", "gemma3_270m_gguf", "init_gemma3",
    "load_gemma3_270m", "load_gguf", "load_hf", "model_dir", "read_gguf", "sentencepiece_merges",
]
