"""Detector latency: PyTorch (baseline) vs OpenVINO at the same input size, plus box agreement.

Every image is resized to exactly imgsz x imgsz first, so both backends run the very same tensor
shape (PyTorch would otherwise letterbox to a smaller rectangle and the comparison would be
unfair). Prints a table; compare the ratio, not absolute times (shared, noisy machine).

    .venv/bin/python scripts/bench_detector.py [--images DIR] [--n 40] [--imgsz 640]
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import cv2
import numpy as np
from rich.console import Console
from rich.table import Table

from anpr.config import REPO_ROOT, DetectorConfig
from anpr.detect import make_detector
from anpr.schema import PlateDetection

DEFAULT_IMAGES = REPO_ROOT.parent / "shared" / "datasets" / "openalpr-us" / "images"


def load_images(folder: Path, n: int, size: int) -> list[np.ndarray]:
    paths = sorted(folder.glob("*.jp*g"))[:n] if folder.is_dir() else []
    if paths:
        return [cv2.resize(cv2.imread(str(p)), (size, size)) for p in paths]
    from anpr.synth import render_scene

    rng = np.random.default_rng(0)
    return [cv2.resize(render_scene(rng)[0], (size, size)) for _ in range(n)]


def agreement(a: list[PlateDetection], b: list[PlateDetection]) -> tuple[int, list[float]]:
    """Count difference and, for each box of `a`, the best IoU with a box of `b`."""
    return abs(len(a) - len(b)), [max((x.box.iou(y.box) for y in b), default=0.0) for x in a]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=Path, default=DEFAULT_IMAGES)
    ap.add_argument("--n", type=int, default=40)
    ap.add_argument("--imgsz", type=int, default=640)
    args = ap.parse_args()
    images = load_images(args.images, args.n, args.imgsz)

    timings: dict[str, list[float]] = {}
    outputs: dict[str, list[list[PlateDetection]]] = {}
    for backend in ("torch", "openvino"):
        det = make_detector(DetectorConfig(backend=backend, imgsz=args.imgsz))  # type: ignore[arg-type]
        det.detect(images[0])  # warm-up
        timings[backend], outputs[backend] = [], []
        for img in images:
            t = time.perf_counter()
            outputs[backend].append(det.detect(img))
            timings[backend].append((time.perf_counter() - t) * 1000)

    count_diff, ious = 0, []
    for a, b in zip(outputs["torch"], outputs["openvino"], strict=True):
        d, i = agreement(a, b)
        count_diff += d
        ious += i
    base = statistics.median(timings["torch"])
    table = Table(title=f"detector B, {len(images)} images at {args.imgsz}x{args.imgsz}, batch 1")
    for col in ("backend", "median ms", "p90 ms", "speed-up vs torch"):
        table.add_column(col)
    for backend, ts in timings.items():
        med = statistics.median(ts)
        p90 = float(np.percentile(ts, 90))
        table.add_row(backend, f"{med:.1f}", f"{p90:.1f}", f"{base / med:.2f}x")
    console = Console()
    console.print(table)
    console.print(
        f"box agreement: {len(ious)} torch boxes, min IoU with an OpenVINO box "
        f"{min(ious, default=1.0):.3f}, mean {np.mean(ious) if ious else 1.0:.3f}; "
        f"images with a different box count: {count_diff}"
    )


if __name__ == "__main__":
    main()
