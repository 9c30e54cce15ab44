"""Continual-learning task sequences: the offline suite, benchmark layouts, custom YAML
sequences, prompts, tokenisation and batching. Everything returns numpy arrays or plain
Python objects; ``datasets`` (benchmark layouts) and ``yaml`` (custom sequences) are imported
only by the loaders that need them.
"""

from asvd_jax.data._batching import batches, decoder_batch, encoder_batch, round_up, seq2seq_batch
from asvd_jax.data._benchmarks import (
    OLORA_ORDERS,
    TRACE_ORDER,
    load_olora_sequence,
    load_olora_task,
    load_trace_sequence,
    load_trace_task,
)
from asvd_jax.data._cache import DataCacheError, default_data_dir
from asvd_jax.data._custom import CustomTaskSpec, load_custom_sequence
from asvd_jax.data._prompts import ANSWER_CUE, Prompt, example_prompt, format_prompt
from asvd_jax.data._suite import (
    OFFLINE_ORDERS,
    OFFLINE_TASKS,
    SuiteConfig,
    build_offline_suite,
    offline_sequence,
    sample_offline_suite,
)
from asvd_jax.data._tasks import (
    SPLITS,
    DataFileNotFound,
    Example,
    Task,
    TaskSequence,
    describe,
    suite_fingerprint,
)

__all__ = [
    "ANSWER_CUE", "OFFLINE_ORDERS", "OFFLINE_TASKS", "OLORA_ORDERS", "SPLITS", "TRACE_ORDER",
    "CustomTaskSpec", "DataCacheError", "DataFileNotFound", "Example", "Prompt", "SuiteConfig", "Task",
    "TaskSequence", "batches", "build_offline_suite", "decoder_batch", "default_data_dir", "describe",
    "encoder_batch", "example_prompt", "format_prompt", "load_custom_sequence", "load_olora_sequence",
    "load_olora_task", "load_trace_sequence", "load_trace_task", "offline_sequence", "round_up",
    "sample_offline_suite", "seq2seq_batch", "suite_fingerprint",
]
