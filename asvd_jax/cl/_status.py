"""A run's ``status`` in metrics.json is always true, and every ended run has a summary.md.

``status`` is one of ``running`` (a live run, or one killed without warning: SIGKILL, power
loss), ``complete``, ``stopped_after_task`` (``run.stop_after_task``), ``interrupted`` (Ctrl-C
/ SIGINT, or SIGTERM) or ``failed``; ``status_detail`` says which signal, which stage, or the
error. :func:`recording_end` wraps the runner's task loop to write them.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from typing import Callable, Iterator


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread so the run ends like Ctrl-C (status written)."""


def _on_sigterm(signum, frame):  # pragma: no cover - exercised through a subprocess test
    raise Terminated("SIGTERM")


@contextlib.contextmanager
def recording_end(metrics: dict, write: Callable[[dict], None]) -> Iterator[None]:
    """Mark ``metrics`` interrupted / failed and ``write`` them when the body raises.

    ``write(metrics)`` saves metrics.json and summary.md; an error inside it is swallowed so
    the original exception (and its traceback) is what the caller sees. A status the body set
    itself before raising (the non-finite-loss stop) is kept.
    """
    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        yield
    except KeyboardInterrupt as e:
        name = e.args[0] if isinstance(e, Terminated) else "SIGINT"
        metrics["status"], metrics["status_detail"] = "interrupted", f"signal {name}; continue with --resume"
        _quiet(write, metrics)
        raise
    except BaseException as e:
        if metrics.get("status") in (None, "running"):
            metrics["status"] = "failed"
            metrics["status_detail"] = f"{type(e).__name__}: {e}"
        _quiet(write, metrics)
        raise
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _quiet(write: Callable[[dict], None], metrics: dict) -> None:
    try:
        write(metrics)
    except Exception:  # the run's own error matters more than a failed report
        pass
