"""Checks of a sequence against the run's token budgets, warned about before training.

* ``max_len`` truncation: the share of a task's examples (train and evaluation split, up to
  ``SAMPLE`` each) whose full input -- what the family's adapter would feed before cutting the
  text part (``Family.input_length``) -- is longer than ``data.max_len``. A warning when it exceeds ``TRUNCATED_SHARE``: the
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


def data_warnings(family: Any, adapter: Any, tasks: Sequence[Any], max_len: int, max_new_tokens: int | None,
                  eval_split: str = "test") -> list[str]:
    """Warning messages for ``tasks`` (empty when every budget fits).

    The input layouts are the family's (``Family.input_length``, ``Family.answer_tokens``):
    a family that states none (or an adapter without a tokenizer, e.g. a byte-level model)
    gets no warnings.
    """
    tok = adapter.tokenizer
    if tok is None or family.input_length is None:
        return []
    out = []
    for task in tasks:
        rows = [(ex, True) for ex in task.train[:SAMPLE]] + [(ex, False) for ex in task.split(eval_split)[:SAMPLE]]
        if rows:
            long = sum(family.input_length(tok, task, ex.text, ex.label if train else None) > max_len
                       for ex, train in rows)
            if long / len(rows) > TRUNCATED_SHARE:
                out.append(f"task {task.name!r}: {long} of {len(rows)} inputs are longer than "
                           f"data.max_len={max_len} tokens and lose the end of their text; "
                           f"raise data.max_len")
        if max_new_tokens is None or family.answer_tokens is None:
            continue
        labels = list(task.options) or sorted({ex.label for ex in task.train[:SAMPLE]})
        need = {lab: family.answer_tokens(tok, lab) for lab in labels}
        too_long = {lab: n for lab, n in need.items() if n >= max_new_tokens}
        if too_long:
            shown = ", ".join(f"{lab!r} ({n})" for lab, n in list(too_long.items())[:5])
            out.append(f"task {task.name!r}: label(s) {shown} need eval.max_new_tokens={max_new_tokens} "
                       f"tokens or more; generation may cut them (raise eval.max_new_tokens)")
    return out
