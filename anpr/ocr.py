"""Plate OCR: one small interface, EasyOCR behind it.

`PlateReader.read(crop)` takes a padded plate crop and returns the raw characters it sees with
per-character confidences; grammar checks happen later (anpr.plates), so a plate-trained network
(models/, loaded through EasyOCR's custom `recog_network`) is a drop-in replacement.
"""

from __future__ import annotations

import warnings
from typing import Any, Protocol

import numpy as np

from anpr.config import OcrConfig
from anpr.models import easyocr_model_dir, enforce_offline
from anpr.schema import PlateRead

ALNUM = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"


class PlateReader(Protocol):
    def read(self, crop: np.ndarray) -> PlateRead | None:
        """Characters on the plate in `crop` (BGR), or None when nothing legible is there."""
        ...


def _line_geometry(box: Any) -> tuple[float, float, float]:
    """(height, top, left) of an EasyOCR text-line polygon."""
    pts = np.asarray(box, dtype=np.float32)
    return float(pts[:, 1].max() - pts[:, 1].min()), float(pts[:, 1].min()), float(pts[:, 0].min())


class EasyOcrReader:
    """EasyOCR with the recipe measured best on real plates (shared/NOTES.md).

    CRAFT finds text lines inside the crop; lines shorter than `min_line_height` x the tallest are
    dropped (country band, dealer frame, US state name); the rest are read top-to-bottom, then
    left-to-right, so a two-line plate comes out in reading order.
    """

    def __init__(self, cfg: OcrConfig) -> None:
        enforce_offline()
        self.cfg = cfg
        # EasyOCR asks its DataLoader for pinned memory on every call; without a GPU torch warns each time.
        warnings.filterwarnings("ignore", message="'pin_memory' argument", category=UserWarning)
        with warnings.catch_warnings():
            # EasyOCR 1.7.2 triggers torch deprecation warnings (quantization, DataLoader) on
            # every start; they are noise to an operator and say nothing about our inputs.
            warnings.simplefilter("ignore")
            import easyocr

            self.reader: Any = easyocr.Reader(
                ["en"],
                gpu=False,
                model_storage_directory=str(easyocr_model_dir()),
                download_enabled=False,
                detector=cfg.readtext,
                recog_network=cfg.network,
                verbose=False,
            )

    def read(self, crop: np.ndarray) -> PlateRead | None:
        if crop.size == 0:
            return None
        if self.cfg.readtext:
            lines = self.reader.readtext(crop, allowlist=ALNUM, detail=1, paragraph=False)
        else:
            lines = self.reader.recognize(crop, allowlist=ALNUM, detail=1)
        lines = [(box, str(text).replace(" ", ""), float(conf)) for box, text, conf in lines]
        lines = [line for line in lines if line[1]]
        if not lines:
            return None
        geo = [_line_geometry(box) for box, _, _ in lines]
        tallest = max(h for h, _, _ in geo)
        kept = [
            (g, text, conf)
            for g, (_, text, conf) in zip(geo, lines, strict=True)
            if g[0] >= self.cfg.min_line_height * tallest
        ]
        # Rows: a line starting less than half the tallest line below the row's first line
        # belongs to that row; rows read top to bottom, lines within a row left to right.
        kept.sort(key=lambda k: k[0][1])
        rows: list[list[tuple[tuple[float, float, float], str, float]]] = []
        for item in kept:
            if rows and item[0][1] - rows[-1][0][0][1] < tallest / 2:
                rows[-1].append(item)
            else:
                rows.append([item])
        ordered = [item for row in rows for item in sorted(row, key=lambda k: k[0][2])]
        text = "".join(t for _, t, _ in ordered)
        chars = tuple(c for _, t, c in ordered for _ in t)
        confidence = float(np.prod([c for _, _, c in ordered]))
        return PlateRead(text=text, confidence=confidence, char_confidences=chars)


def make_reader(cfg: OcrConfig) -> PlateReader:
    return EasyOcrReader(cfg)
