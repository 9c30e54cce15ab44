"""Your own model in the runner: python experiments/custom_model.py [RUN_DIR]

A model family the library does not ship (a bag-of-bytes MLP that scores each answer option by
similarity, like the MiniLM encoder) is registered with ``register_family`` and run through
``asvd_jax.cl.run`` on the built-in two-task fixture: rank statistics, bases, the projection,
evaluation, metrics, checkpoints and ``asvd-jax report`` all work without editing the
library. What a family provides is an adapter (batches, loss, activation capture, evaluation)
and its target regexes; see ``asvd_jax.models.ModelAdapter`` for the contract.
Run by ``tests/test_research_api.py``. A toy model: it learns the first (topic) task; its
accuracies say nothing about the method.
"""

from __future__ import annotations

import sys
import tempfile

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from asvd_jax.cl import Family, load_config, register_family, run
from asvd_jax.data import pad_batch
from asvd_jax.models import split_model
from asvd_jax.cl._fixture import write_fixture

MAX_BYTES = 64  # texts are cut to this many bytes
MAX_OPTIONS = 8  # option slots per batch (fixed shapes: one compiled step for every task)


class BagMLP(nnx.Module):
    """Mean byte embedding -> MLP; a text and each option are encoded the same way."""

    def __init__(self, width: int = 32, *, rngs: nnx.Rngs):
        self.embed = nnx.Embed(256, width, rngs=rngs)
        self.up = nnx.Linear(width, 2 * width, rngs=rngs)
        self.down = nnx.Linear(2 * width, width, rngs=rngs)

    def encode(self, ids, mask):
        """(b, L) byte ids and mask -> ((b, width) codes, {kernel path: its input})."""
        m = mask[..., None].astype(jnp.float32)
        x = (self.embed(ids) * m).sum(-2) / jnp.maximum(m.sum(-2), 1.0)
        h = jax.nn.gelu(self.up(x))
        return x + self.down(h), {"up/kernel": x, "down/kernel": h}


def _bytes(texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    ids = np.zeros((len(texts), MAX_BYTES), np.int32)
    mask = np.zeros_like(ids)
    for i, t in enumerate(texts):
        b = list(t.encode("utf-8")[:MAX_BYTES])
        ids[i, :len(b)], mask[i, :len(b)] = b, 1
    return ids, mask


class BagMLPAdapter:
    """The runner's glue for BagMLP: option scoring by dot product, cross-entropy loss."""

    family = "bagmlp"

    def __init__(self, config, model, tokenizer):
        self.graphdef, self.params, self.rest = split_model(model)
        self.tokenizer = tokenizer  # unused: the model reads raw bytes
        self.batch_size = config.train.batch_size
        self._jit_scores = jax.jit(self._scores)

    def _model(self, params):
        return nnx.merge(self.graphdef, params, self.rest)

    def _options(self, tasks) -> dict[str, np.ndarray]:
        opts = [list(t.options) + [""] * (MAX_OPTIONS - len(t.options)) for t in tasks]
        ids, mask = _bytes([o for row in opts for o in row])
        valid = np.array([[j < len(t.options) for j in range(MAX_OPTIONS)] for t in tasks])
        return {"opt_ids": ids.reshape(len(tasks), MAX_OPTIONS, -1),
                "opt_mask": mask.reshape(len(tasks), MAX_OPTIONS, -1), "opt_valid": valid}

    def train_batch(self, items):
        ids, mask = _bytes([f"{task.instruction} {ex.text}" for task, ex in items])
        batch = {"ids": ids, "mask": mask, "row_valid": np.ones(len(items), np.int32),
                 "label": np.array([task.options.index(ex.label) for task, ex in items], np.int32),
                 **self._options([task for task, _ in items])}
        return pad_batch(batch, self.batch_size)

    def _scores(self, params, batch):
        model = self._model(params)
        code, acts = model.encode(batch["ids"], batch["mask"])
        b, o, length = batch["opt_ids"].shape
        opt, _ = model.encode(batch["opt_ids"].reshape(b * o, length), batch["opt_mask"].reshape(b * o, length))
        scores = jnp.einsum("bd,bod->bo", code, opt.reshape(b, o, -1))
        return jnp.where(batch["opt_valid"], scores, -1e9), acts

    def loss(self, params, batch):
        scores, _ = self._scores(params, batch)
        logp = jax.nn.log_softmax(scores, axis=-1)
        nll = -jnp.take_along_axis(logp, batch["label"][:, None], axis=-1)[:, 0]
        valid = batch["row_valid"].astype(jnp.float32)
        return (nll * valid).sum() / jnp.maximum(valid.sum(), 1.0)

    def capture_fn(self, params, batch):
        _, acts = self._model(params).encode(batch["ids"], batch["mask"])
        # Statistics expect (batch, tokens, in): one "token" per example, padding rows masked.
        return {k: v[:, None, :] for k, v in acts.items()}, batch["row_valid"][:, None]

    def evaluate(self, params, task, examples):
        correct = 0
        for s in range(0, len(examples), self.batch_size):
            chunk = examples[s:s + self.batch_size]
            batch = self.train_batch([(task, ex) for ex in chunk])
            scores, _ = self._jit_scores(params, batch)
            pred = np.asarray(scores)[: len(chunk)].argmax(axis=1)
            correct += int(sum(task.options[p] == ex.label for p, ex in zip(pred, chunk)))
        acc = correct / len(examples)
        return {"n": len(examples), "accuracy": acc, "option_accuracy": acc}

    def lm_loss(self, params, texts):
        return None  # no language-model head: general-ability loss is skipped

    def export(self, params, folder):
        raise NotImplementedError("BagMLP has no export format; set checkpoint.export_hf=false")


FAMILY = Family(
    name="bagmlp",
    adapter=BagMLPAdapter,
    default_targets=(r"^(up|down)/kernel$",),
    load=lambda model_config: (BagMLP(model_config.random_width, rngs=nnx.Rngs(0)), None),
    protocols=("options",),
    protocol_label="options (dot product of byte-bag codes)",
)


def main(run_dir: str | None = None) -> dict:
    register_family(FAMILY, replace=True)
    run_dir = run_dir or tempfile.mkdtemp(prefix="custom_model_")
    fixture = write_fixture(tempfile.mkdtemp(prefix="fixture_"), n_train=48, n_test=16)
    config = load_config(None, [
        "model.family=bagmlp", "model.source=random", "model.random_width=32", "data.suite=custom", f"data.path={fixture}",
        "method.name=asvd", "method.stats_examples=32", "train.lr=3e-2", "train.batch_size=8",
        "train.epochs=8", "eval.lm_loss=false", "checkpoint.export_hf=false", "run.progress=false",
    ])
    metrics = run(config, run_dir=run_dir)
    print(f"run directory {run_dir}; accuracy matrix {metrics['accuracy_matrix']}; "
          f"leakage after task 2: {metrics['rows'][1]['record']['leakage']['max']:.1e}")
    return metrics


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else None)
