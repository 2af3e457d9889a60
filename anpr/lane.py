"""The per-camera stage: frame in, plate events out. Live workers and `anpr replay` both run it.

Per frame: ask the gate (anpr/motion.py) whether to run the detector at all, detect plates
(inside the lane's ROI), let the tracker say which crops are worth reading, OCR only those, then
hand decided passes to the lane registry (anpr/passes.py: a trailer's plate gets the event id of its
tractor, seen by another camera of the lane) and on to the event sink. Both gates exist for CPU: the
tracker gates OCR (the costliest call per crop), the detector gate caps detector calls per second and
skips still scenes (the detector is the costliest call per frame); docs/performance.md has the figures.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

import cv2
import numpy as np

from anpr.config import AnprConfig, CameraConfig
from anpr.events import EventSink
from anpr.motion import DetectGate, FrameAction
from anpr.passes import PassRegistry
from anpr.recognize import PlateRecognizer
from anpr.schema import Box, FrameRef, PlateDetection, PlateEvent, utc_now
from anpr.track import Tracker

log = logging.getLogger(__name__)

# The vehicle crop is cut around the plate: no vehicle detector runs. Fractions of the plate box:
# a car front is ~4 plate widths wide and its windscreen ~5 plate heights above the plate.
VEHICLE_AROUND = (1.6, 5.0, 1.6, 1.5)  # left, up, right, down
JPEG_QUALITY = 90


def sharpness(crop: np.ndarray) -> float:
    """Variance of the Laplacian: higher for a crisper crop; only compared within one track."""
    if crop.size == 0:
        return 0.0
    grey = cv2.cvtColor(crop, cv2.COLOR_BGR2GRAY) if crop.ndim == 3 else crop
    return float(cv2.Laplacian(grey, cv2.CV_64F).var())


# A plate box this close to the frame's edge (fraction of the frame) may be cut off by it.
EDGE_MARGIN = 0.01
EDGE_WEIGHT = 0.2


def edge_weight(box: Box, width: int, height: int) -> float:
    """`EDGE_WEIGHT` for a box touching the frame's edge, else 1: a weight on the crop's quality.

    A receding vehicle's plate is largest, so best by area, when it enters the frame, where the edge
    may still cut off characters ("IS27RV" for IS27RVT, measured on lane_day with frames dropped);
    the tracker reads a later, whole crop only if it beats the best so far, so a cut crop must not
    count as the best (and its read is marked `cut` for the vote).
    """
    mx, my = EDGE_MARGIN * width, EDGE_MARGIN * height
    cut = box.x1 <= mx or box.y1 <= my or box.x2 >= width - mx or box.y2 >= height - my
    return EDGE_WEIGHT if cut else 1.0


def _jpeg(image: np.ndarray) -> bytes | None:
    if image.size == 0:
        return None
    ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    return buf.tobytes() if ok else None


def _cut(image: np.ndarray, box: Box) -> np.ndarray:
    return image[int(box.y1) : int(np.ceil(box.y2)), int(box.x1) : int(np.ceil(box.x2))]


def vehicle_box(plate: Box, width: int, height: int) -> Box:
    left, up, right, down = VEHICLE_AROUND
    return Box(
        max(0.0, plate.x1 - left * plate.width),
        max(0.0, plate.y1 - up * plate.height),
        min(float(width), plate.x2 + right * plate.width),
        min(float(height), plate.y2 + down * plate.height),
    )


@dataclass(slots=True)
class LaneStats:
    frames: int = 0
    detected_frames: int = 0  # frames the detector ran on (the rest: skipped by the gate or held)
    held_frames: int = 0  # nothing moved since the last detection: its detections were reused
    detections: int = 0
    outside_roi: int = 0
    ocr_calls: int = 0
    events: int = 0


class LaneProcessor:
    """Detector + tracker + OCR + registry + sink for one camera; all per-camera state lives here."""

    def __init__(
        self,
        recognizer: PlateRecognizer,
        camera: CameraConfig,
        cfg: AnprConfig,
        sink: EventSink,
        passes: PassRegistry,
        on_event: Callable[[PlateEvent], None] | None = None,
    ) -> None:
        self.recognizer = recognizer
        self.camera = camera
        self.tracker = Tracker(cfg.tracker, cfg.lane_of(camera))
        self.sink = sink
        self.passes = passes
        self.on_event = on_event
        self.stats = LaneStats()
        self.gate = DetectGate(cfg.gate, camera.roi)
        self._held: list[PlateDetection] = []  # the last detected frame's detections, for HOLD frames
        self._roi: np.ndarray | None = None if camera.roi is None else np.array(camera.roi, np.float32)

    def _in_roi(self, det: PlateDetection, width: int, height: int) -> bool:
        if self._roi is None:
            return True
        cx, cy = det.box.center
        return cv2.pointPolygonTest(self._roi, (cx / width, cy / height), False) >= 0

    def process(self, ts: datetime, image: np.ndarray) -> list[PlateEvent]:
        """Run one frame through the lane; returns the events decided at this frame."""
        self.stats.frames += 1
        h, w = image.shape[:2]
        action = self.gate.check(ts, image)
        if action is FrameAction.SKIP:
            return self._emit(ts, final=False)
        if action is FrameAction.HOLD:
            # The scene is as the detector last saw it: feeding its boxes again keeps the tracks of
            # stopped vehicles alive; their crops are no better than before, so they are not judged
            # again (quality 0: the tracker asks no OCR for them).
            self.stats.held_frames += 1
            dets = self._held
        else:
            self.stats.detected_frames += 1
            found = self.recognizer.detector.detect(image)
            dets = [d for d in found if self._in_roi(d, w, h)]
            self.stats.detections += len(dets)
            self.stats.outside_roi += len(found) - len(dets)
            self._held = dets
        crops = [self.recognizer.crop(image, d.box) for d in dets]
        edges = [edge_weight(d.box, w, h) for d in dets]
        held = action is FrameAction.HOLD
        focus = [0.0 if held else sharpness(c) * e for c, e in zip(crops, edges, strict=True)]
        wanted = [
            (a, crop, edge)
            for a, crop, edge in zip(self.tracker.associate(ts, dets, focus), crops, edges, strict=True)
            if a.should_read
        ]
        self.stats.ocr_calls += len(wanted)
        readings = self.recognizer.read_crops([crop for _, crop, _ in wanted], [a.detection for a, _, _ in wanted])
        for (a, crop, edge), reading in zip(wanted, readings, strict=True):
            result = reading.result
            vehicle = _cut(image, vehicle_box(a.detection.box, w, h)) if result else np.empty(0)
            self.tracker.add_read(
                a.track_id,
                ts,
                result,
                plate_jpeg=_jpeg(crop) if result else None,
                vehicle_jpeg=_jpeg(vehicle) if result else None,
                cut=edge < 1.0,
            )
        return self._emit(ts, final=False)

    def finish(self, now: datetime) -> list[PlateEvent]:
        """End of stream (replay) or shutdown: decide every open track."""
        return self._emit(now, final=True)

    def idle(self, now: datetime) -> list[PlateEvent]:
        """No frame this tick (camera stalled): tracks still end on time, the spool still drains."""
        events = self._emit(now, final=False)
        self.sink.drain()
        return events

    def _emit(self, now: datetime, final: bool) -> list[PlateEvent]:
        events = []
        for e in self.tracker.flush(now, final=final):
            # Linked before it is published: an event in the stream is never amended.
            event = self.passes.link(e.event, e.side)
            outcome = self.sink.publish(event, e.plate_jpeg, e.vehicle_jpeg)
            log.info("event %s %s %s (%s)", event.plate, event.direction, event.event_id, outcome)
            self.stats.events += 1
            events.append(event)
            if self.on_event is not None:
                self.on_event(event)
        return events


class LaneHandler:
    """A live worker's FrameHandler (anpr.runtime.stages): one LaneProcessor per camera it serves.

    Built inside the worker process, so the models load there and are never pickled.
    """

    def __init__(
        self,
        cfg: AnprConfig,
        *,
        recognizer: PlateRecognizer | None = None,
        sink: EventSink | None = None,
        passes: PassRegistry | None = None,
    ) -> None:
        """The parts default to those `cfg` describes (models loaded, Redis clients made); tests pass fakes."""
        self.cfg = cfg
        self.recognizer = recognizer if recognizer is not None else PlateRecognizer.from_config(cfg)
        self.sink = sink if sink is not None else EventSink.from_config(cfg.redis, cfg.events)
        self.passes = passes if passes is not None else PassRegistry.from_config(cfg)
        self.cameras = {c.name: c for c in cfg.cameras}
        self.lanes: dict[str, LaneProcessor] = {}

    def _lane(self, camera: str) -> LaneProcessor:
        if camera not in self.lanes:
            self.lanes[camera] = LaneProcessor(self.recognizer, self.cameras[camera], self.cfg, self.sink, self.passes)
        return self.lanes[camera]

    def handle(self, ref: FrameRef, image: np.ndarray) -> None:
        self._lane(ref.camera).process(ref.ts, image)

    def flush(self, now: datetime) -> None:
        for lane in self.lanes.values():
            lane.idle(now)

    def close(self) -> None:
        now = utc_now()
        for lane in self.lanes.values():
            lane.finish(now)
        self.sink.drain()

    def counters(self) -> dict[tuple[str, str], int]:
        """What the lanes produced, for /metrics (anpr.runtime.health names and documents each counter).

        Per camera from its lane and tracker; the sink and the lane registry serve every camera of
        this worker, so theirs go under camera "".
        """
        out: dict[tuple[str, str], int] = {}
        for camera, lane in self.lanes.items():
            s, t = lane.stats, lane.tracker.stats
            totals = {
                "lane_frames_detected": s.detected_frames,
                "lane_frames_held": s.held_frames,
                "lane_frames_skipped": s.frames - s.detected_frames - s.held_frames,
                "lane_detections": s.detections,
                "lane_detections_outside_roi": s.outside_roi,
                "lane_tracks": t.tracks,
                "lane_ocr_calls": s.ocr_calls,
                "lane_reads": t.reads,
                "lane_reads_rejected": t.rejected_reads,
                "lane_events": s.events,
                "lane_duplicate_passes": t.duplicates,
                "lane_replaced_tracks": t.replaced,
                "lane_unread_tracks": t.unread,
            }
            out |= {(camera, name): total for name, total in totals.items()}
        sink, passes = self.sink.stats, self.passes.stats
        worker = {
            "sink_events_written": sink.written,
            "sink_events_duplicate": sink.duplicates,
            "sink_events_spooled": sink.spooled,
            "sink_events_refused": sink.refused,
            "sink_images_dropped": sink.images_dropped,
            "sink_redis_errors": sink.redis_errors,
            "sink_spool_files_bad": sink.bad_spool_files,
            "sink_stream_trimmed": sink.trimmed,
            "passes_recorded": passes.recorded,
            "passes_trailer_links": passes.linked,
            "passes_own_rear": passes.own_rear,
            "passes_unchecked": passes.unchecked,
            "passes_redis_errors": passes.redis_errors,
        }
        return out | {("", name): total for name, total in worker.items()}


def build_lane_handler(cfg: AnprConfig) -> LaneHandler:
    """Picklable handler factory: `functools.partial(build_lane_handler, cfg)`."""
    return LaneHandler(cfg)
