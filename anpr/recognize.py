"""Detector + OCR + plate grammar, composed: image in, plates out.

Used by `anpr read`/`anpr eval` on photos and, crop by crop, by the pipeline's workers, so a
photo and a video frame go through exactly the same steps.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from anpr.config import AnprConfig
from anpr.detect import PlateDetector, detect_tiled, make_detector
from anpr.ocr import PlateReader, make_reader
from anpr.plates import interpret
from anpr.schema import Box, PlateDetection, PlateRead, PlateResult


@dataclass(frozen=True, slots=True)
class Reading:
    """One detection and what was read there: the raw OCR (None: illegible) and the plate (None: no
    grammar fits). `anpr eval` scores both; `recognize` keeps the plates."""

    detection: PlateDetection
    read: PlateRead | None
    result: PlateResult | None


@dataclass
class PlateRecognizer:
    detector: PlateDetector
    reader: PlateReader
    cfg: AnprConfig

    @classmethod
    def from_config(cls, cfg: AnprConfig, photos: bool = False) -> PlateRecognizer:
        """The configured detector and reader; `photos`: the detector in `detector.photo_precision`
        (anpr read and eval), else in `detector.precision` (video)."""
        detector = cfg.detector.for_photos() if photos else cfg.detector
        return cls(make_detector(detector), make_reader(cfg.ocr), cfg)

    def crop(self, image: np.ndarray, box: Box) -> np.ndarray:
        """Padded crop: detector boxes often cut off the first/last character."""
        h, w = image.shape[:2]
        p = box.padded(self.cfg.ocr.pad_x, self.cfg.ocr.pad_y, w, h)
        return image[int(p.y1) : int(np.ceil(p.y2)), int(p.x1) : int(np.ceil(p.x2))]

    def reading(self, crop: np.ndarray, det: PlateDetection) -> Reading:
        """The raw OCR read of one detection's crop and, when it is a plate, the plate."""
        return self.read_crops([crop], [det])[0]

    def read_crops(self, crops: list[np.ndarray], dets: list[PlateDetection]) -> list[Reading]:
        """`reading` of each crop, the OCR reading them all in one batch (the crops of one frame)."""
        return [self._interpreted(read, det) for read, det in zip(self.reader.read_batch(crops), dets, strict=True)]

    def _interpreted(self, read: PlateRead | None, det: PlateDetection) -> Reading:
        if read is None:
            return Reading(det, None, None)
        plates = self.cfg.plates
        fit = interpret(
            read.text,
            read.char_confidences,
            plates.countries,
            plates.correct,
            region=read.country,
            region_confidence=read.country_confidence,
            unsure_below=plates.unsure_below,
            region_sure=plates.region_sure,
        )
        if fit is None:
            return Reading(det, read, None)
        chars = fit.char_confidences
        confidence = float(np.mean(chars)) if chars else read.confidence
        result = PlateResult(
            box=det.box,
            detection_confidence=det.confidence,
            text=fit.text,
            confidence=confidence,
            char_confidences=chars,
            country=fit.country,
            raw_text=read.text,
        )
        return Reading(det, read, result)

    def readings(self, image: np.ndarray) -> list[Reading]:
        """Every detection in a photo with its reads.

        With `detector.tile_photos`, a photo where the whole-image pass reads no plate is searched
        again tile by tile (`detect_tiled`): only then, since a photo with a legible plate rarely
        hides a smaller one that matters, and tiling costs a few more detector passes.
        """
        dets = self.detector.detect(image)
        found = self.read_crops([self.crop(image, d.box) for d in dets], dets)
        if not any(r.result for r in found) and self.cfg.detector.tile_photos:
            cfg = self.cfg.detector
            tiled = detect_tiled(self.detector, image, cfg.imgsz, cfg.iou)
            found += self.read_crops([self.crop(image, d.box) for d in tiled], tiled)
        return found

    def recognize(self, image: np.ndarray) -> list[PlateResult]:
        """Every legible plate in a photo, most confident first."""
        results = [r.result for r in self.readings(image) if r.result is not None]
        return sorted(results, key=lambda r: r.confidence * r.detection_confidence, reverse=True)
