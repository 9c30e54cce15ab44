"""One tokenizer interface for every model and for the data pipeline.

Data code only needs ``encode``/``decode`` and the special ids, so it works with any object
of this shape; models wrap a Hugging Face ``tokenizers.Tokenizer`` (from ``tokenizer.json``
or rebuilt from GGUF metadata) in ``TextTokenizer``.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Protocol, Sequence


class TokenizerLike(Protocol):
    bos_id: int | None
    eos_id: int | None
    pad_id: int

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]: ...

    def decode(self, ids: Sequence[int]) -> str: ...


@dataclasses.dataclass(frozen=True)
class TextTokenizer:
    """A ``tokenizers.Tokenizer`` plus the special ids the models and batching need.

    ``encode(text)`` returns ids without special tokens; ``add_special_tokens=True`` applies the
    tokenizer's own post-processor (BOS for Llama-style models, [CLS]/[SEP] for BERT, EOS for T5).
    """

    backend: Any
    bos_id: int | None
    eos_id: int | None
    pad_id: int

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        return list(self.backend.encode(text, add_special_tokens=add_special_tokens).ids)

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = True) -> str:
        return self.backend.decode(list(ids), skip_special_tokens=skip_special_tokens)

    @property
    def vocab_size(self) -> int:
        return self.backend.get_vocab_size()

    def save(self, folder: str | os.PathLike) -> None:
        """Write ``tokenizer.json`` into ``folder`` (the HF layout)."""
        os.makedirs(folder, exist_ok=True)
        self.backend.save(os.path.join(folder, "tokenizer.json"))


def byte_tokenizer() -> TextTokenizer:
    """A byte-level tokenizer: ids 0/1/2 = pad/bos/eos, then the 256 bytes (no merges).

    The tokenizer of the families' ``source="random"`` models: tests and the pulse check
    need no files at all.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors

    byte_chars = pre_tokenizers.ByteLevel.alphabet()
    vocab = {"<pad>": 0, "<s>": 1, "</s>": 2}
    for ch in sorted(byte_chars):
        vocab[ch] = len(vocab)
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens(["<pad>", "<s>", "</s>"])
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    return TextTokenizer(tok, bos_id=1, eos_id=2, pad_id=0)
