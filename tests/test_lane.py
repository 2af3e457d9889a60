"""The lane stage (anpr/lane.py): crops cut by the frame's edge, with scripted detector and OCR."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from test_motion import at, scene  # the gate's synthetic frames

from anpr.config import AnprConfig, CameraConfig, GateConfig
from anpr.events import SinkStats
from anpr.lane import EDGE_WEIGHT, LaneHandler, LaneProcessor, edge_weight
from anpr.passes import PassStats
from anpr.recognize import PlateRecognizer
from anpr.runtime.health import CAMERA_COUNTERS, WORKER_COUNTERS
from anpr.schema import Box, FrameRef, PlateDetection, PlateEvent, PlateRead, Side

T0 = datetime(2026, 1, 1, tzinfo=UTC)
W, H = 1280, 720


@pytest.mark.parametrize(
    ("box", "weight"),
    [
        (Box(600, 300, 700, 330), 1.0),
        (Box(1200, 500, 1280, 540), EDGE_WEIGHT),  # right edge
        (Box(0, 500, 80, 540), EDGE_WEIGHT),  # left edge
        (Box(600, 690, 700, 719), EDGE_WEIGHT),  # bottom edge
        (Box(600, 3, 700, 30), EDGE_WEIGHT),  # within 1 % of the top
        (Box(1150, 500, 1260, 540), 1.0),  # 20 px from the edge: whole
    ],
)
def test_edge_weight(box: Box, weight: float) -> None:
    assert edge_weight(box, W, H) == weight


class RecedingPlate:
    """A plate entering at the right edge and driving away (up and smaller); while the edge cuts
    it, the OCR confidently reads the characters still in view."""

    def __init__(self, text: str, cut_text: str) -> None:
        self.text, self.cut_text = text, cut_text
        self.frame = 0
        self.box = Box(0, 0, 1, 1)

    def detect(self, image: np.ndarray) -> list[PlateDetection]:
        width = 120 - 4 * self.frame
        x2 = min(float(W), W + 40 - 30 * self.frame)
        y = 560 - 12 * self.frame
        self.box = Box(x2 - width, y, x2, y + width / 4)
        self.frame += 1
        return [PlateDetection(self.box, 0.9)]

    def read_batch(self, crops: list[np.ndarray]) -> list[PlateRead | None]:
        return [self.read(c) for c in crops]

    def read(self, crop: np.ndarray) -> PlateRead:
        if edge_weight(self.box, W, H) < 1:
            return PlateRead(self.cut_text, 0.99, (0.99,) * len(self.cut_text))
        return PlateRead(self.text, 0.96, (0.96,) * len(self.text))


class NullSink:
    def publish(self, *args: object) -> str:
        return "written"

    def drain(self) -> None:
        pass


class NoPasses:
    def link(self, event: PlateEvent, side: Side) -> PlateEvent:
        return event


def test_a_plate_cut_by_the_frame_edge_is_read_again_whole_and_the_whole_read_wins() -> None:
    cfg = AnprConfig(gate=GateConfig(detect_fps=0, motion_threshold=0))
    plate = RecedingPlate("IS27RVT", "IS27RV")
    camera = CameraConfig(name="cam", source="x.mp4", approach_direction="entry")
    events: list[PlateEvent] = []
    lane = LaneProcessor(
        PlateRecognizer(plate, plate, cfg),  # type: ignore[arg-type]
        camera,
        cfg,
        NullSink(),  # type: ignore[arg-type]
        NoPasses(),  # type: ignore[arg-type]
        on_event=events.append,
    )
    image = np.random.default_rng(0).integers(0, 255, (H, W, 3), dtype=np.uint8)  # same sharpness everywhere
    for i in range(15):  # 5 fps: the first two looks touch the edge
        lane.process(T0 + timedelta(seconds=i / 5), image)
    lane.finish(T0 + timedelta(seconds=5))

    assert lane.stats.ocr_calls >= 2, "the whole plate, smaller than the cut one, was still read"
    assert [(e.plate, e.direction.value) for e in events] == [("IS27RVT", "exit")]


# -- the lane with the detector gate (anpr/motion.py) ----------------------------------------------


class CountingDetector:
    def __init__(self) -> None:
        self.calls = 0

    def detect(self, image: np.ndarray) -> list[PlateDetection]:
        self.calls += 1
        return [PlateDetection(Box(100, 60, 180, 80), 0.9)]


class NoReader:
    def read_batch(self, crops: list[np.ndarray]) -> list[PlateRead | None]:
        return [None] * len(crops)


def lane(gate: GateConfig) -> tuple[LaneProcessor, CountingDetector]:
    cfg = AnprConfig(gate=gate)
    detector = CountingDetector()
    recognizer = PlateRecognizer(detector, NoReader(), cfg)
    camera = CameraConfig(name="cam", source="x.mp4")
    return LaneProcessor(recognizer, camera, cfg, NullSink(), NoPasses()), detector  # type: ignore[arg-type]


def test_lane_reuses_detections_on_held_frames_and_keeps_the_track_alive() -> None:
    processor, detector = lane(GateConfig(detect_fps=0, motion_threshold=0.01, max_hold_s=60))
    for i in range(100):  # 4 s of a still scene: longer than tracker.lost_after_s
        processor.process(at(i), scene(100))
    assert detector.calls == 1
    assert (processor.stats.detected_frames, processor.stats.held_frames) == (1, 99)
    assert processor.tracker.stats.tracks == 1, "held detections keep the stopped vehicle's track alive"


def test_lane_skips_frames_over_the_rate_cap() -> None:
    processor, detector = lane(GateConfig(detect_fps=5, motion_threshold=0))
    for i in range(25):
        processor.process(at(i), scene(100))
    assert detector.calls == 5
    assert processor.stats.frames == 25
    assert processor.tracker.stats.tracks == 1


# -- the live worker's handler: its counters for /metrics ------------------------------------------

PLATE = Box(100, 60, 180, 80)


def still_lane(plate: int | None) -> np.ndarray:
    """A 320x180 lane; `plate`: the grey level of a plate at PLATE, None for an empty lane."""
    image = np.full((180, 320, 3), 90, np.uint8)
    if plate is not None:
        image[60:80, 100:180] = plate
    return image


class PaintedPlates:
    """Detects a plate wherever one is painted; reads it only when it is white."""

    def detect(self, image: np.ndarray) -> list[PlateDetection]:
        return [PlateDetection(PLATE, 0.9)] if image[70, 140, 0] != 90 else []

    def read_batch(self, crops: list[np.ndarray]) -> list[PlateRead | None]:
        return [PlateRead("AA1234BB", 0.95, (0.95,) * 8) if crop.max() == 255 else None for crop in crops]


class CountingSink(NullSink):
    def __init__(self) -> None:
        self.stats = SinkStats()

    def publish(self, *args: object) -> str:
        self.stats.written += 1
        return "written"


class CountingPasses(NoPasses):
    def __init__(self) -> None:
        self.stats = PassStats()

    def link(self, event: PlateEvent, side: Side) -> PlateEvent:
        self.stats.recorded += 1
        return event


def test_lane_handler_counters_are_its_lanes_sinks_and_registrys_totals() -> None:
    # 25 frames at 25 fps, detector capped at 5 fps: 5 looks, of which the still scene holds 4.
    gate = GateConfig(detect_fps=5, motion_threshold=0.01, max_hold_s=60)
    plates = {"white": 255, "grey": 200, "empty": None}  # read, illegible, no vehicle
    cfg = AnprConfig(gate=gate, cameras=[CameraConfig(name=name, source="x.mp4") for name in plates])
    reader = PaintedPlates()
    recognizer = PlateRecognizer(reader, reader, cfg)
    handler = LaneHandler(cfg, recognizer=recognizer, sink=CountingSink(), passes=CountingPasses())  # type: ignore[arg-type]
    for i in range(25):
        for camera, plate in plates.items():
            handler.handle(FrameRef(camera, 0, i, at(i), 180, 320), still_lane(plate))
    handler.close()

    counters = handler.counters()
    names = [
        "lane_frames_detected",
        "lane_frames_held",
        "lane_frames_skipped",
        "lane_detections",
        "lane_tracks",
        "lane_ocr_calls",
        "lane_reads",
        "lane_events",
        "lane_unread_tracks",
    ]
    assert {camera: [counters[camera, name] for name in names] for camera in plates} == {
        "white": [1, 4, 20, 1, 1, 1, 1, 1, 0],
        "grey": [1, 4, 20, 1, 1, 1, 0, 0, 1],
        "empty": [1, 4, 20, 0, 0, 0, 0, 0, 0],
    }
    assert (counters["", "sink_events_written"], counters["", "passes_recorded"]) == (1, 1)
    rest = {key for key, total in counters.items() if total and key[1] not in names}
    assert rest == {("", "sink_events_written"), ("", "passes_recorded")}
    # Every counter has a metric, every metric a counter: anpr.runtime.health exports only the names it knows.
    assert {name for camera, name in counters if camera} == set(CAMERA_COUNTERS)
    assert {name for camera, name in counters if not camera} == set(WORKER_COUNTERS)
