"""Per-image loss tables: tidy long tables, and candidates aligned image by image.

Win rates compare two candidates on the *same* test images, so their per-image losses are
aligned by sample key. Keys that some candidates lack are never dropped silently: alignment
either intersects and warns with the counts (default), or raises in strict mode.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from taskonomy.analysis.records import RunRecord

#: Columns of :func:`losses_frame`.
LOSS_COLUMNS = ("run_id", "role", "target", "candidate", "order", "regime", "sample_key", "loss")


class SampleKeyWarning(UserWarning):
    """Candidates of one target were evaluated on different test images."""


@dataclass(frozen=True)
class AlignedLosses:
    """Per-image losses of several candidates on a common set of test images.

    Attributes:
        candidates: Candidate names, in row order of ``losses``.
        keys: Sample keys, in column order of ``losses`` (sorted).
        losses: ``(len(candidates), len(keys))`` array.
        missing: Per candidate, how many keys of the union it lacks (only candidates lacking any).
        n_union: Number of distinct keys over all candidates.
    """

    candidates: tuple[str, ...]
    keys: tuple[str, ...]
    losses: NDArray[np.float64]
    missing: dict[str, int]
    n_union: int

    @property
    def n_dropped(self) -> int:
        """Keys of the union left out because some candidate lacks them."""
        return self.n_union - len(self.keys)

    def describe_mismatch(self) -> str:
        """The key mismatch in words (empty when all candidates share their keys)."""
        if not self.missing:
            return ""
        parts = ", ".join(f"{name} lacks {n}" for name, n in sorted(self.missing.items()))
        return (f"{len(self.keys)} of {self.n_union} sample keys are shared by all "
                f"{len(self.candidates)} candidates ({parts})")


def align_losses(losses: Mapping[str, Mapping[str, float]], *, strict: bool = False,
                 context: str = "") -> AlignedLosses:
    """Align per-image losses of candidates by sample key.

    Args:
        losses: Candidate name → (sample key → loss).
        strict: Raise instead of intersecting when keys differ.
        context: Words naming the tournament (e.g. ``"target normal"``) for messages.

    Raises:
        ValueError: No candidates, a candidate without losses, keys differ in strict mode, or no
            key is shared by all candidates. Messages give the counts.
    """
    where = f"{context}: " if context else ""
    if not losses:
        raise ValueError(f"{where}no candidates to align")
    empty = sorted(name for name, values in losses.items() if not values)
    if empty:
        raise ValueError(
            f"{where}candidates without per-image losses: {empty}; their runs must record "
            "per_image_losses"
        )
    key_sets = {name: set(values) for name, values in losses.items()}
    union = set().union(*key_sets.values())
    common = set.intersection(*key_sets.values())
    missing = {name: len(union - keys) for name, keys in key_sets.items() if len(keys) < len(union)}
    aligned = AlignedLosses(
        candidates=tuple(losses), keys=tuple(sorted(common)),
        losses=np.empty((len(losses), len(common))), missing=missing, n_union=len(union),
    )
    if missing:
        message = f"{where}inconsistent sample keys: {aligned.describe_mismatch()}"
        if strict or not common:
            shared = "" if common else "; no key is shared by all"
            raise ValueError(f"{message}{shared}; evaluate every candidate on the same test split")
        warnings.warn(f"{message}; comparing on the shared keys only", SampleKeyWarning,
                      stacklevel=2)
    keys = aligned.keys
    for row, values in enumerate(losses.values()):
        aligned.losses[row] = [values[k] for k in keys]
    return aligned


def losses_frame(records: Iterable[RunRecord]) -> pd.DataFrame:
    """A tidy long table, one row per (run, sample key): :data:`LOSS_COLUMNS`."""
    frames = []
    for r in records:
        if not r.per_image_losses:
            continue
        frames.append(pd.DataFrame({
            "run_id": r.run_id, "role": r.role, "target": r.target, "candidate": r.candidate,
            "order": r.order, "regime": r.regime,
            "sample_key": list(r.per_image_losses), "loss": list(r.per_image_losses.values()),
        }))
    if not frames:
        return pd.DataFrame(columns=list(LOSS_COLUMNS))
    return pd.concat(frames, ignore_index=True)[list(LOSS_COLUMNS)]


def losses_summary(frame: pd.DataFrame) -> pd.DataFrame:
    """Per run: number of images, mean, median, std, min and max loss of a :func:`losses_frame`."""
    group = ["run_id", "role", "target", "candidate", "order", "regime"]
    if frame.empty:
        return pd.DataFrame(columns=group + ["n_images", "mean", "median", "std", "min", "max"])
    summary = frame.groupby(group, sort=True)["loss"].agg(
        n_images="count", mean="mean", median="median", std="std", min="min", max="max"
    )
    return summary.reset_index()
