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

Each set is also scored on its held-out crops whose plate no training crop shows, not even one
character off ("unseen plates"): the BR and US splits were drawn by image, so most held-out BR
crops are other frames of a car whose frames were trained on, and those flatter the figure
(models/plate_ocr.md, Metrics, session 19). br-plate-crops is scored against its audited labels
too (`audited_labels`). Wrong reads are listed for the scorings of all held-out crops.
"""

from __future__ import annotations

import argparse
import csv
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
from anpr.plates import edit_distance, normalise  # noqa: E402
from anpr.schema import Box  # noqa: E402

# Two blind readings by eye of every held-out br-plate-crops crop (models/plate_ocr.md, Metrics, session 19).
AUDIT_FILE = REPO / "models" / "plate_ocr_br_audit.tsv"
AUDITED_SET = "br-plate-crops"


def audited_labels(path: Path = AUDIT_FILE) -> dict[str, str]:
    """Image -> plate text as the audit settles it: the dataset's label, unless both blind readers
    were sure of every character and read the same other text ("-", no plate legible, never counts).

    Why: some br-plate-crops labels name another plate than the crop shows (`br00538` is labelled
    AAA5020 and shows MHA0361), so a right read scores as a miss. Both readers must be sure and
    agree; the rule was fixed before the readings came in and applies to every crop whatever the
    network reads, so it can turn a right read into a miss too (it did once: `br00553`).
    """
    with path.open(encoding="utf-8") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))

    def settled(r: dict[str, str]) -> str:
        read = r["reader_a"]
        agreed = r["sure_a"] == r["sure_b"] == "yes" and read == r["reader_b"] and read.isalnum()
        return read if agreed else r["label"]

    return {r["image"]: settled(r) for r in rows}


def trained_plates(name: str) -> set[str]:
    """Plate texts of a set's training crops (models/plate_ocr_split.json)."""
    rows = label_rows(name)
    train = json.loads(SPLIT_FILE.read_text(encoding="utf-8"))["sets"][name]["train"]
    return {normalise(rows[i]["plate"]) for i in train}


def scorings(name: str, labels: dict[str, str]) -> dict[str, dict[str, str]]:
    """What a set's reads are scored against (image -> plate): its labels, BR's audited labels too,
    and each of those on the held-out plates no training crop shows, where that is not all of them.

    A plate one character off a trained one counts as seen: br-plate-crops labels some cars two ways
    across their frames (AVQ2915 in training, AYQ2915 held out: the same car, models/plate_ocr.md).
    """
    out = {name: labels}
    if name == AUDITED_SET:
        audited = audited_labels()
        out[f"{name}, audited labels"] = {i: audited[i] for i in labels}
    seen = trained_plates(name)
    for scoring, truth in list(out.items()):
        unseen = {i: p for i, p in truth.items() if all(edit_distance(p, s) > 1 for s in seen)}
        if len(unseen) < len(truth):  # the EU split is by plate: every held-out plate is unseen
            out[f"{scoring}, unseen plates"] = unseen
    return out


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
            texts, ms = {}, []
            for image_name, crop, _ in crops:
                t = time.perf_counter()
                read = reader.read(crop)
                ms.append((time.perf_counter() - t) * 1000)
                texts[image_name] = normalise(read.text) if read else ""
            for scoring, truth in scorings(name, {image_name: label for image_name, _, label in crops}).items():
                wrong = [f"{i} {p} -> {texts[i] or '-'}" for i, p in truth.items() if texts[i] != p]
                hits = len(truth) - len(wrong)
                results[(network, scoring)] = (hits / len(truth), len(truth), float(np.median(ms)))
                shown = f"; wrong: {', '.join(wrong[: args.errors])}" if len(truth) == len(crops) else ""
                print(f"{network} {scoring}: {hits}/{len(truth)} exact{shown}", flush=True)
    print(f"\n| set | held-out crops | {' | '.join(args.networks)} |")
    print(f"|---|---|{'---|' * len(args.networks)}")
    for name in dict.fromkeys(scoring for _, scoring in results):  # a set, then its other scorings
        n = results[(args.networks[0], name)][1]
        cells = [f"{results[(net, name)][0]:.3f} ({results[(net, name)][2]:.0f} ms)" for net in args.networks]
        print(f"| {name} | {n} | {' | '.join(cells)} |")


if __name__ == "__main__":
    main()
