"""The embedded ``asvd-jax demo`` configuration (overrides on the defaults).

Sized so that this method and sequential fine-tuning, side by side on SmolLM2-135M and the
offline suite, finish in under 15 minutes on a 2-core CPU (docs/runner.md has the timing).
"""

DEMO_OVERRIDES = {
    "model": {"family": "llama", "source": "smollm2"},
    "data": {"suite": "offline", "order": 1, "max_len": 96, "max_train_per_task": 48,
             "max_eval_per_task": 16},
    "method": {"stats_examples": 32},
    "train": {"lr": 3e-5, "batch_size": 8, "epochs": 1},
    "eval": {"batch_size": 16, "max_new_tokens": 4},
    "checkpoint": {"export_hf": False},
}
