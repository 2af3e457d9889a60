"""Model files are verified before they are loaded; a wrong file is a clear error."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from anpr.config import MODELS_DIR, DetectorConfig
from anpr.models import (
    DETECTOR_B,
    EASYOCR_FILES,
    PLATE_OCR_BASE,
    PLATE_OCR_STAGE1,
    ModelError,
    detector_weights,
    easyocr_model_dir,
    sha256_of,
    verify,
    verify_model_file,
)


def test_committed_detector_matches_pin() -> None:
    path = DetectorConfig().weights
    assert sha256_of(path) == DETECTOR_B.sha256
    assert detector_weights(path) == path


def test_easyocr_weights_from_pinned_wheel_verify() -> None:
    folder = easyocr_model_dir()
    assert {p.name for p in folder.iterdir()} >= set(EASYOCR_FILES)


def test_tampered_detector_weights_rejected(tmp_path: Path) -> None:
    tampered = tmp_path / DETECTOR_B.name
    shutil.copy(DetectorConfig().weights, tampered)
    with tampered.open("r+b") as f:
        f.seek(1000)
        f.write(b"\x00\x01\x02")
    with pytest.raises(ModelError, match="checksum mismatch .* expected " + DETECTOR_B.sha256):
        detector_weights(tampered)


def test_tampered_detector_is_refused_by_the_detector(tmp_path: Path) -> None:
    from anpr.detect import make_detector

    tampered = tmp_path / DETECTOR_B.name
    tampered.write_bytes(b"not a model")
    with pytest.raises(ModelError, match="checksum mismatch"):
        make_detector(DetectorConfig(backend="torch", weights=tampered))


def test_truncated_easyocr_weights_rejected(tmp_path: Path) -> None:
    spec = EASYOCR_FILES["english_g2.pth"]
    src = easyocr_model_dir() / spec.name
    copy = tmp_path / spec.name
    copy.write_bytes(src.read_bytes()[:-10])
    with pytest.raises(ModelError, match="checksum mismatch"):
        verify(copy, spec.sha256)


def test_missing_model_names_the_fix(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match=r"missing.*models/README\.md"):
        verify(tmp_path / "nope.pth", "0" * 64)


def test_training_base_weights_verify_and_an_unpinned_file_is_refused(tmp_path: Path) -> None:
    for base in (PLATE_OCR_BASE, PLATE_OCR_STAGE1):
        assert verify_model_file(MODELS_DIR / base.name) == MODELS_DIR / base.name
    stray = tmp_path / "my_weights.pth"
    stray.write_bytes(b"not pinned")
    with pytest.raises(ModelError, match="no pinned sha256"):
        verify_model_file(stray)
