"""Our plate-trained CTC networks and EasyOCR's stock one, hosted by EasyOCR (anpr.ocr's interface).

- `PlateOcrReader`: `plate_ocr` (EasyOCR's `english_g2` architecture fine-tuned for plates) and
  `plate_ocr_small` (our small CRNN), trained by scripts/train_ocr.py (models/plate_ocr.md), loaded
  through EasyOCR's custom `recog_network` mechanism after their sha256 is verified, run on
  OpenVINO. The CCT's second opinion on crops it is unsure of (`ocr.second_opinion`), or the reader
  alone (`ocr.network: plate_ocr`).
- `EasyOcrReader`: EasyOCR's stock `english_g2`, for comparison.

The crop-to-line preprocessing (`line_image`) lives here, not in the training script, so training
and inference cannot drift apart.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from anpr.config import MODELS_DIR, OcrConfig
from anpr.models import easyocr_model_dir, enforce_offline, openvino_f32_config, plate_ocr_weights, sha256_of
from anpr.ocr import readable
from anpr.schema import PlateRead

ALNUM = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
NETWORKS = ("plate_ocr_small", "plate_ocr")  # read in this order: the small one first, ~5x cheaper
MIN_CHARS = 4  # shortest plate the grammars and the generic rule accept

# Input of the plate networks: gray lines 4x as wide as high, the crop stretched to fill them
# (stretching, not padding, keeps every character a similar size whatever the plate's aspect ratio).
# Each network reads at the height it was trained on (its yaml's imgH): plate_ocr_small 32 x 128,
# plate_ocr 48 x 192 (a 2:1 plate crop loses less of its glyphs' height: Q vs O, E vs F).
LINE_H = 32
LINE_W = 128


def line_width(height: int) -> int:
    """Width of a network line `height` px high (the 4:1 of LINE_W x LINE_H)."""
    return height * LINE_W // LINE_H


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


def line_image(gray: np.ndarray, two_rows: bool, height: int = LINE_H) -> np.ndarray:
    """The crop as one `height` x 4 `height` text line; a two-row plate's rows side by side.

    Unstacking in the image (rather than training the network on stacked rows) keeps one simple
    line reader for every plate and reads the rows in order: top row, then bottom row.
    """
    import cv2

    if two_rows and gray.shape[0] >= 4:
        s = row_split(gray)
        rows = [gray[:s], gray[s:]]
        rows = [cv2.resize(r, (max(1, round(r.shape[1] * height / r.shape[0])), height)) for r in rows]
        gray = np.hstack(rows)
    return cv2.resize(gray, (line_width(height), height), interpolation=cv2.INTER_AREA)


def to_batch(lines: list[np.ndarray]) -> np.ndarray:
    """uint8 lines -> float32 (N, 1, H, W) in [-1, 1], EasyOCR's convention."""
    return np.stack(lines).astype(np.float32)[:, None] / 127.5 - 1.0


@dataclass(frozen=True, slots=True)
class Decoded:
    text: str
    char_confidences: tuple[float, ...]

    @property
    def mean_confidence(self) -> float:
        return float(np.mean(self.char_confidences)) if self.char_confidences else 0.0

    def rank(self) -> tuple[bool, float]:
        """Plate-length reads first, then the surest."""
        return len(self.text) >= MIN_CHARS, self.mean_confidence


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


def _easyocr_reader(cfg: OcrConfig, network: str, model_dir: Path, **options: Any) -> Any:
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
        # in the same process would then read 32 px lines and lose most of its accuracy.
        stock_height = easyocr_module.imgH
        try:
            return easyocr.Reader(
                ["en"],
                gpu=False,
                model_storage_directory=str(model_dir),
                recog_network=network,
                download_enabled=False,
                quantize=cfg.quantize,
                verbose=False,
                **options,
            )
        finally:
            easyocr_module.imgH = stock_height


class PlateNetwork:
    """One plate network from models/, run on a batch of lines without EasyOCR's per-call overhead
    (`recognize()` builds a DataLoader per call, ~10 ms).

    On OpenVINO (`ocr.runtime`, ~4x faster here) it runs an export cached in `ocr.cache_dir`, made the
    first time from the float network EasyOCR builds: later starts load neither torch nor EasyOCR
    (~4 s of a cold `anpr read`). The export's name carries the digest of the weights, the
    architecture and its settings, so changed weights never reuse a stale one.
    """

    def __init__(self, cfg: OcrConfig, network: str) -> None:
        weights = plate_ocr_weights(MODELS_DIR, network)  # before EasyOCR unpickles it
        spec = yaml.safe_load((MODELS_DIR / f"{network}.yaml").read_text(encoding="utf-8"))
        self.height = int(spec["imgH"])  # the line height the network was trained on
        self.alphabet = ["[blank]", *spec["character_list"]]  # EasyOCR's CTCLabelConverter: blank is class 0
        self.threads = cfg.threads
        self.module: Any = None
        self.compiled: Any = None
        if cfg.runtime == "openvino":
            import openvino as ov

            model = ov.Core().read_model(self._export(cfg, network, weights))
            self.compiled = ov.Core().compile_model(
                model, "CPU", openvino_f32_config(INFERENCE_NUM_THREADS=cfg.threads)
            )
        else:
            self.module = self._easyocr_module(cfg, network)
        self.read([np.zeros((self.height, 1), np.uint8)], [False])  # the first inference sets up lazily

    @staticmethod
    def _easyocr_module(cfg: OcrConfig, network: str) -> Any:
        reader = _easyocr_reader(cfg, network, MODELS_DIR, user_network_directory=str(MODELS_DIR), detector=False)
        return reader.recognizer.eval()

    def _export(self, cfg: OcrConfig, network: str, weights: Path) -> Path:
        """The cached OpenVINO export of `network`, made from EasyOCR's float module if missing."""
        import hashlib

        import openvino as ov

        digest = hashlib.sha256(sha256_of(weights).encode())
        for suffix in (".py", ".yaml"):
            digest.update((MODELS_DIR / f"{network}{suffix}").read_bytes())
        xml = cfg.cache_dir / f"{network}-{digest.hexdigest()[:12]}" / f"{network}.xml"
        if xml.is_file():
            return xml
        import torch

        module = self._easyocr_module(cfg.model_copy(update={"quantize": False}), network)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # tracing warnings from torch, not about our inputs
            shape = [1, 1, self.height, line_width(self.height)]
            model = ov.convert_model(module, example_input=torch.zeros(*shape), input=[-1, *shape[1:]])
        part = xml.with_suffix(".partial.xml")  # renamed whole: a crash mid-write leaves no half export
        part.parent.mkdir(parents=True, exist_ok=True)
        ov.save_model(model, part, compress_to_fp16=False)
        part.with_suffix(".bin").replace(xml.with_suffix(".bin"))
        part.replace(xml)
        return xml

    def read(self, grays: list[np.ndarray], two_rows: list[bool]) -> list[Decoded]:
        """Each gray crop as one line of this network's height (two rows side by side where asked),
        decoded in one batch."""
        if not grays:
            return []
        lines = [line_image(g, t, self.height) for g, t in zip(grays, two_rows, strict=True)]
        return [ctc_greedy(p, self.alphabet) for p in self.probs(to_batch(lines))]

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
                return torch.softmax(self.module(torch.from_numpy(batch), None), dim=2).numpy()
        finally:
            torch.set_num_threads(threads)


class PlateOcrReader:
    """plate_ocr_small reads every line; plate_ocr reads the lines it is unsure of (under
    `ocr.second_sure`), and the surer read wins. A square-ish crop (under `ocr.two_row_aspect`) is
    also read as a two-row plate, rows side by side; that read wins when it contains the one-line
    read (which then saw one row only) or ranks higher (`Decoded.rank`)."""

    def __init__(self, cfg: OcrConfig) -> None:
        self.cfg = cfg
        self.small, self.big = (PlateNetwork(cfg, name) for name in NETWORKS)
        if self.small.alphabet != self.big.alphabet:
            raise ValueError(f"{' and '.join(NETWORKS)} must share one character_list (models/*.yaml)")

    def read(self, crop: np.ndarray) -> PlateRead | None:
        return self.read_batch([crop])[0]

    def read_batch(self, crops: list[np.ndarray]) -> list[PlateRead | None]:
        usable = [i for i, c in enumerate(crops) if readable(c)]
        grays = {i: to_gray(crops[i]) for i in usable}
        square = [i for i in usable if grays[i].shape[1] < self.cfg.two_row_aspect * grays[i].shape[0]]
        cuts = [(i, False) for i in usable] + [(i, True) for i in square]  # each crop's line read first
        per_crop: dict[int, list[Decoded]] = {i: [] for i in usable}
        for (i, _), d in zip(cuts, self.read_lines([grays[i] for i, _ in cuts], [t for _, t in cuts]), strict=True):
            per_crop[i].append(d)
        out: list[PlateRead | None] = [None] * len(crops)
        for i, reads in per_crop.items():
            best = self._pick(reads)
            if best.text and best.mean_confidence >= self.cfg.min_confidence:
                out[i] = PlateRead(best.text, float(np.prod(best.char_confidences)), best.char_confidences)
        return out

    def read_lines(self, grays: list[np.ndarray], two_rows: list[bool]) -> list[Decoded]:
        """The small network's reads, and the big one's where the small one is unsure and it is surer."""
        reads = self.small.read(grays, two_rows)
        unsure = [i for i, d in enumerate(reads) if d.mean_confidence < self.cfg.second_sure]
        if unsure:
            again = self.big.read([grays[i] for i in unsure], [two_rows[i] for i in unsure])
            for i, d in zip(unsure, again, strict=True):
                reads[i] = max(d, reads[i], key=lambda d: d.mean_confidence)
        return reads

    @staticmethod
    def _pick(reads: list[Decoded]) -> Decoded:
        """The crop's one-line read, or its two-row read when that holds the line read or ranks higher."""
        line, *two = reads
        holding = [r for r in two if line.text in r.text and len(r.text) >= MIN_CHARS]
        return max(holding or reads, key=Decoded.rank)


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
        self.reader: Any = _easyocr_reader(cfg, "english_g2", easyocr_model_dir(), detector=cfg.readtext)

    def read_batch(self, crops: list[np.ndarray]) -> list[PlateRead | None]:
        return [self.read(c) for c in crops]

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
