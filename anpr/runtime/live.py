"""The live pipeline assembled: rings, inboxes, camera and worker processes, health endpoint.

    runtime = Runtime(cfg.runtime, [CameraFeed.live(c) for c in cameras], make_handler)
    runtime.run()  # until SIGINT/SIGTERM: then drain, stop, unlink the rings

The parent only supervises: it creates every shared resource before the first child starts and
removes it after the last one stopped, so children can crash and restart freely in between.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from types import FrameType
from typing import Any, Self

from anpr.config import RuntimeConfig
from anpr.runtime.health import FeedRoute, HealthServer, HealthSources
from anpr.runtime.process import ChildSpec, SharedFlag
from anpr.runtime.ring import FrameRing, check_shm_space
from anpr.runtime.stages import LOADING, CameraFeed, CameraStage, HandlerFactory, Inbox, WorkerStage
from anpr.runtime.supervisor import ChildStatus, Supervisor

log = logging.getLogger(__name__)

_POLL_S = 0.1  # supervisor tick: how soon a crash is noticed and a report is taken in


class Runtime:
    """Runs cameras and workers as supervised processes until stopped.

    Camera i feeds worker i % workers (workers beyond the camera count would idle and are not
    started). `redis_ok` and `spool_depth` are optional health probes, called per request.
    """

    def __init__(
        self,
        config: RuntimeConfig,
        cameras: Sequence[CameraFeed],
        make_handler: HandlerFactory,
        redis_ok: Callable[[], bool] | None = None,
        spool_depth: Callable[[], int] | None = None,
        site: Callable[[], Mapping[str, Mapping[str, Any]]] | None = None,
    ) -> None:
        names = [feed.name for feed in cameras]
        if not names or len(set(names)) != len(names):
            raise ValueError(f"need at least one camera and unique camera names, got {names}")
        self._cfg = config
        self._cameras = list(cameras)
        self._make_handler = make_handler
        self._sources = HealthSources(self.statuses, self.camera_states, redis_ok, spool_depth, self.routes, site=site)
        self._supervisor = Supervisor(config)
        self._rings: list[FrameRing] = []
        self._health: HealthServer | None = None
        self._started_at = 0.0
        self._workers = 0
        self._capture = SharedFlag()  # set: the cameras may open their sources
        self._capture_from: float | None = None  # wall clock when it was set

    @property
    def health_port(self) -> int | None:
        """Port of the health endpoint once started (useful with port 0); None when disabled."""
        return None if self._health is None else self._health.port

    def start(self) -> None:
        """Create the rings, start every process and the health endpoint; returns at once. The cameras
        open their sources once the workers have loaded their models (`supervise`, `runtime.camera_wait_s`)."""
        cfg = self._cfg
        try:
            workers = self._workers = min(cfg.workers, len(self._cameras))
            inboxes = [Inbox(cfg.worker_queue_size) for _ in range(workers)]
            slot_bytes = cfg.max_frame_height * cfg.max_frame_width * 3
            check_shm_space(len(self._cameras) * cfg.ring_slots * slot_bytes)
            for feed in self._cameras:
                ring = FrameRing.create(feed.name, cfg.ring_slots, cfg.max_frame_height, cfg.max_frame_width)
                self._rings.append(ring)
            for index, (feed, ring) in enumerate(zip(self._cameras, self._rings, strict=True)):
                stage = CameraStage(feed, ring.spec, inboxes[index % workers], self._capture)
                self._supervisor.add(ChildSpec("camera", feed.name, stage))
            for worker in range(workers):
                specs = tuple(ring.spec for index, ring in enumerate(self._rings) if index % workers == worker)
                body = WorkerStage(specs, inboxes[worker], self._make_handler, cfg.flush_interval_s, cfg.stale_after_s)
                self._supervisor.add(ChildSpec("worker", str(worker), body))
            if cfg.health.enabled:
                self._health = HealthServer(cfg.health, self._sources)
            self._started_at = time.monotonic()
            if cfg.camera_wait_s <= 0:
                self._open_cameras()
            self._supervisor.start()
            if self._health is not None:
                self._health.start()
        except BaseException:
            self.close()
            raise
        log.info("runtime started: %d cameras, %d workers", len(self._cameras), workers)

    def supervise(self) -> None:
        """Watch the children (restart, collect stats) until `stop()` is called."""
        while not self._supervisor.stopping:
            self._supervisor.poll(_POLL_S)
            if not self._capture.is_set():
                self._open_cameras_when_workers_loaded()
        log.info("stop requested: draining")

    def _open_cameras_when_workers_loaded(self) -> None:
        """Let the cameras open their sources once every worker reports it has loaded (a worker that
        has not reported yet is still loading), or after `camera_wait_s` whatever the workers do."""
        workers = [s for s in self.statuses() if s.kind == "worker"]
        loaded = all(s.stats is not None and s.stats.state != LOADING for s in workers)
        waited = time.monotonic() - self._started_at
        if loaded:
            log.info("workers loaded after %.1f s: opening the cameras", waited)
        elif waited >= self._cfg.camera_wait_s:
            log.warning("workers still loading after %.0f s (runtime.camera_wait_s): opening the cameras", waited)
        else:
            return
        self._open_cameras()

    def _open_cameras(self) -> None:
        self._capture_from = time.time()
        self._capture.set()

    def stop(self) -> None:
        """Ask everything to drain and stop; safe from any thread and from a signal handler."""
        self._supervisor.stop_flag.set()

    def close(self) -> None:
        """Stop and join the children, stop the endpoint, unlink the rings. Idempotent."""
        self._supervisor.shutdown()
        if self._health is not None:
            self._health.close()
            self._health = None
        while self._rings:
            ring = self._rings.pop()
            ring.close()
            ring.unlink()
        log.info("runtime stopped")

    def run(self) -> None:
        """start + supervise + close, with SIGINT/SIGTERM asking for a drained stop."""
        with stop_on_signals(self.stop), self:
            self.supervise()

    def statuses(self) -> list[ChildStatus]:
        return self._supervisor.statuses()

    def routes(self) -> list[FeedRoute]:
        """Each camera's worker (camera i -> worker i % workers) and since when capture may run."""
        workers = max(self._workers, 1)
        return [
            FeedRoute(feed.name, feed.lane, str(index % workers), self._capture_from)
            for index, feed in enumerate(self._cameras)
        ]

    def camera_states(self) -> Mapping[str, str]:
        """Each camera's capture state as its process last reported it."""
        states = {feed.name: "starting" for feed in self._cameras}
        for child in self.statuses():
            if child.kind == "camera" and child.stats is not None:
                states[child.ident] = child.stats.state
        return states

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


@contextmanager
def stop_on_signals(stop: Callable[[], None]) -> Iterator[None]:
    """Within the block, SIGINT and SIGTERM call `stop` instead of killing the process.

    Only possible in the main thread (Python's rule); elsewhere the caller must call stop().
    The handler only sets a flag: anything that takes a lock could deadlock inside a handler.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: FrameType | None) -> None:
        stop()

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
