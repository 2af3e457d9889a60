"""A git worktree of an earlier revision, to measure it beside the current code in one run.

The benchmark and evaluation scripts compare the default reader with the one it replaced
(`DEFAULT_BASELINE`), which no longer exists in this tree: they run that revision's own code from a
worktree in .cache/baseline/, with this checkout's venv.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DEFAULT_BASELINE = "05916f5"  # the EasyOCR-hosted plate_ocr cascade, the default before the CCT reader


def tree(rev: str) -> Path:
    """The worktree of `rev`, made on first use and kept (its model exports are built once)."""
    path = REPO / ".cache" / "baseline" / rev
    if not path.is_dir():
        subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", str(path), rev], check=True)
    return path


def env(path: Path) -> dict[str, str]:
    """The environment that makes `import anpr` load the worktree's package."""
    return {**os.environ, "PYTHONPATH": str(path)}
