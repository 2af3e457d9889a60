"""Both detector backends find the plate, and OpenVINO gives PyTorch's boxes; tiles find small plates in photos."""

from __future__ import annotations

import itertools

import cv2
import numpy as np
import pytest
from scenes import scene

from anpr.config import DetectorConfig, load_config
from anpr.detect import TILE_OVERLAP, detect_tiled, make_detector, tile_windows
from anpr.recognize import PlateRecognizer
from anpr.schema import Box


@pytest.mark.slow
def test_openvino_boxes_equal_torch_boxes() -> None:
    scenes = [scene("BH 5417 HP", "UA", 3), scene("ABC 123", "MD", 5), scene("B 123 XYZ", "RO", 7)]
    torch_det = make_detector(DetectorConfig(backend="torch"))
    ov_det = make_detector(DetectorConfig(backend="openvino"))
    for s in scenes:
        by_torch, by_ov = torch_det.detect(s.image), ov_det.detect(s.image)
        assert max(d.box.iou(s.box) for d in by_torch) >= 0.5, f"torch missed the {s.label} plate"
        assert len(by_ov) == len(by_torch)
        for a in by_torch:
            best = max(by_ov, key=lambda b: b.box.iou(a.box))
            # PyTorch letterboxes a 16:9 frame to 640x384, the OpenVINO export has a fixed 640x640
            # input: same weights, slightly different padding, so boxes agree to a few pixels.
            assert best.box.iou(a.box) >= 0.9
            assert best.confidence == pytest.approx(a.confidence, abs=0.05)


@pytest.mark.parametrize(
    ("width", "height", "size"), [(3200, 2400, 1067), (1200, 900, 640), (640, 480, 640), (1000, 5000, 700)]
)
def test_tile_windows_cover_the_image_and_overlap(width: int, height: int, size: int) -> None:
    windows = tile_windows(width, height, size)
    covered = np.zeros((height, width), bool)
    for x1, y1, x2, y2 in windows:
        assert 0 <= x1 < x2 <= width and 0 <= y1 < y2 <= height
        assert x2 - x1 == min(size, width) and y2 - y1 == min(size, height)
        covered[y1:y2, x1:x2] = True
    assert covered.all()
    # Neighbours overlap by at least TILE_OVERLAP of a tile, so a plate smaller than that is whole in one.
    for axis in (0, 1):
        starts = sorted({w[axis] for w in windows})
        assert all(b - a <= size * (1 - TILE_OVERLAP) + 1 for a, b in itertools.pairwise(starts))


@pytest.mark.slow
def test_tiles_find_a_plate_too_small_for_the_whole_photo() -> None:
    """A car far away in a big photo: shrunk to the detector's 640 px the plate is ~16 px wide and
    missed; a tile shows it at ~50 px, where it is found, and `recognize` reads it."""
    s = scene("BH 5417 HP", "UA", 3)
    scale, x0, y0 = 0.4, 640, 800
    photo = np.full((2400, 3200, 3), 110, np.uint8)
    small = cv2.resize(s.image, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    photo[y0 : y0 + small.shape[0], x0 : x0 + small.shape[1]] = small
    plate = Box(s.box.x1 * scale + x0, s.box.y1 * scale + y0, s.box.x2 * scale + x0, s.box.y2 * scale + y0)
    cfg = load_config()
    rec = PlateRecognizer.from_config(cfg)

    assert all(d.box.iou(plate) < 0.3 for d in rec.detector.detect(photo)), "the whole photo should miss it"
    tiled = detect_tiled(rec.detector, photo, cfg.detector.imgsz, cfg.detector.iou)
    assert max(d.box.iou(plate) for d in tiled) >= 0.4
    assert [r.text for r in rec.recognize(photo)] == ["BH5417HP"]
    no_tiles = cfg.model_copy(update={"detector": cfg.detector.model_copy(update={"tile_photos": False})})
    assert PlateRecognizer(rec.detector, rec.reader, no_tiles).recognize(photo) == []
