"""`anpr run`'s HTTP endpoint: Prometheus metrics and a JSON health document.

Everything shown is read at request time from callables (HealthSources), so this module
depends on no stage: the supervisor gives process liveness and counters, the caller gives camera
states, Redis reachability and spool depth. Probes run in the server's request threads, never
in the supervisor loop: keep them quick (a PING with a short timeout, a cached value).

Besides the processes' own counters, /metrics shows what the lanes produce: each worker's
FrameHandler reports counters (anpr.runtime.stages.CountingHandler) with its stats, exported here
per worker and camera under the names and help texts of CAMERA_COUNTERS and WORKER_COUNTERS.

HTTP status 503 ("failing") when capture is lost, so that monitoring reading only the status alerts:
- a worker is not live (dead, restarting or silent), or still loading its models after
  `health.loading_max_s`;
- a camera none of whose frames reached its worker for `health.lane_idle_s` (the camera down or
  never connected, its worker dead or reloading its models), named with its lane and why.
A camera down for less, Redis away, a growing spool or another box of the site down (its own
/health is the one that fails) are "degraded" with 200. A camera whose recording ended is not lost
capture. A process not started yet has no heartbeat age (null).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from anpr.config import HealthConfig
from anpr.runtime.stages import LOADING
from anpr.runtime.supervisor import ChildStatus

log = logging.getLogger(__name__)

STREAMING = "streaming"  # the camera state that counts as healthy (anpr.capture.CameraState)
ENDED = frozenset({"ended", "stopped"})  # a recording read to its end, a feed closed: no capture to lose

# Counters a worker's handler reports (anpr.lane.LaneHandler.counters), exported as anpr_<name>_total.
# One family each, so a dashboard graphs `rate(anpr_lane_events_total[5m])` without filtering a label.
CAMERA_COUNTERS: Mapping[str, str] = {
    "lane_frames_detected": "frames the plate detector ran on",
    "lane_frames_held": "frames whose detections were reused: nothing moved since the last detection (gate)",
    "lane_frames_skipped": "frames not looked at: within the detector rate cap, gate.detect_fps",
    "lane_detections": "plates detected inside the lane's ROI",
    "lane_detections_outside_roi": "plates detected outside the lane's ROI, ignored",
    "lane_tracks": "plate tracks started, about one per vehicle pass",
    "lane_ocr_calls": "plate crops sent to OCR",
    "lane_reads": "legible OCR reads added to a track",
    "lane_reads_rejected": "OCR reads with text a plate event cannot carry: a recogniser bug",
    "lane_events": "plate events emitted, one per vehicle pass",
    "lane_duplicate_passes": "passes folded into an earlier event of the same plate (tracker.dedup_window_s)",
    "lane_replaced_tracks": "settled tracks whose place another plate took (the next car at the booth): a new pass",
    "lane_unread_tracks": "tracks that ended without one legible read: no event",
}
"""Per camera: labels worker and camera."""
WORKER_COUNTERS: Mapping[str, str] = {
    "sink_events_written": "events written to the Redis stream, spooled ones once drained",
    "sink_events_duplicate": "events whose id was already in the stream: not written again",
    "sink_events_spooled": "events spooled to disk while Redis was away",
    "sink_events_refused": "events LOST: Redis away and the spool full or failing",
    "sink_images_dropped": "spooled events whose JPEGs were dropped: the spool was nearly full",
    "sink_redis_errors": "failed Redis writes of the event sink",
    "sink_spool_files_bad": "unreadable spool files moved aside as .bad",
    "sink_stream_trimmed": "stream entries trimmed once every consumer group had acknowledged them",
    "passes_recorded": "passes recorded in the lane registry",
    "passes_trailer_links": "trailer plates linked to their tractor's event",
    "passes_own_rear": "rear plates matched to their own vehicle's front plate (cars): nothing linked",
    "passes_unchecked": "events published without a trailer check: the lane registry's Redis failed",
    "passes_redis_errors": "failed calls to the lane registry in Redis",
}
"""Per worker (its event sink and lane registry serve all its cameras): label worker."""


@dataclass(frozen=True)
class FeedRoute:
    """Which worker a camera's frames go to, and since when capture may run (None: not yet)."""

    camera: str
    lane: str
    worker: str  # the worker's ident
    capture_from: float | None  # wall clock when the cameras were let open their sources


@dataclass(frozen=True)
class HealthSources:
    """Where the endpoint gets what it shows; each callable runs per request, in a server thread."""

    children: Callable[[], Sequence[ChildStatus]]  # Supervisor.statuses
    cameras: Callable[[], Mapping[str, str]]  # camera name -> state ("streaming", "reconnecting", ...)
    redis_ok: Callable[[], bool] | None = None  # None: not part of this deployment, not shown
    spool_depth: Callable[[], int] | None = None  # events waiting on disk for Redis
    routes: Callable[[], Sequence[FeedRoute]] | None = None  # None: no per-camera capture check
    # Every box of a site spread over several: name -> {"up": bool, "cameras": ...} (anpr.run.BoxHeartbeat)
    site: Callable[[], Mapping[str, Mapping[str, Any]]] | None = None


def _probe(fn: Callable[[], Any]) -> tuple[Any, str | None]:
    """Call a probe; a failing probe is a reported problem, never a failed request."""
    try:
        return fn(), None
    except Exception as exc:
        return None, repr(exc)


def _is_live(child: ChildStatus, now: float, stale_after_s: float) -> bool:
    return child.alive and child.last_seen is not None and now - child.last_seen <= stale_after_s


def _age(now: float, then: float | None, digits: int = 1) -> float | None:
    return None if then is None else round(now - then, digits)


def _loading_since(child: ChildStatus) -> float | None:
    """When a live worker started loading its models; None when it is not loading."""
    if not child.alive or child.kind != "worker":
        return None
    if child.stats is None:  # launched, not reported yet: loading
        return child.started_at
    if child.stats.state == LOADING:
        return child.stats.state_since or child.started_at
    return None


def _process_doc(child: ChildStatus, now: float, stale_after_s: float) -> dict[str, Any]:
    stats = child.stats
    return {
        "live": _is_live(child, now, stale_after_s),
        "alive": child.alive,
        "pid": child.pid,
        "state": "starting" if child.last_seen is None else None if stats is None else stats.state,
        "state_for_s": None if stats is None else _age(now, stats.state_since),
        "restarts": child.restarts,
        "last_exit": child.last_exit,
        "finished": child.finished,
        "heartbeat_age_s": _age(now, child.last_seen, 3),
        "fps": None if stats is None else round(stats.fps, 2),
        "frames": None if stats is None else stats.frames,
        "dropped": None if stats is None else stats.dropped,
        "latency_p50_ms": None if stats is None or stats.latency_p50_s is None else round(stats.latency_p50_s * 1e3, 1),
        "latency_p95_ms": None if stats is None or stats.latency_p95_s is None else round(stats.latency_p95_s * 1e3, 1),
    }


def health_document(sources: HealthSources, cfg: HealthConfig) -> tuple[int, dict[str, Any]]:
    """HTTP status and JSON body of /health."""
    stale_after_s = cfg.stale_after_s
    now = time.time()
    problems: list[str] = []
    failing = False
    children, error = _probe(sources.children)
    if error is not None:
        children, failing = [], True
        problems.append(f"process status unavailable: {error}")
    workers: dict[str, Any] = {}
    camera_processes: dict[str, dict[str, Any]] = {}
    for child in children:
        doc = _process_doc(child, now, stale_after_s)
        if child.kind == "worker":
            workers[child.ident] = doc
        else:
            camera_processes[child.ident] = doc
        loading_since = _loading_since(child)
        if loading_since is not None and now - loading_since > cfg.loading_max_s:
            failing = True
            problems.append(
                f"{child.name} still loading its models after {now - loading_since:.0f} s "
                f"(runtime.health.loading_max_s {cfg.loading_max_s:g})"
            )
        if not doc["live"]:
            failing = failing or child.kind == "worker"
            if child.last_seen is None:  # launched later (Supervisor.start's hold): no process, no age
                why = "starting: not launched yet"
            else:
                why = child.last_exit if not child.alive else f"no report for {doc['heartbeat_age_s']:.0f} s"
            problems.append(f"{child.name} not live ({why})")
    states, error = _probe(sources.cameras)
    if error is not None:
        states = {}
        problems.append(f"camera states unavailable: {error}")
    cameras: dict[str, Any] = {}
    for name in sorted(set(states) | set(camera_processes)):
        state = states.get(name, "unknown")
        cameras[name] = {"state": state, "process": camera_processes.get(name)}
        if state != STREAMING:
            problems.append(f"camera {name} {state}")
    if sources.routes is not None:
        routes, error = _probe(sources.routes)
        if error is not None:
            failing = True
            problems.append(f"camera routes unavailable: {error}")
        by_name = {(c.kind, c.ident): c for c in children}
        for route in routes or ():
            lost = _capture(route, by_name, now, cfg, cameras.setdefault(route.camera, {"state": "unknown"}))
            if lost is not None:
                failing = True
                problems.append(lost)
    body: dict[str, Any] = {"time": datetime.now(UTC).isoformat(), "workers": workers, "cameras": cameras}
    if sources.redis_ok is not None:
        reachable, error = _probe(sources.redis_ok)
        body["redis"] = {"reachable": bool(reachable), "error": error}
        if not reachable:
            problems.append(f"redis unreachable{f' ({error})' if error else ''}")
    if sources.spool_depth is not None:
        depth, error = _probe(sources.spool_depth)
        body["spool"] = {"depth": depth, "error": error}
        if error is not None or depth:
            problems.append(f"spool holds {depth} events" if error is None else f"spool depth unavailable: {error}")
    if sources.site is not None:
        boxes, error = _probe(sources.site)
        body["site"] = {"boxes": boxes, "error": error}
        if error is not None:
            problems.append(f"site boxes unavailable: {error}")
        for box, doc in sorted((boxes or {}).items()):
            if not doc["up"]:
                names = ", ".join(doc["cameras"])
                problems.append(f"box {box} down: no heartbeat; its cameras {names} are not running")
    status = "failing" if failing else "degraded" if problems else "ok"
    return (503 if failing else 200), {"status": status, "problems": problems, **body}


def _capture(
    route: FeedRoute,
    children: Mapping[tuple[str, str], ChildStatus],
    now: float,
    cfg: HealthConfig,
    doc: dict[str, Any],
) -> str | None:
    """Fill the camera's document with what reaches its worker; the problem when capture is lost."""
    camera, worker = children.get(("camera", route.camera)), children.get(("worker", route.worker))
    last = None if worker is None else worker.last_frame_at.get(route.camera)
    recent = 0
    if worker is not None and worker.stats is not None and last is not None and now - last <= cfg.lane_idle_s:
        recent = next((c.recent for c in worker.stats.cameras if c.camera == route.camera), 0)
    doc.update(
        lane=route.lane,
        worker=route.worker,
        frames_recent=recent,
        frames_window_s=cfg.lane_idle_s,
        last_frame_age_s=_age(now, last),
    )
    ended = camera is not None and (camera.finished or (camera.stats is not None and camera.stats.state in ENDED))
    since = last if last is not None else route.capture_from
    if ended or since is None or now - since <= cfg.lane_idle_s:
        return None
    idle = f"no frame processed for {now - since:.0f} s" + (" since capture began" if last is None else "")
    return f"lane {route.lane or '?'} camera {route.camera}: {idle} ({_why(camera, worker, route, now, cfg)})"


def _why(
    camera: ChildStatus | None, worker: ChildStatus | None, route: FeedRoute, now: float, cfg: HealthConfig
) -> str:
    """What stops the camera's frames, as far as the processes tell."""
    if camera is None or not camera.alive:
        return f"camera process {'missing' if camera is None else camera.last_exit or 'not running'}"
    state = camera.stats.state if camera.stats is not None else "starting"
    if state != STREAMING:
        since = camera.stats.state_since if camera.stats is not None else camera.started_at
        return f"camera {state}" + ("" if since is None else f" for {now - since:.0f} s")
    if worker is None:
        return f"no worker {route.worker}"
    loading = _loading_since(worker)
    if loading is not None:
        return f"worker {route.worker} loading its models for {now - loading:.0f} s"
    if not _is_live(worker, now, cfg.stale_after_s):
        return f"worker {route.worker} {worker.last_exit if not worker.alive else 'not reporting'}"
    return f"its frames do not reach worker {route.worker}"


class _RuntimeCollector(Collector):
    """Prometheus metrics computed at scrape time from the same sources as /health."""

    def __init__(self, sources: HealthSources, stale_after_s: float) -> None:
        self._sources = sources
        self._stale_after_s = stale_after_s

    def collect(self) -> Iterator[Metric]:
        now = time.time()
        labels = ["stage", "name"]
        up = GaugeMetricFamily("anpr_process_up", "1 while the process is alive and reporting", labels=labels)
        restarts = CounterMetricFamily("anpr_process_restarts", "restarts after a crash", labels=labels)
        age = GaugeMetricFamily("anpr_heartbeat_age_seconds", "time since the last stats report", labels=labels)
        frames = CounterMetricFamily("anpr_frames", "frames handled by this incarnation", labels=labels)
        dropped = CounterMetricFamily(
            "anpr_frames_dropped",
            "camera: worker queue full; worker: frame overwritten in the ring before it was read",
            labels=labels,
        )
        fps = GaugeMetricFamily("anpr_fps", "frames per second over the last stats interval", labels=labels)
        latency = GaugeMetricFamily(
            "anpr_latency_seconds", "capture to done, last stats interval", labels=[*labels, "quantile"]
        )
        children = self._sources.children()
        for child in children:
            key = [child.kind, child.ident]
            up.add_metric(key, float(_is_live(child, now, self._stale_after_s)))
            restarts.add_metric(key, child.restarts)
            if child.last_seen is not None:  # not started: no age at all, rather than one since 1970
                age.add_metric(key, now - child.last_seen)
            if child.stats is None:
                continue
            frames.add_metric(key, child.stats.frames)
            dropped.add_metric(key, child.stats.dropped)
            fps.add_metric(key, child.stats.fps)
            for quantile, value in (("0.5", child.stats.latency_p50_s), ("0.95", child.stats.latency_p95_s)):
                if value is not None:
                    latency.add_metric([*key, quantile], value)
        yield from (up, restarts, age, frames, dropped, fps, latency)
        yield from self._handler_counters(children)
        camera_state = GaugeMetricFamily(
            "anpr_camera_state", "1 for the camera's current state", labels=["camera", "state"]
        )
        for camera, state in self._sources.cameras().items():
            camera_state.add_metric([camera, state], 1.0)
        yield camera_state
        yield from self._capture(children, now)
        if self._sources.redis_ok is not None:
            ok, _ = _probe(self._sources.redis_ok)
            yield GaugeMetricFamily("anpr_redis_up", "1 when Redis answered the probe", value=float(bool(ok)))
        if self._sources.spool_depth is not None:
            depth, error = _probe(self._sources.spool_depth)
            if error is None:
                yield GaugeMetricFamily("anpr_spool_depth", "events waiting on disk for Redis", value=float(depth))

    def _capture(self, children: Sequence[ChildStatus], now: float) -> Iterator[Metric]:
        """Per camera, how long since a worker processed one of its frames: the lane-lost alert's input."""
        if self._sources.routes is None:
            return
        routes, error = _probe(self._sources.routes)
        if error is not None:
            return
        workers = {c.ident: c for c in children if c.kind == "worker"}
        last_age = GaugeMetricFamily(
            "anpr_camera_last_frame_age_seconds",
            "time since a worker last processed a frame of this camera (absent: none yet)",
            labels=["camera", "lane"],
        )
        for route in routes or ():
            worker = workers.get(route.worker)
            last = None if worker is None else worker.last_frame_at.get(route.camera)
            if last is not None:
                last_age.add_metric([route.camera, route.lane], now - last)
        yield last_age

    @staticmethod
    def _handler_counters(children: Sequence[ChildStatus]) -> Iterator[Metric]:
        """The counters workers' handlers reported, from their latest report.

        Totals of a worker incarnation: a restarted worker starts again from zero, which Prometheus'
        rate() and increase() take as a counter reset. A counter not in the catalogues is not exported.
        """
        per_camera = {
            name: CounterMetricFamily(f"anpr_{name}", doc, labels=["worker", "camera"])
            for name, doc in CAMERA_COUNTERS.items()
        }
        per_worker = {
            name: CounterMetricFamily(f"anpr_{name}", doc, labels=["worker"]) for name, doc in WORKER_COUNTERS.items()
        }
        for child in children:
            if child.stats is None:
                continue
            for camera, name, total in child.stats.counters:
                if camera and name in per_camera:
                    per_camera[name].add_metric([child.ident, camera], total)
                elif not camera and name in per_worker:
                    per_worker[name].add_metric([child.ident], total)
        yield from per_camera.values()
        yield from per_worker.values()


class _Server(ThreadingHTTPServer):
    daemon_threads = True  # a hung scrape must not hold up shutdown

    def __init__(self, cfg: HealthConfig, sources: HealthSources) -> None:
        self.sources = sources
        self.cfg = cfg
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(_RuntimeCollector(sources, cfg.stale_after_s))
        super().__init__((cfg.host, cfg.port), _Handler)


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def do_GET(self) -> None:
        path = urlsplit(self.path).path
        if path == "/metrics":
            self._send(200, CONTENT_TYPE_LATEST, generate_latest(self.server.registry))
        elif path in ("/health", "/healthz"):
            status, doc = health_document(self.server.sources, self.server.cfg)
            self._send(status, "application/json", json.dumps(doc, indent=1).encode())
        else:
            self._send(404, "text/plain; charset=utf-8", b"not found: try /health or /metrics\n")

    def _send(self, status: int, content_type: str, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("health %s - %s", self.address_string(), format % args)


class HealthServer:
    """Serves /health and /metrics from a background thread until `close()`."""

    def __init__(self, cfg: HealthConfig, sources: HealthSources) -> None:
        try:
            self._server = _Server(cfg, sources)
        except OSError as exc:
            raise OSError(
                f"health endpoint cannot listen on {cfg.host}:{cfg.port}: {exc}; set runtime.health.port"
            ) from exc
        # poll_interval bounds how long close() waits for the serving loop to notice
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.1}, name="health-http", daemon=True
        )

    @property
    def port(self) -> int:
        """The bound port: the configured one, or the one picked for port 0."""
        return int(self._server.server_address[1])

    def start(self) -> None:
        self._thread.start()
        log.info("health endpoint on http://%s:%d/health and /metrics", self._server.server_address[0], self.port)

    def close(self) -> None:
        if self._thread.is_alive():
            self._server.shutdown()
        self._server.server_close()
