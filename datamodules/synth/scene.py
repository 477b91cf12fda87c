"""Procedural rooms: a box shell, furniture built from primitives, textures and point lights.

World axes: z up, metres. A room is the box ``bounds[0] .. bounds[1]``. Furniture templates
build each semantic class of :mod:`.classes` from boxes, spheres and cylinders in an object frame
(origin at the floor centre of the footprint, front facing +y), then the template is rotated about
z and placed. Parts of one template never share a coplanar face (legs sink 1 cm into seats), which
would make ray ties between backends.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from taskonomy.datamodules.synth import raycast
from taskonomy.datamodules.synth.classes import BACKGROUND, ROOM_TYPES, semantic_label

_IDENTITY = np.eye(3)


def _yaw(angle: float) -> np.ndarray:
    c, s = math.cos(angle), math.sin(angle)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def _tilt_x(angle: float) -> np.ndarray:
    c, s = math.cos(angle), math.sin(angle)
    return np.array([[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]])


@dataclass
class Part:
    """One primitive of a template, in the template's frame."""

    kind: int
    centre: tuple[float, float, float]
    half: tuple[float, float, float]
    material: np.ndarray
    label: int
    rotation: np.ndarray = field(default_factory=lambda: _IDENTITY)


@dataclass
class Template:
    """A piece of furniture: parts, footprint half sizes (x, y) and an optional top surface."""

    parts: list[Part]
    footprint: tuple[float, float]
    top: float | None = None  # height of a surface small objects can stand on
    top_half: tuple[float, float] = (0.0, 0.0)


@dataclass
class Scene:
    """One room, ready for the ray caster.

    Attributes:
        prims: Primitive table (N×17, see :data:`raycast.PRIM_COLUMNS`); row 0 is the shell.
        materials: Material table (N×8).
        labels: Semantic label value per primitive.
        objects: Object instance id per primitive (0 = room shell and decoration).
        lights: Point lights (L×6: position, linear RGB intensity).
        bounds: ``[[xmin, ymin, zmin], [xmax, ymax, zmax]]`` of the room.
        room_type: Key of :data:`ROOM_TYPES`.
        footprints: Floor rectangles ``(xmin, ymin, xmax, ymax)`` taken by furniture.
    """

    prims: np.ndarray
    materials: np.ndarray
    labels: np.ndarray
    objects: np.ndarray
    lights: np.ndarray
    bounds: np.ndarray
    room_type: str
    footprints: list[tuple[float, float, float, float]]

    def free_floor_point(self, rng: np.random.Generator, margin: float = 0.35,
                         tries: int = 200) -> np.ndarray | None:
        """A random (x, y) on the floor away from walls and furniture, or None.

        Candidates are drawn uniformly, x then y, until one is free; all ``tries`` are tested at
        once, and the generator then moves on by exactly the draws that a one-by-one search
        would have made, so the stream (and every later draw) does not depend on the batching.
        """
        lo, hi = self.bounds[0], self.bounds[1]
        state = rng.bit_generator.state
        draws = rng.random((tries, 2))
        low = np.array([lo[0] + margin, lo[1] + margin])
        high = np.array([hi[0] - margin, hi[1] - margin])
        points = low + (high - low) * draws  # what Generator.uniform(low, high) computes
        if self.footprints:
            rects = np.asarray(self.footprints, dtype=np.float64)
            x, y = points[:, :1], points[:, 1:]
            blocked = ((rects[:, 0] - margin < x) & (x < rects[:, 2] + margin)
                       & (rects[:, 1] - margin < y) & (y < rects[:, 3] + margin)).any(axis=1)
        else:
            blocked = np.zeros(tries, dtype=bool)
        free = np.flatnonzero(~blocked)
        used = int(free[0]) + 1 if len(free) else tries
        rng.bit_generator.state = state
        rng.random((used, 2))
        return points[used - 1].copy() if len(free) else None


def _colour(rng: np.random.Generator, base: tuple[float, float, float],
            jitter: float = 0.08) -> np.ndarray:
    return np.clip(np.asarray(base) + rng.uniform(-jitter, jitter, 3), 0.02, 0.95)


def _material(a: np.ndarray, b: np.ndarray | None = None, pattern: int = raycast.PLAIN,
              scale: float = 1.0) -> np.ndarray:
    b = a * 0.7 if b is None else b
    return np.concatenate([a, b, [pattern, scale]])


_WOOD = ((0.45, 0.3, 0.17), (0.6, 0.45, 0.3), (0.3, 0.2, 0.12), (0.7, 0.6, 0.45))
_FABRIC = ((0.55, 0.15, 0.12), (0.2, 0.3, 0.5), (0.35, 0.45, 0.3), (0.6, 0.55, 0.45),
           (0.3, 0.3, 0.32), (0.7, 0.5, 0.2))
_METAL = ((0.75, 0.75, 0.78), (0.2, 0.2, 0.22), (0.9, 0.9, 0.88))


def _pick(rng: np.random.Generator, options: tuple) -> tuple[float, float, float]:
    return options[int(rng.integers(len(options)))]


def _wood(rng: np.random.Generator) -> np.ndarray:
    a = _colour(rng, _pick(rng, _WOOD))
    return _material(a, a * 0.75, raycast.PLANKS, 6.0)


def _fabric(rng: np.random.Generator) -> np.ndarray:
    a = _colour(rng, _pick(rng, _FABRIC))
    return _material(a, a * 0.6, raycast.NOISE, 25.0)


def _plain(rng: np.random.Generator, options: tuple) -> np.ndarray:
    return _material(_colour(rng, _pick(rng, options), 0.04))


def _box(centre, half, material, label, rotation=_IDENTITY) -> Part:
    return Part(raycast.BOX, tuple(centre), tuple(half), material, label, rotation)


def _cyl(centre, radius, half_height, material, label, rotation=_IDENTITY) -> Part:
    return Part(raycast.CYLINDER, tuple(centre), (radius, radius, half_height), material, label,
                rotation)


def _sphere(centre, radius, material, label) -> Part:
    return Part(raycast.SPHERE, tuple(centre), (radius, radius, radius), material, label)


# --- templates: one function per class, object frame origin at the floor, front towards +y ----

def _chair(rng: np.random.Generator) -> Template:
    lab = semantic_label("chair")
    w, d, h = rng.uniform(0.2, 0.26), rng.uniform(0.2, 0.25), rng.uniform(0.42, 0.48)
    wood, seat = _wood(rng), (_fabric(rng) if rng.random() < 0.5 else _wood(rng))
    parts = [_box((0, 0, h), (w, d, 0.025), seat, lab)]
    for sx in (-1, 1):
        for sy in (-1, 1):
            parts.append(_box((sx * (w - 0.03), sy * (d - 0.03), (h - 0.015) / 2),
                              (0.02, 0.02, (h - 0.015) / 2), wood, lab))
    back_h = rng.uniform(0.3, 0.45)
    parts.append(_box((0, -d + 0.02, h + back_h / 2 + 0.01), (w, 0.02, back_h / 2), wood, lab))
    return Template(parts, (w, d))


def _couch(rng: np.random.Generator) -> Template:
    lab = semantic_label("couch")
    w, d = rng.uniform(0.8, 1.2), rng.uniform(0.4, 0.48)
    cloth = _fabric(rng)
    parts = [
        _box((0, 0, 0.22), (w, d, 0.2), cloth, lab),
        _box((0, -d + 0.1, 0.55), (w - 0.01, 0.11, 0.35), cloth, lab),
        _box((-w + 0.09, 0.01, 0.32), (0.1, d - 0.02, 0.31), cloth, lab),
        _box((w - 0.09, 0.01, 0.32), (0.1, d - 0.02, 0.31), cloth, lab),
    ]
    cushion = _fabric(rng)
    for sx in (-0.5, 0.5):
        parts.append(_box((sx * (w - 0.2), 0.05, 0.46), (w / 2 - 0.16, d - 0.14, 0.055),
                          cushion, lab))
    return Template(parts, (w, d))


def _bed(rng: np.random.Generator) -> Template:
    lab = semantic_label("bed")
    w, d = rng.uniform(0.5, 0.95), rng.uniform(0.95, 1.05)
    frame, sheet = _wood(rng), _fabric(rng)
    parts = [
        _box((0, 0, 0.15), (w, d, 0.15), frame, lab),
        _box((0, 0.02, 0.38), (w - 0.03, d - 0.04, 0.09), sheet, lab),
        _box((0, -d - 0.03, 0.55), (w + 0.02, 0.04, 0.55), frame, lab),
    ]
    pillow = _plain(rng, ((0.9, 0.9, 0.88), (0.8, 0.85, 0.9)))
    n = 2 if w > 0.7 else 1
    for k in range(n):
        x = 0.0 if n == 1 else (k - 0.5) * w
        parts.append(_box((x, -d + 0.25, 0.52), (0.3 if n == 2 else 0.4, 0.16, 0.06), pillow,
                          lab))
    return Template(parts, (w + 0.02, d + 0.07))


def _table(rng: np.random.Generator) -> Template:
    lab = semantic_label("dining table")
    w, d, h = rng.uniform(0.45, 0.9), rng.uniform(0.4, 0.55), rng.uniform(0.72, 0.78)
    wood = _wood(rng)
    parts = [_box((0, 0, h - 0.025), (w, d, 0.025), wood, lab)]
    round_legs = rng.random() < 0.5
    for sx in (-1, 1):
        for sy in (-1, 1):
            c = (sx * (w - 0.06), sy * (d - 0.06), (h - 0.04) / 2)
            if round_legs:
                parts.append(_cyl(c, 0.03, (h - 0.04) / 2, wood, lab))
            else:
                parts.append(_box(c, (0.03, 0.03, (h - 0.04) / 2), wood, lab))
    return Template(parts, (w, d), top=h, top_half=(w - 0.05, d - 0.05))


def _cabinet(rng: np.random.Generator, width: float | None = None,
             height: float | None = None) -> Template:
    """Background furniture with a top surface (counter, sideboard, nightstand)."""
    w = rng.uniform(0.3, 0.9) if width is None else width
    d = rng.uniform(0.22, 0.3)
    h = rng.uniform(0.5, 0.9) if height is None else height
    body = _wood(rng) if rng.random() < 0.6 else _plain(rng, _METAL + ((0.9, 0.88, 0.8),))
    parts = [_box((0, 0, h / 2), (w, d, h / 2), body, BACKGROUND)]
    handle = _plain(rng, _METAL)
    parts.append(_box((0, d + 0.01, h * 0.75), (min(0.1, w / 3), 0.012, 0.012), handle,
                      BACKGROUND))
    return Template(parts, (w, d), top=h, top_half=(w - 0.04, d - 0.04))


def _toilet(rng: np.random.Generator) -> Template:
    lab = semantic_label("toilet")
    white = _plain(rng, ((0.92, 0.92, 0.9), (0.85, 0.87, 0.9)))
    parts = [
        _cyl((0, 0.08, 0.2), 0.17, 0.2, white, lab),
        _cyl((0, 0.08, 0.42), 0.19, 0.02, white, lab),
        _box((0, -0.16, 0.6), (0.2, 0.09, 0.2), white, lab),
    ]
    return Template(parts, (0.21, 0.27))


def _fridge(rng: np.random.Generator) -> Template:
    lab = semantic_label("refrigerator")
    w, h = rng.uniform(0.3, 0.45), rng.uniform(1.6, 1.9)
    body = _plain(rng, _METAL)
    handle = _plain(rng, ((0.15, 0.15, 0.15),))
    parts = [
        _box((0, 0, h / 2), (w, 0.33, h / 2), body, lab),
        _box((w * 0.6, 0.345, h * 0.62), (0.015, 0.02, 0.2), handle, lab),
        _box((0, 0.335, h * 0.4), (w - 0.02, 0.008, 0.006), handle, lab),
    ]
    return Template(parts, (w, 0.36))


def _oven(rng: np.random.Generator) -> Template:
    lab = semantic_label("oven")
    body = _plain(rng, _METAL)
    glass = _plain(rng, ((0.08, 0.08, 0.1),))
    parts = [
        _box((0, 0, 0.45), (0.3, 0.3, 0.45), body, lab),
        _box((0, 0.305, 0.4), (0.24, 0.01, 0.18), glass, lab),
        _cyl((0.0, 0.0, 0.905), 0.09, 0.006, glass, lab),
    ]
    return Template(parts, (0.3, 0.32), top=0.9, top_half=(0.0, 0.0))


def _sink(rng: np.random.Generator) -> Template:
    lab = semantic_label("sink")
    white = _plain(rng, ((0.9, 0.9, 0.92), (0.75, 0.77, 0.8)))
    metal = _plain(rng, _METAL)
    parts = [
        _cyl((0, 0, 0.4), 0.06, 0.4, white, lab),
        _box((0, 0.03, 0.86), (0.26, 0.2, 0.07), white, lab),
        _cyl((0, -0.14, 1.0), 0.015, 0.09, metal, lab),
        _cyl((0, -0.09, 1.08), 0.012, 0.06, metal, lab, _tilt_x(math.pi / 2)),
    ]
    return Template(parts, (0.26, 0.23))


def _plant(rng: np.random.Generator, small: bool = False) -> Template:
    lab = semantic_label("potted plant")
    scale = 0.45 if small else 1.0
    r, h = 0.12 * scale, 0.15 * scale
    pot = _plain(rng, ((0.6, 0.3, 0.15), (0.85, 0.85, 0.8), (0.2, 0.2, 0.25)))
    leaves = _material(_colour(rng, (0.15, 0.4, 0.12)), _colour(rng, (0.3, 0.55, 0.15)),
                       raycast.NOISE, 30.0)
    parts = [_cyl((0, 0, h), r, h, pot, lab)]
    for k in range(int(rng.integers(2, 5))):
        angle = rng.uniform(0, 2 * math.pi)
        radius = rng.uniform(0.1, 0.18) * scale
        offset = rng.uniform(0, 0.08) * scale
        parts.append(_sphere((offset * math.cos(angle), offset * math.sin(angle),
                              2 * h + radius * 0.8 + k * 0.06 * scale), radius, leaves, lab))
    return Template(parts, (r + 0.05 * scale, r + 0.05 * scale))


def _vase(rng: np.random.Generator) -> Template:
    lab = semantic_label("vase")
    glaze = _plain(rng, ((0.2, 0.35, 0.6), (0.75, 0.2, 0.2), (0.9, 0.85, 0.7), (0.3, 0.5, 0.4)))
    r, h = rng.uniform(0.04, 0.07), rng.uniform(0.08, 0.13)
    return Template([_sphere((0, 0, r), r, glaze, lab),
                     _cyl((0, 0, 2 * r + h / 2 - 0.01), r * 0.45, h / 2, glaze, lab)], (r, r))


def _bottle(rng: np.random.Generator) -> Template:
    lab = semantic_label("bottle")
    glass = _plain(rng, ((0.1, 0.35, 0.12), (0.35, 0.2, 0.08), (0.6, 0.75, 0.8)))
    r, h = rng.uniform(0.03, 0.045), rng.uniform(0.08, 0.12)
    return Template([_cyl((0, 0, h), r, h, glass, lab),
                     _cyl((0, 0, 2 * h + 0.04), 0.012, 0.05, glass, lab)], (r, r))


def _book(rng: np.random.Generator) -> Template:
    lab = semantic_label("book")
    parts = []
    count = int(rng.integers(1, 4))
    for k in range(count):
        cover = _plain(rng, _FABRIC + ((0.1, 0.1, 0.4), (0.5, 0.1, 0.1)))
        t = rng.uniform(0.015, 0.03)
        parts.append(_box((rng.uniform(-0.01, 0.01), 0, 0.0005 + t + k * 2 * t + k * 0.002),
                          (0.1, 0.075, t), cover, lab, _yaw(rng.uniform(-0.3, 0.3))))
    return Template(parts, (0.11, 0.11))


def _microwave(rng: np.random.Generator) -> Template:
    lab = semantic_label("microwave")
    body = _plain(rng, _METAL)
    glass = _plain(rng, ((0.05, 0.05, 0.06),))
    return Template([_box((0, 0, 0.15), (0.24, 0.18, 0.15), body, lab),
                     _box((-0.04, 0.185, 0.15), (0.16, 0.008, 0.1), glass, lab)], (0.24, 0.19))


def _toaster(rng: np.random.Generator) -> Template:
    lab = semantic_label("toaster")
    body = _plain(rng, _METAL + ((0.7, 0.15, 0.1),))
    return Template([_box((0, 0, 0.1), (0.14, 0.08, 0.1), body, lab),
                     _box((0.145, 0, 0.15), (0.01, 0.015, 0.02), body, lab)], (0.15, 0.09))


def _clock(rng: np.random.Generator) -> Template:
    """A table clock: a disc standing upright (wall clocks reuse it rotated)."""
    lab = semantic_label("clock")
    face = _plain(rng, ((0.95, 0.95, 0.9),))
    rim = _plain(rng, ((0.1, 0.1, 0.1), (0.6, 0.45, 0.2)))
    r = rng.uniform(0.08, 0.15)
    up = _tilt_x(math.pi / 2)  # disc axis along y: faces the front
    return Template([_cyl((0, 0, r), r, 0.025, rim, lab, up),
                     _cyl((0, 0.02, r), r * 0.85, 0.01, face, lab, up),
                     _box((0, 0.033, r + r * 0.3), (0.006, 0.003, r * 0.3), rim, lab)], (r, 0.03))


def _tv(rng: np.random.Generator) -> Template:
    lab = semantic_label("tv")
    w, h = rng.uniform(0.35, 0.6), rng.uniform(0.22, 0.35)
    black = _plain(rng, ((0.04, 0.04, 0.05),))
    screen = _material(_colour(rng, (0.1, 0.15, 0.25), 0.05), _colour(rng, (0.2, 0.3, 0.4), 0.05),
                       raycast.NOISE, 4.0)
    parts = [_box((0, 0, h + 0.08), (w, 0.03, h), black, lab),
             _box((0, 0.035, h + 0.08), (w - 0.02, 0.006, h - 0.02), screen, lab),
             _box((0, 0, 0.04), (0.12, 0.08, 0.04), black, lab)]
    return Template(parts, (w, 0.08))


TEMPLATES = {
    "chair": _chair, "couch": _couch, "bed": _bed, "dining table": _table, "toilet": _toilet,
    "refrigerator": _fridge, "oven": _oven, "sink": _sink, "potted plant": _plant,
    "vase": _vase, "bottle": _bottle, "book": _book, "microwave": _microwave,
    "toaster": _toaster, "clock": _clock, "tv": _tv,
}
#: Classes that stand on a surface rather than on the floor.
SMALL = ("vase", "bottle", "book", "microwave", "toaster", "clock", "tv")
#: Floor classes that go against a wall.
AGAINST_WALL = ("couch", "bed", "refrigerator", "oven", "sink", "toilet")


class _Builder:
    def __init__(self) -> None:
        self.prims: list[np.ndarray] = []
        self.materials: list[np.ndarray] = []
        self.labels: list[int] = []
        self.objects: list[int] = []

    def add(self, kind: int, centre: np.ndarray, half: tuple[float, float, float],
            rotation: np.ndarray, material: np.ndarray, label: int, obj: int) -> None:
        row = np.zeros(len(raycast.PRIM_COLUMNS))
        row[0] = kind
        row[1:4] = centre
        row[4:7] = half
        row[7:16] = rotation.reshape(-1)
        row[16] = float(np.linalg.norm(half)) + 1e-3
        self.prims.append(row)
        self.materials.append(material)
        self.labels.append(label)
        self.objects.append(obj)

    def place(self, template: Template, position: np.ndarray, yaw: float, obj: int) -> None:
        rotation = _yaw(yaw)
        for part in template.parts:
            centre = position + rotation @ np.asarray(part.centre)
            self.add(part.kind, centre, part.half, rotation @ part.rotation, part.material,
                     part.label, obj)


def _footprint(position: np.ndarray, yaw: float, half: tuple[float, float]
               ) -> tuple[float, float, float, float]:
    c, s = abs(math.cos(yaw)), abs(math.sin(yaw))
    ex, ey = c * half[0] + s * half[1], s * half[0] + c * half[1]
    return (position[0] - ex, position[1] - ey, position[0] + ex, position[1] + ey)


def _overlaps(a: tuple[float, float, float, float], b: tuple[float, float, float, float],
              gap: float) -> bool:
    return not (a[2] + gap <= b[0] or b[2] + gap <= a[0] or a[3] + gap <= b[1]
                or b[3] + gap <= a[1])


def generate_room(rng: np.random.Generator, origin: np.ndarray,
                  room: str | None = None) -> Scene:
    """Generate one furnished room whose floor corner sits at ``origin``.

    Args:
        rng: Random generator (the room is a pure function of its state).
        origin: World position of the room's (xmin, ymin, floor) corner.
        room: Room type (a key of :data:`ROOM_TYPES`); random when None.
    """
    room = room or list(ROOM_TYPES)[int(rng.integers(len(ROOM_TYPES)))]
    size = np.array([rng.uniform(3.0, 6.5), rng.uniform(3.0, 6.0), rng.uniform(2.5, 3.1)])
    lo, hi = np.asarray(origin, dtype=float), np.asarray(origin, dtype=float) + size
    builder = _Builder()
    wall_a = _colour(rng, _pick(rng, ((0.85, 0.82, 0.75), (0.7, 0.78, 0.85), (0.8, 0.7, 0.6),
                                      (0.9, 0.9, 0.88), (0.65, 0.75, 0.6))), 0.04)
    wall = _material(wall_a, wall_a * 0.88, raycast.STRIPES if rng.random() < 0.4
                     else raycast.PLAIN, rng.uniform(2.0, 6.0))
    builder.add(raycast.ROOM, (lo + hi) / 2, tuple((hi - lo) / 2), _IDENTITY, wall, BACKGROUND, 0)
    # Floor and ceiling as slabs just inside the shell, so they get their own materials.
    if room in ("kitchen", "bathroom"):
        floor_a = _colour(rng, _pick(rng, ((0.85, 0.85, 0.82), (0.5, 0.5, 0.55))))
        floor = _material(floor_a, floor_a * 0.55, raycast.CHECKER, rng.uniform(2.0, 4.0))
    else:
        floor = _wood(rng)
    centre_xy = (lo[:2] + hi[:2]) / 2
    half_xy = (hi[:2] - lo[:2]) / 2
    builder.add(raycast.BOX, np.array([*centre_xy, lo[2] + 0.005]),
                (half_xy[0] + 0.05, half_xy[1] + 0.05, 0.005), _IDENTITY, floor, BACKGROUND, 0)
    ceiling = _material(_colour(rng, (0.92, 0.92, 0.9), 0.02))
    builder.add(raycast.BOX, np.array([*centre_xy, hi[2] - 0.005]),
                (half_xy[0] + 0.05, half_xy[1] + 0.05, 0.005), _IDENTITY, ceiling, BACKGROUND, 0)
    windows = _add_windows(builder, rng, lo, hi, int(rng.integers(0, 3)))
    floor_z = lo[2] + 0.01
    footprints: list[tuple[float, float, float, float]] = []
    surfaces: list[tuple[np.ndarray, float, tuple[float, float], float]] = []
    obj = 1

    def try_place(template: Template, against_wall: bool) -> bool:
        nonlocal obj
        half = template.footprint
        for _ in range(40):
            if against_wall:
                side = int(rng.integers(4))
                yaw = (0.0, math.pi / 2, math.pi, -math.pi / 2)[side]
                # Back against the wall; the template front (+y) faces into the room.
                if side == 0:
                    pos = [rng.uniform(lo[0] + half[0] + 0.05, hi[0] - half[0] - 0.05),
                           lo[1] + half[1] + 0.03]
                elif side == 1:
                    pos = [hi[0] - half[1] - 0.03,
                           rng.uniform(lo[1] + half[0] + 0.05, hi[1] - half[0] - 0.05)]
                elif side == 2:
                    pos = [rng.uniform(lo[0] + half[0] + 0.05, hi[0] - half[0] - 0.05),
                           hi[1] - half[1] - 0.03]
                else:
                    pos = [lo[0] + half[1] + 0.03,
                           rng.uniform(lo[1] + half[0] + 0.05, hi[1] - half[0] - 0.05)]
            else:
                yaw = rng.uniform(-math.pi, math.pi)
                pos = [rng.uniform(lo[0] + 0.6, hi[0] - 0.6), rng.uniform(lo[1] + 0.6,
                                                                         hi[1] - 0.6)]
            position = np.array([pos[0], pos[1], floor_z])
            rect = _footprint(position, yaw, half)
            inside = (rect[0] > lo[0] + 0.02 and rect[1] > lo[1] + 0.02
                      and rect[2] < hi[0] - 0.02 and rect[3] < hi[1] - 0.02)
            if not inside or any(_overlaps(rect, other, 0.15) for other in footprints):
                continue
            builder.place(template, position, yaw, obj)
            footprints.append(rect)
            if template.top is not None and template.top_half[0] > 0.05:
                surfaces.append((position, yaw, template.top_half, floor_z + template.top))
            obj += 1
            return True
        return False

    kinds = list(ROOM_TYPES[room]["furniture"])
    floor_kinds = [k for k in kinds if k not in SMALL]
    small_kinds = [k for k in kinds if k in SMALL]
    chosen = list(rng.choice(floor_kinds, size=min(len(floor_kinds), int(rng.integers(2, 5))),
                             replace=False))
    if "dining table" in chosen:  # chairs come with tables
        chosen += ["chair"] * int(rng.integers(1, 4))
    for name in chosen:
        if name == "potted plant":
            try_place(_plant(rng), against_wall=False)
        else:
            try_place(TEMPLATES[name](rng), against_wall=name in AGAINST_WALL)
    for _ in range(int(rng.integers(1, 3))):  # cabinets and counters carry small objects
        width = rng.uniform(0.4, 0.9)
        try_place(_cabinet(rng, width=width, height=rng.uniform(0.6, 0.92)), against_wall=True)
    # Small objects on surfaces.
    for _ in range(int(rng.integers(2, 6))):
        if not surfaces or not small_kinds:
            break
        position, yaw, top_half, top_z = surfaces[int(rng.integers(len(surfaces)))]
        name = small_kinds[int(rng.integers(len(small_kinds)))]
        template = TEMPLATES[name](rng)
        fx, fy = template.footprint
        if fx > top_half[0] or fy > top_half[1]:
            continue
        local = np.array([rng.uniform(-top_half[0] + fx, top_half[0] - fx),
                          rng.uniform(-top_half[1] + fy, top_half[1] - fy), 0.0])
        spot = position + _yaw(yaw) @ local
        spot[2] = top_z + 0.001
        builder.place(template, spot, yaw + rng.choice([0.0, rng.uniform(-0.6, 0.6)]), obj)
        obj += 1
    # Wall decoration: pictures (background) and sometimes a wall clock.
    for _ in range(int(rng.integers(0, 3))):
        _wall_item(builder, rng, lo, hi, _picture(rng), 0, windows)
    if "clock" in kinds and rng.random() < 0.5:
        _wall_item(builder, rng, lo, hi, _clock(rng), obj, windows)
        obj += 1
    lights = []
    for _ in range(int(rng.integers(1, 4))):
        spot = [rng.uniform(lo[0] + 0.5, hi[0] - 0.5), rng.uniform(lo[1] + 0.5, hi[1] - 0.5),
                hi[2] - rng.uniform(0.15, 0.5)]
        warmth = _colour(rng, (1.0, 0.93, 0.82), 0.05)
        lights.append([*spot, *(warmth * rng.uniform(0.9, 1.5))])
    return Scene(
        prims=np.array(builder.prims), materials=np.array(builder.materials),
        labels=np.array(builder.labels, dtype=np.int32),
        objects=np.array(builder.objects, dtype=np.int32), lights=np.array(lights),
        bounds=np.stack([lo, hi]), room_type=room, footprints=footprints,
    )


def _picture(rng: np.random.Generator) -> Template:
    frame = _plain(rng, ((0.1, 0.08, 0.05), (0.8, 0.7, 0.4), (0.9, 0.9, 0.9)))
    art = _material(_colour(rng, _pick(rng, _FABRIC), 0.2), _colour(rng, _pick(rng, _FABRIC), 0.2),
                    int(rng.choice([raycast.NOISE, raycast.STRIPES, raycast.CHECKER])),
                    rng.uniform(3.0, 12.0))
    w, h = rng.uniform(0.2, 0.5), rng.uniform(0.15, 0.4)
    return Template([_box((0, 0, h), (w, 0.015, h), frame, BACKGROUND),
                     _box((0, 0.012, h), (w - 0.03, 0.008, h - 0.03), art, BACKGROUND)], (w, 0.02))


#: A window on a wall: (side, start, end) along the wall, bottom and top heights above the floor.
WindowSpan = tuple[int, float, float, float, float]


def _wall_frame(side: int, lo: np.ndarray, hi: np.ndarray, along: float, offset: float
                ) -> tuple[np.ndarray, float]:
    """World (x, y) of a point ``along`` a wall at ``offset`` into the room, and the yaw facing in.

    Sides: 0 is the wall at ymin, 1 at xmax, 2 at ymax, 3 at xmin.
    """
    yaw = (0.0, math.pi / 2, math.pi, -math.pi / 2)[side]
    if side == 0:
        return np.array([along, lo[1] + offset]), yaw
    if side == 1:
        return np.array([hi[0] - offset, along]), yaw
    if side == 2:
        return np.array([along, hi[1] - offset]), yaw
    return np.array([lo[0] + offset, along]), yaw


def _wall_range(side: int, lo: np.ndarray, hi: np.ndarray) -> tuple[float, float]:
    return (float(lo[0]), float(hi[0])) if side in (0, 2) else (float(lo[1]), float(hi[1]))


def _add_windows(builder: _Builder, rng: np.random.Generator, lo: np.ndarray, hi: np.ndarray,
                 count: int) -> list[WindowSpan]:
    """Cut ``count`` windows (openings with a sill) into the walls."""
    spans: list[WindowSpan] = []
    sill = _plain(rng, ((0.95, 0.95, 0.93), (0.55, 0.4, 0.25)))
    for _ in range(count):
        side = int(rng.integers(4))
        start, end = _wall_range(side, lo, hi)
        width = rng.uniform(0.6, min(1.4, (end - start) - 1.0))
        centre = rng.uniform(start + 0.5 + width / 2, end - 0.5 - width / 2)
        bottom = rng.uniform(0.8, 1.0)
        top = min(bottom + rng.uniform(0.8, 1.3), hi[2] - lo[2] - 0.25)
        if any(s == side and not (centre + width / 2 < a - 0.3 or centre - width / 2 > b + 0.3)
               for s, a, b, _, _ in spans):
            continue
        spans.append((side, centre - width / 2, centre + width / 2, bottom, top))
        position, yaw = _wall_frame(side, lo, hi, centre, 0.0)
        rotation = _yaw(yaw)
        builder.add(raycast.WINDOW, np.array([*position, lo[2] + (bottom + top) / 2]),
                    (width / 2, 0.05, (top - bottom) / 2), rotation, sill, BACKGROUND, 0)
        ledge, _ = _wall_frame(side, lo, hi, centre, 0.06)
        builder.add(raycast.BOX, np.array([*ledge, lo[2] + bottom - 0.02]),
                    (width / 2 + 0.05, 0.06, 0.02), rotation, sill, BACKGROUND, 0)
    return spans


def _wall_item(builder: _Builder, rng: np.random.Generator, lo: np.ndarray, hi: np.ndarray,
               template: Template, obj: int, windows: list[WindowSpan]) -> None:
    """Hang a template on a random wall at eye height, facing into the room, off the windows."""
    half = template.footprint[0]
    for _ in range(20):
        side = int(rng.integers(4))
        start, end = _wall_range(side, lo, hi)
        along = rng.uniform(start + 0.6, end - 0.6)
        if any(s == side and a - half - 0.1 < along < b + half + 0.1 for s, a, b, _, _ in windows):
            continue
        position, yaw = _wall_frame(side, lo, hi, along, template.footprint[1] + 0.003)
        z = lo[2] + rng.uniform(1.3, 1.7)
        builder.place(template, np.array([position[0], position[1], z]), yaw, obj)
        return
