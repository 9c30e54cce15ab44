"""The embedded ``asvd-jax demo`` configuration (overrides on the defaults).

The forgetting regime of ``experiments/forgetting_minilm.yaml`` at one seed (0): MiniLM on the
disjoint-label offline sequence, each task trained to its early-stopping point against the
answers of every task so far, answers scored over every label word of the sequence, and the
preset's method: this method with EWC's penalty (``method.add_ewc``, lambda 1e5, its dev-best).
There sequential fine-tuning forgets (test BWT -64.1 at seed 0) and the method ends about 14
points of average accuracy above it at seed 0 (35.4 against 21.6 in the preset's test runs), so
the demo shows what the library is for, with a paired bootstrap interval over the test
examples. The preset's three seeds are the evidence
(README); the demo is the one-seed version that fits in 15 minutes on a 2-core CPU.
``tests/test_demo.py`` checks that the two stay the same configuration.
"""

DEMO_OVERRIDES = {
    "model": {"family": "bert", "source": "minilm"},
    "data": {"suite": "offline_disjoint"},
    # This method with EWC's penalty at its dev-best 1e5; ewc_lambda is the EWC baseline's.
    "method": {"stats_examples": 64, "add_ewc": True, "add_ewc_lambda": 1e5, "ewc_lambda": 1e6},
    "train": {"lr": 5e-5, "epochs": 10, "max_steps": 150, "patience": 3, "eval_every": 5,
              "stop_holdout": 30, "option_pool": "seen"},
    "eval": {"batch_size": 32, "protocol": "options", "option_pool": "sequence"},
    "checkpoint": {"export_hf": False},
}
