"""Parameter paths as strings, the names that target patterns and rank plans use.

A leaf's path is its pytree key path joined with "/": ``layers/3/attn/q_proj/kernel``.
flax.nnx ``State`` trees end every path in the Variable's ``.value`` attribute; that suffix
is dropped so the same pattern matches a pure dict and an ``nnx.State`` of the same model.
"""

from __future__ import annotations

from typing import Any

import jax


def _key_str(key: Any) -> str:
    if isinstance(key, jax.tree_util.DictKey):
        return str(key.key)
    if isinstance(key, jax.tree_util.SequenceKey):
        return str(key.idx)
    if isinstance(key, jax.tree_util.GetAttrKey):
        return key.name
    if isinstance(key, jax.tree_util.FlattenedIndexKey):
        return str(key.key)
    return str(key)


def path_str(keypath: tuple) -> str:
    """'/'-joined string of a jax key path, without nnx's trailing ``value`` attribute."""
    parts = [_key_str(k) for k in keypath]
    if keypath and isinstance(keypath[-1], jax.tree_util.GetAttrKey) and parts[-1] == "value":
        parts = parts[:-1]
    return "/".join(parts)


def flatten_with_paths(tree: Any, is_leaf=None) -> tuple[list[tuple[str, Any]], Any]:
    """[(path string, leaf)] in leaf order, and the treedef."""
    leaves, treedef = jax.tree_util.tree_flatten_with_path(tree, is_leaf=is_leaf)
    return [(path_str(kp), leaf) for kp, leaf in leaves], treedef
