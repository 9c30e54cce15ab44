"""Activation capture: how a model hands the inputs of its target matrices to a caller.

The protocol, shared by every model here and open to any user model:

* Each capturable linear layer has a ``capture_name``: the parameter path of its kernel
  (``layers/3/attn/q_proj/kernel``), the same string that target patterns and rank plans use.
* In its ``__call__`` it calls ``record(self.capture_name, x)`` with the input it is about to
  multiply by the kernel, shaped ``(batch, seq, *in_dims)``.
* A caller wraps a forward in ``with capture() as acts:``; afterwards ``acts`` maps each
  capture name to that input. Called inside ``jax.jit`` the values are tracers that the jitted
  function returns or reduces (rank statistics reduce them in the same jit, so nothing is kept
  per batch).

Outside a ``capture()`` block ``record`` is a Python-level no-op at trace time, so the normal
forward's compiled program and speed are unchanged.

A user model that is not built from these layers only has to produce the same thing: a dict
``{kernel path: input activations (batch, seq, *in_dims)}`` plus the token mask.
"""

from __future__ import annotations

import contextlib
from typing import Any, Iterator

_STACK: list[dict[str, Any]] = []


def record(name: str | None, x: Any) -> None:
    """Hand ``x`` (a layer's input) to the innermost active ``capture()`` block, if any."""
    if _STACK and name is not None:
        if name in _STACK[-1]:
            raise ValueError(
                f"capture: layer {name!r} recorded twice in one forward; capture names must be "
                "unique (call assign_capture_names on the model after building it)"
            )
        _STACK[-1][name] = x


@contextlib.contextmanager
def capture() -> Iterator[dict[str, Any]]:
    """Collect ``{capture name: input}`` from every layer that calls ``record`` in the block."""
    acts: dict[str, Any] = {}
    _STACK.append(acts)
    try:
        yield acts
    finally:
        _STACK.pop()


def is_capturing() -> bool:
    return bool(_STACK)


def assign_capture_names(model: Any, param_name: str = "kernel") -> list[str]:
    """Give every module with a ``capture_name`` attribute the path of its kernel parameter.

    Walks the nnx graph so names equal the parameter paths of ``nnx.state(model, nnx.Param)``.
    Returns the names in graph order.
    """
    from flax import nnx  # models are the only place flax is needed

    names = []
    for path, node in nnx.iter_graph(model):
        if isinstance(node, nnx.Module) and hasattr(node, "capture_name"):
            name = "/".join(str(p) for p in (*path, param_name))
            node.capture_name = name
            names.append(name)
    return names
