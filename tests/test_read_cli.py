"""`anpr read` end to end on photos rendered inside the test, plus a bad input in the same run."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import pytest
from scenes import scene
from typer.testing import CliRunner

from anpr.cli import app
from anpr.schema import Box


@pytest.mark.slow
def test_read_json_reads_the_plate_and_reports_bad_inputs(tmp_path: Path) -> None:
    # Our renders are not real plates: the CCT's region head takes their UA style for Bulgarian. The
    # text is one only UA's grammar explains (no Bulgarian province AA), which corrects the country.
    photo = scene("AA 1234 BB", "UA", 3)
    good = tmp_path / "car.jpg"
    cv2.imwrite(str(good), photo.image, [cv2.IMWRITE_JPEG_QUALITY, 92])
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    missing = tmp_path / "missing.jpg"

    result = CliRunner().invoke(app, ["read", "--json", str(empty), str(good), str(missing)])

    assert result.exit_code == 2
    lines = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    assert [line["image"] for line in lines] == [str(empty), str(good), str(missing)]
    assert "empty file" in lines[0]["error"] and lines[0]["plates"] == []
    assert "no such file" in lines[2]["error"]
    read = lines[1]
    assert read["error"] is None
    best = read["plates"][0]
    assert best["text"] == photo.label == "AA1234BB"
    assert best["country"] == "UA"
    assert 0.0 < best["confidence"] <= 1.0
    assert Box(*best["box"]).iou(photo.box) >= 0.5


@pytest.mark.slow
def test_read_table_output(tmp_path: Path) -> None:
    photo = scene("ABC 123", "MD", 5)
    path = tmp_path / "md.jpg"
    cv2.imwrite(str(path), photo.image)
    result = CliRunner().invoke(app, ["read", str(path)])
    assert result.exit_code == 0, result.output
    assert "ABC123" in result.stdout


def test_read_folder_without_images_is_an_error(tmp_path: Path) -> None:
    empty = tmp_path / "empty_dir"
    (empty / "sub").mkdir(parents=True)
    (empty / "notes.txt").write_text("no photos here")
    result = CliRunner().invoke(app, ["read", "--json", f"{empty}/"])
    assert result.exit_code == 2
    assert result.stderr.startswith(f"error: no images in {empty}")
    assert [json.loads(line)["error"] for line in result.stdout.splitlines()] == [
        f"no images in {empty} (looked for .bmp, .jpeg, .jpg, .png, .tif, .tiff, .webp, in subfolders too)"
    ]
