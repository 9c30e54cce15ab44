"""Continual-learning task sequences: the offline suites, benchmark layouts, custom YAML
sequences, prompts, tokenisation and batching. Everything returns numpy arrays or plain
Python objects; ``datasets`` (benchmark layouts) and ``yaml`` (custom sequences) are imported
only by the loaders that need them.
"""

from asvd_jax.data._batching import batches, decoder_batch, encoder_batch, seq2seq_batch, token_count
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
from asvd_jax.data._padding import (
    PAD_MULTIPLE,
    bucket_length,
    compact_width,
    fix_width,
    length_sorted_chunks,
    pad_batch,
    pad_token_rows,
    round_up,
    same_width,
    widen,
)
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
    no_progress,
    suite_fingerprint,
)
from asvd_jax.data._disjoint import disjoint_sequence
from asvd_jax.data._paper_suites import (
    PAPER_ORDERS,
    PAPER_SUITES,
    PAPER_TASKS,
    PaperSuiteConfig,
    build_paper_suite,
    paper_sequence,
)
from asvd_jax.data._text_metrics import generation_metric, normalize_answer, score_generated

__all__ = [
    "ANSWER_CUE", "OFFLINE_ORDERS", "OFFLINE_TASKS", "OLORA_ORDERS", "PAD_MULTIPLE", "PAPER_ORDERS",
    "PAPER_SUITES", "PAPER_TASKS", "SPLITS", "TRACE_ORDER", "CustomTaskSpec", "DataCacheError",
    "DataFileNotFound", "Example", "PaperSuiteConfig", "Prompt", "SuiteConfig", "Task", "TaskSequence",
    "batches", "bucket_length", "build_offline_suite", "build_paper_suite",
    "compact_width", "decoder_batch", "default_data_dir", "describe", "disjoint_sequence", "no_progress", "encoder_batch", "example_prompt",
    "fix_width", "format_prompt", "generation_metric", "length_sorted_chunks", "load_custom_sequence",
    "load_olora_sequence", "load_olora_task", "load_trace_sequence", "load_trace_task",
    "normalize_answer", "offline_sequence", "pad_batch", "paper_sequence", "pad_token_rows", "round_up", "same_width",
    "sample_offline_suite", "score_generated", "seq2seq_batch", "suite_fingerprint", "token_count", "widen",
]
