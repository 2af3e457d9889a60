"""When a lane runs its plate detector: a rate cap, then a cheap motion check.

The detector is the pipeline's main CPU cost (~50 ms a frame on OpenVINO at 640, every frame;
OCR runs only on the few crops the tracker asks for). Two observations make most detector calls
unnecessary:

- The tracker is built for a few detections a second (its `max_jump` rule bridges boxes that no
  longer overlap), so looking at every frame of a 25 fps camera buys little: `detect_fps` caps it.
  Cameras and replays apply the same cap where they read (anpr.capture), so frames over it are
  never even converted; the check here covers sources that do not (image folders, direct callers).
- A lane is empty or holds a stopped vehicle much of the time. When nothing inside the ROI changed
  since the last frame the detector saw, its detections still stand: the lane reuses them (tracks
  stay alive, a car stopped at the booth stays one track) instead of detecting again.

The motion check compares a downscaled, blurred grey frame with the one of the last detection,
not with the previous frame: slow movement adds up until it counts, so a creeping car is never
missed by comparing two nearly equal neighbours.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

import cv2
import numpy as np

from anpr.config import GateConfig

# Slack on the rate cap: frame timestamps jitter (container rounding, capture thread), and a
# frame 1 % early must not wait for the next one, which would halve the rate.
RATE_SLACK = 0.9


def changed_fraction(a: np.ndarray, b: np.ndarray, pixel_delta: int, mask: np.ndarray | None) -> float:
    """Fraction of pixels (inside `mask` when given) whose grey level differs by more than `pixel_delta`."""
    changed = cv2.absdiff(a, b) > pixel_delta
    if mask is None:
        return float(changed.mean())
    inside = int(mask.sum())
    return float(changed[mask].sum()) / inside if inside else 0.0


class FrameAction(StrEnum):
    DETECT = "detect"  # run the detector on this frame
    HOLD = "hold"  # nothing moved since the last detection: its detections still stand
    SKIP = "skip"  # within the rate cap: the frame is not looked at


class DetectGate:
    """Per-camera decision, frame by frame, whether to run the detector; all state lives here.

    `roi` is the lane's polygon in fractions of the frame (CameraConfig.roi): motion outside it
    (the next lane, pedestrians on the pavement) does not wake the detector.
    """

    def __init__(self, cfg: GateConfig, roi: list[tuple[float, float]] | None = None) -> None:
        self.cfg = cfg
        self._roi = roi
        self.reset()

    def reset(self) -> None:
        self._last_looked: datetime | None = None
        self._last_detected: datetime | None = None
        self._reference: np.ndarray | None = None
        self._mask: np.ndarray | None = None

    def _small(self, image: np.ndarray) -> np.ndarray:
        h, w = image.shape[:2]
        width = self.cfg.motion_width
        height = max(1, round(h * width / w))
        small = cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA)
        grey = cv2.cvtColor(small, cv2.COLOR_BGR2GRAY) if small.ndim == 3 else small
        # Blur: sensor noise and compression flicker move single pixels, vehicles move blobs.
        return cv2.GaussianBlur(grey, (3, 3), 0)

    def _roi_mask(self, shape: tuple[int, ...]) -> np.ndarray | None:
        if self._roi is None:
            return None
        if self._mask is None or self._mask.shape != shape:
            h, w = shape[:2]
            points = np.array([(x * (w - 1), y * (h - 1)) for x, y in self._roi], np.float32)
            mask = np.zeros((h, w), np.uint8)
            cv2.fillPoly(mask, [np.round(points).astype(np.int32)], 1)
            self._mask = mask.astype(bool)
        return self._mask

    def check(self, ts: datetime, image: np.ndarray) -> FrameAction:
        """What to do with the frame captured at `ts` (non-decreasing per camera)."""
        cfg = self.cfg
        if (
            cfg.detect_fps > 0
            and self._last_looked is not None
            and (ts - self._last_looked).total_seconds() < RATE_SLACK / cfg.detect_fps
        ):
            return FrameAction.SKIP
        self._last_looked = ts
        if cfg.motion_threshold <= 0:
            return FrameAction.DETECT
        small = self._small(image)
        if (
            self._reference is not None
            and self._last_detected is not None
            and self._reference.shape == small.shape
            and (ts - self._last_detected).total_seconds() < cfg.max_hold_s
            and changed_fraction(small, self._reference, cfg.motion_pixel_delta, self._roi_mask(small.shape))
            < cfg.motion_threshold
        ):
            return FrameAction.HOLD
        self._reference = small
        self._last_detected = ts
        return FrameAction.DETECT
