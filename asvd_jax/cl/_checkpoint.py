"""Run checkpoints with orbax: params, optimizer state (bases included), carry state, RNG.

Layout under ``<run_dir>/checkpoints/``::

    task-0002/            group-<name>/ orbax items + meta.json (task_index 2 finished)
    step-0002-000150/     mid-task: task 2, 150 micro-batches done
    latest.json           {"name": ...} of the newest committed checkpoint

A checkpoint counts only once its ``meta.json`` exists; it is written (temporary name, then
rename) after orbax has finished, and ``latest.json`` is replaced the same way after that,
so a run killed at any moment leaves the previous checkpoint intact and referenced.

Arrays are stored per group (``params``, ``opt_state``, ...) as a flat ``{index: leaf}``
dict in the template's leaf order and restored against a template: optax NamedTuples, nnx
``State`` containers and bases come back with their exact structure (orbax without a
template would return lists and dicts). Zero-size leaves (bases of rank 0) are not written;
the template recreates them. Strings never enter orbax (it rejects them): metadata, rank plans
and method records live in JSON beside the arrays.
"""

from __future__ import annotations

import json
import os
import shutil
from typing import Any, Mapping

import jax
import numpy as np


class CheckpointMismatch(ValueError):
    """A checkpoint does not fit the structure the run expects (different config or code)."""


def write_json_atomic(path: str, obj: Any) -> None:
    """Write JSON to ``path`` via a temporary file and a rename (never half-written)."""
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=2, default=_json_default)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


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


def _abstract(leaf: Any) -> Any:
    sharding = getattr(leaf, "sharding", None)
    return jax.ShapeDtypeStruct(np.shape(leaf), leaf.dtype, sharding=sharding)


class Checkpointer:
    """Save and restore named checkpoints of array groups under ``run_dir/checkpoints``."""

    def __init__(self, run_dir: str | os.PathLike):
        # orbax needs absolute paths.
        self.root = os.path.abspath(os.path.join(os.fspath(run_dir), "checkpoints"))
        os.makedirs(self.root, exist_ok=True)

    # -------------------------------------------------------------------------- saving
    def save(self, name: str, groups: Mapping[str, Any], meta: Mapping[str, Any],
             raw: Mapping[str, dict] | None = None) -> str:
        """Write ``groups`` ({group: pytree of arrays}) and ``meta`` as checkpoint ``name``.

        ``raw`` groups (nested dicts of arrays) are stored with their own structure and come
        back from :meth:`restore_raw` without a template (method carry state).
        """
        import orbax.checkpoint as ocp

        tree, counts = {}, {}
        raw = {g: v for g, v in (raw or {}).items() if v}
        for group, value in groups.items():
            leaves = jax.tree_util.tree_leaves(value)
            counts[group] = len(leaves)
            tree[group] = {f"{i:06d}": leaf for i, leaf in enumerate(leaves) if np.size(leaf) > 0}
            if not tree[group]:
                tree[group] = {"_empty": np.zeros((), np.int8)}
        path = os.path.join(self.root, name)
        if os.path.exists(path):
            shutil.rmtree(path)  # an uncommitted leftover of a killed run
        os.makedirs(path)
        ckpt = ocp.StandardCheckpointer()
        for group, value in tree.items():  # one item per group: any subset restores alone
            ckpt.save(os.path.join(path, f"group-{group}"), value, force=True)
        if raw:  # separate item: restored without a template, so it cannot share the tree
            ckpt.save(os.path.join(path, "raw"), raw, force=True)
        ckpt.wait_until_finished()
        ckpt.close()
        write_json_atomic(os.path.join(path, "meta.json"),
                          {**meta, "name": name, "leaf_counts": counts, "raw_groups": sorted(raw)})
        write_json_atomic(os.path.join(self.root, "latest.json"), {"name": name})
        return path

    def prune(self, prefix: str, keep: int) -> None:
        """Delete all but the newest ``keep`` committed checkpoints whose name starts with
        ``prefix`` (never the one ``latest.json`` points to)."""
        if keep <= 0:
            return
        latest = (self.latest() or {}).get("name")
        names = sorted(n for n in self.committed() if n.startswith(prefix))
        for n in names[:-keep]:
            if n != latest:
                shutil.rmtree(os.path.join(self.root, n), ignore_errors=True)

    def remove(self, prefix: str) -> None:
        """Delete every checkpoint whose name starts with ``prefix`` (committed or not),
        except the one ``latest.json`` points to."""
        latest = (self.latest() or {}).get("name")
        for n in os.listdir(self.root):
            if n.startswith(prefix) and n != latest:
                shutil.rmtree(os.path.join(self.root, n), ignore_errors=True)

    # ------------------------------------------------------------------------- reading
    def committed(self) -> list[str]:
        return sorted(
            n for n in os.listdir(self.root)
            if os.path.isfile(os.path.join(self.root, n, "meta.json"))
        )

    def latest(self) -> dict | None:
        """meta.json of the newest committed checkpoint, or None."""
        pointer = os.path.join(self.root, "latest.json")
        if not os.path.isfile(pointer):
            return None
        with open(pointer) as f:
            name = json.load(f)["name"]
        return self.meta(name)

    def meta(self, name: str) -> dict:
        path = os.path.join(self.root, name, "meta.json")
        if not os.path.isfile(path):
            raise CheckpointMismatch(f"{path}: missing (checkpoint {name!r} was never committed)")
        with open(path) as f:
            return json.load(f)

    def restore(self, name: str, templates: Mapping[str, Any]) -> dict[str, Any]:
        """Groups of checkpoint ``name`` rebuilt on ``templates`` (pytrees of arrays or
        ShapeDtypeStructs; shardings in the template are used for placement)."""
        import orbax.checkpoint as ocp

        meta = self.meta(name)
        counts = meta["leaf_counts"]
        path = os.path.join(self.root, name)
        target, treedefs, zero = {}, {}, {}
        for group, template in templates.items():
            if group not in counts:
                raise CheckpointMismatch(f"{path}: no group {group!r} (has {sorted(counts)})")
            leaves, treedefs[group] = jax.tree_util.tree_flatten(template)
            if len(leaves) != counts[group]:
                raise CheckpointMismatch(
                    f"{path}: group {group!r} has {counts[group]} arrays, the run expects "
                    f"{len(leaves)} (was the config or the model changed since?)"
                )
            target[group] = {f"{i:06d}": _abstract(l) for i, l in enumerate(leaves) if np.size(l) > 0}
            zero[group] = {i: l for i, l in enumerate(leaves) if np.size(l) == 0}
            if not target[group]:
                target[group] = {"_empty": jax.ShapeDtypeStruct((), np.int8)}
        ckpt = ocp.StandardCheckpointer()
        try:
            restored = {g: ckpt.restore(os.path.join(path, f"group-{g}"), t) for g, t in target.items()}
        except Exception as e:  # orbax raises several types for shape/structure mismatches
            raise CheckpointMismatch(f"{path}: cannot restore ({type(e).__name__}: {e})") from e
        finally:
            ckpt.close()
        out = {}
        for group in templates:
            n = counts[group]
            leaves = [
                zero[group][i] if i in zero[group] else restored[group][f"{i:06d}"]
                for i in range(n)
            ]
            out[group] = jax.tree_util.tree_unflatten(treedefs[group], leaves)
        return out

    def restore_raw(self, name: str, group: str) -> Any:
        """A ``raw`` group as saved (nested dicts of arrays), or None if it was empty."""
        import orbax.checkpoint as ocp

        if group not in self.meta(name).get("raw_groups", []):
            return None
        ckpt = ocp.StandardCheckpointer()
        try:
            restored = ckpt.restore(os.path.join(self.root, name, "raw"))
        finally:
            ckpt.close()
        return restored[group]
