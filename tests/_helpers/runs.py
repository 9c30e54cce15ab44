"""The runner on its smallest setting: a tiny random Llama on the fixture tasks, quiet.

Each runner test adds what it is about (max_len, batch sizes, a method option) to these.
"""

TINY_RUN = ["model.source=random", "model.random_width=32", "data.suite=fixture",
            "train.lr=3e-3", "method.stats_examples=16", "data.max_eval_per_task=8",
            "run.progress=false"]
