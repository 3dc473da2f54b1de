#!/usr/bin/env bash
# Creates (or updates) the project's virtual environment: torch/torchvision, detectron2 and
# corrloss_d2 in editable mode. Idempotent: when nothing it depends on changed, it only checks that
# the environment imports and returns in seconds.
#
# Overrides (environment variables, no file edits needed):
#   CORRLOSS_VENV            where the environment lives                 (default: <checkout>/.venv)
#   CORRLOSS_PYTHON          interpreter that creates it                 (default: python3)
#   CORRLOSS_TORCH           pip requirement(s) for torch/torchvision, or "skip" to keep the torch
#                            already installed in the environment        (default: torch==2.14.1 torchvision==0.29.1)
#   CORRLOSS_TORCH_INDEX_URL extra pip index for another CUDA build of torch (default: none)
#   CORRLOSS_DETECTRON2      auto | official | fallback | skip           (default: auto)
#   CORRLOSS_D2_COMMIT       official detectron2 commit to build         (default: pinned below)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${CORRLOSS_VENV:-$ROOT/.venv}"
PYTHON="${CORRLOSS_PYTHON:-python3}"
TORCH_REQ="${CORRLOSS_TORCH:-torch==2.14.1 torchvision==0.29.1}"
TORCH_INDEX_URL="${CORRLOSS_TORCH_INDEX_URL:-}"
D2_MODE="${CORRLOSS_DETECTRON2:-auto}"
D2_REPO="https://github.com/facebookresearch/detectron2"
D2_COMMIT="${CORRLOSS_D2_COMMIT:-02b5c4e295e990042a714712c21dc79b731e8833}"  # official main, 2026-06-06
D2_FALLBACK="sal-detectron2==0.7.2"

log() { echo "[setup_env] $*" >&2; }
die() { echo "[setup_env] error: $*" >&2; exit 1; }

case "$D2_MODE" in auto|official|fallback|skip) ;; *)
  die "CORRLOSS_DETECTRON2='$D2_MODE' is not one of auto, official, fallback, skip" ;;
esac

STAMP="$VENV/.corrloss_setup_stamp"
stamp_value() {
  { cat "$ROOT/pyproject.toml" "$ROOT/tools/setup_env.sh" "$ROOT/tools/detectron2_fallback.py"
    echo "$TORCH_REQ|$TORCH_INDEX_URL|$D2_MODE|$D2_COMMIT"; } | sha256sum | cut -d' ' -f1
}

PY="$VENV/bin/python"
pip_install() { "$PY" -m pip install --quiet --disable-pip-version-check "$@" 2>&1 \
  | grep -v "^WARNING: Location .* is ignored" || true; return "${PIPESTATUS[0]}"; }

imports_ok() {
  "$PY" - <<'EOF' >/dev/null 2>&1
import torch, torchvision, detectron2, corrloss_d2  # noqa: F401
EOF
}

if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$(stamp_value)" ] && imports_ok; then
  log "environment at $VENV is up to date"
  exit 0
fi

if [ ! -x "$PY" ]; then
  log "creating virtual environment at $VENV"
  "$PYTHON" -m venv "$VENV"
fi

# torch first: everything else is resolved against the build the user chose.
if [ "$TORCH_REQ" = "skip" ]; then
  "$PY" -c "import torch, torchvision" 2>/dev/null \
    || die "CORRLOSS_TORCH=skip but torch/torchvision are not importable in $VENV"
else
  read -r -a torch_args <<<"$TORCH_REQ"
  if ! "$PY" - "${torch_args[@]}" <<'EOF' 2>/dev/null; then
import sys
from importlib.metadata import version
from packaging.requirements import Requirement
for spec in sys.argv[1:]:
    req = Requirement(spec)
    if not req.specifier.contains(version(req.name).split("+")[0], prereleases=True):
        sys.exit(1)
EOF
    log "installing $TORCH_REQ"
    index_args=()
    [ -n "$TORCH_INDEX_URL" ] && index_args=(--extra-index-url "$TORCH_INDEX_URL")
    pip_install "${index_args[@]}" "${torch_args[@]}" packaging
  fi
fi

log "installing corrloss_d2 (editable) and its dependencies"
pip_install "setuptools>=64,<81" wheel
pip_install --no-build-isolation -e "$ROOT[test]"

official_reachable() { GIT_TERMINAL_PROMPT=0 timeout 30 git ls-remote "$D2_REPO" HEAD >/dev/null 2>&1; }

install_official() {
  log "building official detectron2 at $D2_COMMIT"
  pip_install --no-build-isolation "git+$D2_REPO.git@$D2_COMMIT"
}

install_fallback() {
  local tmp; tmp="$(mktemp -d)"
  # The wheel is tagged cp310 although its Python sources are version-independent; its compiled
  # _C targets CPython 3.10 and an old torch, so it is removed after install.
  "$PY" -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.10 \
    --implementation cp --platform manylinux2014_x86_64 --platform linux_x86_64 \
    -d "$tmp" "$D2_FALLBACK" 2>&1 | grep -v "^WARNING: Location .* is ignored" || true
  local wheel; wheel="$(ls "$tmp"/sal_detectron2-*.whl 2>/dev/null | head -n1)"
  [ -n "$wheel" ] || die "could not download $D2_FALLBACK from the package index"
  local pure="$tmp/$(basename "$wheel" | sed 's/-cp310-none-any\.whl$/-py3-none-any.whl/')"
  mv "$wheel" "$pure"
  pip_install --no-deps --force-reinstall "$pure"
  "$PY" "$ROOT/tools/detectron2_fallback.py" strip-compiled
  rm -rf "$tmp"
}

installed_d2_kind() { "$PY" "$ROOT/tools/detectron2_fallback.py" kind 2>/dev/null || echo none; }

case "$D2_MODE" in
  skip)
    [ "$(installed_d2_kind)" != none ] || die "CORRLOSS_DETECTRON2=skip but detectron2 is not importable" ;;
  official)
    official_reachable || die "CORRLOSS_DETECTRON2=official but $D2_REPO is not reachable"
    [ "$(installed_d2_kind)" = "official:$D2_COMMIT" ] || install_official ;;
  fallback)
    [ "$(installed_d2_kind)" = fallback ] || install_fallback ;;
  auto)
    if official_reachable; then
      [ "$(installed_d2_kind)" = "official:$D2_COMMIT" ] || install_official
    else
      log "notice: $D2_REPO is unreachable; using the pure-Python detectron2 sources of" \
          "$D2_FALLBACK (no compiled ops; see docs/install.md)"
      [ "$(installed_d2_kind)" = fallback ] || install_fallback
    fi ;;
esac

imports_ok || die "the environment was built but 'import torch, torchvision, detectron2, corrloss_d2' fails in $VENV"
stamp_value >"$STAMP"
log "environment ready at $VENV ($("$PY" "$ROOT/tools/detectron2_fallback.py" describe))"
