"""Rebuild the INT8 plate detector (models/plate_detector_b_int8.xml + .bin) from plate_detector_b.pt.

    .venv/bin/pip install -e '.[export]'          # NNCF
    taskset -c 1 .venv/bin/python scripts/quantize_detector.py

Post-training quantisation with NNCF (`nncf.quantize`, mixed preset: weights symmetric, activations
asymmetric) of the f32 OpenVINO export `OpenVinoDetector` runs (`anpr.detect.openvino_export`: dynamic
height and width, generated from the pinned .pt), so the INT8 model takes every input shape the f32
one does. The detection head's box decoding (DFL, anchor arithmetic, the class sigmoid) is left in f32,
as ultralytics does when it quantises a YOLO export (an int8 step there moves every box), and so are
the head's six output convolutions (see `HEAD`).

Calibration data is training data only: the openalpr-us photos that models/plate_ocr_split.json does
not hold out, and every 10th frame of the clips in sample_videos/. Never the held-out photos, ua-plates
or the negatives: those are what the INT8 model is judged on (docs/performance.md, Detector). Each
image is preprocessed exactly as `OpenVinoDetector.detect` does it (letterbox with ultralytics'
rounding, RGB, /255): photos to the imgsz square, clip frames alternately to the square and to the
minimum rectangle (`detector.rect`), the two shapes a lane feeds. The inputs are shuffled with a fixed
seed and all are used (subset_size = all), so a rebuild with the same NNCF and OpenVINO versions
(printed) gives the same file. Prints the new files' sha256 to pin in anpr/models.py.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from anpr.config import MODELS_DIR, DetectorConfig  # noqa: E402
from anpr.detect import as_bgr, letterbox, openvino_export  # noqa: E402
from anpr.images import decode_image  # noqa: E402
from anpr.models import DETECTOR_B_INT8, sha256_of  # noqa: E402

SEED = 0
DATASETS = REPO.parent / "shared" / "datasets"
PHOTO_SET = "openalpr-us"  # the only photo set with a committed training split
SPLIT_FILE = MODELS_DIR / "plate_ocr_split.json"
CLIPS = REPO / "sample_videos"
FRAME_STEP = 10
# The head's ops kept in f32: ultralytics' own ignored scope for a Detect head (exporter.py: the DFL
# softmax-conv, the anchor Add/Sub/Mul/Div of the box decode, the class sigmoid), and the last
# convolution of each box and class branch (cv2.*.2, cv3.*.2), whose outputs are the box distances
# and class logits. Measured on the calibration photos and frames against f32: mean confidence
# error 0.011 with those six convolutions in f32, 0.021 without; same speed.
HEAD = "__module.model.22"


def training_photos() -> list[Path]:
    """openalpr-us photos in the training part of the committed split (everything not held out)."""
    split = json.loads(SPLIT_FILE.read_text(encoding="utf-8"))["sets"][PHOTO_SET]
    held = set(split["heldout"])
    folder = DATASETS / PHOTO_SET / "images"
    names = sorted(p.name for p in folder.iterdir() if p.suffix.lower() in {".jpg", ".jpeg", ".png"})
    assert held <= set(names), "split lists photos the set does not have"
    return [folder / n for n in names if n not in held]


def clip_frames() -> list[np.ndarray]:
    """Every FRAME_STEP-th frame of each sample clip, in file order."""
    frames = []
    for clip in sorted(CLIPS.glob("*.mp4")):
        cap = cv2.VideoCapture(str(clip))
        i = 0
        while True:
            ok, frame = cap.read()
            if not ok:
                break
            if i % FRAME_STEP == 0:
                frames.append(frame)
            i += 1
        cap.release()
    return frames


def network_input(image: np.ndarray, imgsz: int, rect: bool) -> np.ndarray:
    """`image` as `OpenVinoDetector.detect` feeds it: letterboxed, RGB, CHW float32 in [0, 1], batch 1."""
    padded, _ = letterbox(as_bgr(image), imgsz, rect)
    return (padded[..., ::-1].transpose(2, 0, 1)[None] / np.float32(255)).astype(np.float32)


def calibration_inputs(imgsz: int) -> list[np.ndarray]:
    photos = [network_input(decode_image(p), imgsz, rect=False) for p in training_photos()]
    frames = [network_input(f, imgsz, rect=i % 2 == 1) for i, f in enumerate(clip_frames())]
    print(f"{len(photos)} training photos, {len(frames)} clip frames", flush=True)
    inputs = photos + frames
    order = np.random.default_rng(SEED).permutation(len(inputs))
    return [inputs[i] for i in order]


def main() -> None:
    import nncf
    import openvino as ov

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=MODELS_DIR / DETECTOR_B_INT8.name)
    ap.add_argument("--imgsz", type=int, default=640)
    ap.add_argument("--preset", choices=["mixed", "performance"], default="mixed")
    ap.add_argument(
        "--quantize-head",
        action="store_true",
        help="quantise the head's box decode and last convolutions too (not shipped)",
    )
    args = ap.parse_args()

    print(f"nncf {nncf.__version__}, openvino {ov.__version__}", flush=True)
    export = openvino_export(DetectorConfig(imgsz=args.imgsz))
    model = ov.Core().read_model(next(export.glob("*.xml")))
    inputs = calibration_inputs(args.imgsz)
    ignored = None
    if not args.quantize_head:
        ignored = nncf.IgnoredScope(
            patterns=[f".*{HEAD}/.*/{op}.*" for op in ("Add", "Sub", "Mul", "Div")]
            + [f".*{HEAD}\\.dfl.*"]
            + [f".*{HEAD}\\.cv[23]\\.\\d\\.2/.*"],
            types=["Sigmoid"],
            validate=False,
        )
    preset = nncf.QuantizationPreset.MIXED if args.preset == "mixed" else nncf.QuantizationPreset.PERFORMANCE
    quantized = nncf.quantize(
        model, nncf.Dataset(inputs), preset=preset, subset_size=len(inputs), ignored_scope=ignored
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    ov.save_model(quantized, args.out, compress_to_fp16=False)
    for path in (args.out, args.out.with_suffix(".bin")):
        print(f"{path.name} {path.stat().st_size} sha256 {sha256_of(path)}")


if __name__ == "__main__":
    main()
