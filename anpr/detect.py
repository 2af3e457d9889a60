"""Plate detection: one small interface, backends chosen by config.

Both backends run the same ultralytics YOLOv8 plate model (detector "B", models/README.md) and the
same ultralytics pre/post-processing, so their boxes agree; OpenVINO only swaps the inference
engine (~3x faster on CPU, shared/NOTES.md). Heavy imports happen inside the backend so that
`import anpr` stays light.
"""

from __future__ import annotations

import functools
import logging
import shutil
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from anpr.config import DetectorConfig
from anpr.models import ModelError, detector_weights, enforce_offline, openvino_f32_config, sha256_of
from anpr.schema import Box, PlateDetection

log = logging.getLogger(__name__)

# Tiled detection on photos (`detect_tiled`): neighbouring tiles overlap by this share of a tile,
# and an image is tiled only when its long side is at least this many tiles: below, a tile sees
# the plate hardly bigger than the whole image does.
TILE_OVERLAP = 0.25
TILE_ABOVE = 1.5


class PlateDetector(Protocol):
    def detect(self, image: np.ndarray) -> list[PlateDetection]:
        """Plate boxes in pixels of `image` (BGR), best first."""
        ...


class UltralyticsDetector:
    """YOLO plate detector through ultralytics, on PyTorch or on an OpenVINO export."""

    def __init__(self, cfg: DetectorConfig) -> None:
        enforce_offline()
        import torch
        from ultralytics import YOLO

        torch.set_num_threads(cfg.threads)
        self.cfg = cfg
        weights = detector_weights(cfg.weights)
        source = weights if cfg.backend == "torch" else openvino_export(cfg)
        self.model: Any = YOLO(str(source), task="detect")
        if cfg.backend == "openvino":
            self._compile_openvino_f32(source)

    def _compile_openvino_f32(self, export_dir: Path) -> None:
        """Recompile the OpenVINO model in f32 (`openvino_f32_config`: bf16 was slower and moved boxes).

        ultralytics 8.4 (pinned) exposes no option for it, so we build its predictor once and swap
        the compiled model.
        """
        import openvino as ov

        blank = np.zeros((self.cfg.imgsz, self.cfg.imgsz, 3), np.uint8)
        self.model.predict(blank, imgsz=self.cfg.imgsz, verbose=False)
        backend = self.model.predictor.model.backend
        config = openvino_f32_config()
        backend.compile_model = functools.partial(backend.compile_model, config=config)
        backend.ov_compiled_model = backend.compile_model(ov.Core().read_model(next(export_dir.glob("*.xml"))))

    def detect(self, image: np.ndarray) -> list[PlateDetection]:
        results = self.model.predict(
            image, imgsz=self.cfg.imgsz, conf=self.cfg.confidence, iou=self.cfg.iou, verbose=False
        )
        boxes = results[0].boxes
        xyxy = boxes.xyxy.cpu().numpy()
        conf = boxes.conf.cpu().numpy()
        found = [PlateDetection(Box(*(float(v) for v in xyxy[i])), float(conf[i])) for i in range(len(conf))]
        return sorted(found, key=lambda d: d.confidence, reverse=True)


def openvino_export(cfg: DetectorConfig) -> Path:
    """Path of the OpenVINO export for these weights and image size, generating it if missing.

    The export is keyed by the weights' checksum and imgsz, so new weights never reuse a stale
    export. ultralytics writes the export next to the .pt, so we export from a copy in cache_dir.
    """
    weights = detector_weights(cfg.weights)
    digest = sha256_of(weights)[:12]
    out = cfg.cache_dir / f"{weights.stem}-{digest}-{cfg.imgsz}_openvino_model"
    if (out / "metadata.yaml").is_file():
        return out
    enforce_offline()
    from ultralytics import YOLO

    work = cfg.cache_dir / f"export-{digest}-{cfg.imgsz}"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    copy = work / f"{weights.stem}.pt"
    shutil.copy2(weights, copy)
    log.info("exporting %s to OpenVINO (imgsz %d) into %s", weights, cfg.imgsz, out)
    try:
        exported = Path(YOLO(str(copy)).export(format="openvino", imgsz=cfg.imgsz, half=False))
    except Exception as exc:  # ultralytics raises many types; all mean the same to the user
        raise ModelError(f"OpenVINO export of {weights} failed: {exc}") from exc
    shutil.rmtree(out, ignore_errors=True)
    exported.rename(out)
    shutil.rmtree(work, ignore_errors=True)
    return out


def make_detector(cfg: DetectorConfig) -> PlateDetector:
    return UltralyticsDetector(cfg)


def tile_windows(width: int, height: int, size: int, overlap: float = TILE_OVERLAP) -> list[tuple[int, int, int, int]]:
    """(x1, y1, x2, y2) windows of `size` px, overlapping by `overlap` of it, covering the image.

    Windows are spread evenly, so the last one ends at the image's edge instead of hanging over it.
    """
    step = size * (1 - overlap)

    def starts(length: int) -> list[int]:
        if length <= size:
            return [0]
        n = int(np.ceil((length - size) / step)) + 1
        return [round(v) for v in np.linspace(0, length - size, n)]

    return [(x, y, min(width, x + size), min(height, y + size)) for y in starts(height) for x in starts(width)]


def detect_tiled(detector: PlateDetector, image: np.ndarray, imgsz: int, iou: float) -> list[PlateDetection]:
    """Plates found in overlapping tiles of `image`, each seen at close to its own resolution.

    Why: the detector sees the whole image shrunk to `imgsz`, where a plate far away or at the
    edge of a phone photo is a few pixels high and missed (ua-plates `1.jpeg`: 60 px wide in a
    1200 px photo, found in a tile at confidence 0.55, not at all in the whole image). A tile is
    `imgsz` px, or a third of the image's long side on big photos, so there are at most ~16.
    A box touching a tile's inner edge is a plate cut in two; the overlap (a quarter of a tile,
    more than a small plate's width) shows it whole in the next tile. Overlapping boxes from
    neighbouring tiles are merged by NMS at the detector's own `iou`.
    """
    import cv2

    h, w = image.shape[:2]
    size = max(imgsz, round(max(w, h) / 3))
    if max(w, h) < TILE_ABOVE * size:
        return []
    found: list[PlateDetection] = []
    for x1, y1, x2, y2 in tile_windows(w, h, size):
        for d in detector.detect(image[y1:y2, x1:x2]):
            b = d.box
            cut = (x1 > 0 and b.x1 <= 1) or (y1 > 0 and b.y1 <= 1)
            cut |= (x2 < w and b.x2 >= x2 - x1 - 1) or (y2 < h and b.y2 >= y2 - y1 - 1)
            if not cut:
                found.append(PlateDetection(Box(b.x1 + x1, b.y1 + y1, b.x2 + x1, b.y2 + y1), d.confidence))
    boxes = [[d.box.x1, d.box.y1, d.box.x2 - d.box.x1, d.box.y2 - d.box.y1] for d in found]
    keep = cv2.dnn.NMSBoxes(boxes, [d.confidence for d in found], 0.0, iou)
    return sorted((found[int(i)] for i in np.ravel(keep)), key=lambda d: d.confidence, reverse=True)
