"""Fakes of our own runtime interfaces, importable by the spawned child processes.

Children are spawned, so everything they run must be importable by module name: the test
directory is on sys.path in pytest (rootdir-relative import) and spawn hands sys.path down.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from anpr.runtime.process import ChildContext
from anpr.schema import Frame, FrameRef


def shm_segments(pid: int | None = None) -> set[str]:
    """Ring segments in /dev/shm, of one creating process or all."""
    prefix = "anpr_" if pid is None else f"anpr_{pid}_"
    return {p.name for p in Path("/dev/shm").iterdir() if p.name.startswith(prefix)}


def pixel(seq: int) -> int:
    """The value every pixel of frame `seq` holds: a torn or misplaced image shows mixed values."""
    return seq % 251


def make_frame(camera: str, seq: int, height: int = 24, width: int = 32) -> Frame:
    return Frame(camera, seq, datetime.now(UTC), np.full((height, width, 3), pixel(seq), np.uint8))


def wait_for(condition: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(0.05)


# -- camera side ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class _State:
    state: str


class FakeFeed:
    """A camera producing `fps` small frames whose pixels encode their seq, until closed or `count` frames."""

    def __init__(self, camera: str, fps: float, count: int | None = None) -> None:
        self.camera = camera
        self._interval_s = 1.0 / fps
        self._count = count
        self._closed = threading.Event()

    @property
    def stats(self) -> _State:
        return _State("stopped" if self._closed.is_set() else "streaming")

    def __iter__(self) -> Iterator[Frame]:
        seq = 0
        while not self._closed.is_set() and seq != self._count:
            yield make_frame(self.camera, seq)
            seq += 1
            self._closed.wait(self._interval_s)

    def close(self) -> None:
        self._closed.set()


# -- worker side ---------------------------------------------------------------------------------


class RecordingHandler:
    """Appends one line per call to `path` ("<pid> frame <camera> <seq> <ok>", "<pid> closed"...)."""

    def __init__(self, path: Path, delay_s: float = 0.0) -> None:
        self._file = path.open("a", buffering=1)
        self._delay_s = delay_s
        self._flushes = 0

    def _line(self, *words: object) -> None:
        self._file.write(" ".join(str(w) for w in (os.getpid(), *words)) + "\n")

    def handle(self, ref: FrameRef, image: np.ndarray) -> None:
        ok = image.shape == (ref.height, ref.width, 3) and image.min() == image.max() == pixel(ref.seq)
        self._line("frame", ref.camera, ref.seq, int(ok))
        time.sleep(self._delay_s)

    def flush(self, now: datetime) -> None:
        if self._flushes == 0:
            self._line("flush", now.tzinfo is not None)
        self._flushes += 1

    def close(self) -> None:
        self._line("closed")
        self._file.close()


class SlowStartHandler(RecordingHandler):
    """A RecordingHandler that takes `load_s` to build, as loading the models does."""

    def __init__(self, path: Path, load_s: float) -> None:
        time.sleep(load_s)
        super().__init__(path)


class TallyHandler(RecordingHandler):
    """A RecordingHandler that reports counters as anpr.lane.LaneHandler does: its frames per camera
    as lane_frames_detected, all of them as the worker's sink_events_written, and one name no
    metric knows."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self._frames: dict[str, int] = {}

    def handle(self, ref: FrameRef, image: np.ndarray) -> None:
        super().handle(ref, image)
        self._frames[ref.camera] = self._frames.get(ref.camera, 0) + 1

    def counters(self) -> dict[tuple[str, str], int]:
        per_camera = {(camera, "lane_frames_detected"): n for camera, n in self._frames.items()}
        return per_camera | {("", "sink_events_written"): sum(self._frames.values()), ("", "no_such_metric"): 1}


@dataclass(frozen=True)
class Frames:
    """What RecordingHandler wrote, parsed."""

    seen: dict[str, list[tuple[int, int]]]  # camera -> [(pid, seq)]
    bad: int  # images that were torn, misplaced or of the wrong shape
    closed_pids: set[int]
    flushed_pids: set[int]

    @classmethod
    def read(cls, path: Path) -> Frames:
        seen: dict[str, list[tuple[int, int]]] = {}
        bad, closed, flushed = 0, set(), set()
        for line in path.read_text().splitlines() if path.exists() else []:
            pid, kind, *rest = line.split()
            if kind == "frame":
                seen.setdefault(rest[0], []).append((int(pid), int(rest[1])))
                bad += rest[2] != "1"
            elif kind == "closed":
                closed.add(int(pid))
            elif kind == "flush" and rest == ["True"]:
                flushed.add(int(pid))
        return cls(seen, bad, closed, flushed)

    def count(self) -> int:
        return sum(len(v) for v in self.seen.values())


# -- bare supervised children ----------------------------------------------------------------------

log = logging.getLogger("runtime_fakes")


@dataclass(frozen=True)
class Crasher:
    """Dies at once with os._exit(code): no cleanup, like a segfaulting native library."""

    code: int

    def __call__(self, ctx: ChildContext) -> None:
        os._exit(self.code)


def explode(ctx: ChildContext) -> None:
    """Raises: a bug in a stage body."""
    raise RuntimeError("boom in the stage body")


def finish(ctx: ChildContext) -> None:
    """Returns at once: a stage that is done (a recording ended)."""


def busy(ctx: ChildContext) -> None:
    """Counts fake frames until stopped, logs on the way in and out."""
    log.warning("busy child %d up", os.getpid())
    ctx.set_state(lambda: "busy")
    while not ctx.stopping:
        ctx.meter.done(0.01)
        time.sleep(0.01)
    log.warning("busy child %d drained", os.getpid())


def deaf(ctx: ChildContext) -> None:
    """Ignores the stop flag: a stage stuck in a native call."""
    while True:
        time.sleep(0.1)


class NeverConnects:
    """A camera that cannot be reached: no frame ever, reconnecting until closed."""

    def __init__(self, camera: str) -> None:
        self.camera = camera
        self._closed = threading.Event()

    @property
    def stats(self) -> _State:
        return _State("stopped" if self._closed.is_set() else "reconnecting")

    def __iter__(self) -> Iterator[Frame]:
        self._closed.wait()
        return
        yield

    def close(self) -> None:
        self._closed.set()
