"""Bad image inputs are named with the reason; folders expand recursively."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from anpr.images import ImageError, decode_image, expand_inputs


def _jpeg(path: Path) -> bytes:
    img = np.full((60, 200, 3), 200, np.uint8)
    cv2.putText(img, "AA1234BB", (5, 40), cv2.FONT_HERSHEY_SIMPLEX, 1.0, (0, 0, 0), 2)
    ok, buf = cv2.imencode(".jpg", img)
    assert ok
    path.write_bytes(buf.tobytes())
    return buf.tobytes()


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (lambda p: p.write_bytes(b""), "empty file"),
        (lambda p: p.write_bytes(_jpeg(p)[:400]), "truncated JPEG"),
        (lambda p: p.write_text("hello, not an image"), "not a readable image"),
        (lambda p: None, "no such file"),
        (lambda p: p.mkdir(), "is a folder"),
    ],
    ids=["zero-bytes", "truncated", "not-an-image", "missing", "folder"],
)
def test_bad_inputs_have_reasons(tmp_path: Path, make, reason: str) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "input.jpg"
    make(path)
    with pytest.raises(ImageError, match=reason):
        decode_image(path)


def test_good_jpeg_decodes(tmp_path: Path) -> None:
    _jpeg(tmp_path / "ok.jpg")
    assert decode_image(tmp_path / "ok.jpg").shape == (60, 200, 3)


def test_folders_expand_recursively_and_keep_missing_paths(tmp_path: Path) -> None:
    (tmp_path / "a" / "b").mkdir(parents=True)
    _jpeg(tmp_path / "a" / "1.jpg")
    _jpeg(tmp_path / "a" / "b" / "2.PNG")
    (tmp_path / "a" / "notes.txt").write_text("x")
    missing = tmp_path / "missing.jpg"
    got = list(expand_inputs([tmp_path / "a", missing]))
    assert got == [tmp_path / "a" / "1.jpg", tmp_path / "a" / "b" / "2.PNG", missing]
