"""What the tiled photo pass (`detector.tile_photos`) gains and costs, without and with it, one run.

    .venv/bin/python scripts/eval_tiles.py

- Labelled photos (openalpr-us, generic rule; ua-plates, the default grammars): exact plate reads
  scored as `anpr eval` scores them, and the median time per photo.
- Plate-free scenes (shared/datasets/negatives): photos where anything is read as a plate. They are
  at most 640 px, which is never tiled, so they are also run upscaled to 1600 px (`--upscale`):
  the case where a photo without a legible plate pays for the tiles.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from anpr.config import AnprConfig, PlatesConfig, load_config  # noqa: E402
from anpr.evaluate import evaluate_sample, load_samples  # noqa: E402
from anpr.images import decode_image  # noqa: E402
from anpr.recognize import PlateRecognizer  # noqa: E402

DATASETS = REPO.parent / "shared" / "datasets"


def with_tiles(cfg: AnprConfig, tiles: bool) -> AnprConfig:
    return cfg.model_copy(update={"detector": cfg.detector.model_copy(update={"tile_photos": tiles})})


def recognizer(models: PlateRecognizer, cfg: AnprConfig) -> PlateRecognizer:
    """The loaded detector and reader under another config: tiling and grammars are read per call."""
    return PlateRecognizer(models.detector, models.reader, cfg)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--upscale", type=float, default=2.5, help="factor for the plate-free scenes")
    args = ap.parse_args()
    base = load_config()
    sets = [("openalpr-us", PlatesConfig(countries=[])), ("ua-plates", base.plates)]
    negatives = sorted((DATASETS / "negatives").glob("*.jpg"))
    models = PlateRecognizer.from_config(base, photos=True)
    rows = []
    for tiles in (False, True):
        cfg = with_tiles(base, tiles)
        row = ["tiles" if tiles else "whole image"]
        for name, plates in sets:
            rec = recognizer(models, cfg.model_copy(update={"plates": plates}))
            outcomes = [evaluate_sample(rec, s) for s in load_samples(DATASETS / name)]
            hits = sum(o.corrected == o.sample.plate for o in outcomes)
            row.append(f"{hits}/{len(outcomes)} ({np.median([o.ms for o in outcomes]):.0f} ms)")
        rec = recognizer(models, cfg)
        for scale in (1.0, args.upscale):
            false_reads, ms = 0, []
            for path in negatives:
                image = decode_image(path)
                if scale != 1.0:
                    image = cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_CUBIC)
                start = time.perf_counter()
                false_reads += bool(rec.recognize(image))
                ms.append((time.perf_counter() - start) * 1000)
            row.append(f"{false_reads}/{len(negatives)} ({np.median(ms):.0f} ms)")
        rows.append(row)
        print(" | ".join(row), flush=True)
    print(
        "\n| pass | openalpr-us exact (ms/photo) | ua-plates exact | negatives: photos with a read | "
        f"negatives x{args.upscale:g} |"
    )
    print("|---|---|---|---|---|")
    for row in rows:
        print(f"| {' | '.join(row)} |")


if __name__ == "__main__":
    main()
