"""Continual-learning harness: methods, runner, metrics, configs, checkpoints.

Heavy frameworks (flax, orbax, matplotlib) are imported by the modules that need them.
"""

from asvd_jax.cl._config import (
    CheckpointConfig,
    ConfigError,
    DataConfig,
    EvalConfig,
    ExperimentConfig,
    MeshConfig,
    MethodConfig,
    ModelConfig,
    RunConfig,
    TrainConfig,
    to_yaml,
)
from asvd_jax.cl._config_load import apply_overrides, load_config
from asvd_jax.cl._compare import comparison_rows, markdown_table
from asvd_jax.cl._config_doc import documented_yaml
from asvd_jax.cl._demo import DEMO_OVERRIDES
from asvd_jax.cl._method import Method, TaskContext
from asvd_jax.metrics import (
    average_accuracy,
    backward_transfer,
    forgetting,
    forward_transfer,
    general_ability_retention,
    paired_bootstrap,
    plasticity,
    summarize,
)
from asvd_jax.cl._report import load_metrics, summary_markdown, write_report, write_text_atomic
from asvd_jax.cl._report_cli import comparison_output
from asvd_jax.cl._runner import RunError, Runner, run
from asvd_jax.cl._seeds import run_seeds, seed_dir, seeds_parent
from asvd_jax.cl._sequence import load_sequence
from asvd_jax.models import Family, register_family

__all__ = [
    "CheckpointConfig", "ConfigError", "DEMO_OVERRIDES", "DataConfig", "EvalConfig",
    "ExperimentConfig", "Family", "MeshConfig", "Method", "MethodConfig", "ModelConfig", "RunConfig",
    "RunError", "Runner", "TaskContext", "TrainConfig", "apply_overrides", "average_accuracy",
    "backward_transfer", "forgetting", "forward_transfer", "general_ability_retention",
    "load_config", "paired_bootstrap", "plasticity", "register_family", "run", "summarize",
    "to_yaml",
    # What the command line (asvd_jax.cli) uses besides the above.
    "comparison_output", "comparison_rows", "documented_yaml", "load_metrics", "load_sequence",
    "markdown_table", "run_seeds", "seed_dir", "seeds_parent", "summary_markdown", "write_report",
    "write_text_atomic",
]
