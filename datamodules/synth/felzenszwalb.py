"""Felzenszwalb–Huttenlocher graph segmentation, compiled with numba.

The same algorithm and parameters as OpenCV's ``ximgproc.segmentation.GraphSegmentation`` (which
the unsupervised segmentation labels used before): Gaussian smoothing of the float image, a
4-connected grid graph weighted by the Euclidean colour distance, Kruskal-order merging while an
edge is no heavier than both components' internal difference plus ``k / size``, then merging
components smaller than ``min_size`` along the lightest edges. It is about three times faster
because the edges are ordered by a two-pass radix sort of their float bits (non-negative IEEE
floats order like their bit patterns; the lowest mantissa bits are dropped) instead of a
comparison sort, and the segment ids come out already numbered by first appearance in raster
order.

Ties between (almost) equally heavy edges are taken in graph order, where OpenCV's sort leaves
their order unspecified, so pixels on ambiguous boundaries may fall in a different segment than
OpenCV's (the tests bound how many); the algorithm is the same.
"""

from __future__ import annotations

import cv2
import numba
import numpy as np

# Imported for its side effect: numba's cache moves to a writable folder before the kernels below
# are decorated (see raycast's module docstring).
from taskonomy.datamodules.synth import raycast  # noqa: F401

#: Largest segment id written; later segments share it (8-bit label files).
MAX_ID = 255


def segment(image: np.ndarray, sigma: float, k: float, min_size: int) -> np.ndarray:
    """Segment an H×W×C image; ids (uint8) numbered by first appearance, capped at 255.

    Args:
        image: H×W or H×W×C image of any numeric type (converted to float32).
        sigma: Standard deviation (pixels) of the Gaussian smoothing; 0 skips it.
        k: Scale of the merging threshold: larger values give larger segments.
        min_size: Components smaller than this are merged into a neighbour.

    Raises:
        ValueError: If the image is not 2-D or 3-D or has fewer than two pixels.
    """
    array: np.ndarray = np.asarray(image, dtype=np.float32)
    if array.ndim == 2:
        array = array[..., None]
    if array.ndim != 3 or array.shape[0] * array.shape[1] < 2:
        raise ValueError(f"segment expects an H×W or H×W×C image, got shape {image.shape}")
    if sigma > 0:
        blurred = cv2.GaussianBlur(array, (0, 0), sigma, sigmaY=sigma)
        array = blurred.reshape(array.shape)  # cv2 drops a single channel axis
    return _segment(np.ascontiguousarray(array), np.float32(k), int(min_size))


@numba.njit(cache=True, error_model="numpy")
def _find(parent, p):
    """Root of p's component, halving the path on the way (one pass, no recursion)."""
    while parent[p] != p:
        parent[p] = parent[parent[p]]
        p = parent[p]
    return p


@numba.njit(cache=True, error_model="numpy")
def _join(parent, size, a, b):
    """Union by size of two roots; returns the new root.

    Which root wins does not change the partition: thresholds and sizes follow the new root.
    """
    if size[a] < size[b]:
        a, b = b, a
    parent[b] = a
    size[a] += size[b]
    return a


@numba.njit(cache=True, error_model="numpy")
def _edges(image):
    """4-connected grid edges (right, down) and their weights, as in OpenCV."""
    height, width, channels = image.shape
    count = height * (width - 1) + (height - 1) * width
    first = np.empty(count, dtype=np.int32)
    second = np.empty(count, dtype=np.int32)
    weight = np.empty(count, dtype=np.float32)
    e = 0
    for r in range(height):
        for c in range(width):
            for dr, dc in ((0, 1), (1, 0)):
                rr, cc = r + dr, c + dc
                if rr >= height or cc >= width:
                    continue
                total = np.float32(0.0)
                for ch in range(channels):
                    diff = image[r, c, ch] - image[rr, cc, ch]
                    total += diff * diff
                first[e] = r * width + c
                second[e] = rr * width + cc
                weight[e] = np.sqrt(total)
                e += 1
    return first, second, weight


#: Low mantissa bits dropped from the sort keys: weights are ordered at a relative precision
#: of 2^-14 (6e-5), far below the smoothing noise, so two 11-bit radix passes suffice.
_DROPPED_BITS = 9


@numba.njit(cache=True, error_model="numpy")
def _radix_order(weight):
    """Stable ascending order of non-negative float32 weights (two 11-bit radix passes).

    Keys travel with their indices so every pass reads sequentially; the digit histograms of
    both passes are counted in one sweep.
    """
    n = weight.shape[0]
    keys = weight.view(np.uint32) >> _DROPPED_BITS
    order = np.arange(n).astype(np.int32)
    counts = np.zeros((2, 2049), dtype=np.int64)
    for i in range(n):
        key = keys[i]
        counts[0, (key & 0x7FF) + 1] += 1
        counts[1, (key >> 11) + 1] += 1
    scratch_keys = np.empty_like(keys)
    scratch_order = np.empty_like(order)
    for digit in range(2):
        for d in range(2048):
            counts[digit, d + 1] += counts[digit, d]
        shift = 11 * digit
        for i in range(n):
            key = keys[i]
            bucket = (key >> shift) & 0x7FF
            slot = counts[digit, bucket]
            scratch_keys[slot] = key
            scratch_order[slot] = order[i]
            counts[digit, bucket] = slot + 1
        keys, scratch_keys = scratch_keys, keys
        order, scratch_order = scratch_order, order
    return order


@numba.njit(cache=True, error_model="numpy")
def _segment(image, k, min_size):
    height, width, _ = image.shape
    pixels = height * width
    first, second, weight = _edges(image)
    order = _radix_order(weight)
    # Gather the edges in weight order once: the merging sweeps then read sequentially.
    count = order.shape[0]
    sorted_a = np.empty(count, dtype=np.int32)
    sorted_b = np.empty(count, dtype=np.int32)
    sorted_w = np.empty(count, dtype=np.float32)
    for j in range(count):
        e = order[j]
        sorted_a[j], sorted_b[j], sorted_w[j] = first[e], second[e], weight[e]
    parent = np.arange(pixels).astype(np.int32)
    size = np.ones(pixels, dtype=np.int32)
    threshold = np.full(pixels, k, dtype=np.float32)
    merged = np.zeros(count, dtype=np.bool_)
    for j in range(count):
        a, b = _find(parent, sorted_a[j]), _find(parent, sorted_b[j])
        w = sorted_w[j]
        if a != b and w <= threshold[a] and w <= threshold[b]:
            root = _join(parent, size, a, b)
            threshold[root] = w + k / np.float32(size[root])
            merged[j] = True
    for j in range(count):
        if merged[j]:
            continue
        a, b = _find(parent, sorted_a[j]), _find(parent, sorted_b[j])
        if a != b and (size[a] < min_size or size[b] < min_size):
            _join(parent, size, a, b)
    ids = np.full(pixels, -1, dtype=np.int32)
    out = np.empty((height, width), dtype=np.uint8)
    next_id = 0
    for p in range(pixels):
        root = _find(parent, p)
        if ids[root] < 0:
            ids[root] = next_id
            next_id += 1
        out[p // width, p % width] = min(ids[root], MAX_ID)
    return out
