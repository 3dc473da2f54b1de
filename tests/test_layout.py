"""The package's import rules (README, "Architecture"): each room imports only the rooms below it,
checked on the source of every module (a lazy import inside a function counts too)."""

import ast
import pathlib
import re

import pytest

PACKAGE = pathlib.Path(__file__).resolve().parents[1] / "corrloss_d2"
# room -> rooms of the package it must not import
FORBIDDEN = {
    "losses": {"config", "data", "modeling", "evaluation", "engine", "solver"},
    "layers": {"config", "data", "modeling", "evaluation", "engine", "solver", "losses"},
    "data": {"modeling", "evaluation", "engine"},
    "modeling": {"data", "evaluation", "engine"},
    "evaluation": {"engine"},
}


def imported_rooms(path: pathlib.Path):
    """The first component under corrloss_d2 of every module that ``path`` imports."""
    module_parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    package_parts = module_parts[:-1]  # the package that relative imports start from
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [alias.name.split(".") for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = list(package_parts[: len(package_parts) - node.level + 1]) if node.level else []
            target = base + (node.module.split(".") if node.module else [])
            names = [target] if node.module else [target + [a.name] for a in node.names]
        else:
            continue
        for name in names:
            if len(name) > 1 and name[0] == "corrloss_d2":
                yield name[1], node.lineno


@pytest.mark.parametrize("room", sorted(FORBIDDEN))
def test_rooms_import_only_the_rooms_below_them(room):
    modules = sorted((PACKAGE / room).rglob("*.py"))
    assert modules
    wrong = [
        f"{path.relative_to(PACKAGE)}:{line} imports corrloss_d2.{imported}"
        for path in modules
        for imported, line in imported_rooms(path)
        if imported in FORBIDDEN[room]
    ]
    assert not wrong, wrong


def test_the_checker_sees_relative_and_lazy_imports(tmp_path, monkeypatch):
    room = tmp_path / "corrloss_d2" / "data"
    room.mkdir(parents=True)
    source = room / "m.py"
    source.write_text("def f():\n    from ..modeling import x\nfrom . import y\n")
    monkeypatch.setattr(f"{__name__}.PACKAGE", tmp_path / "corrloss_d2")
    assert list(imported_rooms(source)) == [("data", 3), ("modeling", 2)]


def test_modules_with_a_module_fixture_run_on_one_worker():
    # A module-scoped fixture runs once per worker that runs one of the module's tests.
    from tests.conftest import ONE_WORKER_MODULES

    repo = PACKAGE.parent
    sharing = sorted(
        str(path.relative_to(repo))
        for path in (repo / "tests").rglob("test_*.py")
        if re.search(r'^@pytest\.fixture\(scope="module"\)', path.read_text(), re.MULTILINE)
    )
    assert sharing and sorted(ONE_WORKER_MODULES) == sharing
