"""Live cameras against a real RTSP server: killed, frozen, unreachable, and read by a slow consumer.

Timeouts here are shorter than the defaults so that each failure plays out in a few seconds.
"""

from __future__ import annotations

import itertools
import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime

import pytest
from capture_support import RtspServer, free_port, wait_for

from anpr.capture import CameraState, LiveReader
from anpr.config import CameraConfig

READ_TIMEOUT_MS = 1000


def camera(source: str, name: str = "cam1", **overrides: object) -> CameraConfig:
    settings: dict[str, object] = {
        "open_timeout_ms": 2000,
        "read_timeout_ms": READ_TIMEOUT_MS,
        "stall_after_s": 0.5,
        "backoff_initial_s": 0.1,
        "backoff_max_s": 0.5,
    }
    settings.update(overrides)
    return CameraConfig.model_validate({"name": name, "source": source, **settings})


def streaming(reader: LiveReader, more_than: int = 0) -> Callable[[], bool]:
    """Condition: the reader streams and has produced more than `more_than` frames."""

    def check() -> bool:
        stats = reader.stats
        return stats.state is CameraState.STREAMING and stats.frames > more_than

    return check


@pytest.mark.slow
def test_reconnects_after_the_server_is_killed_and_restarted(
    rtsp_server: Callable[..., RtspServer],
) -> None:
    server = rtsp_server()
    with LiveReader(camera(server.url)) as reader:
        wait_for(streaming(reader), 10, "first frames")
        before = reader.latest()
        assert before is not None

        server.kill()
        wait_for(lambda: reader.stats.state is CameraState.RECONNECTING, 3, "the loss to be noticed")
        wait_for(lambda: "connection refused" in (reader.stats.last_error or ""), 3, "a refused reopen")
        assert reader.stats.reconnects >= 1

        server.start()
        frames = reader.stats.frames
        wait_for(streaming(reader, frames), 10, "streaming again after the restart")

        after = reader.latest()
        assert after is not None and after.seq > before.seq  # seq runs on across reconnects
        assert (datetime.now(UTC) - after.ts).total_seconds() < 1.0


@pytest.mark.slow
def test_frozen_server_is_seen_as_stalled_and_the_reader_recovers_when_it_thaws(
    rtsp_server: Callable[..., RtspServer],
) -> None:
    server = rtsp_server()
    with LiveReader(camera(server.url, open_timeout_ms=1500)) as reader:
        wait_for(streaming(reader, 10), 10, "first frames")

        server.freeze()
        seen: set[CameraState] = set()

        def reconnecting() -> bool:
            seen.add(reader.stats.state)
            return reader.stats.state is CameraState.RECONNECTING

        detected_s = wait_for(reconnecting, 3 * READ_TIMEOUT_MS / 1000, "the stall to be detected")
        # The watchdog reports the stall while the read is still blocked; the read timeout ends it.
        assert CameraState.STALLED in seen
        assert "read timeout" in (reader.stats.last_error or "")
        print(f"frozen camera detected after {detected_s:.2f} s")

        wait_for(lambda: "sent no stream" in (reader.stats.last_error or ""), 5, "a reopen timing out")
        server.thaw()
        frames = reader.stats.frames
        recovered_s = wait_for(streaming(reader, frames), 10, "streaming again after the thaw")
        print(f"recovered {recovered_s:.2f} s after the thaw")
        assert reader.stats.reconnects >= 1


@pytest.mark.slow
def test_second_camera_keeps_streaming_while_the_first_is_down(
    rtsp_server: Callable[..., RtspServer],
) -> None:
    first_server, second_server = rtsp_server(), rtsp_server()
    with (
        LiveReader(camera(first_server.url, "lane1")) as first,
        LiveReader(camera(second_server.url, "lane2")) as second,
    ):
        wait_for(lambda: streaming(first)() and streaming(second)(), 10, "both cameras")

        first_server.kill()
        wait_for(lambda: first.stats.state is CameraState.RECONNECTING, 3, "the first camera's loss")
        frames = second.stats.frames
        states: set[CameraState] = set()
        deadline = time.monotonic() + 2.0
        while time.monotonic() < deadline:
            states.add(second.stats.state)
            time.sleep(0.05)

        assert states == {CameraState.STREAMING}
        assert second.stats.frames - frames >= 25  # 2 s at 25 fps, with room for a busy machine
        assert first.stats.state is CameraState.RECONNECTING

        first_server.start()
        wait_for(streaming(first, first.stats.frames), 10, "the first camera back")
        assert second.stats.state is CameraState.STREAMING


@pytest.mark.slow
def test_slow_consumer_gets_the_newest_frame_and_drops_are_counted(
    rtsp_server: Callable[..., RtspServer],
) -> None:
    server = rtsp_server()
    taken, lags = [], []
    with LiveReader(camera(server.url)) as reader:
        wait_for(streaming(reader, 30), 10, "the stream to settle past its opening burst")
        deadline = time.monotonic() + 2.0
        for frame in reader:
            lags.append((datetime.now(UTC) - frame.ts).total_seconds())
            taken.append(frame.seq)
            time.sleep(0.2)  # a detector five times slower than the camera
            if time.monotonic() > deadline:
                break
        stats = reader.stats

    assert stats.dropped >= 2 * len(taken)
    assert stats.frames - stats.dropped - len(taken) in (0, 1)  # the newest may still be untaken
    assert all(b - a > 1 for a, b in itertools.pairwise(taken))  # gaps where frames dropped
    assert max(lags) < 0.25  # always a fresh picture, never a backlog


@pytest.mark.slow
def test_corrupt_frame_mid_stream_is_skipped_and_counted(rtsp_server: Callable[..., RtspServer]) -> None:
    server = rtsp_server("damaged.h264")  # frame 60 of every 10 s loop cannot be decoded
    with LiveReader(camera(server.url)) as reader:
        wait_for(lambda: reader.stats.corrupt >= 1, 10, "the damaged frame to go by")
        frames = reader.stats.frames
        wait_for(streaming(reader, frames + 10), 3, "frames after the damaged one")
        stats = reader.stats
    assert (stats.corrupt, stats.reconnects, stats.last_error) == (1, 0, None)


@pytest.mark.parametrize(
    ("source", "reason"),
    [
        ("rtsp://admin:s3cret@127.0.0.1:{port}/cam", "connection refused by 127.0.0.1:{port}"),
        ("99", "cannot open video device 99"),
    ],
)
def test_unreachable_camera_reconnects_with_the_reason(
    source: str, reason: str, caplog: pytest.LogCaptureFixture
) -> None:
    port = free_port()
    source, reason = source.format(port=port), reason.format(port=port)
    caplog.set_level(logging.WARNING, logger="anpr.capture")
    with LiveReader(camera(source, backoff_initial_s=0.05, backoff_max_s=0.1)) as reader:
        wait_for(lambda: reader.stats.reconnects >= 2, 5, "a few reconnect attempts")
        stats = reader.stats
        assert stats.state is CameraState.RECONNECTING and stats.frames == 0
        assert reason in (stats.last_error or "")
        assert reader.latest() is None
    assert reader.stats.state is CameraState.STOPPED
    assert reason in caplog.text
    assert "s3cret" not in caplog.text + (stats.last_error or "")


def test_gives_up_after_max_attempts(caplog: pytest.LogCaptureFixture) -> None:
    source = f"rtsp://127.0.0.1:{free_port()}/cam"
    with LiveReader(camera(source, max_attempts=3, backoff_initial_s=0.05)) as reader:
        assert list(reader) == []  # iteration ends once the reader gives up
        stats = reader.stats
    assert stats.state is CameraState.FAILED and stats.reconnects == 2
    assert "gave up after 3 attempts" in (stats.last_error or "")
    assert "gave up after 3 attempts" in caplog.text
