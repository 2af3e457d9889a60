"""The detector gate (anpr/motion.py) and how the lane uses it: pure logic on synthetic frames."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from anpr.config import GateConfig
from anpr.motion import DetectGate, FrameAction, changed_fraction

T0 = datetime(2026, 1, 1, tzinfo=UTC)
DETECT, HOLD, SKIP = FrameAction.DETECT, FrameAction.HOLD, FrameAction.SKIP


def at(frame: int, fps: float = 25.0) -> datetime:
    return T0 + timedelta(seconds=frame / fps)


def scene(square_x: int | None = None, size: int = 80) -> np.ndarray:
    """Grey 320x180 frame; a white square at `square_x` stands for a vehicle."""
    image = np.full((180, 320, 3), 90, np.uint8)
    if square_x is not None:
        image[50 : 50 + size, square_x : square_x + size] = 255
    return image


def actions(gate: DetectGate, frames: list[np.ndarray], fps: float = 25.0) -> list[FrameAction]:
    return [gate.check(at(i, fps), image) for i, image in enumerate(frames)]


@pytest.mark.parametrize(
    ("detect_fps", "expected"),
    [
        (0.0, [DETECT] * 6),
        (12.5, [DETECT, SKIP] * 3),
        (10.0, [DETECT, SKIP, SKIP] * 2),
        (8.0, [DETECT, SKIP, SKIP] * 2),
        (25.0, [DETECT] * 6),
    ],
)
def test_rate_cap_looks_at_most_detect_fps_frames_a_second(detect_fps: float, expected: list[FrameAction]) -> None:
    gate = DetectGate(GateConfig(detect_fps=detect_fps, motion_threshold=0))
    assert actions(gate, [scene(10 * i) for i in range(6)]) == expected


def test_still_scene_is_held_until_something_moves() -> None:
    gate = DetectGate(GateConfig(detect_fps=0, motion_threshold=0.01, max_hold_s=10))
    frames = [scene(), scene(), scene(), scene(100), scene(100), scene(100)]
    assert actions(gate, frames) == [DETECT, HOLD, HOLD, DETECT, HOLD, HOLD]


def test_slow_movement_adds_up_against_the_last_detected_frame() -> None:
    """Each step moves too few pixels to count, but the difference to the detected frame grows."""
    gate = DetectGate(GateConfig(detect_fps=0, motion_threshold=0.02, max_hold_s=10))
    got = actions(gate, [scene(100 + 2 * i) for i in range(12)])
    assert got[0] is DETECT and got[1] is HOLD
    assert DETECT in got[2:], "a creeping vehicle must wake the detector eventually"


def test_detector_runs_at_least_every_max_hold_s_on_a_still_scene() -> None:
    gate = DetectGate(GateConfig(detect_fps=0, motion_threshold=0.01, max_hold_s=0.1))  # 2.5 frames at 25 fps
    assert actions(gate, [scene()] * 7) == [DETECT, HOLD, HOLD, DETECT, HOLD, HOLD, DETECT]


def test_motion_outside_the_roi_is_ignored() -> None:
    left_half = [(0.0, 0.0), (0.45, 0.0), (0.45, 1.0), (0.0, 1.0)]
    gate = DetectGate(GateConfig(detect_fps=0, motion_threshold=0.01, max_hold_s=10), roi=left_half)
    frames = [scene(), scene(200), scene(220), scene(20)]  # the square moves right of the ROI, then into it
    assert actions(gate, frames) == [DETECT, HOLD, HOLD, DETECT]


def test_rate_cap_applies_before_the_motion_check() -> None:
    gate = DetectGate(GateConfig(detect_fps=12.5, motion_threshold=0.01, max_hold_s=10))
    assert actions(gate, [scene(), scene(100), scene(), scene(), scene(200)]) == [DETECT, SKIP, HOLD, SKIP, DETECT]


def test_changed_fraction_counts_only_pixels_beyond_the_delta_and_inside_the_mask() -> None:
    a = np.zeros((10, 10), np.uint8)
    b = a.copy()
    b[0, :5] = 50  # 5 pixels changed a lot
    b[1, :] = 5  # 10 pixels changed a little
    assert changed_fraction(a, b, 10, None) == pytest.approx(0.05)
    mask = np.zeros((10, 10), bool)
    mask[0] = True
    assert changed_fraction(a, b, 10, mask) == pytest.approx(0.5)
    assert changed_fraction(a, b, 10, np.zeros((10, 10), bool)) == 0.0
