"""Detector + OCR + plate grammar, composed: image in, plates out.

Used by `anpr read`/`anpr eval` on photos and, crop by crop, by the pipeline's workers, so a
photo and a video frame go through exactly the same steps.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from anpr.config import AnprConfig
from anpr.detect import PlateDetector, make_detector
from anpr.ocr import PlateReader, make_reader
from anpr.plates import interpret
from anpr.schema import Box, PlateDetection, PlateResult


@dataclass
class PlateRecognizer:
    detector: PlateDetector
    reader: PlateReader
    cfg: AnprConfig

    @classmethod
    def from_config(cls, cfg: AnprConfig) -> PlateRecognizer:
        return cls(make_detector(cfg.detector), make_reader(cfg.ocr), cfg)

    def crop(self, image: np.ndarray, box: Box) -> np.ndarray:
        """Padded crop: detector boxes often cut off the first/last character."""
        h, w = image.shape[:2]
        p = box.padded(self.cfg.ocr.pad_x, self.cfg.ocr.pad_y, w, h)
        return image[int(p.y1) : int(np.ceil(p.y2)), int(p.x1) : int(np.ceil(p.x2))]

    def read_detection(self, image: np.ndarray, det: PlateDetection) -> PlateResult | None:
        """Read one detected plate; None when the text is illegible or not a plate."""
        return self.read_crop(self.crop(image, det.box), det)

    def read_crop(self, crop: np.ndarray, det: PlateDetection) -> PlateResult | None:
        """`read_detection` for a caller that already holds `crop(image, det.box)`."""
        read = self.reader.read(crop)
        if read is None:
            return None
        plates = self.cfg.plates
        fit = interpret(read.text, read.char_confidences, plates.countries, plates.correct)
        if fit is None:
            return None
        chars = fit.char_confidences
        confidence = float(np.mean(chars)) if chars else read.confidence
        return PlateResult(
            box=det.box,
            detection_confidence=det.confidence,
            text=fit.text,
            confidence=confidence,
            char_confidences=chars,
            country=fit.country,
            raw_text=read.text,
        )

    def recognize(self, image: np.ndarray) -> list[PlateResult]:
        """Every legible plate in the image, most confident first."""
        found = [self.read_detection(image, d) for d in self.detector.detect(image)]
        results = [r for r in found if r is not None]
        return sorted(results, key=lambda r: r.confidence * r.detection_confidence, reverse=True)
