"""Win rates over per-image losses: the tournament of one target, quality, gain and AHP.

For a target t, every candidate (transfers of every order, the ``random`` baseline and ``self``,
t's own fully supervised network) is compared with every other on the same test images:
``w_ij`` = share of images where candidate i's loss is strictly lower than j's, as the paper
defines it. A tie is a win for neither side, so ``w_ij + w_ji = 1`` minus the share of ties; ties
leave the odds ``w_ij / w_ji`` that AHP uses unchanged (e.g. the images where no candidate has a
valid label and every loss is 0). ``w_ii = 0.5``, as the authors store the self-comparison.
Quality = win rate vs ``self``; gain = win rate vs ``pixels`` (a network trained from scratch on
the transfer data). ``pixels`` is a reference only, never a tournament candidate.
Affinities are the AHP weights of the tournament (:mod:`taskonomy.analysis.ahp`); optional
bootstrap confidence intervals resample test images with replacement.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike, NDArray

from taskonomy.analysis.ahp import DEFAULT_CLIP, ahp_weights
from taskonomy.analysis.losses_table import AlignedLosses, SampleKeyWarning, align_losses

#: Elements of one block of per-image outcomes (float32: 64 MiB).
_CHUNK_ELEMENTS = 16 * 1024 * 1024
#: Reference candidates of quality (``self``) and gain (``pixels``).
SELF, PIXELS = "self", "pixels"


def pairwise_win_rates(losses: ArrayLike, weights: ArrayLike | None = None) -> NDArray[np.float64]:
    """The tournament matrix of per-image losses (strictly lower loss wins; a tie wins nothing).

    Args:
        losses: ``(n_candidates, n_images)`` losses on the same images.
        weights: Optional ``(n_images,)`` or ``(n_images, n_draws)`` image weights summing to 1
            per draw (bootstrap); ``None`` weighs images equally.

    Returns:
        ``(n, n)`` matrix, or ``(n_draws, n, n)`` with 2-D weights.

    Raises:
        ValueError: Losses of another shape, or not finite (a NaN would tie with everything,
            and a diverged candidate would draw level with the best).
    """
    values = np.asarray(losses, dtype=np.float64)
    if values.ndim != 2 or values.shape[1] == 0:
        raise ValueError(f"losses must be (candidates, images) with images > 0, got {values.shape}")
    if not np.isfinite(values).all():
        bad = sorted({int(i) for i in np.nonzero(~np.isfinite(values).all(axis=1))[0]})
        raise ValueError(f"losses must be finite; candidate row(s) {bad} hold NaN or inf (a "
                         "diverged run): drop those candidates or the images they failed on")
    n, m = values.shape
    w = np.full(m, 1.0 / m) if weights is None else np.asarray(weights, dtype=np.float64)
    # Per-image outcomes are 0 or 1, exact in float32, which halves the bootstrap's matmul cost.
    w32 = np.ascontiguousarray(w, dtype=np.float32)
    rows, cols = np.triu_indices(n, k=1)  # each pair once: i beats j, and j beats i
    upper = np.empty((len(rows),) + w.shape[1:])
    lower = np.empty_like(upper)
    chunk = max(1, _CHUNK_ELEMENTS // m)  # pairs per block: large BLAS calls, bounded memory
    for start in range(0, len(rows), chunk):
        left, right = values[rows[start:start + chunk]], values[cols[start:start + chunk]]
        wins, defeats = left < right, right < left
        if weights is None:  # exact shares (242/360 stays 0.6722...2, not a float32 sum)
            upper[start:start + chunk] = wins.sum(axis=1) / m
            lower[start:start + chunk] = defeats.sum(axis=1) / m
        else:
            upper[start:start + chunk] = wins.astype(np.float32) @ w32
            lower[start:start + chunk] = defeats.astype(np.float32) @ w32
    for part in (upper, lower):
        np.clip(part, 0.0, 1.0, out=part)  # float32 sums may overshoot 1 by rounding
    out = np.full((n, n) + w.shape[1:], 0.5)
    out[rows, cols] = upper
    out[cols, rows] = lower
    return out if w.ndim == 1 else np.moveaxis(out, -1, 0)


def _signs_and_clusters(losses_a: ArrayLike, losses_b: ArrayLike, clusters: ArrayLike | None
                        ) -> tuple[NDArray[np.float64], NDArray[np.intp], int]:
    a = np.asarray(losses_a, dtype=np.float64)
    b = np.asarray(losses_b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1 or a.size == 0:
        raise ValueError(f"losses must be two equal non-empty vectors, got {a.shape} and {b.shape}")
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        raise ValueError("losses must be finite; drop the images whose loss is NaN or inf")
    labels = np.arange(a.size) if clusters is None else np.asarray(clusters)
    if labels.shape != a.shape:
        raise ValueError(f"clusters must label every image: {labels.shape} for {a.shape} losses")
    _, group = np.unique(labels, return_inverse=True)
    return np.sign(b - a), group.reshape(-1), int(group.max()) + 1


def win_margin(losses_a: ArrayLike, losses_b: ArrayLike,
               clusters: ArrayLike | None = None) -> tuple[float, float]:
    """How much more often ``a`` wins than ``b``, with a cluster-robust standard error.

    The margin is ``w_ab − w_ba``: the mean over images of ``sign(loss_b − loss_a)``. Views of
    one building share their scene, so their outcomes are not independent; the standard error
    treats each cluster (e.g. a building) as one draw, not each image.

    Args:
        losses_a: ``(n_images,)`` losses of candidate a.
        losses_b: ``(n_images,)`` losses of candidate b on the same images.
        clusters: ``(n_images,)`` cluster labels (``None``: every image its own cluster).

    Returns:
        ``(margin, standard_error)``; the error is ``inf`` with fewer than two clusters.

    Raises:
        ValueError: Vectors of other shapes, non-finite losses, or clusters of another length.
    """
    signs, group, n_groups = _signs_and_clusters(losses_a, losses_b, clusters)
    margin = float(signs.mean())
    if n_groups < 2:
        return margin, float("inf")
    sums = np.bincount(group, weights=signs - margin, minlength=n_groups)
    variance = n_groups / (n_groups - 1) * float(np.sum(sums**2)) / signs.size**2
    return margin, float(np.sqrt(variance))


#: Clusters up to which :func:`sign_flip_p_value` enumerates every flip (2**16 sums).
_EXACT_CLUSTERS = 16
#: Flip signs drawn at once by :func:`sign_flip_p_value` (int64: 32 MiB).
_FLIP_ELEMENTS = 4 * 1024 * 1024


def sign_flip_p_value(losses_a: ArrayLike, losses_b: ArrayLike,
                      clusters: ArrayLike | None = None, *, draws: int = 2**16,
                      seed: int = 0) -> float:
    """Two-sided p-value that ``a`` and ``b`` are equally good: a sign test over clusters.

    Under that hypothesis each cluster's sum of ``sign(loss_b − loss_a)`` is as likely negative
    as positive, so the observed total is compared with the totals of every flip of the cluster
    sums (exact up to 16 clusters, else ``draws`` random flips). Unlike a normal approximation
    it holds with a few clusters: with 2 buildings no result is significant at 5 %.

    Args:
        losses_a: ``(n_images,)`` losses of candidate a.
        losses_b: ``(n_images,)`` losses of candidate b on the same images.
        clusters: ``(n_images,)`` cluster labels (``None``: every image its own cluster).
        draws: Random flips beyond 16 clusters.
        seed: Seed of the random flips.

    Raises:
        ValueError: As :func:`win_margin`.
    """
    return _sign_flip(*_signs_and_clusters(losses_a, losses_b, clusters), draws=draws,
                      seed=seed)


def _sign_flip(signs: NDArray[np.float64], group: NDArray[np.intp], n_groups: int, *,
               draws: int = 2**16, seed: int = 0) -> float:
    sums = np.rint(np.bincount(group, weights=signs, minlength=n_groups)).astype(np.int64)
    observed = abs(int(sums.sum()))
    if observed == 0:
        return 1.0
    if n_groups <= _EXACT_CLUSTERS:
        bits = (np.arange(2**n_groups)[:, None] >> np.arange(n_groups)) & 1
        totals = (1 - 2 * bits) @ sums
        return float(np.mean(np.abs(totals) >= observed))
    rng = np.random.default_rng(seed)
    extreme = 0
    chunk = max(1, _FLIP_ELEMENTS // n_groups)  # bounded memory with many clusters
    for start in range(0, draws, chunk):
        flips = rng.integers(0, 2, size=(min(chunk, draws - start), n_groups), dtype=np.int64)
        extreme += int(np.sum(np.abs((1 - 2 * flips) @ sums) >= observed))
    return (extreme + 1) / (draws + 1)  # the observed flip counts as one draw


def significantly_better(losses_a: ArrayLike, losses_b: ArrayLike,
                         clusters: ArrayLike | None = None, level: float = 0.95) -> bool:
    """Whether ``a`` beats ``b`` on more images than chance allows.

    ``a`` wins more images than it loses, and :func:`sign_flip_p_value` (two-sided) is below
    ``1 − level``.
    """
    signs, group, n_groups = _signs_and_clusters(losses_a, losses_b, clusters)
    return bool(signs.sum() > 0) and _sign_flip(signs, group, n_groups) < 1 - level


@dataclass(frozen=True)
class Tournament:
    """The tournament of one target.

    Attributes:
        target: The target task.
        candidates: Tournament candidates (``self`` and ``random`` included, ``pixels`` not).
        win_rates: ``(n, n)``, ``w_ij`` = share of images where candidate i beats j.
        affinity: AHP weights, summing to 1.
        quality: Win rate of each candidate vs ``self`` (NaN without a ``self`` candidate).
        gain: Win rate of each candidate vs ``pixels`` on the images it has (NaN without it).
        alignment: The aligned losses of the candidates (``pixels`` is not among them).
        ci: With a bootstrap, ``(low, high)`` arrays per quantity (``"affinity"``,
            ``"quality"``, ``"gain"``) at the requested level; empty otherwise.
        gain_images: Images the gain compares on (those of the tournament ``pixels`` has;
            0 without ``pixels``).
    """

    target: str
    candidates: tuple[str, ...]
    win_rates: NDArray[np.float64]
    affinity: NDArray[np.float64]
    quality: NDArray[np.float64]
    gain: NDArray[np.float64]
    alignment: AlignedLosses
    ci: dict[str, tuple[NDArray[np.float64], NDArray[np.float64]]]
    gain_images: int = 0

    @property
    def n_images(self) -> int:
        """Number of test images compared."""
        return len(self.alignment.keys)

    def win_rate_frame(self) -> pd.DataFrame:
        """The win-rate matrix as a labelled frame (rows beat columns)."""
        return pd.DataFrame(self.win_rates, index=list(self.candidates),
                            columns=list(self.candidates))

    def frame(self) -> pd.DataFrame:
        """One row per candidate: target, candidate, affinity, quality, gain (+ CI columns)."""
        frame = pd.DataFrame({
            "target": self.target, "candidate": list(self.candidates),
            "affinity": self.affinity, "quality": self.quality, "gain": self.gain,
        })
        for name, (low, high) in self.ci.items():
            frame[f"{name}_low"] = low
            frame[f"{name}_high"] = high
        frame["n_images"] = self.n_images
        return frame


def tournament(target: str, losses: Mapping[str, Mapping[str, float]], *, strict: bool = False,
               bootstrap: int = 0, level: float = 0.95, seed: int = 0,
               clip: tuple[float, float] = DEFAULT_CLIP) -> Tournament:
    """Compute win rates, quality, gain and AHP affinities of one target.

    Args:
        target: The target task (for messages).
        losses: Candidate name → (sample key → per-image test loss). May hold ``pixels``,
            which is used for gain only.
        strict: Raise on mismatched sample keys instead of comparing on the shared keys.
        bootstrap: Number of bootstrap resamples of the test images (0: no intervals).
        level: Confidence level of the bootstrap intervals.
        seed: Seed of the bootstrap.
        clip: AHP clipping range.

    Raises:
        ValueError: Fewer than two tournament candidates, key mismatches (see
            :func:`~taskonomy.analysis.losses_table.align_losses`), or non-finite losses.
    """
    players = [name for name in losses if name != PIXELS]
    if len(players) < 2:
        raise ValueError(
            f"target {target!r}: a tournament needs at least two candidates besides 'pixels', "
            f"got {players}; record transfers and the 'self'/'random' baselines of {target!r}"
        )
    if not 0 < level < 1:
        raise ValueError(f"confidence level must be in (0, 1), got {level}")
    context = f"target {target!r}"
    aligned = align_losses({name: losses[name] for name in players}, strict=strict,
                           context=context)
    diverged = [name for name, row in zip(players, aligned.losses, strict=True)
                if not np.isfinite(row).all()]
    if PIXELS in losses and not np.isfinite(np.fromiter(losses[PIXELS].values(), float)).all():
        diverged.append(PIXELS)
    if diverged:
        raise ValueError(f"{context}: {', '.join(diverged)} have NaN or inf per-image losses (a "
                         "diverged run); train them again, or leave their records out")
    full = pairwise_win_rates(aligned.losses)
    n = len(players)
    quality_col = players.index(SELF) if SELF in players else None
    # ``pixels`` is only the gain's reference: images it lacks leave the tournament as it is,
    # and gain compares on the images both have.
    beats_pixels, shared = (_beats_reference(aligned, losses[PIXELS], strict, context)
                            if PIXELS in losses else (None, None))

    def summarize(w: NDArray[np.float64], image_weights: NDArray[np.float64] | None = None
                  ) -> tuple[NDArray[np.float64], ...]:
        gain = np.full(n, np.nan)
        if beats_pixels is not None and shared is not None and image_weights is None:
            gain = beats_pixels.mean(axis=1)  # exact shares, as pairwise_win_rates
        elif beats_pixels is not None and shared is not None and image_weights is not None:
            mass = image_weights[shared].sum()
            gain = beats_pixels @ image_weights[shared] / mass if mass > 0 else gain
        return (
            ahp_weights(w, clip),
            w[:, quality_col] if quality_col is not None else np.full(n, np.nan),
            gain,
        )

    affinity, quality, gain = summarize(full)
    ci: dict[str, tuple[NDArray[np.float64], NDArray[np.float64]]] = {}
    if bootstrap > 0:
        m = len(aligned.keys)
        rng = np.random.default_rng(seed)
        weights = rng.multinomial(m, np.full(m, 1.0 / m), size=bootstrap).T / m
        draws = [summarize(w, weights[:, i])
                 for i, w in enumerate(pairwise_win_rates(aligned.losses, weights))]
        tail = (1 - level) / 2 * 100
        for i, name in enumerate(("affinity", "quality", "gain")):
            stacked = np.stack([d[i] for d in draws])
            # Gain is undefined (NaN) in a draw that holds none of the images pixels has;
            # without pixels (or self) every draw is NaN, and so is the interval.
            partial = name == "gain" and beats_pixels is not None
            percentile = np.nanpercentile if partial else np.percentile
            low, high = percentile(stacked, [tail, 100 - tail], axis=0)
            ci[name] = (low, high)
    return Tournament(target, tuple(players), full, affinity, quality, gain, aligned, ci,
                      gain_images=int(shared.sum()) if shared is not None else 0)


def _beats_reference(aligned: AlignedLosses, reference: Mapping[str, float], strict: bool,
                     context: str) -> tuple[NDArray[np.float64], NDArray[np.bool_]]:
    """Whether each candidate beats ``pixels`` on each shared image, and which images those are.

    Returns:
        ``(n_candidates, n_shared)`` outcomes (1.0: a strictly lower loss), and the mask of the
        tournament's images that ``pixels`` has.

    Raises:
        ValueError: ``pixels`` has none of the tournament's images, or lacks some in strict mode.
    """
    shared = np.array([key in reference for key in aligned.keys], dtype=bool)
    lacking = int((~shared).sum())
    if lacking:
        message = (f"{context}: {PIXELS!r} lacks {lacking} of the tournament's "
                   f"{len(aligned.keys)} images")
        if strict or not shared.any():
            raise ValueError(f"{message}; evaluate it on the same test split as the candidates")
        warnings.warn(f"{message}; gain compares on the {int(shared.sum())} it has",
                      SampleKeyWarning, stacklevel=3)
    values = np.array([reference[key] for key, has in zip(aligned.keys, shared, strict=True)
                       if has], dtype=np.float64)
    return (aligned.losses[:, shared] < values).astype(np.float64), shared


