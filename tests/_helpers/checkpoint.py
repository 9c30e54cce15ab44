"""Checkpoints in the layout of versions before CheckpointManager (the compatibility tests)."""

import json
import os

import jax


def save_legacy(root, name, groups, meta, raw=None):
    """A checkpoint as versions before CheckpointManager wrote it: checkpoints/<name>/
    group-<g>/ (StandardCheckpointer, flat {index: leaf}), raw/, meta.json, latest.json."""
    import orbax.checkpoint as ocp

    path = os.path.join(root, name)
    os.makedirs(path)
    ckpt = ocp.StandardCheckpointer()
    counts = {}
    for g, v in groups.items():
        leaves = jax.tree_util.tree_leaves(v)
        counts[g] = len(leaves)
        ckpt.save(os.path.join(path, f"group-{g}"), {f"{i:06d}": l for i, l in enumerate(leaves)})
    if raw:
        ckpt.save(os.path.join(path, "raw"), raw)
    ckpt.wait_until_finished()
    ckpt.close()
    with open(os.path.join(path, "meta.json"), "w") as f:
        json.dump({**meta, "name": name, "leaf_counts": counts, "raw_groups": sorted(raw or {})}, f)
    with open(os.path.join(root, "latest.json"), "w") as f:
        json.dump({"name": name}, f)
