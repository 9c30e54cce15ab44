"""Reading and writing Hugging Face checkpoint folders without torch.

A folder holds ``config.json`` and either ``model.safetensors`` or a sharded set indexed by
``model.safetensors.index.json``. Every error names the file and, where it applies, the tensor.
"""

from __future__ import annotations

import json
import os
from typing import Mapping

import numpy as np


class CheckpointError(ValueError):
    """A checkpoint file is missing, unreadable or disagrees with the model config."""


def read_config(folder: str | os.PathLike) -> dict:
    path = os.path.join(folder, "config.json")
    if not os.path.isfile(path):
        raise CheckpointError(f"{path}: missing (a Hugging Face model folder needs config.json)")
    try:
        with open(path) as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{path}: not valid JSON ({e})") from e


def read_safetensors(folder: str | os.PathLike) -> dict[str, np.ndarray]:
    """All tensors of a folder as numpy arrays ({HF name: array}), single file or sharded."""
    from safetensors.numpy import load_file

    single = os.path.join(folder, "model.safetensors")
    index = os.path.join(folder, "model.safetensors.index.json")
    if os.path.isfile(single):
        files = [single]
    elif os.path.isfile(index):
        with open(index) as f:
            weight_map = json.load(f).get("weight_map")
        if not isinstance(weight_map, dict):
            raise CheckpointError(f"{index}: no 'weight_map' object")
        files = [os.path.join(folder, name) for name in sorted(set(weight_map.values()))]
        for path in files:
            if not os.path.isfile(path):
                raise CheckpointError(f"{path}: missing (listed in {index})")
    else:
        raise CheckpointError(
            f"{folder}: no model.safetensors or model.safetensors.index.json found"
        )
    tensors: dict[str, np.ndarray] = {}
    for path in files:
        try:
            tensors.update(load_file(path))
        except Exception as e:  # safetensors raises its own error types
            raise CheckpointError(f"{path}: cannot read safetensors ({e})") from e
    return tensors


def take(tensors: Mapping[str, np.ndarray], name: str, shape: tuple[int, ...], source: str) -> np.ndarray:
    """tensors[name] as float32 after checking its shape against the config's."""
    if name not in tensors:
        raise CheckpointError(f"{source}: tensor {name!r} is missing")
    arr = np.asarray(tensors[name])
    if tuple(arr.shape) != tuple(shape):
        raise CheckpointError(
            f"{source}: tensor {name!r} has shape {tuple(arr.shape)}, the config implies {tuple(shape)}"
        )
    return arr.astype(np.float32) if arr.dtype != np.float32 else arr


def write_safetensors(folder: str | os.PathLike, tensors: Mapping[str, np.ndarray], config: dict) -> None:
    """Write config.json + model.safetensors atomically (temporary names, then rename)."""
    from safetensors.numpy import save_file

    os.makedirs(folder, exist_ok=True)
    arrays = {k: np.ascontiguousarray(np.asarray(v)) for k, v in tensors.items()}
    tmp_model = os.path.join(folder, ".model.safetensors.tmp")
    tmp_config = os.path.join(folder, ".config.json.tmp")
    save_file(arrays, tmp_model, metadata={"format": "pt"})
    _as_umask_allows(tmp_model)
    with open(tmp_config, "w") as f:
        json.dump(config, f, indent=2)
    os.replace(tmp_model, os.path.join(folder, "model.safetensors"))
    os.replace(tmp_config, os.path.join(folder, "config.json"))


def _as_umask_allows(path: str) -> None:
    """chmod ``path`` to 0666 minus the umask: what ``open()`` would have given it (the
    temporary-file writes create 0600 files, unreadable to the others on a shared machine)."""
    mask = os.umask(0)
    os.umask(mask)
    os.chmod(path, 0o666 & ~mask)


def params_to_hf(model, hf_name) -> dict[str, np.ndarray]:
    """{HF name: float32 array} of every nnx Param of ``model``.

    ``hf_name(path) -> (name, transposed)`` maps our parameter path to the checkpoint's tensor
    name and says whether the kernel is stored transposed there (PyTorch Linear is (out, in)).
    """
    import jax.numpy as jnp
    from flax import nnx

    from asvd_jax._paths import flatten_with_paths

    leaves, _ = flatten_with_paths(nnx.state(model, nnx.Param))
    out = {}
    for path, leaf in leaves:
        name, transposed = hf_name(path)
        arr = np.asarray(jnp.asarray(leaf, jnp.float32))
        out[name] = arr.T if transposed else arr
    return out


def export_folder(model, folder: str | os.PathLike, tensors: Mapping[str, np.ndarray], tokenizer=None) -> None:
    """config.json + model.safetensors (+ tokenizer.json) of ``model`` in the HF layout."""
    write_safetensors(folder, tensors, model.config.to_hf_dict())
    if tokenizer is not None:
        tokenizer.save(folder)


def params_from_hf(build, hf_name, tensors: Mapping[str, np.ndarray], source: str, param_dtype=None):
    """The nnx model ``build()`` makes, every parameter taken from HF ``tensors``.

    ``build`` constructs the model (run abstractly: nothing is randomly initialised);
    ``hf_name(path) -> (name, transposed)`` as for ``params_to_hf``. Every tensor's shape is
    checked against the model's (``take``); a missing one is a CheckpointError naming it.
    """
    import jax
    import jax.numpy as jnp
    from flax import nnx

    from asvd_jax._paths import flatten_with_paths
    from asvd_jax.models._capture import assign_capture_names

    graphdef, state = nnx.split(nnx.eval_shape(build))
    leaves, treedef = flatten_with_paths(state)
    values = []
    for path, leaf in leaves:
        name, transposed = hf_name(path)
        arr = take(tensors, name, tuple(leaf.shape[::-1]) if transposed else tuple(leaf.shape), source)
        values.append(jnp.asarray(arr.T if transposed else arr, param_dtype or leaf.dtype))
    model = nnx.merge(graphdef, jax.tree_util.tree_unflatten(treedef, values))
    assign_capture_names(model)
    return model
