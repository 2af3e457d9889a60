"""Composable, seeded degradations of a rendered plate: what a lane camera does to a clean plate.

Each step is `step(plate, rng) -> plate` and draws every random choice from `rng`, so one seed fixes
the result. Photometric steps keep the geometry; `perspective` and `low_resolution` move the plate's
corners and update `quad` (and `alpha`) to match. Pass parameters with `functools.partial`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import cv2
import numpy as np

from anpr.synth.render import Augmentation, Image8, Mask, RenderedPlate


def augment(
    plate: RenderedPlate, rng: np.random.Generator, steps: Sequence[Augmentation], probability: float = 0.5
) -> RenderedPlate:
    """Apply each step with `probability`; the draws come from `rng`, so a seed fixes the outcome."""
    for step in steps:
        if rng.random() < probability:
            plate = step(plate, rng)
    return plate


def _as_u8(image: np.ndarray) -> Image8:
    return np.clip(image, 0, 255).astype(np.uint8)


def _smooth_noise(shape: tuple[int, int], cells: tuple[int, int], rng: np.random.Generator) -> Mask:
    """Blotchy 0..1 field: a coarse random grid upsampled smoothly."""
    coarse = rng.random(cells).astype(np.float32)
    return cv2.resize(coarse, (shape[1], shape[0]), interpolation=cv2.INTER_CUBIC).clip(0, 1)


def dirt(plate: RenderedPlate, rng: np.random.Generator, amount: float = 0.5) -> RenderedPlate:
    """Road grime: brown blotches, heavier towards the bottom, plus spray speckles."""
    h, w = plate.image.shape[:2]
    field = _smooth_noise((h, w), (4, 12), rng) * np.linspace(0.4, 1.0, h, dtype=np.float32)[:, None]
    weight = (amount * rng.uniform(0.3, 0.8) * field * plate.alpha / 255.0)[..., None]
    grime = np.array([50, 75, 95], np.float32) * rng.uniform(0.6, 1.1)
    image = plate.image * (1 - weight) + grime * weight
    for _ in range(int(amount * rng.uniform(20, 120))):
        x, y = int(rng.integers(0, w)), int(h - 1 - abs(rng.normal(0, h / 3)) % h)
        cv2.circle(
            image, (x, y), int(rng.integers(1, max(2, w // 150))), tuple(float(c) for c in grime * 0.8), -1, cv2.LINE_AA
        )
    return replace(plate, image=_as_u8(image))


def shadow(plate: RenderedPlate, rng: np.random.Generator, strength: float = 0.5) -> RenderedPlate:
    """A soft-edged shadow (bumper, body) across part of the plate."""
    h, w = plate.image.shape[:2]
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    a = rng.uniform(0, 2 * np.pi)
    d = (xx - rng.uniform(0, w)) * np.cos(a) + (yy - rng.uniform(0, h)) * np.sin(a)
    soft = max(1.0, 0.05 * w * rng.uniform(0.2, 1.0))
    dark = 1 - strength * rng.uniform(0.5, 1.0) * (1 / (1 + np.exp(-d / soft)))
    return replace(plate, image=_as_u8(plate.image * dark[..., None]))


def perspective(
    plate: RenderedPlate,
    rng: np.random.Generator,
    max_tilt: float = 0.2,
    max_rotation_deg: float = 8.0,
    margin: float = 0.2,
) -> RenderedPlate:
    """View the plate off-axis and rotated, on a car-body background; the quad follows."""
    h, w = plate.image.shape[:2]
    pad = round(margin * w)
    out_w, out_h = w + 2 * pad, h + 2 * pad
    body = rng.uniform(20, 220, 3)
    background = np.empty((out_h, out_w, 3), np.float32)
    background[:] = body
    background *= _smooth_noise((out_h, out_w), (3, 3), rng)[..., None] * 0.5 + 0.6
    c = np.array([out_w / 2, out_h / 2], np.float32)
    rect = plate.quad - np.array([w / 2, h / 2], np.float32)
    yaw, pitch = rng.uniform(-max_tilt, max_tilt, 2)
    rect = rect * np.array([1 - abs(yaw) * 0.5, 1 - abs(pitch) * 0.5], np.float32)
    rect[:, 1] *= 1 + 0.5 * yaw * np.sign(rect[:, 0])  # the nearer side looks taller
    rect[:, 0] *= 1 + 0.5 * pitch * np.sign(rect[:, 1])
    t = np.deg2rad(rng.uniform(-max_rotation_deg, max_rotation_deg))
    rot = np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]], np.float32)
    quad = (rect @ rot.T + c).astype(np.float32)
    hmat = cv2.getPerspectiveTransform(plate.quad, quad)
    warped = cv2.warpPerspective(plate.image, hmat, (out_w, out_h), flags=cv2.INTER_LINEAR)
    alpha = cv2.warpPerspective(plate.alpha, hmat, (out_w, out_h), flags=cv2.INTER_LINEAR)
    a = alpha[..., None].astype(np.float32) / 255.0
    image = warped * a + background * (1 - a)
    return replace(plate, image=_as_u8(image), alpha=alpha, quad=quad)


FRAME_WORDS = ("AUTO", "MOTORS", "CENTER", "SERVICE", "VOLVO", "RENAULT", "DAF", "SCANIA", "KYIV", "CHISINAU", "TEL")


def dealer_frame(plate: RenderedPlate, rng: np.random.Generator) -> RenderedPlate:
    """A dealer's plate holder around the plate: a dark or chrome rim, small print below (and above).

    Real crops carry this (openalpr's EU crops: "VOLVO", dealer names and phone numbers): text the
    reader must not read as part of the plate. Apply before `perspective`: the frame is part of the
    object that tilts. The quad stays on the plate itself.
    """
    h, w = plate.image.shape[:2]
    side, top, bottom = (max(1, round(f * h)) for f in (rng.uniform(0.03, 0.08), rng.uniform(0.03, 0.1),
                                                         rng.uniform(0.12, 0.28)))
    chrome = rng.random() < 0.3
    color = np.full(3, rng.uniform(150, 210) if chrome else rng.uniform(10, 60), np.float32)
    out = np.empty((h + top + bottom, w + 2 * side, 3), np.float32)
    out[:] = color
    if chrome:
        out *= np.linspace(1.15, 0.8, out.shape[0], dtype=np.float32)[:, None, None]
    a = plate.alpha[..., None].astype(np.float32) / 255.0
    out[top : top + h, side : side + w] = plate.image * a + out[top : top + h, side : side + w] * (1 - a)
    out8 = _as_u8(out)
    ink = (30, 30, 30) if chrome else (235, 235, 235)
    words = " ".join(FRAME_WORDS[int(i)] for i in rng.integers(0, len(FRAME_WORDS), int(rng.integers(1, 4))))
    if rng.random() < 0.4:
        words += f" {int(rng.integers(100, 999))} {int(rng.integers(10, 99))} {int(rng.integers(10, 99))}"
    scale = 0.6 * bottom / 22.0
    (tw, _), _ = cv2.getTextSize(words, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
    x = max(side, (out.shape[1] - tw) // 2)
    cv2.putText(out8, words, (x, top + h + round(0.75 * bottom)), cv2.FONT_HERSHEY_SIMPLEX, scale, ink,
                max(1, round(scale * 1.5)), cv2.LINE_AA)
    return replace(
        plate,
        image=out8,
        alpha=np.full(out.shape[:2], 255, np.uint8),
        quad=(plate.quad + np.array([side, top], np.float32)).astype(np.float32),
    )


def motion_kernel(length: int, angle_rad: float) -> Mask:
    """Line kernel that smears along `angle_rad`, normalised to sum 1."""
    k = np.zeros((length, length), np.float32)
    c, r = (length - 1) / 2, (length - 1) / 2
    p = (round(c - r * np.cos(angle_rad)), round(c - r * np.sin(angle_rad)))
    q = (round(c + r * np.cos(angle_rad)), round(c + r * np.sin(angle_rad)))
    cv2.line(k, p, q, 1.0, 1, cv2.LINE_AA)
    return k / k.sum()


def motion_blur(plate: RenderedPlate, rng: np.random.Generator, max_length: int = 11) -> RenderedPlate:
    """A vehicle moving during the exposure, mostly along the road (vertical-ish in lane cameras)."""
    k = motion_kernel(int(rng.integers(3, max(4, max_length + 1))), rng.uniform(0, np.pi))
    return replace(plate, image=cv2.filter2D(plate.image, -1, k))


def focus_blur(plate: RenderedPlate, rng: np.random.Generator, max_sigma: float = 2.0) -> RenderedPlate:
    sigma = rng.uniform(0.5, max(0.6, max_sigma))
    return replace(plate, image=cv2.GaussianBlur(plate.image, (0, 0), sigma))


def low_resolution(
    plate: RenderedPlate, rng: np.random.Generator, min_height: int = 14, max_height: int = 40
) -> RenderedPlate:
    """Shrink until the plate is `min_height`..`max_height` px tall, as far-away plates are."""
    q = plate.quad
    current = float(np.linalg.norm(q[3] - q[0]) + np.linalg.norm(q[2] - q[1])) / 2
    k = min(1.0, rng.uniform(min_height, max_height) / max(current, 1.0))
    if k >= 1.0:
        return plate
    h, w = plate.image.shape[:2]
    size = (max(1, round(w * k)), max(1, round(h * k)))
    return replace(
        plate,
        image=cv2.resize(plate.image, size, interpolation=cv2.INTER_AREA),
        alpha=cv2.resize(plate.alpha, size, interpolation=cv2.INTER_AREA),
        quad=(q * np.array([size[0] / w, size[1] / h], np.float32)).astype(np.float32),
    )


def sensor_noise(plate: RenderedPlate, rng: np.random.Generator, max_sigma: float = 8.0) -> RenderedPlate:
    sigma = rng.uniform(1.0, max(1.1, max_sigma))
    return replace(plate, image=_as_u8(plate.image + rng.normal(0, sigma, plate.image.shape)))


def night_ir(plate: RenderedPlate, rng: np.random.Generator) -> RenderedPlate:
    """Infrared night look: grey, retroreflective plate bright, surroundings dark, noisy."""
    img = plate.image.astype(np.float32)
    # Blue inks reflect near-infrared, so the band turns light grey rather than dark.
    gray = 0.5 * img[..., 0] + 0.3 * img[..., 1] + 0.2 * img[..., 2]
    a = plate.alpha.astype(np.float32) / 255.0
    gain = rng.uniform(0.15, 0.35) * (1 - a) + rng.uniform(1.05, 1.25) * a
    gray = gray * gain + rng.normal(0, rng.uniform(3, 8), gray.shape)
    return replace(plate, image=cv2.cvtColor(_as_u8(gray), cv2.COLOR_GRAY2BGR))


def jpeg(plate: RenderedPlate, rng: np.random.Generator, min_quality: int = 20, max_quality: int = 75) -> RenderedPlate:
    quality = int(rng.integers(min_quality, max_quality + 1))
    ok, buf = cv2.imencode(".jpg", plate.image, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise RuntimeError("JPEG encoding failed")
    decoded = cv2.imdecode(buf, cv2.IMREAD_COLOR)
    assert decoded is not None  # we just encoded it
    return replace(plate, image=decoded)


DAY_AUGMENTATIONS: tuple[Augmentation, ...] = (
    dirt,
    shadow,
    perspective,
    focus_blur,
    motion_blur,
    low_resolution,
    sensor_noise,
    jpeg,
)
NIGHT_AUGMENTATIONS: tuple[Augmentation, ...] = (dirt, perspective, night_ir, motion_blur, low_resolution, jpeg)
