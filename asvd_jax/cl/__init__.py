"""Continual-learning harness: methods, runner, metrics, configs, checkpoints.

Heavy frameworks (flax, orbax, matplotlib) are imported by the modules that need them.
"""

from asvd_jax.cl._method import Method, TaskContext

__all__ = ["Method", "TaskContext"]
