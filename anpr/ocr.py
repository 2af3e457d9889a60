"""Plate OCR: one small interface, EasyOCR-loaded networks behind it.

`PlateReader.read(crop)` takes a padded plate crop and returns the raw characters it sees with
per-character confidences; grammar checks happen later (anpr.plates).

- `PlateOcrReader` (default): the plate-trained networks in models/ (`plate_ocr`, english_g2's
  architecture fine-tuned, `plate_ocr_small`, our CRNN, and voters for unsure lines; trained by
  scripts/train_ocr.py), each loaded through EasyOCR's custom `recog_network` mechanism after its
  sha256 is verified and run on OpenVINO. It reads the whole padded crop as one text line, no
  CRAFT: the networks were trained on such crops, which skips CRAFT's ~130 ms and its failure to
  find low, blurred lines.
  Two-row plates are unstacked into one line first (`line_image`).
- `EasyOcrReader`: a stock EasyOCR network (`english_g2`), kept for comparison.

The crop-to-line preprocessing lives here, not in the training script, so training and inference
cannot drift apart.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar

import numpy as np
import yaml

from anpr.config import MODELS_DIR, OcrConfig
from anpr.models import PLATE_OCR, easyocr_model_dir, enforce_offline, openvino_f32_config, plate_ocr_weights
from anpr.schema import PlateRead

ALNUM = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
STOCK_NETWORKS = frozenset({"english_g2"})  # EasyOCR's own; anything else is a network in models/
SECOND_NETWORK = "plate_ocr_small"  # read beside plate_ocr when ocr.second_network is on
MIN_CHARS = 4  # shortest plate the grammars and the generic rule accept
# Glyphs on a crop's one row (`TextRow.blobs`) from which its sure line read outranks a two-row read of
# other text. Not fewer: on the held-out two-row EU crops where one row was found (the other row's
# glyphs of another size), it held 4 or 5; on the one-row US crops read both ways, 5 to 7.
ONE_ROW_GLYPHS = 6

# Input of the plate networks: gray lines 4x as wide as high, the crop stretched to fill them
# (stretching, not padding, keeps every character a similar size whatever the plate's aspect ratio).
# Each network reads at the height it was trained on (its yaml's imgH): plate_ocr_small 32 x 128
# (glyph strokes stay >= 2 px; 32 CTC columns), plate_ocr 48 x 192 since session 12 (a 2:1 plate
# crop loses less of its glyphs' height: Q vs O, E vs F).
LINE_H = 32
LINE_W = 128


def line_width(height: int) -> int:
    """Width of a network line `height` px high (the 4:1 of LINE_W x LINE_H)."""
    return height * LINE_W // LINE_H

# Margins around a levelled row of glyphs, in glyph heights (`level_row`): a plate's characters are
# about half its height, so 0.6 above and below frames the row as the plate's own border does; 1.0
# at the ends also keeps a glyph the row search missed (merged into the band or the frame).
ROW_MARGIN_X, ROW_MARGIN_Y = 1.0, 0.6


class PlateReader(Protocol):
    def read(self, crop: np.ndarray) -> PlateRead | None:
        """Characters on the plate in `crop` (BGR), or None when nothing legible is there."""
        ...


def to_gray(crop: np.ndarray) -> np.ndarray:
    import cv2

    return crop if crop.ndim == 2 else cv2.cvtColor(crop, cv2.COLOR_BGR2GRAY)


def row_split(gray: np.ndarray) -> int:
    """Row between the two text rows of a two-row plate.

    Row-wise contrast (std) is high across glyphs and low in the gap between rows, whatever the
    plate's colours; the search stays in the middle 30-70 % where the gap is on every two-row
    layout, so a dark border or bolt row cannot win.
    """
    h = gray.shape[0]
    profile = gray.astype(np.float32).std(axis=1)
    profile = np.convolve(profile, np.ones(3, np.float32) / 3, mode="same")
    lo, hi = round(0.3 * h), max(round(0.7 * h), round(0.3 * h) + 1)
    return lo + int(np.argmin(profile[lo:hi]))


def text_band(gray: np.ndarray, height: int) -> tuple[int, int]:
    """Rows [top, bottom) of the `height`-row window richest in vertical edges: a row of glyphs.

    Detector boxes around small plates are often two or three plates tall (ua-plates photos);
    characters are dense vertical strokes, which bumpers, sky and body panels are not.
    """
    import cv2

    energy = np.abs(cv2.Sobel(gray, cv2.CV_32F, 1, 0, ksize=3)).sum(axis=1)
    cumulative = np.concatenate([[0.0], np.cumsum(energy)])
    top = int(np.argmax(cumulative[height:] - cumulative[:-height]))
    return top, top + height


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


def _warped(gray: np.ndarray, m: np.ndarray) -> np.ndarray:
    """`gray` through the 2x3 affine `m`, the size kept, edges repeated."""
    import cv2

    h, w = gray.shape
    return cv2.warpAffine(gray, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def _sheared(
    gray: np.ndarray, x_per_y: float = 0.0, y_per_x: float = 0.0, about: tuple[float, float] = (0.0, 0.0)
) -> np.ndarray:
    """`gray` sheared about the point `about` (x, y): in x by `x_per_y` px per px of height (glyphs
    lean), or in y by `y_per_x` px per px of width (rows slope); the size is kept, edges repeated."""
    cx, cy = about
    return _warped(gray, np.array([[1, x_per_y, -x_per_y * cy], [y_per_x, 1, -y_per_x * cx]], dtype=np.float32))


def level_row(gray: np.ndarray, row: TextRow) -> np.ndarray:
    """The crop sheared so `row` is level, cut around the row with margins of ROW_MARGIN_X/Y glyph
    heights: roughly a plate's own frame around its characters, as in the crops it was trained on.

    Shear, not rotation: a plate seen from the side keeps its vertical strokes vertical, only its
    rows slope; rotating them level would slant every glyph.
    """
    h, w = gray.shape
    level = _sheared(gray, y_per_x=-row.slope, about=((row.x0 + row.x1) / 2, 0))
    mx, my = ROW_MARGIN_X * row.height, ROW_MARGIN_Y * row.height
    x0, x1 = max(0, int(row.x0 - mx)), min(w, int(np.ceil(row.x1 + mx)))
    y0, y1 = max(0, int(row.y - row.height / 2 - my)), min(h, int(np.ceil(row.y + row.height / 2 + my)))
    return level[y0:y1, x0:x1]


# Candidate italic slants (x shift per px of height) for `slant_of`: up to ~22 degrees either way.
SLANTS = np.linspace(-0.4, 0.4, 17)
SLANT_H = 40


def slant_of(gray: np.ndarray) -> float:
    """The x-shear that makes the glyphs' vertical strokes vertical: the one whose strokes stack up
    into the sharpest column profile (largest variance of the column sums of horizontal gradient).

    Measured on a copy SLANT_H px tall (the shear is per px of height: it does not change with
    scale). The x-gradient of a sheared image is the sheared x-gradient, so the gradient is taken
    once and each candidate only shifts its rows (by whole pixels: enough to rank the candidates).
    """
    import cv2

    h, w = gray.shape
    if h > SLANT_H:
        gray = cv2.resize(gray, (max(2, round(w * SLANT_H / h)), SLANT_H), interpolation=cv2.INTER_AREA)
        h, w = gray.shape
    pad = int(np.ceil(float(np.abs(SLANTS).max()) * h / 2)) + 1
    grad = np.pad(np.abs(cv2.Sobel(gray, cv2.CV_32F, 1, 0, ksize=3)), ((0, 0), (pad, pad)))
    shifts = np.rint(np.outer(SLANTS, np.arange(h) - h / 2)).astype(np.intp)  # (slants, rows)
    cols = np.clip(np.arange(w + 2 * pad)[None, None, :] - shifts[:, :, None], 0, w + 2 * pad - 1)
    sums = grad[np.arange(h)[None, :, None], cols].sum(axis=1)  # (slants, columns)
    return float(SLANTS[int(np.argmax(sums.var(axis=1)))])


def deslant(gray: np.ndarray) -> np.ndarray:
    """The crop with its glyphs upright again.

    A plate seen from the side and from above (or by a rolled camera) leans as well as slopes; the
    training renders barely lean, and a leaning 5 reads as a 3 (ua-plates `25.jpeg`).
    """
    slant = slant_of(gray)
    return _sheared(gray, x_per_y=slant, about=(0, gray.shape[0] / 2)) if slant else gray


def line_image(gray: np.ndarray, two_rows: bool, split: int | None = None, height: int = LINE_H) -> np.ndarray:
    """The crop as one `height` x 4 `height` text line (LINE_H x LINE_W by default); a two-row
    plate's rows are put side by side, cut at `split` (default: `row_split`).

    Unstacking in the image (rather than training the network on stacked rows) keeps one simple
    line reader for every plate and reads the rows in order: top row, then bottom row.
    """
    import cv2

    if two_rows and gray.shape[0] >= 4:
        s = row_split(gray) if split is None else split
        rows = [gray[:s], gray[s:]]
        rows = [cv2.resize(r, (max(1, round(r.shape[1] * height / r.shape[0])), height)) for r in rows]
        gray = np.hstack(rows)
    return cv2.resize(gray, (line_width(height), height), interpolation=cv2.INTER_AREA)


def to_batch(lines: list[np.ndarray]) -> Any:
    """uint8 LINE_H x LINE_W lines -> float tensor (N, 1, H, W) in [-1, 1], EasyOCR's convention."""
    import torch

    x = np.stack(lines).astype(np.float32)[:, None] / 127.5 - 1.0
    return torch.from_numpy(x)


@dataclass(frozen=True, slots=True)
class LineCut:
    """A gray crop to read as one line, and how (`line_image`'s arguments): each network makes the
    line at its own height."""

    gray: np.ndarray
    two_rows: bool = False
    split: int | None = None
    # The glyph band of the same crop (`text_band`): if this line goes to the vote, the band's reads
    # join it (`PlateOcrReader.read_lines`).
    band: LineCut | None = None

    def line(self, height: int) -> np.ndarray:
        return line_image(self.gray, self.two_rows, self.split, height)


@dataclass(frozen=True, slots=True)
class Decoded:
    text: str
    char_confidences: tuple[float, ...]

    @property
    def mean_confidence(self) -> float:
        return float(np.mean(self.char_confidences)) if self.char_confidences else 0.0


# Zooms of an unsure line read again for the vote (`PlateOcrReader.read_lines`): they move the glyphs
# near the line's ends by up to ~5 px (a third of a glyph), so the CTC columns fall differently
# across them. The first pair tried, not tuned.
VOTE_SCALES = (0.92, 1.08)


def scaled(line: np.ndarray, scale: float) -> np.ndarray:
    """`line` zoomed about its centre, same size, edges repeated."""
    h, w = line.shape
    c = (1 - scale) / 2
    return _warped(line, np.array([[scale, 0, c * w], [0, scale, c * h]], dtype=np.float32))


def vote(reads: list[Decoded]) -> Decoded:
    """The text with the highest summed mean confidence over `reads`, as its surest read: two
    middling reads that agree beat one confident outlier. A text read only once never replaces
    `reads[0]` (the read being checked): among noise reads of a crop with no plate every text is
    read once, and the surest of them would pass as a plate (measured: false reads on plate-free
    scenes 4 -> 7 of 500 without this rule)."""
    totals: dict[str, float] = {}
    for d in reads:
        totals[d.text] = totals.get(d.text, 0.0) + d.mean_confidence
    winner = max(totals, key=lambda t: totals[t])
    if sum(d.text == winner for d in reads) < 2:
        return reads[0]
    return max((d for d in reads if d.text == winner), key=lambda d: d.mean_confidence)


def ctc_greedy(probs: np.ndarray, alphabet: list[str]) -> Decoded:
    """Best path of one (columns, classes) softmax: collapse repeats, drop blanks (class 0).

    A character's confidence is the highest probability over the run of columns that emitted
    it: the column where the network was surest of that glyph.
    """
    best = probs.argmax(axis=1)
    text: list[str] = []
    confs: list[float] = []
    prev = 0
    for col, k in enumerate(best):
        k = int(k)
        if k != 0 and k != prev:
            text.append(alphabet[k])
            confs.append(float(probs[col, k]))
        elif k != 0:
            confs[-1] = max(confs[-1], float(probs[col, k]))
        prev = k
    return Decoded("".join(text), tuple(confs))


def _easyocr_reader(cfg: OcrConfig, model_dir: Path, **options: Any) -> Any:
    """An English `easyocr.Reader` on CPU from verified weights in `model_dir`, never downloading.

    EasyOCR 1.7.2 triggers torch deprecation warnings (quantization, DataLoader) on every start;
    they are noise to an operator and say nothing about our inputs.
    """
    enforce_offline()
    warnings.filterwarnings("ignore", message="'pin_memory' argument", category=UserWarning)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import easyocr
        import easyocr.easyocr as easyocr_module

        # EasyOCR keeps the stock recogniser's input height in a module global, and loading a custom
        # network overwrites it with the network's own (`global imgH` in easyocr.py): a stock reader
        # in the same process then reads 32 px lines and loses most of its accuracy (measured: BR
        # 0.399 -> 0.169). Our network gets its lines from `line_image`, never from that global.
        stock_height = easyocr_module.imgH
        try:
            return easyocr.Reader(
                ["en"],
                gpu=False,
                model_storage_directory=str(model_dir),
                recog_network=cfg.network,
                download_enabled=False,
                quantize=cfg.quantize,
                verbose=False,
                **options,
            )
        finally:
            easyocr_module.imgH = stock_height


def _openvino_network(module: Any, threads: int, height: int) -> Any:
    """`module` (the network EasyOCR built) converted to OpenVINO in memory, for batches of lines.

    Why: the same weights run ~4x faster than on torch on this CPU (plate_ocr_small's forward pass of
    one line 1.1 vs 4.5 ms); the detector already runs on OpenVINO, with the same settings.
    """
    import openvino as ov
    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracing warnings from torch, not about our inputs
        shape = [1, 1, height, line_width(height)]
        model = ov.convert_model(module, example_input=torch.zeros(*shape), input=[-1, *shape[1:]])
    return ov.Core().compile_model(model, "CPU", openvino_f32_config(INFERENCE_NUM_THREADS=threads))


class PlateNetwork:
    """One plate network from models/, loaded (and int8-quantized on torch) by EasyOCR, run on a batch
    of lines without EasyOCR's per-call overhead: `recognize()` builds a DataLoader per call (~10 ms,
    shared/NOTES.md). On OpenVINO the float network EasyOCR built is converted in memory."""

    def __init__(self, cfg: OcrConfig, network: str) -> None:
        plate_ocr_weights(MODELS_DIR, network)  # before EasyOCR unpickles it
        on_openvino = cfg.runtime == "openvino"
        if on_openvino:
            cfg = cfg.model_copy(update={"quantize": False})  # OpenVINO converts the float network
        cfg = cfg.model_copy(update={"network": network})
        self.threads = cfg.threads
        self.reader: Any = _easyocr_reader(cfg, MODELS_DIR, user_network_directory=str(MODELS_DIR), detector=False)
        self.reader.recognizer.eval()
        self.alphabet: list[str] = list(self.reader.converter.character)
        # The line height the network was trained on (its yaml's imgH; EasyOCR keeps it only in a global).
        self.height = int(yaml.safe_load((MODELS_DIR / f"{network}.yaml").read_text(encoding="utf-8"))["imgH"])
        self.compiled: Any = None
        if on_openvino:
            self.compiled = _openvino_network(self.reader.recognizer, cfg.threads, self.height)
        # One read at load: the first inference of a compiled model is slow (lazy set-up), and a lane's
        # first car must not pay for it while its frames pile up.
        self.read([LineCut(np.zeros((self.height, 1), np.uint8))])

    def read(self, cuts: list[LineCut], scales: tuple[float, ...] = (1.0,)) -> list[Decoded]:
        """Each cut as a line of this network's height, zoomed by each of `scales` (cut by cut),
        decoded in one batch."""
        lines = [c.line(self.height) for c in cuts]
        lines = [line if s == 1.0 else scaled(line, s) for line in lines for s in scales]
        return [ctc_greedy(p, self.alphabet) for p in self.probs(to_batch(lines).numpy())]

    def probs(self, batch: np.ndarray) -> np.ndarray:
        """(lines, columns, classes) character probabilities of a `to_batch` array."""
        if self.compiled is not None:
            scores = self.compiled(batch)[0]
            e = np.exp(scores - scores.max(axis=2, keepdims=True))
            return np.asarray(e / e.sum(axis=2, keepdims=True))
        import torch

        threads = torch.get_num_threads()
        torch.set_num_threads(self.threads)
        try:
            with torch.inference_mode():
                return torch.softmax(self.reader.recognizer(torch.from_numpy(batch), None), dim=2).numpy()
        finally:
            torch.set_num_threads(threads)


class PlateOcrReader:
    """The plate-trained networks from models/: plate_ocr, plate_ocr_small as a second opinion, and
    the voters (`ocr.voters`) that settle the lines both are unsure of.

    Per line, the surer decode (higher mean character confidence) wins: the big network
    (english_g2's architecture) reads far more European plates, the small one more of the Brazilian
    crops it was first trained on (models/plate_ocr.md, Metrics).
    """

    def __init__(self, cfg: OcrConfig) -> None:
        self.cfg = cfg
        if cfg.network != PLATE_OCR.name.removesuffix(".pth"):
            raise ValueError(f"no pinned checksum for network {cfg.network!r}; add it to anpr/models.py")
        self.networks = [PlateNetwork(cfg, cfg.network)]
        if cfg.second_network:
            self.networks.append(PlateNetwork(cfg, SECOND_NETWORK))
        self.voters = [PlateNetwork(cfg, name) for name in cfg.voters]
        self.alphabet = self.networks[0].alphabet
        if any(n.alphabet != self.alphabet for n in self.networks + self.voters):
            names = [cfg.network, *([SECOND_NETWORK] if cfg.second_network else []), *cfg.voters]
            raise ValueError(f"{', '.join(names)} must share one character_list (models/*.yaml)")
        self.max_slope = float(np.tan(np.radians(cfg.level_above_deg)))

    def read_lines(self, cuts: list[LineCut]) -> list[Decoded]:
        """Decode a batch of line cuts (one forward pass per network, each at its own line height).

        With the second network, it (the small, ~5x cheaper one) reads every line first, and only the
        lines it is not sure of (mean character confidence under `ocr.second_sure`) are read by
        plate_ocr too, the surer read winning: about half the lines skip the big network. Lines
        still unsure (under `ocr.vote_below`) are read zoomed (`VOTE_SCALES`) by every network, and
        as they are and zoomed by the voters (`ocr.voters`: networks trained to err elsewhere), and
        the reads vote (`vote`): one more forward pass per network for all of them together.

        A line that goes to the vote with a `band` (the glyph band of its crop) has the band read by
        every network and voter too, as it is and zoomed, and those reads join its vote (one more
        forward pass per network, the voters' in the same batch): a dealer frame's print above and
        below the glyphs, squeezed into the line with them, misleads the whole-crop reads
        (openalpr-us `5ZUC921` read `5ZUC221`; models/plate_ocr.md, Inference recipe).
        """
        if len(self.networks) == 1:
            reads = self.networks[0].read(cuts)
        else:
            main, small = self.networks
            reads = small.read(cuts)
            unsure = [i for i, d in enumerate(reads) if d.mean_confidence < self.cfg.second_sure]
            if unsure:
                for i, d in zip(unsure, main.read([cuts[i] for i in unsure]), strict=True):
                    reads[i] = max(d, reads[i], key=lambda d: d.mean_confidence)
        # Still unsure: read the line zoomed in and out by every network, as it is and zoomed by the
        # voters, its band too, and let the reads vote.
        unsure = [i for i, d in enumerate(reads) if d.mean_confidence < self.cfg.vote_below]
        if unsure:
            pools = {i: [reads[i]] for i in unsure}
            lines = [(cuts[i], pools[i]) for i in unsure]
            bands = [(band, pools[i]) for i in unsure if (band := cuts[i].band) is not None]
            every = (1.0, *VOTE_SCALES)
            jobs = [(n, lines, VOTE_SCALES) for n in self.networks] + [(n, lines + bands, every) for n in self.voters]
            jobs += [(n, bands, every) for n in self.networks if bands]
            for network, work, scales in jobs:
                again = network.read([cut for cut, _ in work], scales)  # cut by cut, each at every scale
                for k, (_, pool) in enumerate(work):
                    pool += again[k * len(scales) : (k + 1) * len(scales)]
            for i in unsure:
                reads[i] = vote(pools[i])
        return reads

    def read(self, crop: np.ndarray) -> PlateRead | None:
        if crop.size == 0 or min(crop.shape[:2]) < 2:
            return None
        as_cut = to_gray(crop)
        row, split = glyph_rows(as_cut)
        gray, levelled = as_cut, False
        if row is not None and abs(row.slope) >= self.max_slope:
            # A plate seen from the side: stretched to the network's 4:1 line as it is, its sloping
            # row would be squashed into a diagonal smear; read it levelled instead.
            cut = level_row(gray, row)
            if min(cut.shape) >= 2:
                gray, levelled = cut, True
        gray = deslant(gray)
        h, w = gray.shape
        # The band of rows richest in vertical edges (glyph strokes): the glyph row alone, if the crop
        # is a loose detector box two or three plates tall or a plate in a dealer's frame.
        band_rows = round(w / self.cfg.band_aspect)
        band = LineCut(gray[slice(*text_band(gray, band_rows))]) if 4 <= band_rows < h else None
        cuts = [LineCut(gray, band=band)]
        # A square-ish crop may be a two-row plate (or a ~2:1 US plate): read it both ways in one
        # batch. Read as one line, a two-row plate often gives its bigger row alone, confidently.
        if w < self.cfg.two_row_aspect * h:
            cuts.append(LineCut(gray, two_rows=True))
            if split is not None:  # found on the crop as cut: a two-row crop is never levelled, deslant moves only x
                cuts.append(LineCut(gray, two_rows=True, split=split))
        reads = self.read_lines(cuts)
        best = self._pick(reads, row)
        if not self._sure(best) and band is not None:
            # Unsure: read the band alone, as a candidate of its own.
            best = max([best, *self.read_lines([band])], key=self._rank)
        if best.mean_confidence < self.cfg.retry_below:
            # Still unsure: the row or the slant may have been misjudged (a badge between the glyph
            # groups, a frame edge), or a row flatter than level_above_deg may read better levelled
            # after all. Read the crop as cut and, if it was not levelled, levelled; the surest wins.
            extra = [] if gray is as_cut else [LineCut(as_cut)]
            if row is not None and not levelled:
                upright = deslant(level_row(as_cut, row))
                if min(upright.shape) >= 2:
                    extra.append(LineCut(upright))
            if extra:
                best = max([best, *self.read_lines(extra)], key=self._rank)
        if not best.text or best.mean_confidence < self.cfg.min_confidence:
            return None
        return PlateRead(
            text=best.text, confidence=float(np.prod(best.char_confidences)), char_confidences=best.char_confidences
        )

    def _pick(self, reads: list[Decoded], row: TextRow | None) -> Decoded:
        """Which read of the crop's first cuts (as one line, then as two rows) to keep: the best
        ranked (`_rank`), except that

        - a two-row read that contains the one-line read wins: the line read saw one of the rows;
        - failing that, a sure one-line read wins when the glyphs stand in one long row
          (`ONE_ROW_GLYPHS`) with none of their size above or below: a longer two-row read of other
          text took a state name or a dealer's line for a row (openalpr-us `DCK6344` read `TEXAS634`).
        """
        line = reads[0]
        holding = [r for r in reads[1:] if line.text in r.text and len(r.text) >= MIN_CHARS]
        if holding:
            return max(holding, key=self._rank)
        if row is not None and row.blobs >= ONE_ROW_GLYPHS and self._sure(line):
            return line
        return max(reads, key=self._rank)

    def _sure(self, d: Decoded) -> bool:
        """Plate-length and read with at least `ocr.retry_below` mean confidence: kept without retries."""
        return len(d.text) >= MIN_CHARS and d.mean_confidence >= self.cfg.retry_below

    def _rank(self, d: Decoded) -> tuple[bool, bool, int, float]:
        """Order candidate reads: a plate-length read first; among those read with at least
        `ocr.retry_below` confidence the longest (a row read alone is shorter), else the surest.
        For a plate-length read the first two keys together are `_sure`."""
        confident = d.mean_confidence >= self.cfg.retry_below
        return len(d.text) >= MIN_CHARS, confident, len(d.text) if confident else 0, d.mean_confidence


def _line_geometry(box: Any) -> tuple[float, float, float]:
    """(height, top, left) of an EasyOCR text-line polygon."""
    pts = np.asarray(box, dtype=np.float32)
    return float(pts[:, 1].max() - pts[:, 1].min()), float(pts[:, 1].min()), float(pts[:, 0].min())


class EasyOcrReader:
    """Stock EasyOCR with the recipe measured best on real plates (shared/NOTES.md).

    CRAFT finds text lines inside the crop; lines shorter than `min_line_height` x the tallest are
    dropped (country band, dealer frame, US state name); the rest are read top-to-bottom, then
    left-to-right, so a two-line plate comes out in reading order.
    """

    def __init__(self, cfg: OcrConfig) -> None:
        self.cfg = cfg
        self.reader: Any = _easyocr_reader(cfg, easyocr_model_dir(), detector=cfg.readtext)

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
    """The stock EasyOCR recipe for `english_g2`, the plate-trained fast path otherwise."""
    if cfg.network in STOCK_NETWORKS:
        return EasyOcrReader(cfg)
    return PlateOcrReader(cfg)
