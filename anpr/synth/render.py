"""Synthetic licence plates that look like the ones crossing the Ukraine–Moldova border.

Why synthetic: there are almost no labelled photos of UA/MD plates to test with, and tests need
images whose text and corners are known exactly. Everything is drawn with OpenCV and Pillow from a
seeded `numpy.random.Generator`: the same seed gives the same pixels on the same library and font
versions.

Geometry follows the real plates in millimetres (UA DSTU 3650:2004 520x112, the EU 520x110 format
for MD/RO/PL, US 12x6 in, Brazil's 400x130 Mercosul plate, 280x200 two-line trailer plates) and is
rasterised at `px_per_mm`. Glyphs are squeezed into fixed-width cells, which gives the condensed,
near-monospaced look of the DIN-style plate fonts.

Fonts, looked up under /usr/share/fonts (Debian packages):
- DejaVu Sans Bold (`fonts-dejavu-core`): Bitstream Vera licence plus public-domain DejaVu changes;
  free to use, modify and redistribute, not to be sold on its own. Used for every European style.
- Liberation Sans Bold (`fonts-liberation2`): SIL Open Font License 1.1; the US-like style. Falls
  back to FreeSans Bold (`fonts-freefont-ttf`, GPLv3+ with the font exception), then DejaVu.
Images rendered with a font are not font software; none of these licences restricts them.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal, cast

import cv2
import numpy as np
from PIL import Image, ImageDraw, ImageFont

FONT_ROOT = Path("/usr/share/fonts/truetype")
FONT_CANDIDATES: dict[str, tuple[str, ...]] = {
    "din": ("dejavu/DejaVuSans-Bold.ttf",),
    "gothic": (
        "liberation2/LiberationSans-Bold.ttf",
        "liberation/LiberationSans-Bold.ttf",
        "freefont/FreeSansBold.ttf",
        "dejavu/DejaVuSans-Bold.ttf",
    ),
}

Color = tuple[int, int, int]  # BGR
BandKind = Literal["none", "eu", "ua", "md", "us", "br", "br-city"]
GapMark = Literal["none", "dash", "emblem"]

UA_LETTERS = "ABCEHIKMOPTX"  # the 12 letters that look the same in Latin and Cyrillic
UA_REGIONS = (
    "AA",
    "AB",
    "AC",
    "AE",
    "AI",
    "AK",
    "AM",
    "AO",
    "AP",
    "AT",
    "AX",
    "BA",
    "BC",
    "BE",
    "BH",
    "BI",
    "BK",
    "BM",
    "BO",
    "BT",
    "BX",
    "CA",
    "CB",
    "CE",
    "KA",
    "KI",
    "HH",
)
RO_COUNTIES = ("IS", "GL", "VS", "BT", "SV", "BC", "NT", "VN", "CJ", "TM", "CT", "BV", "B")
PL_DISTRICTS = ("WB", "WA", "WI", "LU", "LZ", "RZ", "KR", "PO", "GD", "DW", "EL", "LB")
EU_CODES = ("D", "F", "I", "NL", "BG", "LT", "CZ", "SK", "HU", "A")
US_STATES = ("OHIO", "TEXAS", "ARIZONA", "NEVADA", "OREGON", "IOWA", "MAINE", "UTAH")
# US states issue serials in many shapes (L letter, N digit): Texas/New York ABC 1234, California
# 1ABC234, Florida/older plates ABC 123 and 123 ABC, Illinois AB 12345, New Jersey A12 BCD, and so
# on; a random mix stands for the rest and for vanity plates. With one shape only (LLL NNNN) the
# reader learned that a US plate's fourth character is a digit: openalpr-us 5LTA600 read 5LTA400.
US_SERIALS = ("LLL NNNN", "NLLL NNN", "LLL NNN", "NNN LLL", "LL NNNNN", "LNN NNNN", "LNN LLL", "NLL NNN")
# Dealer frames print a name under (and sometimes over) the serial: small text the reader must skip.
US_FRAME_WORDS = ("MOTORS", "AUTO SALES", "TOYOTA", "HONDA", "FORD", "CHEVROLET", "NISSAN", "AUTO GROUP", "CARS INC")
# Brazil's plates before Mercosul (most cars on the road until the 2020s): the city under a strip at the top.
BR_CITIES = ("SP-SAO PAULO", "PR-CURITIBA", "RJ-RIO DE JANEIRO", "MG-BELO HORIZONTE", "PR-LONDRINA", "SC-JOINVILLE",
             "RS-PORTO ALEGRE", "PR-MARINGA", "BA-SALVADOR", "GO-GOIANIA")
US_INKS: tuple[Color, ...] = ((90, 35, 15), (25, 25, 25), (40, 30, 170), (40, 90, 20), (110, 60, 20))
LATIN = "ABCDEFGHJKLMNPRSTUVWXYZ"  # no I, O, Q: Poland's and Romania's series avoid them next to digits
# Moldova, the US, Brazil and much of the EU do issue O and I (Orhei's OR, Brazil's AXO 7916): without
# them the reader never learns O beside a band or a digit, and reads it as D (measured: MD "OKA 417").
LETTERS = "ABCDEFGHIJKLMNOPRSTUVWXYZ"
ALL_LETTERS = LETTERS + "Q"

EU_BLUE: Color = (153, 51, 0)
UA_BLUE: Color = (183, 87, 0)
UA_YELLOW: Color = (0, 215, 255)
MD_BLUE: Color = (174, 70, 0)
MD_YELLOW: Color = (0, 210, 255)
MD_RED: Color = (47, 9, 204)
WHITE: Color = (255, 255, 255)


@dataclass(frozen=True, slots=True)
class PlateStyle:
    """Physical layout of one kind of plate, in millimetres.

    `band_mm` is the width of the left band (eu/ua/md) or the height of the top strip (us/br).
    Characters sit in fixed cells `char_width_mm` wide; a space in the text becomes `group_gap_mm`.
    """

    name: str
    country: str | None
    size_mm: tuple[float, float]
    char_height_mm: float
    char_width_mm: float
    char_gap_mm: float
    group_gap_mm: float
    band: BandKind
    band_mm: float = 0.0
    band_code: str = ""
    rows: int = 1
    font: str = "din"
    ink: Color = (25, 25, 25)


STYLES: dict[str, PlateStyle] = {
    s.name: s
    for s in (
        PlateStyle("UA", "UA", (520, 112), 64, 41, 3, 22, "ua", 40, "UA"),
        PlateStyle("MD", "MD", (520, 112), 72, 46, 4, 30, "md", 42, "MD"),
        PlateStyle("RO", "RO", (520, 110), 72, 43, 3, 20, "eu", 40, "RO"),
        PlateStyle("PL", "PL", (520, 114), 72, 43, 3, 22, "eu", 40, "PL"),
        PlateStyle("EU", None, (520, 110), 72, 44, 3, 22, "eu", 40),
        PlateStyle("US", "US", (305, 152), 74, 33, 3, 14, "us", 24, font="gothic", ink=(90, 35, 15)),
        PlateStyle("BR", "BR", (400, 130), 66, 42, 4, 0, "br", 28),
        PlateStyle("BR1", "BR", (400, 130), 63, 40, 4, 18, "br-city", 24),
        PlateStyle("MD2", "MD", (280, 200), 74, 50, 5, 14, "md", 40, "MD", rows=2),
        PlateStyle("UA2", "UA", (280, 200), 72, 38, 3, 12, "ua", 40, "UA", rows=2),
    )
}


# Plain ndarray aliases: OpenCV's stubs return untyped arrays, so dtype parameters would only add casts.
Image8 = np.ndarray  # H x W (x 3) uint8, BGR
Mask = np.ndarray  # H x W float32, 0..1
Canvas = np.ndarray  # H x W x 3 float32, BGR, 0..255 while drawing
Quad = np.ndarray  # (4, 2) float32: top-left, top-right, bottom-right, bottom-left


@dataclass(frozen=True, slots=True)
class RenderedPlate:
    """A plate image with what a test needs to know about it.

    `label` is the text as a reader should return it (A-Z0-9 only, rows joined top to bottom);
    `quad` the plate's corners in `image`; `alpha` is 255 on the plate, 0 around it.
    """

    image: Image8
    alpha: Image8
    quad: Quad
    label: str
    rows: tuple[str, ...]
    style: str
    country: str | None


Augmentation = Callable[[RenderedPlate, np.random.Generator], RenderedPlate]


def get_style(style: PlateStyle | str) -> PlateStyle:
    if isinstance(style, PlateStyle):
        return style
    try:
        return STYLES[style]
    except KeyError:
        raise ValueError(f"unknown plate style {style!r}; known: {', '.join(STYLES)}") from None


def plate_label(text: str) -> str:
    """What a perfect reader returns: upper-case letters and digits, nothing else."""
    return re.sub(r"[^A-Z0-9]", "", text.upper())


def random_plate_text(style: PlateStyle | str, rng: np.random.Generator) -> str:
    """A valid-looking registration for `style` (a country code or a style name such as "MD2").

    Groups are separated by spaces and the rows of two-line plates by a newline, as printed.
    """
    name = get_style(style).name

    def pick(chars: Sequence[str], n: int) -> str:
        return "".join(str(chars[int(i)]) for i in rng.integers(0, len(chars), n))

    digits = "0123456789"
    if name in ("UA", "UA2"):
        region, number, series = str(rng.choice(UA_REGIONS)), f"{rng.integers(1, 10000):04d}", pick(UA_LETTERS, 2)
        return f"{region}\n{number} {series}" if name == "UA2" else f"{region} {number} {series}"
    if name in ("MD", "MD2"):
        letters, number = pick(LETTERS, 3), f"{rng.integers(1, 1000):03d}"
        return f"{letters}\n{number}" if name == "MD2" else f"{letters} {number}"
    if name == "RO":
        county = str(rng.choice(RO_COUNTIES))
        number = f"{rng.integers(1, 1000):03d}" if county == "B" else f"{rng.integers(1, 100):02d}"
        return f"{county} {number} {pick(LATIN, 3)}"
    if name == "PL":
        tail = pick(digits, 5) if rng.random() < 0.6 else pick(digits, 3) + pick(LATIN, 2)
        return f"{rng.choice(PL_DISTRICTS)} {tail}"
    if name == "US":
        if rng.random() < 0.7:
            serial = str(rng.choice(US_SERIALS))
            return "".join(pick(LETTERS, 1) if c == "L" else pick(digits, 1) if c == "N" else c for c in serial)
        chars = "".join(pick(ALL_LETTERS if rng.random() < 0.5 else digits, 1) for _ in range(rng.integers(5, 8)))
        cut = int(rng.integers(2, len(chars) - 1))
        return chars if rng.random() < 0.4 else f"{chars[:cut]} {chars[cut:]}"
    if name == "BR1":
        return f"{pick(ALL_LETTERS, 3)} {pick(digits, 4)}"
    if name == "BR":
        return pick(ALL_LETTERS, 3) + pick(digits, 1) + pick(ALL_LETTERS, 1) + pick(digits, 2)
    return f"{pick(LETTERS, 2)} {pick(digits, 3)} {pick(LETTERS, 2)}"


# -- glyphs --------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=4)
def font_path(font: str) -> Path:
    for rel in FONT_CANDIDATES[font]:
        if (FONT_ROOT / rel).is_file():
            return FONT_ROOT / rel
    raise FileNotFoundError(
        f"no font for {font!r} under {FONT_ROOT}: install fonts-dejavu-core (and fonts-liberation2)"
    )


def _raster(font: str, char: str) -> np.ndarray:
    """`char` drawn at 200 px on a canvas big enough for any glyph, 0..1."""
    size = 200
    canvas = Image.new("L", (2 * size, 2 * size), 0)
    ImageDraw.Draw(canvas).text(
        (size // 2, size // 4), char, fill=255, font=ImageFont.truetype(str(font_path(font)), size)
    )
    return np.asarray(canvas, dtype=np.float32) / 255.0


@functools.lru_cache(maxsize=4)
def _cap_band(font: str) -> tuple[int, int]:
    """Rows spanned by a capital H, widened a little for the overshoot of round letters."""
    rows = np.flatnonzero(_raster(font, "H").max(axis=1) > 0.05)
    pad = max(1, round(0.015 * (rows[-1] - rows[0])))
    return int(rows[0]) - pad, int(rows[-1]) + 1 + pad


@functools.lru_cache(maxsize=256)
def _glyph(font: str, char: str) -> Mask:
    """Ink mask of one character, 0..1, cropped to its ink columns and to the cap-height band
    (so every character is exactly cap height, as on a plate; descenders are cut)."""
    top, bottom = _cap_band(font)
    band = _raster(font, char)[top:bottom]
    cols = np.flatnonzero(band.max(axis=0) > 0.05)
    return np.ascontiguousarray(band[:, cols[0] : cols[-1] + 1])


def _paint(canvas: Canvas, mask: Mask, x: float, y: float, color: Color) -> None:
    """Alpha-blend `color` through `mask` with its top-left corner at (x, y), clipped to the canvas."""
    h, w = mask.shape
    x0, y0 = round(x), round(y)
    cx0, cy0 = max(x0, 0), max(y0, 0)
    cx1, cy1 = min(x0 + w, canvas.shape[1]), min(y0 + h, canvas.shape[0])
    if cx1 <= cx0 or cy1 <= cy0:
        return
    m = mask[cy0 - y0 : cy1 - y0, cx0 - x0 : cx1 - x0, None]
    region = canvas[cy0:cy1, cx0:cx1]
    region[:] = region * (1 - m) + np.asarray(color, np.float32) * m


def _text_mask(
    text: str, font: str, height: float, cell: float, gap: float, group_gap: float
) -> tuple[Mask, list[float]]:
    """One line of text as a mask (fixed cells, glyphs no wider than a cell, spaces as group gaps)
    and the x of each group gap's centre, where plates are drilled for screws."""
    zero = _glyph(font, "0")
    squeeze = cell / (zero.shape[1] * height / zero.shape[0])
    pieces: list[tuple[float, Mask | None]] = []
    for ch in text:
        if ch == " ":
            pieces.append((group_gap - gap, None))
            continue
        g = _glyph(font, ch)
        w = min(cell, g.shape[1] * height / g.shape[0] * squeeze)
        pieces.append((cell, cv2.resize(g, (max(1, round(w)), max(1, round(height))), interpolation=cv2.INTER_AREA)))
    total = sum(p[0] for p in pieces) + gap * (len(pieces) - 1)
    out = np.zeros((max(1, round(height)), max(1, round(total)) + 1), np.float32)
    gaps: list[float] = []
    x = 0.0
    for advance, piece in pieces:
        if piece is None:
            gaps.append(x + advance / 2)
        else:
            xs = round(x + (advance - piece.shape[1]) / 2)
            span = slice(xs, xs + piece.shape[1])
            out[:, span] = np.maximum(out[:, span], piece[:, : out.shape[1] - xs])
        x += advance + gap
    return out, gaps


def _draw_text(
    canvas: Canvas, text: str, box: tuple[float, float, float, float], style: PlateStyle, s: float
) -> list[float]:
    """Centre `text` in `box` (x0, y0, x1, y1 in px), shrinking the cells if it would not fit.

    Returns the x of the gaps between groups, in canvas pixels.
    """
    x0, y0, x1, y1 = box
    height = min(style.char_height_mm * s, y1 - y0)
    cell, gap, group = style.char_width_mm * s, style.char_gap_mm * s, style.group_gap_mm * s
    mask, gaps = _text_mask(text, style.font, height, cell, gap, group)
    if mask.shape[1] > x1 - x0:
        k = (x1 - x0) / mask.shape[1]
        mask, gaps = _text_mask(text, style.font, height, cell * k, gap * k, group * k)
    x = x0 + (x1 - x0 - mask.shape[1]) / 2
    y = y0 + (y1 - y0 - mask.shape[0]) / 2
    off = max(1.0, 0.5 * s)  # embossed characters cast a thin shadow down and right
    _paint(canvas, mask * 0.35, x + off, y + off, (60, 60, 60))
    _paint(canvas, mask, x, y, style.ink)
    return [x + g for g in gaps]


def _line_mask(text: str, font: str, height: float) -> Mask:
    """Small print (band codes, state names): same cells, proportioned to the height."""
    return _text_mask(text, font, height, height * 0.72, height * 0.08, height * 0.5)[0]


# -- plate drawing -------------------------------------------------------------------------------


def _rounded_mask(h: int, w: int, r: float, inset: float = 0.0) -> Mask:
    """Anti-aliased rounded rectangle covering the image minus `inset` px, 0..1."""
    scale = 4  # supersample for smooth corners
    m = np.zeros((h * scale, w * scale), np.uint8)
    i, rr = round(inset * scale), max(1, round(r * scale))
    x0, y0, x1, y1 = i, i, w * scale - 1 - i, h * scale - 1 - i
    cv2.rectangle(m, (x0 + rr, y0), (x1 - rr, y1), 255, -1)
    cv2.rectangle(m, (x0, y0 + rr), (x1, y1 - rr), 255, -1)
    for cx, cy in ((x0 + rr, y0 + rr), (x1 - rr, y0 + rr), (x0 + rr, y1 - rr), (x1 - rr, y1 - rr)):
        cv2.circle(m, (cx, cy), rr, 255, -1)
    return cv2.resize(m, (w, h), interpolation=cv2.INTER_AREA).astype(np.float32) / 255.0


def _star(cx: float, cy: float, r: float) -> np.ndarray:
    ang = -np.pi / 2 + np.arange(10) * np.pi / 5
    rad = np.where(np.arange(10) % 2 == 0, r, r * 0.4)
    pts = np.stack([cx + rad * np.cos(ang), cy + rad * np.sin(ang)], axis=1)
    return np.round(pts * 16).astype(np.int32)


def _fill(canvas: Canvas, pts: np.ndarray, color: Color) -> None:
    """Anti-aliased polygon; `pts` carry 4 fractional bits."""
    cv2.fillPoly(canvas, [pts], tuple(float(c) for c in color), lineType=cv2.LINE_AA, shift=4)


def _rect(x0: float, y0: float, x1: float, y1: float) -> np.ndarray:
    return np.round(np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]]) * 16).astype(np.int32)


def _draw_band(canvas: Canvas, style: PlateStyle, s: float, inset: float, rng: np.random.Generator) -> None:
    h, w = canvas.shape[:2]
    bw = style.band_mm * s
    band_h = h if style.rows == 1 else h / 2
    if style.band in ("eu", "ua", "md"):
        blue = UA_BLUE if style.band == "ua" else EU_BLUE
        _fill(canvas, _rect(inset, inset, inset + bw, band_h - (inset if style.rows == 1 else 0)), blue)
        cx = inset + bw / 2
        if style.band == "eu":
            for k in range(12):
                a = 2 * np.pi * k / 12
                _fill(
                    canvas,
                    _star(cx + 0.27 * bw * np.cos(a), 0.33 * band_h + 0.27 * bw * np.sin(a), 0.06 * bw),
                    (0, 204, 255),
                )
        elif style.band == "ua":
            fw, fh = 0.7 * bw, 0.7 * bw * 2 / 3
            fy = 0.12 * band_h
            _fill(canvas, _rect(cx - fw / 2 - 0.5 * s, fy - 0.5 * s, cx + fw / 2 + 0.5 * s, fy + fh + 0.5 * s), WHITE)
            _fill(canvas, _rect(cx - fw / 2, fy, cx + fw / 2, fy + fh / 2), UA_BLUE)
            _fill(canvas, _rect(cx - fw / 2, fy + fh / 2, cx + fw / 2, fy + fh), UA_YELLOW)
        else:
            fw, fh = 0.72 * bw, 0.36 * bw
            fy = 0.14 * band_h
            for i, c in enumerate((MD_BLUE, MD_YELLOW, MD_RED)):
                _fill(canvas, _rect(cx - fw / 2 + i * fw / 3, fy, cx - fw / 2 + (i + 1) * fw / 3, fy + fh), c)
            cv2.ellipse(
                canvas,
                (round(cx), round(fy + fh / 2)),
                (max(1, round(fw / 14)), max(1, round(fh / 4))),
                0,
                0,
                360,
                (40, 90, 150),
                -1,
                cv2.LINE_AA,
            )
        code = style.band_code or str(rng.choice(EU_CODES))
        ch = 0.26 * band_h
        mask = _line_mask(code, style.font, ch)
        if mask.shape[1] > 0.85 * bw:
            mask = cv2.resize(mask, (round(0.85 * bw), mask.shape[0]), interpolation=cv2.INTER_AREA)
        _paint(canvas, mask, cx - mask.shape[1] / 2, band_h * 0.9 - ch - inset, WHITE)
    elif style.band == "br":
        _fill(canvas, _rect(inset, inset, w - inset, bw), (153, 51, 0))
        mask = _line_mask("BRASIL", "din", 0.55 * bw)
        _paint(canvas, mask, w / 2 - mask.shape[1] / 2, 0.25 * bw, WHITE)
        fx = w - inset - 0.12 * w  # flag: green field, yellow rhombus, blue disc
        _fill(canvas, _rect(fx, 0.22 * bw, fx + 0.09 * w, 0.82 * bw), (60, 150, 0))
        dx, dy = 0.045 * w, 0.3 * bw
        rhombus = np.array(
            [
                [fx + dx - dx * 0.8, 0.52 * bw],
                [fx + dx, 0.52 * bw - dy * 0.8],
                [fx + dx + dx * 0.8, 0.52 * bw],
                [fx + dx, 0.52 * bw + dy * 0.8],
            ]
        )
        _fill(canvas, np.round(rhombus * 16).astype(np.int32), (0, 220, 255))
        cv2.circle(canvas, (round(fx + dx), round(0.52 * bw)), max(1, round(dy * 0.4)), (120, 40, 0), -1, cv2.LINE_AA)
        _fill(canvas, _star(inset + 0.07 * w, 0.52 * bw, 0.22 * bw), WHITE)
    elif style.band == "br-city":
        mask = _line_mask(str(rng.choice(BR_CITIES)), "din", 0.5 * bw)
        _paint(canvas, mask, w / 2 - mask.shape[1] / 2, inset + 0.3 * bw, style.ink)
    elif style.band == "us":
        top = np.linspace(0.78, 1.0, round(bw * 1.6))[:, None, None]
        canvas[: top.shape[0]] *= np.concatenate([top, top * 0.97 + 0.03, np.ones_like(top)], axis=2)[:, :, ::-1]
        mask = _line_mask(str(rng.choice(US_STATES)), "gothic", 0.6 * bw)
        _paint(canvas, mask, w / 2 - mask.shape[1] / 2, inset + 0.3 * bw, (40, 30, 190))


def _text_boxes(
    style: PlateStyle, w: float, h: float, s: float, inset: float
) -> list[tuple[float, float, float, float]]:
    """Where each row of text goes, in px."""
    margin = 6 * s + inset
    band_left = inset + style.band_mm * s + 3 * s if style.band in ("eu", "ua", "md") else margin
    if style.rows == 2:
        return [(band_left, margin, w - margin, h / 2), (margin, h / 2, w - margin, h - margin)]
    if style.band in ("us", "br", "br-city"):
        top = style.band_mm * s + (2 * s if style.band == "br" else 0)
        return [(margin, top, w - margin, h - margin)]
    return [(band_left, margin, w - margin, h - margin)]


def _draw_bolts(canvas: Canvas, points: list[tuple[float, float]], s: float, rng: np.random.Generator) -> None:
    kind = int(rng.integers(0, 3))  # 0 bare steel, 1 white cap, 2 black cap
    r = 3.6 * s
    for x, y in points:
        base: Color = ((170, 170, 175), (236, 236, 236), (30, 30, 30))[kind]
        cv2.circle(canvas, (round(x), round(y)), round(r), tuple(float(c) * 0.6 for c in base), -1, cv2.LINE_AA)
        cv2.circle(canvas, (round(x), round(y)), round(r * 0.85), tuple(float(c) for c in base), -1, cv2.LINE_AA)
        cv2.circle(
            canvas,
            (round(x - r * 0.3), round(y - r * 0.3)),
            max(1, round(r * 0.25)),
            (250.0, 250.0, 250.0) if kind != 2 else (90.0, 90.0, 90.0),
            -1,
            cv2.LINE_AA,
        )
        if kind == 0:  # cross slot of a steel screw
            d = r * 0.55
            a = float(rng.uniform(0, np.pi))
            for t in (a, a + np.pi / 2):
                p, q = (x - d * np.cos(t), y - d * np.sin(t)), (x + d * np.cos(t), y + d * np.sin(t))
                cv2.line(
                    canvas,
                    (round(p[0]), round(p[1])),
                    (round(q[0]), round(q[1])),
                    (70.0, 70.0, 70.0),
                    max(1, round(0.5 * s)),
                    cv2.LINE_AA,
                )


def _draw_gap_marks(
    canvas: Canvas, gaps: list[float], cy: float, h: int, s: float, style: PlateStyle, marks: GapMark,
    rng: np.random.Generator,
) -> None:
    """Dashes in the group gaps, or an emblem (a coloured shield or disc, a US sticker or state badge)
    in the first one, centred on the row at height `cy`: not characters."""
    half = 0.35 * style.group_gap_mm * s
    for i, x in enumerate(gaps):
        if marks == "emblem" and i == 0:
            b, g, r_ = (int(c) for c in rng.uniform(30, 230, 3))
            color: Color = (b, g, r_)
            r = min(half * 1.2, 0.22 * h)
            if rng.random() < 0.5:
                cv2.circle(canvas, (round(x), round(cy)), round(r), color, -1, cv2.LINE_AA)
            else:
                shield = [
                    [x - r, cy - r], [x + r, cy - r], [x + r, cy + 0.3 * r], [x, cy + 1.2 * r], [x - r, cy + 0.3 * r]
                ]
                _fill(canvas, np.round(np.array(shield) * 16).astype(np.int32), color)
            cv2.circle(canvas, (round(x), round(cy)), max(1, round(0.4 * r)), (245.0, 245.0, 245.0), -1, cv2.LINE_AA)
        elif marks == "dash" or i > 0:
            _fill(canvas, _rect(x - half, cy - 2.5 * s, x + half, cy + 2.5 * s), style.ink)


def _draw_dealer_frame(canvas: Canvas, s: float, rng: np.random.Generator) -> None:
    """A dealer's plate frame: a dark strip along the bottom (and sometimes the top) with its name."""
    h, w = canvas.shape[:2]
    shade = float(rng.uniform(10, 60))
    for top in (False, True) if rng.random() < 0.4 else (False,):
        y0, y1 = (0.0, 14 * s) if top else (h - 18 * s, float(h))
        _fill(canvas, _rect(0, y0, w, y1), cast(Color, (shade, shade, shade)))  # float grey: cv2 takes it
        mask = _line_mask(str(rng.choice(US_FRAME_WORDS)), "gothic", 0.6 * (y1 - y0))
        if mask.shape[1] > 0.8 * w:
            mask = cv2.resize(mask, (round(0.8 * w), mask.shape[0]), interpolation=cv2.INTER_AREA)
        _paint(canvas, mask, w / 2 - mask.shape[1] / 2, y0 + 0.2 * (y1 - y0), (235, 235, 235))


def _bolt_points(
    style: PlateStyle, w: float, h: float, s: float, gaps: list[float], box: tuple[float, float, float, float]
) -> list[tuple[float, float]]:
    """Screws go where plates are drilled: in the gaps between groups, else near the ends."""
    if style.rows == 2:
        return [(0.3 * w, 0.05 * h + 3 * s), (0.7 * w, 0.05 * h + 3 * s)]
    if style.band in ("us", "br", "br-city"):
        y = (style.band_mm * s) / 2 if style.band != "br" else h - 4.5 * s
        return [(0.2 * w, y), (0.8 * w, y)]
    if len(gaps) >= 2:
        return [(gaps[0], h / 2), (gaps[-1], h / 2)]
    return [(box[0] + 0.03 * w, 0.14 * h), (box[2] - 0.03 * w, 0.14 * h)]


def render_plate(
    text: str,
    style: PlateStyle | str,
    rng: np.random.Generator,
    *,
    px_per_mm: float = 2.0,
    augmentations: Sequence[Augmentation] = (),
    surround: Color = (45, 45, 45),
) -> RenderedPlate:
    """Draw the plate `text` (as printed: spaces between groups, a newline between rows).

    The plate fills the image; `surround` shows only at the rounded corners until an augmentation
    (perspective) adds a margin. `augmentations` are applied in order with the same `rng`.
    """
    st = get_style(style)
    rows = tuple(r.strip().upper() for r in text.strip().split("\n"))
    if len(rows) != st.rows:
        raise ValueError(f"style {st.name} has {st.rows} row(s), got {len(rows)} in {text!r}")
    if not all(re.fullmatch(r"[A-Z0-9]+( [A-Z0-9]+)*", r) for r in rows):
        raise ValueError(f"plate text must be A-Z, 0-9 and single spaces: {text!r}")
    s = px_per_mm
    w, h = round(st.size_mm[0] * s), round(st.size_mm[1] * s)
    paper = 244 + rng.uniform(-8, 8, 3)  # a new plate is bright white, an old one yellowish grey
    paper[0] -= rng.uniform(0, 10)
    marks: GapMark = "none"
    if st.name == "EU":
        # The generic EU plate stands for all the countries without a style of their own, which
        # differ in exactly these: yellow plates (NL, LU, UK rear), red ink (BE), a dash or a coat
        # of arms between the groups (DE, AT, HR, SI, NL). Drawn only for this style, so the other
        # styles' renders (and the sample clips) do not change.
        if rng.random() < 0.2:
            paper = np.array([20.0, 190.0, 245.0]) + rng.uniform(-10, 10, 3)
        if rng.random() < 0.15:
            st = replace(st, ink=(40, 30, 190))
        marks = ("none", "dash", "emblem")[int(rng.choice(3, p=[0.4, 0.35, 0.25]))]
    elif st.name == "US":
        # Real US plates differ in ink and carry a sticker or badge between the groups (Louisiana's
        # pelican, county stickers): drawn for this style only, so the other styles' renders do not change.
        st = replace(st, ink=US_INKS[int(rng.integers(0, len(US_INKS)))])
        marks = ("none", "dash", "emblem")[int(rng.choice(3, p=[0.55, 0.1, 0.35]))]
        if marks == "emblem":
            st = replace(st, group_gap_mm=40)  # a sticker is about a character wide
    elif st.name == "BR1":
        # Grey private plates, red commercial ones with white characters; a dot between the groups.
        if rng.random() < 0.3:
            paper, st = np.array([55.0, 55.0, 145.0]) + rng.uniform(-20, 20, 3), replace(st, ink=(235, 235, 235))
        else:
            paper = np.full(3, rng.uniform(150, 215)) + rng.uniform(-6, 6, 3)
        marks = "dash"
    canvas = np.empty((h, w, 3), np.float32)
    canvas[:] = paper
    canvas *= (1 - 0.06 * np.linspace(0, 1, h))[:, None, None]  # film sheen: brighter at the top

    inset = 1.0 * s
    _draw_band(canvas, st, s, inset, rng)
    boxes = _text_boxes(st, w, h, s, inset)
    gaps = [_draw_text(canvas, row, box, st, s) for row, box in zip(rows, boxes, strict=True)]
    if marks != "none" and gaps[0]:
        row_centre = h / 2 if st.band not in ("us", "br-city") else (boxes[0][1] + boxes[0][3]) / 2
        _draw_gap_marks(canvas, gaps[0], row_centre, h, s, st, marks, rng)
    rim = _rounded_mask(h, w, 5 * s, inset) - _rounded_mask(h, w, 4 * s, inset + rng.uniform(1.0, 1.8) * s)
    canvas = canvas * (1 - rim[..., None]) + np.float32(20) * rim[..., None]
    if st.band == "us" and rng.random() < 0.4:
        _draw_dealer_frame(canvas, s, rng)
    if marks == "none" and rng.random() < 0.8:
        _draw_bolts(canvas, _bolt_points(st, w, h, s, gaps[0], boxes[0]), s, rng)
    canvas += rng.normal(0, 1.5, canvas.shape).astype(np.float32)

    alpha = _rounded_mask(h, w, 5 * s)
    image = canvas * alpha[..., None] + np.asarray(surround, np.float32) * (1 - alpha[..., None])
    plate = RenderedPlate(
        image=np.clip(image, 0, 255).astype(np.uint8),
        alpha=np.round(alpha * 255).astype(np.uint8),
        quad=np.array([[0, 0], [w, 0], [w, h], [0, h]], np.float32),
        label=plate_label("".join(rows)),
        rows=tuple(plate_label(r) for r in rows),
        style=st.name,
        country=st.country,
    )
    for step in augmentations:
        plate = step(plate, rng)
    return plate
