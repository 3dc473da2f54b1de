"""The package's import rules (docs/adding_a_detector.md, "Where things live"): each room imports
only the rooms below it, checked on the source of every module (a lazy import inside a function
counts too)."""

import ast
import pathlib
import re

import pytest

PACKAGE = pathlib.Path(__file__).resolve().parents[1] / "corrloss_d2"
# room -> rooms of the package it must not import
FORBIDDEN = {
    "losses": {"config", "data", "modeling", "evaluation", "engine", "solver"},
    "layers": {"config", "data", "modeling", "evaluation", "engine", "solver", "losses"},
    "config": {"data", "modeling", "evaluation", "engine", "solver"},
    "data": {"modeling", "evaluation", "engine"},
    "modeling": {"data", "evaluation", "engine"},
    "evaluation": {"engine"},
}
# family -> its modules: a family module imports no other family's. RetinaNet has no config module
# (it reads detectron2's MODEL.RETINANET).
FAMILIES = {
    "retinanet": ("modeling/meta_arch/retinanet.py",),
    "fcos": ("config/fcos.py", "modeling/meta_arch/fcos.py"),
    "atss": ("config/atss.py", "modeling/meta_arch/atss.py", "modeling/atss_assignment.py"),
    "sparse_rcnn": (
        "config/sparse_rcnn.py",
        "modeling/meta_arch/sparse_rcnn.py",
        "modeling/sparse_rcnn_head.py",
    ),
    "dino": (
        "config/dino.py",
        "modeling/meta_arch/dino.py",
        "modeling/dino_transformer.py",
        "modeling/denoising.py",
    ),
    "yolact": ("config/yolact.py", "modeling/meta_arch/yolact.py", "modeling/yolact_head.py"),
}
# The folders with one module per family: each of their modules is a family's or listed in SHARED.
FAMILY_FOLDERS = ("config", "modeling/meta_arch")
SHARED = (
    "config/__init__.py",
    "config/checks.py",
    "config/common.py",
    "config/dense_head.py",  # FCOS, ATSS
    "config/set_matching.py",  # Sparse R-CNN, DINO
    "modeling/meta_arch/__init__.py",
    "modeling/meta_arch/build.py",
    "modeling/meta_arch/dense.py",  # the dense detectors
)


def imported_modules(path: pathlib.Path):
    """The name under corrloss_d2 of everything that ``path`` imports, and the line: a module
    (``import corrloss_d2.config.dino``: ("config", "dino")) or a name in one (``from ..config.dino
    import X``: ("config", "dino", "X"))."""
    module_parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    package_parts = module_parts[:-1]  # the package that relative imports start from
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [alias.name.split(".") for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = list(package_parts[: len(package_parts) - node.level + 1]) if node.level else []
            target = base + (node.module.split(".") if node.module else [])
            names = [target + [alias.name] for alias in node.names]
        else:
            continue
        for name in names:
            if len(name) > 1 and name[0] == "corrloss_d2":
                yield tuple(name[1:]), node.lineno


def imported_rooms(path: pathlib.Path):
    """The first component under corrloss_d2 of every module that ``path`` imports."""
    for module, line in imported_modules(path):
        yield module[0], line


def family_problems(families, shared):
    """The modules of FAMILY_FOLDERS in no family and not shared, the listed modules that do not
    exist, and the imports of a family module from another family's."""
    family_of = {module: family for family, modules in families.items() for module in modules}
    problems = [
        f"{module} is listed but does not exist"
        for module in (*family_of, *shared)
        if not (PACKAGE / module).is_file()
    ]
    for folder in FAMILY_FOLDERS:
        for path in sorted((PACKAGE / folder).glob("*.py")):
            module = path.relative_to(PACKAGE).as_posix()
            if module not in family_of and module not in shared:
                problems.append(f"{module} is in no family: add it to FAMILIES or SHARED")
    for module, family in family_of.items():
        if not (PACKAGE / module).is_file():
            continue
        for imported, line in imported_modules(PACKAGE / module):
            # The module imported, or the one its name is imported from.
            files = ("/".join(name) + ".py" for name in (imported, imported[:-1]))
            other = next((family_of[file] for file in files if file in family_of), family)
            if other != family:
                problems.append(
                    f"{module}:{line} ({family}) imports {other}'s corrloss_d2.{'.'.join(imported)}"
                )
    return problems


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


def test_family_modules_import_no_other_family_and_every_module_has_a_family():
    assert not family_problems(FAMILIES, SHARED)


def test_the_family_checker_sees_cross_family_imports_and_undeclared_modules(tmp_path, monkeypatch):
    package = tmp_path / "corrloss_d2"
    for folder in FAMILY_FOLDERS:
        (package / folder).mkdir(parents=True)
    (package / "config" / "__init__.py").write_text("from .fcos import add_fcos_config\n")
    (package / "config" / "fcos.py").write_text("def add_fcos_config(cfg):\n    pass\n")
    (package / "config" / "atss.py").write_text("\nfrom .fcos import add_fcos_config\n")
    (package / "modeling" / "meta_arch" / "atss.py").write_text(
        "def f():\n    from ...config import atss\n    from ...config import fcos\n"
    )
    (package / "modeling" / "meta_arch" / "new_family.py").write_text("")
    monkeypatch.setattr(f"{__name__}.PACKAGE", package)
    families = {
        "fcos": ("config/fcos.py", "modeling/meta_arch/fcos.py"),
        "atss": ("config/atss.py", "modeling/meta_arch/atss.py"),
    }
    assert family_problems(families, ("config/__init__.py",)) == [
        "modeling/meta_arch/fcos.py is listed but does not exist",
        "modeling/meta_arch/new_family.py is in no family: add it to FAMILIES or SHARED",
        "config/atss.py:2 (atss) imports fcos's corrloss_d2.config.fcos.add_fcos_config",
        "modeling/meta_arch/atss.py:3 (atss) imports fcos's corrloss_d2.config.fcos",
    ]


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
