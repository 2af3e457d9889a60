#!/usr/bin/env bash
# Idempotent setup: create .venv and install anpr with its dev tools.
# Re-runs only when pyproject.toml or this script changed (stamp file), so `make demo`/`make test`
# cost nothing extra after the first time.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3.11}
VENV=.venv
STAMP=$VENV/.anpr-setup-stamp
want=$(cat pyproject.toml scripts/setup.sh | sha256sum | cut -d' ' -f1)

if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ]; then
    exit 0
fi

[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
"$VENV/bin/python" -m pip install --quiet --upgrade pip
# torch first, pinned: these releases lie on this machine's disk; letting ultralytics/easyocr
# resolve torch would fetch a different multi-GB build.
"$VENV/bin/python" -m pip install --quiet torch==2.14.1 torchvision==0.29.1
"$VENV/bin/python" -m pip install --quiet -e ".[dev]"
echo "$want" > "$STAMP"
echo "setup: .venv ready"
