"""AHP ordinal normalization (Saaty's Analytic Hierarchy Process), as in Taskonomy Sec. 3.3.

Per target, the tournament matrix ``W`` (``w_ij`` = share of test images where candidate i beats
candidate j) is clipped to ``[0.001, 0.999]`` (the paper's Laplace smoothing), turned into the
reciprocal ratio matrix ``W' = W / Wᵀ`` (element-wise; ``w'_ij`` = odds that i beats j), and the
affinity of each candidate is the entry of the principal eigenvector of ``W'``, normalized to
sum 1. For a consistent matrix (``w_ij = a_i / (a_i + a_j)``) ``W'_ij = a_i / a_j`` has rank one
and the eigenvector is exactly ``a`` (normalized).
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray

#: The paper's clipping range.
DEFAULT_CLIP = (0.001, 0.999)


def _check_tournament(win_rates: ArrayLike) -> NDArray[np.float64]:
    matrix = np.asarray(win_rates, dtype=np.float64)
    if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1] or matrix.shape[0] == 0:
        raise ValueError(f"a tournament matrix must be square and non-empty, got {matrix.shape}")
    tolerance = 1e-9  # sums of image weights may overshoot 1 by rounding
    if not np.all(np.isfinite(matrix)) or matrix.min() < -tolerance or matrix.max() > 1 + tolerance:
        raise ValueError("win rates must be finite shares in [0, 1]")
    return np.clip(matrix, 0.0, 1.0)


def ratio_matrix(win_rates: ArrayLike, clip: tuple[float, float] = DEFAULT_CLIP
                 ) -> NDArray[np.float64]:
    """The reciprocal matrix ``W' = clip(W) / clip(W)ᵀ`` (element-wise)."""
    low, high = clip
    if not 0 < low <= high < 1:
        raise ValueError(f"clip range must satisfy 0 < low <= high < 1, got {clip}")
    matrix = np.clip(_check_tournament(win_rates), low, high)
    return matrix / matrix.T


def principal_eigenvector(matrix: NDArray[np.float64]) -> tuple[float, NDArray[np.float64]]:
    """The Perron eigenvalue and eigenvector (positive, summing to 1) of a positive matrix."""
    values, vectors = np.linalg.eig(matrix)
    index = int(np.argmax(values.real))
    vector = np.abs(vectors[:, index].real)  # the Perron vector has one sign; fix it positive
    return float(values[index].real), vector / vector.sum()


def ahp_weights(win_rates: ArrayLike, clip: tuple[float, float] = DEFAULT_CLIP
                ) -> NDArray[np.float64]:
    """AHP affinities of the candidates of one tournament.

    Args:
        win_rates: Square matrix, ``w_ij`` = share of images where candidate i beats j
            (the diagonal is ignored: ``w'_ii = 1`` after the ratio).
        clip: Clipping range applied before the ratio.

    Returns:
        Positive weights, one per candidate, summing to 1.
    """
    _, vector = principal_eigenvector(ratio_matrix(win_rates, clip))
    return vector


def consistency_index(win_rates: ArrayLike, clip: tuple[float, float] = DEFAULT_CLIP) -> float:
    """Saaty's consistency index ``(λ_max - n) / (n - 1)`` of the ratio matrix (0 = consistent)."""
    ratios = ratio_matrix(win_rates, clip)
    n = ratios.shape[0]
    if n < 2:
        return 0.0
    value, _ = principal_eigenvector(ratios)
    return max(0.0, (value - n) / (n - 1))


def consistent_tournament(strengths: ArrayLike) -> NDArray[np.float64]:
    """The consistent (Bradley–Terry) tournament ``w_ij = a_i / (a_i + a_j)`` of strengths ``a``."""
    a = np.asarray(strengths, dtype=np.float64)
    if a.ndim != 1 or np.any(a <= 0):
        raise ValueError("strengths must be a 1-D array of positive numbers")
    return a[:, None] / (a[:, None] + a[None, :])
