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
