"""Progress bars with ETA on stderr (tqdm), or silence."""

from __future__ import annotations

import sys
from typing import Iterable, Iterator, TypeVar

T = TypeVar("T")


class Progress:
    def __init__(self, enabled: bool = True):
        self.enabled = enabled

    def bar(self, iterable: Iterable[T], total: int | None, desc: str) -> Iterator[T]:
        if not self.enabled:
            yield from iterable
            return
        from tqdm.auto import tqdm

        with tqdm(iterable, total=total, desc=desc, file=sys.stderr, dynamic_ncols=True,
                  leave=True, mininterval=1.0) as it:
            for x in it:
                yield x

    def log(self, message: str) -> None:
        if self.enabled:
            print(message, file=sys.stderr, flush=True)


class _Silent:
    def update(self, n: int = 1, **postfix) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


class _Bar(_Silent):
    def __init__(self, total: int | None, desc: str, initial: int = 0):
        from tqdm.auto import tqdm

        self._bar = tqdm(total=total, desc=desc, initial=initial, file=sys.stderr,
                         dynamic_ncols=True, mininterval=1.0)

    def update(self, n: int = 1, **postfix) -> None:
        if postfix:
            self._bar.set_postfix({k: (f"{v:.4f}" if isinstance(v, float) else v)
                                   for k, v in postfix.items()}, refresh=False)
        self._bar.update(n)

    def __exit__(self, *exc):
        self._bar.close()
        return False


def counter(progress: Progress, total: int | None, desc: str, initial: int = 0):
    """A manual bar: ``with counter(p, n, "train") as c: c.update(1, loss=0.3)``."""
    return _Bar(total, desc, initial) if progress.enabled else _Silent()
