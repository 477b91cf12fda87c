"""Inputs and targets of the self-supervised tasks, made on the fly from the RGB image.

- Denoising: Gaussian noise of variance 0.01 on the [0,1] image, clipped (skimage
  ``random_noise``), then → [-1,1].
- Inpainting: the centre H/2×W/2 block of the [-1,1] image set to 0.
- Colorization: the L channel of CIE Lab, [0,100] → [-1,1], as the input; the target is a soft
  encoding of the ab channels over 313 quantized ab bins at H/4×W/4 (10 nearest bins, Gaussian
  σ = 5), as in Zhang et al. 2016.
- Jigsaw: a 3×3 grid; each tile is 90% of its cell at a random offset, resized; the tiles are
  shuffled by one of 100 permutations chosen greedily for large Hamming distance.

The authors' ``pts_in_hull.npy`` (the 313 bins) and ``jigsaw_max_hamming_set.npy`` (binary files
of their repositories) are not bundled; both sets are rebuilt here deterministically by the same
constructions (:func:`build_ab_bins`, :func:`build_jigsaw_permutations`) and shipped as package
data (``ab_bins_313.npy``, ``jigsaw_permutations_100.npy``) because building them takes seconds.
A run can use the authors' files instead (:class:`LabelSets`, the ``ab_bins`` and
``jigsaw_permutations`` options), so that a bin or permutation index means what it meant to them.
"""

from __future__ import annotations

import functools
import itertools
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import cv2
import numpy as np

from taskonomy.datamodules.encodings import resize

AB_BIN_COUNT = 313
AB_GRID_STEP = 10.0
COLOR_NEIGHBOURS = 10
COLOR_SIGMA = 5.0
JIGSAW_PERMUTATIONS = 100
JIGSAW_TILE_FRACTION = 0.9
DENOISE_VARIANCE = 0.01


def denoising_input(rgb01: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """H×W×3 image in [0,1] → 3×H×W noisy image in [-1,1]."""
    noisy = np.clip(rgb01 + rng.normal(0.0, DENOISE_VARIANCE**0.5, rgb01.shape), 0.0, 1.0)
    return np.ascontiguousarray(noisy.transpose(2, 0, 1) * 2.0 - 1.0, dtype=np.float32)


def inpainting_input(rgb_chw: np.ndarray) -> np.ndarray:
    """3×H×W image in [-1,1] with its centre block (H/4:3H/4, W/4:3W/4) set to 0."""
    out = rgb_chw.copy()
    _, h, w = out.shape
    out[:, h // 4 : 3 * h // 4, w // 4 : 3 * w // 4] = 0.0
    return out


def rgb_to_lab(rgb01: np.ndarray) -> np.ndarray:
    """H×W×3 sRGB in [0,1] → CIE Lab (L in [0,100], a/b roughly in [-110, 110])."""
    return np.asarray(cv2.cvtColor(rgb01.astype(np.float32), cv2.COLOR_RGB2LAB))


AB_BINS_FILE = "ab_bins_313.npy"
JIGSAW_FILE = "jigsaw_permutations_100.npy"


def _packaged(name: str) -> np.ndarray | None:
    path = resources.files("taskonomy.datamodules") / name
    if not path.is_file():
        return None
    with path.open("rb") as handle:
        return np.asarray(np.load(handle, allow_pickle=False))


@functools.cache
def ab_bins() -> np.ndarray:
    """The 313 ab bin centres (313×2 float32): the shipped copy of :func:`build_ab_bins`."""
    shipped = _packaged(AB_BINS_FILE)
    return shipped if shipped is not None else build_ab_bins()


@functools.cache
def jigsaw_permutations() -> np.ndarray:
    """The 100×9 permutations: the shipped copy of :func:`build_jigsaw_permutations`."""
    shipped = _packaged(JIGSAW_FILE)
    return shipped if shipped is not None else build_jigsaw_permutations()


#: The datamodule options that name label-set files (their contents make the labels).
LABEL_SET_OPTIONS = ("ab_bins", "jigsaw_permutations")

#: A set given as a ``.npy`` file or as nested lists of numbers (``None``: the shipped set).
SetSource = str | os.PathLike[str] | Sequence[Sequence[float]] | np.ndarray | None


def _read_set(source: str | os.PathLike[str] | Sequence[Sequence[float]] | np.ndarray,
              option: str) -> tuple[np.ndarray, str]:
    """The array of a file or list, and how to name it in messages."""
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        what = f"--data.{option}={path}"
        if not path.is_file():
            raise ValueError(f"{what}: no such file (a relative path is read from the working "
                             f"directory {Path.cwd()}); give the .npy file's path")
        try:
            return np.asarray(np.load(path, allow_pickle=False)), what
        except (ValueError, OSError):
            raise ValueError(f"{what} is not a .npy array file (a download that saved a web "
                             "page instead?); fetch the file again") from None
    return np.asarray(source), option


def load_ab_bins(source: str | os.PathLike[str] | Sequence[Sequence[float]] | np.ndarray
                 ) -> np.ndarray:
    """The 313 ab bin centres of a file (such as Zhang et al.'s ``pts_in_hull.npy``) or a list.

    Returns:
        313×2 float32, in the order given: a bin index is a row of the set.

    Raises:
        ValueError: No such file, not an array, not 313 distinct finite (a, b) pairs.
    """
    values, what = _read_set(source, "ab_bins")
    if values.shape != (AB_BIN_COUNT, 2) or not np.issubdtype(values.dtype, np.number):
        hint = " (transposed: save its .T)" if values.shape == (2, AB_BIN_COUNT) else ""
        raise ValueError(f"{what}: need {AB_BIN_COUNT}×2 numbers (one (a, b) centre per bin, as "
                         f"pts_in_hull.npy); got an array of shape {values.shape} and dtype "
                         f"{values.dtype}{hint}")
    if not np.isfinite(values).all() or len(np.unique(values, axis=0)) != AB_BIN_COUNT:
        raise ValueError(f"{what}: the bin centres must be finite and distinct (two bins with "
                         "one centre could never both be the nearest)")
    return values.astype(np.float32)


def load_jigsaw_permutations(
        source: str | os.PathLike[str] | Sequence[Sequence[float]] | np.ndarray) -> np.ndarray:
    """The jigsaw permutations of a file (such as the authors' ``jigsaw_max_hamming_set.npy``).

    Returns:
        100×9 int64: row ``k`` is the permutation of class ``k`` (tile ``i`` is cut from grid
        cell ``row[i]``, cells numbered 0–8 row by row).

    Raises:
        ValueError: No such file, not an array, not 100 distinct permutations of 0..8.
    """
    values, what = _read_set(source, "jigsaw_permutations")
    if values.shape != (JIGSAW_PERMUTATIONS, 9) or not np.issubdtype(values.dtype, np.number):
        raise ValueError(f"{what}: need {JIGSAW_PERMUTATIONS}×9 numbers (one permutation of the "
                         f"9 grid cells per class of the jigsaw head); got an array of shape "
                         f"{values.shape} and dtype {values.dtype}")
    rows = np.sort(values, axis=1)
    if not (rows == np.arange(9)).all():
        hint = (" (its cells are numbered 1..9: subtract 1 from the array)"
                if (rows == np.arange(1, 10)).all() else "")
        raise ValueError(f"{what}: every row must be a permutation of the cells 0..8{hint}")
    if len(np.unique(values, axis=0)) != JIGSAW_PERMUTATIONS:
        raise ValueError(f"{what}: two classes share one permutation; the rows must be "
                         "distinct")
    return values.astype(np.int64)


@dataclass(frozen=True)
class LabelSets:
    """What the labels of the two index-coded self-supervised tasks index.

    Colorization's targets are distributions over ``ab_bins`` (313×2); jigsaw's label ``k`` means
    ``jigsaw_permutations[k]`` (100×9). Both default to the shipped sets.
    """

    ab_bins: np.ndarray = field(default_factory=lambda: ab_bins())
    jigsaw_permutations: np.ndarray = field(default_factory=lambda: jigsaw_permutations())

    @classmethod
    def load(cls, ab_bins: SetSource = None, jigsaw_permutations: SetSource = None) -> LabelSets:
        """The sets of files or lists (``None``: the shipped set), checked.

        Raises:
            ValueError: See :func:`load_ab_bins` and :func:`load_jigsaw_permutations`.
        """
        sets = cls()
        return cls(
            sets.ab_bins if ab_bins is None else load_ab_bins(ab_bins),
            sets.jigsaw_permutations if jigsaw_permutations is None
            else load_jigsaw_permutations(jigsaw_permutations),
        )


#: Width (ab units) of the Gaussian that smooths the ab-bin distribution before the prior boost
#: (Zhang et al. 2016: σ = 5).
AB_PRIOR_SIGMA = 5.0


def smooth_ab_distribution(counts: np.ndarray, sigma: float = AB_PRIOR_SIGMA,
                           bins: np.ndarray | None = None) -> np.ndarray:
    """The empirical ab-bin distribution smoothed with a Gaussian in ab space (sums to 1).

    Zhang et al. (2016), whose prior boost the authors' colorization loss uses, smooth the
    empirical distribution of the quantized colours with a Gaussian kernel of ``σ = 5`` before
    mixing it with a uniform one: a bin next to a common colour is not treated as rare, which
    keeps the boost weights, and the gradient noise they cause, moderate.

    Args:
        counts: 313 non-negative counts (or probabilities) over the bins of :func:`ab_bins`.
        sigma: Kernel width in ab units (the bins are 10 apart).
        bins: The 313 bin centres the counts are over (default: :func:`ab_bins`).

    Raises:
        ValueError: Wrong length, negative counts or none at all, or ``sigma`` not positive.
    """
    counts = np.asarray(counts, dtype=np.float64).reshape(-1)
    if len(counts) != AB_BIN_COUNT or (counts < 0).any() or counts.sum() <= 0 or sigma <= 0:
        raise ValueError(
            f"need {AB_BIN_COUNT} non-negative ab-bin counts, not all zero, and sigma > 0; got "
            f"{len(counts)} counts (sum {counts.sum():g}) and sigma {sigma}"
        )
    centres = (ab_bins() if bins is None else bins).astype(np.float64)
    squared = ((centres[:, None, :] - centres[None, :, :]) ** 2).sum(-1)
    smoothed = np.exp(-squared / (2.0 * sigma**2)) @ (counts / counts.sum())
    return smoothed / smoothed.sum()


def build_ab_bins() -> np.ndarray:
    """The 313 quantized ab bin centres (313×2, float32), in a fixed order.

    Bins are the centres of a 10-unit ab grid. Every centre that some sRGB colour rounds to is
    in the set (the in-gamut bins); the rest of the 313 are the grid centres nearest to the
    gamut, ties broken by position. Ordered by a, then b.
    """
    levels = np.arange(0, 256, 3, dtype=np.float32) / 255.0
    colours = np.stack(np.meshgrid(levels, levels, levels, indexing="ij"), -1).reshape(-1, 1, 3)
    ab = rgb_to_lab(colours).reshape(-1, 3)[:, 1:]
    grid = np.arange(-110.0, 111.0, AB_GRID_STEP)
    centres = np.stack(np.meshgrid(grid, grid, indexing="ij"), -1).reshape(-1, 2)
    occupied = np.unique(np.round(ab / AB_GRID_STEP).astype(int), axis=0) * AB_GRID_STEP
    # Distance of every grid centre to the nearest sampled in-gamut ab value.
    sample = ab[:: max(1, len(ab) // 20000)]
    distance = np.sqrt(((centres[:, None, :] - sample[None, :, :]) ** 2).sum(-1)).min(1)
    inside = (centres[:, None, :] == occupied[None, :, :]).all(-1).any(1)
    distance[inside] = -1.0
    order = np.lexsort((centres[:, 1], centres[:, 0], distance))[:AB_BIN_COUNT]
    chosen = centres[np.sort(order)]
    return chosen.astype(np.float32)


def colorization_sample(rgb: np.ndarray, resolution: int,
                        bins: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Colorization input and target from a stored H×W×3 uint8 image.

    As the authors' ``to_light`` and ``ab_image_to_prob``: the lightness of the image resized
    bilinearly to R; the ab target from the image resized bilinearly (without anti-aliasing,
    as their skimage's ``resize``) straight to R/4 in its 0–255 range, truncated to uint8,
    then converted to Lab. ``bins``: the 313 bin centres (default: :func:`ab_bins`).

    Returns:
        ``(L, soft)``: the 1×R×R lightness in [-1,1] and the 313×(R/4)×(R/4) soft ab encoding
        (each pixel's weights over its 10 nearest bins, Gaussian σ=5, summing to 1).
    """
    values = rgb.astype(np.float32)
    lab = rgb_to_lab(resize(values / 255.0, resolution))
    lightness = (lab[:, :, 0] / 100.0 * 2.0 - 1.0)[None].astype(np.float32)
    quarter = max(1, resolution // 4)
    small = cv2.resize(values, (quarter, quarter), interpolation=cv2.INTER_LINEAR)
    # ``.astype('uint8')`` of the authors truncates (an exact value stays what it was).
    small = np.floor(np.clip(small, 0.0, 255.0) + 1e-3) / 255.0
    ab = rgb_to_lab(small.astype(np.float32))[:, :, 1:].reshape(-1, 2)
    bins = ab_bins() if bins is None else bins
    distance2 = ((ab[:, None, :] - bins[None, :, :]) ** 2).sum(-1)
    nearest = np.argpartition(distance2, COLOR_NEIGHBOURS, axis=1)[:, :COLOR_NEIGHBOURS]
    weights = np.exp(-np.take_along_axis(distance2, nearest, 1) / (2 * COLOR_SIGMA**2))
    weights /= weights.sum(1, keepdims=True)
    soft = np.zeros((ab.shape[0], AB_BIN_COUNT), np.float32)
    np.put_along_axis(soft, nearest, weights.astype(np.float32), 1)
    return lightness, np.ascontiguousarray(soft.T.reshape(AB_BIN_COUNT, quarter, quarter))


def build_jigsaw_permutations() -> np.ndarray:
    """The 100×9 permutation set (int64): greedy maximum total Hamming distance.

    Starts from the identity and repeatedly adds the permutation of 0..8 whose summed Hamming
    distance to the chosen ones is largest (the lowest index on ties), the authors' construction
    (they started from a random permutation).
    """
    candidates = np.array(list(itertools.permutations(range(9))), dtype=np.int8)
    chosen = [0]
    total = np.zeros(len(candidates), dtype=np.int64)
    available = np.ones(len(candidates), dtype=bool)
    available[0] = False
    while len(chosen) < JIGSAW_PERMUTATIONS:
        total += (candidates != candidates[chosen[-1]]).sum(1)
        best = int(np.argmax(np.where(available, total, -1)))
        chosen.append(best)
        available[best] = False
    return candidates[chosen].astype(np.int64)


def jigsaw_sample(rgb_chw: np.ndarray, rng: np.random.Generator,
                  tile_size: int, permutations: np.ndarray | None = None
                  ) -> tuple[np.ndarray, int]:
    """Jigsaw tiles and label from a 3×H×W image in [-1,1].

    ``permutations``: the 100×9 set the label indexes (default: :func:`jigsaw_permutations`).

    Returns:
        ``(tiles, k)``: 9×3×tile×tile tiles where tile i is cut from grid cell ``perm[k][i]``,
        and the permutation index k.
    """
    k = int(rng.integers(JIGSAW_PERMUTATIONS))
    permutation = (jigsaw_permutations() if permutations is None else permutations)[k]
    image = rgb_chw.transpose(1, 2, 0)
    h, w = image.shape[:2]
    unit_h, unit_w = h // 3, w // 3
    crop_h, crop_w = int(unit_h * JIGSAW_TILE_FRACTION), int(unit_w * JIGSAW_TILE_FRACTION)
    tiles = np.empty((9, 3, tile_size, tile_size), np.float32)
    for i, cell in enumerate(permutation):
        top = (cell // 3) * unit_h + int(rng.integers(unit_h - crop_h + 1))
        left = (cell % 3) * unit_w + int(rng.integers(unit_w - crop_w + 1))
        piece = image[top : top + crop_h, left : left + crop_w]
        tiles[i] = resize(np.ascontiguousarray(piece), tile_size).transpose(2, 0, 1)
    return tiles, k
