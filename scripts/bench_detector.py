"""Detector latency and boxes: OpenVINO f32 vs INT8 (`detector.precision`), optionally PyTorch too.

    .venv/bin/python scripts/bench_detector.py [--n 30] [--threads 1 2] [--torch] [--boxes]

- Speed: the same photos at two input shapes, `imgsz` square (each photo resized to imgsz x imgsz)
  and the 16:9 minimum rectangle (resized to 1280x720, `rect`: 640x384 at imgsz 640). Every detector
  is built first and the rounds interleave them (one pass over the photos each, `--rounds`), so a
  neighbour's load on this shared machine falls on all of them alike: compare the ratios.
- Boxes (`--boxes`): the detector's default input (whole photo, imgsz square, no tiles) over the
  openalpr-us held-out photos (models/plate_ocr_split.json) and ua-plates: recall of the labelled
  plate at IoU >= 0.5 (openalpr-us; ua-plates has no boxes), and each precision's boxes against f32's.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import cv2
import numpy as np
from rich.console import Console
from rich.table import Table

from anpr.config import MODELS_DIR, REPO_ROOT, DetectorConfig
from anpr.detect import PlateDetector, make_detector
from anpr.evaluate import load_samples
from anpr.images import decode_image
from anpr.schema import PlateDetection

DATASETS = REPO_ROOT.parent / "shared" / "datasets"
DEFAULT_IMAGES = DATASETS / "openalpr-us" / "images"


def load_images(folder: Path, n: int) -> list[np.ndarray]:
    """The first `n` photos of `folder`, or without it frames of the committed sample clips."""
    paths = sorted(folder.glob("*.jp*g"))[:n] if folder.is_dir() else []
    if paths:
        return [decode_image(p) for p in paths]
    frames: list[np.ndarray] = []
    for clip in sorted((REPO_ROOT / "sample_videos").glob("*.mp4")):
        cap = cv2.VideoCapture(str(clip))
        while len(frames) < n and (got := cap.read())[0]:
            frames.append(got[1])
            cap.set(cv2.CAP_PROP_POS_FRAMES, cap.get(cv2.CAP_PROP_POS_FRAMES) + 24)
        cap.release()
    return frames


def agreement(a: list[PlateDetection], b: list[PlateDetection]) -> tuple[int, list[float]]:
    """Count difference and, for each box of `a`, the best IoU with a box of `b`."""
    return abs(len(a) - len(b)), [max((x.box.iou(y.box) for y in b), default=0.0) for x in a]


def bench_speed(args: argparse.Namespace, console: Console) -> None:
    photos = load_images(args.images, args.n)
    shapes = {
        f"{args.imgsz}x{args.imgsz}": ([cv2.resize(p, (args.imgsz, args.imgsz)) for p in photos], False),
        "16:9 rect": ([cv2.resize(p, (1280, 720)) for p in photos], True),
    }
    kinds = (["torch"] if args.torch else []) + ["f32", "int8"]
    for threads in args.threads:
        table = Table(title=f"detector B, {len(photos)} photos, batch 1, {threads} thread(s), {args.rounds} rounds")
        for col in ("shape", "detector", "median ms", "p90 ms", "speed-up vs f32"):
            table.add_column(col)
        for shape, (images, rect) in shapes.items():
            dets: dict[str, PlateDetector] = {}
            for kind in kinds:
                backend, precision = ("torch", "f32") if kind == "torch" else ("openvino", kind)
                cfg = DetectorConfig(backend=backend, precision=precision, imgsz=args.imgsz, rect=rect, threads=threads)  # type: ignore[arg-type]
                dets[kind] = make_detector(cfg)
                dets[kind].detect(images[0])  # warm-up, at this shape
            times: dict[str, list[float]] = {k: [] for k in kinds}
            for _ in range(args.rounds):
                for kind, det in dets.items():
                    for img in images:
                        t = time.perf_counter()
                        det.detect(img)
                        times[kind].append((time.perf_counter() - t) * 1000)
            base = statistics.median(times["f32"])
            for kind, ts in times.items():
                med = statistics.median(ts)
                label = "torch (PyTorch)" if kind == "torch" else f"openvino {kind}"
                table.add_row(shape, label, f"{med:.1f}", f"{np.percentile(ts, 90):.1f}", f"{base / med:.2f}x")
        console.print(table)


def bench_boxes(args: argparse.Namespace, console: Console) -> None:
    held = set(json.loads((MODELS_DIR / "plate_ocr_split.json").read_text())["sets"]["openalpr-us"]["heldout"])
    sets = {
        "openalpr-us held-out": [s for s in load_samples(DATASETS / "openalpr-us") if s.image.name in held],
        "ua-plates": load_samples(DATASETS / "ua-plates"),
    }
    dets = {p: make_detector(DetectorConfig(precision=p, imgsz=args.imgsz, threads=1)) for p in ("f32", "int8")}
    table = Table(title=f"detector boxes, whole photo at {args.imgsz} square (no tiles)")
    for col in (
        "set",
        "photos",
        "precision",
        "recall IoU>=0.5",
        "boxes",
        "photos, count != f32",
        "f32 boxes matched IoU>=0.9 (min IoU)",
    ):
        table.add_column(col)
    for name, samples in sets.items():
        found = {p: [det.detect(decode_image(s.image)) for s in samples] for p, det in dets.items()}
        for p, boxes in found.items():
            labelled = [(s.box, b) for s, b in zip(samples, boxes, strict=True) if s.box is not None]
            recall = (
                f"{sum(any(d.box.iou(box) >= 0.5 for d in b) for box, b in labelled)}/{len(labelled)}"
                if labelled
                else "-"
            )
            diff, ious = 0, []
            for a, b in zip(found["f32"], boxes, strict=True):
                d, i = agreement(a, b)
                diff += d > 0
                ious += i
            table.add_row(
                name, str(len(samples)), p, recall, str(sum(map(len, boxes))), str(diff),
                f"{sum(i >= 0.9 for i in ious)}/{len(ious)} ({min(ious, default=1.0):.3f})",
            )  # fmt: skip
            if args.verbose and p != "f32":
                for s, a, b in zip(samples, found["f32"], boxes, strict=True):
                    if agreement(a, b)[0] or any(i < 0.9 for i in agreement(a, b)[1]):
                        show = [[f"{d.confidence:.2f}" for d in x] for x in (a, b)]
                        console.print(f"  {s.image.name}: f32 {show[0]} vs {p} {show[1]}, IoU {agreement(a, b)[1]}")
    console.print(table)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=Path, default=DEFAULT_IMAGES)
    ap.add_argument("--n", type=int, default=30)
    ap.add_argument("--imgsz", type=int, default=640)
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--torch", action="store_true", help="add the PyTorch backend (ultralytics) row")
    ap.add_argument("--boxes", action="store_true", help="also compare boxes on the evaluation photos")
    ap.add_argument("--no-speed", action="store_true")
    ap.add_argument("--verbose", action="store_true", help="list photos whose boxes differ from f32's")
    args = ap.parse_args()
    console = Console(width=160)
    if not args.no_speed:
        bench_speed(args, console)
    if args.boxes:
        bench_boxes(args, console)


if __name__ == "__main__":
    main()
