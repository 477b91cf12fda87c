"""Render one camera view of a room: exact geometry buffers and an antialiased RGB image.

Every label comes from the ray through each pixel centre. RGB is shaded at the same rays, and
pixels on silhouettes (a neighbour hits another primitive or a very different normal) are
re-shaded with four sub-pixel rays and averaged: the silhouettes are where one sample per pixel
aliases, and supersampling only them costs a fraction of a full 2× render.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from taskonomy.datamodules.cameras import Camera
from taskonomy.datamodules.synth import raycast
from taskonomy.datamodules.synth.scene import Scene

#: Sub-pixel offsets of the silhouette supersampling (a rotated grid).
_SUBPIXELS = np.array([[-0.125, -0.375], [0.375, -0.125], [0.125, 0.375], [-0.375, 0.125]])


@dataclass
class ViewBuffers:
    """Per-pixel ground truth of one view (H×W unless noted).

    Attributes:
        rgb: uint8 H×W×3 sRGB image.
        distance: Euclidean distance to the camera centre (m), ``inf`` where nothing was hit.
        zdepth: Depth along the optical axis (m).
        normal: H×W×3 unit normals in the released camera frame (x right, y down, z towards the
            camera), zero where nothing was hit.
        reshading: Lambert term of a point light at the camera centre, in [0, 1].
        curvature: H×W×2 principal curvatures (k1 ≥ k2, 1/m; convex positive).
        prim: Index of the primitive hit (−1 on a miss).
        semantic: Semantic label value per pixel (0 on a miss).
        objects: Object instance id per pixel (0 = room shell).
        rays: H×W×3 unit world ray directions.
    """

    rgb: np.ndarray
    distance: np.ndarray
    zdepth: np.ndarray
    normal: np.ndarray
    reshading: np.ndarray
    curvature: np.ndarray
    prim: np.ndarray
    semantic: np.ndarray
    objects: np.ndarray
    rays: np.ndarray


def camera_rays(camera: Camera, offsets: np.ndarray | None = None) -> np.ndarray:
    """Unit world ray directions through pixel centres (H×W×3), optionally offset in pixels."""
    v, u = np.mgrid[0 : camera.height, 0 : camera.width].astype(np.float64) + 0.5
    if offsets is not None:
        u, v = u + offsets[..., 0], v + offsets[..., 1]
    k = camera.K
    local = np.stack([(u - k[0, 2]) / k[0, 0], (v - k[1, 2]) / k[1, 1], np.ones_like(u)], axis=-1)
    local /= np.linalg.norm(local, axis=-1, keepdims=True)
    return local @ camera.world_to_camera[:3, :3]  # rows: cam @ R_wc == R_cw @ cam


def _silhouettes(prim: np.ndarray, normal: np.ndarray) -> np.ndarray:
    edge = np.zeros(prim.shape, dtype=bool)
    for axis in (0, 1):
        differs = np.diff(prim, axis=axis) != 0
        bent = np.sum(np.diff(normal, axis=axis) ** 2, axis=-1) > 0.1
        change = differs | bent
        if axis == 0:
            edge[1:] |= change
            edge[:-1] |= change
        else:
            edge[:, 1:] |= change
            edge[:, :-1] |= change
    return edge


def _to_srgb(linear: np.ndarray, hit: np.ndarray) -> np.ndarray:
    # Auto exposure like a camera: the bright end of the room (not the sky) maps near white.
    sample = linear[::4, ::4].max(axis=-1)[hit[::4, ::4]]
    bright = float(np.percentile(sample, 97)) if sample.size else 1.0
    exposure = float(np.clip(0.9 / max(bright, 1e-6), 0.5, 3.0))
    mapped = np.clip(linear * exposure, 0.0, 1.0) ** (1.0 / 2.2)
    return np.round(mapped * 255.0).astype(np.uint8)


def render_view(scene: Scene, camera: Camera, antialias: bool = True) -> ViewBuffers:
    """Ray-cast every buffer of one view.

    Args:
        scene: The room.
        camera: The view (OpenCV convention).
        antialias: Supersample silhouette pixels of the RGB image.
    """
    height, width = camera.height, camera.width
    rays = camera_rays(camera)
    flat = rays.reshape(-1, 3)
    origin = camera.centre
    # Primary rays only test primitives in the view frustum.
    margin = 1.0 / camera.focal  # sub-pixel rays leave the pixel-centre frustum by half a pixel
    candidates = raycast.frustum_candidates(
        scene.prims, camera.world_to_camera, camera.width / 2 / camera.focal + margin,
        camera.height / 2 / camera.focal + margin)
    out = raycast.trace_rays(scene.prims, scene.materials, scene.lights, origin, flat, False,
                             candidates)
    distance = out["t"].reshape(height, width)
    prim = out["index"].reshape(height, width)
    normal_world = out["normal"].reshape(height, width, 3)
    hit_flat = out["index"] >= 0
    points = origin + np.where(hit_flat, out["t"], 0.0)[:, None] * flat
    # Shadow rays only test primitives between the visible surfaces and each light.
    if hit_flat.any():
        lo = points[hit_flat].min(axis=0) - 0.05
        hi = points[hit_flat].max(axis=0) + 0.05
        occluders = raycast.shadow_candidates(scene.prims, scene.lights, lo, hi)
    else:
        occluders = raycast.all_occluders(scene.prims, scene.lights)
    linear = raycast.shade_points(scene.prims, scene.materials, scene.lights, points,
                                  out["normal"], out["index"], occluders).reshape(height, width, 3)
    if antialias:
        edge = _silhouettes(prim, normal_world)
        rows, cols = np.nonzero(edge)
        if len(rows):
            samples = np.zeros((len(rows), 3))
            for offset in _SUBPIXELS:
                offsets = np.broadcast_to(offset, (len(rows), 2))
                sub = _rays_at(camera, rows, cols, offsets)
                # Sub-pixel hits lie between primary hits: the occluder lists still hold.
                samples += raycast.trace_rays(scene.prims, scene.materials, scene.lights, origin,
                                              sub, True, candidates, occluders)["rgb"]
            linear[rows, cols] = samples / len(_SUBPIXELS)
    hit = prim >= 0
    rotation = camera.world_to_camera[:3, :3]
    normal_cv = normal_world @ rotation.T
    normal = normal_cv * np.array([1.0, 1.0, -1.0])  # released frame: z towards the camera
    forward = rotation[2]  # optical axis in world coordinates
    zdepth = distance * (rays @ forward)
    reshading = np.clip(-np.sum(normal_world * rays, axis=-1), 0.0, 1.0)
    reshading[~hit] = 0.0
    curvature = _curvature(scene, prim, out["face"].reshape(height, width))
    surface = origin + np.where(hit, distance, 0.0)[..., None] * rays
    curvature = _add_creases(curvature, surface, normal_world,
                             distance, hit, 1.0 / camera.focal)
    semantic = np.where(hit, scene.labels[np.maximum(prim, 0)], 0)
    objects = np.where(hit, scene.objects[np.maximum(prim, 0)], 0)
    return ViewBuffers(
        rgb=_to_srgb(linear, hit), distance=distance, zdepth=np.where(hit, zdepth, np.inf),
        normal=normal, reshading=reshading, curvature=curvature, prim=prim,
        semantic=semantic.astype(np.int32), objects=objects.astype(np.int32), rays=rays,
    )


def _rays_at(camera: Camera, rows: np.ndarray, cols: np.ndarray,
             offsets: np.ndarray) -> np.ndarray:
    k = camera.K
    u = cols + 0.5 + offsets[:, 0]
    v = rows + 0.5 + offsets[:, 1]
    cam = np.stack([(u - k[0, 2]) / k[0, 0], (v - k[1, 2]) / k[1, 1], np.ones_like(u)], axis=-1)
    cam /= np.linalg.norm(cam, axis=-1, keepdims=True)
    return np.ascontiguousarray(cam @ camera.world_to_camera[:3, :3])


def _curvature(scene: Scene, prim: np.ndarray, face: np.ndarray) -> np.ndarray:
    """Analytic principal curvatures: planes 0; spheres 1/r, 1/r; cylinder sides 1/r, 0."""
    radius = scene.prims[np.maximum(prim, 0), 4]
    inverse = np.where(radius > 0, 1.0 / np.maximum(radius, 1e-9), 0.0)
    k1 = np.where((face == raycast.FACE_SPHERE) | (face == raycast.FACE_CYLINDER), inverse, 0.0)
    k2 = np.where(face == raycast.FACE_SPHERE, inverse, 0.0)
    k1[prim < 0] = 0.0
    k2[prim < 0] = 0.0
    return np.stack([k1, k2], axis=-1)


#: Width (m) over which a crease between two flat faces bends, like a scanned mesh's edge.
CREASE_WIDTH = 0.1


def _add_creases(curvature: np.ndarray, points: np.ndarray, normals: np.ndarray,
                 distance: np.ndarray, hit: np.ndarray, pixel_angle: float) -> np.ndarray:
    """Add the curvature of creases where surfaces meet (box edges, wall corners).

    Analytic curvature is zero on every face of a box, but the authors' labels come from mesh
    curvature, which is large along creases. Between neighbouring pixels on one continuous surface
    (no depth jump) whose normals turn by an angle θ, the crease gets curvature ±θ / CREASE_WIDTH
    (convex positive: the normals spread apart along the surface), spread over the pixels within
    half a crease width. Convex creases raise k1, concave ones lower k2.
    """
    convex: np.ndarray = np.zeros(hit.shape)
    concave: np.ndarray = np.zeros(hit.shape)
    footprint = np.where(hit, distance, 0.0) * pixel_angle  # metres per pixel
    for axis in (0, 1):
        first = (slice(None, -1), slice(None)) if axis == 0 else (slice(None), slice(None, -1))
        second = (slice(1, None), slice(None)) if axis == 0 else (slice(None), slice(1, None))
        cosine = np.einsum("ijk,ijk->ij", normals[first], normals[second])
        candidate = cosine < math.cos(math.radians(20.0))  # normals turn: a crease or an edge
        if not candidate.any():
            continue
        rows, cols = np.nonzero(candidate)
        a = (rows, cols)
        b = (rows + 1, cols) if axis == 0 else (rows, cols + 1)
        dp = points[b] - points[a]
        gap = np.linalg.norm(dp, axis=-1)
        # One continuous surface: the two hits are a few pixel footprints apart, no depth jump.
        keep = hit[a] & hit[b] & (gap < 4.0 * footprint[a])
        angle = np.arccos(np.clip(cosine[a], -1.0, 1.0))
        sign = np.sign(np.sum((normals[b] - normals[a]) * dp, axis=-1))
        value = np.where(keep, sign * angle / CREASE_WIDTH, 0.0)
        for r, c in (a, b):
            np.maximum.at(convex, (r, c), np.maximum(value, 0.0))
            np.minimum.at(concave, (r, c), np.minimum(value, 0.0))
    typical = float(np.median(footprint[hit])) if hit.any() else 1.0
    radius = int(np.clip(round(CREASE_WIDTH / 2 / max(typical, 1e-6)), 0, 3))
    if radius > 0:
        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))
        convex = cv2.dilate(convex, kernel)
        concave = -cv2.dilate(-concave, kernel)
    out = curvature.copy()
    out[..., 0] = np.where(hit, np.maximum(out[..., 0], convex), 0.0)
    out[..., 1] = np.where(hit, np.minimum(out[..., 1], concave), 0.0)
    return out
