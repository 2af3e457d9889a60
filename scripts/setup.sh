#!/usr/bin/env bash
# Idempotent setup: create .venv and install anpr with its test and dev tools (extras test, dev).
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
# A .venv made before anpr moved to ultralytics-opencv-headless still holds ultralytics and the GUI
# opencv-python; both own files of another package (ultralytics/, cv2/), so remove them and rewrite
# the headless cv2 their removal cut into.
if "$VENV/bin/python" -m pip show --quiet opencv-python >/dev/null 2>&1 \
        || "$VENV/bin/python" -m pip show --quiet ultralytics >/dev/null 2>&1; then
    "$VENV/bin/python" -m pip uninstall --quiet --yes opencv-python ultralytics
    "$VENV/bin/python" -m pip install --quiet --force-reinstall --no-deps \
        "$(grep -o 'opencv-python-headless==[0-9.]*' pyproject.toml)" \
        "$(grep -o 'ultralytics-opencv-headless==[0-9.]*' pyproject.toml)"
fi
"$VENV/bin/python" -m pip install --quiet -e ".[dev]"
# Nothing may bring the GUI build back (it would overwrite the headless cv2/).
if "$VENV/bin/python" -m pip show --quiet opencv-python >/dev/null 2>&1; then
    echo "setup: opencv-python got installed; only opencv-python-headless may be" >&2
    exit 1
fi
echo "$want" > "$STAMP"
echo "setup: .venv ready"
