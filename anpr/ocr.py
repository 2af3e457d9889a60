"""Plate OCR: one small interface, the CCT network behind it by default.

`PlateReader.read_batch(crops)` takes plate crops (BGR, as the detector boxed them) and returns,
per crop, the raw characters seen with per-character confidences and, where the network names one,
the plate's country; grammar checks happen later (anpr.plates).

- `CctReader` (default, `ocr.network: cct`): fast-plate-ocr's CCT-XS v2 global network (MIT,
  models/README.md), trained on real plates of 65+ countries and fine-tuned here on our cameras'
  training crops (models/cct_xs_v2_anpr.onnx), on OpenVINO. One- and two-row plates read alike; a
  region head names the country. A crop it is unsure of is read again (gray-stretched, and with a
  margin) and the three reads are fused slot by slot, then, with `ocr.second_opinion`, read by our
  plate-trained networks (anpr.ocr_networks), whose read wins where it is surer.
- `plate_ocr` and `english_g2` (anpr.ocr_networks): our EasyOCR-hosted networks alone, and EasyOCR's
  stock English network, kept selectable for comparison.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any, Protocol

import numpy as np
import yaml

from anpr.config import MODELS_DIR, OcrConfig
from anpr.detect import compile_cache
from anpr.models import CCT_OCR_CONFIG, CCT_OCR_TUNED, ModelFile, openvino_f32_config, verify_model_file
from anpr.schema import PlateRead


class PlateReader(Protocol):
    def read_batch(self, crops: list[np.ndarray]) -> list[PlateRead | None]:
        """Per crop (BGR or gray), the characters on its plate, or None when nothing legible is there."""
        ...


def readable(crop: np.ndarray) -> bool:
    """At least 2 x 2 pixels: anything smaller is no crop to read (and breaks resizing)."""
    return bool(crop.size) and min(crop.shape[:2]) >= 2


def mean_confidence(read: PlateRead | None) -> float:
    return float(np.mean(read.char_confidences)) if read and read.char_confidences else 0.0


def sure(read: PlateRead | None, unsure_below: float) -> bool:
    """Every character read with at least `unsure_below`: nothing left to read again."""
    return read is not None and bool(read.char_confidences) and min(read.char_confidences) >= unsure_below


def gray_stretched(crop: np.ndarray) -> np.ndarray:
    """The crop in gray, its 1st..99th percentile stretched to 0..255, as 3 channels.

    Why: night IR and dusk crops are dim and flat (br-plate-crops' last camera hours) and the CCT
    reads them far worse than daylight ones: read instead of the colour crop, this read BR 708 -> 737
    of the 801 training-split crops (which the CCT never saw), but US 135 -> 133 of 155 and EU 1007 ->
    1004 of 1049, so it is a second view of an unsure crop (`VIEWS`), not the first read.
    """
    import cv2

    gray = crop if crop.ndim == 2 else cv2.cvtColor(crop, cv2.COLOR_BGR2GRAY)
    lo, hi = np.percentile(gray, (1, 99))
    stretched = np.clip((gray.astype(np.float32) - lo) * (255.0 / max(float(hi - lo), 1.0)), 0, 255)
    return cv2.cvtColor(stretched.astype(np.uint8), cv2.COLOR_GRAY2BGR)


def with_margin(crop: np.ndarray) -> np.ndarray:
    """`gray_stretched` with 8 % of the crop's size added around it (edges repeated): a tight crop
    that cuts into the first or last glyph reads differently with room around it."""
    import cv2

    h, w = crop.shape[:2]
    dy, dx = round(0.08 * h), round(0.08 * w)
    return gray_stretched(cv2.copyMakeBorder(crop, dy, dy, dx, dx, cv2.BORDER_REPLICATE))


# The other views of a crop the CCT is unsure of, read and fused with the first read (the colour
# crop as it is). Chosen on the training splits and training photos, which the CCT never saw, when
# the views' texts were voted on: with these two views BR 708 -> 735 of 801 crops, US 135 -> 137
# of 155, EU 1007 -> 1018 of 1049, and the 155 openalpr-us training photos read 130 (a third view,
# the crop trimmed by 6 %, lost a US crop; CLAHE lost US and EU reads; the gray-stretched crop as
# the first read: 128 photos).
VIEWS = (gray_stretched, with_margin)


def fuse(views: np.ndarray) -> np.ndarray:
    """Slot probabilities of several views of one crop (views, slots, symbols) -> one (slots, symbols):
    per slot, the normalised geometric mean of the views' probabilities.

    Why not a vote on the views' texts: each view may be unsure at another slot, and a product lets
    the views that saw a slot clearly decide it, character by character. Chosen on the training
    crops, read by the released network, which never saw them: exact reads BR 740 -> 747 of 801,
    US 137 -> 138 of 155, EU 1016 -> 1023 of 1049 against the text vote (the arithmetic mean of the
    probabilities: 743, 138, 1017).
    """
    log = np.log(np.clip(views, 1e-9, None)).mean(axis=0)
    p = np.exp(log - log.max(axis=-1, keepdims=True))
    return np.asarray(p / p.sum(axis=-1, keepdims=True))


# The region head names countries in English (cct_xs_v2_global_plate_config.yaml); events and the
# grammars speak ISO 3166 alpha-2. A fixed table, not a name-lookup library: the names are the
# network's own, change only with a new (re-pinned) model, and a test checks that every one maps.
REGION_ISO = {
    "Albania": "AL", "Andorra": "AD", "Argentina": "AR", "Armenia": "AM", "Australia": "AU", "Austria": "AT",
    "Azerbaijan": "AZ", "Bahrain": "BH", "Belarus": "BY", "Belgium": "BE", "Bosnia and Herzegovina": "BA",
    "Brazil": "BR", "Bulgaria": "BG", "Cambodia": "KH", "Canada": "CA", "Croatia": "HR", "Cyprus": "CY",
    "Czech Republic": "CZ", "Denmark": "DK", "Estonia": "EE", "Finland": "FI", "France": "FR", "Georgia": "GE",
    "Germany": "DE", "Gibraltar": "GI", "Greece": "GR", "Guernsey": "GG", "Hungary": "HU", "Iceland": "IS",
    "Indonesia": "ID", "Ireland": "IE", "Israel": "IL", "Italy": "IT", "Latvia": "LV", "Liechtenstein": "LI",
    "Lithuania": "LT", "Luxembourg": "LU", "Malaysia": "MY", "Malta": "MT", "Mexico": "MX", "Moldova": "MD",
    "Monaco": "MC", "Montenegro": "ME", "Netherlands": "NL", "New Zealand": "NZ", "North Macedonia": "MK",
    "Norway": "NO", "Poland": "PL", "Portugal": "PT", "Qatar": "QA", "Romania": "RO", "San Marino": "SM",
    "Serbia": "RS", "Singapore": "SG", "Slovakia": "SK", "Slovenia": "SI", "Spain": "ES", "Sweden": "SE",
    "Switzerland": "CH", "Thailand": "TH", "Turkey": "TR", "United States": "US", "Ukraine": "UA",
    "United Kingdom": "GB", "Vietnam": "VN", "Unknown": None,
}  # fmt: skip


class CctReader:
    """fast-plate-ocr's CCT-XS v2 global network on OpenVINO (which reads the ONNX file directly).

    Each of its slots is a softmax over the alphabet plus a padding symbol: the text is the argmax
    per slot with padding dropped, and a slot's probability is that character's confidence.
    """

    def __init__(self, cfg: OcrConfig, second: PlateReader | None = None, model: ModelFile = CCT_OCR_TUNED) -> None:
        """`model`: the network file, the fine-tuned one by default (the released one for comparisons)."""
        import openvino as ov

        self.cfg = cfg
        self.second = second
        spec = yaml.safe_load(verify_model_file(MODELS_DIR / CCT_OCR_CONFIG.name).read_text(encoding="utf-8"))
        self.alphabet: str = spec["alphabet"]
        self.pad = self.alphabet.index(spec["pad_char"])
        self.size = (int(spec["img_width"]), int(spec["img_height"]))
        unknown = [name for name in spec["plate_regions"] if name not in REGION_ISO]
        if unknown:
            raise ValueError(f"regions {unknown} of {CCT_OCR_CONFIG.name} have no ISO code in anpr/ocr.py")
        self.regions = [REGION_ISO[name] for name in spec["plate_regions"]]
        core = ov.Core()
        path = verify_model_file(MODELS_DIR / model.name)
        config = openvino_f32_config(INFERENCE_NUM_THREADS=cfg.threads, **compile_cache(cfg.cache_dir))
        # Two compiled copies: one for a batch of any size, one with the batch fixed at one crop, the
        # commonest call (a lane sees one plate a frame), which ran ~15 % faster (3.9 vs 4.5 ms here).
        # Each keeps one request, its output ports looked up once: the compiled model's own __call__
        # paid ~1 ms more per call.
        single = core.read_model(path)
        single.reshape({0: [1, *single.input(0).get_partial_shape()[1:]]})
        self.requests: list[Any] = []
        for model in (single, core.read_model(path)):
            compiled = core.compile_model(model, "CPU", config)
            self.requests.append((compiled.create_infer_request(), compiled.output("plate"), compiled.output("region")))
        for n in (1, 2):  # the first inference of each sets up lazily: pay it at load
            self.network([np.zeros((8, 16, 3), np.uint8)] * n)

    def read(self, crop: np.ndarray) -> PlateRead | None:
        return self.read_batch([crop])[0]

    def read_batch(self, crops: list[np.ndarray]) -> list[PlateRead | None]:
        """Every crop of a frame in one forward pass, and the unsure ones again.

        A crop with a character under `ocr.unsure_below` is read twice more in one batch,
        gray-stretched and with a margin (`VIEWS`), and the three reads are fused slot by slot
        (`fuse`). A crop still unsure goes to the second opinion, whose read wins where it is surer.
        The country is always the first read's: the region head sees the plate's colours there, and
        the second opinion has no region head.
        """
        usable = [i for i, c in enumerate(crops) if readable(c)]  # reads below are by position in it
        slots, regions = self.scores([crops[i] for i in usable])
        first = [self.decode(s, r) for s, r in zip(slots, regions, strict=True)]
        reads = list(first)
        unsure = [k for k, read in enumerate(reads) if not sure(read, self.cfg.unsure_below)]
        again, _ = self.scores([view(crops[usable[k]]) for view in VIEWS for k in unsure])
        for j, k in enumerate(unsure):
            reads[k] = self.decode(fuse(np.stack([slots[k], *again[j :: len(unsure)]])), regions[k])
        still = [k for k in unsure if not sure(reads[k], self.cfg.unsure_below)]
        if self.second is not None and still:
            for k, other in zip(still, self.second.read_batch([crops[usable[k]] for k in still]), strict=True):
                if other is not None and mean_confidence(other) > mean_confidence(reads[k]):
                    reads[k] = other
        out: list[PlateRead | None] = [None] * len(crops)
        for k, (read, colour) in enumerate(zip(reads, first, strict=True)):  # colour: the region head's read
            if read is not None and mean_confidence(read) >= self.cfg.min_confidence:
                out[usable[k]] = replace(
                    read,
                    country=colour.country if colour else None,
                    country_confidence=colour.country_confidence if colour else 0.0,
                )
        return out

    def network(self, crops: list[np.ndarray]) -> list[PlateRead | None]:
        """One forward pass over `crops`, decoded."""
        slots, regions = self.scores(crops)
        return [self.decode(s, r) for s, r in zip(slots, regions, strict=True)]

    def scores(self, crops: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """One forward pass over `crops` (BGR or gray) as the network was trained (RGB, stretched to
        its input size, no aspect ratio kept): slot probabilities (crops, slots, symbols) and region
        probabilities (crops, regions), copied out of the request's buffers."""
        import cv2

        if not crops:
            return np.zeros((0, 0, 0), np.float32), np.zeros((0, 0), np.float32)
        rgb = [cv2.cvtColor(c, cv2.COLOR_GRAY2RGB if c.ndim == 2 else cv2.COLOR_BGR2RGB) for c in crops]
        batch = np.stack([cv2.resize(c, self.size, interpolation=cv2.INTER_LINEAR) for c in rgb])
        request, plate, region_port = self.requests[0 if len(crops) == 1 else 1]
        request.infer({0: batch})
        return np.array(request.get_tensor(plate).data), np.array(request.get_tensor(region_port).data)

    def decode(self, probs: np.ndarray, region: np.ndarray) -> PlateRead | None:
        """One crop's slot and region probabilities as a read: the likeliest symbol per slot, padding
        dropped, each character's probability its confidence. Empty text is None."""
        best = probs.argmax(axis=1)
        keep = best != self.pad
        if not keep.any():
            return None
        confs = tuple(float(p) for p in probs.max(axis=1)[keep])
        r = int(region.argmax())
        country = self.regions[r]  # None: the region head's "Unknown"
        confidence = float(region[r]) if country else 0.0
        text = "".join(self.alphabet[k] for k in best[keep])
        return PlateRead(text, float(np.prod(confs)), confs, country, confidence)


def make_reader(cfg: OcrConfig) -> PlateReader:
    """The configured network: the CCT (with our networks as its second opinion when configured),
    or one of the EasyOCR-hosted networks alone."""
    from anpr import ocr_networks

    if cfg.network == "cct":
        second = ocr_networks.PlateOcrReader(cfg) if cfg.second_opinion else None
        return CctReader(cfg, second)
    if cfg.network == "english_g2":
        return ocr_networks.EasyOcrReader(cfg)
    return ocr_networks.PlateOcrReader(cfg)
