"""Adapters for the encoder (BERT / MiniLM) and the encoder-decoder (T5) families.

Encoder: no per-task head, so nothing task-specific can hide forgetting. An input is
``instruction + "\\n" + text``; each option is embedded by the same model; the score of option
``o`` is ``cos(e(x), e(o))`` (mean-pooled, L2-normalised embeddings). Training minimises the
cross-entropy of ``cos / TEMPERATURE`` over the task's options (a contrastive loss with the
other options as negatives); evaluation picks the most similar option.

T5: input = the decoder prompt, target = the label word + EOS; loss = mean token
cross-entropy over the target; evaluation = greedy generation with exact match (headline;
TRACE tasks: the task's own metric, as for decoders) and restricted option scoring
(log-likelihood of each option + EOS). Its targets see two token streams (encoder states
for encoder layers and cross-attention keys/values, decoder states elsewhere), so rank
statistics run one capture per stream, each with its own mask.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from asvd_jax.cl._adapter import normalize_answer, pad_rows, split_model
from asvd_jax.cl._compact import PAD_MULTIPLE, length_sorted_chunks, round_up, widen
from asvd_jax.cl._text_metrics import score_generated

TEMPERATURE = 0.05
"""Softmax temperature of the encoder's option cross-entropy (scale 20, as contrastive
sentence-embedding training commonly uses)."""


def _fix_width(arr: np.ndarray, width: int, fill: int) -> np.ndarray:
    """Pad (or cut) the last axis to ``width`` so every batch has one shape."""
    if arr.shape[-1] >= width:
        return arr[..., :width]
    pad = np.full((*arr.shape[:-1], width - arr.shape[-1]), fill, arr.dtype)
    return np.concatenate([arr, pad], axis=-1)


class _Base:
    def __init__(self, model, tokenizer, *, max_len: int, batch_size: int, eval_batch_size: int = 16):
        self.graphdef, self.params, self.rest = split_model(model)
        self.tokenizer = tokenizer
        self.max_len = max_len
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size

    def model(self, params):
        from flax import nnx

        return nnx.merge(self.graphdef, params, self.rest)


class EncoderAdapter(_Base):
    """BERT-style encoders: option scoring by embedding similarity."""

    family = "bert"
    max_options = 8
    option_len = 16
    min_width = None  # compact batches are at least this wide (the runner: a short stage's width)
    compact = True
    """Compact training batches (cl/_compact.py): rows padded to the batch's longest input
    rounded up to 16 tokens, option slots to the batch's largest label set rounded up to 4,
    option tokens to its longest option rounded up to 4. False: max_len / 8 / 16 always."""

    def _texts(self, task, examples):
        return [f"{task.instruction}\n{ex.text}" for ex in examples]

    def _encode(self, texts, width):
        from asvd_jax.data import encoder_batch

        b = encoder_batch(self.tokenizer, texts, width)
        return (_fix_width(b["input_ids"], width, self.tokenizer.pad_id),
                _fix_width(b["attention_mask"], width, 0))

    def train_batch(self, items):
        if not items:
            raise ValueError("train_batch: no items")
        texts = [f"{t.instruction}\n{e.text}" for t, e in items]
        o, width = self.max_options, self.option_len
        if self.compact:  # cl/_compact.py: the batch's own lengths and option counts, rounded up
            from asvd_jax.data import encoder_batch

            b = widen(encoder_batch(self.tokenizer, texts, self.max_len, pad_multiple=PAD_MULTIPLE),
                      self.min_width or 0, self.tokenizer.pad_id)
            ids, mask = b["input_ids"], b["attention_mask"]
            o = min(round_up(max(len(t.options) for t, _ in items), 4), self.max_options)
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

    def _embed(self, model, ids, mask):
        from asvd_jax.models.bert import mean_pool

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
        return dict(acts), batch["attention_mask"] * (batch["row_weight"][:, None] > 0)

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
        from asvd_jax.models.bert import export_hf

        export_hf(self.model(params), folder)


class Seq2SeqAdapter(_Base):
    """T5: target = label word + EOS."""

    family = "t5"
    max_target_len = 16

    def __init__(self, model, tokenizer, *, max_new_tokens: int = 6, protocol: str = "auto", **kw):
        super().__init__(model, tokenizer, **kw)
        self.max_new_tokens = max_new_tokens
        self.protocol = "both" if protocol == "auto" else protocol

    def _inputs(self, task, examples):
        from asvd_jax.data import format_prompt

        return [format_prompt(task, ex.text) for ex in examples]

    def train_batch(self, items):
        from asvd_jax.data import seq2seq_batch, format_prompt

        b = seq2seq_batch(self.tokenizer, [format_prompt(t, e.text) for t, e in items],
                          [e.label for _, e in items], self.max_len, self.max_target_len)
        pad = self.tokenizer.pad_id
        out = {}
        for k, v in b.items():
            width = self.max_len if k in ("input_ids", "attention_mask") else self.max_target_len
            fill = pad if k in ("input_ids", "labels", "decoder_input_ids") else 0
            out[k] = _fix_width(v, width, fill).astype(np.int32)
        return pad_rows(out, self.batch_size)

    def loss(self, params, batch):
        import jax
        import jax.numpy as jnp

        logits = self.model(params)(batch["input_ids"], batch["attention_mask"],
                                    batch["decoder_input_ids"], batch["decoder_attention_mask"])
        logp = jax.nn.log_softmax(logits, -1)
        picked = jnp.take_along_axis(logp, batch["labels"][..., None], -1)[..., 0]
        mask = batch["loss_mask"].astype(jnp.float32)
        return -(picked * mask).sum() / jnp.maximum(mask.sum(), 1.0)

    @staticmethod
    def encoder_side(path: str) -> bool:
        """Targets whose inputs are encoder states (encoder layers, cross-attention k/v)."""
        return path.startswith("encoder/") or "/cross_attn/k_proj/" in path or "/cross_attn/v_proj/" in path

    def _capture(self, params, batch):
        from asvd_jax.models._capture import capture

        with capture() as acts:
            self.model(params)(batch["input_ids"], batch["attention_mask"],
                               batch["decoder_input_ids"], batch["decoder_attention_mask"])
        return dict(acts)

    def capture_fn(self, params, batch):
        """Encoder-stream targets only (one mask per call); see ``capture_groups``."""
        acts = self._capture(params, batch)
        return {p: a for p, a in acts.items() if self.encoder_side(p)}, batch["attention_mask"]

    def decoder_capture_fn(self, params, batch):
        acts = self._capture(params, batch)
        return {p: a for p, a in acts.items() if not self.encoder_side(p)}, batch["decoder_attention_mask"]

    def capture_groups(self, paths):
        """[(capture_fn, paths)] per token stream, for statistics with the right masks."""
        enc = [p for p in paths if self.encoder_side(p)]
        dec = [p for p in paths if not self.encoder_side(p)]
        return [(fn, ps) for fn, ps in ((self.capture_fn, enc), (self.decoder_capture_fn, dec)) if ps]

    def evaluate(self, params, task, examples):
        from asvd_jax.data import seq2seq_batch
        from asvd_jax.models import t5

        model = self.model(params)
        labels = [normalize_answer(ex.label) for ex in examples]
        inputs = self._inputs(task, examples)
        out: dict[str, Any] = {"n": len(examples)}
        if self.protocol in ("generate", "both") or not task.options:
            texts = []
            for s in range(0, len(inputs), self.eval_batch_size):
                chunk = inputs[s:s + self.eval_batch_size]
                b = seq2seq_batch(self.tokenizer, chunk, [""] * len(chunk), self.max_len, 1)
                gen = t5.generate(model, b["input_ids"], b["attention_mask"], self.max_new_tokens)
                eos = self.tokenizer.eos_id
                for row in gen.tolist():
                    cut = row.index(eos) if eos in row else len(row)
                    texts.append(self.tokenizer.decode(row[:cut]))
            out.update(score_generated(task, examples, texts))
            out["predictions"] = [normalize_answer(t) for t in texts]
        if task.options and self.protocol in ("options", "both"):
            scores = t5.score_options(model, self.tokenizer, list(inputs), list(task.options),
                                      batch_size=self.eval_batch_size, max_input_len=self.max_len)
            pred = [normalize_answer(task.options[j]) for j in np.asarray(scores).argmax(axis=1)]
            out["option_accuracy"] = float(np.mean([p == l for p, l in zip(pred, labels)]))
            out["option_predictions"] = pred
        out["accuracy"] = out.get("generate_accuracy", out.get("option_accuracy"))
        return out

    def lm_loss(self, params, texts):
        return None  # T5's pre-training objective is span corruption, not next-token LM

    def export(self, params, folder):
        from asvd_jax.models.t5 import export_hf

        export_hf(self.model(params), folder, tokenizer=self.tokenizer)
