"""Checks of a sequence against the run's token budgets, warned about before training.

* ``max_len`` truncation: the share of a task's examples (train and evaluation split, up to
  ``SAMPLE`` each) whose full input -- what the adapter would feed before cutting the text
  part -- is longer than ``data.max_len``. A warning when it exceeds ``TRUNCATED_SHARE``: the
  model then learns and is scored on texts it never sees whole.
* Generation budget: a label word needing ``eval.max_new_tokens`` tokens or more. Greedy
  generation stops after ``max_new_tokens``, so an answer that long is cut or leaves no room
  for the end of sequence, and exact match can fail for a right answer.

``data_warnings`` returns the messages; the runner logs them and keeps them in metrics.json.
"""

from __future__ import annotations

from typing import Any, Sequence

SAMPLE = 200
"""Examples per task and split measured (the first ones: the splits are already shuffled)."""
TRUNCATED_SHARE = 0.5
"""Warn when more than this share of a task's inputs is truncated."""


def _count(tokenizer: Any, text: str) -> int:
    from asvd_jax.data._batching import _encode

    return len(_encode(tokenizer, text))


def input_length(adapter: Any, task: Any, text: str, label: str | None) -> int:
    """Tokens of one input before truncation, as the adapter's family builds it."""
    from asvd_jax.data import format_prompt

    tok = adapter.tokenizer
    specials = int(getattr(tok, "bos_id", None) is not None) + int(getattr(tok, "eos_id", None) is not None)
    if adapter.family == "bert":
        return specials + _count(tok, f"{task.instruction}\n{text}")
    p = format_prompt(task, text)
    n = sum(_count(tok, part) for part in (p.head, p.text, p.tail))
    if adapter.family == "t5":
        return n + 1  # + EOS
    # Decoder training row: BOS + prompt + " " + answer + EOS.
    return n + specials + (_count(tok, " " + label) if label is not None else 0)


def answer_tokens(adapter: Any, label: str) -> int:
    """Tokens the model must generate for ``label`` (before the end of sequence)."""
    tok = adapter.tokenizer
    return _count(tok, " " + label if adapter.family == "llama" else label)


def data_warnings(adapter: Any, tasks: Sequence[Any], max_len: int, max_new_tokens: int | None,
                  eval_split: str = "test") -> list[str]:
    """Warning messages for ``tasks`` (empty when every budget fits).

    Only the shipped families' input layouts are known here: a registered family (or one
    without a tokenizer, e.g. a byte-level model) gets no warnings.
    """
    if adapter.tokenizer is None or adapter.family not in ("bert", "t5", "llama"):
        return []
    out = []
    for task in tasks:
        rows = [(ex, True) for ex in task.train[:SAMPLE]] + [(ex, False) for ex in task.split(eval_split)[:SAMPLE]]
        if rows:
            long = sum(input_length(adapter, task, ex.text, ex.label if train else None) > max_len
                       for ex, train in rows)
            if long / len(rows) > TRUNCATED_SHARE:
                out.append(f"task {task.name!r}: {long} of {len(rows)} inputs are longer than "
                           f"data.max_len={max_len} tokens and lose the end of their text; "
                           f"raise data.max_len")
        if max_new_tokens is None or adapter.family == "bert":
            continue
        labels = list(task.options) or sorted({ex.label for ex in task.train[:SAMPLE]})
        need = {lab: answer_tokens(adapter, lab) for lab in labels}
        too_long = {lab: n for lab, n in need.items() if n >= max_new_tokens}
        if too_long:
            shown = ", ".join(f"{lab!r} ({n})" for lab, n in list(too_long.items())[:5])
            out.append(f"task {task.name!r}: label(s) {shown} need eval.max_new_tokens={max_new_tokens} "
                       f"tokens or more; generation may cut them (raise eval.max_new_tokens)")
    return out
