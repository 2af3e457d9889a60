"""`anpr replay` on bad inputs: a clear error naming the problem, exit status 2, nothing crashes."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from anpr.cli import app
from anpr.config import REPO_ROOT

CLIP = REPO_ROOT / "sample_videos" / "truck_front.mp4"


def _config(tmp_path: Path, redis_prefix: str, extra: str = "") -> Path:
    path = tmp_path / "replay.yaml"
    path.write_text(
        f"redis:\n  url: redis://127.0.0.1:6379/0\n  prefix: {redis_prefix}\n"
        f"events:\n  spool_dir: {tmp_path / 'spool'}\n{extra}"
    )
    return path


@pytest.mark.slow
@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p: p.write_bytes(CLIP.read_bytes()[: len(CLIP.read_bytes()) // 3]), "truck.mp4"),
        (lambda p: p.write_bytes(b""), "truck.mp4"),
        (lambda p: p.write_text("not a video at all"), "truck.mp4"),
        (lambda p: None, "truck.mp4"),
    ],
    ids=["truncated", "zero-bytes", "not-a-video", "missing"],
)
def test_bad_video_is_a_clear_error(tmp_path: Path, redis_prefix: str, make, message: str) -> None:  # type: ignore[no-untyped-def]
    video = tmp_path / "truck.mp4"
    make(video)
    result = CliRunner().invoke(app, ["replay", str(video), "--config", str(_config(tmp_path, redis_prefix))])
    assert result.exit_code == 2, result.output
    assert "error:" in result.output and message in result.output


def test_misspelt_config_key_is_named(tmp_path: Path, redis_prefix: str) -> None:
    cfg = _config(tmp_path, redis_prefix, "tracker:\n  lost_after: 2\n")
    result = CliRunner().invoke(app, ["replay", str(CLIP), "--config", str(cfg)])
    assert result.exit_code == 2
    assert "unknown key 'tracker.lost_after'" in result.output


def test_unknown_camera_is_named(tmp_path: Path, redis_prefix: str) -> None:
    result = CliRunner().invoke(
        app, ["replay", str(CLIP), "--camera", "side", "--config", str(REPO_ROOT / "configs" / "dev.yaml")]
    )
    assert result.exit_code == 2
    assert "no camera named 'side'" in result.output and "front, rear" in result.output
