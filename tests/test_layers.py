"""The layers, read from the source: who may import mlflow, hydra and omegaconf, and no cycles.

Every import counts, at module level or inside a function: a deferred import is still a
dependency."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from conftest import ROOT

SRC = ROOT / "src"
MATHS = {"gradlab.options", "gradlab.data", "gradlab.models", "gradlab.modelbase", "gradlab.usermodels", "gradlab.targets",
         "gradlab.losses", "gradlab.problem", "gradlab.gradients",
         "gradlab.optim", "gradlab.engine", "gradlab.devices", "gradlab.spill"}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in SRC.rglob("*.py")}


def imports(name: str) -> set[str]:
    """Every module `name` imports (absolute names; relative imports resolved)."""
    out = set()
    package = name if MODULES[name].name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(MODULES[name].read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
            out.add(base)
            out |= {f"{base}.{a.name}" for a in node.names if f"{base}.{a.name}" in MODULES}
    return out


def ours(names: set[str]) -> set[str]:
    return {n for n in names if n in MODULES}


def closure(name: str) -> set[str]:
    """The gradlab modules `name` reaches through its imports, itself included."""
    seen, todo = set(), [name]
    while todo:
        m = todo.pop()
        if m not in seen:
            seen.add(m)
            todo += ours(imports(m))
    return seen


def third_party(name: str) -> set[str]:
    return {n.split(".")[0] for n in imports(name)}


def test_the_source_is_where_these_tests_look():
    assert {"gradlab.tracking.store", "gradlab.engine", "gradlab.record"} <= set(MODULES)


# The benchmark's reference: the tutorial pattern, written against MLflow as tutorials write it.
REFERENCE = {"gradlab.bench.tutorial"}


def test_only_the_tracking_package_imports_mlflow():
    outside = sorted(m for m in MODULES if "mlflow" in third_party(m) and not m.startswith("gradlab.tracking"))
    assert outside == sorted(REFERENCE)


@pytest.mark.parametrize("name", sorted(MATHS))
def test_the_maths_imports_no_hydra_omegaconf_or_mlflow(name):
    reached = closure(name)
    assert reached <= MATHS, f"{name} reaches glue modules {sorted(reached - MATHS)}"
    assert not any(third_party(m) & {"hydra", "omegaconf", "mlflow"} for m in reached)


def test_no_import_cycles():
    graph = {m: ours(imports(m)) - {m} for m in MODULES}
    # A package imports its submodules by design (its __init__ re-exports them); a submodule
    # importing its package's __init__ would close a loop, so that edge is kept.
    for m in graph:
        graph[m] = {d for d in graph[m] if not d.startswith(m + ".")}
    state: dict[str, str] = {}

    def visit(m: str, path: list[str]) -> None:
        state[m] = "open"
        for d in sorted(graph[m]):
            if state.get(d) == "open":
                raise AssertionError("import cycle: " + " -> ".join(path[path.index(d):] + [d]))
            if d not in state:
                visit(d, path + [d])
        state[m] = "done"

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])


def test_the_cycle_check_finds_a_cycle(monkeypatch):
    """The check above can fail: two modules importing each other are reported."""
    fake = {"gradlab.a": {"gradlab.b"}, "gradlab.b": {"gradlab.a"}}
    monkeypatch.setattr(__import__(__name__), "MODULES", {**MODULES, "gradlab.a": None, "gradlab.b": None})
    monkeypatch.setattr(__import__(__name__), "imports", lambda m: fake.get(m, set()))
    with pytest.raises(AssertionError, match="import cycle"):
        test_no_import_cycles()
