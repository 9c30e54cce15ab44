"""Tokenisation and batching into numpy arrays, for decoders, encoder-decoders and encoders.

Any tokenizer with ``encode(text, add_special_tokens=False) -> list[int]`` and the attributes
``bos_id``, ``eos_id`` (either may be None) and ``pad_id`` works.

Decoder layout (one row, right padding):

    [BOS] head text tail | answer_sep+answer EOS | PAD ...
    loss_mask:  0 ... 0  |  1  ...         1   1 |  0 ...

``loss_mask[t] = 1`` marks the tokens the model must predict: the loss at position t compares
``logits[t - 1]`` with ``input_ids[t]`` (answer-only loss). Prompt parts are tokenised
separately (head, text, tail, answer), so a token never straddles a boundary and truncation
can drop text tokens alone.

Padded lengths are the longest row rounded up to a multiple of ``pad_multiple`` (capped at
``max_len``), so a jitted step sees few distinct shapes.
"""

from __future__ import annotations

from typing import Any, Callable, Iterator, Sequence

import numpy as np

from asvd_jax.data._padding import pad_token_rows, round_up
from asvd_jax.data._prompts import Prompt

_TRUNCATION = ("right", "left")


def _check_common(max_len: int, truncation: str, pad_multiple: int) -> None:
    if not isinstance(max_len, (int, np.integer)) or max_len < 1:
        raise ValueError(f"max_len must be a positive int, got {max_len!r}")
    if truncation not in _TRUNCATION:
        raise ValueError(f"truncation must be one of {_TRUNCATION}, got {truncation!r}")
    if not isinstance(pad_multiple, (int, np.integer)) or pad_multiple < 1:
        raise ValueError(f"pad_multiple must be a positive int, got {pad_multiple!r}")


def _encode(tokenizer: Any, text: str) -> list[int]:
    return list(tokenizer.encode(text, add_special_tokens=False)) if text else []


def token_count(tokenizer: Any, text: str) -> int:
    """Tokens of ``text`` without special tokens, as the batch builders encode each part."""
    return len(_encode(tokenizer, text))


def _prompt_ids(tokenizer, prompt, budget: int, truncation: str, where: str) -> list[int]:
    """Token ids of ``prompt`` in at most ``budget`` tokens, shortening only its text part."""
    if isinstance(prompt, Prompt):
        head, text, tail = prompt.head, prompt.text, prompt.tail
    elif isinstance(prompt, str):
        head, text, tail = "", prompt, ""
    else:
        raise TypeError(f"{where}: expected a str prompt, got {type(prompt).__name__}")
    head_ids, text_ids, tail_ids = _encode(tokenizer, head), _encode(tokenizer, text), _encode(tokenizer, tail)
    room = budget - len(head_ids) - len(tail_ids)
    if room < 0:
        raise ValueError(
            f"{where}: the instruction, options and answer cue alone take "
            f"{len(head_ids) + len(tail_ids)} tokens, more than the {budget} that max_len leaves"
        )
    if len(text_ids) > room:
        text_ids = text_ids[:room] if truncation == "right" else text_ids[len(text_ids) - room:]
    return head_ids + text_ids + tail_ids


def _pad_rows(rows: Sequence[Sequence[int]], pad_value: int, length: int, side: str) -> np.ndarray:
    return pad_token_rows(rows, length, pad_value, left=side == "left")[0]


def _padded_length(rows, max_len: int, pad_to: int | None, pad_multiple: int) -> int:
    longest = max((len(r) for r in rows), default=0)
    if pad_to is not None:
        if pad_to < longest:
            raise ValueError(f"pad_to={pad_to} is shorter than the longest row ({longest} tokens)")
        return int(pad_to)
    return max(1, min(round_up(longest, pad_multiple), max_len))


def decoder_batch(
    tokenizer: Any,
    prompts: Sequence[str],
    answers: Sequence[str] | None,
    max_len: int,
    pad_to: int | None = None,
    *,
    pad_multiple: int = 16,
    truncation: str = "right",
    padding_side: str = "right",
    answer_sep: str = " ",
) -> dict[str, np.ndarray]:
    """Decoder-only batch: ``input_ids``, ``attention_mask``, ``loss_mask`` (int32, (B, L)).

    Row = [BOS if the tokenizer has one] + prompt + (answer_sep + answer + [EOS]) when answers
    are given; ``loss_mask`` is 1 exactly on the answer and EOS tokens. Rows longer than
    ``max_len`` lose tokens of the prompt's text part (from its end for ``truncation="right"``,
    from its start for ``"left"``); the answer, the instruction, the options and the cue are
    never cut, and a row that cannot fit without cutting them is a ValueError. With
    ``answers=None`` the rows are prompts alone (for generation or option scoring; use
    ``padding_side="left"`` so every prompt ends at the last column; position ids are then
    ``cumsum(attention_mask) - 1``).
    """
    _check_common(max_len, truncation, pad_multiple)
    if padding_side not in ("right", "left"):
        raise ValueError(f"padding_side must be 'right' or 'left', got {padding_side!r}")
    if answers is not None and len(answers) != len(prompts):
        raise ValueError(f"{len(prompts)} prompts but {len(answers)} answers")
    bos = [tokenizer.bos_id] if tokenizer.bos_id is not None else []
    eos = [tokenizer.eos_id] if tokenizer.eos_id is not None else []
    rows, masks = [], []
    for i, prompt in enumerate(prompts):
        answer_ids = []
        if answers is not None:
            answer_ids = _encode(tokenizer, answer_sep + answers[i]) + eos
        budget = max_len - len(bos) - len(answer_ids)
        if budget < 0:
            raise ValueError(
                f"row {i}: the answer takes {len(answer_ids)} tokens with EOS, more than max_len={max_len}"
            )
        prompt_ids = bos + _prompt_ids(tokenizer, prompt, budget, truncation, f"row {i}")
        rows.append(prompt_ids + answer_ids)
        masks.append([0] * len(prompt_ids) + [1] * len(answer_ids))
    length = _padded_length(rows, max_len, pad_to, pad_multiple)
    return {
        "input_ids": _pad_rows(rows, tokenizer.pad_id, length, padding_side),
        "attention_mask": _pad_rows([[1] * len(r) for r in rows], 0, length, padding_side),
        "loss_mask": _pad_rows(masks, 0, length, padding_side),
    }


def seq2seq_batch(
    tokenizer: Any,
    inputs: Sequence[str],
    targets: Sequence[str],
    max_len: int,
    max_target_len: int,
    *,
    pad_multiple: int = 16,
    truncation: str = "right",
    decoder_start_id: int | None = None,
) -> dict[str, np.ndarray]:
    """Encoder-decoder (T5) batch, int32 arrays.

    ``input_ids``/``attention_mask``: prompt + [EOS], text part truncated to ``max_len``.
    ``labels``: target + [EOS], cut to ``max_target_len`` tokens (EOS kept), padded with
    ``pad_id``; ``loss_mask`` (= ``decoder_attention_mask``) marks real label tokens;
    ``decoder_input_ids`` = labels shifted right behind ``decoder_start_id`` (T5: the pad id).
    """
    _check_common(max_len, truncation, pad_multiple)
    if max_target_len < 1:
        raise ValueError(f"max_target_len must be >= 1, got {max_target_len}")
    if len(inputs) != len(targets):
        raise ValueError(f"{len(inputs)} inputs but {len(targets)} targets")
    eos = [tokenizer.eos_id] if tokenizer.eos_id is not None else []
    start = tokenizer.pad_id if decoder_start_id is None else decoder_start_id
    enc_rows, label_rows = [], []
    for i, (prompt, target) in enumerate(zip(inputs, targets)):
        enc_rows.append(_prompt_ids(tokenizer, prompt, max_len - len(eos), truncation, f"row {i}") + eos)
        # max_target_len >= 1, so EOS always fits and is never the token that gets cut.
        keep = max_target_len - len(eos)
        label_rows.append(_encode(tokenizer, target)[:max(keep, 0)] + eos)
    enc_len = _padded_length(enc_rows, max_len, None, pad_multiple)
    dec_len = _padded_length(label_rows, max_target_len, None, pad_multiple)
    labels = _pad_rows(label_rows, tokenizer.pad_id, dec_len, "right")
    loss_mask = _pad_rows([[1] * len(r) for r in label_rows], 0, dec_len, "right")
    decoder_input_ids = np.concatenate(
        [np.full((len(label_rows), 1), start, dtype=np.int32), labels[:, :-1]], axis=1
    )
    return {
        "input_ids": _pad_rows(enc_rows, tokenizer.pad_id, enc_len, "right"),
        "attention_mask": _pad_rows([[1] * len(r) for r in enc_rows], 0, enc_len, "right"),
        "decoder_input_ids": decoder_input_ids,
        "labels": labels,
        "decoder_attention_mask": loss_mask,
        "loss_mask": loss_mask.copy(),
    }


def encoder_batch(
    tokenizer: Any,
    texts: Sequence[str],
    max_len: int,
    *,
    pad_multiple: int = 16,
    truncation: str = "right",
) -> dict[str, np.ndarray]:
    """Encoder (BERT) batch: [bos] text [eos] (the tokenizer's [CLS]/[SEP]), int32 arrays
    ``input_ids``, ``attention_mask``, ``token_type_ids`` (zeros: single segment)."""
    _check_common(max_len, truncation, pad_multiple)
    bos = [tokenizer.bos_id] if tokenizer.bos_id is not None else []
    eos = [tokenizer.eos_id] if tokenizer.eos_id is not None else []
    rows = [
        bos + _prompt_ids(tokenizer, t, max_len - len(bos) - len(eos), truncation, f"row {i}") + eos
        for i, t in enumerate(texts)
    ]
    length = _padded_length(rows, max_len, None, pad_multiple)
    ids = _pad_rows(rows, tokenizer.pad_id, length, "right")
    return {
        "input_ids": ids,
        "attention_mask": _pad_rows([[1] * len(r) for r in rows], 0, length, "right"),
        "token_type_ids": np.zeros_like(ids),
    }


def _default_length(item: Any) -> int:
    return len(getattr(item, "text", item))


def batches(
    examples: Sequence[Any],
    batch_size: int,
    seed: int = 0,
    shuffle: bool = True,
    bucket_by_length: bool = False,
    drop_last: bool = False,
    *,
    length_fn: Callable[[Any], int] | None = None,
    bucket_pool: int = 32,
) -> Iterator[list]:
    """Deterministic mini-batches (lists of items of ``examples``) for one pass.

    ``shuffle``: a permutation from ``numpy.random.default_rng(seed)`` (pass seed + epoch for
    a new order each epoch). ``bucket_by_length``: the shuffled items are cut into pools of
    ``bucket_pool`` batches, each pool is sorted by ``length_fn`` (default: characters of
    ``.text``) and cut into batches, and the batch order is shuffled again, so batches hold
    similar lengths (less padding) while the epoch stays random. ``drop_last`` drops a final
    short batch (fixed shapes for jit).
    """
    if not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    if bucket_pool < 1:
        raise ValueError(f"bucket_pool must be >= 1, got {bucket_pool}")
    items = list(examples)
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(items)) if shuffle else np.arange(len(items))
    if bucket_by_length:
        length_fn = length_fn or _default_length
        pool = batch_size * bucket_pool
        chunks = []
        for start in range(0, len(order), pool):
            # A stable sort keeps the shuffled order among equal lengths.
            part = sorted(order[start:start + pool], key=lambda j: length_fn(items[j]))
            chunks.extend(part[k:k + batch_size] for k in range(0, len(part), batch_size))
        if drop_last:
            chunks = [c for c in chunks if len(c) == batch_size]
        if shuffle:
            chunks = [chunks[j] for j in rng.permutation(len(chunks))]
    else:
        chunks = [order[k:k + batch_size] for k in range(0, len(order), batch_size)]
        if drop_last:
            chunks = [c for c in chunks if len(c) == batch_size]
    for chunk in chunks:
        yield [items[j] for j in chunk]

