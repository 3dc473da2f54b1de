"""The documentation names only what exists.

README.md, docs/*.md, configs/**/README.md and projects/*/README.md are parsed, and everything
they name must resolve in this checkout:

- repository paths (tokens starting at a top-level folder: ``configs/...yaml``, ``tools/x.py``,
  ``corrloss_d2/...``, ``docs/x.md``; relative to the repository or to the document's folder),
  and bare recipe names (an inline code span that is one ``*.yaml`` name: a file under
  ``configs/`` or ``projects/*/configs/``);
- relative links, and their ``#anchor`` in the linked Markdown file;
- config keys (``MODEL.X.Y``, ``SOLVER.X``, ...: a key or node of ``get_cfg()`` with
  ``add_corrloss_config``);
- ``Corr[A-Z]...`` names: meta-architectures registered by ``import corrloss_d2``, or one of
  the short lists below;
- dotted ``corrloss_d2.x.y`` names: importable modules and their attributes;
- ``--flags`` given to ``train_net.py``, ``tools/*.py`` or ``tools/*.sh`` in a command (a fenced
  code block or an inline code span).

Conventions the documents follow so that the check can tell this repository's names from others':
a path of another repository follows that repository's GitHub name (``fehmikahraman/CorrLoss
configs/CorrLoss/x.py``), carries its name as prefix (``CorrLoss:configs/...``,
``detrex:projects/dino``) or a placeholder folder (``<detectron2>/tools/...``); in a path,
``<name>`` is a placeholder (any name) and ``{a,b}`` lists alternatives.
"""

import functools
import glob
import importlib
import itertools
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# The repository's top-level folders: a token starting with one of them is a repository path.
TOP_LEVEL_FOLDERS = (".ci", "configs", "corrloss_d2", "docs", "projects", "tests", "tools")
# Public `Corr[A-Z]...` classes that are not meta-architectures: name -> module it is imported from.
OTHER_PUBLIC_NAMES = {"CorrLossTrainer": "corrloss_d2.engine"}
# Classes of the Correlation Loss paper's released mmdetection code (fehmikahraman/CorrLoss) that
# projects/CorrelationLoss/README.md cites to say what a recipe matches; never this package's.
RELEASED_CODE_NAMES = {"CorrATSSHead", "CorrYOLACTHead"}

FENCE = re.compile(r"^[ \t]*(```|~~~)[^\n]*\n(.*?)^[ \t]*\1[ \t]*$", re.M | re.S)
INLINE_CODE = re.compile(r"(`+)(.+?)\1", re.S)
LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
HEADING = re.compile(r"^#{1,6}[ \t]+(.+?)[ \t]*#*[ \t]*$", re.M)
PATH = re.compile(
    r"(?<![\w.$~/:<>{}\\-])((?:"
    + "|".join(re.escape(folder) for folder in TOP_LEVEL_FOLDERS)
    + r")/(?:[\w.*+@-]|<[^<>\s/]+>|\{[^{}\s/]*\}|/)*)"
)
OWNER_REPO_BEFORE = re.compile(r"(?:^|[\s(`])([\w.-]+/[\w.-]+)`?\s+`?$")
BARE_YAML = re.compile(r"^(?:[\w.*+-]|<[^<>\s/]+>|\{[^{}\s/]*\})+\.yaml$")
CORR_NAME = re.compile(r"(?<![\w/:.])(Corr[A-Z]\w+)\b(?![:/])")
DOTTED = re.compile(r"(?<![\w./:-])(corrloss_d2(?:\.\w+)+)")
FLAG = re.compile(r"(?<![\w-])--[A-Za-z][\w-]*")
SCRIPT = re.compile(r"^(?:\./)?(train_net\.py|tools/[\w-]+\.(?:py|sh))$")


def documents():
    """The Markdown files the check reads, repository-relative, in a stable order."""
    found = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
    found += sorted((REPO / "configs").glob("**/README.md"))
    found += sorted((REPO / "projects").glob("*/README.md"))
    return [path.relative_to(REPO).as_posix() for path in found if path.is_file()]


def label(doc: Path) -> str:
    return doc.relative_to(REPO).as_posix() if doc.is_relative_to(REPO) else str(doc)


def split_markdown(text: str):
    """(prose with the fenced code blocks blanked out, the code blocks' contents)."""
    blocks = [match.group(2) for match in FENCE.finditer(text)]
    prose = FENCE.sub(lambda match: "\n" * match.group(0).count("\n"), text)
    return prose, blocks


def inline_spans(prose: str):
    return [" ".join(match.group(2).split()) for match in INLINE_CODE.finditer(prose)]


def expand(pattern: str):
    """Every alternative of a ``{a,b}`` pattern, with ``<placeholder>`` and ``...`` as ``*``."""
    pattern = re.sub(r"<[^<>\s/]+>|\.\.\.", "*", pattern)
    parts = re.split(r"(\{[^{}]*\})", pattern)
    options = [
        [option.strip() for option in part[1:-1].split(",")] if part.startswith("{") else [part]
        for part in parts
    ]
    return ["".join(choice) for choice in itertools.product(*options)]


def matches(base: Path, pattern: str) -> bool:
    return all(glob.glob(str(base / option)) for option in expand(pattern))


# --- the checks: each takes the document's path and text and returns its problems -------------


def of_another_repository(text: str, start: int) -> bool:
    """Whether the path at ``start`` follows a GitHub ``owner/repo`` name (``fehmikahraman/CorrLoss
    configs/CorrLoss/x.py``): a path of that repository."""
    before = OWNER_REPO_BEFORE.search(text, 0, start)
    return bool(before) and before.group(1).split("/")[0] not in TOP_LEVEL_FOLDERS


def path_problems(doc: Path, text: str):
    problems = []
    tokens = {m.group(1) for m in PATH.finditer(text) if not of_another_repository(text, m.start())}
    for token in sorted(tokens):
        token = token.rstrip(".,:;")
        if not matches(REPO, token) and not matches(doc.parent, token):
            problems.append(
                f"{label(doc)}: path `{token}` does not exist in the repository; fix the path, "
                "or write another repository's path with its name as prefix (`CorrLoss:configs/"
                "...`)"
            )
    prose, _ = split_markdown(text)
    for span in sorted(set(inline_spans(prose))):
        if not BARE_YAML.match(span):
            continue
        places = [doc.parent, doc.parent / "configs", REPO / "configs" / "**"]
        places.append(REPO / "projects" / "*" / "configs")
        if not any(
            all(glob.glob(str(place / option), recursive=True) for option in expand(span))
            for place in places
        ):
            problems.append(
                f"{label(doc)}: recipe `{span}` is no file under configs/ or projects/*/configs/; "
                "fix the name or give its path"
            )
    return problems


def slug(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces as hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(text: str):
    prose, _ = split_markdown(text)
    seen, found = {}, set()
    for heading in HEADING.findall(prose):
        base = slug(heading)
        count = seen.get(base, 0)
        seen[base] = count + 1
        found.add(base if count == 0 else f"{base}-{count}")
    return found


def link_problems(doc: Path, text: str):
    prose, _ = split_markdown(text)
    problems = []
    for target in sorted(set(LINK.findall(prose))):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # https:, mailto:, ...
            continue
        path, _, anchor = target.partition("#")
        linked = (doc.parent / path).resolve() if path else doc
        if not linked.exists():
            problems.append(
                f"{label(doc)}: link `{target}` points to a missing file; fix the link (relative "
                "to the document's folder) or create the file"
            )
        elif (
            anchor
            and linked.suffix == ".md"
            and anchor not in anchors(linked.read_text() if path else text)
        ):
            problems.append(
                f"{label(doc)}: link `{target}` names a heading that {label(linked)} does not "
                "have; link an existing heading or drop the anchor"
            )
    return problems


@functools.cache
def config_names():
    """(keys, nodes) of detectron2's ``get_cfg()`` with ``add_corrloss_config``."""
    from detectron2.config import get_cfg

    from corrloss_d2 import add_corrloss_config
    from corrloss_d2.config import flatten_config

    cfg = get_cfg()
    add_corrloss_config(cfg)
    keys = frozenset(flatten_config(cfg))
    # Every node holds a key (none is empty), so the nodes are the keys' proper prefixes.
    nodes = frozenset(
        key.rsplit(".", depth)[0] for key in keys for depth in range(1, key.count(".") + 1)
    )
    return keys, nodes


def config_key_pattern():
    _, nodes = config_names()
    roots = sorted(node for node in nodes if "." not in node)
    component = r"(?:[A-Z0-9_]|\{[A-Z0-9_, ]+\})+"
    return re.compile(rf"(?<![\w$])((?:{'|'.join(roots)})(?:\.{component})+)(\.?\*)?")


def config_key_problems(doc: Path, text: str):
    keys, nodes = config_names()
    problems = []
    for token, star in sorted(set(config_key_pattern().findall(text))):
        for key in expand(token):
            if star == "*":  # a key prefix: MODEL.ROI_BOX_HEAD.POOLER_*
                ok = any(name.startswith(key) for name in keys | nodes)
            elif star == ".*":  # a node's keys: MODEL.FCOS.*
                ok = key in nodes
            else:
                ok = key in keys or key in nodes
            if not ok:
                problems.append(
                    f"{label(doc)}: config key `{key}{star}` is not in get_cfg() with "
                    "add_corrloss_config; fix the name (docs/config_keys.md lists every key)"
                )
    return problems


@functools.cache
def meta_architectures():
    from detectron2.modeling import META_ARCH_REGISTRY

    import corrloss_d2  # noqa: F401  (registers them)

    return frozenset(name for name, _ in META_ARCH_REGISTRY)


def meta_architecture_problems(doc: Path, text: str):
    known = meta_architectures() | set(OTHER_PUBLIC_NAMES) | RELEASED_CODE_NAMES
    return [
        f"{label(doc)}: `{name}` is no registered meta-architecture; fix the name, or add a "
        "public class that is not one to OTHER_PUBLIC_NAMES in tests/test_docs.py"
        for name in sorted(set(CORR_NAME.findall(text)) - known)
    ]


def resolves(dotted: str) -> bool:
    parts = dotted.split(".")
    for split in range(len(parts), 0, -1):
        try:
            value = importlib.import_module(".".join(parts[:split]))
        except ImportError:
            continue
        for attribute in parts[split:]:
            if not hasattr(value, attribute):
                return False
            value = getattr(value, attribute)
        return True
    return False


def dotted_name_problems(doc: Path, text: str):
    return [
        f"{label(doc)}: `{name}` is no module or attribute of corrloss_d2; fix the name"
        for name in sorted(set(DOTTED.findall(text)))
        if not resolves(name)
    ]


def commands(text: str):
    """Each shell command of the fenced code blocks and inline code spans, as a token list."""
    prose, blocks = split_markdown(text)
    lines = [line for block in blocks for line in block.replace("\\\n", " ").splitlines()]
    lines += inline_spans(prose)
    for line in lines:
        line = re.sub(r"(^|\s)#.*$", "", line)
        for segment in re.split(r";|&&|\|\||\|", line):
            yield [token.strip("\"'") for token in segment.split()]


@functools.cache
def pytest_flags():
    help_text = subprocess.run(
        [sys.executable, "-m", "pytest", "--help"], cwd=REPO, capture_output=True, text=True
    ).stdout
    return frozenset(FLAG.findall(help_text))


@functools.cache
def script_flags(script: str):
    """The flags ``script`` accepts, or None when it does not exist (the path check reports
    that): train_net.py detectron2's ``default_argument_parser``'s; a Python tool the quoted
    ``--flag`` strings of its source (argparse); a shell script every ``--flag`` of its source and
    the flags of the repository scripts and pytest it runs."""
    path = REPO / script
    if not path.is_file():
        return None
    source = path.read_text()
    if script == "train_net.py":
        from detectron2.engine import default_argument_parser

        parser = default_argument_parser()
        return frozenset(s for action in parser._actions for s in action.option_strings)
    if path.suffix == ".py":
        return frozenset(re.findall(r"[\"'](--[A-Za-z][\w-]*)[\"']", source))
    flags = set(FLAG.findall(source))
    for called in set(re.findall(r"tools/[\w-]+\.(?:py|sh)", source)) - {script}:
        flags |= script_flags(called) or set()
    if "-m pytest" in source:
        flags |= pytest_flags()
    return frozenset(flags)


def flag_problems(doc: Path, text: str):
    problems = set()
    for tokens in commands(text):
        for index, token in enumerate(tokens):
            match = SCRIPT.match(token)
            if not match:
                continue
            known = script_flags(match.group(1))
            if known is None:
                break
            for flag in FLAG.findall(" ".join(tokens[index + 1 :])):
                if flag not in known:
                    problems.add(
                        f"{label(doc)}: `{match.group(1)} {flag}`: {match.group(1)} has no flag "
                        f"{flag}; fix the command or add the flag to the script"
                    )
            break
    return sorted(problems)


CHECKS = {
    "paths": path_problems,
    "links": link_problems,
    "config_keys": config_key_problems,
    "meta_architectures": meta_architecture_problems,
    "dotted_names": dotted_name_problems,
    "flags": flag_problems,
}


# --- the tests ---------------------------------------------------------------------------------


def test_the_documents_are_found():
    docs = documents()
    assert docs[0] == "README.md", docs
    assert {"docs/install.md", "docs/training.md", "projects/CorrelationLoss/README.md"} <= set(
        docs
    ), docs


@pytest.mark.parametrize("check", sorted(CHECKS))
@pytest.mark.parametrize("doc", documents())
def test_documents_name_only_what_exists(doc, check):
    path = REPO / doc
    problems = CHECKS[check](path, path.read_text())
    assert not problems, "\n".join(problems)


def test_readme_gives_the_test_command_ci_runs():
    command = "bash tools/run_tests.sh"
    assert command in (REPO / ".ci" / "run").read_text()
    assert f"\n{command} " in (REPO / "README.md").read_text(), (
        f"README.md: the test command `{command}` that .ci/run runs must stay in README.md"
    )


@pytest.mark.parametrize("name", sorted(OTHER_PUBLIC_NAMES))
def test_other_public_names_are_importable(name):
    assert hasattr(importlib.import_module(OTHER_PUBLIC_NAMES[name]), name), (
        f"{name} is in OTHER_PUBLIC_NAMES of tests/test_docs.py but not importable from "
        f"{OTHER_PUBLIC_NAMES[name]}: fix the module there, or drop the name"
    )


def test_released_code_names_are_not_this_packages():
    assert not RELEASED_CODE_NAMES & meta_architectures()


GOOD_DOC = """# A heading

## Second: `part`

See [the install page](install.md), [a heading](#second-part), `configs/Base-Corr<Name>.yaml`,
`configs/COCO-Detection/dino_R_50_4scale_{12,24}ep_baseline.yaml`, `projects/<paper>/configs/`,
`retinanet_R_50_FPN_1x_corr_spearman_0.1.yaml`, `<detectron2>/tools/convert-torchvision-to-d2.py`,
`CorrLoss:configs/CorrLoss/atss_r50_fpn_1x_coco_concordance_02.py`, `MODEL.CORR_LOSS.WEIGHT`,
IDEA-Research/detrex projects/dino, `MODEL.FCOS.*`, `MODEL.ROI_BOX_HEAD.POOLER_{TYPE, RESOLUTION}`,
`MODEL.{DINO,SPARSE_RCNN}.COST_{CLASS,L1,GIOU}_WEIGHT`, `MODEL.ROI_BOX_HEAD.POOLER_*`, `CorrYOLACT`,
`CorrLossTrainer`, `corrloss_d2.losses.soft_rank`, `corrloss_d2.engine`.

```bash
.venv/bin/python train_net.py --num-gpus 2 \\
    --config-file configs/CPU/retinanet_R_18_FPN_raccoon_scratch.yaml \\
    --resume SOLVER.MAX_ITER 10   # --not-a-flag in a comment
bash tools/run_demo.sh --seeds 0 1 --weights 0 0.1; bash tools/run_tests.sh --repeat 2 -m slow
```
"""

BAD_DOC = """# Bad

[missing](no_such_page.md), [nowhere](#no-such-heading), `tools/no_such_tool.py`,
`configs/CPU/no_such_recipe.yaml`, `no_such_recipe.yaml`, `MODEL.CORR_LOSS.NO_SUCH_KEY`,
`MODEL.{DINO,NO_SUCH_NODE}.CLASS_WEIGHT`, `CorrNoSuchNet`, `corrloss_d2.losses.no_such_loss`.

```bash
.venv/bin/python train_net.py --config-file x.yaml --no-such-flag
bash tools/run_demo.sh --seeds 0 --no-such-demo-flag
```

`.venv/bin/python tools/plot_correlation.py run --no-such-plot-flag`
"""

BAD_TOKENS = {
    "links": ["no_such_page.md", "#no-such-heading"],
    "paths": ["tools/no_such_tool.py", "configs/CPU/no_such_recipe.yaml", "`no_such_recipe.yaml`"],
    "config_keys": ["MODEL.CORR_LOSS.NO_SUCH_KEY", "MODEL.NO_SUCH_NODE.CLASS_WEIGHT"],
    "meta_architectures": ["CorrNoSuchNet"],
    "dotted_names": ["corrloss_d2.losses.no_such_loss"],
    "flags": ["--no-such-flag", "--no-such-demo-flag", "--no-such-plot-flag"],
}


def test_the_checks_pass_a_document_naming_what_exists(tmp_path):
    (tmp_path / "install.md").write_text("# Install\n")
    doc = tmp_path / "good.md"
    doc.write_text(GOOD_DOC)
    for check, problems_of in CHECKS.items():
        assert problems_of(doc, GOOD_DOC) == [], check


@pytest.mark.parametrize("check", sorted(CHECKS))
def test_the_checks_report_what_does_not_exist(tmp_path, check):
    doc = tmp_path / "bad.md"
    doc.write_text(BAD_DOC)
    problems = CHECKS[check](doc, BAD_DOC)
    assert len(problems) == len(BAD_TOKENS[check]), problems
    for problem in problems:
        assert problem.startswith(f"{doc}: "), problem
    for token in BAD_TOKENS[check]:
        assert sum(token in problem for problem in problems) == 1, (token, problems)
