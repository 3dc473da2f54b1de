"""docs/config_keys.md is tools/config_reference.py's output for the current config modules, lists
every key once, and the script refuses a key without a comment."""

import importlib.util
import pathlib
import re

SCRIPT = pathlib.Path(__file__).resolve().parents[1] / "tools" / "config_reference.py"
_SPEC = importlib.util.spec_from_file_location("config_reference", SCRIPT)
config_reference = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(config_reference)


def test_the_reference_is_current(capsys):
    assert config_reference.main(["--check"]) == 0, capsys.readouterr().err


def test_the_check_names_the_command_when_the_reference_is_stale(tmp_path, monkeypatch, capsys):
    stale = tmp_path / "config_keys.md"
    stale.write_text(config_reference.OUTPUT.read_text() + "| `MODEL.GONE` | `0` | Removed. |\n")
    monkeypatch.setattr(config_reference, "OUTPUT", stale)
    assert config_reference.main(["--check"]) == 1
    message = capsys.readouterr().err.strip()
    assert len(message.splitlines()) == 1 and "python tools/config_reference.py" in message


def test_every_added_key_is_listed_once():
    rows = re.findall(r"^\| `([A-Z0-9_.]+)` \|", config_reference.OUTPUT.read_text(), re.MULTILINE)
    assert sorted(rows) == sorted(config_reference.added_keys())  # a key listed twice shows up


FAKE_MODULE = """
from detectron2.config import CfgNode as CN


def add_fake_config(cfg):
    # A fake family (a node's comment is not its first key's).
    cfg.MODEL.FAKE = CN()
    cfg.MODEL.FAKE.UNDER_NODE = 0
    # Two keys under one comment.
    cfg.MODEL.FAKE.FIRST = 1
    cfg.MODEL.FAKE.SECOND = 2

    cfg.MODEL.FAKE.BARE = 3
    _shared_keys(cfg.MODEL.FAKE)


def _shared_keys(node):
    # Documented in the helper.
    node.SHARED = 0.5

    node.HIDDEN = 0.0
"""


def test_a_key_without_a_comment_is_reported(tmp_path):
    module = tmp_path / "fake.py"
    module.write_text(FAKE_MODULE)
    problems = []
    section = config_reference.read_section(module, "add_fake_config", problems)
    comments = {key.name: key.comment for key in section.keys}
    assert (
        comments["MODEL.FAKE.FIRST"]
        == comments["MODEL.FAKE.SECOND"]
        == "Two keys under one comment."
    )
    assert comments["MODEL.FAKE.SHARED"] == "Documented in the helper."
    lines = FAKE_MODULE.splitlines()
    assert problems == [
        f"{module}:{lines.index(line) + 1}: {name} has no comment (the # lines above its line)"
        for name, line in (
            ("MODEL.FAKE.UNDER_NODE", "    cfg.MODEL.FAKE.UNDER_NODE = 0"),
            ("MODEL.FAKE.BARE", "    cfg.MODEL.FAKE.BARE = 3"),
            ("MODEL.FAKE.HIDDEN", "    node.HIDDEN = 0.0"),
        )
    ]
