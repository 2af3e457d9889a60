"""Frames in: cameras (RTSP, local devices) and recordings (video files, image folders).

Two ways to read, one `Frame` type out, one `FrameSource` interface for the stage loop:

- live (`LiveReader`): one thread per camera grabs continuously and keeps only the newest frame.
  A slow detector gets the latest picture and the frames it missed are counted as dropped: it
  never back-pressures the camera, whose buffer would otherwise fill and lag by seconds.
- replay (`ReplayReader`, `replay_frames`): every frame of a file or folder in order, as fast as
  the consumer pulls or paced to real time. Timestamps are start time + position in the file, so a
  replay is reproducible.

Failure handling follows what OpenCV 5 / FFmpeg 8 do (shared/NOTES.md, measured again for this
module with a real RTSP server):

- Against a frozen camera an open or a read blocks for FFmpeg's defaults (30 s per read, three
  times) unless bounded, so every capture gets open/read timeouts (honoured with CAP_FFMPEG only),
  and OPENCV_FFMPEG_CAPTURE_OPTIONS carries a socket timeout as a backstop.
- When the read timeout fires, grab() can still return True with a frame the decoder had buffered:
  a read that took the whole timeout is a stall, not a fresh frame.
- A capture never recovers after the camera restarts: reconnecting means release + a new open.
- An undecodable packet fails one grab() and the next one carries on after it. So failed grabs
  followed by a good one are corrupt frames (skipped, counted); a long run is a lost stream, or the
  end of a file.
"""

from __future__ import annotations

import logging
import os
import re
import socket
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import Protocol, Self
from urllib.parse import urlsplit

import cv2
import numpy as np

from anpr.config import CameraConfig
from anpr.motion import RATE_SLACK
from anpr.schema import Frame

__all__ = [
    "CameraState",
    "CaptureError",
    "CaptureMode",
    "CaptureStats",
    "Frame",
    "FrameSource",
    "LiveReader",
    "ReplayReader",
    "open_source",
    "replay_frames",
]

log = logging.getLogger(__name__)

_MAX_FAILED_READS = 25
"""Failed grabs in a row that end a stream: a second of frames at 25 fps, a few milliseconds on a
dead connection. Fewer, followed by a good frame, are corrupt frames. Raising it rides out longer
bursts of damage; lowering it reconnects sooner on a camera that sends garbage."""

_IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"})

_FFMPEG_OPTIONS_ENV = "OPENCV_FFMPEG_CAPTURE_OPTIONS"
# Options an operator exported before start win over ours: they may carry more than we set.
_OPERATOR_FFMPEG_OPTIONS = os.environ.get(_FFMPEG_OPTIONS_ENV)
_ffmpeg_options_lock = threading.Lock()


class CaptureError(RuntimeError):
    """A source that cannot be read; the message names the camera, the source and what to fix."""

    def __init__(self, camera: str, problem: str) -> None:
        super().__init__(f"camera {camera}: {problem}")
        self.camera = camera
        self.problem = problem  # without the camera name: what stats.last_error shows


class CameraState(StrEnum):
    """Where a source stands; STALLED is judged from the frame age whenever stats are read."""

    CONNECTING = "connecting"  # first open in progress
    STREAMING = "streaming"  # frames arriving
    STALLED = "stalled"  # open, but no frame for stall_after_s (a read may still be blocked)
    RECONNECTING = "reconnecting"  # lost or never reached: backing off, then reopening
    FAILED = "failed"  # gave up; last_error says why
    ENDED = "ended"  # a file or folder was read to its end
    STOPPED = "stopped"  # closed by its owner


class CaptureMode(StrEnum):
    """How open_source reads: a camera's newest frame, or a recording's every frame."""

    LIVE = "live"  # newest frame only, wall-clock timestamps
    REPLAY = "replay"  # every frame, as fast as the consumer pulls
    REPLAY_REALTIME = "replay-realtime"  # every frame, no faster than the recording ran


@dataclass(frozen=True, slots=True)
class CaptureStats:
    """A snapshot of one source's health, for logs, metrics and the dashboard."""

    state: CameraState
    frames: int  # frames the source produced (the next Frame.seq)
    dropped: int  # live: frames replaced by a newer one before any consumer took them
    skipped: int  # decoded but never converted to BGR: over the rate cap (`max_fps`), by design
    corrupt: int  # undecodable frames and unreadable images, skipped
    reconnects: int  # reopen attempts after the first open; rising = the camera keeps failing
    last_frame_age_s: float | None  # seconds since the newest frame; None before the first
    last_error: str | None  # latest reason for a reconnect or failure (kept after recovery)

    @property
    def decoded(self) -> int:
        """Frames read from the source: those passed on and those over the rate cap."""
        return self.frames + self.skipped


class FrameSource(ABC):
    """What a stage reads frames from, live or replayed: the same loop runs both (DESIGN 8).

    Iteration ends when a recording ends, a live source fails for good, or `close()` is called
    (from any thread).
    """

    camera: str

    @property
    @abstractmethod
    def stats(self) -> CaptureStats: ...

    @abstractmethod
    def __iter__(self) -> Iterator[Frame]: ...

    @abstractmethod
    def close(self) -> None: ...

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def open_source(cfg: CameraConfig, mode: CaptureMode = CaptureMode.LIVE) -> FrameSource:
    """Open `cfg.source` for `mode`; raises CaptureError for a source that can never work."""
    if mode is CaptureMode.LIVE:
        return LiveReader(cfg)
    return ReplayReader(cfg, realtime=mode is CaptureMode.REPLAY_REALTIME)


def replay_frames(
    path: str | Path, camera: str, realtime: bool = False, start_time: datetime | None = None
) -> Iterator[Frame]:
    """Every frame of a video file or image folder; opens now, so a bad file fails here."""
    source = ReplayReader(CameraConfig(name=camera, source=str(path)), realtime, start_time)
    return iter(source)


# -- state shared between a reader thread and everyone else ------------------------------------


class _Status:
    """Counters and state of one source: written by its reader, read from any thread."""

    def __init__(self, stall_after_s: float | None) -> None:
        self.lock = threading.Lock()
        self.state = CameraState.CONNECTING
        self.frames = 0
        self.dropped = 0
        self.skipped = 0
        self.corrupt = 0
        self.reconnects = 0
        self.last_frame_at: float | None = None  # time.monotonic()
        self.last_error: str | None = None
        self._stall_after_s = stall_after_s

    def set_state(self, state: CameraState, error: str | None = None) -> None:
        with self.lock:
            self.state = state
            if error is not None:
                self.last_error = error

    def count_skipped(self) -> None:
        with self.lock:
            self.skipped += 1

    def count_corrupt(self, n: int) -> None:
        if n:
            with self.lock:
                self.corrupt += n

    def snapshot(self) -> CaptureStats:
        with self.lock:
            age = None if self.last_frame_at is None else time.monotonic() - self.last_frame_at
            state = self.state
            # Derived here, not by the reader thread: that thread may be blocked in a read.
            if (
                state is CameraState.STREAMING
                and self._stall_after_s is not None
                and age is not None
                and age > self._stall_after_s
            ):
                state = CameraState.STALLED
            return CaptureStats(
                state, self.frames, self.dropped, self.skipped, self.corrupt, self.reconnects, age, self.last_error
            )


# -- opening sources ---------------------------------------------------------------------------


class _Kind(StrEnum):
    NETWORK = "network"
    DEVICE = "device"
    FILE = "file"
    FOLDER = "folder"

    @property
    def is_live(self) -> bool:
        return self in (_Kind.NETWORK, _Kind.DEVICE)


def _kind(cfg: CameraConfig) -> _Kind:
    source = cfg.source
    if "://" in source:
        scheme = source.split("://", 1)[0].lower()
        if scheme in ("rtsp", "rtsps"):
            return _Kind.NETWORK
        raise CaptureError(
            cfg.name,
            f"unsupported URL scheme {scheme!r} in {_redact(source)}; use rtsp:// or "
            "rtsps://, a video file, an image folder or a device index",
        )
    if source.isdigit():
        return _Kind.DEVICE
    return _Kind.FOLDER if Path(source).is_dir() else _Kind.FILE


def _redact(source: str) -> str:
    """The source with any password masked: RTSP URLs carry credentials and end up in logs."""
    parts = urlsplit(source)
    if parts.password is None:
        return source
    userinfo, _, hostport = parts.netloc.rpartition("@")
    user = userinfo.split(":", 1)[0]
    return parts._replace(netloc=f"{user}:***@{hostport}").geturl()


class _Reader(Protocol):
    """One opened source, read by one thread."""

    def read(self) -> tuple[np.ndarray, float] | None:
        """The next image and its position in seconds; None at the end of a recording."""

    def release(self) -> None: ...


class _StreamLost(Exception):
    """An open live capture stopped delivering; the reader reconnects."""


def _open(cfg: CameraConfig, kind: _Kind, status: _Status, max_fps: float = 0.0) -> _Reader:
    """Open the source, or raise CaptureError saying why and what to fix. `max_fps` > 0 caps the
    frames a video yields (`_VideoReader`); an image folder yields every image."""
    if kind is _Kind.FOLDER:
        return _FolderReader(cfg, status)
    if kind is _Kind.FILE:
        path = Path(cfg.source)
        if not path.is_file():
            raise CaptureError(cfg.name, f"no such video file or image folder: {path}")
        if path.stat().st_size == 0:
            raise CaptureError(cfg.name, f"{path} is empty (0 bytes): the recording or the copy did not finish")
        cap = _video_capture(str(path), cv2.CAP_FFMPEG, [])
        if cap is None:
            raise CaptureError(
                cfg.name,
                f"{path} is not a readable video: corrupt, cut off before its index "
                "(an interrupted recording), or a format FFmpeg cannot decode; re-copy or re-export it",
            )
        return _VideoReader(cap, cfg, live=False, status=status, max_fps=max_fps)
    timeouts = [
        cv2.CAP_PROP_OPEN_TIMEOUT_MSEC,
        cfg.open_timeout_ms,
        cv2.CAP_PROP_READ_TIMEOUT_MSEC,
        cfg.read_timeout_ms,
    ]
    if kind is _Kind.DEVICE:
        cap = _video_capture(int(cfg.source), cv2.CAP_ANY, timeouts)
        if cap is None:
            raise CaptureError(
                cfg.name,
                f"cannot open video device {cfg.source} (is /dev/video{cfg.source} "
                "there, readable by this user, and not held by another process?)",
            )
        return _VideoReader(cap, cfg, live=True, status=status, max_fps=max_fps)
    _set_ffmpeg_backstop(cfg)
    started = time.monotonic()
    cap = _video_capture(cfg.source, cv2.CAP_FFMPEG, timeouts)
    if cap is None:
        why = _diagnose(cfg, time.monotonic() - started)
        raise CaptureError(cfg.name, f"cannot open {_redact(cfg.source)}: {why}")
    return _VideoReader(cap, cfg, live=True, status=status, max_fps=max_fps)


def _video_capture(target: str | int, api: int, params: list[int]) -> cv2.VideoCapture | None:
    try:
        cap = cv2.VideoCapture(target, api, params)
    except cv2.error:  # some backends throw instead of returning a closed capture
        return None
    if cap.isOpened():
        return cap
    cap.release()
    return None


def _set_ffmpeg_backstop(cfg: CameraConfig) -> None:
    """Give FFmpeg a socket timeout and the RTSP transport, in the one place OpenCV reads them.

    The capture's own timeouts bound opens and reads; the socket timeout also covers FFmpeg code
    that never checks them. It is an environment variable read at each open, so it is
    process-wide: cameras of one process opening at the same instant may get each other's value
    (one process per camera is the plan, DESIGN 5).
    """
    if _OPERATOR_FFMPEG_OPTIONS is not None:
        return
    timeout_us = max(cfg.open_timeout_ms, cfg.read_timeout_ms) * 1000
    value = f"rtsp_transport;{cfg.rtsp_transport}|timeout;{timeout_us}"
    with _ffmpeg_options_lock:
        if os.environ.get(_FFMPEG_OPTIONS_ENV) != value:
            os.environ[_FFMPEG_OPTIONS_ENV] = value


def _diagnose(cfg: CameraConfig, waited_s: float) -> str:
    """Why an RTSP open failed, in words an operator can act on.

    OpenCV only says "not opened" (FFmpeg's reason goes to stderr), so probe the TCP port: that
    tells a typo in the host, a camera that is down and a wrong path or password apart.
    """
    url = urlsplit(cfg.source)
    host = url.hostname or ""
    try:
        port = url.port or (322 if url.scheme.lower() == "rtsps" else 554)
    except ValueError:
        return "the port in the URL is not a number"
    try:
        with socket.create_connection((host, port), timeout=min(2.0, cfg.open_timeout_ms / 1000)):
            pass
    except socket.gaierror:
        return f"cannot resolve host {host!r} (DNS, or a typo in the URL)"
    except ConnectionRefusedError:
        return f"connection refused by {host}:{port} (camera down or rebooting, or wrong port)"
    except OSError as exc:
        return f"no answer from {host}:{port} ({exc or 'timed out'}): host down, unplugged or firewalled"
    if waited_s >= 0.9 * cfg.open_timeout_ms / 1000:
        return (
            f"{host}:{port} accepts connections but sent no stream within {cfg.open_timeout_ms} ms "
            "(camera frozen or overloaded)"
        )
    return (
        f"{host}:{port} accepts connections but refused the stream (wrong path or credentials, "
        "or a codec FFmpeg cannot decode)"
    )


class _VideoReader:
    """A cv2.VideoCapture read frame by frame, telling corrupt frames, lost streams and the end apart.

    With `max_fps` > 0 it yields at most that many frames per second of the stream's own clock and
    the others are decoded (H.264 needs every frame) but never converted to BGR nor passed on: the
    lane's detector gate would skip them anyway (gate.detect_fps), and at 1080p the conversion, the
    frame ring's copies and the worker's look at a frame cost more than the decoding itself.
    """

    def __init__(
        self, cap: cv2.VideoCapture, cfg: CameraConfig, live: bool, status: _Status, max_fps: float = 0.0
    ) -> None:
        self._cap = cap
        self._name = cfg.name
        self._source = _redact(cfg.source)
        self._live = live
        self._status = status
        fps = cap.get(cv2.CAP_PROP_FPS)
        self._fps = fps if 0 < fps <= 1000 else cfg.default_fps
        # Live streams and raw H.264 have no frame count (OpenCV gives <= 0 or garbage for them).
        count = cap.get(cv2.CAP_PROP_FRAME_COUNT)
        self._expected = int(count) if not live and 0 < count < 1e9 else None
        self._read_timeout_s = cfg.read_timeout_ms / 1000 if live else None
        self._seen = 0  # frames decoded or skipped as corrupt
        self._pos: float | None = None
        # The detector gate's own slack (anpr.motion): a frame a few ms early is still due.
        self._min_gap_s = RATE_SLACK / max_fps if max_fps > 0 else 0.0
        self._due_s: float | None = None  # stream position from which the next frame is due

    def read(self) -> tuple[np.ndarray, float] | None:
        failed = 0
        while True:
            started = time.monotonic()
            grabbed = self._cap.grab()
            waited = time.monotonic() - started
            if self._read_timeout_s is not None and waited >= self._read_timeout_s:
                # FFmpeg's read timeout fired: a frame grab() still returns comes out of the
                # decoder's buffer, not from the camera, and the connection is not to be trusted.
                raise _StreamLost(f"no data for {waited:.1f} s (read timeout): camera frozen or network down")
            pos = None
            if grabbed and self._min_gap_s:
                pos = self._position(failed)
                if self._due_s is not None and pos < self._due_s:
                    self._count_frame(failed)
                    self._status.count_skipped()
                    failed = 0
                    continue
            image = self._retrieve() if grabbed else None
            if image is not None:
                self._count_frame(failed)
                if pos is None:
                    return image, self._position(failed)
                self._due_s = pos + self._min_gap_s
                return image, pos
            if not grabbed and self._expected is not None and self._seen >= self._expected:
                return None
            failed += 1
            if failed >= _MAX_FAILED_READS:
                self._give_up(failed)  # raises unless this is the end of a file
                return None

    def _count_frame(self, failed: int) -> None:
        """A frame came out after `failed` failed reads: those were corrupt frames."""
        self._status.count_corrupt(failed)
        self._seen += failed + 1

    def _give_up(self, failed: int) -> None:
        if self._live:
            raise _StreamLost(f"{failed} reads failed in a row: connection lost or stream undecodable")
        # Frame counts estimated from duration x fps (mkv, variable rate) are off by a few frames;
        # a file cut short by less than a second is not worth an error.
        if self._expected is None or self._seen >= self._expected - max(2, round(self._fps)):
            return None
        raise CaptureError(
            self._name,
            f"{self._source} stops decoding at frame {self._seen} of "
            f"{self._expected}: the file is truncated or corrupt from there on; re-copy or re-export it",
        )

    def _retrieve(self) -> np.ndarray | None:
        ok, image = self._cap.retrieve()
        return image if ok and image is not None and image.size else None

    def _position(self, skipped: int) -> float:
        msec = self._cap.get(cv2.CAP_PROP_POS_MSEC)
        # Raw H.264 carries no timestamps (POS_MSEC stays 0): count frames instead.
        if self._pos is None or msec / 1000 > self._pos:
            self._pos = msec / 1000
        else:
            self._pos += (skipped + 1) / self._fps
        return self._pos

    def release(self) -> None:
        self._cap.release()


def _natural_key(path: Path) -> tuple[tuple[int, str], ...]:
    """Sort frame_2.jpg before frame_10.jpg, as camera dumps expect."""
    return tuple((int(part), "") if part.isdigit() else (-1, part) for part in re.split(r"(\d+)", path.name))


class _FolderReader:
    """Images of a folder in natural name order, one frame each at `default_fps`."""

    def __init__(self, cfg: CameraConfig, status: _Status) -> None:
        folder = Path(cfg.source)
        self._paths = sorted(
            (p for p in folder.iterdir() if p.suffix.lower() in _IMAGE_SUFFIXES and p.is_file()),
            key=_natural_key,
        )
        if not self._paths:
            raise CaptureError(
                cfg.name, f"image folder {folder} holds no images ({', '.join(sorted(_IMAGE_SUFFIXES))})"
            )
        self._name = cfg.name
        self._fps = cfg.default_fps
        self._status = status
        self._next = 0

    def read(self) -> tuple[np.ndarray, float] | None:
        while self._next < len(self._paths):
            index, path = self._next, self._paths[self._next]
            self._next += 1
            image = cv2.imread(str(path), cv2.IMREAD_COLOR)
            if image is not None:
                return image, index / self._fps
            log.warning("camera %s: skipping unreadable image %s", self._name, path)
            self._status.count_corrupt(1)
        return None

    def release(self) -> None:
        self._next = len(self._paths)


# -- live --------------------------------------------------------------------------------------


class LiveReader(FrameSource):
    """A camera read by its own thread, newest frame kept; it reconnects until closed.

    Iterating yields each new frame once; frames that arrive while the consumer is busy replace
    each other in a one-frame slot and count as dropped. A recording given as the source plays in
    real time, as a camera would, and ends (state ENDED). `max_fps` > 0: at most that many frames a
    second are passed on, the others decoded and counted as skipped (`_VideoReader`).
    """

    def __init__(self, cfg: CameraConfig, max_fps: float = 0.0) -> None:
        self.camera = cfg.name
        self._cfg = cfg
        self._kind = _kind(cfg)
        # A camera that cannot be reached now may be back in a minute; a recording never will.
        self._status = _Status(cfg.stall_after_s if self._kind.is_live else None)
        self._max_fps = max_fps
        self._first = None if self._kind.is_live else _open(cfg, self._kind, self._status, max_fps)
        self._cond = threading.Condition(self._status.lock)
        self._slot: Frame | None = None
        self._taken_seq = -1
        self._running = True
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"capture-{cfg.name}", daemon=True)
        self._thread.start()

    @property
    def stats(self) -> CaptureStats:
        return self._status.snapshot()

    def latest(self, after_seq: int = -1, timeout_s: float = 0.0) -> Frame | None:
        """The newest frame if it is newer than `after_seq`, waiting up to `timeout_s` for one."""
        with self._cond:
            self._cond.wait_for(lambda: self._newer_than(after_seq) or not self._running, timeout_s)
            frame = self._slot
            if frame is None or frame.seq <= after_seq:
                return None
            self._taken_seq = max(self._taken_seq, frame.seq)
            return frame

    def _newer_than(self, seq: int) -> bool:
        return self._slot is not None and self._slot.seq > seq

    def __iter__(self) -> Iterator[Frame]:
        seq = -1
        while True:
            frame = self.latest(seq, timeout_s=0.5)
            if frame is not None:
                seq = frame.seq
                yield frame
            elif not self._running:
                return

    def close(self) -> None:
        """Stop the thread and release the camera; waits at most for one blocked open or read."""
        self._stop.set()
        # open + read timeouts, plus the 2 s port probe that explains a failed open
        limit_s = (self._cfg.open_timeout_ms + self._cfg.read_timeout_ms) / 1000 + 3.0
        self._thread.join(limit_s)
        if self._thread.is_alive():
            log.warning("camera %s: capture thread still blocked after %.0f s", self.camera, limit_s)

    def _run(self) -> None:
        cfg = self._cfg
        failures = 0  # attempts in a row that produced no frame
        try:
            while not self._stop.is_set():
                frames_before = self._status.frames
                try:
                    if self._attempt():
                        self._status.set_state(CameraState.ENDED)
                        log.info("camera %s: end of %s", self.camera, cfg.source)
                    return
                except _StreamLost as exc:
                    reason = str(exc)
                except Exception as exc:  # anything but CaptureError is a bug: log it, never die silently
                    if isinstance(exc, CaptureError):
                        reason = exc.problem
                    else:
                        log.exception("camera %s: unexpected capture error", self.camera)
                        reason = f"unexpected error: {exc!r}"
                    if not self._kind.is_live:  # a recording does not heal by reopening it
                        self._give_up(reason)
                        return
                failures = 1 if self._status.frames > frames_before else failures + 1
                if cfg.max_attempts is not None and failures >= cfg.max_attempts:
                    self._give_up(f"{reason} (gave up after {failures} attempts)")
                    return
                # 2**30 caps the exponent: a camera down for days must not overflow the float.
                delay = min(cfg.backoff_max_s, cfg.backoff_initial_s * 2 ** min(failures - 1, 30))
                self._status.set_state(CameraState.RECONNECTING, reason)
                log.warning("camera %s: %s; reconnecting in %.1f s", self.camera, reason, delay)
                if self._stop.wait(delay):
                    return
                with self._cond:
                    self._status.reconnects += 1
        finally:
            with self._cond:
                if self._status.state not in (CameraState.ENDED, CameraState.FAILED):
                    self._status.state = CameraState.STOPPED
                self._running = False
                self._cond.notify_all()

    def _give_up(self, reason: str) -> None:
        self._status.set_state(CameraState.FAILED, reason)
        log.error("camera %s: %s", self.camera, reason)

    def _attempt(self) -> bool:
        """Open the source and publish its frames: True when it ended, False when asked to stop."""
        reader = self._first or _open(self._cfg, self._kind, self._status, self._max_fps)
        self._first = None
        try:
            return self._pump(reader)
        finally:
            reader.release()

    def _pump(self, reader: _Reader) -> bool:
        paced_from: float | None = None
        while not self._stop.is_set():
            got = reader.read()
            if got is None:
                return True
            image, pos = got
            if not self._kind.is_live:
                # A recording standing in for a camera delivers frames no faster than it was shot.
                if paced_from is None:
                    paced_from = time.monotonic() - pos
                if self._stop.wait(max(0.0, paced_from + pos - time.monotonic())):
                    return False
            self._publish(image)
        return False

    def _publish(self, image: np.ndarray) -> None:
        ts = datetime.now(UTC)
        with self._cond:
            status = self._status
            if self._slot is not None and self._slot.seq > self._taken_seq:
                status.dropped += 1  # never taken: the consumer was busy
            self._slot = Frame(self.camera, status.frames, ts, image)
            status.frames += 1
            status.last_frame_at = time.monotonic()
            if status.state is not CameraState.STREAMING:
                status.state = CameraState.STREAMING
                log.info("camera %s: streaming (%s)", self.camera, _redact(self._cfg.source))
            self._cond.notify_all()


# -- replay ------------------------------------------------------------------------------------


class ReplayReader(FrameSource):
    """Every frame of a video file or image folder, in order, nothing dropped.

    Timestamps are `start_time` (default: when the reader was opened) + the frame's position in
    the file; pass a fixed `start_time` for the same timestamps, and so the same event ids, on
    every run. A file that turns out damaged part-way raises CaptureError where decoding stops.
    `max_fps` > 0 yields at most that many frames per second of the recording (`_VideoReader`): the
    same frames the lane's detector gate would look at, so a replay decides the same.
    """

    def __init__(
        self, cfg: CameraConfig, realtime: bool = False, start_time: datetime | None = None, max_fps: float = 0.0
    ) -> None:
        kind = _kind(cfg)
        if kind.is_live:
            raise CaptureError(
                cfg.name,
                f"replay needs a video file or an image folder, not {_redact(cfg.source)}; read cameras in live mode",
            )
        self.camera = cfg.name
        self._source = cfg.source
        self._realtime = realtime
        self._start_time = start_time if start_time is not None else datetime.now(UTC)
        self._status = _Status(stall_after_s=None)
        self._reader = _open(cfg, kind, self._status, max_fps)
        self._closed = False
        self._read_lock = threading.Lock()  # close() must not release the capture under a grab()

    @property
    def stats(self) -> CaptureStats:
        return self._status.snapshot()

    def __iter__(self) -> Iterator[Frame]:
        status = self._status
        status.set_state(CameraState.STREAMING)
        paced_from: float | None = None
        try:
            while True:
                with self._read_lock:
                    if self._closed:
                        return  # closed by its owner part-way
                    got = self._reader.read()
                if got is None:
                    break
                image, pos = got
                if self._realtime:
                    if paced_from is None:
                        paced_from = time.monotonic() - pos
                    time.sleep(max(0.0, paced_from + pos - time.monotonic()))
                with status.lock:
                    seq = status.frames
                    status.frames += 1
                    status.last_frame_at = time.monotonic()
                yield Frame(self.camera, seq, self._start_time + timedelta(seconds=pos), image)
            if status.frames == 0:
                raise CaptureError(self.camera, f"{self._source} holds no decodable frame; re-copy or re-export it")
            status.set_state(CameraState.ENDED)
        except CaptureError as exc:
            status.set_state(CameraState.FAILED, exc.problem)
            raise
        finally:
            self.close()

    def close(self) -> None:
        """Stop reading and release the source; from any thread (waits for a read in progress)."""
        with self._read_lock:  # releasing under a running grab() could crash in native code
            self._closed = True
            self._reader.release()
        with self._status.lock:
            if self._status.state not in (CameraState.ENDED, CameraState.FAILED):
                self._status.state = CameraState.STOPPED
