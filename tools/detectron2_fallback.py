"""Set-up helper for tools/setup_env.sh: tells which detectron2 is installed and strips the
compiled extension that the sal-detectron2 fallback wheel carries (built for CPython 3.10 and an
old torch, it cannot load here and must not shadow a clear "compiled op missing" error).

Usage: python tools/detectron2_fallback.py {kind|describe|strip-compiled}
Standard library only: it runs before the project is importable.
"""

import glob
import importlib.util
import json
import os
import sys
from importlib import metadata

FALLBACK_DIST = "sal-detectron2"


def installed_kind() -> str:
    """'fallback', 'official:<commit or unknown>', or 'none'."""
    if importlib.util.find_spec("detectron2") is None:
        return "none"
    try:
        metadata.distribution(FALLBACK_DIST)
        return "fallback"
    except metadata.PackageNotFoundError:
        pass
    commit = "unknown"
    try:
        direct_url = metadata.distribution("detectron2").read_text("direct_url.json")
        if direct_url:
            commit = json.loads(direct_url).get("vcs_info", {}).get("commit_id", commit)
    except metadata.PackageNotFoundError:
        pass
    return f"official:{commit}"


def package_dir() -> str:
    spec = importlib.util.find_spec("detectron2")
    if spec is None or not spec.submodule_search_locations:
        sys.exit("detectron2 is not installed")
    return list(spec.submodule_search_locations)[0]


def strip_compiled() -> None:
    for path in glob.glob(os.path.join(package_dir(), "_C*.so")):
        os.remove(path)
        print(f"removed incompatible compiled extension {path}")


def describe() -> str:
    kind = installed_kind()
    if kind == "none":
        return "detectron2 not installed"
    has_ops = importlib.util.find_spec("detectron2._C") is not None
    where = "pure-Python fallback (sal-detectron2)" if kind == "fallback" else kind
    return f"detectron2 {where}, compiled ops {'present' if has_ops else 'absent'}"


if __name__ == "__main__":
    command = sys.argv[1] if len(sys.argv) > 1 else ""
    if command == "kind":
        print(installed_kind())
    elif command == "describe":
        print(describe())
    elif command == "strip-compiled":
        strip_compiled()
    else:
        sys.exit(__doc__)
