#!/usr/bin/env python
"""Write docs/config_keys.md: every key that ``add_corrloss_config`` adds, with its default and its
comment, one section per module of corrloss_d2/config/ (common, then each family), a table per
config node.

    python tools/config_reference.py           # (re)writes docs/config_keys.md
    python tools/config_reference.py --check   # exits 1 if docs/config_keys.md is stale

The keys are those a fresh ``get_cfg()`` gains from ``add_corrloss_config``, their defaults the
values it gives them. The comments come from the modules' source: the ``#`` lines just above each
``cfg.NODE.KEY = value`` (or ``node.KEY = value`` in a helper that fills several nodes, such as
``dense_head_node()``); the keys on the lines right below one comment share it. A key without a
comment, or one the source and ``add_corrloss_config`` disagree on, is an error naming it.
"""

import argparse
import ast
import inspect
import sys
import warnings
from pathlib import Path
from typing import Dict, List, NamedTuple

from detectron2.config import get_cfg

# fvcore scripts its focal loss at import; the script's output should be its own.
warnings.filterwarnings("ignore", message="`torch.jit.script` is deprecated")
from corrloss_d2.config import SECTIONS, add_corrloss_config, flatten_config  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
OUTPUT = REPO / "docs" / "config_keys.md"
COMMAND = "python tools/config_reference.py"


class Key(NamedTuple):
    name: str  # "MODEL.FCOS.NUM_CLASSES"
    comment: str


class Section(NamedTuple):
    """What one ``add_*_config`` function adds: its keys, and the comments above the statements
    that create or fill each node ({"MODEL.FCOS": ["FCOS (Tian et al. 2019) ..."]})."""

    title: str
    path: Path
    keys: List[Key]
    nodes: Dict[str, List[str]]


def shown(path: Path) -> str:
    return str(path.relative_to(REPO)) if path.is_relative_to(REPO) else str(path)


class ModuleSource:
    """A module's functions, the names it imports from the modules beside it, and its comments."""

    def __init__(self, path: Path):
        self.path = path
        text = path.read_text()
        self.lines = text.splitlines()
        tree = ast.parse(text)
        self.functions = {f.name: f for f in tree.body if isinstance(f, ast.FunctionDef)}
        # local name -> (module, name there) of ``from .module import name``
        self.imported = {
            alias.asname or alias.name: (path.with_name(f"{statement.module}.py"), alias.name)
            for statement in tree.body
            if isinstance(statement, ast.ImportFrom) and statement.level == 1 and statement.module
            for alias in statement.names
        }

    def helper(self, call):
        """(module, function) that ``call`` runs if it is a function of this module or one that it
        imports from a module beside it, else None."""
        name = call.func.id if isinstance(call.func, ast.Name) else None
        if name in self.functions:
            return self, self.functions[name]
        path, original = self.imported.get(name, (None, None))
        if path is not None and path.is_file():
            module = ModuleSource(path)
            return (module, module.functions[original]) if original in module.functions else None
        return None

    def comment_above(self, line: int) -> str:
        """The ``#`` lines right above line ``line`` (1-based), joined; "" if there are none."""
        first = line - 1
        while first > 0 and self.lines[first - 1].lstrip().startswith("#"):
            first -= 1
        return " ".join(text.strip().lstrip("#").strip() for text in self.lines[first : line - 1])


def dotted(expression) -> str:
    """``cfg.MODEL.FCOS`` -> "MODEL.FCOS": the attributes below the base name."""
    names = []
    while isinstance(expression, ast.Attribute):
        names.append(expression.attr)
        expression = expression.value
    return ".".join(reversed(names))


def creates_node(value) -> bool:
    return isinstance(value, ast.Call) and getattr(value.func, "id", None) in ("CN", "CfgNode")


def collect(module: ModuleSource, function, prefix: str, section: Section, problems: list) -> None:
    """Adds to ``section`` the keys ``function`` sets, named below ``prefix``, following the calls
    to the package's helpers; a key without a comment goes to ``problems``."""
    shared = ""  # the comment of the key on the lines right above, if any
    previous_end = None
    for statement in function.body:
        comment = module.comment_above(statement.lineno)
        value = getattr(statement, "value", None)
        helper = module.helper(value) if isinstance(value, ast.Call) else None
        target = statement.targets[0] if isinstance(statement, ast.Assign) else None
        node, key_comment = None, ""
        if isinstance(target, ast.Attribute) and (helper or creates_node(value)):
            node = prefix + dotted(target)  # cfg.MODEL.FCOS = CN() / dense_head_node()
        elif isinstance(statement, ast.Expr) and helper and value.args:
            node = prefix + dotted(value.args[0])  # add_set_matching_keys(cfg.MODEL.DINO, ...)
        elif isinstance(target, ast.Attribute):
            name = prefix + dotted(target)
            if not comment and previous_end == statement.lineno - 1:
                comment = shared
            if not comment:
                problems.append(
                    f"{shown(module.path)}:{statement.lineno}: {name} has no comment "
                    "(the # lines above its line)"
                )
            section.keys.append(Key(name, comment))
            key_comment = comment
        if node is not None:
            if comment:
                section.nodes.setdefault(node, []).append(comment)
            if helper:
                helper_module, helper_function = helper
                section.nodes.setdefault(node, []).append(
                    f"Includes the keys that `{helper_function.name}()` in "
                    f"`{shown(helper_module.path)}` sets."
                )
                collect(helper_module, helper_function, node + ".", section, problems)
        shared, previous_end = key_comment, statement.end_lineno


def read_section(path: Path, function: str, problems: list) -> Section:
    """The keys that the function ``function`` of the module at ``path`` adds."""
    module = ModuleSource(path)
    section = Section(path.stem, path, [], {})
    collect(module, module.functions[function], "", section, problems)
    return section


def added_keys() -> Dict[str, object]:
    """The keys ``add_corrloss_config`` adds to a fresh ``get_cfg()``, and their defaults."""
    cfg = get_cfg()
    before = flatten_config(cfg)
    add_corrloss_config(cfg)
    return {key: value for key, value in flatten_config(cfg).items() if key not in before}


def cell(text: str) -> str:
    return text.replace("|", "\\|")


def reference_text() -> str:
    """The text of docs/config_keys.md; raises ValueError naming every key that lacks a comment
    or that the source and ``add_corrloss_config`` disagree on."""
    problems = []
    sections = [
        read_section(Path(inspect.getsourcefile(add)), add.__name__, problems)
        for add, _ in SECTIONS
    ]
    defaults = added_keys()
    documented = [key.name for section in sections for key in section.keys]
    for name in sorted(set(documented) | set(defaults)):
        if name not in defaults:
            problems.append(
                f"{name} is set in the source, but add_corrloss_config adds no such key"
            )
        elif name not in documented:
            problems.append(
                f"add_corrloss_config adds {name}, but no `cfg.{name} = ...` (or `node.KEY = ...` "
                "in a helper) of the config modules sets it"
            )
        elif documented.count(name) > 1:
            problems.append(f"{name} is set {documented.count(name)} times in the source")
    if problems:
        raise ValueError("\n".join(problems))
    lines = [
        "# Config keys",
        "",
        f"<!-- Generated by `{COMMAND}` from the comments in corrloss_d2/config/: edit those and "
        "run it again. -->",
        "",
        "Every key that `corrloss_d2.add_corrloss_config(cfg)` adds to detectron2's `get_cfg()`, "
        "with its default and the comment above it in the module that adds it. RetinaNet has no "
        "keys of its own: it reads detectron2's `MODEL.RETINANET`.",
    ]
    for section in sections:
        lines += ["", f"## {section.title} (`{shown(section.path)}`)"]
        node_keys: Dict[str, List[Key]] = {}
        for key in section.keys:
            node_keys.setdefault(key.name.rpartition(".")[0], []).append(key)
        for node, keys in node_keys.items():
            lines += ["", f"### `{node}`", ""]
            lines += [f"{text}\n" for text in section.nodes.get(node, [])]
            lines += ["| key | default | comment |", "| --- | --- | --- |"]
            lines += [
                f"| `{key.name}` | `{cell(repr(defaults[key.name]))}` | {cell(key.comment)} |"
                for key in keys
            ]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--check", action="store_true", help=f"exit 1 if {shown(OUTPUT)} is not current"
    )
    args = parser.parse_args(argv)
    try:
        text = reference_text()
    except ValueError as error:
        print(error, file=sys.stderr)
        return 1
    if args.check:
        if not OUTPUT.is_file() or OUTPUT.read_text() != text:
            print(f"{shown(OUTPUT)} is stale: run `{COMMAND}`", file=sys.stderr)
            return 1
        return 0
    OUTPUT.parent.mkdir(exist_ok=True)
    OUTPUT.write_text(text)
    print(f"wrote {shown(OUTPUT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
