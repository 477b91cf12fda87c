"""One synthetic building: rooms, fixated points, camera views, and every file of every view.

A building is a pure function of ``(name, seed)`` and the settings: its generator is seeded with
the master seed and a stable hash of the name, so the worker that renders it does not matter.

Points and views follow the released data: a fixated point is a surface point; each of its views
is a camera at head height in the same room whose optical axis passes through the point (so it
projects to the image centre) with nothing in between; other points that a view also sees are
listed in its ``nonfixated_points_in_view`` and in their ``nonfixated_matches`` files.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from taskonomy.datamodules.cameras import Camera
from taskonomy.datamodules.domains import encode_domain, get_domain
from taskonomy.datamodules.synth import raycast
from taskonomy.datamodules.synth.labels import view_labels
from taskonomy.datamodules.synth.point_info import (
    look_at_camera,
    nonfixated_matches_record,
    point_info_record,
    uuid_hex,
)
from taskonomy.datamodules.synth.render import render_view
from taskonomy.datamodules.synth.scene import Scene, generate_room

#: Field of view range (radians); the released mean is about 61° (1.07 rad).
FOV_RANGE = (0.85, 1.28)
#: Camera height range above the floor (m).
HEIGHT_RANGE = (1.1, 1.75)
#: Distance range between a camera and its fixated point (m).
DISTANCE_RANGE = (0.9, 6.5)
#: Largest angle between the surface normal and the direction to the camera.
MAX_OBLIQUENESS = math.radians(78.0)
#: Room layouts drawn for a building before giving up on placing its fixated points.
LAYOUT_ATTEMPTS = 8


@dataclass
class View:
    """One fixated view."""

    point: int
    view: int
    camera: Camera
    camera_uuid: str


@dataclass
class FixatedPoint:
    """A fixated point: its room, location, normal and views."""

    point: int
    room: int
    location: np.ndarray
    normal: np.ndarray
    views: list[View]


def building_rng(seed: int, name: str) -> np.random.Generator:
    """The generator of a building: seeded by the master seed and a stable hash of its name."""
    return np.random.default_rng([int(seed), zlib.crc32(name.encode())])


def _cast(scene: Scene, origin: np.ndarray, direction: np.ndarray) -> tuple[float, int,
                                                                             np.ndarray]:
    out = raycast.trace_rays(scene.prims, scene.materials, scene.lights, origin,
                             direction.reshape(1, 3), shade=False)
    return float(out["t"][0]), int(out["index"][0]), out["normal"][0]


def _camera_position(scene: Scene, rng: np.random.Generator) -> np.ndarray | None:
    xy = scene.free_floor_point(rng)
    if xy is None:
        return None
    return np.array([xy[0], xy[1], scene.bounds[0][2] + rng.uniform(*HEIGHT_RANGE)])


def _sees(scene: Scene, centre: np.ndarray, point: np.ndarray, normal: np.ndarray) -> bool:
    offset = centre - point
    distance = float(np.linalg.norm(offset))
    if not DISTANCE_RANGE[0] <= distance <= DISTANCE_RANGE[1]:
        return False
    if float(normal @ offset) / distance < math.cos(MAX_OBLIQUENESS):
        return False
    return bool(raycast.segments_visible(scene.prims, centre.reshape(1, 3), point.reshape(1, 3),
                                         0.01)[0])


def plan_point(scene: Scene, rng: np.random.Generator, point_id: int, room: int, views: int,
               resolution: int, building: str) -> FixatedPoint | None:
    """Pick a fixated point and ``views`` cameras that see it, or None after many tries."""
    for _ in range(60):
        centre = _camera_position(scene, rng)
        if centre is None:
            return None
        furniture = np.nonzero(scene.objects > 0)[0]
        if len(furniture) and rng.random() < 0.8:
            # Mostly look at furniture, as people placing a camera would.
            target = scene.prims[int(rng.choice(furniture)), 1:4] + rng.normal(0.0, 0.05, 3)
            direction = target - centre
            direction /= np.linalg.norm(direction)
        else:
            yaw = rng.uniform(-math.pi, math.pi)
            pitch = rng.uniform(-0.65, 0.15)
            direction = np.array([math.cos(pitch) * math.cos(yaw),
                                  math.cos(pitch) * math.sin(yaw), math.sin(pitch)])
        t, index, normal = _cast(scene, centre, direction)
        if index < 0:
            continue
        point = centre + t * direction
        if not _sees(scene, centre, point, normal):
            continue
        centres = [centre]
        for _ in range(80):
            if len(centres) == views:
                break
            other = _camera_position(scene, rng)
            if other is None:
                break
            if min(float(np.linalg.norm(other - c)) for c in centres) < 0.4:
                continue
            if _sees(scene, other, point, normal):
                centres.append(other)
        if len(centres) < views:
            continue
        planned = []
        for view_id, position in enumerate(centres):
            camera = look_at_camera(position, point, float(rng.uniform(*FOV_RANGE)), resolution)
            planned.append(View(point_id, view_id, camera,
                                uuid_hex(building, "camera", point_id, view_id)))
        return FixatedPoint(point_id, room, point, normal, planned)
    return None


def plan_building(name: str, seed: int, resolution: int, points: int, views: int
                  ) -> tuple[list[Scene], list[FixatedPoint]]:
    """Rooms and fixated points (with their cameras) of one building."""
    rng = building_rng(seed, name)
    # A cramped layout (furniture blocking the views) can leave too few points that enough
    # cameras see; draw a new layout from the same stream then, so the building stays
    # deterministic and every layout that worked before is unchanged.
    for _ in range(LAYOUT_ATTEMPTS):
        planned = _plan_layout(name, rng, resolution, points, views)
        if planned is not None:
            return planned
    raise RuntimeError(
        f"building {name!r}: could not place {points} fixated points with {views} views each "
        f"in {LAYOUT_ATTEMPTS} room layouts; ask for fewer points or views per building")


def _plan_layout(name: str, rng: np.random.Generator, resolution: int, points: int, views: int
                 ) -> tuple[list[Scene], list[FixatedPoint]] | None:
    """One room layout and its fixated points, or None when the points cannot be placed."""
    # One to three rooms, with at least three points per room so views share points.
    room_count = max(1, min(int(rng.integers(1, 4)), points // 3))
    scenes: list[Scene] = []
    x = 0.0
    for _ in range(room_count):
        scene = generate_room(rng, np.array([x, 0.0, 0.0]))
        scenes.append(scene)
        x = float(scene.bounds[1][0]) + 1.0  # rooms side by side with a 1 m gap
    fixated: list[FixatedPoint] = []
    attempts = 0
    while len(fixated) < points:
        attempts += 1
        if attempts > points * 20:
            return None
        room = (len(fixated) + attempts) % room_count
        planned = plan_point(scenes[room], rng, len(fixated), room, views, resolution, name)
        if planned is not None:
            fixated.append(planned)
    return scenes, fixated


def _sightings(scenes: list[Scene], fixated: list[FixatedPoint]
               ) -> tuple[dict[tuple[int, int], list[int]], dict[int, list[dict]]]:
    """Which points each image sees, and every image (with pixel) that sees each point."""
    in_view: dict[tuple[int, int], list[int]] = {}
    seen_by: dict[int, list[dict]] = {p.point: [] for p in fixated}
    for owner in fixated:
        for view in owner.views:
            camera = view.camera
            others = [p for p in fixated if p.room == owner.room]
            locations = np.array([p.location for p in others])
            pixels, depth = camera.project(locations)
            inside = ((depth > 0.05) & (pixels[:, 0] >= 0) & (pixels[:, 0] < camera.width)
                      & (pixels[:, 1] >= 0) & (pixels[:, 1] < camera.height))
            origins = np.repeat(camera.centre.reshape(1, 3), len(others), axis=0)
            visible = raycast.segments_visible(scenes[owner.room].prims, origins, locations, 0.01)
            listed = []
            for k, other in enumerate(others):
                if not (inside[k] and visible[k]):
                    continue
                if other.point != owner.point:
                    listed.append(other.point)
                seen_by[other.point].append({
                    "point_uuid": str(owner.point),
                    "view_id": view.view,
                    "camera_uuid": view.camera_uuid,
                    "nonfixated_pixel_x": float(pixels[k, 0]),
                    "nonfixated_pixel_y": float(pixels[k, 1]),
                })
            in_view[(owner.point, view.view)] = listed
    return in_view, seen_by


class _FolderWriter:
    """Writes domain files straight into a building folder that is not under its final name.

    The caller renames the whole folder into place once every file is written (and discards it
    after an interruption), so the per-file temporary file and rename that
    :func:`domains.write_domain_file` does for files in final folders would be wasted work: a
    third of the file-system calls of a view.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        self._made: set[str] = set()

    def __call__(self, domain: str, point: int | str, view: int | str, value: object) -> None:
        spec = get_domain(domain)
        folder = self.directory / spec.name
        if spec.name not in self._made:
            folder.mkdir(parents=True, exist_ok=True)
            self._made.add(spec.name)
        (folder / spec.file_name(point, view)).write_bytes(encode_domain(domain, value))


def write_building(directory: Path, name: str, seed: int, resolution: int, points: int,
                   views: int, on_view: Callable[[], None] | None = None) -> int:
    """Render and write every file of one building into ``directory``.

    Args:
        directory: Folder to fill, not under its final name: the caller renames it into place
            when this returns and discards it if this is interrupted.
        name: Building name (part of the seed).
        seed: Master seed.
        resolution: Image side in pixels.
        points: Fixated points.
        views: Views per fixated point.
        on_view: Called after each written view (progress).

    Returns:
        The number of views written.
    """
    scenes, fixated = plan_building(name, seed, resolution, points, views)
    in_view, seen_by = _sightings(scenes, fixated)
    rooms = [uuid_hex(name, "room", k) for k in range(len(scenes))]
    write = _FolderWriter(directory)
    written = 0
    for fixed in fixated:
        scene = scenes[fixed.room]
        for view in fixed.views:
            buffers = render_view(scene, view.camera)
            for domain, value in view_labels(buffers, scene.room_type).items():
                write(domain, fixed.point, view.view, value)
            record = point_info_record(
                view.camera, point_id=fixed.point, view_id=view.view,
                camera_uuid=view.camera_uuid, room_uuid=rooms[fixed.room],
                point_location=fixed.location, point_normal=fixed.normal,
                room_bounds=scene.bounds, nonfixated_points=in_view[(fixed.point, view.view)],
            )
            write("point_info", fixed.point, view.view, record)
            written += 1
            if on_view is not None:
                on_view()
        write("nonfixated_matches", fixed.point, "all",
              nonfixated_matches_record(fixed.point, fixed.location, seen_by[fixed.point]))
    return written
