"""The Method protocol: what a continual-learning method plugs into the runner.

The runner owns the loop; a method decides what is trained and how. At each task boundary
the runner builds a :class:`TaskContext` and calls, in order::

    trainable, frozen = method.start_task(ctx)           # host side
    opt = method.optimizer(ctx)                          # once per run: the run's one chain
    state = opt.init(trainable)                          # every task: fresh moments, schedule
    state = method.init_task_state(state, ctx)           # optional: e.g. aj.set_bases
    # one jitted step for the whole run, for every batch of the task:
    #   loss = adapter.loss(method.effective_params(trainable, frozen), batch)
    #          + method.penalty(trainable, frozen)
    #   grads = d loss / d trainable;  updates, state = opt.update(grads, state, trainable)
    params, record = method.finish_task(trainable, frozen, ctx)   # host side

``optimizer`` is called once per run (with the first trained stage's context), so the
chain must serve every task: what changes per task lives in its state, set by the optional
``init_task_state(opt_state, ctx) -> opt_state`` (ASVD swaps in the boundary's bases with
``asvd_jax.set_bases``; the state is then the only copy of the bases). The train step is
jitted once per run and retraces only when the trees' structure or shapes change, so
``effective_params`` and ``penalty`` must read per-task arrays from ``frozen`` (not from
attributes set in ``start_task``, which a reused program would not see).

``record`` is saved (as JSON) beside the task-end checkpoint: rank plans, Fisher summaries,
LoRA ranks. It must be JSON-serialisable (numbers, strings, lists, dicts).

State carried across tasks (EWC's accumulated Fisher and anchors, O-LoRA's old A matrices)
must survive ``--resume``. A method that keeps such state defines two optional methods
(outside the protocol, looked up with ``getattr``)::

    def carry_state(self) -> Any: ...            # pytree of arrays (no strings), or None
    def restore_carry_state(self, tree) -> None: ...

The runner saves ``carry_state()`` in every task-end checkpoint and, on resume, calls
``restore_carry_state`` with the restored tree before the next ``start_task``. A fresh method
object cannot produce a restore template, so the tree is restored from the checkpoint's own
metadata: keep it a nested dict with string keys and array leaves (no ``None``, no tuples).
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any, Callable, Iterable, Protocol, runtime_checkable

import jax
import optax

if TYPE_CHECKING:  # the adapter lives with its model family; only its type is needed here
    from asvd_jax.models import ModelAdapter


@dataclasses.dataclass(frozen=True)
class TaskContext:
    """What a method sees at a task boundary (host side)."""

    index: int
    """0-based task index in the sequence."""
    num_tasks: int
    """Number of tasks in the sequence."""
    params: Any
    """Current model params (pytree: ``nnx.State`` or pure dict of arrays)."""
    targets: Any
    """``asvd_jax.select_targets(...)`` result for this model."""
    adapter: "ModelAdapter"
    """Model family glue (loss, evaluation, capture_fn)."""
    previous_batches: Callable[[], Iterable[dict]] | None
    """Previous task's data as a fresh iterable of batches (None at task 0)."""
    current_batches: Callable[[], Iterable[dict]]
    """This task's training batches as a fresh iterable (same rows and loss as the training
    step's; the runner pads them to the task's largest batch shapes when the adapter has
    ``widen_batch``, so a method's program jitted over them compiles once per task shape)."""
    rng: jax.Array
    """A key for this task's method-side randomness (LoRA init, sampling)."""


@runtime_checkable
class Method(Protocol):
    """A continual-learning method: ASVD, SeqFT, MTL, EWC, LoRA, O-LoRA, ablations."""

    name: str

    def start_task(self, ctx: TaskContext) -> tuple[Any, Any]:
        """Host side. Returns (trainable, frozen) pytrees for this task."""
        ...

    def effective_params(self, trainable: Any, frozen: Any) -> Any:
        """Traced. The full model params the loss uses (e.g. base + B@A for LoRA)."""
        ...

    def penalty(self, trainable: Any, frozen: Any) -> jax.Array:
        """Traced. Extra loss term (EWC quadratic, O-LoRA orthogonality); 0.0 if none."""
        ...

    def optimizer(self, ctx: TaskContext) -> optax.GradientTransformation:
        """The full optax chain, built once per run (ASVD: adamw then project_out_protected
        last, its bases set per task by ``init_task_state``)."""
        ...

    def finish_task(self, trainable: Any, frozen: Any, ctx: TaskContext) -> tuple[Any, dict]:
        """Host side. Returns (new model params, record dict saved with the task checkpoint:
        rank plan, fisher stats summary, lora ranks...)."""
        ...
