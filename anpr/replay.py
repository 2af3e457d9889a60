"""Replay recorded footage through the live stage code, then stop: the developers' main job and the
end-to-end tests' driver.

Every frame is processed (nothing dropped, unlike a live camera), timestamps come from the file
position, and at the end every open track is decided, so a replay is deterministic. Timestamps, and
so event ids, start at `start_time` (default: now): replaying a clip again with the same start time
writes nothing new (the sink recognises each id), with another start time records its vehicles again.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

import cv2

from anpr.capture import CaptureError, ReplayReader
from anpr.config import AnprConfig, CameraConfig
from anpr.events import EventSink, Outcome
from anpr.lane import LaneProcessor, LaneStats
from anpr.passes import PassRegistry
from anpr.recognize import PlateRecognizer
from anpr.schema import PlateEvent


@dataclass
class ReplayResult:
    """One recording's replay: its events as stored (image keys included) and what became of each.

    `error` is set when the file failed part-way: the frames before it were processed and their
    events decided and published.
    """

    video: Path
    events: list[PlateEvent] = field(default_factory=list)
    outcomes: Counter[Outcome] = field(default_factory=Counter)
    stats: LaneStats = field(default_factory=LaneStats)
    frames: int = 0  # decoded from the file, the ones over the rate cap (never passed on) included
    ended: datetime | None = None  # timestamp of the last frame
    error: str | None = None


def frame_count(video: Path) -> int | None:
    """Frames the container says it holds (for the progress bar); None when unknown."""
    cap = cv2.VideoCapture(str(video))
    try:
        n = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
    finally:
        cap.release()
    return n if n > 0 else None


def camera_for(video: Path, cfg: AnprConfig, camera: str | None = None) -> CameraConfig:
    """The camera a recording stands for, with the file as its source.

    A named camera of the config (its lane, ROI and direction mapping), else the config's first
    camera, else a default camera named after the file.
    """
    if camera is not None:
        for cam in cfg.cameras:
            if cam.name == camera:
                return cam.model_copy(update={"source": str(video)})
        known = ", ".join(c.name for c in cfg.cameras) or "none configured"
        raise ValueError(f"no camera named {camera!r} in the config (cameras: {known})")
    if cfg.cameras:
        return cfg.cameras[0].model_copy(update={"source": str(video)})
    name = re.sub(r"[^A-Za-z0-9_.-]", "_", video.stem)[:32] or "replay"
    return CameraConfig(name=name, source=str(video))


def check_input(video: Path, cfg: AnprConfig, camera: str | None = None) -> None:
    """Open the recording and decode its first frame, as replay will: CaptureError (or ValueError for an
    unknown camera) now, before seconds of model loading, rather than after."""
    with ReplayReader(camera_for(video, cfg, camera)) as reader:
        next(iter(reader), None)


def replay(
    video: Path,
    cfg: AnprConfig,
    recognizer: PlateRecognizer,
    sink: EventSink,
    *,
    camera: str | None = None,
    realtime: bool = False,
    start_time: datetime | None = None,
    on_event: Callable[[PlateEvent, Outcome], None] | None = None,
    on_frame: Callable[[int], None] | None = None,
) -> ReplayResult:
    """Run one recording end to end; raises CaptureError for a file that cannot be opened.

    A file that fails part-way does not raise: its result holds the error and the events decided from
    the frames before it. `on_event` sees each event as stored in the stream, and its outcome;
    `on_frame` how many more frames of the file were decoded (those over gate.detect_fps are decoded
    but never passed on, as a live camera does: anpr.capture).
    """
    cam = camera_for(video, cfg, camera)
    result = ReplayResult(video)

    def collect(event: PlateEvent, outcome: Outcome) -> None:
        result.events.append(event)
        result.outcomes[outcome] += 1
        if on_event is not None:
            on_event(event, outcome)

    lane = LaneProcessor(recognizer, cam, cfg, sink, PassRegistry.from_config(cfg))
    previous, sink.on_publish = sink.on_publish, collect
    try:
        with ReplayReader(cam, realtime=realtime, start_time=start_time, max_fps=cfg.gate.detect_fps) as reader:
            try:
                for frame in reader:
                    lane.process(frame.ts, frame.image)
                    result.ended = frame.ts
                    decoded = reader.stats.decoded
                    if on_frame is not None:
                        on_frame(decoded - result.frames)
                    result.frames = decoded
            except CaptureError as exc:
                result.error = str(exc)
            result.frames = reader.stats.decoded
        if result.ended is not None:
            lane.finish(result.ended + timedelta(seconds=cfg.tracker.lost_after_s))
        sink.drain()
    finally:
        sink.on_publish = previous
    result.stats = lane.stats
    return result
