"""Plate OCR: CTC decoding and line preprocessing (fast), the shipped network and its training (slow)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from anpr.config import MODELS_DIR, OcrConfig
from anpr.models import PLATE_OCR, PLATE_OCR_SEED1, PLATE_OCR_SMALL, ModelError, ModelFile, sha256_of
from anpr.ocr import (
    LINE_H,
    LINE_W,
    ONE_ROW_GLYPHS,
    VOTE_SCALES,
    Decoded,
    EasyOcrReader,
    LineCut,
    PlateOcrReader,
    ctc_greedy,
    deslant,
    glyph_boxes,
    glyph_rows,
    level_row,
    line_image,
    make_reader,
    row_split,
    scaled,
    slant_of,
    text_band,
    text_row,
    to_gray,
    vote,
)

REPO = Path(__file__).resolve().parent.parent
ALPHABET = ["[blank]", "A", "B", "1"]


def _probs(path: list[int], sure: float = 0.9) -> np.ndarray:
    """One-hot-ish (columns, classes) softmax following `path`."""
    p = np.full((len(path), len(ALPHABET)), (1 - sure) / (len(ALPHABET) - 1), np.float32)
    p[np.arange(len(path)), path] = sure
    return p


@pytest.mark.parametrize(
    ("path", "text"),
    [
        ([0, 1, 1, 0, 2, 0], "AB"),  # repeats collapse
        ([1, 0, 1, 3, 3], "AA1"),  # a blank separates a doubled character
        ([0, 0, 0], ""),
        ([3, 2, 1], "1BA"),
    ],
)
def test_ctc_greedy_text(path: list[int], text: str) -> None:
    decoded = ctc_greedy(_probs(path), ALPHABET)
    assert decoded.text == text
    assert len(decoded.char_confidences) == len(text)


def test_ctc_char_confidence_is_the_surest_column_of_its_run() -> None:
    p = _probs([1, 1, 0, 2])
    p[0, 1], p[1, 1] = 0.6, 0.95
    p[3, 2] = 0.55
    decoded = ctc_greedy(p, ALPHABET)
    assert decoded.char_confidences == pytest.approx((0.95, 0.55))


def _two_row_image() -> np.ndarray:
    img = np.full((100, 140), 230, np.uint8)
    img[10:42, 20:120] = 20  # top row of "glyphs"
    img[58:92, 10:130] = 20  # bottom row
    img[10:42:4, 20:120] = 230
    img[58:92:4, 10:130] = 230
    return img


def test_row_split_finds_the_gap_between_rows() -> None:
    assert 42 <= row_split(_two_row_image()) <= 58


def test_text_band_finds_the_glyph_rows_in_a_loose_crop() -> None:
    crop = np.full((120, 200), 90, np.uint8)  # a plain body panel
    crop[70:100, 20:180] = 230  # the plate, low in a box three plates tall
    crop[74:96, 30:170:12] = 20  # glyph strokes
    top, bottom = text_band(crop, 40)
    assert top <= 74 and bottom >= 96


@pytest.mark.parametrize("two_rows", [False, True])
def test_line_image_is_network_sized(two_rows: bool) -> None:
    assert line_image(_two_row_image(), two_rows).shape == (LINE_H, LINE_W)
    assert line_image(_two_row_image(), two_rows, height=48).shape == (48, 192)


def _sheared_plate(style: str, slope: float, seed: int = 3, slant: float = 0.0) -> tuple[np.ndarray, str]:
    """A rendered plate seen from the side: rows sloping by `slope`, verticals upright (or leaning
    by `slant`, x shift per px of height), padded like a detector crop (the sheared plate's
    bounding box grown 8 % x 15 %)."""
    import cv2

    from anpr.synth import random_plate_text, render_plate
    from anpr.synth.augment import perspective

    rng = np.random.default_rng(seed)
    plate = render_plate(random_plate_text(style, rng), style, rng, px_per_mm=1.0)
    plate = perspective(plate, rng, max_tilt=0.0, max_rotation_deg=0.0, margin=0.6)
    image, q = to_gray(plate.image), plate.quad
    cx = float(q[:, 0].mean())
    cy = float(q[:, 1].mean())
    shear = np.float32([[1, slant, -slant * cy], [slope, 1 + slant * slope, -slope * cx - slant * slope * cy]])
    image = cv2.warpAffine(image, shear, image.shape[::-1], borderMode=cv2.BORDER_REPLICATE)
    xs = q[:, 0] + slant * (q[:, 1] - cy)
    ys = q[:, 1] + slope * (xs - cx)
    x0, x1, y0, y1 = xs.min(), xs.max(), ys.min(), ys.max()
    dx, dy = 0.08 * (x1 - x0), 0.15 * (y1 - y0)
    return image[int(y0 - dy) : int(y1 + dy) + 1, int(x0 - dx) : int(x1 + dx) + 1], plate.label


@pytest.mark.parametrize("slope", [-0.4, -0.15, 0.0, 0.25, 0.45])
def test_text_row_measures_the_slope_of_a_plate_seen_from_the_side(slope: float) -> None:
    crop, label = _sheared_plate("UA", slope)
    row = text_row(crop)
    assert row is not None
    assert row.slope == pytest.approx(slope, abs=0.04)
    assert row.blobs == len(label)  # every character found, none of the band's small print
    level = text_row(level_row(crop, row))
    assert level is not None and abs(level.slope) < 0.04


def test_level_row_keeps_every_glyph_inside_the_cut() -> None:
    crop, label = _sheared_plate("MD", 0.35)
    row = text_row(crop)
    assert row is not None
    cut = level_row(crop, row)
    again = text_row(cut)
    assert again is not None and again.blobs == len(label)
    assert cut.shape[0] < crop.shape[0]  # cut around the row, not just sheared


@pytest.mark.parametrize("slant", [-0.3, -0.15, 0.0, 0.15, 0.3])
def test_slant_of_measures_how_far_the_glyphs_lean(slant: float) -> None:
    crop, _ = _sheared_plate("UA", 0.0, slant=slant)
    assert slant_of(crop) == pytest.approx(-slant, abs=0.05)
    assert slant_of(deslant(crop)) == pytest.approx(0.0, abs=0.05)


def test_text_row_leaves_two_row_plates_and_blank_crops_alone() -> None:
    crop, _ = _sheared_plate("MD2", 0.3)
    assert text_row(crop) is None  # a second row of glyphs: line_image unstacks it instead
    assert text_row(np.full((40, 160), 200, np.uint8)) is None


@pytest.mark.parametrize("shape", [(2, 2), (3, 60), (60, 3), (40, 160)])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_tiny_and_noisy_crops_have_no_text_row(shape: tuple[int, int], seed: int) -> None:
    noise = np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)
    assert text_row(noise) is None  # no four same-sized blobs on a line: read as cut, never levelled


def test_stock_network_selects_stock_reader_without_loading(monkeypatch: pytest.MonkeyPatch) -> None:
    built: list[str] = []
    monkeypatch.setattr(EasyOcrReader, "__init__", lambda self, cfg: built.append("stock"))
    monkeypatch.setattr(PlateOcrReader, "__init__", lambda self, cfg: built.append("plate"))
    make_reader(OcrConfig(network="english_g2"))
    make_reader(OcrConfig(network="plate_ocr"))
    assert built == ["stock", "plate"]


def test_our_eu_labels_are_clean_and_their_split_keeps_each_plate_on_one_side() -> None:
    import csv
    import json

    with (MODELS_DIR / "plate_ocr_eu_labels.tsv").open(encoding="utf-8") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    assert len(rows) == len({r["image"] for r in rows}) >= 300
    assert all(re.fullmatch(r"[A-Z0-9]{2,10}", r["plate"]) and r["rows"] in ("1", "2") for r in rows)
    split = json.loads((MODELS_DIR / "plate_ocr_split.json").read_text(encoding="utf-8"))["sets"]["eu-plate-crops"]
    plate = {r["image"]: r["plate"] for r in rows}
    assert sorted(split["heldout"] + split["train"]) == sorted(plate)
    assert not {plate[i] for i in split["heldout"]} & {plate[i] for i in split["train"]}
    assert 0.25 <= len(split["heldout"]) / len(rows) <= 0.35


def test_the_br_audit_reads_every_held_out_crop_and_changes_a_label_only_when_both_readers_agree_surely(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import json

    monkeypatch.syspath_prepend(str(REPO / "scripts"))
    import eval_ocr

    split = json.loads((MODELS_DIR / "plate_ocr_split.json").read_text(encoding="utf-8"))["sets"]["br-plate-crops"]
    assert sorted(eval_ocr.audited_labels()) == sorted(split["heldout"])
    header = "image\tlabel\treader_a\tsure_a\treader_b\tsure_b\tnotes_a\tnotes_b\n"
    rows = [
        "agreed\tAAA5020\tMHA0361\tyes\tMHA0361\tyes\t\t",
        "one_unsure\tAYQ2915\tAVQ2915\tno\tAVQ2915\tyes\t3:Q/O\t",
        "disagree\tMBY9234\tHBY9234\tyes\tNBY9234\tyes\t\t",
        "confirmed\tATT2265\tATT2265\tyes\tATT2265\tyes\t\t",
        "no_plate\tAJW7942\t-\tyes\t-\tyes\t\t",
    ]
    audit = tmp_path / "audit.tsv"
    audit.write_text(header + "\n".join(rows) + "\n", encoding="utf-8")
    assert eval_ocr.audited_labels(audit) == {
        "agreed": "MHA0361",
        "one_unsure": "AYQ2915",
        "disagree": "MBY9234",
        "confirmed": "ATT2265",
        "no_plate": "AJW7942",
    }


def test_a_held_out_plate_a_character_off_a_trained_one_is_not_scored_as_unseen(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """br-plate-crops labels some cars two ways across their frames: AVQ2915 trained, AYQ2915 held out."""
    monkeypatch.syspath_prepend(str(REPO / "scripts"))
    import eval_ocr

    monkeypatch.setattr(eval_ocr, "trained_plates", lambda name: {"AVQ2915", "ABC1234"})
    labels = {"relabelled": "AYQ2915", "new": "XYZ9876", "same": "ABC1234", "two_off": "ABC1299"}
    assert eval_ocr.scorings("openalpr-us", labels) == {
        "openalpr-us": labels,
        "openalpr-us, unseen plates": {"new": "XYZ9876", "two_off": "ABC1299"},
    }
    monkeypatch.setattr(eval_ocr, "trained_plates", lambda name: {"QQQ0000"})
    assert list(eval_ocr.scorings("openalpr-us", labels)) == ["openalpr-us"]  # all unseen: no second row


def test_labels_added_later_are_split_without_moving_a_listed_crop(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(REPO / "scripts"))
    import train_ocr

    # 60 plates photographed twice each, then 40 more plates and a third photo of every old one.
    rows = {f"e{i:03d}.jpg": {"plate": f"P{i // 2}"} for i in range(120)}
    monkeypatch.setattr(train_ocr, "label_rows", lambda name: rows)
    first = train_ocr._split_set("eu-plate-crops", 0, {"heldout": [], "train": []})
    rows |= {f"e{i:03d}.jpg": {"plate": f"P{i - 100}"} for i in range(120, 220)}
    second = train_ocr._split_set("eu-plate-crops", 0, first)

    assert set(first["heldout"]) <= set(second["heldout"]) and set(first["train"]) <= set(second["train"])
    assert sorted(second["heldout"] + second["train"]) == sorted(rows)
    plates = [{rows[i]["plate"] for i in second[part]} for part in ("heldout", "train")]
    assert not plates[0] & plates[1]
    for split, images in ((first, range(120)), (second, range(120, 220))):
        held = [i for i in split["heldout"] if int(i[1:4]) in images]
        assert 0.25 <= len(held) / len(images) <= 0.35


def test_renders_of_another_generator_are_not_reused(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The render cache is keyed by the generator: stale renders would train other weights than the code gives."""
    monkeypatch.syspath_prepend(str(REPO / "scripts"))
    import train_ocr

    weights = train_ocr.STYLE_WEIGHTS
    before = train_ocr.renderer_digest()
    first = train_ocr.synthetic_samples(3, 0, 1, tmp_path)
    monkeypatch.setattr(train_ocr, "STYLE_WEIGHTS", weights | {"UA": 0.3})
    assert train_ocr.renderer_digest() != before
    train_ocr.synthetic_samples(3, 0, 1, tmp_path)
    assert len(list(tmp_path.glob("synth-3-0-*.npz"))) == 2  # rendered again, under its own name
    monkeypatch.setattr(train_ocr, "STYLE_WEIGHTS", weights)
    again = train_ocr.synthetic_samples(3, 0, 1, tmp_path)  # the first generator's cache, read back
    assert len(list(tmp_path.glob("synth-3-0-*.npz"))) == 2
    assert train_ocr.renders_digest(again) == train_ocr.renders_digest(first)


@pytest.mark.parametrize("seed", range(12))
def test_training_occlusion_hides_part_of_the_glyph_row_never_a_whole_glyph(
    monkeypatch: pytest.MonkeyPatch, seed: int
) -> None:
    """A cover that hid a whole character would teach the network to invent one."""
    monkeypatch.syspath_prepend(str(REPO / "scripts"))
    import train_ocr

    crop, _ = _sheared_plate("UA", 0.0)
    row = text_row(crop)
    assert row is not None
    out = train_ocr.occlude(crop, np.random.default_rng(seed))
    assert out.shape == crop.shape and out.dtype == np.uint8
    top, bottom = round(row.y - row.height / 2), round(row.y + row.height / 2)
    hidden = (np.abs(out.astype(int) - crop.astype(int)) > 30)[top:bottom, round(row.x0) : round(row.x1)]
    assert hidden.any()  # some of the glyphs covered...
    assert hidden.mean(axis=0).max() < 0.6  # ...but no column of the row more than 60 % of its height
    blank = np.full((40, 160), 200, np.uint8)
    assert np.array_equal(train_ocr.occlude(blank, np.random.default_rng(seed)), blank)  # no row: untouched


@pytest.mark.parametrize("pinned", [PLATE_OCR, PLATE_OCR_SMALL, PLATE_OCR_SEED1])
def test_shipped_weights_match_pin_and_are_small(pinned: ModelFile) -> None:
    path = MODELS_DIR / pinned.name
    assert sha256_of(path) == pinned.sha256
    assert path.stat().st_size < 20 * 1024 * 1024


@pytest.fixture(scope="module")
def reader() -> PlateOcrReader:
    return PlateOcrReader(OcrConfig(network="plate_ocr"))


@pytest.mark.slow
def test_shipped_networks_load_through_easyocr_offline(reader: PlateOcrReader) -> None:
    # our classes, built by EasyOCR from models/<network>.py
    assert [type(n.reader.recognizer).__module__ for n in reader.networks] == ["plate_ocr", "plate_ocr_small"]
    # the voters are plate_ocr's network (re-exported under their own names) with their own weights
    assert [type(n.reader.recognizer).__module__ for n in reader.voters] == ["plate_ocr", "plate_ocr"]
    first_layer, weights = next(iter(reader.networks[0].reader.recognizer.state_dict().items()))
    for voter in reader.voters:
        assert not torch.equal(voter.reader.recognizer.state_dict()[first_layer], weights)
    assert "".join(reader.alphabet[1:]) == "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"


@pytest.mark.slow
def test_openvino_backend_gives_the_torch_networks_reads(reader: PlateOcrReader) -> None:
    """The default runtime runs the very networks EasyOCR loaded: same probabilities as torch's float modules."""
    assert all(n.compiled is not None for n in reader.networks)  # openvino is the default
    on_torch = PlateOcrReader(OcrConfig(network="plate_ocr", runtime="torch", quantize=False))
    assert all(n.compiled is None for n in on_torch.networks)
    rng = np.random.default_rng(3)
    lines = [LineCut(rng.integers(0, 256, (LINE_H, LINE_W), dtype=np.uint8)) for _ in range(3)]
    lines += [LineCut(to_gray(_sheared_plate(style, 0.0)[0])) for style in ("UA", "MD", "PL")]
    for a, b in zip(reader.read_lines(lines), on_torch.read_lines(lines), strict=True):
        assert a.text == b.text
        np.testing.assert_allclose(a.char_confidences, b.char_confidences, atol=1e-4)
    assert [d.text for d in reader.read_lines(lines[3:])] == [_sheared_plate(s, 0.0)[1] for s in ("UA", "MD", "PL")]


@pytest.mark.slow
def test_each_network_reads_lines_of_the_height_it_was_trained_on(
    reader: PlateOcrReader, monkeypatch: pytest.MonkeyPatch
) -> None:
    shapes: dict[str, set[tuple[int, ...]]] = {}
    names = ("plate_ocr", "plate_ocr_small", "plate_ocr_seed1", "plate_ocr_stage1")
    for name, network in zip(names, reader.networks + reader.voters, strict=True):
        probs = network.probs
        def recorded(batch: np.ndarray, probs: Any = probs, name: str = name) -> np.ndarray:
            shapes.setdefault(name, set()).add(batch.shape[1:])
            return probs(batch)

        monkeypatch.setattr(network, "probs", recorded)
    noise = np.random.default_rng(1).integers(0, 256, (60, 90, 3), dtype=np.uint8)  # unsure: both networks read it
    reader.read(noise)
    assert shapes == {
        "plate_ocr": {(1, 48, 192)},
        "plate_ocr_small": {(1, 32, 128)},
        "plate_ocr_seed1": {(1, 48, 192)},
        "plate_ocr_stage1": {(1, 32, 128)},
    }


@pytest.mark.slow
def test_big_network_reads_only_the_lines_the_small_one_is_unsure_of(
    reader: PlateOcrReader, monkeypatch: pytest.MonkeyPatch
) -> None:
    big, small = reader.networks
    batches: list[int] = []
    big_probs = big.probs
    monkeypatch.setattr(big, "probs", lambda batch: batches.append(len(batch)) or big_probs(batch))
    monkeypatch.setattr(reader, "cfg", reader.cfg.model_copy(update={"vote_below": 0.0}))  # no zoomed re-reads
    lines = [LineCut(to_gray(_sheared_plate(style, 0.0)[0])) for style in ("UA", "MD", "PL")]
    lines.append(LineCut(np.random.default_rng(1).integers(0, 256, (LINE_H, LINE_W), dtype=np.uint8)))  # noise: unsure
    small_reads = small.read(lines)
    unsure = sum(d.mean_confidence < reader.cfg.second_sure for d in small_reads)
    reads = reader.read_lines(lines)
    assert 1 <= unsure < len(lines) and batches == [unsure]
    for mine, alone in zip(reads, small_reads, strict=True):
        assert mine.mean_confidence >= alone.mean_confidence  # the surer read of the two


@pytest.mark.slow
def test_loading_the_plate_network_leaves_the_stock_readers_input_height(reader: PlateOcrReader) -> None:
    import easyocr.easyocr as easyocr_module

    assert easyocr_module.imgH == 64  # english_g2's; EasyOCR sets our yaml's 32 while loading ours


@pytest.mark.slow
@pytest.mark.parametrize("pinned", [PLATE_OCR, PLATE_OCR_SMALL, PLATE_OCR_SEED1])
def test_tampered_weights_are_refused_before_loading(
    pinned: ModelFile, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for f in MODELS_DIR.glob("plate_ocr*"):
        shutil.copy(f, tmp_path / f.name)
    with (tmp_path / pinned.name).open("r+b") as f:
        f.seek(2000)
        f.write(b"\x00\x01\x02")
    monkeypatch.setattr("anpr.ocr.MODELS_DIR", tmp_path)
    with pytest.raises(ModelError, match="checksum mismatch"):
        PlateOcrReader(OcrConfig(network="plate_ocr"))


@pytest.mark.slow
@pytest.mark.parametrize("style", ["UA", "MD", "RO", "PL"])
def test_plate_seen_from_the_side_is_read_levelled(reader: PlateOcrReader, style: str) -> None:
    crop, label = _sheared_plate(style, 0.4)  # 22 degrees: far beyond the training renders' 6
    read = reader.read(crop)
    assert read is not None and read.text == label


@pytest.mark.slow
@pytest.mark.parametrize("style", ["UA", "MD"])
def test_plate_seen_from_the_side_and_above_is_read_upright(reader: PlateOcrReader, style: str) -> None:
    crop, label = _sheared_plate(style, 0.3, slant=0.4)  # 17 degrees of slope, 22 of lean (UA misread without deslant)
    read = reader.read(crop)
    assert read is not None and read.text == label


# Every country the generator draws, one-row and two-row; clean, slightly tilted crops with the
# padding anpr/recognize.py gives detector boxes.
STYLES = ["UA", "MD", "RO", "PL", "EU", "US", "BR", "BR1", "UA2", "MD2"]


@pytest.mark.slow
@pytest.mark.parametrize("style", STYLES)
def test_rendered_plate_of_each_style_is_read(reader: PlateOcrReader, style: str) -> None:
    from anpr.synth import random_plate_text, render_plate
    from anpr.synth.augment import perspective

    rng = np.random.default_rng(7)
    plate = render_plate(random_plate_text(style, rng), style, rng, px_per_mm=1.2)
    plate = perspective(plate, rng, max_tilt=0.05, max_rotation_deg=2.0, margin=0.2)
    q = plate.quad
    x0, y0, x1, y1 = q[:, 0].min(), q[:, 1].min(), q[:, 0].max(), q[:, 1].max()
    dx, dy = 0.08 * (x1 - x0), 0.15 * (y1 - y0)
    crop = plate.image[int(y0 - dy) : int(y1 + dy) + 1, int(x0 - dx) : int(x1 + dx) + 1]
    read = reader.read(crop)
    assert read is not None
    assert read.text == plate.label
    assert len(read.char_confidences) == len(read.text)
    assert all(0.0 < c <= 1.0 for c in read.char_confidences)


def _loose_two_row_crop(seed: int) -> np.ndarray:
    """A two-row trailer plate small in a dark detector box, turned 6 degrees (the sample clip
    `truck_rear`'s trailer): the plate's edges against the dark are strong rows of contrast too."""
    import cv2

    from anpr.synth import render_plate

    plate = render_plate("BH\n4315 XT", "UA2", np.random.default_rng(seed)).image
    h, w = plate.shape[:2]
    box = np.full((int(h * 1.7), int(w * 1.5), 3), 25, np.uint8)
    y0, x0 = int(h * 0.35), int(w * 0.25)
    box[y0 : y0 + h, x0 : x0 + w] = plate[..., :3]
    turn = cv2.getRotationMatrix2D((box.shape[1] / 2, box.shape[0] / 2), 6, 1.0)
    box = cv2.warpAffine(box, turn, (box.shape[1], box.shape[0]), borderValue=(25, 25, 25))
    return cv2.resize(box, None, fx=0.45, fy=0.45, interpolation=cv2.INTER_AREA)


def test_glyph_rows_split_cuts_between_the_rows_where_the_contrast_profile_does_not() -> None:
    gray = to_gray(_loose_two_row_crop(0))
    row, split = glyph_rows(gray)
    assert row is None  # two rows: no single row to level
    assert split is not None
    # No glyph is cut (by more than 2 px: the rows are turned, the cut is level): the 2 glyphs of
    # the top row above it, the 6 of the bottom row below it.
    dark_ink = glyph_boxes(gray)[0]
    glyphs = dark_ink[(dark_ink[:, 3] > 0.1 * gray.shape[0]) & (dark_ink[:, 3] < 0.5 * gray.shape[0])]
    top, bottom = glyphs[:, 1] - glyphs[:, 3] / 2, glyphs[:, 1] + glyphs[:, 3] / 2
    assert not ((top < split - 2) & (bottom > split + 2)).any()
    assert (bottom <= split + 2).sum() == 2 and (top >= split - 2).sum() == 6
    assert abs(split - row_split(gray)) > 0.1 * gray.shape[0], "the contrast profile cuts elsewhere"
    assert glyph_rows(to_gray(_sheared_plate("UA", 0.0)[0]))[1] is None  # one row: no split


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_two_row_plate_in_a_loose_crop_is_read_whole(reader: PlateOcrReader, seed: int) -> None:
    """Cut by the contrast profile alone, these read `A315XT` or `25HXT` (the bottom row, or a row
    cut through); cut between the glyph rows, whole."""
    read = reader.read(_loose_two_row_crop(seed))
    assert read is not None and read.text == "BH4315XT"


def _decoded(text: str, confidence: float) -> Decoded:
    return Decoded(text, (confidence,) * len(text))


def _one_row_plate_in_a_tall_box() -> np.ndarray:
    """A rendered one-row US plate in a detector box grown 30 % upwards: under `two_row_aspect`,
    so it is read as a two-row plate too."""
    from anpr.synth import render_plate

    plate = render_plate("DCK 6344", "US", np.random.default_rng(0)).image[..., :3]
    return np.vstack([np.full((int(0.3 * plate.shape[0]), plate.shape[1], 3), 90, np.uint8), plate])


@pytest.mark.parametrize(
    ("line", "two_rows", "expected"),
    [
        (("DCK6344", 0.997), ("TEXAS634", 0.987), "DCK6344"),  # a state name taken for a row (openalpr-us)
        (("CK6344", 0.95), ("DCK6344", 0.96), "DCK6344"),  # the two-row read holds the line read
        (("DCK6344", 0.6), ("TEXAS634", 0.95), "TEXAS634"),  # an unsure line read keeps no claim
    ],
)
def test_sure_read_of_one_long_row_outranks_a_two_row_read_of_other_text(
    line: tuple[str, float], two_rows: tuple[str, float], expected: str
) -> None:
    crop = _one_row_plate_in_a_tall_box()
    row, _ = glyph_rows(to_gray(crop))
    assert row is not None and row.blobs >= ONE_ROW_GLYPHS
    assert crop.shape[1] < OcrConfig().two_row_aspect * crop.shape[0]
    read = _reading_cuts_as(line, two_rows).read(crop)
    assert read is not None and read.text == expected


def test_without_a_row_of_glyphs_the_longer_sure_read_wins() -> None:
    """A blank box has no row to vouch for the line read: ranked as on two-row plates."""
    blank = np.full_like(_one_row_plate_in_a_tall_box(), 90)
    read = _reading_cuts_as(("DCK6344", 0.997), ("TEXAS634", 0.987)).read(blank)
    assert read is not None and read.text == "TEXAS634"


def _reading_cuts_as(line: tuple[str, float], two_rows: tuple[str, float]) -> PlateOcrReader:
    """A reader whose networks read every one-line cut as `line` and every two-row cut as `two_rows`."""
    reader = object.__new__(PlateOcrReader)
    reader.cfg = OcrConfig()
    reader.max_slope = 1.0
    reads = {False: _decoded(*line), True: _decoded(*two_rows)}
    reader.read_lines = lambda cuts: [reads[c.two_rows] for c in cuts]  # type: ignore[method-assign]
    return reader


def test_vote_sums_confidence_per_text() -> None:
    reads = [_decoded("AB123", 0.95), _decoded("AB128", 0.6), _decoded("AB128", 0.7), _decoded("AB12", 0.9)]
    assert vote(reads) == reads[2]  # two middling reads that agree beat the surest one
    assert vote(reads[:2]) == reads[0]
    # Noise: every text read once. The surest of them must not replace the read being checked.
    noise = [_decoded("X1Y2", 0.5), _decoded("AB12", 0.9), _decoded("CD34", 0.8)]
    assert vote(noise) is noise[0]


class _FixedNetwork:
    """A stand-in PlateNetwork that reads every line (at every scale) as `text`."""

    def __init__(self, text: str, confidence: float) -> None:
        self.text, self.confidence = text, confidence

    def read(self, cuts: list[LineCut], scales: tuple[float, ...] = (1.0,)) -> list[Decoded]:
        return [_decoded(self.text, self.confidence) for _ in cuts for _ in scales]


def test_voters_decide_between_networks_that_disagree() -> None:
    reader = object.__new__(PlateOcrReader)
    reader.cfg = OcrConfig(second_sure=0.99, vote_below=0.97)
    # small: unsure AB128; plate_ocr: surer AB123, still under vote_below -> the line goes to the vote
    reader.networks = [_FixedNetwork("AB123", 0.9), _FixedNetwork("AB128", 0.8)]  # type: ignore[list-item]
    reader.voters = []
    line = [LineCut(np.zeros((LINE_H, LINE_W), np.uint8))]
    assert reader.read_lines(line)[0].text == "AB123"  # two zoomed reads each: 0.9 x 3 beats 0.8 x 2
    reader.voters = [_FixedNetwork("AB128", 0.85), _FixedNetwork("AB128", 0.85)]  # type: ignore[list-item]
    assert reader.read_lines(line)[0].text == "AB128"  # six more reads of AB128 tip it
    reader.cfg = OcrConfig(vote_below=0.0)
    assert reader.read_lines(line)[0].text == "AB123"  # a line that never goes to the vote never meets them


class _CutNetwork:
    """A stand-in PlateNetwork that reads a cut by its first pixel: `texts[pixel]`, and logs the cuts."""

    def __init__(self, texts: dict[int, tuple[str, float]]) -> None:
        self.texts = texts
        self.seen: list[int] = []

    def read(self, cuts: list[LineCut], scales: tuple[float, ...] = (1.0,)) -> list[Decoded]:
        self.seen += [int(c.gray[0, 0]) for c in cuts]
        return [_decoded(*self.texts[int(c.gray[0, 0])]) for c in cuts for _ in scales]


def test_an_unsure_line_votes_with_the_reads_of_its_glyph_band() -> None:
    """The whole crop (pixel 0) reads AB128 unsure; its glyph band (pixel 1) reads AB123."""
    reader = object.__new__(PlateOcrReader)
    reader.cfg = OcrConfig(second_sure=0.99, vote_below=0.97)
    texts = {0: ("AB128", 0.9), 1: ("AB123", 0.85), 2: ("XY999", 0.99)}
    reader.networks = [_CutNetwork(texts), _CutNetwork(texts)]  # type: ignore[list-item]
    reader.voters = [_CutNetwork(texts)]  # type: ignore[list-item]
    line, band = (LineCut(np.full((LINE_H, LINE_W), v, np.uint8)) for v in (0, 1))
    assert reader.read_lines([line])[0].text == "AB128"  # without its band: the only text read
    # Each network reads the band as it is and zoomed: 9 reads x 0.85 beat the line's 8 x 0.9.
    assert reader.read_lines([replace(line, band=band)])[0].text == "AB123"
    assert all(n.seen[-1] == 1 for n in reader.networks + reader.voters)
    # A line read surely never goes to the vote, and nobody reads its band.
    sure = LineCut(np.full((LINE_H, LINE_W), 2, np.uint8), band=band)
    for n in reader.networks + reader.voters:
        n.seen.clear()
    assert reader.read_lines([sure])[0].text == "XY999"
    assert [n.seen for n in reader.networks + reader.voters] == [[], [2], []]


def test_scaled_zooms_about_the_centre() -> None:
    line = np.zeros((LINE_H, LINE_W), np.uint8)
    line[12:20, 60:68] = 255
    for scale in VOTE_SCALES:
        ys, xs = np.nonzero(scaled(line, scale) > 127)
        assert scaled(line, scale).shape == line.shape
        assert abs(xs.mean() - 63.5) < 1 and abs(ys.mean() - 15.5) < 1  # the centre stays put
        assert len(xs) == pytest.approx(64 * scale**2, rel=0.3)
    # Two marks near the ends: their distance grows and shrinks with the zoom (identity would not).
    ends = np.zeros((LINE_H, LINE_W), np.uint8)
    ends[14:18, [14, 113]] = 255
    for scale in VOTE_SCALES:
        xs = np.nonzero(scaled(ends, scale)[16] > 60)[0]
        assert xs.max() - xs.min() == pytest.approx(99 * scale, abs=2)


@pytest.mark.slow
def test_only_lines_still_unsure_are_read_zoomed_and_voted(
    reader: PlateOcrReader, monkeypatch: pytest.MonkeyPatch
) -> None:
    lines = [LineCut(to_gray(_sheared_plate(style, 0.0)[0])) for style in ("UA", "MD", "PL")]
    lines.append(LineCut(np.random.default_rng(1).integers(0, 256, (LINE_H, LINE_W), dtype=np.uint8)))  # noise: unsure
    monkeypatch.setattr(reader, "cfg", reader.cfg.model_copy(update={"vote_below": 0.0}))
    before = reader.read_lines(lines)
    monkeypatch.setattr(reader, "cfg", reader.cfg.model_copy(update={"vote_below": 0.97}))
    batches: list[int] = []
    for network in reader.networks + reader.voters:
        probs = network.probs
        monkeypatch.setattr(network, "probs", lambda batch, probs=probs: batches.append(len(batch)) or probs(batch))
    after = reader.read_lines(lines)
    unsure = [i for i, d in enumerate(before) if d.mean_confidence < 0.97]
    assert unsure == [3]  # the three plates are sure, the noise is not
    zoomed = len(VOTE_SCALES) * len(unsure)
    # one batch per network, the unsure lines only: zoomed, and the voters' as they are too
    assert batches[-4:] == [zoomed, zoomed, zoomed + len(unsure), zoomed + len(unsure)]
    assert [d.text for d in after[:3]] == [d.text for d in before[:3]]


def tiny_training_run(
    work: Path, workers: int, *extra: str, renders: Path | None = None, env: dict[str, str] | None = None
) -> dict[str, Any]:
    cmd = [
        sys.executable, str(REPO / "scripts" / "train_ocr.py"), "--no-real", "--synthetic", "48",
        "--synthetic-fonts", "16", "--val", "8", "--epochs", "2", "--steps", "15", "--batch", "16",
        "--workers", str(workers), "--work", str(work), "--renders", str(renders or work), *extra,
    ]  # fmt: skip
    subprocess.run(cmd, check=True, capture_output=True, timeout=300, env=os.environ | (env or {}))
    return torch.load(work / "last.pt", weights_only=False)


@pytest.mark.slow
def test_tiny_training_run_lowers_the_loss_and_is_reproducible(tmp_path: Path) -> None:
    first = tiny_training_run(tmp_path / "a", workers=1)
    losses = [float(m) for m in re.findall(r"epoch \d+/\d+ loss ([0-9.]+)", (tmp_path / "a" / "train.log").read_text())]
    assert len(losses) == 2
    assert losses[1] < losses[0]
    # The committed weights must be what `make train-ocr` produces: the same data and seed give the
    # same weights, however many processes render the synthetic plates, and whichever CPU kernels
    # the caller asks torch for (on an AVX-512 CPU its own kernels train other weights: the script
    # pins them, train_ocr.KERNELS).
    second = tiny_training_run(
        tmp_path / "b", workers=2, env={"ATEN_CPU_CAPABILITY": "default", "ONEDNN_MAX_CPU_ISA": "ALL"}
    )
    assert first["model"].keys() == second["model"].keys()
    assert all(torch.equal(first["model"][k], second["model"][k]) for k in first["model"])
    assert "MKL_CBWR=COMPATIBLE, torch" in (tmp_path / "b" / "train.log").read_text()
    assert ", AVX2\n" in (tmp_path / "b" / "train.log").read_text()


@pytest.mark.slow
def test_a_training_stage_builds_on_a_finished_run_at_another_line_height(tmp_path: Path) -> None:
    """`make train-ocr`'s plate_ocr recipe: a run on 32 px lines, then one on 48 px lines from its weights."""
    first = tiny_training_run(tmp_path / "a", 1, "--height", "32")
    assert first["args"]["height"] == 32
    second = tiny_training_run(tmp_path / "b", 1, "--init", str(tmp_path / "a" / "last.pt"), renders=tmp_path / "a")
    assert second["args"]["height"] == 48  # models/plate_ocr.yaml
    log = (tmp_path / "b" / "train.log").read_text()
    assert f"initialised from {tmp_path / 'a' / 'last.pt'}: plate_ocr after 2 epochs" in log
    assert "32 px lines" in log
    # An unfinished run is not a stage to build on: the recipe would silently change.
    unfinished = first | {"epoch": 1}
    torch.save(unfinished, tmp_path / "unfinished.pt")
    with pytest.raises(subprocess.CalledProcessError) as failed:
        tiny_training_run(tmp_path / "c", 1, "--init", str(tmp_path / "unfinished.pt"), renders=tmp_path / "a")
    assert b"after epoch 1 of 2, not a finished plate_ocr run" in failed.value.stderr
