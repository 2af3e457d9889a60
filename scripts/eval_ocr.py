"""Exact plate reads on the held-out real crops, readers side by side in one run.

    .venv/bin/python scripts/eval_ocr.py --photos        # the reader it replaced, default, CCT alone, plate_ocr
    .venv/bin/python scripts/eval_ocr.py --readers default english_g2 --baseline ''

Held-out = the `heldout` lists of models/plate_ocr_split.json, never trained on. br-plate-crops
files are crops already; openalpr-us plates are cut from their labelled boxes with margins that
make them about as loose as detector boxes (LABEL_PAD). A read counts when the reader's raw text
(normalised, no grammar: these are BR/US/EU plates) equals the label. Readers:
`default` (the configured reader: the CCT with its re-reads and second opinion), `cct-alone` (the
fine-tuned CCT network's one forward pass on the crop as it is), `cct-released` (the same with the
network as released, never trained on shared/), `plate_ocr` (our networks alone) and
`english_g2` (EasyOCR's stock network). `--baseline REV` adds the default reader of revision REV
(default: the one the CCT replaced), measured by that revision's own eval_ocr.py in a worktree
(scripts/baseline.py) in the same run.
`--photos` also runs detector + OCR on the held-out openalpr-us *photos* (the read of the detection
that overlaps the labelled box, as `anpr eval` scores it; generic grammar only: US plates).
End to end on ua-plates (never trained on) is plain `anpr eval`, see docs/accuracy.md.

Each set is also scored on its held-out crops whose plate no training crop shows, not even one
character off ("unseen plates"): the BR and US splits were drawn by image, so most held-out BR
crops are other frames of a car whose frames were trained on, and those flatter the figure
(models/plate_ocr.md, Metrics). br-plate-crops is scored against its audited labels
too (`audited_labels`). Wrong reads are listed for the scorings of all held-out crops.
"""

from __future__ import annotations

import argparse
import csv
import json
import re
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import baseline  # noqa: E402  (same folder)
from train_ocr import DATASETS, SPLIT_FILE, image_path, label_rows  # noqa: E402

from anpr.config import OcrConfig, load_config  # noqa: E402
from anpr.models import CCT_OCR, CCT_OCR_TUNED, ModelFile  # noqa: E402
from anpr.ocr import CctReader, PlateReader, make_reader, mean_confidence  # noqa: E402
from anpr.plates import edit_distance, normalise  # noqa: E402
from anpr.schema import Box, PlateRead  # noqa: E402

# Two blind readings by eye of every held-out br-plate-crops crop (models/plate_ocr.md, Metrics).
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


# Margins added to a hand-labelled box (openalpr-us) to cut its crop, as fractions of its width and
# height. Hand labels are tighter than detector boxes (shared/NOTES.md): these make the crop about as
# loose as detector B's, and stay fixed so every reader and revision is scored on the same crops.
LABEL_PAD = (0.08, 0.15)


def heldout_crops(
    name: str, pad_x: float = LABEL_PAD[0], pad_y: float = LABEL_PAD[1], part: str = "heldout"
) -> list[tuple[str, np.ndarray, str]]:
    """(image name, BGR crop, label) of the held-out part of one labelled set (`part` "train": its
    training part, which scripts/finetune_cct.py trains on)."""
    names = json.loads(SPLIT_FILE.read_text(encoding="utf-8"))["sets"][name][part]
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


class CctAlone:
    """The CCT network's one forward pass on each crop as it is: no re-read, no second opinion
    (`model`: the fine-tuned network the default reader runs, or the released one)."""

    def __init__(self, cfg: OcrConfig, model: ModelFile = CCT_OCR_TUNED) -> None:
        self.cct = CctReader(cfg, model=model)

    def read_batch(self, crops: list[np.ndarray]) -> list[PlateRead | None]:
        reads = self.cct.network(crops)
        return [r if mean_confidence(r) >= self.cct.cfg.min_confidence else None for r in reads]


def make(name: str) -> PlateReader:
    """A reader by its name in this script."""
    cfg = load_config().ocr
    if name == "cct-alone":
        return CctAlone(cfg)
    if name == "cct-released":
        return CctAlone(cfg, CCT_OCR)
    return make_reader(cfg if name == "default" else cfg.model_copy(update={"network": name}))


def photos(reader: PlateReader) -> tuple[int, int]:
    """Exact grammar-checked reads of the held-out openalpr-us photos, detector + OCR (anpr eval's scoring)."""
    from anpr.config import PlatesConfig
    from anpr.detect import make_detector
    from anpr.evaluate import evaluate_sample, load_samples
    from anpr.recognize import PlateRecognizer

    cfg = load_config()
    cfg = cfg.model_copy(update={"plates": PlatesConfig(countries=[])})
    rec = PlateRecognizer(make_detector(cfg.detector.for_photos()), reader, cfg)
    names = set(json.loads(SPLIT_FILE.read_text(encoding="utf-8"))["sets"]["openalpr-us"]["heldout"])
    samples = [s for s in load_samples(DATASETS / "openalpr-us") if s.image.name in names]
    outcomes = [evaluate_sample(rec, s) for s in samples]
    hits = sum(o.corrected == o.sample.plate for o in outcomes)
    wrong = [
        f"{o.sample.image.name} {o.sample.plate} -> {o.corrected or '-'}"
        for o in outcomes
        if o.corrected != o.sample.plate
    ]
    print(f"openalpr-us photos: {hits}/{len(outcomes)} exact; wrong: {', '.join(wrong)}", flush=True)
    return hits, len(outcomes)


def baseline_results(rev: str, sets: list[str]) -> dict[str, tuple[int, int]]:
    """Scoring -> (exact reads, crops) of revision `rev`'s default reader, from its own eval_ocr.py."""
    path = baseline.tree(rev)
    crop_sets = [s for s in sets if s != "openalpr-us photos"]
    cmd = [sys.executable, "scripts/eval_ocr.py", "--networks", "plate_ocr", "--sets", *crop_sets]
    cmd += ["--photos"] if len(crop_sets) < len(sets) else []
    out = subprocess.run(cmd, env=baseline.env(path), cwd=path, capture_output=True, text=True, check=True).stdout
    found = re.finditer(r"^plate_ocr (.+?): (\d+)/(\d+) exact", out, re.MULTILINE)
    return {m.group(1): (int(m.group(2)), int(m.group(3))) for m in found}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--readers", nargs="+", default=["default", "cct-released", "cct-alone", "plate_ocr"])
    ap.add_argument("--sets", nargs="+", default=["br-plate-crops", "openalpr-us", "eu-plate-crops"])
    ap.add_argument("--errors", type=int, default=8, help="wrong reads to list per set and reader")
    ap.add_argument("--photos", action="store_true", help="also detector + OCR on held-out openalpr-us photos")
    ap.add_argument("--baseline", default=baseline.DEFAULT_BASELINE, help="git revision whose default to add; '' none")
    args = ap.parse_args()
    if args.photos:
        args.sets.append("openalpr-us photos")

    results: dict[tuple[str, str], tuple[int, int]] = {}  # (reader, scoring) -> (exact reads, crops)
    columns = list(args.readers)
    if args.baseline:
        column = f"baseline {args.baseline}"
        columns.insert(0, column)
        for scoring, result in baseline_results(args.baseline, args.sets).items():
            results[(column, scoring)] = result
            print(f"{column} {scoring}: {result[0]}/{result[1]} exact", flush=True)
    for name in args.readers:
        reader = make(name)
        for set_name in args.sets:
            if set_name == "openalpr-us photos":
                print(name, end=" ")
                results[(name, set_name)] = photos(reader)
                continue
            crops = heldout_crops(set_name)
            texts = {}
            for image_name, crop, _ in crops:  # one crop a call, as a lane reads one plate a frame
                read = reader.read_batch([crop])[0]
                texts[image_name] = normalise(read.text) if read else ""
            for scoring, truth in scorings(set_name, {image_name: label for image_name, _, label in crops}).items():
                wrong = [f"{i} {p} -> {texts[i] or '-'}" for i, p in truth.items() if texts[i] != p]
                hits = len(truth) - len(wrong)
                results[(name, scoring)] = (hits, len(truth))
                shown = f"; wrong: {', '.join(wrong[: args.errors])}" if len(truth) == len(crops) else ""
                print(f"{name} {scoring}: {hits}/{len(truth)} exact{shown}", flush=True)
    print(f"\n| set | held-out | {' | '.join(columns)} |")
    print(f"|---|---|{'---|' * len(columns)}")
    for set_name in dict.fromkeys(scoring for _, scoring in results):  # a set, then its other scorings
        n = results[(args.readers[0], set_name)][1]
        cells = [
            f"{h / n:.3f} ({h})" if (h := results.get((r, set_name), (None, n))[0]) is not None else "-"
            for r in columns
        ]
        print(f"| {set_name} | {n} | {' | '.join(cells)} |")


if __name__ == "__main__":
    main()
