"""Generate the notebooks from their reviewable sources: ``python notebooks/_build.py``.

Each ``notebooks/_sources/NN_name.py`` is a Python file in the "percent" cell format: a line
``# %%`` starts a code cell, ``# %% [markdown]`` a markdown cell (its lines lose the leading
``# ``), and ``# %% tags=["parameters"]`` a code cell tagged as the parameter cell (the one a
runner such as papermill overrides). The sources run as plain scripts too. The generated
``notebooks/NN_name.ipynb`` hold no outputs; ``--check`` exits 1 when one is out of date.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import nbformat

HERE = Path(__file__).resolve().parent
SOURCES = HERE / "_sources"
_HEADER = re.compile(r"^# %%(?P<rest>.*)$")
_METADATA = {
    "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
    "language_info": {"name": "python"},
}


def _cell(kind: str, tags: list[str], lines: list[str]):
    while lines and not lines[-1].strip():
        lines.pop()
    while lines and not lines[0].strip():
        lines.pop(0)
    if kind == "markdown":
        text = "\n".join(line[2:] if line.startswith("# ") else line.lstrip("#") for line in lines)
        return nbformat.v4.new_markdown_cell(text)
    cell = nbformat.v4.new_code_cell("\n".join(lines))
    if tags:
        cell.metadata["tags"] = tags
    return cell


def parse(source: str, name: str = "source") -> nbformat.NotebookNode:
    """The notebook (no outputs) described by a percent-format source text."""
    cells, kind, tags, lines = [], None, [], []
    for number, line in enumerate(source.splitlines(), 1):
        m = _HEADER.match(line)
        if m:
            if kind is not None:
                cells.append(_cell(kind, tags, lines))
            rest = m.group("rest").strip()
            kind = "markdown" if rest.startswith("[markdown]") else "code"
            tags = []
            if rest.startswith("tags="):
                try:
                    tags = list(json.loads(rest[len("tags="):]))
                except json.JSONDecodeError:
                    raise ValueError(f"{name}:{number}: cannot read the cell tags {rest!r}") from None
            elif rest and kind == "code":
                raise ValueError(f"{name}:{number}: unknown cell header {line!r}")
            lines = []
        elif kind is None:
            if line.strip():
                raise ValueError(f"{name}:{number}: text before the first '# %%' cell header")
        else:
            lines.append(line)
    if kind is not None:
        cells.append(_cell(kind, tags, lines))
    if not cells:
        raise ValueError(f"{name}: no cells")
    # Stable ids keep regenerated files identical when the source did not change.
    for i, cell in enumerate(cells):
        cell["id"] = f"cell-{i:02d}"
    nb = nbformat.v4.new_notebook(cells=cells, metadata=dict(_METADATA))
    nbformat.validate(nb)
    return nb


def render(nb: nbformat.NotebookNode) -> str:
    return nbformat.writes(nb) + "\n"


def targets() -> dict[Path, Path]:
    """{source file: notebook file} for every source."""
    return {src: HERE / (src.stem + ".ipynb") for src in sorted(SOURCES.glob("[0-9][0-9]_*.py"))}


def main(argv: list[str]) -> int:
    check = "--check" in argv
    stale = []
    for src, dst in targets().items():
        text = render(parse(src.read_text(), src.name))
        if check:
            if not dst.exists() or dst.read_text() != text:
                stale.append(dst.name)
        else:
            dst.write_text(text)
            print(f"wrote {dst.relative_to(HERE.parent)}")
    if stale:
        print("out of date (run python notebooks/_build.py):", ", ".join(stale))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
