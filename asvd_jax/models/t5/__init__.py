"""The T5 family (encoder-decoder): model (``_model``), weight I/O (``_io``), generation and
option scoring (``_decoding``), the trainer's adapter (``_adapter``) and its ``Family`` record
(``_family``), registered on import."""

from asvd_jax.models._family import register_family
from asvd_jax.models.t5._decoding import forward, generate, score_options
from asvd_jax.models.t5._family import FAMILY
from asvd_jax.models.t5._io import (
    export_hf,
    hf_name,
    hf_tensors,
    init_random,
    load_hf,
    load_hub,
    load_model,
    load_tokenizer,
)
from asvd_jax.models.t5._model import (
    DEFAULT_TARGETS,
    T5,
    DecoderLayer,
    EncoderLayer,
    T5Config,
    relative_bucket_table,
)

register_family(FAMILY)

__all__ = [
    "DEFAULT_TARGETS", "FAMILY", "T5", "T5Config", "DecoderLayer", "EncoderLayer", "export_hf", "forward",
    "generate", "hf_name", "hf_tensors", "init_random", "load_hf", "load_hub", "load_model",
    "load_tokenizer", "relative_bucket_table", "score_options",
]
