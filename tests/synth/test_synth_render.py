"""Synthetic plates and scenes: labels, layout, determinism, and that the reported box holds the plate."""

from __future__ import annotations

import re
from functools import partial

import cv2
import numpy as np
import pytest

from anpr.synth.augment import DAY_AUGMENTATIONS, NIGHT_AUGMENTATIONS, augment, low_resolution, perspective
from anpr.synth.render import STYLES, Augmentation, RenderedPlate, plate_label, random_plate_text, render_plate
from anpr.synth.scene import render_scene, visible_plates
from anpr.synth.world import ENTRY_X, Camera, Pose, make_car

TEXT_FORMS = {
    "UA": r"[ABCEHIKMOPTX]{2} \d{4} [ABCEHIKMOPTX]{2}",
    "UA2": r"[ABCEHIKMOPTX]{2}\n\d{4} [ABCEHIKMOPTX]{2}",
    "MD": r"[A-Z]{3} \d{3}",
    "MD2": r"[A-Z]{3}\n\d{3}",
    "RO": r"(B \d{3}|[A-Z]{2} \d{2}) [A-Z]{3}",
    "PL": r"[A-Z]{2} (\d{5}|\d{3}[A-Z]{2})",
    "EU": r"[A-Z]{2} \d{3} [A-Z]{2}",
    "US": r"(?=[A-Z0-9 ]{5,8}$)[A-Z0-9]{2,7}( [A-Z0-9]{2,5})?",
    "BR": r"[A-Z]{3}\d[A-Z]\d{2}",
    "BR1": r"[A-Z]{3} \d{4}",
}


def plate(text: str, style: str, seed: int = 0) -> RenderedPlate:
    return render_plate(text, style, np.random.default_rng(seed))


def test_every_style_has_a_text_form() -> None:
    assert set(TEXT_FORMS) == set(STYLES)


@pytest.mark.parametrize("style", sorted(STYLES))
def test_random_text_follows_the_country_format(style: str) -> None:
    rng = np.random.default_rng(1)
    for _ in range(50):
        assert re.fullmatch(TEXT_FORMS[style], random_plate_text(style, rng))


def test_us_serials_mix_letters_and_digits_in_every_position() -> None:
    """US states issue many serial shapes: one shape taught the reader a position's kind (5LTA600 -> 5LTA400)."""
    rng = np.random.default_rng(3)
    texts = [random_plate_text("US", rng).replace(" ", "") for _ in range(400)]
    shapes = {re.sub(r"\d", "N", re.sub(r"[A-Z]", "L", t)) for t in texts}
    assert len(shapes) >= 10
    for i in range(5):
        kinds = {t[i].isdigit() for t in texts}
        assert kinds == {True, False}, f"position {i} is always {'a digit' if True in kinds else 'a letter'}"


@pytest.mark.parametrize("style", sorted(STYLES))
def test_every_style_renders_with_its_label_and_real_proportions(style: str) -> None:
    rng = np.random.default_rng(2)
    text = random_plate_text(style, rng)
    p = render_plate(text, style, rng)
    w_mm, h_mm = STYLES[style].size_mm
    assert p.image.shape == (round(h_mm * 2), round(w_mm * 2), 3)
    assert p.image.dtype == np.uint8
    assert p.alpha.shape == p.image.shape[:2]
    assert p.label == plate_label(text) and re.fullmatch(r"[A-Z0-9]+", p.label)
    assert len(p.rows) == STYLES[style].rows and "".join(p.rows) == p.label
    assert (p.style, p.country) == (style, STYLES[style].country)
    np.testing.assert_array_equal(p.quad, [[0, 0], [p.image.shape[1], 0], p.image.shape[1::-1], [0, p.image.shape[0]]])


@pytest.mark.parametrize(
    ("text", "style", "label", "rows"),
    [
        ("AA 1234 BB", "UA", "AA1234BB", ("AA1234BB",)),
        ("ABC 123", "MD", "ABC123", ("ABC123",)),
        ("B 123 ABC", "RO", "B123ABC", ("B123ABC",)),
        ("WB 12345", "PL", "WB12345", ("WB12345",)),
        ("ABC1D23", "BR", "ABC1D23", ("ABC1D23",)),
        ("ABC\n123", "MD2", "ABC123", ("ABC", "123")),
        ("BH\n4315 XT", "UA2", "BH4315XT", ("BH", "4315XT")),
    ],
)
def test_labels_and_rows(text: str, style: str, label: str, rows: tuple[str, ...]) -> None:
    p = plate(text, style)
    assert (p.label, p.rows) == (label, rows)


@pytest.mark.parametrize(("text", "style"), [("AA 1234 BB", "MD2"), ("ABC\n123", "MD"), ("AA-1234", "UA"), ("", "EU")])
def test_rejects_text_that_does_not_fit_the_style(text: str, style: str) -> None:
    with pytest.raises(ValueError):
        plate(text, style)


def test_unknown_style_is_named_in_the_error() -> None:
    with pytest.raises(ValueError, match="XX"):
        plate("AB 123", "XX")


def test_characters_are_drawn_in_ink() -> None:
    """A white plate with black characters: a fair share of dark pixels, and the text changes them."""
    a, b = plate("AA 1234 BB", "UA"), plate("XX 9876 KM", "UA")
    dark = (a.image.max(axis=2) < 80).mean()
    assert 0.1 < dark < 0.5
    assert not np.array_equal(a.image, b.image)


@pytest.mark.parametrize("steps", [DAY_AUGMENTATIONS, NIGHT_AUGMENTATIONS])
def test_same_seed_same_pixels(steps: tuple[Augmentation, ...]) -> None:
    def make(seed: int) -> RenderedPlate:
        rng = np.random.default_rng(seed)
        return augment(render_plate(random_plate_text("MD", rng), "MD", rng), rng, steps, probability=0.7)

    first, again, other = make(5), make(5), make(6)
    assert first.label == again.label
    np.testing.assert_array_equal(first.image, again.image)
    np.testing.assert_array_equal(first.quad, again.quad)
    assert first.image.shape != other.image.shape or not np.array_equal(first.image, other.image)


def test_geometric_augmentations_move_the_quad_with_the_plate() -> None:
    rng = np.random.default_rng(3)
    p = render_plate("AA 1234 BB", "UA", rng, augmentations=[partial(perspective, max_rotation_deg=15.0)])
    assert p.image.shape[1] > 1040  # a margin of background was added
    quad_mask = np.zeros_like(p.alpha)
    cv2.fillPoly(quad_mask, [np.round(p.quad).astype(np.int32)], 255)
    plate_px = p.alpha > 127
    assert (quad_mask[plate_px] > 0).mean() > 0.995  # the plate lies inside its quad...
    assert abs(plate_px.sum() / (quad_mask > 0).sum() - 1) < 0.02  # ...and fills it, bar rounded corners

    small = low_resolution(p, rng, min_height=20, max_height=20)
    height = (np.linalg.norm(small.quad[3] - small.quad[0]) + np.linalg.norm(small.quad[2] - small.quad[1])) / 2
    assert abs(height - 20) < 1.5
    assert small.image.shape[:2] == small.alpha.shape
    assert (small.quad >= -1).all() and (small.quad <= np.array(small.image.shape[1::-1]) + 1).all()


@pytest.mark.parametrize("night", [False, True])
def test_scene_box_holds_the_plate(night: bool) -> None:
    rng = np.random.default_rng(4)
    p = render_plate("BH 5417 HP", "UA", rng)
    scene = render_scene(p, rng, night=night)
    h, w = scene.image.shape[:2]
    box = scene.box
    assert scene.label == "BH5417HP"
    assert 0 <= box.x1 < box.x2 <= w and 0 <= box.y1 < box.y2 <= h
    assert 3.5 < box.width / box.height < 6  # a 520x112 mm plate seen nearly head-on
    assert box.width > 100  # big enough for a detector at 640
    x1, y1, x2, y2 = box.as_int_list()
    inside = scene.image[y1:y2, x1:x2].max(axis=2)
    dark, light = (inside < 90).mean(), (inside > 170).mean()
    assert 0.08 < dark < 0.5 and light > 0.35  # black characters on a bright plate
    below = scene.image[y2 + 5 : y2 + 5 + (y2 - y1), x1:x2].max(axis=2)
    assert (below > 170).mean() < light  # and the plate is brighter than what is under it


def test_scene_is_deterministic() -> None:
    def make() -> np.ndarray:
        rng = np.random.default_rng(9)
        return render_scene(render_plate("ABC 123", "MD", rng), rng).image

    np.testing.assert_array_equal(make(), make())


def test_a_vehicle_in_front_hides_the_plate_behind_it() -> None:
    rng = np.random.default_rng(5)
    near = make_car(rng, plate("ABC 123", "MD"), None)
    far = make_car(rng, plate("AA 1234 BB", "UA"), None)
    camera = Camera(position=(1.9, 2.2, 0.0), focal_px=1400.0, pitch_deg=9.0, yaw_deg=-4.0)
    alone = visible_plates(camera, [(far, Pose(ENTRY_X, 10.0))])
    assert [p.label for p, _ in alone] == ["AA1234BB"]
    queue = visible_plates(camera, [(near, Pose(ENTRY_X, 6.0)), (far, Pose(ENTRY_X, 12.0))])
    assert [p.label for p, _ in queue] == ["ABC123"]
