"""Replay of recordings: every frame, in order, with file-position timestamps; bad files fail clearly."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import cv2
import numpy as np
import pytest
from capture_support import FPS, HEIGHT, WIDTH, frame_index, garble_packet, synthetic_frame, write_clip

from anpr.capture import (
    CameraState,
    CaptureError,
    CaptureMode,
    LiveReader,
    ReplayReader,
    open_source,
    replay_frames,
)
from anpr.config import CameraConfig

START = datetime(2025, 3, 1, 6, 30, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return START + timedelta(seconds=seconds)


def close_to(a: datetime, b: datetime) -> bool:
    return abs((a - b).total_seconds()) < 0.002


@pytest.mark.parametrize(("name", "frames"), [("clip.mp4", 100), ("clip.h264", 250)])
def test_replay_yields_every_frame_with_seq_and_file_position(clips: Path, name: str, frames: int) -> None:
    got = list(replay_frames(clips / name, "lane1-front", start_time=START))

    assert [f.seq for f in got] == list(range(frames))
    assert [frame_index(f.image) for f in got] == list(range(frames))
    # mp4 carries timestamps; raw H.264 has none and is counted at its frame rate
    assert all(close_to(f.ts, at(f.seq / FPS)) for f in got)
    assert {f.camera for f in got} == {"lane1-front"}
    assert got[0].image.shape == (HEIGHT, WIDTH, 3) and got[0].image.dtype == np.uint8


def test_realtime_replay_is_paced_and_fast_replay_is_not(tmp_path: Path) -> None:
    clip = write_clip(tmp_path / "short.mp4", 10)
    durations = {}
    for mode in (CaptureMode.REPLAY, CaptureMode.REPLAY_REALTIME):
        started = time.monotonic()
        with open_source(CameraConfig(name="cam", source=str(clip)), mode) as source:
            assert len(list(source)) == 10
            assert source.stats.state is CameraState.ENDED
        durations[mode] = time.monotonic() - started

    assert durations[CaptureMode.REPLAY_REALTIME] >= 9 / FPS - 0.01  # last frame sits at 0.36 s
    assert durations[CaptureMode.REPLAY] < durations[CaptureMode.REPLAY_REALTIME]


def test_corrupt_frame_mid_file_is_skipped_and_counted(clips: Path, tmp_path: Path) -> None:
    damaged = garble_packet(clips / "clip.mp4", tmp_path / "damaged.mp4", index=60)
    source = ReplayReader(CameraConfig(name="cam", source=str(damaged)), start_time=START)

    got = list(source)

    assert len(got) == 99 and [f.seq for f in got] == list(range(99))
    # the frame at 2.40 s is gone; its neighbours keep their file positions
    assert close_to(got[59].ts, at(59 / FPS)) and close_to(got[60].ts, at(61 / FPS))
    assert frame_index(got[-1].image) == 99
    stats = source.stats
    assert (stats.state, stats.frames, stats.corrupt) == (CameraState.ENDED, 99, 1)


def _empty(path: Path) -> None:
    path.write_bytes(b"")


def _cut_before_index(path: Path) -> None:
    # A recording interrupted before the mp4 index (moov atom) at its end was written.
    write_clip(path, 100)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _junk(path: Path) -> None:
    path.write_bytes(np.random.default_rng(7).integers(0, 256, 20_000, dtype=np.uint8).tobytes())


def _text(path: Path) -> None:
    path.write_text("not a video\n")


@pytest.mark.parametrize(
    ("name", "make", "message"),
    [
        ("empty.mp4", _empty, "is empty (0 bytes)"),
        ("cut.mp4", _cut_before_index, "is not a readable video"),
        ("junk.mp4", _junk, "is not a readable video"),
        ("notes.txt", _text, "is not a readable video"),
        ("missing.mp4", None, "no such video file or image folder"),
    ],
)
def test_bad_file_is_a_clear_capture_error(
    tmp_path: Path, name: str, make: Callable[[Path], None] | None, message: str
) -> None:
    path = tmp_path / name
    if make is not None:
        make(path)
    for open_it in (
        lambda: replay_frames(path, "cam"),
        lambda: LiveReader(CameraConfig(name="cam", source=str(path))),  # a recording never heals
    ):
        with pytest.raises(CaptureError, match=re.escape(message)) as err:
            open_it()
        assert str(path) in str(err.value) and "camera cam" in str(err.value)


def test_file_cut_short_fails_where_decoding_stops(tmp_path: Path) -> None:
    # Index at the front (faststart), data cut in half: opens fine, then runs out.
    clip = write_clip(tmp_path / "faststart.mp4", 100, faststart=True)
    clip.write_bytes(clip.read_bytes()[: clip.stat().st_size // 2])
    source = ReplayReader(CameraConfig(name="cam", source=str(clip)))
    got = []

    with pytest.raises(CaptureError, match=r"stops decoding at frame \d+ of 100: the file is truncated"):
        got.extend(source)

    assert 20 < len(got) < 80
    assert [frame_index(f.image) for f in got] == list(range(len(got)))
    assert source.stats.state is CameraState.FAILED and "truncated" in (source.stats.last_error or "")


def test_image_folder_in_natural_order_skipping_unreadable_images(tmp_path: Path) -> None:
    for index in range(12):
        suffix = ".png" if index % 2 else ".jpg"
        cv2.imwrite(str(tmp_path / f"frame_{index + 1}{suffix}"), synthetic_frame(index))
    (tmp_path / "frame_5.jpg").write_bytes(b"\xff\xd8 not really a jpeg")  # index 4
    (tmp_path / "README.txt").write_text("ignored: not an image\n")
    cfg = CameraConfig(name="cam", source=str(tmp_path), default_fps=10)
    source = ReplayReader(cfg, start_time=START)

    got = list(source)

    assert [frame_index(f.image) for f in got] == [0, 1, 2, 3, 5, 6, 7, 8, 9, 10, 11]
    assert [f.seq for f in got] == list(range(11))
    assert [round((f.ts - START).total_seconds(), 3) for f in got][3:5] == [0.3, 0.5]
    assert (source.stats.frames, source.stats.corrupt) == (11, 1)


def test_empty_image_folder_is_a_clear_capture_error(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("no images here\n")
    with pytest.raises(CaptureError, match="holds no images"):
        replay_frames(tmp_path, "cam")


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("rtsp://user:hunter2@10.0.0.5/stream1", "replay needs a video file or an image folder"),
        ("0", "replay needs a video file or an image folder"),
        ("http://10.0.0.5/video.mjpg", "unsupported URL scheme 'http'"),
    ],
)
def test_replay_refuses_live_sources(source: str, message: str) -> None:
    with pytest.raises(CaptureError, match=message) as err:
        replay_frames(source, "cam")
    assert "hunter2" not in str(err.value)


def test_recording_as_live_source_plays_in_real_time_and_ends(tmp_path: Path) -> None:
    clip = write_clip(tmp_path / "short.mp4", 15)
    started = time.monotonic()
    with LiveReader(CameraConfig(name="cam", source=str(clip))) as camera:
        got = list(camera)
        stats = camera.stats
    elapsed = time.monotonic() - started

    assert elapsed >= 14 / FPS - 0.01
    assert stats.state is CameraState.ENDED and stats.frames == 15
    assert len(got) + stats.dropped == 15
    assert [f.seq for f in got] == sorted({f.seq for f in got})


def test_stopping_a_replay_part_way_releases_it(clips: Path) -> None:
    source = ReplayReader(CameraConfig(name="cam", source=str(clips / "clip.mp4")))
    for frame in source:
        if frame.seq == 4:
            break
    source.close()  # the loop left the generator suspended: close() is what ends it
    assert (source.stats.state, source.stats.frames) == (CameraState.STOPPED, 5)
    assert list(source) == []


@pytest.mark.parametrize("name", ["clip.mp4", "clip.h264"])
def test_rate_cap_passes_on_one_frame_per_interval_and_counts_the_rest_as_skipped(clips: Path, name: str) -> None:
    """max_fps 5 on a 25 fps file: every 5th frame, at its own position; the others decoded, counted, not yielded."""
    reader = ReplayReader(CameraConfig(name="cam", source=str(clips / name)), start_time=START, max_fps=5)
    got = list(reader)
    total = 100 if name == "clip.mp4" else 250

    assert [frame_index(f.image) for f in got] == list(range(0, total, 5))
    assert all(close_to(f.ts, at(frame_index(f.image) / FPS)) for f in got)
    assert [f.seq for f in got] == list(range(len(got)))
    assert reader.stats.frames == len(got) and reader.stats.skipped == total - len(got)
    assert reader.stats.state is CameraState.ENDED


def test_rate_cap_on_a_recording_played_live(tmp_path: Path) -> None:
    clip = write_clip(tmp_path / "short.mp4", 25)
    with LiveReader(CameraConfig(name="cam", source=str(clip)), max_fps=5) as camera:
        got = list(camera)
        stats = camera.stats

    assert stats.state is CameraState.ENDED and stats.frames == 5 and stats.skipped == 20
    assert [frame_index(f.image) for f in got] == sorted({frame_index(f.image) for f in got} & {0, 5, 10, 15, 20})
    assert len(got) + stats.dropped == 5
