"""Health endpoint: the JSON document's verdicts, and /health and /metrics over real HTTP."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping, Sequence

import httpx
import pytest

from anpr.config import HealthConfig
from anpr.runtime.health import FeedRoute, HealthServer, HealthSources, health_document
from anpr.runtime.stats import CameraFrames, StatsReport
from anpr.runtime.supervisor import ChildStatus

CFG = HealthConfig(stale_after_s=10, lane_idle_s=5, loading_max_s=30)

# What a worker's handler reports: per camera, per worker (camera ""), and names no metric knows,
# or knows in the other scope, which are not exported.
COUNTERS = (
    ("cam1", "lane_events", 3),
    ("cam1", "lane_ocr_calls", 11),
    ("cam2", "lane_events", 5),
    ("", "sink_events_spooled", 2),
    ("", "passes_trailer_links", 1),
    ("cam1", "no_such_counter", 9),
    ("", "lane_events", 8),
    ("cam1", "sink_events_refused", 4),
)


def child(kind: str, ident: str, alive: bool = True, age_s: float = 0.1, last_exit: str | None = None) -> ChildStatus:
    now = time.time()
    counters = COUNTERS if kind == "worker" else ()
    stats = StatsReport(f"{kind}:{ident}", 100, now - age_s, "running", 250, 7, 24.5, 0.04, 0.09, counters)
    return ChildStatus(f"{kind}:{ident}", kind, ident, alive, 100, 0, last_exit, False, now - age_s, stats)


def held_camera() -> ChildStatus:
    """A camera the supervisor has not launched yet: no process, no report, no heartbeat."""
    return ChildStatus("camera:cam1", "camera", "cam1", False, None, 0, None, False, None, None)


def healthy() -> list[ChildStatus]:
    return [child("camera", "cam1"), child("worker", "0")]


def sources(
    children: Callable[[], Sequence[ChildStatus]] = healthy,
    cameras: Mapping[str, str] | None = None,
    redis_ok: Callable[[], bool] | None = None,
    spool_depth: Callable[[], int] | None = None,
) -> HealthSources:
    states = {"cam1": "streaming"} if cameras is None else cameras
    return HealthSources(children, lambda: states, redis_ok, spool_depth)


def _raise() -> bool:
    raise ConnectionError("redis is away")


# Children are built per call: their heartbeat ages are relative to the moment of the request.
@pytest.mark.parametrize(
    ("src", "http", "status", "problem"),
    [
        (sources(), 200, "ok", None),
        (sources(redis_ok=lambda: True, spool_depth=lambda: 0), 200, "ok", None),
        (sources(cameras={"cam1": "reconnecting"}), 200, "degraded", "camera cam1 reconnecting"),
        (sources(redis_ok=lambda: False), 200, "degraded", "redis unreachable"),
        (sources(redis_ok=_raise), 200, "degraded", "redis unreachable (ConnectionError('redis is away'))"),
        (sources(spool_depth=lambda: 12), 200, "degraded", "spool holds 12 events"),
        (
            sources(
                lambda: [child("camera", "cam1", alive=False, last_exit="killed by SIGSEGV"), child("worker", "0")]
            ),
            200,
            "degraded",
            "camera:cam1 not live (killed by SIGSEGV)",
        ),
        (
            sources(lambda: [child("camera", "cam1"), child("worker", "0", alive=False, last_exit="exit code 1")]),
            503,
            "failing",
            "worker:0 not live (exit code 1)",
        ),
        (
            sources(lambda: [child("camera", "cam1"), child("worker", "0", age_s=60.2)]),
            503,
            "failing",
            "worker:0 not live (no report for 60 s)",
        ),
    ],
    ids=[
        "ok",
        "ok-with-probes",
        "camera-down",
        "redis-down",
        "redis-probe-raises",
        "spool-backlog",
        "camera-process-dead",
        "worker-dead",
        "worker-hung",
    ],
)
def test_health_verdicts(src: HealthSources, http: int, status: str, problem: str | None) -> None:
    code, doc = health_document(src, CFG)
    assert (code, doc["status"]) == (http, status)
    assert doc["problems"] == ([] if problem is None else [problem])


def test_document_shape() -> None:
    _, doc = health_document(sources(redis_ok=lambda: True, spool_depth=lambda: 0), CFG)
    assert doc["cameras"]["cam1"]["state"] == "streaming"
    assert doc["cameras"]["cam1"]["process"]["fps"] == 24.5
    worker = doc["workers"]["0"]
    assert worker["live"] and worker["pid"] == 100 and worker["dropped"] == 7
    assert (worker["latency_p50_ms"], worker["latency_p95_ms"]) == (40.0, 90.0)
    assert doc["redis"] == {"reachable": True, "error": None}
    assert doc["spool"] == {"depth": 0, "error": None}


@pytest.fixture
def server() -> Iterator[HealthServer]:
    srv = HealthServer(HealthConfig(port=0), sources(redis_ok=lambda: True, spool_depth=lambda: 3))
    srv.start()
    yield srv
    srv.close()


def test_health_and_metrics_over_http(server: HealthServer) -> None:
    base = f"http://127.0.0.1:{server.port}"
    with httpx.Client(base_url=base, timeout=5) as client:
        health = client.get("/health")
        assert health.status_code == 200 and health.headers["content-type"] == "application/json"
        assert health.json()["status"] == "degraded" and health.json()["spool"]["depth"] == 3

        metrics = client.get("/metrics")
        assert metrics.status_code == 200 and metrics.headers["content-type"].startswith("text/plain")
        text = metrics.text
        for line in (
            'anpr_process_up{name="0",stage="worker"} 1.0',
            'anpr_frames_total{name="cam1",stage="camera"} 250.0',
            'anpr_frames_dropped_total{name="0",stage="worker"} 7.0',
            'anpr_latency_seconds{name="0",quantile="0.95",stage="worker"} 0.09',
            'anpr_camera_state{camera="cam1",state="streaming"} 1.0',
            "anpr_redis_up 1.0",
            "anpr_spool_depth 3.0",
        ):
            assert line in text, line

        assert client.get("/nope").status_code == 404


def test_handler_counters_are_exported_per_worker_and_camera(server: HealthServer) -> None:
    text = httpx.get(f"http://127.0.0.1:{server.port}/metrics", timeout=5).text
    samples = [line for line in text.splitlines() if line.startswith(("anpr_lane_", "anpr_sink_", "anpr_passes_"))]
    assert sorted(samples) == [
        'anpr_lane_events_total{camera="cam1",worker="0"} 3.0',
        'anpr_lane_events_total{camera="cam2",worker="0"} 5.0',
        'anpr_lane_ocr_calls_total{camera="cam1",worker="0"} 11.0',
        'anpr_passes_trailer_links_total{worker="0"} 1.0',
        'anpr_sink_events_spooled_total{worker="0"} 2.0',
    ]
    assert "# TYPE anpr_lane_unread_tracks_total counter" in text  # every family is declared, even without samples
    assert "# HELP anpr_lane_events_total plate events emitted, one per vehicle pass" in text


def test_a_busy_port_is_named_in_the_error(server: HealthServer) -> None:
    with pytest.raises(OSError, match=f"cannot listen on 127.0.0.1:{server.port}"):
        HealthServer(HealthConfig(port=server.port), sources())


def test_a_process_not_started_has_no_heartbeat_age_and_is_named_starting() -> None:
    """Its age once read 1,796,587,286 s: the time since 1970."""
    src = sources(lambda: [held_camera(), child("worker", "0")], cameras={"cam1": "starting"})
    code, doc = health_document(src, CFG)
    assert (code, doc["status"]) == (200, "degraded")  # not failing: the workers are alive
    assert doc["problems"] == ["camera:cam1 not live (starting: not launched yet)", "camera cam1 starting"]
    process = doc["cameras"]["cam1"]["process"]
    assert process["heartbeat_age_s"] is None and process["state"] == "starting"


def worker_status(
    state: str = "running",
    state_for_s: float = 30.0,
    last_frame_age_s: float | None = 0.1,
    recent: int = 120,
    alive: bool = True,
    stats: bool = True,
) -> ChildStatus:
    now = time.time()
    last = {} if last_frame_age_s is None else {"cam1": now - last_frame_age_s}
    frames = (CameraFrames("cam1", 500, recent, now - last_frame_age_s),) if last_frame_age_s is not None else ()
    report = StatsReport("worker:0", 100, now - 0.1, state, 500, 0, 25.0, 0.04, 0.09, (), now - state_for_s, frames)
    return ChildStatus(
        "worker:0", "worker", "0", alive, 100, 0, None, False, now - 0.1, report if stats else None, now - 60, last
    )


def camera_status(state: str = "streaming", state_for_s: float = 30.0, finished: bool = False) -> ChildStatus:
    now = time.time()
    report = StatsReport("camera:cam1", 101, now - 0.1, state, 500, 0, 25.0, None, None, (), now - state_for_s)
    return ChildStatus("camera:cam1", "camera", "cam1", True, 101, 0, None, finished, now - 0.1, report, now - 60)


def routed(camera: ChildStatus, worker: ChildStatus, capture_age_s: float | None = 60.0) -> HealthSources:
    capture_from = None if capture_age_s is None else time.time() - capture_age_s
    route = FeedRoute("cam1", "lane1", "0", capture_from)
    state = camera.stats.state if camera.stats is not None else "starting"
    return HealthSources(lambda: [camera, worker], lambda: {"cam1": state}, routes=lambda: [route])


@pytest.mark.parametrize(
    ("make", "http", "problems"),
    [
        (lambda: routed(camera_status(), worker_status()), 200, []),
        (
            lambda: routed(camera_status(), worker_status("loading", state_for_s=12, last_frame_age_s=12)),
            503,
            ["lane lane1 camera cam1: no frame processed for 12 s (worker 0 loading its models for 12 s)"],
        ),
        (
            lambda: routed(camera_status("reconnecting", 3), worker_status(last_frame_age_s=3)),
            200,
            ["camera cam1 reconnecting"],
        ),
        (
            lambda: routed(camera_status("reconnecting", 40), worker_status(last_frame_age_s=None), capture_age_s=40),
            503,
            [
                "camera cam1 reconnecting",
                "lane lane1 camera cam1: no frame processed for 40 s since capture began "
                "(camera reconnecting for 40 s)",
            ],
        ),
        (
            lambda: routed(
                camera_status("waiting for the workers"), worker_status("loading", 20, None), capture_age_s=None
            ),
            200,
            ["camera cam1 waiting for the workers"],
        ),
        (
            lambda: routed(
                camera_status("waiting for the workers"), worker_status("loading", 31, None), capture_age_s=None
            ),
            503,
            [
                "worker:0 still loading its models after 31 s (runtime.health.loading_max_s 30)",
                "camera cam1 waiting for the workers",
            ],
        ),
        (
            lambda: routed(camera_status("ended", 40, finished=True), worker_status(last_frame_age_s=40)),
            200,
            ["camera cam1 ended"],
        ),
        (
            lambda: routed(camera_status(), worker_status(last_frame_age_s=8)),
            503,
            ["lane lane1 camera cam1: no frame processed for 8 s (its frames do not reach worker 0)"],
        ),
    ],
    ids=[
        "flowing",
        "worker-reloading",
        "camera-blip",
        "camera-never-connects",
        "loading",
        "loading-too-long",
        "recording-ended",
        "stuck",
    ],
)
def test_lost_capture_fails_and_names_the_lane(
    make: Callable[[], HealthSources], http: int, problems: list[str]
) -> None:
    code, doc = health_document(make(), CFG)  # built here: the ages are relative to now
    assert (code, doc["problems"]) == (http, problems)


def test_frames_reaching_the_worker_are_shown_per_camera() -> None:
    _, doc = health_document(routed(camera_status(), worker_status(recent=117)), CFG)
    cam = doc["cameras"]["cam1"]
    assert (cam["lane"], cam["worker"], cam["frames_recent"], cam["frames_window_s"]) == ("lane1", "0", 117, 5)
    assert 0 <= cam["last_frame_age_s"] < 1
    _, doc = health_document(routed(camera_status(), worker_status(recent=117, last_frame_age_s=8)), CFG)
    assert doc["cameras"]["cam1"]["frames_recent"] == 0  # the last report's count is older than the window


def test_metrics_give_each_cameras_last_processed_frame_age() -> None:
    from prometheus_client import CollectorRegistry

    from anpr.runtime.health import _RuntimeCollector

    registry = CollectorRegistry()
    registry.register(_RuntimeCollector(routed(camera_status(), worker_status(last_frame_age_s=7.0)), 5.0))
    age = registry.get_sample_value("anpr_camera_last_frame_age_seconds", {"camera": "cam1", "lane": "lane1"})
    assert age is not None and 7.0 <= age < 8.0
    never = CollectorRegistry()
    never.register(_RuntimeCollector(routed(camera_status(), worker_status(last_frame_age_s=None)), 5.0))
    assert never.get_sample_value("anpr_camera_last_frame_age_seconds", {"camera": "cam1", "lane": "lane1"}) is None
