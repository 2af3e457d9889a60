"""Accuracy of the recogniser on a labelled folder, with and without grammar correction.

Understands the three label formats in shared/datasets: `labels.tsv` with boxes
(image, x, y, w, h, plate), `labels.json` (image -> plate) and `labels.tsv` of plate crops
(image, plate). Each detection is read once; both scores (raw OCR and grammar-corrected)
come from that one read, so the comparison is exact and the run costs one pass.
"""

from __future__ import annotations

import csv
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from anpr.images import decode_image
from anpr.plates import edit_distance, normalise
from anpr.recognize import PlateRecognizer
from anpr.schema import Box, PlateDetection


@dataclass(frozen=True, slots=True)
class Sample:
    image: Path
    plate: str
    box: Box | None  # labelled plate box; None when the set has none
    is_crop: bool  # the image is the plate itself: skip the detector


@dataclass(frozen=True, slots=True)
class Outcome:
    sample: Sample
    raw: str  # normalised OCR text of the chosen read, no grammar
    corrected: str  # grammar-checked text ("" when the grammar rejected it)
    iou: float | None  # best IoU of a detection with the labelled box
    ms: float


def load_samples(folder: Path) -> list[Sample]:
    """Samples of a dataset folder in any of the supported label formats."""
    images = folder / "images" if (folder / "images").is_dir() else folder
    if (folder / "labels.json").is_file():
        labels = json.loads((folder / "labels.json").read_text(encoding="utf-8"))
        return [Sample(images / name, plate, None, False) for name, plate in sorted(labels.items())]
    tsv = folder / "labels.tsv"
    if not tsv.is_file():
        raise FileNotFoundError(f"{folder}: no labels.json or labels.tsv")
    with tsv.open(encoding="utf-8") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    if rows and "x" in rows[0]:
        return [
            Sample(
                images / r["image"],
                r["plate"],
                Box(float(r["x"]), float(r["y"]), float(r["x"]) + float(r["w"]), float(r["y"]) + float(r["h"])),
                False,
            )
            for r in rows
        ]
    return [Sample(images / r["image"], r["plate"], None, True) for r in rows]


def char_accuracy(pred: str, truth: str) -> float:
    """1 - edit distance / label length, floored at 0."""
    return max(0.0, 1.0 - edit_distance(pred, truth) / max(1, len(truth)))


def evaluate_sample(rec: PlateRecognizer, sample: Sample) -> Outcome:
    image = decode_image(sample.image)
    start = time.perf_counter()
    h, w = image.shape[:2]
    found = [rec.reading(image, PlateDetection(Box(0, 0, w, h), 1.0))] if sample.is_crop else rec.readings(image)
    iou = None
    if (label := sample.box) is not None:
        # Score the detection on the labelled plate: other plates in the photo are not wrong reads.
        found = sorted(found, key=lambda r: r.detection.box.iou(label), reverse=True)[:1]
        iou = found[0].detection.box.iou(label) if found else 0.0
        found = [r for r in found if r.detection.box.iou(label) >= 0.3]
    reads = [(normalise(r.read.text), r.result.text if r.result else "") for r in found if r.read is not None]

    # A photo may show several plates and the label names one: score the read closest to it.
    def closest(texts: list[str]) -> str:
        return max(texts, key=lambda t: char_accuracy(t, sample.plate), default="")

    raw = closest([r for r, _ in reads])
    corrected = closest([c for _, c in reads])
    return Outcome(sample, raw, corrected, iou, (time.perf_counter() - start) * 1000)


@dataclass
class Report:
    dataset: str
    outcomes: list[Outcome] = field(default_factory=list)

    def metrics(self) -> dict[str, float | int | None]:
        o = self.outcomes
        n = len(o)
        ious = [x.iou for x in o if x.iou is not None]
        return {
            "images": n,
            "recall_iou50": sum(i >= 0.5 for i in ious) / len(ious) if ious else None,
            "recall_iou30": sum(i >= 0.3 for i in ious) / len(ious) if ious else None,
            "exact_raw": sum(x.raw == x.sample.plate for x in o) / n if n else 0.0,
            "exact_grammar": sum(x.corrected == x.sample.plate for x in o) / n if n else 0.0,
            "char_acc_raw": float(np.mean([char_accuracy(x.raw, x.sample.plate) for x in o])) if n else 0.0,
            "char_acc_grammar": float(np.mean([char_accuracy(x.corrected, x.sample.plate) for x in o])) if n else 0.0,
            "ms_per_image": float(np.median([x.ms for x in o])) if n else 0.0,
        }

    def worst(self, k: int = 10) -> list[Outcome]:
        wrong = [x for x in self.outcomes if x.corrected != x.sample.plate]
        return sorted(wrong, key=lambda x: char_accuracy(x.corrected, x.sample.plate))[:k]


def run(rec: PlateRecognizer, folder: Path, limit: int | None = None) -> Iterator[Outcome]:
    samples = load_samples(folder)
    for sample in samples[:limit] if limit else samples:
        yield evaluate_sample(rec, sample)
