"""Replay recorded footage through the live stage code, then stop: the developers' main job and the
end-to-end tests' driver.

Every frame is processed (nothing dropped, unlike a live camera), timestamps come from the file
position, and at the end every open track is decided, so a replay is deterministic.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

import cv2

from anpr.capture import ReplayReader
from anpr.config import AnprConfig, CameraConfig
from anpr.events import EventSink
from anpr.lane import LaneProcessor, LaneStats
from anpr.recognize import PlateRecognizer
from anpr.schema import PlateEvent


@dataclass
class ReplayResult:
    video: Path
    events: list[PlateEvent] = field(default_factory=list)
    stats: LaneStats = field(default_factory=LaneStats)


def frame_count(video: Path) -> int | None:
    """Frames the container says it holds (for the progress bar); None when unknown."""
    cap = cv2.VideoCapture(str(video))
    try:
        n = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
    finally:
        cap.release()
    return n if n > 0 else None


def camera_for(video: Path, cfg: AnprConfig) -> CameraConfig:
    """The camera a recording stands for: the config's first camera (its lane, ROI and direction
    mapping) with the file as source, or a default camera named after the file."""
    if cfg.cameras:
        return cfg.cameras[0].model_copy(update={"source": str(video)})
    name = re.sub(r"[^A-Za-z0-9_.-]", "_", video.stem)[:32] or "replay"
    return CameraConfig(name=name, source=str(video))


def replay(
    video: Path,
    cfg: AnprConfig,
    recognizer: PlateRecognizer,
    sink: EventSink,
    *,
    realtime: bool = False,
    start_time: datetime | None = None,
    on_event: Callable[[PlateEvent], None] | None = None,
    on_frame: Callable[[], None] | None = None,
) -> ReplayResult:
    """Run one recording end to end; raises CaptureError for a file that cannot be decoded."""
    camera = camera_for(video, cfg)
    result = ReplayResult(video)

    def collect(event: PlateEvent) -> None:
        result.events.append(event)
        if on_event is not None:
            on_event(event)

    lane = LaneProcessor(recognizer, camera, cfg, sink, on_event=collect)
    last = None
    with ReplayReader(camera, realtime=realtime, start_time=start_time) as reader:
        for frame in reader:
            lane.process(frame.ts, frame.image)
            last = frame.ts
            if on_frame is not None:
                on_frame()
    if last is not None:
        lane.finish(last + timedelta(seconds=cfg.tracker.lost_after_s))
    sink.drain()
    result.stats = lane.stats
    return result
