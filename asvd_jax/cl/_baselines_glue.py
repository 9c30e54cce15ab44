"""Build the EWC / LoRA / O-LoRA baselines from the runner's ``MethodConfig``.

EWC trains every parameter like SeqFT, so it uses the runner's inner optimizer (same
learning rate, schedule and clipping as full fine-tuning); the adapter methods use their own
AdamW at ``method.lora_lr``.

None needs an optimizer built per task: the runner asks ``optimizer`` once per run and
re-initialises its state at each boundary. What changes per task reaches the jitted step
through ``frozen`` (EWC's Fisher and anchors, O-LoRA's old factors), so the step retraces
when those trees first appear or grow, never runs on stale values.
"""

from __future__ import annotations

from asvd_jax.cl._config import MethodConfig


def build(config: MethodConfig, inner):
    from asvd_jax.cl import baselines as b

    if config.name == "ewc":
        # The full fine-tuning chain (same lr, schedule, clipping as SeqFT), plus the penalty.
        return b.ewc(b.EWCConfig(ewc_lambda=config.ewc_lambda), optimizer=inner)
    lora_cfg = b.LoRAConfig(rank=config.lora_rank, alpha=config.lora_alpha,
                            learning_rate=config.lora_lr)
    if config.name == "lora":
        return b.lora(lora_cfg)
    if config.name == "olora":
        return b.olora(b.OLoRAConfig(lora=lora_cfg, lambda_1=config.olora_lambda1,
                                     lambda_2=config.olora_lambda2))
    raise ValueError(f"method.name: unknown method {config.name!r}")
