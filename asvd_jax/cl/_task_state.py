"""What one run's optimizer state holds per task: the schedule's length and the bases.

The runner builds one optax chain per run and re-initialises its state at each task boundary
(fresh AdamW moments and schedule count, as a per-task chain had). Two things differ from
task to task and live in that state, so the chain and the jitted step stay the same:

* the learning-rate schedule's length (a task's optimizer steps): ``per_task_length`` keeps
  it as static pytree data beside the wrapped state, ``set_task_length`` sets it. The update
  then runs exactly the chain ``factory(length)`` would (same program, same numbers); a new
  length changes the state's tree structure, so the jitted step retraces once per distinct
  length, never for tasks of equal length.
* the protected bases: ``aj.set_bases`` swaps them in (``project_out_protected``'s state);
  ``state_bases`` reads them back, so the optimizer state holds the only copy.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import optax

import asvd_jax as aj
from asvd_jax._transform import ProjectOutProtectedState, pure_bases


@jax.tree_util.register_pytree_node_class
class TaskLengthState:
    """The wrapped chain's state (children) and this task's schedule length (static)."""

    def __init__(self, inner: Any, length: int | None):
        self.inner = inner
        self.length = length

    def tree_flatten(self):
        return (self.inner,), self.length

    @classmethod
    def tree_unflatten(cls, length, children):
        return cls(children[0], length)

    def __repr__(self) -> str:
        return f"TaskLengthState(length={self.length}, inner={self.inner!r})"


_INIT_LENGTH = 1 << 20


def per_task_length(factory: Callable[[int], optax.GradientTransformation]) -> optax.GradientTransformation:
    """One chain for a run whose tasks differ only in the schedule's length.

    ``factory(n)`` builds the chain for a task of ``n`` optimizer steps; its state must not
    depend on ``n`` (a schedule reads ``n`` only in ``update``, e.g. ``optax.adamw`` with a
    decaying schedule). Call ``set_task_length(state, n)`` after ``init``.
    """

    def init_fn(params):
        # Any valid length builds the same state; a long one satisfies every schedule's checks.
        return TaskLengthState(factory(_INIT_LENGTH).init(params), None)

    def update_fn(updates, state, params=None):
        if state.length is None:
            raise ValueError("per_task_length: the state has no task length; call "
                             "set_task_length(opt_state, optimizer_steps) after init")
        updates, inner = factory(state.length).update(updates, state.inner, params)
        return updates, TaskLengthState(inner, state.length)

    return optax.GradientTransformation(init_fn, update_fn)


def set_task_length(opt_state: Any, length: int) -> Any:
    """``opt_state`` with the length of every ``TaskLengthState`` inside it set (a no-op for
    states without one, e.g. a constant learning rate or a research method's own chain)."""
    if int(length) < 0:
        raise ValueError(f"set_task_length: length must be >= 0, got {length}")
    return jax.tree.map(lambda n: TaskLengthState(n.inner, int(length)) if isinstance(n, TaskLengthState)
                        else n, opt_state, is_leaf=lambda n: isinstance(n, TaskLengthState))


def state_bases(opt_state: Any) -> Any:
    """The bases of the first ``ProjectOutProtectedState`` inside ``opt_state``; None when
    there is none or it protects nothing (every leaf None, e.g. before the first boundary)."""
    found = []
    jax.tree.map(lambda n: found.append(n.bases) if isinstance(n, ProjectOutProtectedState) else None,
                 opt_state, is_leaf=lambda n: isinstance(n, ProjectOutProtectedState))
    if not found:
        return None
    leaves = jax.tree.leaves(found[0], is_leaf=lambda x: isinstance(x, aj.SubspaceBasis))
    return found[0] if any(isinstance(x, aj.SubspaceBasis) for x in leaves) else None


def empty_bases(targets: Any) -> Any:
    """Bases that protect nothing, in the structure of the bases built for ``targets``
    (``compute_bases`` / ``bases_from_svds``: the targets' tree, Variables unwrapped), so
    ``aj.set_bases`` can later swap real ones into a state initialised with them."""
    leaves, treedef = aj.flatten_with_paths(
        targets, is_leaf=lambda x: x is None or isinstance(x, aj.MatrixSpec))
    return pure_bases(treedef.unflatten([None] * len(leaves)))


def hold_bases(targets: Any) -> optax.GradientTransformation:
    """Updates unchanged; the state holds bases like ``project_out_protected``'s (``set_bases``
    swaps them, ``state_bases`` reads them). For the ``projection: none`` ablation, whose
    leakage record measures against bases it does not project out."""
    inner = aj.project_out_protected(empty_bases(targets))

    def update_fn(updates, state, params=None):
        del params
        return updates, state

    return optax.GradientTransformation(inner.init, update_fn)


def untracked(opt_state: Any) -> Any:
    """``opt_state`` with ``track_applied_updates``' running sums dropped (None leaves: the
    tracker then sums nothing). Used while nothing is protected (ASVD's first task), where
    the sum has no reader and would cost a float32 copy of every target."""
    from asvd_jax._diagnostics import TrackAppliedUpdatesState

    return jax.tree.map(
        lambda n: TrackAppliedUpdatesState(jax.tree.map(lambda _: None, n.total))
        if isinstance(n, TrackAppliedUpdatesState) else n,
        opt_state, is_leaf=lambda n: isinstance(n, TrackAppliedUpdatesState))
