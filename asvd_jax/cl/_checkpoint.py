"""Run checkpoints through ``orbax.checkpoint.CheckpointManager``: params, optimizer state
(bases included), carry state, RNG seed and the run's metadata.

Layout under ``<run_dir>/checkpoints/``::

    tasks/2/              task-end checkpoint of stage 2 ("task-0002")
    steps/2000150/        mid-task: stage 2, 150 micro-batches done ("step-0002-000150")
    latest.json           {"name": ...}: the newest checkpoint, for people (not read back)

Two managers, one per kind, so ``checkpoint.keep_tasks`` and ``checkpoint.keep_steps`` are
their ``max_to_keep``. A step number is ``stage * 1_000_000 + micro-batch`` for mid-task
checkpoints and the stage for task ends. Each checkpoint is one orbax step with one item per
array group (``group_params``, ``group_opt_state``, ...), an optional ``raw`` item and a
``meta`` JSON item; the manager writes it into a temporary folder and renames it when
complete, so a run killed at any moment leaves the previous checkpoints intact and the
half-written one invisible (and cleaned up at the next start). Saves are waited for: a
checkpoint is committed when ``save`` returns.

Arrays are stored per group as a flat ``{index: leaf}`` dict in the template's leaf order and
restored against a template: optax NamedTuples, nnx ``State`` containers and bases come back
with their exact structure (orbax without a template would return lists and dicts).
Zero-size leaves (bases of rank 0) are not written; the template recreates them. Strings
never enter the array items (orbax rejects them): metadata, rank plans and method records
live in the ``meta`` item.

Run directories of earlier versions (``checkpoints/task-0002/meta.json`` folders) are read
through ``_checkpoint_legacy`` and still resume; new checkpoints go to the managers.
"""

from __future__ import annotations

import json
import os
import re
from typing import Any, Mapping

import jax
import numpy as np

from asvd_jax._files import _json_default, write_json_atomic  # noqa: F401  (write_json_atomic: the trainer imports it from here)
from asvd_jax.cl._checkpoint_legacy import LegacyCheckpoints

_STEP_SCALE = 1_000_000  # micro-batches per stage in a mid-task step number
_KINDS = {"task": "tasks", "step": "steps"}


class CheckpointMismatch(ValueError):
    """A checkpoint does not fit the structure the run expects (different config or code)."""


def _abstract(leaf: Any) -> Any:
    sharding = getattr(leaf, "sharding", None)
    return jax.ShapeDtypeStruct(np.shape(leaf), leaf.dtype, sharding=sharding)



def _parse(name: str) -> tuple[str, int]:
    """``task-0002`` -> ("task", 2); ``step-0002-000150`` -> ("step", 2_000_150)."""
    m = re.fullmatch(r"task-(\d+)", name)
    if m:
        return "task", int(m.group(1))
    m = re.fullmatch(r"step-(\d+)-(\d+)", name)
    if m and int(m.group(2)) < _STEP_SCALE:
        return "step", int(m.group(1)) * _STEP_SCALE + int(m.group(2))
    raise ValueError(f"checkpoint name {name!r}: expected task-NNNN or step-NNNN-NNNNNN")


def _name(kind: str, step: int) -> str:
    if kind == "task":
        return f"task-{step:04d}"
    return f"step-{step // _STEP_SCALE:04d}-{step % _STEP_SCALE:06d}"


def _order(name: str) -> tuple[int, int, int]:
    """Run order: stage s's mid-task checkpoints, then its task end, then stage s + 1's."""
    kind, step = _parse(name)
    if kind == "task":
        return step, 1, 0
    return step // _STEP_SCALE, 0, step % _STEP_SCALE


def _flat_tree(value: Any) -> tuple[dict, int]:
    leaves = jax.tree_util.tree_leaves(value)
    flat = {f"{i:06d}": leaf for i, leaf in enumerate(leaves) if np.size(leaf) > 0}
    return (flat or {"_empty": np.zeros((), np.int8)}), len(leaves)


class Checkpointer:
    """Save and restore named checkpoints of array groups under ``run_dir/checkpoints``.

    ``keep_tasks`` / ``keep_steps``: checkpoints of each kind the managers keep (0 = all);
    :meth:`prune` does the same on demand and never deletes the newest checkpoint.
    """

    def __init__(self, run_dir: str | os.PathLike, keep_tasks: int = 0, keep_steps: int = 0):
        # orbax needs absolute paths.
        self.root = os.path.abspath(os.path.join(os.fspath(run_dir), "checkpoints"))
        os.makedirs(self.root, exist_ok=True)
        self._keep = {"task": keep_tasks, "step": keep_steps}
        self._managers: dict[str, Any] = {}
        self._legacy = LegacyCheckpoints(self.root)

    def _manager(self, kind: str):
        import orbax.checkpoint as ocp

        if kind not in self._managers:
            options = ocp.CheckpointManagerOptions(
                max_to_keep=self._keep[kind] or None, create=True,
                # Synchronous: the runner continues (or dies) only after a commit.
                enable_async_checkpointing=False, cleanup_tmp_directories=True)
            self._managers[kind] = ocp.CheckpointManager(os.path.join(self.root, _KINDS[kind]),
                                                         options=options)
        return self._managers[kind]

    def _in_manager(self, name: str) -> bool:
        kind, step = _parse(name)
        return step in self._manager(kind).all_steps()

    def close(self) -> None:
        for m in self._managers.values():
            m.close()
        self._managers = {}

    # -------------------------------------------------------------------------- saving
    def save(self, name: str, groups: Mapping[str, Any], meta: Mapping[str, Any],
             raw: Mapping[str, dict] | None = None) -> str:
        """Write ``groups`` ({group: pytree of arrays}) and ``meta`` as checkpoint ``name``.

        ``raw`` groups (nested dicts of arrays) are stored with their own structure and come
        back from :meth:`restore_raw` without a template (method carry state).
        """
        import orbax.checkpoint as ocp

        kind, step = _parse(name)
        items, counts = {}, {}
        for group, value in groups.items():  # one item per group: any subset restores alone
            items[f"group_{group}"], counts[group] = _flat_tree(value)
        raw = {g: v for g, v in (raw or {}).items() if v}
        full_meta = {**meta, "name": name, "leaf_counts": counts, "raw_groups": sorted(raw)}
        args = {k: ocp.args.StandardSave(v) for k, v in items.items()}
        if raw:  # separate item: restored without a template, so it cannot share the tree
            args["raw"] = ocp.args.StandardSave(raw)
        # Through JSON first: numpy scalars and tuples of the method records become plain.
        args["meta"] = ocp.args.JsonSave(json.loads(json.dumps(full_meta, default=_json_default)))
        mngr = self._manager(kind)
        if step in mngr.all_steps():  # left by an earlier segment of this run that was resumed
            mngr.delete(step)
        if self._legacy.has(name):
            self._legacy.delete(name)
        mngr.save(step, args=ocp.args.Composite(**args), force=True)
        mngr.wait_until_finished()
        write_json_atomic(os.path.join(self.root, "latest.json"), {"name": name})
        return os.path.join(self.root, _KINDS[kind], str(step))

    def _delete(self, name: str) -> None:
        if self._in_manager(name):
            kind, step = _parse(name)
            self._manager(kind).delete(step)
        if self._legacy.has(name):
            self._legacy.delete(name)

    def prune(self, prefix: str, keep: int) -> None:
        """Delete all but the newest ``keep`` committed checkpoints whose name starts with
        ``prefix`` (never the newest checkpoint of the run)."""
        if keep <= 0:
            return
        latest = (self.latest() or {}).get("name")
        names = sorted((n for n in self.committed() if n.startswith(prefix)), key=_order)
        for n in names[:-keep]:
            if n != latest:
                self._delete(n)

    def remove(self, prefix: str) -> None:
        """Delete every checkpoint whose name starts with ``prefix``, except the newest."""
        latest = (self.latest() or {}).get("name")
        for n in self.committed():
            if n.startswith(prefix) and n != latest:
                self._delete(n)

    # ------------------------------------------------------------------------- reading
    def committed(self) -> list[str]:
        names = {_name(kind, s) for kind in _KINDS for s in self._manager(kind).all_steps()}
        for n in self._legacy.committed():
            try:
                _parse(n)
            except ValueError:
                continue
            names.add(n)
        return sorted(names)

    def latest(self) -> dict | None:
        """Metadata of the newest committed checkpoint (in run order), or None."""
        names = self.committed()
        return self.meta(max(names, key=_order)) if names else None

    def meta(self, name: str) -> dict:
        import orbax.checkpoint as ocp

        if self._in_manager(name):
            kind, step = _parse(name)
            out = self._manager(kind).restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))
            return dict(out["meta"])
        if self._legacy.has(name):
            return self._legacy.meta(name)
        raise CheckpointMismatch(f"{os.path.join(self.root, name)}: missing (checkpoint {name!r} "
                                 "was never committed)")

    def restore(self, name: str, templates: Mapping[str, Any]) -> dict[str, Any]:
        """Groups of checkpoint ``name`` rebuilt on ``templates`` (pytrees of arrays or
        ShapeDtypeStructs; shardings in the template are used for placement)."""
        import orbax.checkpoint as ocp

        meta = self.meta(name)
        counts = meta["leaf_counts"]
        where = os.path.join(self.root, name)
        target, treedefs, zero = {}, {}, {}
        for group, template in templates.items():
            if group not in counts:
                raise CheckpointMismatch(f"{where}: no group {group!r} (has {sorted(counts)})")
            leaves, treedefs[group] = jax.tree_util.tree_flatten(template)
            if len(leaves) != counts[group]:
                raise CheckpointMismatch(
                    f"{where}: group {group!r} has {counts[group]} arrays, the run expects "
                    f"{len(leaves)} (was the config or the model changed since?)"
                )
            target[group] = {f"{i:06d}": _abstract(l) for i, l in enumerate(leaves) if np.size(l) > 0}
            zero[group] = {i: l for i, l in enumerate(leaves) if np.size(l) == 0}
            if not target[group]:
                target[group] = {"_empty": jax.ShapeDtypeStruct((), np.int8)}

        def mismatch(e: Exception) -> Exception:
            return CheckpointMismatch(f"{where}: cannot restore ({type(e).__name__}: {e})")

        if self._in_manager(name):
            kind, step = _parse(name)
            args = ocp.args.Composite(**{f"group_{g}": ocp.args.StandardRestore(t) for g, t in target.items()})
            try:
                out = self._manager(kind).restore(step, args=args)
            except Exception as e:  # orbax raises several types for shape/structure mismatches
                raise mismatch(e) from e
            restored = {g: out[f"group_{g}"] for g in target}
        else:
            restored = self._legacy.restore_groups(name, target, mismatch)
        result = {}
        for group in templates:
            leaves = [zero[group][i] if i in zero[group] else restored[group][f"{i:06d}"]
                      for i in range(counts[group])]
            result[group] = jax.tree_util.tree_unflatten(treedefs[group], leaves)
        return result

    def restore_raw(self, name: str, group: str) -> Any:
        """A ``raw`` group as saved (nested dicts of arrays), or None if it was empty."""
        import orbax.checkpoint as ocp

        if group not in self.meta(name).get("raw_groups", []):
            return None
        if self._in_manager(name):
            kind, step = _parse(name)
            out = self._manager(kind).restore(step, args=ocp.args.Composite(raw=ocp.args.StandardRestore()))
            return out["raw"][group]
        return self._legacy.restore_raw(name)[group]
