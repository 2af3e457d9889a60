"""`anpr replay` as an operator runs it: bad inputs, Redis away, a spool of another destination, --json,
--start-time, and the README's examples."""

from __future__ import annotations

import json
import re
import shlex
from glob import glob
from pathlib import Path
from typing import Any

import av
import pytest
import redis
from support import RedisServer
from typer.testing import CliRunner

from anpr.cli import app
from anpr.config import REPO_ROOT, load_config
from anpr.events import TARGET_FILE, EventSink
from anpr.keys import Keys
from anpr.replay import camera_for

CLIP = REPO_ROOT / "sample_videos" / "truck_front.mp4"


@pytest.fixture(scope="module")
def partial(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """truck_front.mp4 with its index in front and the second half of its data cut off: it opens, gives
    225 of its 500 frames (both vehicles' plates), then stops decoding: a recording interrupted mid-copy."""
    path = tmp_path_factory.mktemp("clips") / "partial.mp4"
    with av.open(str(CLIP)) as src, av.open(str(path), "w", options={"movflags": "faststart"}) as out:
        video = out.add_stream_from_template(src.streams.video[0])
        for packet in src.demux(src.streams.video[0]):
            if packet.dts is not None:
                packet.stream = video
                out.mux(packet)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    return path


def _stream(client: Any, prefix: str) -> list[dict[str, Any]]:
    return [json.loads(fields[b"event"]) for _, fields in client.xrange(Keys(prefix).events)]


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


@pytest.mark.slow
def test_unreachable_redis_spools_and_no_other_destination_drains(
    tmp_path: Path, partial: Path, redis_prefix: str
) -> None:
    """Issue 23 point 1: spooled events are reported, exit 2, and reach only the Redis and prefix they were for."""
    server = RedisServer(tmp_path / "redis")  # not started yet: the replay's Redis is down
    spool = tmp_path / "spool"  # one folder for both configs, as the old shared default was
    meant = tmp_path / "meant.yaml"
    meant.write_text(
        f"redis: {{url: 'redis://127.0.0.1:{server.port}/0', prefix: replay-test, connect_timeout_s: 0.5}}\n"
        f"events: {{spool_dir: '{spool}'}}\n"
    )
    result = CliRunner().invoke(app, ["replay", str(partial), "-c", str(meant)])
    assert result.exit_code == 2
    assert (
        f"error: 2 events spooled, not written: Redis redis://127.0.0.1:{server.port} db 0 prefix 'replay-test' "
        f"unreachable. They wait in {spool}" in " ".join(result.stderr.split())
    )
    assert len(list(spool.glob("*.json"))) == 2

    other = _config(tmp_path, redis_prefix)  # the shared Redis, another prefix, the same folder
    refused = CliRunner().invoke(app, ["replay", str(partial), "--config", str(other)])
    assert refused.exit_code == 2
    assert refused.stderr.startswith(
        f"error: spool {spool} belongs to redis://127.0.0.1:{server.port} db 0 prefix 'replay-test', "
        f"not redis://127.0.0.1:6379 db 0 prefix '{redis_prefix}'"
    )
    assert "Traceback" not in refused.output and len(list(spool.glob("*.json"))) == 2
    shared: Any = redis.Redis.from_url("redis://127.0.0.1:6379/0")
    assert shared.xlen(Keys(redis_prefix).events) == 0

    server.start()
    try:
        cfg = load_config(meant)
        sink = EventSink.from_config(cfg.redis, cfg.events)
        assert sink.drain() and not list(spool.glob("*.json")) and (spool / TARGET_FILE).exists()
        own: Any = redis.Redis(port=server.port)
        assert [e["plate"] for e in _stream(own, "replay-test")] == ["ANG772", "BH0982XA"]
    finally:
        server.stop()


@pytest.mark.slow
def test_json_as_stored_inputs_first_every_input_listed_and_start_time(
    tmp_path: Path, partial: Path, redis_prefix: str
) -> None:
    """Issue 23 point 6, on one partly damaged clip and one missing file."""
    cfg, missing = _config(tmp_path, redis_prefix), tmp_path / "missing.mp4"
    shared: Any = redis.Redis.from_url("redis://127.0.0.1:6379/0")
    start = "2025-03-01T08:00:00Z"
    args = ["replay", "--json", "--start-time", start, "-c", str(cfg)]

    first = CliRunner().invoke(app, [*args, str(partial), str(missing)])

    assert first.exit_code == 2
    # Inputs first: the missing file, named last, is reported before any event of the first.
    json_at = first.output.index('{"schema_version"')
    assert 0 <= first.output.index(f"no such video file or image folder: {missing}") < json_at
    # --json: exactly the stream's entries, image keys included.
    printed = [json.loads(line) for line in first.stdout.splitlines()]
    stored = _stream(shared, redis_prefix)
    assert printed == stored and [e["plate"] for e in printed] == ["ANG772", "BH0982XA"]
    for event in printed:
        assert event["plate_image"] == Keys(redis_prefix).plate_image(event["event_id"])
        assert shared.exists(event["plate_image"], event["vehicle_image"]) == 2
        assert "20250301T0800" in event["event_id"]
    # The summary (stderr under --json) lists every input: the damaged one with its events and error.
    summary = " ".join(first.stderr.split())
    assert re.search(r"partial\.mp4 │ 225 │ [\d.]+ │ \d+ │ \d+ │ 2 │ 2 │ 0 │ 0 │ ANG772 BH0982XA │ camera", summary)
    assert "stops decoding at frame 225 of 500" in summary
    assert re.search(r"missing\.mp4 │ - │ - │ - │ - │ - │ - │ - │ - │ - │ camera missing: no such", summary)

    # The same start time again: the same ids, nothing stored twice.
    again = CliRunner().invoke(app, [*args, str(partial)])
    assert [json.loads(line)["event_id"] for line in again.stdout.splitlines()] == [e["event_id"] for e in stored]
    assert re.search(r"partial\.mp4 │ 225 │ [\d.]+ │ \d+ │ \d+ │ 2 │ 0 │ 2 │ 0 │", " ".join(again.stderr.split()))
    assert len(_stream(shared, redis_prefix)) == 2
    # Another start time: the vehicles are recorded again, under new ids.
    later = CliRunner().invoke(app, ["replay", "--start-time", "2025-03-01T09:00:00", "-c", str(cfg), str(partial)])
    assert later.exit_code == 2  # the damaged file still fails part-way
    ids = [e["event_id"] for e in _stream(shared, redis_prefix)]
    assert len(ids) == 4 and len(set(ids)) == 4 and all("20250301T0900" in i for i in ids[2:])


def test_readme_replay_examples_name_a_config_with_their_cameras() -> None:
    """The README's `anpr replay` lines, as written: their config knows every --camera they offer."""
    lines = [ln for ln in (REPO_ROOT / "README.md").read_text().splitlines() if ln.startswith("anpr replay")]
    assert lines
    for line in lines:
        words = shlex.split(line.split("#")[0])
        cfg = load_config(REPO_ROOT / words[words.index("-c") + 1])
        videos = [v for w in words if w.startswith("sample_videos/") for v in sorted(glob(str(REPO_ROOT / w)))]
        offered = re.search(r"--camera ([\w|]+)", line)
        assert videos, line
        for name in offered.group(1).split("|") if offered else []:
            assert camera_for(Path(videos[0]), cfg, name).name == name
