"""Pinhole cameras from Taskonomy ``point_info`` records.

Conventions of the released data (checked on a real record, see the tests):

- ``camera_rotation_final`` is an extrinsic xyz Euler angle (scipy ``Rotation.from_euler('xyz',
  r)``, transforms3d ``axes='sxyz'``). The matrix maps the camera's own axes to world axes; the
  camera looks down its −z axis with +y up (OpenGL style). ``camera_location`` is its centre.
- The focal length in pixels is ``f = (W/2) / tan(field_of_view_rads/2)``; the principal point is
  the image centre; pixels are square; ``resolution`` is the image side ``W``.
- The fixated ``point_location`` projects to the image centre.
- ``vanishing_points_gaussian_sphere`` holds unit directions in the OpenGL camera frame (x right,
  y up, z backwards): ``x`` is *minus* the world y axis, ``y`` is the world x axis and ``z`` the
  world z (up) axis. ``vanishing_points_image`` is not a perspective projection of those
  directions: it is ``(W/2 + f·v_x/(2 − v_z), W/2 − f·v_y/(2 − v_z))``, i.e. the direction's point
  on the unit sphere projected from the sphere point (0, 0, 2) onto the image plane, which stays
  finite for directions behind the camera. Both were fitted to the released record to 1e-13 px.
- ``bounding_box_ranges`` (the room box) swaps the horizontal axes: its ``x`` range runs along
  the world y axis and its ``y`` range along the world x axis (on the released record, the camera
  and the fixated point lie inside the box only when read that way). :func:`room_box_world`
  returns the box in world axes.

:class:`Camera` exposes the OpenCV convention (x right, y down, z forward) that users expect.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.spatial.transform import Rotation

#: Maps OpenGL camera axes (x right, y up, z backwards) to OpenCV ones (x right, y down, z forward).
GL_TO_CV = np.diag([1.0, -1.0, -1.0])

_REQUIRED = ("camera_location", "camera_rotation_final", "field_of_view_rads", "resolution")


@dataclass(frozen=True)
class Camera:
    """A pinhole camera in the OpenCV convention.

    Attributes:
        K: 3×3 intrinsics in pixels (square pixels, principal point at the image centre).
        world_to_camera: 4×4 rigid transform from world to camera coordinates (x right, y down,
            z forward).
        width: Image width in pixels.
        height: Image height in pixels.
    """

    K: np.ndarray
    world_to_camera: np.ndarray
    width: int
    height: int

    @property
    def camera_to_world(self) -> np.ndarray:
        """4×4 rigid transform from camera to world coordinates."""
        inverse = np.eye(4)
        rotation = self.world_to_camera[:3, :3]
        inverse[:3, :3] = rotation.T
        inverse[:3, 3] = -rotation.T @ self.world_to_camera[:3, 3]
        return inverse

    @property
    def centre(self) -> np.ndarray:
        """Camera centre in world coordinates."""
        return self.camera_to_world[:3, 3]

    @property
    def rotation_gl(self) -> np.ndarray:
        """3×3 rotation from the OpenGL camera frame (−z forward, +y up) to the world frame.

        This is the matrix of the released ``camera_rotation_final``.
        """
        return self.world_to_camera[:3, :3].T @ GL_TO_CV

    @property
    def focal(self) -> float:
        """Focal length in pixels."""
        return float(self.K[0, 0])

    def to_camera(self, points_world: np.ndarray) -> np.ndarray:
        """World points (N×3) to camera coordinates (N×3, OpenCV axes)."""
        points = np.asarray(points_world, dtype=np.float64).reshape(-1, 3)
        return points @ self.world_to_camera[:3, :3].T + self.world_to_camera[:3, 3]

    def project(self, points_world: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Project world points to pixels.

        Pixel (0, 0) is the centre of the top-left pixel's top-left corner, so the image centre
        is ``(W/2, H/2)``; pixel ``(u, v)`` lies in column ``floor(u)``, row ``floor(v)``.

        Args:
            points_world: N×3 (or 3) world coordinates.

        Returns:
            ``(pixels, depth)``: N×2 pixel coordinates (u right, v down) and the N z-depths
            (positive in front of the camera; pixels of points behind it are meaningless).
        """
        cam = self.to_camera(points_world)
        depth = cam[:, 2]
        with np.errstate(divide="ignore", invalid="ignore"):
            uvw = cam @ self.K.T
            pixels = uvw[:, :2] / uvw[:, 2:3]
        return pixels, depth

    def pixel_rays(self, pixels: np.ndarray) -> np.ndarray:
        """Unit world directions of the rays through pixel coordinates (N×2)."""
        pixels = np.asarray(pixels, dtype=np.float64).reshape(-1, 2)
        homogeneous = np.concatenate([pixels, np.ones((len(pixels), 1))], axis=1)
        directions = homogeneous @ np.linalg.inv(self.K).T @ self.world_to_camera[:3, :3]
        return directions / np.linalg.norm(directions, axis=1, keepdims=True)


def intrinsics(width: int, height: int, fov: float) -> np.ndarray:
    """3×3 intrinsics for a horizontal field of view ``fov`` (radians), f = (W/2)/tan(fov/2)."""
    if not 0.0 < fov < math.pi:
        raise ValueError(f"field of view must be in (0, pi) radians, got {fov}")
    focal = (width / 2.0) / math.tan(fov / 2.0)
    return np.array([[focal, 0.0, width / 2.0], [0.0, focal, height / 2.0], [0.0, 0.0, 1.0]])


def camera_from_pose(location: np.ndarray, rotation_gl: np.ndarray, fov: float,
                     resolution: int | tuple[int, int]) -> Camera:
    """Build a camera from its centre, its OpenGL-frame rotation and its field of view.

    Args:
        location: Camera centre in world coordinates.
        rotation_gl: 3×3 rotation from the OpenGL camera frame (−z forward, +y up) to world.
        fov: Horizontal field of view in radians.
        resolution: Image side, or ``(width, height)``.
    """
    width, height = (resolution, resolution) if isinstance(resolution, int) else resolution
    rotation_cv = np.asarray(rotation_gl, dtype=np.float64) @ GL_TO_CV  # camera(cv) -> world
    world_to_camera = np.eye(4)
    world_to_camera[:3, :3] = rotation_cv.T
    world_to_camera[:3, 3] = -rotation_cv.T @ np.asarray(location, dtype=np.float64)
    return Camera(intrinsics(width, height, fov), world_to_camera, int(width), int(height))


def camera_from_point_info(record: Mapping[str, Any]) -> Camera:
    """The camera of a released ``point_info`` record.

    Args:
        record: A decoded ``point_info`` JSON object (needs ``camera_location``,
            ``camera_rotation_final``, ``field_of_view_rads`` and ``resolution``).

    Raises:
        ValueError: a required field is missing or malformed.
    """
    missing = [key for key in _REQUIRED if key not in record]
    if missing:
        raise ValueError(
            f"point_info record lacks {', '.join(missing)}; a camera needs {', '.join(_REQUIRED)}"
        )
    location = np.asarray(record["camera_location"], dtype=np.float64)
    euler = np.asarray(record["camera_rotation_final"], dtype=np.float64)
    if location.shape != (3,) or euler.shape != (3,):
        raise ValueError("camera_location and camera_rotation_final must hold 3 numbers each")
    rotation = Rotation.from_euler("xyz", euler).as_matrix()
    return camera_from_pose(location, rotation, float(record["field_of_view_rads"]),
                            int(record["resolution"]))


@dataclass(frozen=True)
class RelativePose:
    """Pose of camera 1 seen from camera 2, as the authors' ``calculate_relative_camera_pose``.

    Attributes:
        rotation: R_rel = R2ᵀ R1 with R the OpenGL-frame camera-to-world rotations.
        translation: t = R2ᵀ (c1 − c2), camera 1's centre in camera 2's OpenGL frame.
    """

    rotation: np.ndarray
    translation: np.ndarray

    @property
    def euler(self) -> np.ndarray:
        """R_rel as an extrinsic xyz ('sxyz') Euler angle."""
        return np.asarray(Rotation.from_matrix(self.rotation).as_euler("xyz"))

    def encoding(self) -> np.ndarray:
        """The authors' 6-d pose target: Euler 'sxyz' of R_rel (3) then t (3), unnormalized."""
        return np.concatenate([self.euler, self.translation])


def relative_pose(first: Camera, second: Camera) -> RelativePose:
    """Relative pose of ``first`` with respect to ``second`` (fixated-pose convention)."""
    r1, r2 = first.rotation_gl, second.rotation_gl
    return RelativePose(r2.T @ r1, r2.T @ (first.centre - second.centre))


def vanishing_points_gaussian_sphere(camera: Camera) -> dict[str, list[float]]:
    """The released ``vanishing_points_gaussian_sphere`` of a camera (see the module notes)."""
    world_in_gl = camera.rotation_gl.T  # columns: world axes in the OpenGL camera frame
    return {
        "x": (-world_in_gl[:, 1]).tolist(),
        "y": world_in_gl[:, 0].tolist(),
        "z": world_in_gl[:, 2].tolist(),
    }


def gaussian_sphere_to_image(direction: np.ndarray, width: int, fov: float) -> list[float]:
    """The released ``vanishing_points_image`` of one Gaussian-sphere direction."""
    v = np.asarray(direction, dtype=np.float64)
    focal = (width / 2.0) / math.tan(fov / 2.0)
    scale = focal / (2.0 - v[2])
    return [width / 2.0 + scale * v[0], width / 2.0 - scale * v[1]]


def vanishing_points_image(camera: Camera) -> dict[str, list[float]]:
    """The released ``vanishing_points_image`` of a camera (see the module notes)."""
    fov = 2.0 * math.atan((camera.width / 2.0) / camera.focal)
    sphere = vanishing_points_gaussian_sphere(camera)
    return {k: gaussian_sphere_to_image(np.array(v), camera.width, fov) for k, v in sphere.items()}


def vanishing_point_pixels(camera: Camera) -> dict[str, np.ndarray | None]:
    """Perspective vanishing points of the three world axes in pixels (None if at infinity)."""
    result: dict[str, np.ndarray | None] = {}
    rotation = camera.world_to_camera[:3, :3]
    for index, axis in enumerate("xyz"):
        direction = rotation[:, index]  # world axis in OpenCV camera coordinates
        if abs(direction[2]) < 1e-9:
            result[axis] = None
            continue
        uvw = camera.K @ direction
        result[axis] = uvw[:2] / uvw[2]
    return result


def room_box_world(record: Mapping[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """The room box of a ``point_info`` record as world-axis ``(lo, hi)`` corners.

    Undoes the released x/y swap of ``bounding_box_ranges`` (see the module notes).
    """
    ranges = record["bounding_box_ranges"]
    lo = np.array([ranges["y"][0], ranges["x"][0], ranges["z"][0]], dtype=np.float64)
    hi = np.array([ranges["y"][1], ranges["x"][1], ranges["z"][1]], dtype=np.float64)
    return lo, hi


def bounding_box_ranges(lo: np.ndarray, hi: np.ndarray) -> dict[str, list[float]]:
    """The released ``bounding_box_ranges`` of a world-axis box (x and y swapped)."""
    return {
        "x": [float(lo[1]), float(hi[1])],
        "y": [float(lo[0]), float(hi[0])],
        "z": [float(lo[2]), float(hi[2])],
    }
