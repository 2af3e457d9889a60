"""The two stage bodies of the live pipeline and the seam where recognition plugs in.

camera process:  FrameFeed --Frame--> FrameRing.write --FrameRef--> Inbox of its worker
worker process:  Inbox --FrameRef--> FrameRing.read --image--> FrameHandler.handle

Each camera is served by exactly one worker, so per-camera state (the tracker) lives in one
process and sees every frame of its camera that is not dropped, in order. The worker builds its
FrameHandler itself, from a picklable factory: models are loaded in the process that uses them
and never pickled.
"""

from __future__ import annotations

import itertools
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Semaphore
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import numpy as np

from anpr.runtime.process import SPAWN, ChildContext, SharedFlag
from anpr.runtime.ring import FrameRing, RingSpec
from anpr.runtime.stats import Counters
from anpr.schema import Frame, FrameRef, utc_now

if TYPE_CHECKING:
    from datetime import datetime

    from anpr.config import CameraConfig

_TAKE_WAIT_S = 0.1  # how long a worker waits for a ref before it flushes and checks for stop
LOADING = "loading"  # a worker's state while it builds its handler (loads the models)
WAITING = "waiting for the workers"  # a camera's state until the runtime lets capture begin
_GO_POLL_S = 0.05

log = logging.getLogger(__name__)
_ANNOUNCED_WAIT_S = 1.0  # a rung doorbell means a ref is microseconds from the pipe; this is only a bound


class FrameHandler(Protocol):
    """A worker's per-frame work: detector, OCR, tracker and event sink, composed by the caller.

    Called from one thread of one process; every camera routed to the worker goes through the
    same handler, so key per-camera state by `ref.camera`. An exception from any method ends
    the worker process; the supervisor logs it and restarts the worker with a new handler
    (the old one's tracks are lost), so catch what one bad frame may legitimately raise.
    """

    def handle(self, ref: FrameRef, image: np.ndarray) -> None:
        """Process one frame; `image` is a private copy (BGR, ref.height x ref.width x 3)."""

    def flush(self, now: datetime) -> None:
        """Periodic tick (runtime.flush_interval_s), also while no frame arrives: end stale tracks."""

    def close(self) -> None:
        """Called once as the worker ends (after the last frame and a final flush, or after a failure):
        emit what is left, release resources."""


@runtime_checkable
class CountingHandler(Protocol):
    """A FrameHandler that may also say what it produced (detections, OCR calls, events...) for /metrics.

    Optional: a handler without `counters` reports only the worker's frames and drops. Called from
    the same thread as the other methods, after each flush and after `close`, so the totals may be
    plain ints: the reporter thread only ever sees the snapshot taken here.
    """

    def counters(self) -> Counters:
        """Totals since this handler was built (a restarted worker starts again from zero)."""


HandlerFactory = Callable[[], FrameHandler]
"""Builds the worker's FrameHandler inside the worker process; must be picklable (a module-level
function, or functools.partial of one with picklable arguments such as config objects)."""


class FeedState(Protocol):
    """What the camera stage reads of a feed's stats: its state, for health and metrics."""

    @property
    def state(self) -> str: ...


class FrameFeed(Protocol):
    """Frames of one camera, as anpr.capture.LiveReader gives them; `close` may come from any thread."""

    @property
    def stats(self) -> FeedState: ...

    def __iter__(self) -> Iterator[Frame]: ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class CameraFeed:
    """A camera of the live pipeline: its name and how to open its frames inside its own process."""

    name: str
    open: Callable[[], FrameFeed]  # picklable: runs in the camera process
    lane: str = ""  # for /health: which lane loses capture when this camera does
    # picklable, run in the camera process before it waits to open: imports that would delay the open
    warm: Callable[[], None] | None = None

    @classmethod
    def live(cls, cfg: CameraConfig, max_fps: float = 0.0) -> CameraFeed:
        """The camera read by anpr.capture.LiveReader (newest frame kept, reconnects on failure),
        passing on at most `max_fps` frames a second (0: all; the runtime gives gate.detect_fps)."""
        return cls(cfg.name, _LiveOpener(cfg, max_fps), cfg.lane or "", _import_capture)


def _import_capture() -> None:
    import anpr.capture  # noqa: F401  (OpenCV and FFmpeg load here, while the workers load their models)


@dataclass(frozen=True)
class _LiveOpener:
    """Picklable opener that imports OpenCV only in the camera process."""

    cfg: CameraConfig
    max_fps: float = 0.0

    def __call__(self) -> FrameFeed:
        from anpr.capture import LiveReader

        return LiveReader(self.cfg, self.max_fps)


class Inbox:
    """A worker's bounded queue of FrameRefs: cameras offer and never wait, the worker takes.

    Why a doorbell next to the queue: mp.Queue.get(timeout) holds the queue's read lock while it
    waits, so a worker killed while idle (kill -9, the OOM killer) would leave that lock taken
    and its replacement would block forever on its first get. The worker waits on a semaphore
    instead, which has no owner to die, and touches the queue only once a camera has rung.
    """

    def __init__(self, size: int) -> None:
        self.size = size
        self._queue: Queue[FrameRef] = SPAWN.Queue(size)
        self._doorbell: Semaphore = SPAWN.Semaphore(0)

    def has_room(self) -> bool:
        """Checked before the frame is written: writing a frame that cannot be queued would
        overwrite a ring slot some queued ref still points at."""
        return not self._queue.full()

    def offer(self, ref: FrameRef) -> bool:
        """Queue `ref` unless full (another camera of the same worker took the last place)."""
        try:
            self._queue.put_nowait(ref)
        except queue.Full:
            return False
        self._doorbell.release()
        return True

    def take(self, timeout_s: float) -> FrameRef | None:
        if not self._doorbell.acquire(timeout=timeout_s):
            return None
        try:
            return self._queue.get(timeout=_ANNOUNCED_WAIT_S)
        except queue.Empty:  # the camera died between its put and the pipe
            return None

    def drain(self) -> Iterator[FrameRef]:
        """What is queued now, without waiting: the work in flight when stop came."""
        while True:
            try:
                ref = self._queue.get_nowait()
            except queue.Empty:
                return
            # One doorbell permit per queued ref: a replacement worker (after SIGTERM) must not inherit
            # spare permits, or it would sit in get() on an empty queue, holding the lock again.
            self._doorbell.acquire(block=False)
            yield ref

    def release_producer(self) -> None:
        """In a camera process at exit: refs still unsent are worthless, never wait to flush them."""
        self._queue.cancel_join_thread()


@dataclass(frozen=True)
class CameraStage:
    """Camera process body: frames from the feed into the ring, refs into the worker's inbox.

    With `go`, the process starts with the workers, gets ready (imports, ring) and opens its feed
    only once `go` is set: the start-up is spent in parallel with the model loading, while a
    recording played as a live source still loses none of its start to it.
    """

    feed: CameraFeed
    ring: RingSpec
    inbox: Inbox
    go: SharedFlag | None = None

    def __call__(self, ctx: ChildContext) -> None:
        self.inbox.release_producer()
        ring = FrameRing.attach(self.ring)
        if self.go is not None and not self.go.is_set():
            ctx.set_state(lambda: WAITING)
            if self.feed.warm is not None:
                self.feed.warm()
            while not self.go.is_set():
                if ctx.wait(_GO_POLL_S):
                    ring.close()
                    return
        source = self.feed.open()
        ctx.set_state(lambda: str(source.stats.state))
        # A feed blocks while its camera is down; closing it from here is what ends the loop.
        threading.Thread(target=_close_on_stop, args=(ctx, source), name="closer", daemon=True).start()
        try:
            for frame in source:
                if ctx.stopping:
                    break
                # Drop the newest, never wait: a stalled worker must not stall the camera.
                if not self.inbox.has_room():
                    ctx.meter.drop()
                    continue
                if self.inbox.offer(ring.write(frame)):
                    ctx.meter.done(time.time() - frame.ts.timestamp())
                else:
                    ctx.meter.drop()
        finally:
            source.close()
            ring.close()


def _close_on_stop(ctx: ChildContext, source: FrameFeed) -> None:
    while not ctx.wait(1.0):
        pass
    source.close()


@dataclass(frozen=True)
class WorkerStage:
    """Worker process body: refs from its inbox, pixels from the rings, work to the handler."""

    rings: tuple[RingSpec, ...]  # one per camera this worker serves
    inbox: Inbox
    make_handler: HandlerFactory
    flush_interval_s: float
    stale_after_s: float

    def __call__(self, ctx: ChildContext) -> None:
        ctx.set_state(lambda: LOADING)  # the runtime starts the cameras once no worker is loading
        rings = {spec.camera: FrameRing.attach(spec) for spec in self.rings}
        try:
            started = time.monotonic()
            handler = self.make_handler()
            log.info("%s: loaded in %.1f s", ctx.name, time.monotonic() - started)
            ctx.set_state(lambda: "draining" if ctx.stopping else "running")
            try:
                self._take_backlog(ctx, rings, handler)
                self._serve(ctx, rings, handler)
            finally:
                handler.close()
                _count(ctx, handler)  # the final report carries what close() emitted
        finally:
            for ring in rings.values():
                ring.close()

    def _take_backlog(self, ctx: ChildContext, rings: dict[str, FrameRing], handler: FrameHandler) -> None:
        """The refs queued while the handler was built: those older than `stale_after_s` are dropped
        (counted), the rest handled in order.

        Loading the models takes seconds, and meanwhile the cameras fill the queue with their first
        frames (a full queue drops the newest). Handled, they would start tracks that the next frame,
        seconds newer, finds lost: measured, a car standing in view at start-up came out as a pass
        without a direction. A worker that starts quickly (a short test feed) loses nothing.
        """
        now = time.time()
        for ref in itertools.islice(self.inbox.drain(), self.inbox.size):
            if now - ref.ts.timestamp() > self.stale_after_s:
                ctx.meter.drop()
            else:
                _process(ctx, rings, handler, ref)

    def _serve(self, ctx: ChildContext, rings: dict[str, FrameRing], handler: FrameHandler) -> None:
        next_flush = time.monotonic() + self.flush_interval_s
        while not ctx.stopping:
            ref = self.inbox.take(min(_TAKE_WAIT_S, self.flush_interval_s))
            if ref is not None:
                _process(ctx, rings, handler, ref)
            if time.monotonic() >= next_flush:
                handler.flush(utc_now())
                _count(ctx, handler)
                next_flush = time.monotonic() + self.flush_interval_s
        # Stop: finish what was already queued (at most the queue size), then a last flush.
        for ref in self.inbox.drain():
            _process(ctx, rings, handler, ref)
        handler.flush(utc_now())


def _count(ctx: ChildContext, handler: FrameHandler) -> None:
    """Snapshot the handler's counters on the flush tick: fresh enough for metrics, and off the per-frame path."""
    if isinstance(handler, CountingHandler):
        ctx.meter.set_counters(handler.counters())


def _process(ctx: ChildContext, rings: dict[str, FrameRing], handler: FrameHandler, ref: FrameRef) -> None:
    image = rings[ref.camera].read(ref)
    if image is None:  # the camera lapped the ring: counted, not an error
        ctx.meter.drop()
        return
    handler.handle(ref, image)
    ctx.meter.done(time.time() - ref.ts.timestamp(), ref.camera)
