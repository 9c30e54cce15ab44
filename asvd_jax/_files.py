"""Atomic file writes shared by every layer (the trainer's records, analysis reports).

A file is written to a temporary name in the same folder and renamed into place, so a crash
never leaves a half-written result; the temporary file is removed if the write fails.
"""

from __future__ import annotations

import json
import os
from typing import Any

import jax
import numpy as np


def write_text_atomic(path: str, text: str) -> None:
    """Write ``text`` to ``path`` via a temporary file and a rename (never half-written)."""
    tmp = f"{path}.tmp{os.getpid()}"
    try:
        with open(tmp, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def write_json_atomic(path: str, obj: Any) -> None:
    """Write ``obj`` as indented JSON to ``path`` (numpy and jax arrays as lists), atomically."""
    write_text_atomic(path, json.dumps(obj, indent=2, default=_json_default))


def _json_default(x: Any) -> Any:
    if isinstance(x, (np.integer,)):
        return int(x)
    if isinstance(x, (np.floating,)):
        return float(x)
    if isinstance(x, np.ndarray) or isinstance(x, jax.Array):
        return np.asarray(x).tolist()
    if isinstance(x, tuple):
        return list(x)
    raise TypeError(f"not JSON serialisable: {type(x).__name__}")
