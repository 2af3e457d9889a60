"""The assembled runtime: frames flow camera -> ring -> worker, affinity, drops, worker replacement."""

from __future__ import annotations

import itertools
import logging
import os
import signal
import threading
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import pytest
from runtime_fakes import (
    FakeFeed,
    Frames,
    NeverConnects,
    RecordingHandler,
    SlowStartHandler,
    TallyHandler,
    shm_segments,
    wait_for,
)

from anpr.config import HealthConfig, RuntimeConfig
from anpr.runtime.live import Runtime
from anpr.runtime.stages import CameraFeed
from anpr.runtime.supervisor import ChildStatus

pytestmark = pytest.mark.slow

BASE = RuntimeConfig(
    stats_interval_s=0.1,
    flush_interval_s=0.1,
    restart_backoff_initial_s=0.2,
    drain_timeout_s=5.0,
    max_frame_height=48,
    max_frame_width=64,
    health=HealthConfig(enabled=False),
)


def feeds(fps: float, *names: str) -> list[CameraFeed]:
    return [CameraFeed(name, partial(FakeFeed, name, fps)) for name in names]


class Running:
    """A Runtime supervised by a background thread, as `anpr run` does in its main thread."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self._thread = threading.Thread(target=runtime.supervise)

    def __enter__(self) -> Running:
        self.runtime.start()
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.runtime.stop()
        self._thread.join(10)
        self.runtime.close()

    def child(self, name: str) -> ChildStatus:
        return next(s for s in self.runtime.statuses() if s.name == name)

    def dropped(self, name: str) -> int:
        stats = self.child(name).stats
        return 0 if stats is None else stats.dropped


@pytest.fixture(autouse=True)
def no_leaked_rings() -> Iterator[None]:
    before = shm_segments(os.getpid())
    yield
    assert shm_segments(os.getpid()) == before


def test_frames_flow_to_one_worker_per_camera_and_drain_on_stop(tmp_path: Path) -> None:
    log_path = tmp_path / "frames.log"
    cfg = BASE.model_copy(update={"workers": 2})
    runtime = Runtime(cfg, feeds(40, "cam0", "cam1", "cam2"), partial(RecordingHandler, log_path))
    with Running(runtime) as running:
        wait_for(
            lambda: (
                all(len(v) >= 10 for v in Frames.read(log_path).seen.values()) and len(Frames.read(log_path).seen) == 3
            ),
            30,
            "frames of all three cameras",
        )
        wait_for(lambda: all(s.stats is not None and s.stats.frames > 0 for s in runtime.statuses()), 10, "stats")
        workers = {running.child(f"worker:{i}").pid for i in (0, 1)}
        assert runtime.camera_states() == {"cam0": "streaming", "cam1": "streaming", "cam2": "streaming"}
    frames = Frames.read(log_path)
    assert frames.bad == 0
    pids = {camera: {pid for pid, _ in seen} for camera, seen in frames.seen.items()}
    assert all(len(p) == 1 for p in pids.values()), pids  # one worker per camera
    assert pids["cam0"] == pids["cam2"] != pids["cam1"]  # camera i -> worker i % 2
    for seen in frames.seen.values():
        seqs = [seq for _, seq in seen]
        assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)  # in order, none twice
    assert frames.closed_pids == workers == frames.flushed_pids  # drained, flushed, closed
    assert all(s.last_exit == "exit code 0" for s in runtime.statuses())


def test_full_queue_drops_the_newest_frame_and_counts_it(tmp_path: Path) -> None:
    log_path = tmp_path / "frames.log"
    cfg = BASE.model_copy(update={"worker_queue_size": 2, "ring_slots": 4})
    slow = partial(RecordingHandler, log_path, delay_s=0.05)  # 20 fps of work for 200 fps of camera
    with Running(Runtime(cfg, feeds(200, "cam0"), slow)) as running:
        wait_for(lambda: Frames.read(log_path).count() >= 20, 30, "20 frames handled")
        wait_for(lambda: running.dropped("camera:cam0") > 50, 10, "camera drops")
        camera, worker = running.child("camera:cam0").stats, running.child("worker:0").stats
    assert camera is not None and worker is not None
    assert camera.frames < 100 < camera.dropped  # most frames were dropped at the camera...
    assert worker.dropped == 0  # ...so the queued ones were never overwritten in the ring
    frames = Frames.read(log_path)
    assert frames.bad == 0


def test_cameras_start_once_the_workers_have_loaded(tmp_path: Path) -> None:
    """A recording played as a live source must not lose its start to the model loading."""
    log_path = tmp_path / "frames.log"
    slow_start = partial(SlowStartHandler, log_path, 1.5)
    with Running(Runtime(BASE, feeds(40, "cam0"), slow_start)) as running:
        wait_for(lambda: Frames.read(log_path).count() >= 20, 30, "20 frames handled")
        worker = running.child("worker:0").stats
    seqs = [seq for _, seq in Frames.read(log_path).seen["cam0"]]
    assert seqs[:20] == list(range(seqs[0], seqs[0] + 20)) and seqs[0] <= 1, seqs[:20]
    assert worker is not None and worker.dropped == 0


def test_frames_queued_while_the_worker_loads_are_dropped_not_handled(tmp_path: Path) -> None:
    """Stale frames would start tracks that the next, seconds-newer frame finds lost. The cameras
    wait for a loading worker only up to runtime.camera_wait_s; a restarted worker loads while they run."""
    log_path = tmp_path / "frames.log"
    slow_start = partial(SlowStartHandler, log_path, 1.5)  # 60 frames at 40 fps while it loads
    config = BASE.model_copy(update={"camera_wait_s": 0.2})
    with Running(Runtime(config, feeds(40, "cam0"), slow_start)) as running:
        wait_for(lambda: Frames.read(log_path).count() >= 20, 30, "20 frames handled")
        worker = running.child("worker:0").stats
    seqs = [seq for _, seq in Frames.read(log_path).seen["cam0"]]
    gaps = [b - a for a, b in itertools.pairwise(seqs)][:15]
    assert max(gaps) <= 3, f"no jump from stale start-up frames to live ones: {seqs[:20]}"
    assert seqs[0] >= 20, "the frames queued during the load were not handled"
    assert worker is not None and worker.dropped >= 1, "and they are counted as dropped"


def test_a_worker_killed_while_idle_is_replaced_and_gets_frames(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="anpr.runtime")
    log_path = tmp_path / "frames.log"
    with Running(Runtime(BASE, feeds(10, "cam0"), partial(RecordingHandler, log_path))) as running:
        wait_for(lambda: Frames.read(log_path).count() >= 3, 30, "first frames")
        first = running.child("worker:0").pid
        assert first is not None
        os.kill(first, signal.SIGKILL)  # most likely waiting for its next frame
        wait_for(lambda: any(pid != first for pid, _ in Frames.read(log_path).seen["cam0"]), 30, "frames after")
    assert any("worker:0 died (killed by SIGKILL)" in r.getMessage() for r in caplog.records)
    assert running.child("worker:0").restarts == 1


def test_handler_counters_reach_metrics_labelled_by_worker_and_camera(tmp_path: Path) -> None:
    """Six frames per camera, and room for all of them in the queue and the rings, so none can be
    dropped: the totals each worker's handler reports must reach /metrics exactly."""
    log_path = tmp_path / "frames.log"
    cfg = BASE.model_copy(
        update={"workers": 2, "worker_queue_size": 12, "ring_slots": 14, "health": HealthConfig(port=0)}
    )
    cameras = [CameraFeed(name, partial(FakeFeed, name, 40, 6)) for name in ("cam0", "cam1", "cam2")]
    expected = [  # camera i -> worker i % 2
        'anpr_lane_frames_detected_total{camera="cam0",worker="0"} 6.0',
        'anpr_lane_frames_detected_total{camera="cam2",worker="0"} 6.0',
        'anpr_lane_frames_detected_total{camera="cam1",worker="1"} 6.0',
        'anpr_sink_events_written_total{worker="0"} 12.0',
        'anpr_sink_events_written_total{worker="1"} 6.0',
    ]
    with Running(Runtime(cfg, cameras, partial(TallyHandler, log_path))) as running:
        url = f"http://127.0.0.1:{running.runtime.health_port}/metrics"
        with httpx.Client(timeout=5) as client:
            wait_for(lambda: all(line in client.get(url).text for line in expected), 30, "every frame in /metrics")
            text = client.get(url).text
    assert "no_such_metric" not in text  # a counter without a catalogued name is not exported
    assert Frames.read(log_path).count() == 18


def test_camera_names_must_be_unique() -> None:
    with pytest.raises(ValueError, match="unique camera names"):
        Runtime(BASE, feeds(1, "cam0", "cam0"), partial(RecordingHandler, Path("unused")))


def health(running: Running) -> tuple[int, dict[str, Any]]:
    response = httpx.get(f"http://127.0.0.1:{running.runtime.health_port}/health", timeout=5)
    return response.status_code, response.json()


def test_health_fails_naming_the_lane_while_a_killed_worker_reloads(tmp_path: Path) -> None:
    """It said 200 "ok" within a second of the kill while the lane processed nothing for 23 s."""
    log_path = tmp_path / "frames.log"
    cfg = BASE.model_copy(update={"health": HealthConfig(port=0, lane_idle_s=0.5)})
    cameras = [CameraFeed("cam0", partial(FakeFeed, "cam0", 25), lane="lane7")]
    with Running(Runtime(cfg, cameras, partial(SlowStartHandler, log_path, 2.0))) as running:
        wait_for(lambda: health(running)[1]["cameras"]["cam0"]["frames_recent"] > 0, 30, "frames flowing")
        code, doc = health(running)
        assert (code, doc["status"], doc["cameras"]["cam0"]["lane"]) == (200, "ok", "lane7")
        first = running.child("worker:0").pid
        assert first is not None
        os.kill(first, signal.SIGKILL)
        wait_for(lambda: "lane lane7 camera cam0: no frame processed" in str(health(running)[1]), 10, "lane named")
        code, doc = health(running)
        assert code == 503 and doc["status"] == "failing"
        wait_for(lambda: any(pid != first for pid, _ in Frames.read(log_path).seen["cam0"]), 30, "frames again")
        wait_for(lambda: health(running)[0] == 200, 10, "healthy again")
        assert health(running)[1]["cameras"]["cam0"]["frames_recent"] > 0


def test_health_fails_when_a_camera_never_connects(tmp_path: Path) -> None:
    """It stayed 200 "degraded" forever: monitoring reading the status never alerted."""
    cfg = BASE.model_copy(update={"workers": 2, "health": HealthConfig(port=0, lane_idle_s=1.0)})
    cameras = [
        CameraFeed("cam0", partial(FakeFeed, "cam0", 25), lane="lane1"),
        CameraFeed("cam1", partial(NeverConnects, "cam1"), lane="lane2"),
    ]
    with Running(Runtime(cfg, cameras, partial(RecordingHandler, tmp_path / "frames.log"))) as running:
        wait_for(lambda: health(running)[1]["cameras"]["cam1"]["state"] == "reconnecting", 30, "cam1 reconnecting")
        code, doc = health(running)
        assert code == 200 and doc["status"] == "degraded"  # not yet: a camera may be back in a moment
        wait_for(lambda: health(running)[0] == 503, 10, "failing after lane_idle_s")
        _, doc = health(running)
    assert [p for p in doc["problems"] if p.startswith("lane")] == [
        "lane lane2 camera cam1: no frame processed for 1 s since capture began (camera reconnecting for 1 s)"
    ]
    assert doc["cameras"]["cam0"]["frames_recent"] > 0 and doc["cameras"]["cam1"]["last_frame_age_s"] is None


def test_camera_processes_start_with_the_workers_and_wait_to_open(tmp_path: Path) -> None:
    """Their start-up (interpreter, imports) overlaps the model loading; the feed opens after it."""
    log_path = tmp_path / "frames.log"
    with Running(Runtime(BASE, feeds(40, "cam0"), partial(SlowStartHandler, log_path, 2.0))) as running:
        wait_for(lambda: running.child("camera:cam0").stats is not None, 10, "the camera reporting")
        camera = running.child("camera:cam0").stats
        assert camera is not None and camera.state == "waiting for the workers" and camera.frames == 0
        worker = running.child("worker:0").stats
        assert worker is None or worker.state == "loading"
        wait_for(lambda: Frames.read(log_path).count() >= 5, 30, "frames")
