"""Plate detection: one small interface, backends chosen by config.

Both backends run the same ultralytics YOLOv8 plate model (detector "B", models/README.md) and give
the same boxes. `backend: torch` runs it through ultralytics on PyTorch. `backend: openvino` runs the
cached OpenVINO export straight on the `openvino` runtime (~3x faster on CPU than PyTorch,
shared/NOTES.md) with ultralytics' letterbox, NMS and box scaling redone in numpy/cv2: no torch or
ultralytics import at run time (seconds of cold start, per-call overhead, and AGPL code we need not
load). Both letterbox to the imgsz square, or with `detector.rect` to the minimum rectangle (a 16:9
photo at 640x384: ~1.5x faster, a few reads fewer: the config field says what was measured).
Heavy imports happen inside the backend so that `import anpr` stays light.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from anpr.config import DetectorConfig
from anpr.models import (
    DETECTOR_B,
    DETECTOR_B_INT8,
    ModelError,
    detector_weights,
    enforce_offline,
    openvino_f32_config,
    sha256_of,
    verify_model_file,
)
from anpr.schema import Box, PlateDetection

log = logging.getLogger(__name__)

# Tiled detection on photos (`detect_tiled`): neighbouring tiles overlap by this share of a tile,
# and an image is tiled only when its long side is at least this many tiles: below, a tile sees
# the plate hardly bigger than the whole image does.
TILE_OVERLAP = 0.25
TILE_ABOVE = 1.5

# ultralytics' letterbox fill, model stride and NMS limits (predict defaults), kept so that
# OpenVinoDetector's boxes are the ones ultralytics gives.
LETTERBOX_FILL = 114
STRIDE = 32
MAX_DET = 300
MAX_NMS = 30000
MAX_WH = 7680


def compile_cache(cache_dir: Path) -> dict[str, object]:
    """OpenVINO compile settings that keep each compiled model on disk and reuse it.

    A worker or `anpr read` then imports the compiled blob instead of compiling (detector 0.4 -> 0.14 s,
    CCT reader 0.8 -> 0.3 s here), and the workers of `anpr run`, which start together on the same
    cores, share what the first one compiled. OpenVINO keys the blob by model, settings and device.
    A cache that cannot be written is only slower: no cache then.
    """
    folder = cache_dir / "openvino-compiled"
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        log.warning("OpenVINO compile cache off: cannot create %s (%s)", folder, exc)
        return {}
    return {"CACHE_DIR": str(folder)}


class PlateDetector(Protocol):
    def detect(self, image: np.ndarray) -> list[PlateDetection]:
        """Plate boxes in pixels of `image` (BGR), best first."""
        ...


class UltralyticsDetector:
    """YOLO plate detector through ultralytics on PyTorch (the .pt weights), whatever `cfg.backend` says.

    `make_detector` uses it for `backend: torch`; it is also the reference that `OpenVinoDetector`
    must equal (tests/test_detect.py).
    """

    def __init__(self, cfg: DetectorConfig) -> None:
        enforce_offline()
        import torch
        from ultralytics import YOLO

        torch.set_num_threads(cfg.threads)
        self.cfg = cfg
        self.model: Any = YOLO(str(detector_weights(cfg.weights)), task="detect")

    def detect(self, image: np.ndarray) -> list[PlateDetection]:
        results = self.model.predict(
            image, imgsz=self.cfg.imgsz, conf=self.cfg.confidence, iou=self.cfg.iou, rect=self.cfg.rect, verbose=False
        )
        boxes = results[0].boxes
        xyxy = boxes.xyxy.cpu().numpy()
        conf = boxes.conf.cpu().numpy()
        found = [PlateDetection(Box(*(float(v) for v in xyxy[i])), float(conf[i])) for i in range(len(conf))]
        return sorted(found, key=lambda d: d.confidence, reverse=True)


class OpenVinoDetector:
    """YOLOv8 plate detector on the cached OpenVINO export, run by `openvino` alone.

    Why not ultralytics: `YOLO(...).predict` imports torch and ultralytics (most of `anpr read`'s
    cold start) and adds a few ms per call around the inference. Pre- and post-processing here
    are ultralytics' own for PyTorch (`letterbox`, `yolo_boxes`), so the
    boxes are `UltralyticsDetector`'s up to float rounding (tests/test_detect.py).

    Why one compiled model with a dynamic input, not one static model per shape: OpenVINO's CPU
    plugin keeps what it builds for each input shape it has run, so a new shape costs once (15-40 ms
    over a warm call, measured here) and alternating shapes costs nothing more; a static model per
    shape costs a 0.15-0.4 s compile per shape, and memory per shape, for 5-9 % faster warm calls.
    """

    def __init__(self, cfg: DetectorConfig) -> None:
        import openvino as ov

        self.cfg = cfg
        xml = int8_model(cfg) if cfg.precision == "int8" else next(openvino_export(cfg).glob("*.xml"))
        core = ov.Core()
        model = core.read_model(xml)
        shape = model.input(0).get_partial_shape()
        if shape.rank.is_dynamic or len(shape) != 4 or not (shape[2].is_dynamic and shape[3].is_dynamic):
            raise ModelError(f"{xml} takes input {shape}, expected [?,3,?,?] (a dynamic export); delete {xml.parent}")
        self.imgsz = cfg.imgsz
        settings = openvino_f32_config(INFERENCE_NUM_THREADS=cfg.threads, **compile_cache(cfg.cache_dir))
        compiled = core.compile_model(model, "CPU", settings)
        self._request = compiled.create_infer_request()
        self._input = np.empty((1, 3, 0, 0), np.float32)
        # The first inference of a compiled model is the slowest (oneDNN builds its kernels then, and
        # again, less, for each new input shape): pay it at load, at the shape of a 16:9 frame or photo
        # (the square, or 640x384 at imgsz 640 with `rect`), the commonest here.
        self.detect(np.full((cfg.imgsz * 9 // 16, cfg.imgsz, 3), LETTERBOX_FILL, np.uint8))

    def detect(self, image: np.ndarray) -> list[PlateDetection]:
        padded, fit = letterbox(as_bgr(image), self.imgsz, self.cfg.rect)
        if self._input.shape[2:] != padded.shape[:2]:
            self._input = np.empty((1, 3, *padded.shape[:2]), np.float32)
        # BGR HWC uint8 -> RGB CHW float32 in [0, 1], divided as ultralytics does (not multiplied by 1/255).
        np.divide(padded[..., ::-1].transpose(2, 0, 1), 255, out=self._input[0], dtype=np.float32)
        self._request.infer({0: self._input}, share_inputs=True)
        output = self._request.get_output_tensor(0).data
        xyxy, conf = yolo_boxes(output[0], self.cfg.confidence, self.cfg.iou)
        xyxy = scale_boxes(xyxy, fit, image.shape[:2])  # best first already: NMS keeps them in that order
        return [PlateDetection(Box(*(float(v) for v in xyxy[i])), float(conf[i])) for i in range(len(conf))]


def as_bgr(image: np.ndarray) -> np.ndarray:
    """A 3-channel uint8 view of `image`: gray and BGRA converted as ultralytics' loader does."""
    if image.ndim != 2 and (image.ndim != 3 or image.shape[2] not in (1, 3, 4)):
        raise ValueError(f"expected an (H, W), (H, W, 1), (H, W, 3) or (H, W, 4) image, got shape {image.shape}")
    if not all(image.shape):
        raise ValueError(f"empty image, shape {image.shape}")
    if image.ndim == 3 and image.shape[2] == 3:
        return image
    import cv2

    if image.ndim == 2 or image.shape[2] == 1:
        return cv2.cvtColor(image.reshape(image.shape[:2]), cv2.COLOR_GRAY2BGR)
    return cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)


def letterbox(image: np.ndarray, size: int, rect: bool = False) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """`image` resized to fit `size` x `size`, padded with grey, centred: to the square, or with `rect`
    to the minimum rectangle.

    ultralytics' `LetterBox(size, auto=rect, stride=32)`: with `rect` the padding on each axis is only
    what makes that side a multiple of the stride (a 16:9 photo: 640x384, not 640x640). Its rounding
    exactly (sides rounded, at least 1 px; padding split `round(d - 0.1)`, `round(d + 0.1)`) so the
    network sees the pixels it sees under ultralytics. Returns the image and the resized (width,
    height) with the (left, top) padding, which `scale_boxes` undoes.
    """
    import cv2

    h, w = image.shape[:2]
    r = min(size / h, size / w)
    new_w, new_h = max(round(w * r), 1), max(round(h * r), 1)
    if (new_w, new_h) != (w, h):
        image = cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
    dw, dh = (size - new_w) / 2, (size - new_h) / 2
    if rect:
        dw, dh = dw * 2 % STRIDE / 2, dh * 2 % STRIDE / 2
    top, bottom = round(dh - 0.1), round(dh + 0.1)
    left, right = round(dw - 0.1), round(dw + 0.1)
    padded = cv2.copyMakeBorder(image, top, bottom, left, right, cv2.BORDER_CONSTANT, value=(LETTERBOX_FILL,) * 3)
    return padded, (new_w, new_h, left, top)


def yolo_boxes(output: np.ndarray, confidence: float, iou: float) -> tuple[np.ndarray, np.ndarray]:
    """(xyxy, confidence) kept from one image's YOLOv8 output (4 + classes, anchors), best first.

    ultralytics' `non_max_suppression` as `predict` calls it: best class per anchor, confidence
    strictly above `confidence`, at most MAX_NMS candidates, NMS per class (boxes offset by
    class x MAX_WH; one class here, so class-agnostic), at most MAX_DET boxes.
    """
    scores = output[4:]
    best = scores.max(0)
    keep = best > confidence
    xywh = output[:4, keep].T
    conf = best[keep]
    cls = scores[:, keep].argmax(0).astype(np.float32)
    xyxy = np.concatenate([xywh[:, :2] - xywh[:, 2:] / 2, xywh[:, :2] + xywh[:, 2:] / 2], axis=1)
    order = np.argsort(-conf, kind="stable")[:MAX_NMS]
    xyxy, conf, cls = xyxy[order], conf[order], cls[order]
    kept = nms(xyxy + (cls * MAX_WH)[:, None], iou)[:MAX_DET]
    return xyxy[kept], conf[kept]


def nms(xyxy: np.ndarray, iou: float) -> np.ndarray:
    """Indices of the boxes NMS keeps, `xyxy` sorted best first: torchvision's rule (drop IoU > `iou`)."""
    x1, y1, x2, y2 = xyxy.T
    areas = (x2 - x1) * (y2 - y1)
    order = np.arange(len(xyxy))
    kept: list[int] = []
    while order.size:
        i, rest = order[0], order[1:]
        kept.append(int(i))
        w = (np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest])).clip(min=0)
        h = (np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest])).clip(min=0)
        inter = w * h
        order = rest[inter / (areas[i] + areas[rest] - inter) <= iou]
    return np.array(kept, np.intp)


def scale_boxes(xyxy: np.ndarray, fit: tuple[int, int, int, int], shape: tuple[int, ...]) -> np.ndarray:
    """Boxes from letterboxed-input pixels back to the original image's, clipped to it.

    ultralytics' `scale_boxes`: subtract the padding, divide by each axis's own gain (the resized
    side over the original one, as rounded by `letterbox`).
    """
    new_w, new_h, left, top = fit
    h, w = shape[:2]
    out = (xyxy - np.array([left, top, left, top], np.float32)) / np.array(
        [new_w / w, new_h / h, new_w / w, new_h / h], np.float32
    )
    out[:, [0, 2]] = out[:, [0, 2]].clip(0, w)
    out[:, [1, 3]] = out[:, [1, 3]].clip(0, h)
    return out


def openvino_export(cfg: DetectorConfig) -> Path:
    """Path of the OpenVINO export for these weights and image size, generating it if missing.

    The export takes any input height and width (`dynamic=True`: the head's anchors follow the
    input, so it runs the square and the minimum-rectangle letterbox alike). It is keyed by the weights' checksum, imgsz
    and `-dyn`, so new weights, and the older static square exports, are never reused.
    ultralytics writes the export next to the .pt, so we export from a copy in cache_dir;
    `metadata.yaml`, written last, marks a complete export.
    """
    weights = detector_weights(cfg.weights)
    digest = sha256_of(weights)[:12]
    out = cfg.cache_dir / f"{weights.stem}-{digest}-{cfg.imgsz}-dyn_openvino_model"
    if (out / "metadata.yaml").is_file():
        return out
    enforce_offline()
    from ultralytics import YOLO

    work = cfg.cache_dir / f"export-{digest}-{cfg.imgsz}-dyn"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    copy = work / f"{weights.stem}.pt"
    shutil.copy2(weights, copy)
    log.info("exporting %s to OpenVINO (imgsz %d, dynamic shape) into %s", weights, cfg.imgsz, out)
    try:
        exported = Path(YOLO(str(copy)).export(format="openvino", imgsz=cfg.imgsz, dynamic=True, half=False))
    except Exception as exc:  # ultralytics raises many types; all mean the same to the user
        raise ModelError(f"OpenVINO export of {weights} failed: {exc}") from exc
    shutil.rmtree(out, ignore_errors=True)
    exported.rename(out)
    shutil.rmtree(work, ignore_errors=True)
    return out


def int8_model(cfg: DetectorConfig) -> Path:
    """The committed INT8 IR of `cfg.weights` (`detector.precision: int8`), its .xml and .bin verified.

    Only the pinned detector B has one (scripts/quantize_detector.py makes it): other weights are an
    error rather than a silent fall back to f32. The IR takes any input shape, so `imgsz` and `rect`
    apply as they do in f32 (it was calibrated at 640, square and 16:9 rectangle).
    """
    weights = detector_weights(cfg.weights)
    xml = weights.with_name(f"{weights.stem}_int8.xml")
    if weights.name != DETECTOR_B.name or xml.name != DETECTOR_B_INT8.name:
        raise ModelError(f"detector.precision int8 needs {DETECTOR_B.name}'s weights, not {weights.name}; use f32")
    verify_model_file(xml.with_suffix(".bin"))
    return verify_model_file(xml)


def make_detector(cfg: DetectorConfig) -> PlateDetector:
    """The detector `cfg.backend` names: OpenVINO without torch/ultralytics, or ultralytics on PyTorch."""
    if cfg.backend == "openvino":
        return OpenVinoDetector(cfg)
    return UltralyticsDetector(cfg)


def tile_windows(width: int, height: int, size: int, overlap: float = TILE_OVERLAP) -> list[tuple[int, int, int, int]]:
    """(x1, y1, x2, y2) windows of `size` px, overlapping by `overlap` of it, covering the image.

    Windows are spread evenly, so the last one ends at the image's edge instead of hanging over it.
    """
    step = size * (1 - overlap)

    def starts(length: int) -> list[int]:
        if length <= size:
            return [0]
        n = int(np.ceil((length - size) / step)) + 1
        return [round(v) for v in np.linspace(0, length - size, n)]

    return [(x, y, min(width, x + size), min(height, y + size)) for y in starts(height) for x in starts(width)]


def detect_tiled(detector: PlateDetector, image: np.ndarray, imgsz: int, iou: float) -> list[PlateDetection]:
    """Plates found in overlapping tiles of `image`, each seen at close to its own resolution.

    Why: the detector sees the whole image shrunk to `imgsz`, where a plate far away or at the
    edge of a phone photo is a few pixels high and missed (ua-plates `1.jpeg`: 60 px wide in a
    1200 px photo, found in a tile at confidence 0.55, not at all in the whole image). A tile is
    `imgsz` px, or a third of the image's long side on big photos, so there are at most ~16.
    A box touching a tile's inner edge is a plate cut in two; the overlap (a quarter of a tile,
    more than a small plate's width) shows it whole in the next tile. Overlapping boxes from
    neighbouring tiles are merged by NMS at the detector's own `iou`.
    """
    import cv2

    h, w = image.shape[:2]
    size = max(imgsz, round(max(w, h) / 3))
    if max(w, h) < TILE_ABOVE * size:
        return []
    found: list[PlateDetection] = []
    for x1, y1, x2, y2 in tile_windows(w, h, size):
        for d in detector.detect(image[y1:y2, x1:x2]):
            b = d.box
            cut = (x1 > 0 and b.x1 <= 1) or (y1 > 0 and b.y1 <= 1)
            cut |= (x2 < w and b.x2 >= x2 - x1 - 1) or (y2 < h and b.y2 >= y2 - y1 - 1)
            if not cut:
                found.append(PlateDetection(Box(b.x1 + x1, b.y1 + y1, b.x2 + x1, b.y2 + y1), d.confidence))
    boxes = [[d.box.x1, d.box.y1, d.box.x2 - d.box.x1, d.box.y2 - d.box.y1] for d in found]
    keep = cv2.dnn.NMSBoxes(boxes, [d.confidence for d in found], 0.0, iou)
    return sorted((found[int(i)] for i in np.ravel(keep)), key=lambda d: d.confidence, reverse=True)
