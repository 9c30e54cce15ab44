"""The trainer's adapter for Llama-family decoders (``asvd_jax.models.ModelAdapter``).

The adapter owns the split model (``graphdef`` static, ``params`` traced, ``rest`` fixed) and
knows how to turn examples into fixed-shape batches, compute the training loss, hand
activations to rank statistics, evaluate a task and export the model:

* ``train_batch(items)`` with ``items = [(task, example), ...]``: numpy batch, rows padded to
  ``batch_size``, tokens to the longest row rounded up to a multiple of 16 (``_loss.py``;
  at most ``max_len / 16`` shapes, so the jitted step compiles a bounded number of times).
* ``loss(params, batch)`` (traced): mean over answer tokens (decoder, T5) or examples
  (encoder option cross-entropy).
* ``capture_fn(params, batch)`` (traced): ``({kernel path: inputs}, token mask)`` for
  ``asvd_jax.ranks.collect_statistics``.
* ``evaluate(params, task, examples)``: ``{"accuracy", "option_accuracy", ...}`` where
  ``accuracy`` is the family's headline protocol. Generated answers are scored by exact match,
  except TRACE's generation tasks, which get their own metric, named in ``"metric"``
  (``asvd_jax.data._text_metrics``).
* ``lm_loss(params, texts)``: held-out LM loss in nats per token (None if the family has no
  LM head).
* ``export(params, folder)``: HF safetensors layout.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from asvd_jax.data import (PAD_MULTIPLE, compact_width, decoder_batch, format_prompt, length_sorted_chunks,
                           normalize_answer, pad_batch, score_generated, widen)
from asvd_jax.models._family import split_model
from asvd_jax.models.llama._loss import gathered_answer_loss, loss_positions


class DecoderAdapter:
    """Llama-family decoders: answer-only LM loss; greedy exact match + option scoring."""

    family = "llama"

    def __init__(self, model: Any, tokenizer: Any, *, max_len: int, batch_size: int,
                 eval_batch_size: int = 16, max_new_tokens: int = 6, protocol: str = "auto"):
        self.graphdef, self.params, self.rest = split_model(model)
        self.tokenizer = tokenizer
        self.max_len = max_len
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size
        self.max_new_tokens = max_new_tokens
        self.protocol = "both" if protocol == "auto" else protocol
        self._option_fn = None

    def model(self, params: Any) -> Any:
        from flax import nnx

        return nnx.merge(self.graphdef, params, self.rest)

    # ------------------------------------------------------------------------- training
    def train_batch(self, items):
        prompts = [format_prompt(task, ex.text) for task, ex in items]
        answers = [ex.label for _, ex in items]
        if not self.compact:
            batch = decoder_batch(self.tokenizer, prompts, answers, self.max_len, pad_to=self.max_len)
            return pad_batch(batch, self.batch_size)
        # Compact layout (_loss.py): padded to the longest row, head at loss positions.
        batch = pad_batch(decoder_batch(self.tokenizer, prompts, answers, self.max_len,
                                       pad_multiple=PAD_MULTIPLE), self.batch_size)
        batch.update(loss_positions(batch["input_ids"], batch["attention_mask"], batch["loss_mask"]))
        return widen(batch, self.min_width or 0, self.tokenizer.pad_id)

    compact = True
    """Compact training batches (_loss.py); False: the fixed max_len, full-logits layout."""
    min_width = None
    """Compact batches are padded to at least this many tokens (the runner: a short stage's width)."""

    def widen_batch(self, batch, shapes):
        """``batch`` padded to at least ``shapes`` (``{entry: shape}``, e.g. the task's largest
        training batch) with the same loss: tokens on the right (no attention, no loss), loss
        slots with weight 0. The trainer hands methods such batches (EWC's Fisher: one program)."""
        out = widen(batch, shapes["input_ids"][1], self.tokenizer.pad_id)
        for key in ("loss_index", "loss_target", "loss_weight"):
            if key in out and key in shapes and out[key].shape[1] < shapes[key][1]:
                v = out[key]
                out[key] = np.concatenate([v, np.zeros((v.shape[0], shapes[key][1] - v.shape[1]), v.dtype)], axis=1)
        return out

    def loss(self, params, batch):
        import jax.numpy as jnp

        from asvd_jax.models.llama._decoding import token_logprobs

        if "loss_index" in batch:
            return gathered_answer_loss(self.model(params), batch)
        lp = token_logprobs(self.model(params), batch["input_ids"], batch["attention_mask"])
        mask = batch["loss_mask"].astype(jnp.float32)
        return -(lp * mask).sum() / jnp.maximum(mask.sum(), 1.0)

    def capture_fn(self, params, batch):
        from asvd_jax.models._capture import capture

        model = self.model(params)
        with capture() as acts:
            model.hidden_states(batch["input_ids"], batch["attention_mask"])
        return dict(acts), batch["attention_mask"]

    # ----------------------------------------------------------------------- evaluation
    def _prompt_ids(self, task, examples) -> list[list[int]]:
        prompts = [format_prompt(task, ex.text) for ex in examples]
        b = decoder_batch(self.tokenizer, prompts, None, self.max_len, padding_side="right")
        return [row[: int(m.sum())].tolist() for row, m in zip(b["input_ids"], b["attention_mask"])]

    def _option_ids(self, task) -> list[list[int]]:
        eos = [self.tokenizer.eos_id] if self.tokenizer.eos_id is not None else []
        # Options are scored as the model was trained to emit them: " label" then EOS.
        return [self.tokenizer.encode(" " + o) + eos for o in task.options]

    max_options = 8
    """Minimum option slots of the fused evaluation (fixed so every task shares one program)."""
    option_len = 8
    """Minimum token slots per option (label words are 1-3 tokens, plus EOS)."""
    early_exit = True
    """Greedy decoding stops once every row of a chunk has produced EOS and only the task's own
    option slots are scored, not the padding slots (``generate_and_score``); False: always
    ``max_new_tokens`` decode steps and every slot (same outputs, the former program)."""

    def evaluate(self, params, task, examples):
        import jax
        import jax.numpy as jnp

        from asvd_jax.data import pad_token_rows
        from asvd_jax.models.llama._decoding import generate_and_score

        if not examples:
            raise ValueError(f"task {task.name!r}: no evaluation examples")
        pad, eos = self.tokenizer.pad_id, self.tokenizer.eos_id
        option_ids = self._option_ids(task) if task.options else [[eos if eos is not None else pad]]
        score = bool(task.options) and self.protocol in ("options", "both")
        # Slots rounded up to multiples of 8: typical label sets all share one program. Without
        # option scoring there are none: its head over the vocabulary at every option token
        # costs more than the generation itself (Gemma's 262k words: ~340 GFLOP per 16 rows).
        slots = -(-max(len(option_ids), self.max_options) // 8) * 8 if score else 0
        width = -(-max(max(map(len, option_ids)), self.option_len) // 8) * 8
        if score:
            oi, om = pad_token_rows(option_ids + [[pad]] * (slots - len(option_ids)), width, pad, left=False)
        else:
            oi, om = np.zeros((0, width), np.int32), np.zeros((0, width), np.int32)
        if self._eval_fn is None:
            def fn(params, ids, mask, oi, om, n_options):
                return generate_and_score(self.model(params), ids, mask, oi, om, self.max_new_tokens,
                                          -1 if eos is None else eos, pad, early_exit=self.early_exit,
                                          n_options=n_options if self.early_exit else None)
            self._eval_fn = jax.jit(fn)
        prompt_ids = self._prompt_ids(task, examples)
        rows = self.eval_batch_size
        if self.compact:  # sorted by prompt length; widths in multiples of 32 (few programs)
            chunks = length_sorted_chunks([len(p) for p in prompt_ids], rows)
        else:
            chunks = [np.arange(s, min(s + rows, len(prompt_ids))) for s in range(0, len(prompt_ids), rows)]
        gen, scores = [None] * len(prompt_ids), np.zeros((len(prompt_ids), len(option_ids)))
        for idx in chunks:
            chunk = [prompt_ids[i] for i in idx]
            n = len(chunk)
            chunk = chunk + [chunk[-1]] * (rows - n)  # fixed shape, results dropped
            width = compact_width(map(len, chunk), self.max_len, 32) if self.compact else self.max_len
            pi, pm = pad_token_rows(chunk, width, pad, left=True)
            g, sc = self._eval_fn(params, jnp.asarray(pi), jnp.asarray(pm), jnp.asarray(oi), jnp.asarray(om),
                                  jnp.int32(len(option_ids) if score else 0))  # traced: one program per task
            for j, row in zip(idx, np.asarray(g)[:n].tolist()):
                gen[j] = row
            if score:
                scores[idx] = np.asarray(sc, np.float64)[:n, : len(option_ids)]
        scores = [scores]
        labels = [normalize_answer(ex.label) for ex in examples]
        out: dict[str, Any] = {"n": len(examples)}
        if self.protocol in ("generate", "both") or not task.options:
            cut = [g[: g.index(eos)] if eos in g else g for g in gen]
            raw = [self.tokenizer.decode(g) for g in cut]
            out.update(score_generated(task, examples, raw))
            texts = [normalize_answer(t) for t in raw]
            opts = {normalize_answer(o) for o in task.options}
            # Share of answers that are no label word at all (format drift) and the most
            # frequent prediction (drift towards one task's labels shows up here).
            out["predictions"] = texts  # normalised; per-class stats in _metrics.annotate_evaluation
            out["invalid_rate"] = float(np.mean([t not in opts for t in texts])) if opts else 0.0
            values, counts = np.unique(texts, return_counts=True)
            out["top_prediction"] = str(values[np.argmax(counts)]) if len(values) else ""
        if score:
            pred = [normalize_answer(task.options[j]) for j in np.concatenate(scores).argmax(axis=1)]
            out["option_accuracy"] = float(np.mean([p == l for p, l in zip(pred, labels)]))
            out["option_predictions"] = pred
        out["accuracy"] = out.get("generate_accuracy", out.get("option_accuracy"))
        return out

    _eval_fn = None

    def lm_loss(self, params, texts):
        import jax
        import jax.numpy as jnp

        from asvd_jax.models.llama._decoding import token_logprobs

        if self._lm_fn is None:
            def fn(params, ids, mask):
                lp = token_logprobs(self.model(params), ids, mask)
                return -lp.sum(), (mask[:, 1:] * mask[:, :-1]).sum()
            self._lm_fn = jax.jit(fn)
        bos = [self.tokenizer.bos_id] if self.tokenizer.bos_id is not None else []
        rows = []
        for t in texts:
            ids = self.tokenizer.encode(t)
            for s in range(0, len(ids), self.max_len - len(bos)):
                rows.append(bos + ids[s:s + self.max_len - len(bos)])
        # Rows per call bounded so the (rows, max_len, vocab) float32 logits stay near 256 MB:
        # at eval_batch_size 16 Gemma's 262k-word head made 2 GB of logits and as much again of
        # log-probabilities (same sums: each row's loss does not depend on its batch).
        vocab = getattr(self.tokenizer, "vocab_size", 0) or 1
        per_call = max(1, min(self.eval_batch_size, (1 << 26) // (self.max_len * vocab)))
        total, count = 0.0, 0
        for s in range(0, len(rows), per_call):
            chunk = rows[s:s + per_call]
            ids = np.full((per_call, self.max_len), self.tokenizer.pad_id, np.int32)
            mask = np.zeros_like(ids)
            for i, r in enumerate(chunk):
                ids[i, :len(r)], mask[i, :len(r)] = r, 1
            nll, n = self._lm_fn(params, jnp.asarray(ids), jnp.asarray(mask))
            total, count = total + float(nll), count + int(n)
        return total / max(count, 1)

    _lm_fn = None

    def export(self, params, folder):
        from asvd_jax.models.llama._io import export_hf

        export_hf(self.model(params), folder, tokenizer=self.tokenizer)
