"""Dependencies point one way: api/worker/cli -> service -> tasks -> model -> data -> config/errors/schemas/metrics."""

from __future__ import annotations

import ast
from pathlib import Path

import matchcast

ROOT = Path(matchcast.__file__).parent
LAYERS = [
    {"cli", "ui"},
    {"api", "worker"},
    {"service"},
    {"tasks"},
    {"model"},
    {"data"},
    {"config", "errors", "schemas", "metrics", "__init__", "__main__"},
]


def layer_of(module: str) -> int:
    top = module.split(".")[1] if "." in module else "__init__"
    return next(i for i, names in enumerate(LAYERS) if top in names)


def imports_of(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("matchcast.")}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("matchcast."):
            found.add(node.module)
    return found


def test_no_module_imports_a_higher_layer() -> None:
    broken = []
    for path in ROOT.rglob("*.py"):
        rel = path.relative_to(ROOT.parent).with_suffix("")
        module = ".".join(rel.parts)
        if module.endswith("__main__"):
            continue
        for imported in imports_of(path):
            if layer_of(imported) < layer_of(module):
                broken.append(f"{module} -> {imported}")
    assert broken == []


def test_api_and_worker_do_not_import_each_other() -> None:
    for side, other in (("api", "worker"), ("worker", "api")):
        for path in (ROOT / side).rglob("*.py"):
            assert not any(i.startswith(f"matchcast.{other}") for i in imports_of(path)), path


def test_the_ui_talks_http_only_and_nothing_imports_it() -> None:
    for path in (ROOT / "ui").rglob("*.py"):
        assert all(i.startswith("matchcast.ui") for i in imports_of(path)), path
    for path in ROOT.rglob("*.py"):
        if (ROOT / "ui") not in path.parents:
            assert not any(i.startswith("matchcast.ui") for i in imports_of(path)), path


def test_the_checker_sees_a_violation() -> None:
    assert layer_of("matchcast.data.store") > layer_of("matchcast.service.training")
