"""Every pixel-wise and image-wise label of a view, in the released encodings.

Choices where the released data fixes no exact formula (documented here once):

- ``normal``: released camera frame, x right, y down, z towards the camera (the 2D3DS/Taskonomy
  convention that Omnidata's ``transform_normal_cam`` converts from); ``v = round((n+1)/2·255)``.
- ``reshading``: ``round(255·max(0, n·l))`` with l the unit direction to the camera centre
  (point light at the camera, constant albedo, no falloff), grey stored as RGB.
- ``principal_curvature``: channel 0 = k1, channel 1 = k2 (k1 ≥ k2), value
  ``clip(round(127 + CURVATURE_SCALE·k), 0, 255)`` with k in 1/m, convex positive; channel 2 = 0.
  The renderer measures k on the surface smoothed by a ball (``render.SMOOTHING_RADIUS``): a
  crease of angle θ is ±1/s over an arc θ·s, a cylinder or sphere of radius r has 1/(r+s).
- ``edge_texture``: Sobel gradient magnitude of the Gaussian-blurred (σ = 1 px) grey image in
  [0, 1] (Canny without non-maximum suppression), ``round(mag / (4·√2) · 65535)``.
- ``edge_occlusion``: on depth discontinuities (an inverse-depth step to a 4-neighbour well
  above the surface's own slope on both sides, see :func:`occlusion_strength`), the largest
  depth difference to a 4-neighbour, ``round(OCCLUSION_UNITS_PER_METRE · Δd)``; 0 elsewhere.
  The same edges at every render resolution (2.5–2.7 edge pixels per image row from 32² to
  256²), without the room's creases.
- ``keypoints2d``: SURF's keypoint response without non-maximum suppression (the released
  domain, task_definitions [supp.]): the scale-normalized determinant of the Hessian
  ``σ⁴·(Lxx·Lyy − Lxy²)`` of the grey image in [0, 1], with Gaussian derivatives at the scales
  of OpenCV's default SURF pyramid (4 octaves × 4 layers, box size L ↔ σ = 1.2·L/9) *at the
  released 512² resolution*, scaled to the render; negatives (saddles) clipped, maximum over
  scales, ``round(R · KEYPOINT2D_SCALE)``. Scales measured in image fractions make the label
  the same at every render resolution: a 3×3 Harris window in render pixels gave responses that
  vanished at 256² and were single-pixel specks at 32², unlearnable through a 2×2 or 4×4
  representation. Scales finer than the render resolves are evaluated at :data:`MIN_SIGMA`.
- ``keypoints3d``: a NARF-style interest value in [0, 1] (the released domain's encoding uses
  the full 16-bit range): the structure tensor of the surface-change field (gradients of the
  three normal channels plus a depth-border channel that is 1 across occlusion edges),
  integrated over NARF's support (:data:`NARF_SUPPORT`, a fraction of the image width), its
  smaller eigenvalue (surface change in two directions: a 3D corner, as NARF's interest), mapped
  to ``1 − exp(−λ / NARF_INTEREST_SCALE)``, ``round(interest · 65535)``. Blind to texture.
- ``segment_unsup2d`` / ``segment_unsup25d``: Felzenszwalb graph segmentation (the algorithm
  and parameters of OpenCV's ximgproc implementation, compiled in :mod:`.felzenszwalb`) on RGB,
  and on a 5-channel image of depth, normals and curvature; ids ordered by first appearance,
  capped at 255.

Per-pixel encodings run as small numba kernels (one sweep, no temporaries): with two worker
processes on two cores, numpy's temporaries cost as much as the labels themselves.
- ``segment_semantic``: label per pixel; pixels whose 4-neighbours carry another object label
  are 0 (uncertain), as detector-made pseudo labels are along object borders.

What the keypoint and occlusion-edge labels need to be learned (``benchmarks/task_quality.py``,
192 buildings, batch 16, 1200 steps, test loss ÷ the best constant's): keypoints3d 0.84 at 32
px (the old Harris label 1.015); keypoints2d 0.88 at 64 px (0.96 at 32 px, also with 2400
steps; old 0.98); edge_occlusion 0.89 at 128 px, but 0.95 at 96 px, 0.98 at 64 px (0.96 with
2400 steps) and 1.00 at 32 px: a 2-pixel line under the encoding's blur (σ = 4 px at 256², so
0.5–1 px here) must be placed to a pixel from a 2×2 or 4×4 representation (the paper's 16×16
cells are 16 px wide at 256², its blur a quarter of a cell).
"""

from __future__ import annotations

import math

import cv2
import numba
import numpy as np

from taskonomy.datamodules.domains import DEPTH_MISSING, DEPTH_UNITS_PER_METRE
from taskonomy.datamodules.encodings import KEYPOINTS2D_SCALE
from taskonomy.datamodules.synth import felzenszwalb
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
#: How many times the surface's own inverse-depth slope a step must be to be a discontinuity.
OCCLUSION_STEP_RATIO = 1.5
#: Resolution of the released images: label scales are defined in its pixels.
RELEASED_RESOLUTION = 512
#: OpenCV's default SURF box-filter sizes at the released resolution (4 octaves × 4 layers).
SURF_FILTER_SIZES = (9, 15, 21, 27, 39, 51, 75, 99, 147, 195)
#: Finest Gaussian scale (render pixels) whose sampled derivatives are meaningful.
MIN_SIGMA = 0.7
#: Determinant-of-Hessian response that reaches the top of the training clip range
#: (``KEYPOINTS2D_SCALE`` of 65535): a blob of grey contrast ≈ 0.3 at its own scale.
KEYPOINT2D_FULL_RESPONSE = 0.0025
KEYPOINT2D_SCALE = KEYPOINTS2D_SCALE * 65535.0 / KEYPOINT2D_FULL_RESPONSE
#: NARF's support (integration σ) as a fraction of the image width: a support size of about
#: 0.25 m at the views' typical 3.5 m distance and 61° field of view.
NARF_SUPPORT = 0.035
#: Differentiation σ of the surface-change field, as a fraction of the image width.
NARF_DIFFERENTIATION = 0.01
#: Structure-tensor eigenvalue at which the interest reaches 1 − 1/e.
NARF_INTEREST_SCALE = 0.01
#: Relative depth jump (Δd / d) that makes a full depth border in the surface-change field.
NARF_BORDER_JUMP = 0.1


def encode_depth(metres: np.ndarray) -> np.ndarray:
    """Metres → uint16 in 1/512 m, with 65535 where the depth is missing or out of range."""
    return _encode_depth(np.ascontiguousarray(metres, dtype=np.float64))


@numba.njit(cache=True, error_model="numpy")
def _encode_depth(metres):
    out = np.empty(metres.shape, dtype=np.uint16)
    flat, target = metres.reshape(-1), out.reshape(-1)
    for i in range(flat.size):
        value = flat[i]
        raw = np.round(value * DEPTH_UNITS_PER_METRE) if np.isfinite(value) else DEPTH_MISSING
        target[i] = raw if raw < DEPTH_MISSING else DEPTH_MISSING
    return out


@numba.njit(cache=True, error_model="numpy")
def _quantize(values, shift, scale, offset, high, out):
    """``out = clip(round((values + shift) · scale + offset), 0, high)`` elementwise."""
    flat, target = values.reshape(-1), out.reshape(-1)
    for i in range(flat.size):
        target[i] = min(max(np.round((flat[i] + shift) * scale + offset), 0.0), high)


def encode_unit(values: np.ndarray) -> np.ndarray:
    """Values in [-1, 1] → uint8 with 127.5-centred encoding ``(v/255 − 0.5)·2``."""
    values = np.ascontiguousarray(values, dtype=np.float64)
    out = np.empty(values.shape, dtype=np.uint8)
    _quantize(values, 1.0, 127.5, 0.0, 255.0, out)
    return out


def encode_grey_rgb(values: np.ndarray) -> np.ndarray:
    """Values in [0, 1] → uint8 grey stored as RGB."""
    grey = np.empty(values.shape, dtype=np.uint8)
    _quantize(np.ascontiguousarray(values, dtype=np.float64), 0.0, 255.0, 0.0, 255.0, grey)
    return np.repeat(grey[..., None], 3, axis=-1)


def encode_curvature(curvature: np.ndarray) -> np.ndarray:
    """H×W×2 principal curvatures (1/m) → uint8 RGB, channels k1, k2, 0."""
    out = np.zeros((*curvature.shape[:2], 3), dtype=np.uint8)
    both = np.empty(curvature.shape[:2] + (2,), dtype=np.uint8)
    _quantize(np.ascontiguousarray(curvature, dtype=np.float64), 0.0, CURVATURE_SCALE, 127.0,
              255.0, both)
    out[..., :2] = both
    return out


def _to_u16(values: np.ndarray) -> np.ndarray:
    out = np.empty(values.shape, dtype=np.uint16)
    _quantize(np.ascontiguousarray(values, dtype=np.float64), 0.0, 1.0, 0.0, 65535.0, out)
    return out


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

    A pixel is on an occlusion edge when the inverse-depth step to a 4-neighbour is more than
    :data:`OCCLUSION_STEP_RATIO` times the inverse-depth slope on either side of the pair
    (the step from the pixel behind it, and from the neighbour to the one beyond): inverse
    z-depth is affine on a plane, so planes, even at grazing angles, and creases between two
    planes (a step between the two slopes) stay off, at every render resolution. A per-pixel
    jump threshold alone marked room corners as edges at low resolution, where one pixel spans
    centimetres of a receding wall: half the edge pixels of a 32² render, 5 % of a 256² one.
    A side pixel that belongs to the other surface of the pair (closer to it in inverse depth:
    the far wall beyond a one-pixel chair leg) gives no slope. The jump must also exceed 2 cm
    + 2 % of the depth. Missing depth (windows) has no geometry: it neither makes nor carries
    edges.
    """
    return _occlusion_strength(np.ascontiguousarray(depth, dtype=np.float64),
                               OCCLUSION_STEP_RATIO)


@numba.njit(cache=True, error_model="numpy")
def _inverse_at(depth, r, c):
    """Inverse depth at (r, c), NaN outside the image or where the depth is missing."""
    height, width = depth.shape
    if r < 0 or r >= height or c < 0 or c >= width or not np.isfinite(depth[r, c]):
        return np.nan
    return 1.0 / max(depth[r, c], 1e-6)


@numba.njit(cache=True, error_model="numpy")
def _side_slope(side, own, other):
    """Inverse-depth slope from ``own`` to ``side``; 0 if ``side`` is absent or nearer ``other``."""
    if np.isnan(side) or abs(side - other) <= abs(side - own):
        return 0.0
    return abs(side - own)


@numba.njit(cache=True, error_model="numpy")
def _occlusion_strength(depth, ratio):
    height, width = depth.shape
    out = np.zeros((height, width))
    for r in range(height):
        for c in range(width):
            z = depth[r, c]
            if not np.isfinite(z):
                continue
            inverse = 1.0 / max(z, 1e-6)
            jump = 0.0
            edge = False
            for dr, dc in ((-1, 0), (1, 0), (0, -1), (0, 1)):
                neighbour = _inverse_at(depth, r + dr, c + dc)
                if np.isnan(neighbour):
                    continue
                difference = abs(depth[r + dr, c + dc] - z)
                jump = max(jump, difference)
                slope = max(_side_slope(_inverse_at(depth, r - dr, c - dc), inverse, neighbour),
                            _side_slope(_inverse_at(depth, r + 2 * dr, c + 2 * dc), neighbour,
                                        inverse))
                if (abs(neighbour - inverse) > ratio * slope
                        and difference > 0.02 + 0.02 * z):
                    edge = True
            if edge:
                out[r, c] = jump
    return out


def edge_occlusion(depth: np.ndarray) -> np.ndarray:
    """16-bit occlusion-edge strength from the z-depth (m)."""
    return _to_u16(occlusion_strength(depth) * OCCLUSION_UNITS_PER_METRE)


def _reflect_blur(image: np.ndarray, sigma: float) -> np.ndarray:
    return np.asarray(cv2.GaussianBlur(image, (0, 0), sigma, borderType=cv2.BORDER_REFLECT))


def hessian_response(grey: np.ndarray, sigma: float) -> np.ndarray:
    """Scale-normalized determinant of the Hessian ``σ⁴·(Lxx·Lyy − Lxy²)`` at scale ``sigma``.

    Positive on bright and dark blobs, negative on saddles; for a blob at its own scale the
    value does not depend on the blob's size (the σ⁴ normalization).
    """
    smooth = _reflect_blur(grey.astype(np.float32), sigma)
    p = cv2.copyMakeBorder(smooth, 1, 1, 1, 1, cv2.BORDER_REFLECT)
    centre = p[1:-1, 1:-1]
    lxx = p[1:-1, 2:] - 2.0 * centre + p[1:-1, :-2]
    lyy = p[2:, 1:-1] - 2.0 * centre + p[:-2, 1:-1]
    lxy = (p[2:, 2:] - p[2:, :-2] - p[:-2, 2:] + p[:-2, :-2]) / 4.0
    return np.asarray(sigma**4 * (lxx * lyy - lxy * lxy), dtype=np.float32)


def surf_sigmas(width: int) -> list[float]:
    """SURF's scales (σ in render pixels) for an image ``width`` pixels wide, finest first.

    The pyramid is defined at the released resolution, so the same scene gives the same label
    at any render resolution. Scales finer than :data:`MIN_SIGMA` are evaluated at it: the
    render's pixels have already averaged away the finer detail, and :data:`MIN_SIGMA` at any
    render of 14 pixels or more is itself a scale inside the pyramid's range (σ from 1.2 to 26
    pixels at 512²), so the texture-scale blobs of the released label stay. (Leaving those
    scales out instead measured worse: keypoints2d's test loss 0.986 of the constant's against
    0.958, 32 px, 1200 steps.)
    """
    ratio = width / RELEASED_RESOLUTION
    return sorted({max(1.2 * size / 9.0 * ratio, MIN_SIGMA) for size in SURF_FILTER_SIZES})


def surf_response(rgb: np.ndarray) -> np.ndarray:
    """SURF's blob response without non-maximum suppression (float H×W, ≥ 0).

    The maximum over SURF's scales of the positive scale-normalized determinant of the
    Hessian of the grey image in [0, 1]. Gaussian derivatives stand in for SURF's box filters
    (which approximate them; SURF is patent-encumbered and not in OpenCV's free build).
    """
    grey = _grey(rgb)
    out = np.zeros(grey.shape, dtype=np.float32)
    for sigma in surf_sigmas(grey.shape[1]):
        np.maximum(out, hessian_response(grey, sigma), out=out)
    return out


def keypoints2d(rgb: np.ndarray) -> np.ndarray:
    """16-bit SURF keypoint response of the grey image (no non-maximum suppression)."""
    return _to_u16(surf_response(rgb) * KEYPOINT2D_SCALE)


def narf_interest(normal: np.ndarray, depth: np.ndarray) -> np.ndarray:
    """NARF-style 3D interest in [0, 1] (float H×W) from normals and z-depth (m).

    The surface-change field has one channel per normal component and a border channel (the
    relative depth jump across occlusion edges, saturating at :data:`NARF_BORDER_JUMP`); planes
    give none. Its structure tensor, integrated over the support, has a large smaller eigenvalue
    only where the surface changes in two directions within the support: 3D corners and ends
    of borders, the points NARF rates as interesting.
    """
    width = depth.shape[1]
    z = np.where(np.isfinite(depth), depth, 0.0)
    border = occlusion_strength(depth) / (np.maximum(z, 1e-6) * NARF_BORDER_JUMP)
    channels = [normal[..., k] for k in range(3)] + [np.minimum(border, 1.0)]
    diff = max(NARF_DIFFERENTIATION * width, MIN_SIGMA)
    tensor = np.zeros((3, *depth.shape), dtype=np.float32)
    for channel in channels:
        smooth = _reflect_blur(np.ascontiguousarray(channel, dtype=np.float32), diff)
        # σ·∇ is scale-free: a unit step gives the same peak gradient at every resolution.
        scale = diff / 8.0
        gx = cv2.Sobel(smooth, cv2.CV_32F, 1, 0, ksize=3, borderType=cv2.BORDER_REFLECT) * scale
        gy = cv2.Sobel(smooth, cv2.CV_32F, 0, 1, ksize=3, borderType=cv2.BORDER_REFLECT) * scale
        tensor += np.stack([gx * gx, gy * gy, gx * gy])
    support = max(NARF_SUPPORT * width, 1.0)
    jxx, jyy, jxy = (_reflect_blur(component, support) for component in tensor)
    smaller = (jxx + jyy) / 2.0 - np.sqrt((jxx - jyy) ** 2 / 4.0 + jxy * jxy)
    return np.asarray(1.0 - np.exp(-np.maximum(smaller, 0.0) / NARF_INTEREST_SCALE),
                      dtype=np.float32)


def keypoints3d(normal: np.ndarray, depth: np.ndarray) -> np.ndarray:
    """16-bit NARF-style interest on geometry (normals and depth), blind to texture."""
    return _to_u16(narf_interest(normal, depth) * 65535.0)


def _min_size(shape: tuple[int, ...]) -> int:
    return max(8, shape[0] * shape[1] // 600)


def segment_unsup2d(rgb: np.ndarray) -> np.ndarray:
    """8-bit Felzenszwalb superpixels of the RGB image."""
    return felzenszwalb.segment(rgb, 0.8, 400.0, _min_size(rgb.shape))


def segment_unsup25d(depth: np.ndarray, normal: np.ndarray, curvature: np.ndarray) -> np.ndarray:
    """8-bit Felzenszwalb superpixels of a depth + normals + curvature image."""
    depth = np.ascontiguousarray(depth, dtype=np.float64)
    finite = np.isfinite(depth)
    top = float(depth[finite].max()) if finite.any() else 0.0
    stack = _geometry_image(depth, np.ascontiguousarray(normal, dtype=np.float64),
                            np.ascontiguousarray(curvature, dtype=np.float64),
                            max(float(np.log1p(top)), 1e-6))
    return felzenszwalb.segment(stack, 0.5, 600.0, _min_size(depth.shape))


@numba.njit(cache=True, error_model="numpy")
def _geometry_image(depth, normal, curvature, log_top):
    """5-channel float32 image: log depth (0..255), normals (0..255), k1 (clipped 0..255)."""
    height, width = depth.shape
    out = np.empty((height, width, 5), dtype=np.float32)
    for r in range(height):
        for c in range(width):
            z = depth[r, c]
            out[r, c, 0] = np.log1p(z if np.isfinite(z) else 0.0) / log_top * 255.0
            for k in range(3):
                out[r, c, 1 + k] = (normal[r, c, k] + 1.0) * 127.5
            out[r, c, 4] = min(max(curvature[r, c, 0] * 10.0, 0.0), 255.0)
    return out


def segment_semantic(buffers: ViewBuffers) -> np.ndarray:
    """8-bit semantic labels: 1 background, 2..17 classes, 0 along object borders and misses."""
    return _segment_semantic(np.ascontiguousarray(buffers.semantic, dtype=np.int32),
                             np.ascontiguousarray(buffers.objects, dtype=np.int32),
                             np.ascontiguousarray(buffers.prim, dtype=np.int32))


@numba.njit(cache=True, error_model="numpy")
def _segment_semantic(semantic, objects, prim):
    height, width = semantic.shape
    out = np.empty((height, width), dtype=np.uint8)
    for r in range(height):
        for c in range(width):
            label = semantic[r, c]
            border = False
            # Borders between two background surfaces stay background.
            if label != BACKGROUND:
                for dr, dc in ((-1, 0), (1, 0), (0, -1), (0, 1)):
                    rr, cc = r + dr, c + dc
                    if (0 <= rr < height and 0 <= cc < width and objects[rr, cc] != objects[r, c]
                            and semantic[rr, cc] != label):
                        border = True
                        break
            out[r, c] = UNCERTAIN if border or prim[r, c] < 0 else label
    return out


def class_object(buffers: ViewBuffers) -> np.ndarray:
    """1000-way ImageNet distribution from the visible area of each semantic class."""
    counts = np.bincount(buffers.semantic.reshape(-1), minlength=len(SEMANTIC_CLASSES) + 1)
    areas = {name: float(counts[index + 1]) for index, name in enumerate(SEMANTIC_CLASSES)}
    return object_distribution(areas)


def class_scene(room_type: str) -> np.ndarray:
    """365-way Places365 distribution of the room type."""
    return scene_distribution(room_type)


#: The image domains :func:`view_labels` makes, in its order.
VIEW_DOMAINS = ("rgb", "depth_euclidean", "depth_zbuffer", "normal", "reshading",
                "principal_curvature", "edge_texture", "edge_occlusion", "keypoints2d",
                "keypoints3d", "segment_unsup2d", "segment_unsup25d", "segment_semantic",
                "class_object", "class_scene")
#: Every domain a synthetic building has: the image domains and the camera records.
RENDERED_DOMAINS = (*VIEW_DOMAINS, "point_info", "nonfixated_matches")


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
