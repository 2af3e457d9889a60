"""Render the sample lane clips (H.264 MP4) and their ground truth, and check detector B on them.

Clips (25 fps, 1280x720, no B-frames, one slice per frame, a key frame every second):
- lane_day.mp4: the entry-lane camera by day. Cars with UA and MD plates approach (entry), one MD
  car waits at the booth for 4 s, a UA and a RO car drive away in the exit lane (exit).
- lane_night.mp4: the same camera at night under its infrared illuminator.
- truck_front.mp4 / truck_rear.mp4: the front and rear cameras of the same lane, in sync. A car and
  then a tractor unit pass; the front camera reads the tractor's plate, the rear camera the
  two-line plate of its semitrailer (`trailer_of` names the tractor). One camera cannot see both
  ends of a truck, so the pair is what a lane with front and rear cameras records.

Each clip has a JSON next to it: {"clip", "fps", "lane", "camera", "events": [{"plate", "country",
"direction", "start_s", "end_s", "vehicle"[, "trailer_of"]}], "stopped": [{"plate", "start_s",
"end_s"}]}. An event spans the frames where its plate is wholly in view and at least
MIN_PLATE_PX wide. Direction is relative to the country, not the camera: the rear camera sees
entering vehicles drive away.

    .venv/bin/python scripts/make_sample_videos.py            # render + write JSON
    .venv/bin/python scripts/make_sample_videos.py --check    # detector B hit rate per plate
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NotRequired, TypedDict

import numpy as np

from anpr.schema import Box
from anpr.synth.augment import dirt
from anpr.synth.render import RenderedPlate, render_plate
from anpr.synth.scene import quad_box, render_backdrop, render_frame, visible_plates
from anpr.synth.world import ENTRY_X, EXIT_X, Camera, Pose, Vehicle, make_car, make_truck

REPO = Path(__file__).resolve().parent.parent
OUT_DIR = REPO / "sample_videos"
FPS = 25
LANE = "lane1"
MIN_PLATE_PX = 48  # narrower plates are not counted as "in view": too small to read
FRONT_CAMERA = Camera(position=(1.9, 2.2, 0.0), focal_px=1400.0, pitch_deg=9.0, yaw_deg=-4.0)  # on the island
# Past the booth, looking back down the road and turned 15 degrees towards the lane.
REAR_CAMERA = Camera(position=(1.9, 1.5, -0.5), focal_px=1250.0, pitch_deg=5.0, yaw_deg=195.0)

Segment = tuple[float, float] | tuple[str, float]  # (target z, speed m/s) or ("stop", seconds)


def path(t0: float, z0: float, segments: Sequence[Segment]) -> tuple[tuple[float, float], ...]:
    """Key frames (t, z) of a vehicle that drives from z0 at t0 through piecewise-constant speeds."""
    keys = [(t0, z0)]
    for target, value in segments:
        t, z = keys[-1]
        if target == "stop":
            keys.append((t + value, z))
        else:
            keys.append((t + abs(float(target) - z) / value, float(target)))
    return tuple(keys)


@dataclass(frozen=True)
class Actor:
    vehicle: Vehicle
    lane_x: float
    heading: int  # -1 drives towards the front camera (entering the country), +1 away from it
    keys: tuple[tuple[float, float], ...]
    direction: str

    def pose(self, t: float) -> Pose:
        ts, zs = zip(*self.keys, strict=True)
        return Pose(self.lane_x, float(np.interp(t, ts, zs)), self.heading)

    def stopped(self) -> list[tuple[float, float]]:
        return [(a[0], b[0]) for a, b in zip(self.keys, self.keys[1:], strict=False) if a[1] == b[1]]


@dataclass(frozen=True)
class Clip:
    name: str
    camera: Camera
    camera_name: str
    night: bool
    duration_s: float
    actors: tuple[Actor, ...]
    seed: int

    @property
    def frames(self) -> int:
        return round(self.duration_s * FPS)


def _plate(text: str, style: str, rng: np.random.Generator) -> RenderedPlate:
    return render_plate(text, style, rng, px_per_mm=1.6, augmentations=[lambda p, r: dirt(p, r, amount=0.3)])


def _car(rng: np.random.Generator, text: str, style: str) -> Vehicle:
    plate = _plate(text, style, rng)
    return make_car(rng, plate, plate)


def build_clips() -> list[Clip]:
    """The scripted traffic. Speeds near the booth are walking pace, as at a real border post."""
    rng = np.random.default_rng(7)
    day = (
        Actor(_car(rng, "OKA 417", "MD"), ENTRY_X, -1, path(0.0, 9.0, [(-20.0, 2.0)]), "entry"),
        Actor(_car(rng, "BH 2741 KX", "UA"), ENTRY_X, -1, path(0.0, 22.0, [(12.0, 4.0), (-20.0, 1.5)]), "entry"),
        Actor(
            _car(rng, "CMB 093", "MD"),
            ENTRY_X,
            -1,
            path(2.5, 38.0, [(12.0, 5.0), (5.1, 1.6), ("stop", 4.0), (-20.0, 2.5)]),
            "entry",
        ),
        Actor(_car(rng, "AI 6093 BC", "UA"), EXIT_X, 1, path(0.0, 2.0, [(16.0, 1.6), (60.0, 4.0)]), "exit"),
        Actor(_car(rng, "IS 27 RVT", "RO"), EXIT_X, 1, path(7.0, -4.0, [(16.0, 1.7), (60.0, 4.0)]), "exit"),
    )
    rng = np.random.default_rng(8)
    night = (
        Actor(_car(rng, "BT 5530 HA", "UA"), ENTRY_X, -1, path(0.0, 20.0, [(12.0, 4.0), (-20.0, 1.5)]), "entry"),
        Actor(_car(rng, "KTR 628", "MD"), ENTRY_X, -1, path(3.0, 35.0, [(12.0, 5.0), (-20.0, 1.5)]), "entry"),
        Actor(_car(rng, "CE 0417 MO", "UA"), EXIT_X, 1, path(0.0, -3.0, [(20.0, 1.6), (60.0, 4.0)]), "exit"),
        Actor(_car(rng, "VBA 305", "MD"), EXIT_X, 1, path(4.0, -5.0, [(20.0, 1.5), (60.0, 4.0)]), "exit"),
    )
    rng = np.random.default_rng(9)
    tractor, trailer = _plate("BH 0982 XA", "UA", rng), _plate("BH\n4315 XT", "UA2", rng)
    truck = (
        Actor(_car(rng, "ANG 772", "MD"), ENTRY_X, -1, path(0.0, 8.0, [(-30.0, 2.2)]), "entry"),
        Actor(
            make_truck(rng, tractor, trailer),
            ENTRY_X,
            -1,
            path(0.0, 22.0, [(12.0, 4.0), (4.0, 1.8), (-18.0, 3.2), (-40.0, 1.1)]),
            "entry",
        ),
    )
    return [
        Clip("lane_day", FRONT_CAMERA, "front", False, 20.0, day, 11),
        Clip("lane_night", FRONT_CAMERA, "front", True, 16.0, night, 12),
        Clip("truck_front", FRONT_CAMERA, "front", False, 20.0, truck, 13),
        Clip("truck_rear", REAR_CAMERA, "rear", False, 20.0, truck, 14),
    ]


def visible_boxes(clip: Clip, frame: int) -> Iterator[tuple[Actor, RenderedPlate, Box]]:
    """Plates in view (whole, unhidden, at least MIN_PLATE_PX wide) in `frame`, with their true boxes."""
    owner = {id(p): a for a in clip.actors for p in a.vehicle.plates}
    scene = [(a.vehicle, a.pose(frame / FPS)) for a in clip.actors]
    for plate, quad in visible_plates(clip.camera, scene):
        box = quad_box(quad)
        if box.width >= MIN_PLATE_PX:
            yield owner[id(plate)], plate, box


class Event(TypedDict):
    plate: str
    country: str | None
    direction: str
    start_s: float
    end_s: float
    vehicle: str  # car, truck (the tractor's front plate) or trailer
    trailer_of: NotRequired[str]  # the tractor's plate, on trailer events


class Stop(TypedDict):
    plate: str
    start_s: float
    end_s: float


class Truth(TypedDict):
    clip: str
    fps: int
    lane: str
    camera: str
    events: list[Event]
    stopped: list[Stop]


def ground_truth(clip: Clip) -> Truth:
    seen: dict[str, tuple[Actor, RenderedPlate, int, int]] = {}
    for i in range(clip.frames):
        for actor, plate, _ in visible_boxes(clip, i):
            first = seen.get(plate.label, (actor, plate, i, i))[2]
            seen[plate.label] = (actor, plate, first, i)
    events: list[Event] = []
    for label, (actor, plate, first, last) in sorted(seen.items(), key=lambda kv: kv[1][2]):
        is_trailer = actor.vehicle.kind == "truck" and plate is actor.vehicle.plates[-1]
        event = Event(
            plate=label,
            country=plate.country,
            direction=actor.direction,
            start_s=round(first / FPS, 2),
            end_s=round(last / FPS, 2),
            vehicle="trailer" if is_trailer else actor.vehicle.kind,
        )
        if is_trailer:
            event["trailer_of"] = actor.vehicle.plates[0].label
        events.append(event)
    in_view = {e["plate"] for e in events}
    stopped = [
        Stop(plate=a.vehicle.plates[0].label, start_s=round(t0, 2), end_s=round(t1, 2))
        for a in clip.actors
        for t0, t1 in a.stopped()
        if a.vehicle.plates[0].label in in_view and t0 < clip.duration_s
    ]
    return Truth(clip=f"{clip.name}.mp4", fps=FPS, lane=LANE, camera=clip.camera_name, events=events, stopped=stopped)


def render_clip(clip: Clip, path_mp4: Path) -> None:
    """Encode with libx264 via PyAV: no B-frames and one slice per frame, which RTSP re-streaming needs."""
    import av  # heavy: only when rendering

    rng = np.random.default_rng(clip.seed)
    backdrop = render_backdrop(clip.camera, rng, clip.night)
    with av.open(str(path_mp4), "w") as container:
        stream = container.add_stream("libx264", rate=FPS)
        stream.width, stream.height, stream.pix_fmt = clip.camera.width, clip.camera.height, "yuv420p"
        stream.codec_context.thread_type = "FRAME"
        stream.options = {
            "crf": "23",
            "sc_threshold": "0",  # key frames exactly every second: sensor noise fakes scene cuts
            "preset": "medium",
            "bf": "0",
            "g": str(FPS),
            "maxrate": "1800k",
            "bufsize": "3600k",
        }
        for i in range(clip.frames):
            scene = [(a.vehicle, a.pose(i / FPS)) for a in clip.actors]
            image = render_frame(backdrop, clip.camera, scene, clip.night, rng)
            frame = av.VideoFrame.from_ndarray(image, format="bgr24")
            frame.pts = i
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))


def check(clips: Sequence[Clip], step: int = 5) -> None:
    """Run detector B (imgsz 640, conf 0.25) on every `step`-th decoded frame; print hit rates per plate."""
    os.environ.setdefault("YOLO_OFFLINE", "1")
    import av
    from ultralytics import YOLO

    model: Any = YOLO(str(REPO / "models" / "plate_detector_b.pt"))  # ultralytics' annotations are too loose
    for clip in clips:
        stats: dict[str, list[int]] = {}  # label -> [frames, hit@.5, hit@.3, frames>=90px, hit@.5 there]
        with av.open(str(OUT_DIR / f"{clip.name}.mp4")) as container:
            for i, frame in enumerate(container.decode(video=0)):
                truth = list(visible_boxes(clip, i)) if i % step == 0 else []
                if not truth:
                    continue
                found = model.predict(frame.to_ndarray(format="bgr24"), imgsz=640, conf=0.25, verbose=False)[0]
                boxes = [Box(*b) for b in found.boxes.xyxy.tolist()]
                for _, plate, box in truth:
                    best = max((box.iou(b) for b in boxes), default=0.0)
                    s = stats.setdefault(plate.label, [0, 0, 0, 0, 0])
                    big = box.width >= 90
                    s[0] += 1
                    s[1] += best >= 0.5
                    s[2] += best >= 0.3
                    s[3] += big
                    s[4] += big and best >= 0.5
        for label, (n, h5, h3, nb, hb) in stats.items():
            print(
                f"{clip.name:12s} {label:10s} IoU>=.5 {h5:3d}/{n:<3d} ({h5 / n:4.0%})  IoU>=.3 {h3 / n:4.0%}"
                f"  >=90px: {hb}/{nb}"
            )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only run detector B on the existing clips")
    parser.add_argument("--only", nargs="*", help="clip names to process (default: all)")
    args = parser.parse_args()
    clips = [c for c in build_clips() if not args.only or c.name in args.only]
    if args.check:
        check(clips)
        return 0
    OUT_DIR.mkdir(exist_ok=True)
    for clip in clips:
        start = time.perf_counter()
        mp4 = OUT_DIR / f"{clip.name}.mp4"
        render_clip(clip, mp4)
        truth = ground_truth(clip)
        (OUT_DIR / f"{clip.name}.json").write_text(json.dumps(truth, indent=2) + "\n")
        print(
            f"{mp4.name}: {mp4.stat().st_size / 1e6:.2f} MB, {clip.frames} frames, "
            f"{time.perf_counter() - start:.1f} s, plates {[e['plate'] for e in truth['events']]}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
