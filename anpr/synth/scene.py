"""Drawing the synthetic lane: painter's-algorithm rendering of vehicles over a border-post
backdrop, the sensor's day or infrared look, and the true plate corners for ground truth.

The same projection draws the plates and reports where they are, and `visible_plates` uses the
renderer's own draw order, so the ground truth matches the pixels, occlusions included.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from anpr.schema import Box
from anpr.synth.render import Color, Image8, Quad, RenderedPlate
from anpr.synth.world import (
    ENTRY_X,
    EXIT_X,
    FACE_INDEX,
    ISLAND,
    Camera,
    Pose,
    Texture,
    Vehicle,
    hexa,
    make_car,
)

NEAR = 0.25  # m: geometry closer to the camera than this is clipped away
LIGHT = np.array([0.35, 0.85, -0.4]) / np.linalg.norm([0.35, 0.85, -0.4])


# -- drawing -------------------------------------------------------------------------------------


def _clip_near(poly: np.ndarray) -> np.ndarray:
    """Sutherland-Hodgman against the plane z = NEAR, in camera coordinates."""
    out = []
    n = len(poly)
    for i in range(n):
        a, b = poly[i], poly[(i + 1) % n]
        ina, inb = a[2] >= NEAR, b[2] >= NEAR
        if ina:
            out.append(a)
        if ina != inb:
            t = (NEAR - a[2]) / (b[2] - a[2])
            out.append(a + t * (b - a))
    return np.array(out) if out else np.zeros((0, 3))


def _fill_poly(frame: np.ndarray, camera: Camera, world: np.ndarray, color: tuple[float, float, float]) -> None:
    poly = _clip_near(camera.to_camera(world))
    if len(poly) >= 3:
        pts = np.round(camera.project(poly) * 16).astype(np.int32)
        cv2.fillPoly(frame, [pts], color, lineType=cv2.LINE_AA, shift=4)


def _shade(color: Color, normal: np.ndarray, night: bool, distance: float) -> Color:
    k = 0.62 + 0.38 * max(0.0, float(normal @ LIGHT))
    if night:  # only the camera's IR illuminator lights the scene; it falls off with distance
        level = (0.4 * color[0] + 0.35 * color[1] + 0.25 * color[2]) * k * min(0.55, 60.0 / (distance + 6) ** 2)
        return (int(level) + 6,) * 3
    b, g, r = (int(c * k) for c in color)
    return (b, g, r)


def _warp_texture(frame: np.ndarray, texture: Texture, quad: np.ndarray, night: bool) -> None:
    """Draw the plate onto `quad` (4, 2 px) using the pyramid level just above the target size."""
    x0, y0 = np.floor(quad.min(axis=0)).astype(int)
    x1, y1 = np.ceil(quad.max(axis=0)).astype(int) + 1
    fx0, fy0, fx1, fy1 = max(x0, 0), max(y0, 0), min(x1, frame.shape[1]), min(y1, frame.shape[0])
    if fx1 <= fx0 or fy1 <= fy0:
        return
    target_w = float(np.linalg.norm(quad[1] - quad[0]))
    levels = texture.levels(night)
    img, alpha = next(((i, a) for i, a in reversed(levels) if i.shape[1] >= 1.5 * target_w), levels[0])
    src = texture.plate.quad * np.float32(img.shape[1] / levels[0][0].shape[1])  # the plate may not fill its image
    hmat = cv2.getPerspectiveTransform(src, (quad - [fx0, fy0]).astype(np.float32))
    size = (fx1 - fx0, fy1 - fy0)
    warped = cv2.warpPerspective(img, hmat, size, flags=cv2.INTER_LINEAR)
    a = cv2.warpPerspective(alpha, hmat, size, flags=cv2.INTER_LINEAR).astype(np.float32)[..., None] / 255.0
    roi = frame[fy0:fy1, fx0:fx1]
    roi[:] = (warped * a + roi * (1 - a)).astype(np.uint8)


def _faces(camera: Camera, world: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For the six faces of a hexahedron: whether each looks towards the camera, its outward unit
    normal and its distance from the camera (all at once: this runs for every solid of every frame)."""
    corners = world[FACE_INDEX]  # (6, 4, 3)
    e1, e2 = corners[:, 1] - corners[:, 0], corners[:, 3] - corners[:, 0]
    n = np.stack(
        [
            e1[:, 1] * e2[:, 2] - e1[:, 2] * e2[:, 1],
            e1[:, 2] * e2[:, 0] - e1[:, 0] * e2[:, 2],
            e1[:, 0] * e2[:, 1] - e1[:, 1] * e2[:, 0],
        ],
        axis=1,
    )
    n /= np.sqrt((n * n).sum(axis=1, keepdims=True)) + 1e-12
    centres = corners.mean(axis=1)
    n *= np.where(((centres - world.mean(axis=0)) * n).sum(axis=1) < 0, -1.0, 1.0)[:, None]
    to_cam = np.asarray(camera.position) - centres
    return (to_cam * n).sum(axis=1) > 1e-6, n, np.sqrt((to_cam * to_cam).sum(axis=1))


def plate_quads(camera: Camera, vehicle: Vehicle, pose: Pose) -> dict[str, Quad]:
    """Pixel corners of every plate of `vehicle` that faces `camera` and lies in front of it."""
    out: dict[str, Quad] = {}
    for solid in vehicle.solids:
        plates = [d for d in solid.decals if d.texture is not None]
        if not plates:
            continue
        facing, _, _ = _faces(camera, pose.to_world(solid.vertices))
        for decal in plates:
            cam = camera.to_camera(pose.to_world(decal.corners))
            if facing[decal.face] and (cam[:, 2] > NEAR).all() and decal.texture is not None:
                out[decal.texture.plate.label] = camera.project(cam).astype(np.float32)
    return out


def _darken(frame: np.ndarray, camera: Camera, world: np.ndarray, strength: float) -> None:
    """Multiply the pixels under a world polygon by (1 - strength): soft ground shadows."""
    poly = _clip_near(camera.to_camera(world))
    if len(poly) < 3:
        return
    px = camera.project(poly)
    x0, y0 = np.maximum(np.floor(px.min(axis=0)).astype(int), 0)
    x1, y1 = np.minimum(np.ceil(px.max(axis=0)).astype(int) + 1, [frame.shape[1], frame.shape[0]])
    if x1 <= x0 or y1 <= y0:
        return
    mask = np.zeros((y1 - y0, x1 - x0), np.uint8)
    cv2.fillPoly(mask, [np.round((px - [x0, y0]) * 16).astype(np.int32)], 255, lineType=cv2.LINE_AA, shift=4)
    roi = frame[y0:y1, x0:x1]
    roi[:] = (roi * (1 - strength * mask[..., None] / 255.0)).astype(np.uint8)


def draw_vehicle(
    frame: np.ndarray, glow: np.ndarray, camera: Camera, vehicle: Vehicle, pose: Pose, night: bool
) -> None:
    """Painter's algorithm: ground shadow, then under-parts, then solids far to near."""
    hw, length = vehicle.width / 2 + 0.1, vehicle.length + 0.1
    _darken(
        frame,
        camera,
        pose.to_world(np.array([(-hw, 0.01, -0.1), (hw, 0.01, -0.1), (hw, 0.01, length), (-hw, 0.01, length)])),
        0.55,
    )
    cam_pos = np.asarray(camera.position)
    placed = [(s, pose.to_world(s.vertices)) for s in vehicle.solids]
    placed.sort(key=lambda sw: (sw[0].layer, -float(np.linalg.norm(sw[1].mean(axis=0) - cam_pos))))
    for solid, world in placed:
        facing, normals, dists = _faces(camera, world)
        for f in np.flatnonzero(facing):
            normal, dist = normals[f], float(dists[f])
            _fill_poly(frame, camera, world[FACE_INDEX[f]], _shade(solid.colors[f], normal, night, dist))
            for decal in (d for d in solid.decals if d.face == f):
                corners = pose.to_world(decal.corners)
                if decal.texture is not None:
                    cam = camera.to_camera(corners)
                    if (cam[:, 2] > NEAR).all():
                        _warp_texture(frame, decal.texture, camera.project(cam), night)
                elif night and decal.glow > 0:
                    _fill_poly(frame, camera, corners, (120 + 135 * decal.glow,) * 3)
                    _fill_poly(glow, camera, corners, (decal.glow,) * 3)
                else:
                    _fill_poly(frame, camera, corners, _shade(decal.color, normal, night, dist))


def draw_order(camera: Camera, vehicles: Sequence[tuple[Vehicle, Pose]]) -> list[tuple[Vehicle, Pose]]:
    """Far to near by the distance of each vehicle's middle: later ones cover earlier ones."""
    cam_pos = np.asarray(camera.position)

    def distance(vp: tuple[Vehicle, Pose]) -> float:
        middle = vp[1].to_world(np.array([[0.0, 1.0, vp[0].length / 2]]))[0]
        return float(np.linalg.norm(middle - cam_pos))

    return sorted(vehicles, key=distance, reverse=True)


def visible_plates(
    camera: Camera, vehicles: Sequence[tuple[Vehicle, Pose]], min_visible: float = 0.9
) -> list[tuple[RenderedPlate, Quad]]:
    """Plates facing the camera, wholly in frame and not hidden by a vehicle drawn over them.

    Uses the renderer's own draw order, so "hidden" means hidden in the pixels, not in theory.
    """
    order = draw_order(camera, vehicles)
    out = []
    for i, (vehicle, pose) in enumerate(order):
        for plate in {p.label: p for p in vehicle.plates}.values():  # a car's two plates read alike
            quad = plate_quads(camera, vehicle, pose).get(plate.label)
            if quad is None:
                continue
            box = quad_box(quad)
            if box.x1 < 0 or box.y1 < 0 or box.x2 > camera.width or box.y2 > camera.height:
                continue
            x0, y0 = int(box.x1), int(box.y1)
            mask = np.zeros((int(box.y2) - y0 + 1, int(box.x2) - x0 + 1), np.uint8)
            cv2.fillPoly(mask, [np.round((quad - [x0, y0]) * 16).astype(np.int32)], 255, shift=4)
            area = np.count_nonzero(mask)
            for other, other_pose in order[i + 1 :]:
                for solid in other.solids:
                    world = other_pose.to_world(solid.vertices)
                    facing, _, _ = _faces(camera, world)
                    for f in np.flatnonzero(facing):
                        poly = _clip_near(camera.to_camera(world[FACE_INDEX[f]]))
                        if len(poly) >= 3:
                            pts = np.round((camera.project(poly) - [x0, y0]) * 16).astype(np.int32)
                            cv2.fillPoly(mask, [pts], 0, shift=4)
            if area and np.count_nonzero(mask) >= min_visible * area:
                out.append((plate, quad))
    return out


def render_frame(
    backdrop: Image8, camera: Camera, vehicles: Sequence[tuple[Vehicle, Pose]], night: bool, rng: np.random.Generator
) -> Image8:
    """One camera frame: vehicles drawn far to near over a prepared backdrop, then the sensor's look."""
    frame = backdrop.copy()
    glow = np.zeros(frame.shape[:2] if night else (1, 1), np.float32)  # lamp flare, drawn blurred at the end
    for vehicle, pose in draw_order(camera, vehicles):
        draw_vehicle(frame, glow, camera, vehicle, pose, night)
    frame = cv2.GaussianBlur(frame, (0, 0), 0.7)  # lens and sensor softness
    if night:  # flare and sensor noise; blurring a quarter-size flare map keeps this cheap
        h, w = frame.shape[:2]
        small = cv2.GaussianBlur(cv2.resize(glow, (w // 4, h // 4), interpolation=cv2.INTER_AREA), (0, 0), 2.5)
        gray = cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY).astype(np.float32)
        gray += cv2.resize(small, (w, h)) * 560 + rng.standard_normal((h, w), dtype=np.float32) * 5
        frame = cv2.cvtColor(np.clip(gray, 0, 255).astype(np.uint8), cv2.COLOR_GRAY2BGR)
    return frame


# -- backdrop ------------------------------------------------------------------------------------


def render_backdrop(camera: Camera, rng: np.random.Generator, night: bool = False) -> Image8:
    """Sky, verges, a two-lane road with an island, markings and a border-post canopy."""
    h, w = camera.height, camera.width
    frame = np.zeros((h, w, 3), np.uint8)
    yy = np.linspace(0, 1, h, dtype=np.float32)[:, None, None]
    sky = np.array([235, 205, 170], np.float32) * (1 - 0.35 * yy) + np.array([30, 20, 0], np.float32)
    frame[:] = np.clip(sky * (0.12 if night else 1.0), 0, 255).astype(np.uint8)
    s = 1 if camera.yaw_deg < 90 else -1  # which way "down the road" is for this camera

    def ground(x: tuple[float, float], z: tuple[float, float], color: Color, y: float = 0.0) -> None:
        quad = np.array([(x[0], y, z[0]), (x[1], y, z[0]), (x[1], y, z[1]), (x[0], y, z[1])])
        mid = float(np.mean(z)) * s
        _fill_poly(frame, camera, quad, _shade(color, np.array([0.0, 1.0, 0.0]), night, abs(mid) + 3))

    far = 400.0 * s
    ground((-200, 200), (-2 * s, far), (70, 110, 95))  # verge / fields
    tree_line = np.array([(-300, 0, far * 0.6), (300, 0, far * 0.6), (300, 9, far * 0.6), (-300, 9, far * 0.6)])
    _fill_poly(frame, camera, tree_line, (40, 70, 50) if not night else (12, 12, 12))
    ground((-2.6, 6.9), (-60 * s, far), (92, 92, 96))  # asphalt
    ground((ISLAND[0], ISLAND[1]), (-60 * s, 60 * s), (150, 150, 150), 0.15)  # island top
    for x in (-1.85, 5.95):
        ground((x - 0.08, x + 0.08), (-60 * s, far), (225, 225, 225))  # edge lines
    for z in np.arange(-60, 120, 9.0):  # dashed centre lines beyond the island
        for x in (ENTRY_X, EXIT_X):
            if abs(z) > 62:
                ground((x - 0.07, x + 0.07), (z * s, (z + 4.5) * s), (225, 225, 225))
    ground((-1.8, 1.75), (4.6 * s, 5.0 * s), (230, 230, 230))  # stop line before the booth
    ground((EXIT_X - 1.7, EXIT_X + 1.7), (-4.6 * s, -5.0 * s), (230, 230, 230))
    roof_y = 5.6
    for zp in (-15.0, 12.0, 30.0):  # canopy pillars, then its underside
        for xp in (-3.4, 7.6):
            pillar = hexa((xp - 0.25, xp + 0.25), (0.0, roof_y), (zp * s - 0.25, zp * s + 0.25))
            facing, normals, _ = _faces(camera, pillar)
            for f in np.flatnonzero(facing):
                _fill_poly(
                    frame, camera, pillar[FACE_INDEX[f]], _shade((175, 175, 180), normals[f], night, abs(zp) + 3)
                )
    roof = np.array([(-4.0, roof_y, -18 * s), (8.0, roof_y, -18 * s), (8.0, roof_y, 34 * s), (-4.0, roof_y, 34 * s)])
    _fill_poly(frame, camera, roof, _shade((205, 200, 195), np.array([0.0, -1.0, 0.0]), night, 10))
    for zl in np.arange(-15.0, 32.0, 6.0):  # canopy lamps
        lamp = np.array(
            [
                (0.2, roof_y - 0.02, zl * s),
                (3.8, roof_y - 0.02, zl * s),
                (3.8, roof_y - 0.02, zl * s + 0.5),
                (0.2, roof_y - 0.02, zl * s + 0.5),
            ]
        )
        _fill_poly(frame, camera, lamp, (250, 250, 250))
    tex = rng.normal(0, 3.0 if not night else 2.0, (h, w, 1)).astype(np.float32)
    return np.clip(frame.astype(np.float32) + tex, 0, 255).astype(np.uint8)


# -- still scenes --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SceneImage:
    """A rendered photo and where its plate is: `box` is the plate's axis-aligned bounding box."""

    image: Image8
    box: Box
    quad: Quad
    label: str


def quad_box(quad: Quad) -> Box:
    return Box(float(quad[:, 0].min()), float(quad[:, 1].min()), float(quad[:, 0].max()), float(quad[:, 1].max()))


def render_scene(
    plate: RenderedPlate,
    rng: np.random.Generator,
    *,
    distance_m: float = 3.2,
    night: bool = False,
    camera: Camera | None = None,
) -> SceneImage:
    """A car in the entry lane, `distance_m` from a booth camera, wearing `plate` at the front."""
    cam = camera or Camera(position=(0.5, 1.35, 0.0), focal_px=1250.0, pitch_deg=8.0, yaw_deg=-2.0)
    backdrop = render_backdrop(cam, rng, night)
    car = make_car(rng, plate, None)
    pose = Pose(ENTRY_X, distance_m, -1)
    image = render_frame(backdrop, cam, [(car, pose)], night, rng)
    quads = plate_quads(cam, car, pose)
    if plate.label not in quads:
        raise ValueError("the plate is not visible from this camera")
    quad = quads[plate.label]
    return SceneImage(image=image, box=quad_box(quad), quad=quad, label=plate.label)
