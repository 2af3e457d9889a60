"""Exact plate reads on the held-out real crops, plate-trained network vs stock EasyOCR, one run.

    .venv/bin/python scripts/eval_ocr.py                       # both networks, held-out crops
    .venv/bin/python scripts/eval_ocr.py --networks plate_ocr  # just ours
    .venv/bin/python scripts/eval_ocr.py --networks plate_ocr --voters plate_ocr_stage1  # other voters (none: --voters)

Held-out = the `heldout` lists of models/plate_ocr_split.json, never trained on. br-plate-crops
files are crops already; openalpr-us plates are cut from their labelled boxes with the padding
anpr/recognize.py applies to detector boxes (OcrConfig.pad_x/pad_y). A read counts when the
network's raw text (normalised, no grammar: these are BR/US plates) equals the label.
`--photos` also runs detector + OCR on the held-out openalpr-us *photos* (the read of the detection
that overlaps the labelled box, as `anpr eval` scores it; generic grammar only: US plates).
End to end on ua-plates (never trained on) is plain `anpr eval`, see docs/accuracy.md.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from train_ocr import DATASETS, SPLIT_FILE, image_path, label_rows  # noqa: E402  (same folder)

from anpr.config import OcrConfig  # noqa: E402
from anpr.ocr import make_reader  # noqa: E402
from anpr.plates import normalise  # noqa: E402
from anpr.schema import Box  # noqa: E402


def heldout_crops(name: str, pad_x: float, pad_y: float) -> list[tuple[str, np.ndarray, str]]:
    """(image name, BGR crop, label) of the held-out part of one labelled set."""
    names = json.loads(SPLIT_FILE.read_text(encoding="utf-8"))["sets"][name]["heldout"]
    rows = label_rows(name)
    out = []
    for image_name in names:
        r = rows[image_name]
        image = cv2.imread(str(image_path(name, image_name)))
        if "x" in r:
            x, y, w, h = (float(r[k]) for k in ("x", "y", "w", "h"))
            p = Box(x, y, x + w, y + h).padded(pad_x, pad_y, image.shape[1], image.shape[0])
            image = image[int(p.y1) : int(np.ceil(p.y2)), int(p.x1) : int(np.ceil(p.x2))]
        out.append((image_name, image, normalise(r["plate"])))
    return out


def photos(ocr: OcrConfig) -> tuple[float, int, float]:
    """Exact grammar-checked reads of the held-out openalpr-us photos, detector + OCR (anpr eval's scoring)."""
    from anpr.config import PlatesConfig, load_config
    from anpr.evaluate import evaluate_sample, load_samples
    from anpr.recognize import PlateRecognizer

    cfg = load_config()
    cfg = cfg.model_copy(update={"ocr": ocr, "plates": PlatesConfig(countries=[])})
    rec = PlateRecognizer.from_config(cfg)
    names = set(json.loads(SPLIT_FILE.read_text(encoding="utf-8"))["sets"]["openalpr-us"]["heldout"])
    samples = [s for s in load_samples(DATASETS / "openalpr-us") if s.image.name in names]
    outcomes = [evaluate_sample(rec, s) for s in samples]
    hits = sum(o.corrected == o.sample.plate for o in outcomes)
    print(f"{ocr.network} openalpr-us photos: {hits}/{len(outcomes)} exact (grammar: generic)", flush=True)
    return hits / len(outcomes), len(outcomes), float(np.median([o.ms for o in outcomes]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--networks", nargs="+", default=["plate_ocr", "english_g2"])
    ap.add_argument("--sets", nargs="+", default=["br-plate-crops", "openalpr-us", "eu-plate-crops"])
    ap.add_argument("--errors", type=int, default=8, help="wrong reads to list per set and network")
    ap.add_argument("--photos", action="store_true", help="also detector + OCR on held-out openalpr-us photos")
    ap.add_argument("--voters", nargs="*", help="plate_ocr's ocr.voters (default: the config's); none: --voters")
    args = ap.parse_args()
    if args.photos:
        args.sets.append("openalpr-us photos")

    results: dict[tuple[str, str], tuple[float, int, float]] = {}
    for network in args.networks:
        cfg = OcrConfig(network=network, **({} if args.voters is None else {"voters": args.voters}))
        reader = make_reader(cfg)
        for name in args.sets:
            if name == "openalpr-us photos":
                results[(network, name)] = photos(cfg)
                continue
            crops = heldout_crops(name, cfg.pad_x, cfg.pad_y)
            hits, ms, wrong = 0, [], []
            for image_name, crop, label in crops:
                t = time.perf_counter()
                read = reader.read(crop)
                ms.append((time.perf_counter() - t) * 1000)
                text = normalise(read.text) if read else ""
                hits += text == label
                if text != label:
                    wrong.append(f"{image_name} {label} -> {text or '-'}")
            results[(network, name)] = (hits / len(crops), len(crops), float(np.median(ms)))
            print(f"{network} {name}: {hits}/{len(crops)} exact; wrong: {', '.join(wrong[: args.errors])}", flush=True)
    print(f"\n| set | held-out crops | {' | '.join(args.networks)} |")
    print(f"|---|---|{'---|' * len(args.networks)}")
    for name in args.sets:
        n = results[(args.networks[0], name)][1]
        cells = [f"{results[(net, name)][0]:.3f} ({results[(net, name)][2]:.0f} ms)" for net in args.networks]
        print(f"| {name} | {n} | {' | '.join(cells)} |")


if __name__ == "__main__":
    main()
