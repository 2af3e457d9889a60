"""Both detector backends find the plate, and OpenVINO gives PyTorch's boxes."""

from __future__ import annotations

import pytest
from scenes import scene

from anpr.config import DetectorConfig
from anpr.detect import make_detector


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
