"""Render one camera view of a room: exact geometry buffers and an antialiased RGB image.

Every label comes from the ray through each pixel centre. RGB is shaded at the same rays, and
pixels on silhouettes (a neighbour hits another primitive or a very different normal) are
re-shaded with four sub-pixel rays and averaged: the silhouettes are where one sample per pixel
aliases, and supersampling only them costs a fraction of a full 2× render.

Tracing, shading and supersampling run in one compiled, tile-culled pass (:mod:`.tiles`); the
per-pixel geometry (camera-frame normals, z-depth, reshading, curvature, labels) and the tone map
are compiled sweeps too, so a view allocates only its output buffers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numba
import numpy as np

from taskonomy.datamodules.cameras import Camera
from taskonomy.datamodules.synth import raycast, tiles
from taskonomy.datamodules.synth.scene import Scene


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
        curvature: H×W×2 principal curvatures (k1 ≥ k2, 1/m; convex positive) of the
            surface smoothed at :data:`SMOOTHING_RADIUS`, creases included.
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
    k = camera.K
    if offsets is None:
        rotation = np.ascontiguousarray(camera.world_to_camera[:3, :3], dtype=np.float64)
        return tiles.pixel_rays(rotation, float(k[0, 0]), float(k[1, 1]), float(k[0, 2]),
                                float(k[1, 2]), camera.height, camera.width)
    v, u = np.mgrid[0 : camera.height, 0 : camera.width].astype(np.float64) + 0.5
    u, v = u + offsets[..., 0], v + offsets[..., 1]
    local = np.stack([(u - k[0, 2]) / k[0, 0], (v - k[1, 2]) / k[1, 1], np.ones_like(u)], axis=-1)
    local /= np.linalg.norm(local, axis=-1, keepdims=True)
    return local @ camera.world_to_camera[:3, :3]  # rows: cam @ R_wc == R_cw @ cam


def _to_srgb(linear: np.ndarray, hit: np.ndarray) -> np.ndarray:
    # Auto exposure like a camera: the bright end of the room (not the sky) maps near white.
    sample = linear[::4, ::4].max(axis=-1)[hit[::4, ::4]]
    bright = float(np.percentile(sample, 97)) if sample.size else 1.0
    exposure = float(np.clip(0.9 / max(bright, 1e-6), 0.5, 3.0))
    return _tone_map(linear, exposure, _STEPS, _BUCKET_CODES)


#: Linear values (after exposure) at which the 8-bit code steps up: code j covers
#: [_STEPS[j-1], _STEPS[j]), the inverse of ``round(255 · v^(1/2.2))``. With the code at the
#: start of each of 4096 buckets of [0, 1], the tone map is a table look-up and a few
#: comparisons instead of a power per channel.
_STEPS = ((np.arange(1, 256) - 0.5) / 255.0) ** 2.2
_BUCKETS = 4096
_BUCKET_CODES = np.searchsorted(_STEPS, np.arange(_BUCKETS) / _BUCKETS, side="right")


@numba.njit(cache=True, error_model="numpy")
def _tone_map(linear, exposure, steps, bucket_codes):
    """uint8 image ``round(255 · clip(exposure · linear, 0, 1)^(1/2.2))`` via the code steps."""
    height, width, channels = linear.shape
    buckets = bucket_codes.shape[0]
    out = np.empty((height, width, channels), dtype=np.uint8)
    for r in range(height):
        for c in range(width):
            for k in range(channels):
                value = min(max(linear[r, c, k] * exposure, 0.0), 1.0)
                code = bucket_codes[min(int(value * buckets), buckets - 1)]
                while code < 255 and value >= steps[code]:
                    code += 1
                out[r, c, k] = code
    return out


def render_view(scene: Scene, camera: Camera, antialias: bool = True) -> ViewBuffers:
    """Ray-cast every buffer of one view.

    Args:
        scene: The room.
        camera: The view (OpenCV convention).
        antialias: Supersample silhouette pixels of the RGB image.
    """
    height, width = camera.height, camera.width
    rays = camera_rays(camera)
    origin = np.ascontiguousarray(camera.centre, dtype=np.float64)
    rotation = np.ascontiguousarray(camera.world_to_camera[:3, :3], dtype=np.float64)
    prims = np.ascontiguousarray(scene.prims, dtype=np.float64)
    cam_centres = np.ascontiguousarray(prims[:, 1:4] @ rotation.T + camera.world_to_camera[:3, 3])
    distance = np.empty((height, width))
    prim = np.empty((height, width), dtype=np.int32)
    normal_world = np.empty((height, width, 3))
    face = np.empty((height, width), dtype=np.int8)
    linear = np.empty((height, width, 3))
    edge = np.zeros((height, width), dtype=bool)
    k = camera.K
    tiles.render_tiles(prims, np.ascontiguousarray(scene.materials, dtype=np.float64),
                       np.ascontiguousarray(scene.lights, dtype=np.float64).reshape(-1, 6),
                       origin, rays, rotation, cam_centres, float(k[0, 0]), float(k[1, 1]),
                       float(k[0, 2]), float(k[1, 2]), antialias, distance, prim, normal_world,
                       face, linear, edge)
    hit = prim >= 0
    normal = np.empty((height, width, 3))
    zdepth = np.empty((height, width))
    reshading = np.empty((height, width))
    curvature = np.empty((height, width, 2))
    semantic = np.empty((height, width), dtype=np.int32)
    objects = np.empty((height, width), dtype=np.int32)
    _geometry(prims, np.asarray(scene.labels, dtype=np.int64),
              np.asarray(scene.objects, dtype=np.int64), rays, rotation, distance, prim,
              normal_world, face, SMOOTHING_RADIUS, normal, zdepth, reshading, curvature,
              semantic, objects)
    curvature = _add_creases(curvature, origin, rays, normal_world, distance, hit,
                             1.0 / camera.focal)
    return ViewBuffers(
        rgb=_to_srgb(linear, hit), distance=distance, zdepth=zdepth, normal=normal,
        reshading=reshading, curvature=curvature, prim=prim, semantic=semantic, objects=objects,
        rays=rays,
    )


@numba.njit(cache=True, error_model="numpy")
def _geometry(prims, labels, objects, rays, rotation, distance, prim, normal_world, face,
              smoothing, out_normal, out_zdepth, out_reshading, out_curvature, out_semantic,
              out_objects):
    """Per-pixel geometry labels from the hits, in one sweep.

    Normals go to the released camera frame (OpenCV x and y, z towards the camera); z-depth is
    the distance times the cosine to the optical axis; reshading is the Lambert term of a light
    at the camera; principal curvatures are those of the surface smoothed at ``smoothing`` (see
    :data:`SMOOTHING_RADIUS`): 0 on planes, 1/(r + s) twice on spheres, 1/(r + s) and 0 on
    cylinder sides. Misses get 0 (z-depth ``inf``).
    """
    height, width = distance.shape
    for r in range(height):
        for c in range(width):
            i = prim[r, c]
            nx, ny, nz = normal_world[r, c, 0], normal_world[r, c, 1], normal_world[r, c, 2]
            for j in range(3):
                value = rotation[j, 0] * nx + rotation[j, 1] * ny + rotation[j, 2] * nz
                out_normal[r, c, j] = -value if j == 2 else value
            dx, dy, dz = rays[r, c, 0], rays[r, c, 1], rays[r, c, 2]
            if i < 0:
                out_zdepth[r, c] = np.inf
                out_reshading[r, c] = 0.0
                out_curvature[r, c, 0] = 0.0
                out_curvature[r, c, 1] = 0.0
                out_semantic[r, c] = 0
                out_objects[r, c] = 0
                continue
            out_zdepth[r, c] = distance[r, c] * (
                dx * rotation[2, 0] + dy * rotation[2, 1] + dz * rotation[2, 2])
            out_reshading[r, c] = min(max(-(nx * dx + ny * dy + nz * dz), 0.0), 1.0)
            # The surface offset by the smoothing radius: a radius-r cylinder or sphere becomes
            # one of radius r + s.
            inverse = 1.0 / (max(prims[i, 4], 0.0) + smoothing)
            kind = face[r, c]
            curved = kind == raycast.FACE_SPHERE or kind == raycast.FACE_CYLINDER
            out_curvature[r, c, 0] = inverse if curved else 0.0
            out_curvature[r, c, 1] = inverse if kind == raycast.FACE_SPHERE else 0.0
            out_semantic[r, c] = labels[i]
            out_objects[r, c] = objects[i]


#: Radius (m) of the smoothing the labels' curvature is measured at, as a ball of this radius
#: rolled over the surface. The authors' curvature comes from scanned meshes, which round every
#: crease and blur thin parts, and their z-scoring ((x − 123.6) / 31.9 for k1 on 127-centred
#: 8-bit codes) says a typical curved pixel lies about one standard deviation from flat. Exact
#: analytic values do not: a 90° box edge spread over 10 cm (15.7 /m) and a 3 cm chair leg
#: (33 /m) both clip at the 8-bit limit (10 codes per 1/m), so 11 % of k1 and 19 % of k2 pixels
#: were saturated, 4–5.5 z-units out, far outside the tanh range of the authors' decoder. At
#: 0.35 m a crease is 1/0.35 = 2.9 /m (29 codes, ≈ 1 z-unit) and no curvature exceeds it.
SMOOTHING_RADIUS = 0.35
#: Largest half-width (pixels) of a crease band, bounding the dilation kernels.
MAX_CREASE_PIXELS = 32


def _add_creases(curvature: np.ndarray, origin: np.ndarray, rays: np.ndarray,
                 normals: np.ndarray, distance: np.ndarray, hit: np.ndarray,
                 pixel_angle: float) -> np.ndarray:
    """Add the curvature of creases where surfaces meet (box edges, wall corners).

    Analytic curvature is zero on every face of a box, but the authors' labels come from mesh
    curvature, which is large along creases. Smoothed by a ball of radius ``s``
    (:data:`SMOOTHING_RADIUS`), a crease whose normals turn by θ becomes a circular arc of radius
    ``s``: curvature ±1/s (convex positive) over an arc of length θ·s centred on the crease.
    Creases are found between neighbouring pixels on one continuous surface (no depth jump) whose
    normals turn by more than 20°; each band pixel within θ·s/2 of one (in pixels at the crease's
    distance) gets the crease's curvature. Convex creases raise k1, concave ones lower k2.
    """
    convex: np.ndarray = np.zeros(hit.shape)
    concave: np.ndarray = np.zeros(hit.shape)
    _crease_pairs(origin, rays, normals, distance, pixel_angle, math.cos(math.radians(20.0)),
                  convex, concave)
    bends = 1.0 / SMOOTHING_RADIUS
    out = curvature.copy()
    # Image pixels per metre along the surface: foreshortened by the incidence cosine.
    footprint = np.where(np.isfinite(distance), distance, 1.0) * pixel_angle
    per_metre = np.abs((normals * rays).sum(-1)) / np.maximum(footprint, 1e-9)
    _merge_creases(out, bends * _crease_bands(convex, per_metre),
                   -bends * _crease_bands(concave, per_metre), hit)
    return out


def _crease_bands(angles: np.ndarray, per_metre: np.ndarray) -> np.ndarray:
    """0/1 map of the pixels within θ·s/2 of a crease pixel turning by θ (``angles`` > 0).

    ``per_metre`` converts surface lengths at each pixel into image pixels. One elliptical
    dilation per distinct half-width in pixels (a few per view).
    """
    band = (angles > 0).astype(np.float64)
    if not band.any():
        return band
    half = np.rint(angles * SMOOTHING_RADIUS / 2 * per_metre)
    half = np.clip(half, 0, MAX_CREASE_PIXELS).astype(np.int64)
    for radius in np.unique(half[angles > 0]):
        if radius == 0:
            continue
        seeds = ((angles > 0) & (half == radius)).astype(np.uint8)
        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))
        band = np.maximum(band, cv2.dilate(seeds, kernel).astype(np.float64))
    return band


@numba.njit(cache=True, error_model="numpy")
def _merge_creases(curvature, convex, concave, hit):
    """In place: k1 = max(k1, convex), k2 = min(k2, concave) on hits, 0 elsewhere."""
    height, width = hit.shape
    for r in range(height):
        for c in range(width):
            if hit[r, c]:
                curvature[r, c, 0] = max(curvature[r, c, 0], convex[r, c])
                curvature[r, c, 1] = min(curvature[r, c, 1], concave[r, c])
            else:
                curvature[r, c, 0] = 0.0
                curvature[r, c, 1] = 0.0


@numba.njit(cache=True, error_model="numpy")
def _crease_pairs(origin, rays, normals, distance, pixel_angle, cos_min, convex, concave):
    """Turning angle of every 4-neighbour pair whose normals turn by > acos(cos_min).

    A pair counts when both pixels hit and their surface points lie within four pixel footprints
    of each other (one continuous surface); each pixel keeps the largest angle of its convex
    pairs in ``convex`` and of its concave pairs in ``concave``.
    """
    height, width = distance.shape
    for axis in range(2):
        for r in range(height - 1 if axis == 0 else height):
            for c in range(width if axis == 0 else width - 1):
                r2, c2 = (r + 1, c) if axis == 0 else (r, c + 1)
                cosine = (normals[r, c, 0] * normals[r2, c2, 0] + normals[r, c, 1]
                          * normals[r2, c2, 1] + normals[r, c, 2] * normals[r2, c2, 2])
                if not cosine < cos_min:
                    continue
                ta, tb = distance[r, c], distance[r2, c2]
                if not (np.isfinite(ta) and np.isfinite(tb)):
                    continue
                gap2 = 0.0
                bend = 0.0
                for k in range(3):
                    step = (origin[k] + tb * rays[r2, c2, k]) - (origin[k] + ta * rays[r, c, k])
                    gap2 += step * step
                    bend += (normals[r2, c2, k] - normals[r, c, k]) * step
                if not np.sqrt(gap2) < 4.0 * ta * pixel_angle:
                    continue
                if bend == 0.0:
                    continue
                angle = np.arccos(min(max(cosine, -1.0), 1.0))
                # Normals spreading apart along the surface: convex.
                target = convex if bend > 0 else concave
                for rr, cc in ((r, c), (r2, c2)):
                    target[rr, cc] = max(target[rr, cc], angle)
