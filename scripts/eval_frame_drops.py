"""Events found when a share of a clip's frames never reaches the lane, as on a busy live worker.

    .venv/bin/python scripts/eval_frame_drops.py sample_videos/lane_day.mp4 --keep 0.8 --seeds 1 2 3

Replays the clip through the same LaneProcessor as `anpr replay`, dropping frames at random
(seeded) but keeping each frame's file-position timestamp, and scores the events against the
clip's ground truth as exact (plate, direction) pairs. Events go to the configured Redis (dev
config: the embedded one's default URL) under a throw-away prefix.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import uuid
from datetime import timedelta
from pathlib import Path

import cv2

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from anpr.config import load_config  # noqa: E402
from anpr.events import EventSink  # noqa: E402
from anpr.lane import LaneProcessor  # noqa: E402
from anpr.passes import PassRegistry  # noqa: E402
from anpr.recognize import PlateRecognizer  # noqa: E402
from anpr.replay import camera_for  # noqa: E402
from anpr.schema import PlateEvent, utc_now  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("clip", type=Path)
    ap.add_argument("--config", type=Path, default=REPO / "configs" / "dev.yaml")
    ap.add_argument("--keep", type=float, default=0.8, help="share of frames the lane sees")
    ap.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    args = ap.parse_args()
    cfg = load_config(args.config)
    truth = json.loads(args.clip.with_suffix(".json").read_text())
    want = {(e["plate"], e["direction"]) for e in truth["events"]}
    recognizer = PlateRecognizer.from_config(cfg)
    for seed in args.seeds:
        run = cfg.model_copy(update={"redis": cfg.redis.model_copy(update={"prefix": f"drops-{uuid.uuid4().hex[:8]}"})})
        events: list[PlateEvent] = []
        lane = LaneProcessor(
            recognizer,
            camera_for(args.clip, run, truth["camera"]),
            run,
            EventSink.from_config(run.redis, run.events),
            PassRegistry.from_config(run),
            on_event=events.append,
        )
        rng, t0, cap, i = random.Random(seed), utc_now(), cv2.VideoCapture(str(args.clip)), 0
        fps = float(truth.get("fps", 25))
        while True:
            ok, image = cap.read()
            if not ok:
                break
            ts, i = t0 + timedelta(seconds=i / fps), i + 1
            if rng.random() < args.keep:
                lane.process(ts, image)
        lane.finish(t0 + timedelta(seconds=i / fps + cfg.tracker.lost_after_s))
        got = {(e.plate, e.direction.value) for e in events}
        print(
            f"{args.clip.stem} keep {args.keep} seed {seed}: found {len(got & want)}/{len(want)}, "
            f"spurious {len(got - want)}: {sorted(got)}"
        )


if __name__ == "__main__":
    main()
