"""The set-up scripts' own checks (they do not reinstall anything here)."""

import os
import subprocess
import sys

import pytest

from corrloss_d2.compiled_ops import has_compiled_ops

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_unknown_detectron2_mode_is_rejected_before_any_work():
    result = subprocess.run(
        ["bash", os.path.join(REPO, "tools", "setup_env.sh")],
        env={**os.environ, "CORRLOSS_DETECTRON2": "conda"},
        capture_output=True,
        text=True,
        timeout=60,  # a hang guard: the script stops at its first check, in under a second
    )
    assert result.returncode != 0
    assert (
        "CORRLOSS_DETECTRON2='conda' is not one of auto, official, fallback, skip" in result.stderr
    )


def test_install_description_matches_the_runtime():
    helper = os.path.join(REPO, "tools", "detectron2_fallback.py")
    kind = subprocess.run(
        [sys.executable, helper, "kind"], capture_output=True, text=True, check=True
    ).stdout.strip()
    described = subprocess.run(
        [sys.executable, helper, "describe"], capture_output=True, text=True, check=True
    ).stdout
    assert kind == "fallback" or kind.startswith("official:")
    assert ("compiled ops present" in described) == has_compiled_ops()
    if kind == "fallback":
        assert "pure-Python fallback" in described and not has_compiled_ops()


def test_missing_dataset_files_name_the_path_and_the_variable(tmp_path):
    from corrloss_d2.data.datasets import DATA_ROOT_ENV, DATASET_FILES, _loader

    json_rel, images_rel = DATASET_FILES["raccoon_val"]
    load = _loader("raccoon_val", tmp_path, tmp_path / json_rel, tmp_path / images_rel)
    with pytest.raises(FileNotFoundError) as error:
        load()
    message = str(error.value)
    assert str(tmp_path / json_rel) in message and DATA_ROOT_ENV in message
    assert f"holds raccoon/ (now {tmp_path})" in message
