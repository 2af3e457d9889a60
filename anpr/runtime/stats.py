"""Per-process counters: kept by each child, shipped to the supervisor as small reports.

Totals in a report are cumulative since the child started, so a report dropped on a full stats
queue loses nothing but freshness: the next one carries the same totals and more. Rates and
latency percentiles cover only the interval since the previous report.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import NamedTuple

_MAX_SAMPLES = 4096
"""Latency samples kept per interval: ~160 s of one 25 fps camera, far more than one interval.
Beyond it the oldest are overwritten, which still leaves a fair sample for the percentiles."""

Counters = Mapping[tuple[str, str], int]
"""What a stage produced, as (camera, counter name) -> total since its process started; camera "" holds
counters of the whole process (a worker's event sink), which belong to no one camera."""


class CameraFrames(NamedTuple):
    """A worker's frames of one camera: whether capture reaches the worker, for /health."""

    camera: str
    frames: int  # handled since this worker started
    recent: int  # handled in the meter's window (runtime.health.lane_idle_s) before the report
    last_at: float  # wall clock when the latest one was handled


@dataclass(frozen=True, slots=True)
class StatsReport:
    """One child's counters at `sent_at` (wall clock, time.time()), as the supervisor receives them."""

    name: str  # "camera:cam1", "worker:0"
    pid: int
    sent_at: float
    state: str  # camera: its capture state ("streaming", "reconnecting"...); worker: "loading", "running", "draining"
    frames: int  # processed since this child started
    dropped: int  # since this child started; camera: worker queue full; worker: frame overwritten before read
    fps: float  # frames per second over the last interval
    latency_p50_s: float | None  # capture time -> done, over the last interval; None when no frame
    latency_p95_s: float | None
    # (camera, counter name, total) from a worker's FrameHandler, as in Counters; cumulative like `frames`
    counters: tuple[tuple[str, str, int], ...] = ()
    state_since: float | None = None  # wall clock since which `state` has held; None: unknown
    cameras: tuple[CameraFrames, ...] = ()  # worker: per camera it handled frames of


def _percentile(ordered: list[float], q: float) -> float:
    """Nearest-rank percentile of a sorted, non-empty list: no interpolation needed for monitoring."""
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


class StageMeter:
    """Counts one stage's work; `done`/`drop` are called on the hot path, `report` by a reporter thread."""

    def __init__(self, window_s: float = 10.0) -> None:
        self._lock = threading.Lock()
        self._window_s = window_s
        self._per_camera: dict[str, tuple[int, deque[float], float]] = {}  # frames, recent monotonic times, wall
        self._frames = 0
        self._dropped = 0
        self._samples: list[float] = []
        self._next_sample = 0
        self._window_frames = 0
        self._window_start = time.monotonic()
        self._counters: tuple[tuple[str, str, int], ...] = ()

    def done(self, latency_s: float, camera: str | None = None) -> None:
        """One frame handled, `latency_s` after it was captured; `camera` counts it for that camera too."""
        with self._lock:
            if camera is not None:
                frames, recent, _ = self._per_camera.get(camera) or (0, deque(), 0.0)
                now = time.monotonic()
                recent.append(now)
                while recent[0] < now - self._window_s:
                    recent.popleft()
                self._per_camera[camera] = (frames + 1, recent, time.time())
            self._frames += 1
            self._window_frames += 1
            if len(self._samples) < _MAX_SAMPLES:
                self._samples.append(latency_s)
            else:
                self._samples[self._next_sample] = latency_s
                self._next_sample = (self._next_sample + 1) % _MAX_SAMPLES

    def drop(self, count: int = 1) -> None:
        """Frames given up on: counted, never waited for."""
        with self._lock:
            self._dropped += count

    def set_counters(self, counters: Counters) -> None:
        """The stage's latest totals, sent with every report until replaced: a flat tuple keeps reports small."""
        flat = tuple((camera, counter, int(total)) for (camera, counter), total in counters.items())
        with self._lock:
            self._counters = flat

    def report(self, name: str, pid: int, state: str, state_since: float | None = None) -> StatsReport:
        """Totals so far plus rate and latency since the previous call, which starts a new interval."""
        now = time.monotonic()
        with self._lock:
            cameras = tuple(
                CameraFrames(camera, frames, sum(1 for t in recent if t >= now - self._window_s), last_at)
                for camera, (frames, recent, last_at) in self._per_camera.items()
            )
            samples, self._samples, self._next_sample = self._samples, [], 0
            window_frames, self._window_frames = self._window_frames, 0
            window_start, self._window_start = self._window_start, now
            frames, dropped, counters = self._frames, self._dropped, self._counters
        samples.sort()
        elapsed = now - window_start
        return StatsReport(
            name=name,
            pid=pid,
            sent_at=time.time(),
            state=state,
            frames=frames,
            dropped=dropped,
            fps=window_frames / elapsed if elapsed > 0 else 0.0,
            latency_p50_s=_percentile(samples, 0.50) if samples else None,
            latency_p95_s=_percentile(samples, 0.95) if samples else None,
            counters=counters,
            state_since=state_since,
            cameras=cameras,
        )
