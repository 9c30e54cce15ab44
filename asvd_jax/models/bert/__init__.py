"""The BERT family (MiniLM and other BERT encoders): model (``_model``), weight I/O and
sentence embeddings (``_io``), the trainer's adapter (``_adapter``) and its ``Family`` record
(``_family``), registered on import."""

from asvd_jax.models._family import register_family
from asvd_jax.models.bert._family import FAMILY
from asvd_jax.models.bert._io import (
    encode_texts,
    export_hf,
    hf_name,
    hf_tensors,
    init_random,
    load_hf,
    load_minilm,
    load_model,
    load_tokenizer,
    minilm_folder,
    score_options,
)
from asvd_jax.models.bert._model import (
    DEFAULT_TARGETS,
    MINILM_PACKAGE,
    MINILM_PIP,
    Bert,
    BertConfig,
    embed,
    forward,
    mean_pool,
)

register_family(FAMILY)

__all__ = [
    "DEFAULT_TARGETS", "FAMILY", "MINILM_PACKAGE", "MINILM_PIP", "Bert", "BertConfig", "embed",
    "encode_texts", "export_hf", "forward", "hf_name", "hf_tensors", "init_random", "load_hf",
    "load_minilm", "load_model", "load_tokenizer", "mean_pool", "minilm_folder", "score_options",
]
