"""``point_info`` and ``nonfixated_matches`` records with the released field names and conventions.

See :mod:`taskonomy.datamodules.cameras` for the conventions: ``camera_rotation_final`` is an
extrinsic xyz Euler angle of the OpenGL-frame camera-to-world rotation, the fixated
``point_location`` projects to the image centre, and the vanishing points follow the released
record exactly. ``camera_rotation_original`` is the level camera with the same heading (as a
scanner on a tripod would hold it) and ``camera_rotation_from_original_to_final`` is the rotation
D with R_final = D · R_original, both as extrinsic xyz Euler angles (the relation holds on the
released record). ``bounding_box_ranges`` is the room box with the released x/y swap
(:func:`taskonomy.datamodules.cameras.room_box_world` undoes it).
"""

from __future__ import annotations

import hashlib
import math
from typing import Any

import numpy as np
from scipy.spatial.transform import Rotation

from taskonomy.datamodules.cameras import (
    Camera,
    bounding_box_ranges,
    camera_from_pose,
    vanishing_points_gaussian_sphere,
    vanishing_points_image,
)

_UP = np.array([0.0, 0.0, 1.0])


def look_at_rotation(forward: np.ndarray) -> np.ndarray:
    """OpenGL-frame camera-to-world rotation looking along ``forward`` with no roll (z up)."""
    f = np.asarray(forward, dtype=np.float64)
    f = f / np.linalg.norm(f)
    right = np.cross(f, _UP)
    if np.linalg.norm(right) < 1e-8:  # looking straight up or down: any heading will do
        right = np.array([1.0, 0.0, 0.0])
    right /= np.linalg.norm(right)
    up = np.cross(right, f)
    return np.stack([right, up, -f], axis=1)


def look_at_camera(centre: np.ndarray, target: np.ndarray, fov: float,
                   resolution: int) -> Camera:
    """A roll-free camera at ``centre`` whose optical axis passes through ``target``."""
    return camera_from_pose(centre, look_at_rotation(np.asarray(target) - np.asarray(centre)),
                            fov, resolution)


def uuid_hex(*parts: object) -> str:
    """A stable 32-hex-digit id from its parts (the released ids look like md5 digests)."""
    return hashlib.md5("/".join(map(str, parts)).encode()).hexdigest()


def _euler(matrix: np.ndarray) -> list[float]:
    return [float(v) for v in Rotation.from_matrix(matrix).as_euler("xyz")]


def point_info_record(camera: Camera, *, point_id: int, view_id: int, camera_uuid: str,
                      room_uuid: str, point_location: np.ndarray, point_normal: np.ndarray,
                      room_bounds: np.ndarray, nonfixated_points: list[int]) -> dict[str, Any]:
    """The ``point_info`` record of one fixated view.

    Args:
        camera: The view's camera (its optical axis passes through ``point_location``).
        point_id: Fixated point id (written as the string ``point_uuid``).
        view_id: View index of this point.
        camera_uuid: Id of the camera.
        room_uuid: Id of the room.
        point_location: Fixated 3D point (world).
        point_normal: Unit world normal of the surface at the fixated point.
        room_bounds: ``[[xmin, ymin, zmin], [xmax, ymax, zmax]]`` of the room.
        nonfixated_points: Ids of the other points visible in this image.
    """
    final = camera.rotation_gl
    forward = -final[:, 2]
    level = forward.copy()
    level[2] = 0.0
    original = look_at_rotation(level if np.linalg.norm(level) > 1e-6 else forward)
    centre = camera.centre
    point = np.asarray(point_location, dtype=np.float64)
    normal = np.asarray(point_normal, dtype=np.float64)
    to_camera = centre - point
    distance = float(np.linalg.norm(to_camera))
    fov = 2.0 * math.atan((camera.width / 2.0) / camera.focal)
    cosine = float(np.clip(normal @ to_camera / max(distance, 1e-12), -1.0, 1.0))
    return {
        "vanishing_points_gaussian_sphere": vanishing_points_gaussian_sphere(camera),
        "nonfixated_points_in_view": [int(p) for p in nonfixated_points],
        "point_pitch": float(math.asin(float(np.clip(forward[2], -1.0, 1.0)))),
        "camera_rotation_from_original_to_final": _euler(final @ original.T),
        "camera_location": [float(v) for v in centre],
        "camera_rotation_original": _euler(original),
        "view_id": int(view_id),
        "point_location": [float(v) for v in point],
        "camera_distance": distance,
        "bounding_box_ranges": bounding_box_ranges(room_bounds[0], room_bounds[1]),
        "obliqueness_angle": float(math.acos(cosine)),
        "resolution": int(camera.width),
        "point_uuid": str(point_id),
        "point_normal": [float(v) for v in normal],
        "camera_rotation_final": _euler(final),
        "vanishing_points_image": vanishing_points_image(camera),
        "camera_uuid": camera_uuid,
        "field_of_view_rads": float(fov),
        "room": room_uuid,
    }


def nonfixated_matches_record(point_id: int, point_location: np.ndarray,
                              sightings: list[dict[str, Any]]) -> dict[str, Any]:
    """The per-point ``nonfixated_matches`` record.

    Args:
        point_id: The point.
        point_location: Its world position.
        sightings: One dict per image that sees the point, with ``point_uuid`` (the image's own
            fixated point), ``view_id``, ``camera_uuid``, ``nonfixated_pixel_x`` and
            ``nonfixated_pixel_y``.
    """
    return {
        "point_uuid": str(point_id),
        "point_location": [float(v) for v in point_location],
        "views": sightings,
    }
