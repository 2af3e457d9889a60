"""End-to-end pipeline benchmark, one clip, one run, four ways:

(a) naive: the loop a tutorial writes: ultralytics `predict` (PyTorch, imgsz 640) on every frame and
    EasyOCR `readtext` on every detection; its "events" are the distinct plate strings it read
    (after anpr.plates.interpret). Run on the first --naive-frames frames to bound its runtime.
(b) ours: `anpr.replay.replay` with the current config (gate, detector, OCR), into the real Redis
    under a throw-away key prefix; events are compared with the clip's ground truth (plate and
    direction, exact set).
(c) decode only: OpenCV decoding the clip, nothing else: the ceiling of any pipeline.
(d) live: the clip upscaled to 1920x1080, played in real time as --cameras live cameras through the
    real runtime (camera processes, shared-memory rings, worker(s) running anpr.lane); per camera:
    frames processed/s (each camera passes on at most gate.detect_fps frames a second: the frames the
    detector gate looks at), the share of those dropped because the worker was behind, capture ->
    processed latency (first vs second half, to see a growing backlog), events, and capture -> XADD
    latency of each event's deciding frame. The
    clip starts with --preroll seconds of its first frame, still: a margin before the clip proper
    (the cameras start once the worker has loaded its models, `runtime.camera_wait_s`). Figures
    cover the last clip-length of each camera's frames, i.e. the clip proper.

--sweep 1-6 runs (d) alone once per camera count and prints one row per count (frames/s and drops per
camera, vehicles right, capture->XADD, backlog, CPU per frame, peak RSS per process) and the lanes
this box holds: the largest count with every vehicle right on every camera, p95 capture->XADD <= 1 s
and no growing backlog (second-half p95 capture->processed at most 1.5x the first half's).

Model loading is outside every timed section. Compare ratios, not absolute times: the machine is
shared and noisy; the load average is printed with the table.

    .venv/bin/python scripts/bench_pipeline.py [--clip sample_videos/lane_day.mp4] [--naive-frames 150]
    .venv/bin/python scripts/bench_pipeline.py --sweep 1-6
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import resource
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import redis
from rich.console import Console
from rich.table import Table

from anpr.config import REPO_ROOT, AnprConfig, CameraConfig, load_config
from anpr.lane import LaneHandler, LaneProcessor
from anpr.models import easyocr_model_dir, sha256_of
from anpr.schema import FrameRef, PlateEvent, utc_now

REDIS_URL = "redis://127.0.0.1:6379/0"
CACHE = REPO_ROOT / ".cache" / "bench"


def loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def cpu_now() -> float:
    """CPU seconds of this process and of its children that have ended (the runtime's processes)."""
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + children.ru_utime + children.ru_stime


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


@dataclass
class Row:
    """One line of the table; `found`/`truth`/`spurious` compare its events with the ground truth."""

    name: str
    frames: int
    wall_s: float
    cpu_s: float
    found: int | None = None
    truth: int | None = None
    spurious: int | None = None
    latency_ms: tuple[float, float] | None = None  # p50, p95 of capture -> XADD
    notes: list[str] = field(default_factory=list)

    @property
    def fps(self) -> float:
        return self.frames / self.wall_s


def frames_of(clip: Path, limit: int | None = None) -> Iterator[np.ndarray]:
    cap = cv2.VideoCapture(str(clip))
    try:
        n = 0
        while limit is None or n < limit:
            ok, image = cap.read()
            if not ok:
                return
            n += 1
            yield image
    finally:
        cap.release()


def truth_of(clip: Path) -> dict[str, Any]:
    return json.loads(clip.with_suffix(".json").read_text())  # type: ignore[no-any-return]


# -- (c) decode only ---------------------------------------------------------------------------


def decode_only(clip: Path, name: str) -> Row:
    wall, cpu = time.perf_counter(), cpu_now()
    n = sum(1 for _ in frames_of(clip))
    return Row(name, n, time.perf_counter() - wall, cpu_now() - cpu)


# -- (a) naive ---------------------------------------------------------------------------------


def naive(clip: Path, cfg: AnprConfig, limit: int) -> Row:
    """ultralytics + EasyOCR on every detection of every frame, as a tutorial would."""
    import easyocr
    from ultralytics import YOLO

    from anpr.models import detector_weights, enforce_offline
    from anpr.plates import interpret

    enforce_offline()
    model = YOLO(str(detector_weights(cfg.detector.weights)))
    reader = easyocr.Reader(
        ["en"], gpu=False, download_enabled=False, model_storage_directory=str(easyocr_model_dir()), verbose=False
    )
    first = next(frames_of(clip, 1))
    model.predict(first, imgsz=640, verbose=False)  # warm-up: lazy init is not per-frame cost
    reader.readtext(first[:64, :256])

    truth = truth_of(clip)
    plates: set[str] = set()
    frames = 0
    wall, cpu = time.perf_counter(), cpu_now()
    for image in frames_of(clip, limit):
        frames += 1
        for x1, y1, x2, y2 in model.predict(image, imgsz=640, verbose=False)[0].boxes.xyxy.tolist():
            crop = image[int(y1) : int(y2), int(x1) : int(x2)]
            lines = reader.readtext(crop)
            text = "".join(str(t) for _, t, _ in lines).upper()
            text = "".join(c for c in text if c.isalnum())
            confs = [float(c) for _, t, c in lines for ch in str(t) if ch.isalnum()]
            fit = interpret(text, confs, cfg.plates.countries, cfg.plates.correct)
            if fit is not None:
                plates.add(fit.text)
    wall, cpu = time.perf_counter() - wall, cpu_now() - cpu
    seen_until = frames / float(truth.get("fps", 25))
    want = {e["plate"] for e in truth["events"] if e["start_s"] < seen_until}
    row = Row("(a) naive: YOLO torch + readtext", frames, wall, cpu)
    row.found, row.truth, row.spurious = len(plates & want), len(want), len(plates - want)
    row.notes.append(f"first {frames} frames ({seen_until:.1f} s): plates visible in them {sorted(want)}")
    row.notes.append(f"(a) read {len(plates)} distinct strings: {sorted(plates)}")
    return row


# -- (b) ours, replay --------------------------------------------------------------------------


def with_redis(cfg: AnprConfig, prefix: str, spool: Path) -> AnprConfig:
    return cfg.model_copy(
        update={
            "redis": cfg.redis.model_copy(update={"url": REDIS_URL, "prefix": prefix}),
            "events": cfg.events.model_copy(update={"spool_dir": spool}),
        }
    )


def drop_keys(prefix: str) -> None:
    client = redis.Redis.from_url(REDIS_URL)
    for key in client.scan_iter(f"{prefix}:*"):
        client.delete(key)
    client.close()


def score(events: list[PlateEvent], truth: dict[str, Any]) -> tuple[int, int, int]:
    """(found, truth, spurious) on the exact (plate, direction) pairs."""
    got = {(e.plate, e.direction.value) for e in events}
    want = {(e["plate"], e["direction"]) for e in truth["events"]}
    return len(got & want), len(want), len(got - want)


def ours(clip: Path, cfg: AnprConfig, tmp: Path) -> Row:
    from anpr.events import EventSink
    from anpr.recognize import PlateRecognizer
    from anpr.replay import replay

    truth = truth_of(clip)
    prefix = f"bench-pipeline-{uuid.uuid4().hex[:10]}"
    cfg = with_redis(cfg, prefix, tmp / "spool-replay")
    recognizer = PlateRecognizer.from_config(cfg)
    recognizer.detector.detect(next(frames_of(clip, 1)))  # warm-up, as for (a)
    try:
        sink = EventSink.from_config(cfg.redis, cfg.events)
        wall, cpu = time.perf_counter(), cpu_now()
        result = replay(clip, cfg, recognizer, sink, camera=truth["camera"])
        wall, cpu = time.perf_counter() - wall, cpu_now() - cpu
    finally:
        drop_keys(prefix)
    st = result.stats
    row = Row("(b) ours: anpr replay", result.frames, wall, cpu)
    row.found, row.truth, row.spurious = score(result.events, truth)
    row.notes.append(
        f"(b) frames {result.frames}: {result.frames - st.frames} over the rate cap (decoded only), "
        f"detector on {st.detected_frames}, held {st.held_frames}, "
        f"skipped by the gate {st.frames - st.detected_frames - st.held_frames}; OCR calls {st.ocr_calls}; "
        f"events {sorted((e.plate, e.direction.value) for e in result.events)}"
    )
    return row


# -- (d) live ----------------------------------------------------------------------------------


def upscaled(clip: Path, preroll_s: float = 0.0) -> Path:
    """The clip at 1920x1080 (H.264, no B-frames, like a camera), its first frame held for
    `preroll_s` first; made once into .cache/."""
    out = CACHE / f"{clip.stem}-{sha256_of(clip)[:12]}-1080p-pre{preroll_s:g}.mp4"
    if not out.is_file():
        out.parent.mkdir(parents=True, exist_ok=True)
        part = out.with_suffix(".part.mp4")
        video_filter = f"scale=1920:1080,tpad=start_mode=clone:start_duration={preroll_s}"
        encode = ["-c:v", "libx264", "-preset", "veryfast", "-bf", "0", "-g", "25", "-pix_fmt", "yuv420p"]
        subprocess.run(
            ["ffmpeg", "-v", "error", "-y", "-i", str(clip), "-vf", video_filter, *encode, str(part)], check=True
        )
        part.rename(out)
    return out


class TimedLaneHandler(LaneHandler):
    """The live worker's handler, plus what the benchmark needs to see from inside the worker.

    Records each frame's capture, start and finish times per camera (start - capture is the wait in
    the queue, finish - start the work), and each event's deciding moment: the capture time of the
    frame at which the tracker decided it, or the worker's flush tick when it was decided between
    frames. Written to `out_dir` with the lanes' counters when the worker closes.
    """

    def __init__(self, cfg: AnprConfig, out_dir: Path) -> None:
        super().__init__(cfg)
        self.out_dir = out_dir
        self._now = utc_now()
        self.frames: list[tuple[str, float, float, float]] = []
        self.decided: dict[str, tuple[str, float]] = {}

    def _lane(self, camera: str) -> LaneProcessor:
        if camera not in self.lanes:
            self.lanes[camera] = LaneProcessor(
                self.recognizer, self.cameras[camera], self.cfg, self.sink, self.passes, on_event=self._on_event
            )
        return self.lanes[camera]

    def _on_event(self, event: PlateEvent) -> None:
        self.decided[event.event_id] = (event.camera, self._now.timestamp())

    def handle(self, ref: FrameRef, image: np.ndarray) -> None:
        self._now = ref.ts
        started = time.time()
        super().handle(ref, image)
        self.frames.append((ref.camera, ref.ts.timestamp(), started, time.time()))

    def flush(self, now: Any) -> None:
        self._now = now
        super().flush(now)

    def close(self) -> None:
        self._now = utc_now()
        super().close()
        counters = [[camera, name, total] for (camera, name), total in self.counters().items()]
        record = {"frames": self.frames, "decided": self.decided, "counters": counters}
        (self.out_dir / f"worker-{os.getpid()}.json").write_text(json.dumps(record))


def build_timed_handler(cfg: AnprConfig, out_dir: Path) -> TimedLaneHandler:
    return TimedLaneHandler(cfg, out_dir)


def peak_rss_mib(pid: int) -> float | None:
    """VmHWM, the kernel's own peak resident set of a process: no sampling misses a short peak."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def cpu_s_of(pid: int) -> float | None:
    """User + system CPU seconds of a live process so far (/proc/PID/stat utime, stime)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass
class CameraRun:
    """One live camera's figures over the clip proper."""

    name: str
    clip_frames: int
    frames: list[tuple[float, float, float]]  # capture, handle start, done (wall clock), in capture order
    events: list[PlateEvent]
    xadd_s: list[float]  # capture -> XADD of each event's deciding moment
    found: int
    truth: int
    spurious: int
    passed_on: int  # frames the camera process queued for its worker (whole run), after the rate cap
    not_queued: int  # frames past the rate cap the camera could not queue: the worker was behind

    @property
    def latency_s(self) -> list[float]:
        return [done - ts for ts, _, done in self.frames]

    @property
    def dropped_pct(self) -> float:
        """Of the frames due for the detector (past the camera's rate cap), the share the worker never saw."""
        due = self.passed_on + self.not_queued
        return 100 * self.not_queued / due if due else 0.0

    def halves_p95_s(self) -> tuple[float, float] | None:
        """p95 capture -> processed in the first and second half of the clip proper: a backlog grows."""
        lat = self.latency_s
        if len(lat) < 2:
            return None
        half = len(lat) // 2
        return pct(lat[:half], 0.95), pct(lat[half:], 0.95)

    def no_backlog(self) -> bool:
        halves = self.halves_p95_s()
        return halves is not None and halves[1] <= 1.5 * halves[0]


@dataclass
class LiveRun:
    """One run of mode (d) with N cameras."""

    cameras: list[CameraRun]
    duration_s: float
    cpu_s: float
    peak_rss_mib: dict[str, float]  # runtime process name -> its peak RSS
    process_cpu_s: dict[str, float]  # runtime process name -> its CPU until the cameras' end and the linger
    reports: dict[str, Any]
    counters: dict[tuple[str, str], int]

    @property
    def processed(self) -> int:
        return sum(len(c.frames) for c in self.cameras)

    @property
    def xadd_s(self) -> list[float]:
        return [x for c in self.cameras for x in c.xadd_s]

    def held(self) -> bool:
        """Every vehicle right on every camera, p95 capture->XADD <= 1 s and no growing backlog."""
        xadd = self.xadd_s
        return (
            all(c.found == c.truth for c in self.cameras)
            and bool(xadd)
            and pct(xadd, 0.95) <= 1.0
            and all(c.no_backlog() for c in self.cameras)
        )


def run_live(clip: Path, cfg: AnprConfig, cameras: int, preroll_s: float, tmp: Path) -> LiveRun:
    from anpr.runtime.live import Runtime
    from anpr.runtime.stages import CameraFeed

    truth = truth_of(clip)
    source = upscaled(clip, preroll_s)
    clip_frames = sum(1 for _ in frames_of(clip))
    duration = clip_frames / float(truth.get("fps", 25))
    prefix = f"bench-pipeline-live-{uuid.uuid4().hex[:10]}"
    runtime_cfg = cfg.runtime.model_copy(update={"health": cfg.runtime.health.model_copy(update={"enabled": False})})
    cams = [
        CameraConfig(name=f"cam{i + 1}", source=str(source), lane=f"lane{i + 1}", approach_direction="entry")
        for i in range(cameras)
    ]
    cfg = with_redis(cfg, prefix, tmp / f"spool-live-{cameras}").model_copy(
        update={"cameras": cams, "runtime": runtime_cfg}
    )
    out_dir = tmp / f"live-{cameras}"
    out_dir.mkdir()
    runtime = Runtime(
        cfg.runtime,
        [CameraFeed.live(c, cfg.gate.detect_fps) for c in cams],
        functools.partial(build_timed_handler, cfg, out_dir),
    )
    client = redis.Redis.from_url(REDIS_URL)
    linger_s = cfg.tracker.lost_after_s + 2 * cfg.runtime.flush_interval_s + 1.0
    reports: dict[str, Any] = {}
    peak: dict[str, float] = {}
    process_cpu: dict[str, float] = {}

    def sample_rss() -> None:
        for s in runtime.statuses():
            if s.pid is not None and s.alive and (mib := peak_rss_mib(s.pid)) is not None:
                peak[s.name] = max(peak.get(s.name, 0.0), mib)
                process_cpu[s.name] = cpu_s_of(s.pid) or process_cpu.get(s.name, 0.0)

    def cameras_done() -> bool:
        cameras = [s for s in runtime.statuses() if s.kind == "camera"]
        return all(s.finished or (s.stats is not None and s.stats.state in ("ended", "failed")) for s in cameras)

    def stop_after_the_clip() -> None:
        # A bound in case a camera never reports its end: the clip, its pre-roll and start-up time.
        deadline = time.monotonic() + duration + preroll_s + 120
        while not cameras_done() and time.monotonic() < deadline:
            sample_rss()
            time.sleep(0.2)
        linger_until = time.monotonic() + linger_s  # the last tracks end (lost_after_s), the worker's tick emits them
        while time.monotonic() < linger_until:
            sample_rss()
            time.sleep(0.2)
        sample_rss()
        reports.update({s.name: s.stats for s in runtime.statuses()})
        runtime.stop()

    try:
        cpu = cpu_now()
        runtime.start()
        threading.Thread(target=stop_after_the_clip, daemon=True).start()
        runtime.supervise()
        runtime.close()
        cpu = cpu_now() - cpu
        entries = client.xrange(f"{prefix}:events")
    finally:
        runtime.close()
        client.close()
        drop_keys(prefix)

    frames: list[tuple[str, float, float, float]] = []
    decided: dict[str, tuple[str, float]] = {}
    counters: dict[tuple[str, str], int] = {}
    for f in out_dir.glob("worker-*.json"):
        data = json.loads(f.read_text())
        frames += [tuple(x) for x in data["frames"]]
        decided.update({k: tuple(v) for k, v in data["decided"].items()})
        for camera, name, total in data.get("counters", []):
            counters[(camera, name)] = counters.get((camera, name), 0) + total
    events_by_cam: dict[str, list[PlateEvent]] = {c.name: [] for c in cams}
    xadd_latency: dict[str, list[float]] = {c.name: [] for c in cams}
    for entry_id, fields in entries:
        event = PlateEvent.model_validate_json(fields[b"event"])
        events_by_cam[event.camera].append(event)
        if event.event_id in decided:
            xadd_ms = int(entry_id.decode().split("-")[0])
            xadd_latency[event.camera].append(xadd_ms / 1000 - decided[event.event_id][1])
    runs = []
    for cam in cams:
        mine = sorted((ts, start, done) for name, ts, start, done in frames if name == cam.name)
        if mine:  # the clip proper: the last clip-length of frames (the pre-roll came before)
            mine = [f for f in mine if f[0] > mine[-1][0] - duration + 0.02]
        found, want, spurious = score(events_by_cam[cam.name], truth)
        report = reports.get(f"camera:{cam.name}")
        queued, not_queued = (report.frames, report.dropped) if report is not None else (0, 0)
        runs.append(
            CameraRun(
                cam.name,
                clip_frames,
                mine,
                events_by_cam[cam.name],
                xadd_latency[cam.name],
                found,
                want,
                spurious,
                queued,
                not_queued,
            )
        )
    return LiveRun(runs, duration, cpu, peak, process_cpu, reports, counters)


def live(clip: Path, cfg: AnprConfig, cameras: int, preroll_s: float, tmp: Path) -> tuple[list[Row], list[str]]:
    """Mode (d): a table row and notes per camera."""
    run = run_live(clip, cfg, cameras, preroll_s, tmp)
    rows = []
    for cam in run.cameras:
        row = Row(f"(d) live {cam.name}, 1080p 25 fps", len(cam.frames), run.duration_s, run.cpu_s / cameras)
        row.found, row.truth, row.spurious = cam.found, cam.truth, cam.spurious
        if cam.xadd_s:
            row.latency_ms = (pct(cam.xadd_s, 0.5) * 1000, pct(cam.xadd_s, 0.95) * 1000)
        rows.append(row)
    return rows, live_notes(run)


def live_notes(run: LiveRun) -> list[str]:
    notes = []
    for cam in run.cameras:
        lat, halves = cam.latency_s, cam.halves_p95_s()
        if lat and halves:
            wait = [start - ts for ts, start, _ in cam.frames]
            work = [done - start for _, start, done in cam.frames]
            notes.append(
                f"(d) {cam.name}: {len(cam.frames)}/{cam.clip_frames} frames processed, "
                f"{cam.not_queued} of {cam.passed_on + cam.not_queued} due dropped (whole run); "
                f"capture->processed p50 {pct(lat, 0.5) * 1000:.0f} ms, p95 {pct(lat, 0.95) * 1000:.0f} ms "
                f"(waiting p50 {pct(wait, 0.5) * 1000:.0f}, handling p50/p95 {pct(work, 0.5) * 1000:.0f}/"
                f"{pct(work, 0.95) * 1000:.0f} ms); p95 first half {halves[0] * 1000:.0f} ms, "
                f"second half {halves[1] * 1000:.0f} ms; "
                f"events {sorted((e.plate, e.direction.value) for e in cam.events)}"
            )
    for name, report in sorted(run.reports.items()):
        if report is not None:
            notes.append(
                f"(d) runtime {name}: frames {report.frames}, dropped {report.dropped}, "
                f"last interval p50/p95 {_ms(report.latency_p50_s)}/{_ms(report.latency_p95_s)} ms, "
                f"peak RSS {run.peak_rss_mib.get(name, 0):.0f} MiB, CPU {run.process_cpu_s.get(name, 0):.1f} s"
            )
    per_cam: dict[str, list[str]] = {}
    for (camera, name), total in sorted(run.counters.items()):
        if name in ("lane_frames_detected", "lane_frames_held", "lane_frames_skipped", "lane_ocr_calls"):
            per_cam.setdefault(camera, []).append(f"{name.removeprefix('lane_')} {total}")
    for camera, parts in per_cam.items():
        notes.append(f"(d) lane {camera} (whole run, pre-roll included): " + ", ".join(parts))
    notes.append(
        f"(d) CPU of all runtime processes: {run.cpu_s:.1f} s = "
        f"{run.cpu_s / max(run.processed, 1) * 1000:.0f} ms per processed frame"
    )
    return notes


def parse_sweep(text: str) -> list[int]:
    """'1-6' or '1,2,4' (or a mix: '1-3,6') -> camera counts."""
    counts: list[int] = []
    for part in text.split(","):
        lo, _, hi = part.strip().partition("-")
        counts += range(int(lo), int(hi or lo) + 1)
    if not counts or min(counts) < 1:
        raise argparse.ArgumentTypeError(f"--sweep wants camera counts >= 1 like 1-6 or 1,2,4, not {text!r}")
    return counts


def sweep(clip: Path, cfg: AnprConfig, counts: list[int], preroll_s: float, tmp: Path, console: Console) -> None:
    """Mode (d) for each N in turn, one row per N, and the lanes this box holds."""
    start_load = loadavg()
    runs: list[tuple[int, LiveRun]] = []
    for n in counts:
        console.print(f"(d) {n} camera(s) ... load average {loadavg()}")
        runs.append((n, run_live(clip, cfg, n, preroll_s, tmp)))
    table = Table(
        "N",
        "frames/s per cam min / mean",
        "dropped % of due, max / mean",
        "vehicles right",
        "spurious",
        "capture->XADD p50 / p95 ms",
        "capture->processed p95 1st / 2nd half ms (worst cam)",
        "CPU ms/frame",
        "peak RSS MiB (max process)",
        "held",
        title=f"{clip.name} as N live 1080p 25 fps cameras, rate cap {cfg.gate.detect_fps:g} frames/s per camera, "
        f"load average {start_load} .. {loadavg()}",
    )
    for n, run in runs:
        fps = [len(c.frames) / run.duration_s for c in run.cameras]
        dropped = [c.dropped_pct for c in run.cameras]
        xadd = run.xadd_s
        halves = [h for c in run.cameras if (h := c.halves_p95_s()) is not None]
        worst = max(halves, key=lambda h: h[1] / max(h[0], 1e-9)) if halves else None
        peak = max(run.peak_rss_mib.items(), key=lambda kv: kv[1], default=("-", 0.0))
        table.add_row(
            str(n),
            f"{min(fps):.1f} / {sum(fps) / n:.1f}",
            f"{max(dropped):.0f} / {sum(dropped) / n:.0f}",
            f"{sum(c.found for c in run.cameras)}/{sum(c.truth for c in run.cameras)}"
            f" ({sum(c.found == c.truth for c in run.cameras)}/{n} cams all)",
            str(sum(c.spurious for c in run.cameras)),
            f"{pct(xadd, 0.5) * 1000:.0f} / {pct(xadd, 0.95) * 1000:.0f}" if xadd else "-",
            f"{worst[0] * 1000:.0f} / {worst[1] * 1000:.0f}" if worst else "-",
            f"{run.cpu_s / max(run.processed, 1) * 1000:.0f}",
            f"{peak[1]:.0f} ({peak[0]})",
            "yes" if run.held() else "no",
        )
    console.print(table)
    for n, run in runs:
        console.print(f"-- N = {n}")
        for note in live_notes(run):
            console.print(note)
    held = [n for n, run in runs if run.held()]
    console.print(
        f"lanes held = {max(held) if held else 0} (largest N with every vehicle right on every camera, "
        "p95 capture->XADD <= 1 s and no growing backlog: second-half p95 capture->processed <= 1.5x the first half's)"
    )


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value * 1000:.0f}"


# -- main --------------------------------------------------------------------------------------


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clip", type=Path, default=REPO_ROOT / "sample_videos" / "lane_day.mp4")
    ap.add_argument("--config", type=Path, default=REPO_ROOT / "configs" / "dev.yaml")
    ap.add_argument("--naive-frames", type=int, default=150, help="frames of the clip the naive loop runs on")
    ap.add_argument("--cameras", type=int, default=2, help="live cameras in (d); 0 skips (d)")
    ap.add_argument("--preroll", type=float, default=20.0, help="seconds of still first frame before the live clip")
    ap.add_argument("--ocr-network", choices=["plate_ocr", "english_g2"], help="override the config's OCR network")
    ap.add_argument("--workers", type=int, help="override runtime.workers for (d): a site runs one per core")
    ap.add_argument("--precision", choices=["f32", "int8"], help="override detector.precision (video)")
    ap.add_argument(
        "--sweep",
        type=parse_sweep,
        metavar="N-M|N,M,...",
        help="only (d), once per camera count (1-6 or 1,2,4): one row per count and the lanes held",
    )
    args = ap.parse_args()
    cfg = load_config(args.config)
    if args.ocr_network:
        cfg = cfg.model_copy(update={"ocr": cfg.ocr.model_copy(update={"network": args.ocr_network})})
    if args.precision:
        cfg = cfg.model_copy(update={"detector": cfg.detector.model_copy(update={"precision": args.precision})})
    if args.workers:
        cfg = cfg.model_copy(update={"runtime": cfg.runtime.model_copy(update={"workers": args.workers})})
    console = Console(width=220)
    console.print(
        f"OCR network {cfg.ocr.network}, detector {cfg.detector.backend} {cfg.detector.imgsz} "
        f"{cfg.detector.precision}, {cfg.runtime.workers} worker(s)"
    )
    if args.sweep:
        with tempfile.TemporaryDirectory(prefix="bench-pipeline-") as tmp_name:
            sweep(args.clip, cfg, args.sweep, args.preroll, Path(tmp_name), console)
        return
    loads = [f"start {loadavg()}"]
    console.print(
        f"OCR network {cfg.ocr.network}, detector {cfg.detector.backend} {cfg.detector.imgsz}, gate {cfg.gate}"
    )
    with tempfile.TemporaryDirectory(prefix="bench-pipeline-") as tmp_name:
        tmp = Path(tmp_name)
        rows = [decode_only(args.clip, "(c) decode only")]
        loads.append(f"after (c) {loadavg()}")
        rows.insert(0, naive(args.clip, cfg, args.naive_frames))
        loads.append(f"after (a) {loadavg()}")
        rows.insert(1, ours(args.clip, cfg, tmp))
        loads.append(f"after (b) {loadavg()}")
        if args.cameras:
            source = upscaled(args.clip, args.preroll)
            rows.append(decode_only(source, f"(c') decode only, 1920x1080 (+{args.preroll:g} s still pre-roll)"))
            live_rows, live_notes = live(args.clip, cfg, args.cameras, args.preroll, tmp)
            rows += live_rows
            loads.append(f"after (d) {loadavg()}")
        else:
            live_notes = []

    base = rows[0]
    columns = ["run", "frames", "frames/s", "x (a)", "CPU ms/frame", "x (a) CPU", "events found", "spurious"]
    table = Table(
        *columns, "capture->XADD p50/p95 ms", title=f"{args.clip.name}, load average {loads[0]} .. {loads[-1]}"
    )
    for r in rows:
        table.add_row(
            r.name,
            str(r.frames),
            f"{r.fps:.2f}",
            f"{r.fps / base.fps:.1f}",
            f"{r.cpu_s / r.frames * 1000:.0f}",
            f"{(base.cpu_s / base.frames) / (r.cpu_s / r.frames):.1f}",
            "-" if r.found is None else f"{r.found}/{r.truth}",
            "-" if r.spurious is None else str(r.spurious),
            "-" if r.latency_ms is None else f"{r.latency_ms[0]:.0f} / {r.latency_ms[1]:.0f}",
        )
    console.print(table)
    for r in rows:
        for note in r.notes:
            console.print(note)
    for note in live_notes:
        console.print(note)
    console.print("load average (1/5/15 min): " + "; ".join(loads))


if __name__ == "__main__":
    main()
