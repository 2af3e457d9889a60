"""The 3-D world of the synthetic lane: a pinhole camera, box-built vehicles and where they are.

Why a tiny 3-D model rather than pasting plates on photos: a plate's size, position and motion then
follow real geometry (it grows and moves down the frame as a car approaches a camera on the island),
and its true corners in every frame come from the same projection that draws it (see scene.py).

World frame (metres): X to the right of the front camera, Y up, Z along the road away from the front
camera, i.e. towards oncoming traffic. The entry lane is centred on X = ENTRY_X, the exit lane on
X = EXIT_X, with a narrow island between them where the cameras stand.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from anpr.synth.render import Color, RenderedPlate, get_style

ENTRY_X = 0.0
EXIT_X = 4.1
ISLAND = (1.75, 2.35)  # x range of the raised island between the lanes

# Hexahedron faces as vertex indices; vertices 0-3 are the bottom (x0z0, x1z0, x1z1, x0z1), 4-7 the top.
FRONT, BACK, LEFT, RIGHT, TOP, BOTTOM = range(6)
FACES = ((0, 1, 5, 4), (2, 3, 7, 6), (3, 0, 4, 7), (1, 2, 6, 5), (4, 5, 6, 7), (0, 3, 2, 1))
FACE_INDEX = np.array(FACES)


@dataclass(frozen=True, slots=True)
class Camera:
    """Pinhole camera; `yaw_deg` 0 looks along +Z (at oncoming traffic), 180 looks back down the road."""

    width: int = 1280
    height: int = 720
    focal_px: float = 1150.0
    position: tuple[float, float, float] = (2.05, 1.8, 0.0)
    yaw_deg: float = 0.0
    pitch_deg: float = 7.0  # positive tilts down

    def to_camera(self, pts: np.ndarray) -> np.ndarray:
        """World (N, 3) -> camera (N, 3): x right, y up, z forward along the optical axis."""
        d = np.asarray(pts, np.float64) - np.asarray(self.position)
        yaw, pitch = np.deg2rad(self.yaw_deg), np.deg2rad(self.pitch_deg)
        x = np.cos(yaw) * d[:, 0] - np.sin(yaw) * d[:, 2]
        z = np.sin(yaw) * d[:, 0] + np.cos(yaw) * d[:, 2]
        y2 = np.cos(pitch) * d[:, 1] + np.sin(pitch) * z
        z2 = -np.sin(pitch) * d[:, 1] + np.cos(pitch) * z
        return np.stack([x, y2, z2], axis=1)

    def project(self, cam: np.ndarray) -> np.ndarray:
        """Camera coordinates (N, 3) with z > 0 -> pixels (N, 2)."""
        return np.stack(
            [
                self.width / 2 + self.focal_px * cam[:, 0] / cam[:, 2],
                self.height / 2 - self.focal_px * cam[:, 1] / cam[:, 2],
            ],
            axis=1,
        )


class Texture:
    """A plate image prepared for drawing at any size: a pyramid of halvings, day and infrared."""

    def __init__(self, plate: RenderedPlate) -> None:
        self.plate = plate
        self._levels: dict[bool, list[tuple[np.ndarray, np.ndarray]]] = {}

    def levels(self, night: bool) -> list[tuple[np.ndarray, np.ndarray]]:
        if night not in self._levels:
            img, alpha = self.plate.image, self.plate.alpha
            if night:  # retroreflective film lights up under the IR illuminator; blue ink reflects IR
                f = img.astype(np.float32)
                gray = np.clip((0.5 * f[..., 0] + 0.3 * f[..., 1] + 0.2 * f[..., 2]) * 1.05, 0, 255)
                img = cv2.cvtColor(gray.astype(np.uint8), cv2.COLOR_GRAY2BGR)
            levels = [(img, alpha)]
            while levels[-1][0].shape[1] > 48:
                i, a = levels[-1]
                levels.append((cv2.pyrDown(i), cv2.pyrDown(a)))
            self._levels[night] = levels
        return self._levels[night]


@dataclass(frozen=True, slots=True)
class Decal:
    """A flat patch on one face of a solid: a colour, or a plate. Corners are local coordinates,
    ordered top-left, top-right, bottom-right, bottom-left as seen from outside the face."""

    face: int
    corners: np.ndarray
    color: Color = (0, 0, 0)
    texture: Texture | None = None
    glow: float = 0.0  # lamps: how strongly they flare at night


@dataclass(frozen=True, slots=True)
class Solid:
    vertices: np.ndarray  # (8, 3) local
    colors: tuple[Color, ...]  # one per face
    decals: tuple[Decal, ...] = ()
    layer: int = 1  # 0 is drawn before the rest of its vehicle (wheels, chassis under the body)


@dataclass(frozen=True, slots=True)
class Vehicle:
    """Solids in the vehicle frame: x across, y up, z from the front bumper (0) back to `length`."""

    kind: str
    solids: tuple[Solid, ...]
    length: float
    width: float
    plates: tuple[RenderedPlate, ...] = ()


@dataclass(frozen=True, slots=True)
class Pose:
    """Where a vehicle is: front bumper centre at (x, z); heading -1 drives towards the front camera."""

    x: float
    z: float
    heading: int = -1

    def to_world(self, local: np.ndarray) -> np.ndarray:
        local = np.asarray(local, np.float64)
        if self.heading < 0:
            return np.stack([self.x + local[:, 0], local[:, 1], self.z + local[:, 2]], axis=1)
        return np.stack([self.x - local[:, 0], local[:, 1], self.z - local[:, 2]], axis=1)


def hexa(
    x: tuple[float, float],
    y: tuple[float, float],
    z: tuple[float, float],
    top_z: tuple[float, float] | None = None,
    top_inset: float = 0.0,
    top_y: tuple[float, float] | None = None,
) -> np.ndarray:
    """Box vertices; `top_z`, `top_inset` and `top_y` (front, back) slant the upper face: windscreens,
    cab roofs, a bonnet lower at the front."""
    (x0, x1), (y0, y1), (z0, z1) = x, y, z
    tz0, tz1 = top_z or z
    ty0, ty1 = top_y or (y1, y1)
    i = top_inset
    bottom = [(x0, y0, z0), (x1, y0, z0), (x1, y0, z1), (x0, y0, z1)]
    top = [(x0 + i, ty0, tz0), (x1 - i, ty0, tz0), (x1 - i, ty1, tz1), (x0 + i, ty1, tz1)]
    return np.array(bottom + top, np.float64)


def face_patch(vertices: np.ndarray, face: int, u: tuple[float, float], v: tuple[float, float]) -> np.ndarray:
    """Corners of a patch on a face, given as fractions across (u, left to right as seen from outside)
    and up (v, bottom to top); lifted 5 mm off the face so it is never hidden by it."""
    bl, br, tr, tl = vertices[list(FACES[face])]
    centre = vertices.mean(axis=0)
    lift = np.cross(br - bl, tl - bl)
    lift = lift / (np.linalg.norm(lift) + 1e-12)
    lift = 0.005 * (lift if lift @ (bl - centre) > 0 else -lift)

    def at(a: float, b: float) -> np.ndarray:
        return (1 - b) * ((1 - a) * bl + a * br) + b * ((1 - a) * tl + a * tr) + lift

    return np.array([at(u[0], v[1]), at(u[1], v[1]), at(u[1], v[0]), at(u[0], v[0])])


def _plate_decals(
    solid: np.ndarray, face: int, plate: RenderedPlate, centre: tuple[float, float], mount: Color | None
) -> list[Decal]:
    """A plate of its real size (from its style) centred at (x, y) metres on a vertical face, on a
    `mount` (plastic holder or recess) 15 mm bigger all round; None mounts it bare."""
    w_m, h_m = (v / 1000 for v in get_style(plate.style).size_mm)
    bl, br, _, tl = solid[list(FACES[face])]
    face_w, face_h = float(np.linalg.norm(br - bl)), float(tl[1] - bl[1])
    sign = 1 if face == FRONT else -1  # the rear is seen from behind: its "left" is +x
    u_mid, v_mid = 0.5 + sign * centre[0] / face_w, (centre[1] - bl[1]) / face_h

    def patch(w: float, h: float) -> np.ndarray:
        return face_patch(
            solid,
            face,
            (u_mid - w / face_w / 2, u_mid + w / face_w / 2),
            (v_mid - h / face_h / 2, v_mid + h / face_h / 2),
        )

    plate_decal = Decal(face, patch(w_m, h_m), texture=Texture(plate))
    return [plate_decal] if mount is None else [Decal(face, patch(w_m + 0.03, h_m + 0.03), mount), plate_decal]


def _mount(rng: np.random.Generator, body: Color) -> Color | None:
    """How a car carries its plate: a black dealer holder, a recess in shadow, or screwed on bare."""
    kind = int(rng.choice(3, p=[0.5, 0.35, 0.15]))
    if kind == 2:
        return None
    if kind == 0:
        return (28, 28, 30)
    b, g, r = (int(c * 0.55) for c in body)
    return (b, g, r)


GLASS: Color = (62, 50, 42)
GLASS_SHINE: Color = (120, 108, 100)
TYRE: Color = (28, 28, 30)
TRIM: Color = (40, 40, 42)
HEADLAMP: Color = (235, 232, 225)
TAIL_LAMP: Color = (35, 30, 185)
TAIL_GLOW = 0.2  # LED tail lamps give off little near-infrared: a faint flare at night


def _patch(
    vertices: np.ndarray, face: int, u: tuple[float, float], v: tuple[float, float], color: Color, glow: float = 0.0
) -> Decal:
    return Decal(face, face_patch(vertices, face, u, v), color, glow=glow)


def make_car(rng: np.random.Generator, front: RenderedPlate | None, rear: RenderedPlate | None) -> Vehicle:
    """A saloon/hatchback: body, glass cabin, mirrors, wheels, lamps, grille and up to two plates."""
    color = CAR_COLORS[int(rng.integers(len(CAR_COLORS)))]
    length, width = rng.uniform(4.0, 4.7), rng.uniform(1.72, 1.86)
    hw, top = width / 2, rng.uniform(0.76, 0.88)
    cabin_top = top + rng.uniform(0.55, 0.66)
    body_v = hexa((-hw, hw), (0.2, top), (0.0, length), top_y=(top - 0.08, top))
    decals = [
        _patch(body_v, FRONT, (0.0, 1.0), (0.0, 0.2), TRIM),
        _patch(body_v, FRONT, (0.3, 0.7), (0.0, 0.12), (25, 25, 25)),
        _patch(body_v, FRONT, (0.3, 0.7), (0.62, 0.9), (35, 35, 38)),
        _patch(body_v, FRONT, (0.32, 0.68), (0.72, 0.74), (80, 80, 85)),
        _patch(body_v, FRONT, (0.32, 0.68), (0.8, 0.82), (80, 80, 85)),
        _patch(body_v, FRONT, (0.485, 0.515), (0.74, 0.8), (190, 190, 195)),
        _patch(body_v, FRONT, (0.03, 0.27), (0.64, 0.93), (150, 150, 155)),
        _patch(body_v, FRONT, (0.73, 0.97), (0.64, 0.93), (150, 150, 155)),
        _patch(body_v, FRONT, (0.05, 0.16), (0.69, 0.88), HEADLAMP, glow=1.0),
        _patch(body_v, FRONT, (0.84, 0.95), (0.69, 0.88), HEADLAMP, glow=1.0),
        _patch(body_v, BACK, (0.0, 1.0), (0.0, 0.18), TRIM),
        _patch(body_v, BACK, (0.02, 0.25), (0.62, 0.9), TAIL_LAMP, glow=TAIL_GLOW),
        _patch(body_v, BACK, (0.75, 0.98), (0.62, 0.9), TAIL_LAMP, glow=TAIL_GLOW),
    ]
    plates = []
    if front is not None:
        decals += _plate_decals(body_v, FRONT, front, (0.0, 0.43), _mount(rng, color))
        plates.append(front)
    if rear is not None:
        decals += _plate_decals(body_v, BACK, rear, (0.0, 0.48), _mount(rng, color))
        plates.append(rear)
    body = Solid(body_v, (color,) * 6, tuple(decals))
    c0, c1 = 0.3 * length, 0.82 * length
    cabin_v = hexa((-hw + 0.06, hw - 0.06), (top, cabin_top), (c0, c1), top_z=(c0 + 0.8, c1 - 0.45), top_inset=0.12)
    cabin = Solid(
        cabin_v,
        (GLASS, GLASS, GLASS, GLASS, color, color),
        (
            _patch(cabin_v, FRONT, (0.55, 0.92), (0.35, 0.95), GLASS_SHINE),
            _patch(cabin_v, FRONT, (0.0, 1.0), (0.93, 1.0), color),
            _patch(cabin_v, BACK, (0.05, 0.3), (0.3, 0.9), GLASS_SHINE),
        ),
    )
    mirrors = tuple(
        Solid(hexa((x, x + 0.14), (top + 0.08, top + 0.24), (c0 + 0.55, c0 + 0.68)), (color,) * 6)
        for x in (-hw - 0.12, hw - 0.02)
    )
    wheels = tuple(
        Solid(
            hexa((-hw - 0.02, -hw + 0.2) if sx < 0 else (hw - 0.2, hw + 0.02), (0.0, 0.62), (zc - 0.32, zc + 0.32)),
            (TYRE,) * 6,
            layer=0,
        )
        for sx in (-1, 1)
        for zc in (0.85, length - 0.95)
    )
    return Vehicle("car", (*wheels, body, cabin, *mirrors), length, width, tuple(plates))


def make_truck(rng: np.random.Generator, front: RenderedPlate, trailer: RenderedPlate) -> Vehicle:
    """A tractor unit with a 13.6 m curtain-sider semitrailer; the trailer plate hangs on the rear light bar."""
    cab_color = TRUCK_COLORS[int(rng.integers(len(TRUCK_COLORS)))]
    curtain = CURTAIN_COLORS[int(rng.integers(len(CURTAIN_COLORS)))]
    length = 17.6
    cab_v = hexa((-1.25, 1.25), (0.45, 3.35), (0.0, 2.3), top_z=(0.15, 2.3))
    cab = Solid(
        cab_v,
        (cab_color,) * 6,
        (
            _patch(cab_v, FRONT, (0.04, 0.96), (0.52, 0.9), GLASS),
            _patch(cab_v, FRONT, (0.6, 0.93), (0.6, 0.88), GLASS_SHINE),
            _patch(cab_v, FRONT, (0.16, 0.84), (0.2, 0.46), (45, 45, 48)),
            *(_patch(cab_v, FRONT, (0.17, 0.83), (v, v + 0.01), (90, 90, 95)) for v in (0.25, 0.31, 0.37, 0.43)),
            _patch(cab_v, FRONT, (0.0, 1.0), (0.0, 0.14), TRIM),
            _patch(cab_v, FRONT, (0.02, 0.14), (0.16, 0.22), HEADLAMP, glow=1.0),
            _patch(cab_v, FRONT, (0.86, 0.98), (0.16, 0.22), HEADLAMP, glow=1.0),
            *_plate_decals(cab_v, FRONT, front, (0.0, 0.62), None),
        ),
    )
    chassis = Solid(hexa((-1.0, 1.0), (0.45, 1.1), (2.3, 6.0)), (TRIM,) * 6, layer=0)
    box_v = hexa((-1.27, 1.27), (1.15, 4.0), (4.0, length - 0.1))
    box = Solid(
        box_v,
        (curtain, (200, 200, 200), curtain, curtain, (190, 190, 190), TRIM),
        (
            _patch(box_v, BACK, (0.495, 0.505), (0.02, 0.98), (90, 90, 90)),
            _patch(box_v, BACK, (0.0, 1.0), (0.0, 0.04), (40, 40, 200)),
        ),
    )
    bar_v = hexa((-1.22, 1.22), (0.5, 1.08), (length - 0.3, length))
    bar = Solid(
        bar_v,
        (TRIM,) * 6,
        (
            _patch(bar_v, BACK, (0.02, 0.2), (0.35, 0.8), TAIL_LAMP, glow=TAIL_GLOW),
            _patch(bar_v, BACK, (0.8, 0.98), (0.35, 0.8), TAIL_LAMP, glow=TAIL_GLOW),
            *_plate_decals(bar_v, BACK, trailer, (0.45, 0.78), None),
        ),
    )
    wheels = tuple(
        Solid(hexa((-1.25, -0.95) if sx < 0 else (0.95, 1.25), (0.0, 1.0), (zc - 0.5, zc + 0.5)), (TYRE,) * 6, layer=0)
        for sx in (-1, 1)
        for zc in (0.9, 4.2, 5.5, 13.6, 14.9, 16.2)
    )
    return Vehicle("truck", (*wheels, chassis, box, bar, cab), length, 2.55, (front, trailer))


CAR_COLORS: tuple[Color, ...] = (
    (200, 200, 205),
    (40, 40, 45),
    (150, 150, 155),
    (240, 240, 240),
    (40, 40, 150),
    (130, 70, 20),
    (60, 90, 60),
    (30, 60, 110),
    (170, 140, 110),
)
TRUCK_COLORS: tuple[Color, ...] = ((235, 235, 235), (40, 40, 170), (160, 90, 20), (60, 60, 65))
CURTAIN_COLORS: tuple[Color, ...] = ((215, 215, 210), (120, 90, 40), (60, 110, 60), (200, 200, 200))
