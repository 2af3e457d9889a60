"""Render the repository's sample photo: a car with a Ukrainian plate at a border booth.

Writes sample_videos/sample_plate.jpg and sample_videos/sample_plate.json ({"plate", "box"}), then
checks that detector B finds the plate (IoU > 0.5), so `make demo` is known to have something to read.

    .venv/bin/python scripts/make_sample_image.py [--no-check]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from anpr.schema import Box
from anpr.synth.augment import dirt
from anpr.synth.render import render_plate
from anpr.synth.scene import render_scene

REPO = Path(__file__).resolve().parent.parent
OUT_DIR = REPO / "sample_videos"
SEED = 3
TEXT = "BH 5417 HP"  # Odesa region, where most UA-MD crossings are


def detect(image: np.ndarray, weights: Path) -> list[tuple[Box, float]]:
    """Detector B as the NOTES recipe runs it: imgsz 640, conf 0.25."""
    os.environ.setdefault("YOLO_OFFLINE", "1")
    from ultralytics import YOLO  # heavy: only when checking

    model: Any = YOLO(str(weights))  # ultralytics' own annotations are too loose for mypy
    result = model.predict(image, imgsz=640, conf=0.25, verbose=False)[0]
    return [
        (Box(*(float(v) for v in xyxy)), float(conf))
        for xyxy, conf in zip(result.boxes.xyxy.tolist(), result.boxes.conf.tolist(), strict=True)
    ]


def scene_from_disk(path: Path) -> np.ndarray:
    """The JPEG as committed, so the check sees the compression artefacts the demo will see."""
    image = cv2.imread(str(path))
    if image is None:
        raise FileNotFoundError(path)
    return image


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-check", action="store_true", help="skip the detector check")
    args = parser.parse_args()

    rng = np.random.default_rng(SEED)
    plate = render_plate(TEXT, "UA", rng, augmentations=[lambda p, r: dirt(p, r, amount=0.25)])
    scene = render_scene(plate, rng)
    OUT_DIR.mkdir(exist_ok=True)
    jpg = OUT_DIR / "sample_plate.jpg"
    cv2.imwrite(str(jpg), scene.image, [cv2.IMWRITE_JPEG_QUALITY, 90])
    (OUT_DIR / "sample_plate.json").write_text(
        json.dumps({"plate": scene.label, "box": scene.box.as_int_list()}, indent=2) + "\n"
    )
    print(f"{jpg}: {jpg.stat().st_size // 1024} KB, plate {scene.label} at {scene.box.as_int_list()}")
    if args.no_check:
        return 0
    found = detect(scene_from_disk(jpg), REPO / "models" / "plate_detector_b.pt")
    best = max(((b.iou(scene.box), c) for b, c in found), default=(0.0, 0.0))
    print(f"detector B: {len(found)} box(es), best IoU {best[0]:.2f} at confidence {best[1]:.2f}")
    return 0 if best[0] > 0.5 else 1


if __name__ == "__main__":
    sys.exit(main())
