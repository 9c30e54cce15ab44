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
    apply_overrides,
    load_config,
    to_yaml,
)
from asvd_jax.cl._demo import DEMO_OVERRIDES
from asvd_jax.cl._families import Family, register_family
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
from asvd_jax.cl._runner import RunError, Runner, run

__all__ = [
    "CheckpointConfig", "ConfigError", "DEMO_OVERRIDES", "DataConfig", "EvalConfig",
    "ExperimentConfig", "Family", "MeshConfig", "Method", "MethodConfig", "ModelConfig", "RunConfig",
    "RunError", "Runner", "TaskContext", "TrainConfig", "apply_overrides", "average_accuracy",
    "backward_transfer", "forgetting", "forward_transfer", "general_ability_retention",
    "load_config", "paired_bootstrap", "plasticity", "register_family", "run", "summarize",
    "to_yaml",
]
