"""Every pixel-wise and image-wise label of a view, in the released encodings.

Choices where the released data fixes no exact formula (documented here once):

- ``normal``: released camera frame, x right, y down, z towards the camera (the 2D3DS/Taskonomy
  convention that Omnidata's ``transform_normal_cam`` converts from); ``v = round((n+1)/2·255)``.
- ``reshading``: ``round(255·max(0, n·l))`` with l the unit direction to the camera centre
  (point light at the camera, constant albedo, no falloff), grey stored as RGB.
- ``principal_curvature``: analytic; channel 0 = k1, channel 1 = k2 (k1 ≥ k2), value
  ``clip(round(127 + CURVATURE_SCALE·k), 0, 255)`` with k in 1/m, convex positive; channel 2 = 0.
  Creases between touching primitives are 0 (no discrete term).
- ``edge_texture``: Sobel gradient magnitude of the Gaussian-blurred (σ = 1 px) grey image in
  [0, 1] (Canny without non-maximum suppression), ``round(mag / (4·√2) · 65535)``.
- ``edge_occlusion``: where the Laplacian of inverse depth (zero on every plane) exceeds a
  relative threshold, the largest depth difference to a 4-neighbour,
  ``round(OCCLUSION_UNITS_PER_METRE · Δd)``; 0 elsewhere.
- ``keypoints2d``: Harris response (block 3, Sobel 3, k = 0.04) of the grey image in [0, 1],
  negatives clipped, ``round(R · KEYPOINT2D_SCALE)``.
- ``keypoints3d``: Harris response summed over the three normal channels plus the z-depth
  (scaled by 1/2 m), ``round(R · KEYPOINT3D_SCALE)``: corners of geometry, blind to texture.
- ``segment_unsup2d`` / ``segment_unsup25d``: OpenCV's Felzenszwalb graph segmentation on RGB,
  and on a 5-channel image of depth, normals and curvature; ids ordered by first appearance,
  capped at 255.
- ``segment_semantic``: label per pixel; pixels whose 4-neighbours carry another object label
  are 0 (uncertain), as detector-made pseudo labels are along object borders.
"""

from __future__ import annotations

import math
from typing import Any

import cv2
import numpy as np

from taskonomy.datamodules.domains import DEPTH_MISSING, DEPTH_UNITS_PER_METRE
from taskonomy.datamodules.synth.classes import (
    BACKGROUND,
    SEMANTIC_CLASSES,
    UNCERTAIN,
    object_distribution,
    scene_distribution,
)
from taskonomy.datamodules.synth.render import ViewBuffers

CURVATURE_SCALE = 10.0
OCCLUSION_UNITS_PER_METRE = 100.0
KEYPOINT2D_SCALE = 65535.0 * 4.0
KEYPOINT3D_SCALE = 65535.0 * 2.0

_SEGMENTER_CACHE: dict[tuple[float, float, int], Any] = {}


def encode_depth(metres: np.ndarray) -> np.ndarray:
    """Metres → uint16 in 1/512 m, with 65535 where the depth is missing or out of range."""
    raw = np.round(np.where(np.isfinite(metres), metres, 0.0) * DEPTH_UNITS_PER_METRE)
    valid = np.isfinite(metres) & (raw < DEPTH_MISSING)
    return np.where(valid, raw, DEPTH_MISSING).astype(np.uint16)


def encode_unit(values: np.ndarray) -> np.ndarray:
    """Values in [-1, 1] → uint8 with 127.5-centred encoding ``(v/255 − 0.5)·2``."""
    return np.clip(np.round((values + 1.0) * 127.5), 0, 255).astype(np.uint8)


def encode_grey_rgb(values: np.ndarray) -> np.ndarray:
    """Values in [0, 1] → uint8 grey stored as RGB."""
    grey = np.clip(np.round(values * 255.0), 0, 255).astype(np.uint8)
    return np.repeat(grey[..., None], 3, axis=-1)


def encode_curvature(curvature: np.ndarray) -> np.ndarray:
    """H×W×2 principal curvatures (1/m) → uint8 RGB, channels k1, k2, 0."""
    out = np.zeros((*curvature.shape[:2], 3), dtype=np.uint8)
    out[..., :2] = np.clip(np.round(127.0 + CURVATURE_SCALE * curvature), 0, 255)
    return out


def _to_u16(values: np.ndarray) -> np.ndarray:
    return np.clip(np.round(values), 0, 65535).astype(np.uint16)


def _grey(rgb: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY).astype(np.float32) / 255.0


def edge_texture(rgb: np.ndarray) -> np.ndarray:
    """16-bit gradient magnitude of the blurred grey image (Canny without NMS)."""
    grey = cv2.GaussianBlur(_grey(rgb), (0, 0), 1.0)
    gx = cv2.Sobel(grey, cv2.CV_32F, 1, 0, ksize=3)
    gy = cv2.Sobel(grey, cv2.CV_32F, 0, 1, ksize=3)
    return _to_u16(np.sqrt(gx * gx + gy * gy) / (4.0 * math.sqrt(2.0)) * 65535.0)


def occlusion_strength(depth: np.ndarray) -> np.ndarray:
    """Depth-discontinuity strength in metres (float H×W), 0 off discontinuities.

    Inverse z-depth is affine in the pixel coordinates on a plane, so its discrete Laplacian
    vanishes on every plane and only discontinuities (and, weakly, curved surfaces) remain.
    Missing depth (windows) has no geometry: it neither makes nor carries edges.
    """
    finite = np.isfinite(depth)
    z = np.where(finite, depth, 0.0)
    padded_z = np.pad(z, 1, mode="edge")
    padded_ok = np.pad(finite, 1, mode="edge")
    neighbours = []
    for rows, cols in ((slice(None, -2), slice(1, -1)), (slice(2, None), slice(1, -1)),
                       (slice(1, -1), slice(None, -2)), (slice(1, -1), slice(2, None))):
        # A missing neighbour stands in with the pixel's own depth: no jump towards it.
        neighbours.append(np.where(padded_ok[rows, cols], padded_z[rows, cols], z))
    stack = np.stack(neighbours)
    inverse = 1.0 / np.maximum(z, 1e-6)
    laplacian = np.abs(np.sum(1.0 / np.maximum(stack, 1e-6), axis=0) - 4 * inverse)
    jump = np.max(np.abs(stack - z), axis=0)
    discontinuity = finite & (laplacian > 0.02 * inverse) & (jump > 0.02 + 0.02 * z)
    return np.where(discontinuity, jump, 0.0)


def edge_occlusion(depth: np.ndarray) -> np.ndarray:
    """16-bit occlusion-edge strength from the z-depth (m)."""
    return _to_u16(occlusion_strength(depth) * OCCLUSION_UNITS_PER_METRE)


def keypoints2d(rgb: np.ndarray) -> np.ndarray:
    """16-bit Harris corner response of the grey image."""
    response = cv2.cornerHarris(_grey(rgb), 3, 3, 0.04)
    return _to_u16(np.maximum(response, 0.0) * KEYPOINT2D_SCALE)


def keypoints3d(normal: np.ndarray, depth: np.ndarray) -> np.ndarray:
    """16-bit Harris response on geometry (normals and depth), blind to texture."""
    finite = np.isfinite(depth)
    z = np.where(finite, depth, 0.0).astype(np.float32) / 2.0
    response = np.asarray(cv2.cornerHarris(z, 3, 3, 0.04), dtype=np.float32)
    for channel in range(3):
        response += cv2.cornerHarris(normal[..., channel].astype(np.float32) / 2.0, 3, 3, 0.04)
    return _to_u16(np.maximum(response, 0.0) * KEYPOINT3D_SCALE)


def _segmenter(sigma: float, k: float, min_size: int) -> Any:
    key = (sigma, k, min_size)
    if key not in _SEGMENTER_CACHE:
        _SEGMENTER_CACHE[key] = cv2.ximgproc.segmentation.createGraphSegmentation(
            sigma=sigma, k=k, min_size=min_size
        )
    return _SEGMENTER_CACHE[key]


def _compact_ids(labels: np.ndarray) -> np.ndarray:
    """Renumber segment ids by first appearance in raster order; ids beyond 255 become 255."""
    flat = labels.reshape(-1).astype(np.int64)
    flat -= flat.min()
    count = int(flat.max()) + 1
    first = np.full(count, flat.size, dtype=np.int64)
    # Fancy assignment keeps the last write: writing in reverse leaves each id's first pixel.
    first[flat[::-1]] = np.arange(flat.size - 1, -1, -1)
    rank = np.empty(count, dtype=np.int64)
    rank[np.argsort(first, kind="stable")] = np.arange(count)
    return np.minimum(rank[flat], 255).astype(np.uint8).reshape(labels.shape)


def _min_size(shape: tuple[int, ...]) -> int:
    return max(8, shape[0] * shape[1] // 600)


def segment_unsup2d(rgb: np.ndarray) -> np.ndarray:
    """8-bit Felzenszwalb superpixels of the RGB image."""
    labels = _segmenter(0.8, 400.0, _min_size(rgb.shape)).processImage(rgb)
    return _compact_ids(labels)


def segment_unsup25d(depth: np.ndarray, normal: np.ndarray, curvature: np.ndarray) -> np.ndarray:
    """8-bit Felzenszwalb superpixels of a depth + normals + curvature image."""
    finite = np.isfinite(depth)
    z = np.where(finite, depth, 0.0)
    log_depth = np.log1p(z) / max(float(np.log1p(z.max())), 1e-6)
    stack = np.concatenate(
        [log_depth[..., None] * 255.0, (normal + 1.0) * 127.5,
         np.clip(curvature[..., :1] * 10.0, 0.0, 255.0)],
        axis=-1,
    ).astype(np.float32)
    labels = _segmenter(0.5, 600.0, _min_size(depth.shape)).processImage(stack)
    return _compact_ids(labels)


def segment_semantic(buffers: ViewBuffers) -> np.ndarray:
    """8-bit semantic labels: 1 background, 2..17 classes, 0 along object borders and misses."""
    semantic = buffers.semantic.astype(np.uint8)
    objects = buffers.objects
    border = np.zeros(objects.shape, dtype=bool)
    for axis in (0, 1):
        change = (np.diff(objects, axis=axis) != 0) & (
            np.diff(semantic.astype(np.int16), axis=axis) != 0
        )
        if axis == 0:
            border[1:] |= change
            border[:-1] |= change
        else:
            border[:, 1:] |= change
            border[:, :-1] |= change
    # Borders between two background surfaces stay background.
    border &= semantic != BACKGROUND
    out = np.where(border | (buffers.prim < 0), UNCERTAIN, semantic)
    return out.astype(np.uint8)


def class_object(buffers: ViewBuffers) -> np.ndarray:
    """1000-way ImageNet distribution from the visible area of each semantic class."""
    counts = np.bincount(buffers.semantic.reshape(-1), minlength=len(SEMANTIC_CLASSES) + 1)
    areas = {name: float(counts[index + 1]) for index, name in enumerate(SEMANTIC_CLASSES)}
    return object_distribution(areas)


def class_scene(room_type: str) -> np.ndarray:
    """365-way Places365 distribution of the room type."""
    return scene_distribution(room_type)


def view_labels(buffers: ViewBuffers, room_type: str) -> dict[str, np.ndarray]:
    """Every image domain of one view, encoded for :func:`domains.write_domain_file`."""
    return {
        "rgb": buffers.rgb,
        "depth_euclidean": encode_depth(buffers.distance),
        "depth_zbuffer": encode_depth(buffers.zdepth),
        "normal": encode_unit(buffers.normal),
        "reshading": encode_grey_rgb(buffers.reshading),
        "principal_curvature": encode_curvature(buffers.curvature),
        "edge_texture": edge_texture(buffers.rgb),
        "edge_occlusion": edge_occlusion(buffers.zdepth),
        "keypoints2d": keypoints2d(buffers.rgb),
        "keypoints3d": keypoints3d(buffers.normal, buffers.zdepth),
        "segment_unsup2d": segment_unsup2d(buffers.rgb),
        "segment_unsup25d": segment_unsup25d(buffers.zdepth, buffers.normal, buffers.curvature),
        "segment_semantic": segment_semantic(buffers),
        "class_object": class_object(buffers),
        "class_scene": class_scene(room_type),
    }
