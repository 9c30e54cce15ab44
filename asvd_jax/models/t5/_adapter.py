"""The trainer's adapter for T5 (``asvd_jax.models.ModelAdapter``).

Input = the decoder prompt, target = the label word + EOS; loss = mean token cross-entropy
over the target; evaluation = greedy generation with exact match (headline; TRACE tasks: the
task's own metric, as for decoders) and restricted option scoring (log-likelihood of each
option + EOS). Its targets see two token streams (encoder states for encoder layers and
cross-attention keys/values, decoder states elsewhere), so rank statistics run one capture
per stream, each with its own mask.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from asvd_jax.data import fix_width, format_prompt, normalize_answer, pad_batch, score_generated, seq2seq_batch
from asvd_jax.models._family import SplitAdapter


class Seq2SeqAdapter(SplitAdapter):
    """T5: target = label word + EOS."""

    family = "t5"
    max_target_len = 16
    compact = False
    """Fixed ``max_len`` / ``max_target_len`` batches (the family has no compact layout)."""

    def __init__(self, model, tokenizer, *, max_new_tokens: int = 6, protocol: str = "auto", **kw):
        super().__init__(model, tokenizer, **kw)
        self.max_new_tokens = max_new_tokens
        self.protocol = "both" if protocol == "auto" else protocol

    def _inputs(self, task, examples):
        return [format_prompt(task, ex.text) for ex in examples]

    def train_batch(self, items):
        b = seq2seq_batch(self.tokenizer, [format_prompt(t, e.text) for t, e in items],
                          [e.label for _, e in items], self.max_len, self.max_target_len)
        pad = self.tokenizer.pad_id
        out = {}
        for k, v in b.items():
            width = self.max_len if k in ("input_ids", "attention_mask") else self.max_target_len
            fill = pad if k in ("input_ids", "labels", "decoder_input_ids") else 0
            out[k] = fix_width(v, width, fill).astype(np.int32)
        return pad_batch(out, self.batch_size)

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
        from asvd_jax.models.t5 import _decoding as t5

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
        from asvd_jax.models.t5._io import export_hf

        export_hf(self.model(params), folder, tokenizer=self.tokenizer)
