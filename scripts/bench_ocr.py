"""OCR latency per plate crop: plate-trained network vs stock EasyOCR, measured in the same run.

    .venv/bin/python scripts/bench_ocr.py            # 200 crops, 1 torch thread
    .venv/bin/python scripts/bench_ocr.py --crops 400 --threads 2

Crops: the held-out real crops (models/plate_ocr_split.json) when /work/shared/datasets exists,
else synthetic plates from anpr.synth, cut like a detector crop. Each reader reads every crop once
(after a warm-up); the table gives the median and 90th percentile of wall time per `read()` call,
which is what the pipeline pays per plate. `plate_ocr batch` is one forward pass over a whole
batch of lines, per crop: the floor when several plates are read together. `plate_ocr` runs on
both backends (`ocr.runtime`: OpenVINO, the default, and torch with EasyOCR's int8 quantization);
`no voters` is the default reader without `ocr.voters`, what the vote's extra networks cost.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from anpr.config import OcrConfig  # noqa: E402
from anpr.ocr import EasyOcrReader, LineCut, PlateOcrReader, to_gray  # noqa: E402


def real_crops(n: int) -> list[np.ndarray]:
    sys.path.insert(0, str(REPO / "scripts"))
    from eval_ocr import heldout_crops

    cfg = OcrConfig()
    crops = [c for name in ("openalpr-us", "br-plate-crops") for _, c, _ in heldout_crops(name, cfg.pad_x, cfg.pad_y)]
    return crops[:n]


def synthetic_crops(n: int) -> list[np.ndarray]:
    from anpr.synth import STYLES, random_plate_text, render_plate
    from anpr.synth.augment import perspective

    rng = np.random.default_rng(0)
    styles = list(STYLES)
    out = []
    for i in range(n):
        style = styles[i % len(styles)]
        plate = render_plate(random_plate_text(style, rng), style, rng, px_per_mm=1.0)
        plate = perspective(plate, rng, margin=0.1)
        q = plate.quad
        x0, y0 = int(q[:, 0].min()), int(q[:, 1].min())
        out.append(plate.image[y0 : int(q[:, 1].max()) + 1, x0 : int(q[:, 0].max()) + 1])
    return out


def timed(fn: Callable[[np.ndarray], object], crops: list[np.ndarray]) -> list[float]:
    for crop in crops[:5]:
        fn(crop)
    out = []
    for crop in crops:
        t = time.perf_counter()
        fn(crop)
        out.append((time.perf_counter() - t) * 1000)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--crops", type=int, default=200)
    ap.add_argument("--threads", type=int, default=1, help="threads for torch and for plate_ocr's OpenVINO network")
    ap.add_argument("--synthetic", action="store_true", help="synthetic crops even when datasets exist")
    args = ap.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    use_real = not args.synthetic and Path("/work/shared/datasets/openalpr-us").is_dir()
    crops = real_crops(args.crops) if use_real else synthetic_crops(args.crops)
    print(f"{len(crops)} {'real held-out' if use_real else 'synthetic'} crops, {args.threads} torch thread(s)")

    lines = [LineCut(to_gray(c)) for c in crops]
    rows: list[tuple[str, list[float]]] = []
    for runtime in ("openvino", "torch"):
        ours = PlateOcrReader(OcrConfig(network="plate_ocr", runtime=runtime, threads=args.threads))
        rows.append((f"plate_ocr read(), {runtime}", timed(ours.read, crops)))
        per_batch = timed(lambda _, r=ours: r.read_lines(lines), crops[: max(10, len(crops) // 10)])
        rows.append((f"plate_ocr batch, per crop, {runtime}", [t / len(lines) for t in per_batch]))
    alone = PlateOcrReader(OcrConfig(network="plate_ocr", voters=[], threads=args.threads))
    rows.append(("plate_ocr read(), openvino, no voters", timed(alone.read, crops)))
    stock_rec = EasyOcrReader(OcrConfig(network="english_g2", readtext=False))
    rows.append(("english_g2 recognize()", timed(stock_rec.read, crops)))
    stock = EasyOcrReader(OcrConfig(network="english_g2", readtext=True))
    rows.append(("english_g2 readtext() (stock recipe)", timed(stock.read, crops)))

    print("\n| reader | median ms/crop | p90 ms/crop |")
    print("|---|---|---|")
    for name, ms in rows:
        print(f"| {name} | {np.median(ms):.1f} | {np.percentile(ms, 90):.1f} |")


if __name__ == "__main__":
    main()
