"""Reading (and deleting) checkpoints of the layout before ``CheckpointManager``.

Run directories written by earlier versions hold ``checkpoints/<name>/`` folders
(``task-0002``, ``step-0002-000150``), each with one orbax item per group
(``group-<name>``), an optional ``raw`` item and a ``meta.json`` that marks it committed, plus
``latest.json``. ``Checkpointer`` reads them through this module so such a run still
resumes; everything new is written through ``CheckpointManager``.
"""

from __future__ import annotations

import json
import os
import shutil
from typing import Any, Callable


class LegacyCheckpoints:
    def __init__(self, root: str):
        self.root = root

    def committed(self) -> list[str]:
        if not os.path.isdir(self.root):
            return []
        return sorted(n for n in os.listdir(self.root)
                      if os.path.isfile(os.path.join(self.root, n, "meta.json")))

    def has(self, name: str) -> bool:
        return os.path.isfile(os.path.join(self.root, name, "meta.json"))

    def meta(self, name: str) -> dict:
        with open(os.path.join(self.root, name, "meta.json")) as f:
            return json.load(f)

    def restore_groups(self, name: str, target: dict[str, Any],
                       on_error: Callable[[Exception], Exception]) -> dict[str, Any]:
        """{group: flat dict} restored against ``target`` ({group: flat abstract dict})."""
        import orbax.checkpoint as ocp

        path = os.path.join(self.root, name)
        ckpt = ocp.StandardCheckpointer()
        try:
            return {g: ckpt.restore(os.path.join(path, f"group-{g}"), t) for g, t in target.items()}
        except Exception as e:  # orbax raises several types for shape/structure mismatches
            raise on_error(e) from e
        finally:
            ckpt.close()

    def restore_raw(self, name: str) -> dict:
        import orbax.checkpoint as ocp

        ckpt = ocp.StandardCheckpointer()
        try:
            return ckpt.restore(os.path.join(self.root, name, "raw"))
        finally:
            ckpt.close()

    def delete(self, name: str) -> None:
        shutil.rmtree(os.path.join(self.root, name), ignore_errors=True)
