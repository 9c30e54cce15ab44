"""The trainer's adapter for BERT-style encoders (``asvd_jax.models.ModelAdapter``).

No per-task head, so nothing task-specific can hide forgetting. An input is
``instruction + "\\n" + text``; each option is embedded by the same model; the score of option
``o`` is ``cos(e(x), e(o))`` (mean-pooled, L2-normalised embeddings). Training minimises the
cross-entropy of ``cos / TEMPERATURE`` over the task's options (a contrastive loss with the
other options as negatives); evaluation picks the most similar option.
"""

from __future__ import annotations

import numpy as np

from asvd_jax.data import PAD_MULTIPLE, fix_width, length_sorted_chunks, normalize_answer, round_up, widen
from asvd_jax.models._family import SplitAdapter

TEMPERATURE = 0.05
"""Softmax temperature of the encoder's option cross-entropy (scale 20, as contrastive
sentence-embedding training commonly uses)."""


class EncoderAdapter(SplitAdapter):
    """BERT-style encoders: option scoring by embedding similarity."""

    family = "bert"
    max_options = 32
    """Option slots per training row at most (``train.option_pool: seen`` over a long
    sequence needs more than one task's 3-8)."""
    trains_on_options = True
    """The loss contrasts each input with its task's options (``train.option_pool`` applies)."""
    option_len = 16
    min_width = None  # compact batches are at least this wide (the runner: a short stage's width)
    compact = True
    """Compact training batches (``asvd_jax.cl._compact``): rows padded to the batch's longest input
    rounded up to 16 tokens, option slots to the batch's largest label set rounded up to 4,
    option tokens to its longest option rounded up to 4. False: max_len / 8 / 16 always."""

    def _texts(self, task, examples):
        return [f"{task.instruction}\n{ex.text}" for ex in examples]

    def _encode(self, texts, width):
        from asvd_jax.data import encoder_batch

        b = encoder_batch(self.tokenizer, texts, width)
        return (fix_width(b["input_ids"], width, self.tokenizer.pad_id),
                fix_width(b["attention_mask"], width, 0))

    def train_batch(self, items):
        if not items:
            raise ValueError("train_batch: no items")
        texts = [f"{t.instruction}\n{e.text}" for t, e in items]
        n_max = max(len(t.options) for t, _ in items)
        # Without compact batches: 8 slots (one task's options), more only when a row needs them.
        o, width = min(max(8, round_up(n_max, 4)), self.max_options), self.option_len
        if self.compact:  # the batch's own lengths and option counts, rounded up
            from asvd_jax.data import encoder_batch

            b = widen(encoder_batch(self.tokenizer, texts, self.max_len, pad_multiple=PAD_MULTIPLE),
                      self.min_width or 0, self.tokenizer.pad_id)
            ids, mask = b["input_ids"], b["attention_mask"]
            o = min(round_up(n_max, 4), self.max_options)
            longest = max(int(self._encode(list(t.options), self.option_len)[1].sum(1).max())
                          for t in {id(t): t for t, _ in items}.values())
            width = min(round_up(longest, 4), self.option_len)
        else:
            ids, mask = self._encode(texts, self.max_len)
        opt_ids = np.full((len(items), o, width), self.tokenizer.pad_id, np.int32)
        opt_mask = np.zeros_like(opt_ids)
        valid = np.zeros((len(items), o), np.int32)
        label = np.zeros((len(items),), np.int32)
        for i, (task, ex) in enumerate(items):
            if not task.options or len(task.options) > self.max_options:
                raise ValueError(f"task {task.name!r}: the encoder needs 1..{self.max_options} options, "
                                 f"has {len(task.options)}")
            oi, om = self._encode(list(task.options), width)
            n = len(task.options)
            opt_ids[i, :n], opt_mask[i, :n], valid[i, :n] = oi, om, 1
            # Unused slots repeat option 0 (masked out of the softmax): an all-padding
            # sequence would pool to a zero vector, whose L2 normalisation has a NaN gradient.
            opt_ids[i, n:], opt_mask[i, n:] = oi[0], om[0]
            label[i] = task.options.index(ex.label)
        batch = {"input_ids": ids.astype(np.int32), "attention_mask": mask.astype(np.int32),
                 "option_ids": opt_ids, "option_mask": opt_mask, "option_valid": valid, "label": label,
                 "row_weight": np.ones((len(items),), np.float32)}
        # Same reason for padded rows: repeat the last real row, with weight 0.
        missing = self.batch_size - len(items)
        if missing > 0:
            batch = {k: np.concatenate([v, np.repeat(v[-1:], missing, axis=0)]) for k, v in batch.items()}
            batch["row_weight"][len(items):] = 0.0
        return batch

    def widen_batch(self, batch, shapes):
        """``batch`` padded to at least ``shapes`` (``{entry: shape}``, e.g. the task's largest
        training batch) with the same loss: input tokens on the right (no attention), option
        tokens on the right, option slots repeating slot 0 with ``option_valid`` 0 (masked out
        of the softmax, as ``train_batch`` fills unused slots)."""
        out = widen(batch, shapes["input_ids"][1], self.tokenizer.pad_id)
        ids, mask, valid = out["option_ids"], out["option_mask"], out["option_valid"]
        slots, width = shapes["option_ids"][1:]
        if ids.shape[2] < width:
            fill = ((0, 0), (0, 0), (0, width - ids.shape[2]))
            ids = np.pad(ids, fill, constant_values=self.tokenizer.pad_id)
            mask = np.pad(mask, fill)
        if ids.shape[1] < slots:
            extra = slots - ids.shape[1]
            ids = np.concatenate([ids, np.repeat(ids[:, :1], extra, axis=1)], axis=1)
            mask = np.concatenate([mask, np.repeat(mask[:, :1], extra, axis=1)], axis=1)
            valid = np.pad(valid, ((0, 0), (0, extra)))
        return {**out, "option_ids": ids, "option_mask": mask, "option_valid": valid}

    def _embed(self, model, ids, mask):
        from asvd_jax.models.bert._model import mean_pool

        return mean_pool(model(ids, mask), mask)

    def loss(self, params, batch):
        import jax
        import jax.numpy as jnp

        model = self.model(params)
        x = self._embed(model, batch["input_ids"], batch["attention_mask"])
        b, o, t = batch["option_ids"].shape
        e = self._embed(model, batch["option_ids"].reshape(b * o, t),
                        batch["option_mask"].reshape(b * o, t)).reshape(b, o, -1)
        logits = jnp.einsum("bd,bod->bo", x, e) / TEMPERATURE
        logits = jnp.where(batch["option_valid"] > 0, logits, -1e9)
        nll = -jnp.take_along_axis(jax.nn.log_softmax(logits, -1), batch["label"][:, None], -1)[:, 0]
        row = batch["row_weight"]
        return (nll * row).sum() / jnp.maximum(row.sum(), 1.0)

    def capture_fn(self, params, batch):
        from asvd_jax.models._capture import capture

        model = self.model(params)
        with capture() as acts:
            model(batch["input_ids"], batch["attention_mask"])
        # Padding rows repeat a real row (see train_batch): their weight 0 keeps them out.
        mask = batch["attention_mask"]
        return dict(acts), mask * (batch["row_weight"][:, None] > 0).astype(mask.dtype)

    def _embed_all(self, params, texts, width):
        import jax

        if getattr(self, "_embed_jit", None) is None:
            self._embed_jit = jax.jit(lambda p, i, m: self._embed(self.model(p), i, m))
        if self.compact:  # chunks of similar lengths, each padded to its own longest row
            from asvd_jax.data import encoder_batch

            lengths = encoder_batch(self.tokenizer, texts, width, pad_multiple=1)["attention_mask"].sum(1)
            chunks = length_sorted_chunks(lengths, self.eval_batch_size)
        else:
            chunks = [np.arange(s, min(s + self.eval_batch_size, len(texts)))
                      for s in range(0, len(texts), self.eval_batch_size)]
        out = np.zeros((len(texts), 0))
        for idx in chunks:
            chunk = [texts[i] for i in idx]
            if self.compact:
                b = encoder_batch(self.tokenizer, chunk, width, pad_multiple=PAD_MULTIPLE)
                ids, mask = b["input_ids"], b["attention_mask"]
            else:
                ids, mask = self._encode(chunk, width)
            rows, w = self.eval_batch_size, ids.shape[1]
            ids = np.concatenate([ids, np.zeros((rows - len(chunk), w), ids.dtype)])
            mask = np.concatenate([mask, np.zeros((rows - len(chunk), w), mask.dtype)])
            emb = np.asarray(self._embed_jit(params, ids, mask))[: len(chunk)]
            if out.shape[1] == 0:
                out = np.zeros((len(texts), emb.shape[1]), emb.dtype)
            out[idx] = emb
        return out

    def evaluate(self, params, task, examples, options=None):
        """``options``: the answers to score (default the task's own; ``eval.option_pool``)."""
        if not task.options:
            raise ValueError(f"task {task.name!r}: the encoder scores options; this task has none")
        options = list(task.options if options is None else options)
        x = self._embed_all(params, self._texts(task, examples), self.max_len)
        e = self._embed_all(params, options, self.option_len)
        pred = (x @ e.T).argmax(axis=1)
        acc = float(np.mean([options[p] == ex.label for p, ex in zip(pred, examples)]))
        answers = [normalize_answer(options[p]) for p in pred]
        return {"n": len(examples), "accuracy": acc, "option_accuracy": acc,
                "predictions": answers, "option_predictions": answers}

    def lm_loss(self, params, texts):
        return None  # no language-model head

    def export(self, params, folder):
        from asvd_jax.models.bert._io import export_hf

        export_hf(self.model(params), folder)
