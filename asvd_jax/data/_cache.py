"""The on-disk cache of built tasks: one folder per build, JSONL per task, written atomically.

Layout of ``<data_dir>/<key>/``::

    manifest.json      {"format": 1, "fingerprint": sha256, "tasks": [names], "config": {...}}
    <task>.jsonl       line 1: {"name", "instruction", "options"}; then one
                       {"split", "text", "label"} per example, splits in train/dev/test order

The folder is filled under a temporary name beside it and renamed into place (a single
``rename`` on one file system), so a build that is interrupted leaves no folder under the
final name, and readers never see a half-written one. A folder whose contents no longer
hash to the manifest's fingerprint is reported, not silently used.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable, Mapping

from asvd_jax.data._tasks import SPLITS, Example, Task, suite_fingerprint

FORMAT_VERSION = 1
MANIFEST = "manifest.json"


def default_data_dir() -> Path:
    """``$ASVD_JAX_DATA_DIR``, else ``$XDG_CACHE_HOME/asvd_jax/data`` (``~/.cache`` by default)."""
    env = os.environ.get("ASVD_JAX_DATA_DIR")
    if env:
        return Path(env)
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(cache) / "asvd_jax" / "data"


def write_tasks(folder: Path, tasks: Mapping[str, Task], config: Mapping) -> Path:
    """Write ``tasks`` to ``folder`` atomically; returns ``folder``.

    If another process finished the same folder first, its copy is kept (same key, same data)
    and ours is discarded.
    """
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.partial-", dir=folder.parent))
    try:
        for name, task in tasks.items():
            with open(tmp / f"{name}.jsonl", "w", encoding="utf-8", newline="\n") as f:
                header = {"name": task.name, "instruction": task.instruction, "options": list(task.options)}
                f.write(json.dumps(header, ensure_ascii=False) + "\n")
                for split in SPLITS:
                    for ex in task.split(split):
                        row = {"split": split, "text": ex.text, "label": ex.label}
                        f.write(json.dumps(row, ensure_ascii=False) + "\n")
                f.flush()
                os.fsync(f.fileno())
        manifest = {
            "format": FORMAT_VERSION,
            "fingerprint": suite_fingerprint(tasks),
            "tasks": list(tasks),
            "config": dict(config),
        }
        with open(tmp / MANIFEST, "w", encoding="utf-8") as f:
            json.dump(manifest, f, ensure_ascii=False, indent=1, sort_keys=True)
            f.flush()
            os.fsync(f.fileno())
        # mkdtemp makes the folder private (0700); the cache is meant to be shared like any other.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o777 & ~umask)
        try:
            os.rename(tmp, folder)
        except OSError:
            if not (folder / MANIFEST).is_file():
                raise
            # Lost a race against an identical build: keep the finished one.
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return folder


def load_or_build(folder: Path, build: Callable[[], Mapping[str, Task]], config: Mapping,
                  rebuild: bool = False) -> dict[str, Task]:
    """The tasks cached in ``folder``, or ``build()`` written there when it does not exist.

    ``rebuild=True`` builds even when the folder exists and checks the result against the
    cached copy (a ValueError if they differ: the sources changed). ``config`` goes into the
    manifest of a new folder.
    """
    folder = Path(folder)
    if folder.is_dir() and not rebuild:
        return read_tasks(folder)
    tasks = dict(build())
    if folder.is_dir():
        cached = read_tasks(folder)
        if cached != tasks:
            raise ValueError(f"{folder}: the rebuilt suite differs from the cached one; the asset "
                             f"packages changed? Delete the folder to replace it")
        return cached
    write_tasks(folder, tasks, config)
    return tasks


def _read_jsonl_task(path: Path) -> Task:
    header = None
    splits: dict[str, list[Example]] = {s: [] for s in SPLITS}
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise ValueError(f"{path}:{lineno}: not valid JSON ({err.msg})") from None
            if header is None:
                header = row
                continue
            if not isinstance(row, dict) or row.get("split") not in SPLITS or "text" not in row or "label" not in row:
                raise ValueError(f"{path}:{lineno}: expected {{'split', 'text', 'label'}}, got {line[:80]!r}")
            splits[row["split"]].append(Example(row["text"], row["label"]))
    if not isinstance(header, dict) or not {"name", "instruction", "options"} <= set(header):
        raise ValueError(f"{path}:1: missing the task header {{'name', 'instruction', 'options'}}")
    return Task(header["name"], header["instruction"], tuple(header["options"]), **splits)


def read_tasks(folder: Path) -> dict[str, Task]:
    """Tasks of a cache folder, in the manifest's order, checked against its fingerprint."""
    folder = Path(folder)
    manifest_path = folder / MANIFEST
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise ValueError(f"{manifest_path}: unreadable cache manifest ({err})") from None
    if manifest.get("format") != FORMAT_VERSION:
        raise ValueError(f"{manifest_path}: cache format {manifest.get('format')!r}, expected {FORMAT_VERSION}")
    tasks = {}
    for name in manifest["tasks"]:
        path = folder / f"{name}.jsonl"
        if not path.is_file():
            raise DataCacheError(f"{path}: listed in {manifest_path} but missing")
        tasks[name] = _read_jsonl_task(path)
    if suite_fingerprint(tasks) != manifest["fingerprint"]:
        raise DataCacheError(
            f"{folder}: contents do not match the fingerprint in {MANIFEST} (edited or damaged); "
            f"delete the folder to rebuild it"
        )
    return tasks


class DataCacheError(ValueError):
    """A cache folder that exists but cannot be trusted."""
