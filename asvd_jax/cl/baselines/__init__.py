"""Baselines for the continual-learning runner: EWC, sequential LoRA, O-LoRA.

Each is a :class:`asvd_jax.cl.Method` built from a frozen config::

    from asvd_jax.cl.baselines import ewc, EWCConfig, lora, LoRAConfig, olora, OLoRAConfig
    method = olora(OLoRAConfig(lambda_1=0.5))

EWC and O-LoRA carry arrays between tasks (Fisher and anchor; earlier A factors):
``method.carry_state()`` / ``method.restore_carry_state(tree)`` let the runner checkpoint them.
"""

from asvd_jax.cl.baselines._ewc import EWC, EWCConfig, diagonal_fisher, ewc, ewc_penalty, fisher_step
from asvd_jax.cl.baselines._lora import AdapterTarget, LoRAConfig, SequentialLoRA, lora
from asvd_jax.cl.baselines._olora import OLoRA, OLoRAConfig, olora, orthogonality_loss

__all__ = [
    "AdapterTarget",
    "EWC",
    "EWCConfig",
    "LoRAConfig",
    "OLoRA",
    "OLoRAConfig",
    "SequentialLoRA",
    "diagonal_fisher",
    "ewc",
    "ewc_penalty",
    "fisher_step",
    "lora",
    "olora",
    "orthogonality_loss",
]
