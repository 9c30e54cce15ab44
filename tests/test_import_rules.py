"""The import rules docs/architecture.md states, checked on the source's import graph.

Layers, lowest first: the core (``asvd_jax/*.py``: the transform, bases, projection; jax, optax
and numpy only) < ``data``, ``metrics`` < ``models`` < ``ranks`` < ``analysis`` < ``cl`` (the
trainer) < ``cli``. A module imports only its own package or lower layers, never another
package's private module, and the whole package has no import cycle.
"""

import ast
import sys

import pytest

from _helpers.imports import ROOT, cycle, import_graph

LAYERS = {"core": 0, "data": 1, "metrics": 1, "models": 2, "ranks": 3, "analysis": 4, "cl": 5, "cli": 6}
ENTRY_POINTS = {"asvd_jax.__main__"}  # `python -m asvd_jax` runs the CLI: above everything


def package(module: str) -> str:
    parts = module.split(".")
    return "core" if len(parts) == 1 or parts[1].startswith("_") else parts[1]


@pytest.fixture(scope="module")
def graph():
    g = import_graph()
    assert len(g) > 100 and "asvd_jax.cl._runner" in g and "asvd_jax._transform" in g
    return g


def test_every_package_has_a_layer(graph):
    assert {package(m) for m in graph} == set(LAYERS)


def test_no_import_cycles(graph):
    found = cycle(graph, set(graph))
    assert found is None, " -> ".join(found)


def test_layers_import_downward(graph):
    upward = [(m, t) for m, targets in graph.items() if m not in ENTRY_POINTS for t in targets
              if package(t) != package(m) and LAYERS[package(t)] >= LAYERS[package(m)]]
    assert not upward, upward


def test_no_private_module_of_another_package(graph):
    private = [(m, t) for m, targets in graph.items() for t in targets
               if package(t) not in (package(m), "core")
               and any(p.startswith("_") for p in t.split(".")[1:])]
    assert not private, private


def test_the_trainer_names_no_model_family(graph):
    families = ("asvd_jax.models.llama", "asvd_jax.models.t5", "asvd_jax.models.bert")
    named = [(m, t) for m, targets in graph.items() if package(m) == "cl"
             and m != "asvd_jax.cl._memory_plan"  # compiles the shipped families' 7B plans
             for t in targets if t.startswith(families)]
    assert not named, named


def test_core_imports_only_jax_optax_numpy():
    allowed = {"jax", "optax", "numpy", "asvd_jax", "__future__"} | set(sys.stdlib_module_names)
    for path in ROOT.glob("*.py"):
        if package(f"asvd_jax.{path.stem}") != "core" or path.name == "__main__.py":
            continue  # cli.py and the entry point are the top layer
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module] if isinstance(node, ast.ImportFrom) and node.level == 0 else [])
            for name in names:
                assert name.split(".")[0] in allowed, f"{path.name} imports {name}"
                if name.startswith("asvd_jax."):  # the core uses no layer above it
                    assert package(name) == "core", f"{path.name} imports {name}"


def test_the_checks_bite():
    g = {"asvd_jax.data._x": {"asvd_jax.cl._runner"}, "asvd_jax.cl._runner": {"asvd_jax.data._x"}}
    assert cycle(g, set(g)) is not None
    assert LAYERS[package("asvd_jax.cl._runner")] > LAYERS[package("asvd_jax.data._x")]
