"""The notebooks: paired with their sources by jupytext, stripped, and executable top to bottom.

The execution test (slow) runs every notebook on its small settings in a fresh kernel of this
interpreter (a kernelspec written into the test's temporary folder, never installed
globally). Set ``ASVD_NOTEBOOK_FIGURES=<folder>`` to keep each figure as a PNG for review, and
``ASVD_NOTEBOOK_RUN_DIR=<folder>`` to keep the continual runs (finished ones are reused).
"""

import base64
import json
import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = ROOT / "notebooks"

nbformat = pytest.importorskip("nbformat")
jupytext = pytest.importorskip("jupytext")

# {notebook: its source}, the pairing notebooks/jupytext.toml declares.
PAIRS = {NOTEBOOKS / f"{src.stem}.ipynb": src
         for src in sorted((NOTEBOOKS / "_sources").glob("[0-9][0-9]_*.py"))}


def _cells(nb):
    return [(c.cell_type, c.source, c.metadata.get("tags", [])) for c in nb.cells]


def test_every_notebook_is_paired_with_its_source_and_in_sync():
    assert len(PAIRS) >= 1
    on_disk = sorted(NOTEBOOKS.glob("*.ipynb"))
    assert on_disk == sorted(PAIRS), "notebook without a source in notebooks/_sources/"
    config = jupytext.config.load_jupytext_config(str(NOTEBOOKS))
    for dst, src in PAIRS.items():
        # jupytext (configured by notebooks/jupytext.toml) pairs the two files ...
        formats = config.default_formats(str(dst))
        paired = [path for path, _ in jupytext.paired_paths.paired_paths(str(dst), "ipynb", formats)]
        assert str(src) in paired, f"{dst.name}: jupytext does not pair it with {src}"
        # ... and they hold the same cells: `make notebooks` was run after the last edit.
        assert _cells(nbformat.read(dst, as_version=4)) == _cells(jupytext.read(src)), (
            f"{dst.name} differs from {src.name}: run make notebooks (jupytext --sync)")


@pytest.mark.parametrize("dst", list(PAIRS), ids=lambda p: p.stem)
def test_notebook_layout(dst):
    nb = nbformat.read(dst, as_version=4)
    number = int(dst.stem[:2])
    first = nb.cells[0]
    assert first.cell_type == "markdown" and first.source.startswith(f"# {number}. "), "title first"
    assert "google.colab" in nb.cells[1].source, "the install cell comes second"
    assert sum("parameters" in c.metadata.get("tags", []) for c in nb.cells) == 1
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, "outputs must be stripped"


def _kernel(tmp_path: Path) -> str:
    """A kernelspec for this interpreter, visible only through JUPYTER_PATH=tmp_path."""
    pytest.importorskip("ipykernel")
    folder = tmp_path / "kernels" / "asvd-test"
    folder.mkdir(parents=True)
    (folder / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "asvd_jax test kernel",
        "language": "python",
    }))
    return "asvd-test"


def _save_figures(nb, stem: str) -> int:
    count, out_dir = 0, os.environ.get("ASVD_NOTEBOOK_FIGURES")
    for i, cell in enumerate(nb.cells):
        for output in cell.get("outputs", []):
            png = output.get("data", {}).get("image/png")
            if png:
                count += 1
                if out_dir:
                    Path(out_dir).mkdir(parents=True, exist_ok=True)
                    Path(out_dir, f"{stem}_cell{i:02d}_{count}.png").write_bytes(base64.b64decode(png))
    return count


@pytest.fixture(scope="module")
def shared_dirs(tmp_path_factory):
    """Data cache and run folder shared by the notebooks: notebook 4 compares with notebook 2's
    run, and the offline suite is built once."""
    root = tmp_path_factory.mktemp("notebooks")
    # Given folders are kept: finished runs are reused next time, the data cache too.
    return (Path(os.environ.get("ASVD_JAX_DATA_DIR") or root / "data"),
            Path(os.environ.get("ASVD_NOTEBOOK_RUN_DIR") or root / "runs"))


EXECUTE = [pytest.param(dst, id=dst.stem) for dst in PAIRS]


@pytest.mark.slow
@pytest.mark.parametrize("dst", EXECUTE)
def test_notebook_executes(dst, tmp_path, monkeypatch, shared_dirs):
    nbclient = pytest.importorskip("nbclient")
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    monkeypatch.setenv("ASVD_JAX_DATA_DIR", str(shared_dirs[0]))
    monkeypatch.setenv("ASVD_NOTEBOOK_RUN_DIR", str(shared_dirs[1]))
    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    nb = nbformat.read(dst, as_version=4)
    client = nbclient.NotebookClient(
        nb, kernel_name=_kernel(tmp_path), timeout=1800,
        resources={"metadata": {"path": str(ROOT)}},
    )
    client.execute()  # raises CellExecutionError, with the cell and traceback, on any error
    assert _save_figures(nb, dst.stem) >= 1, "the notebook drew no figure"
