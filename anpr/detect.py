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
