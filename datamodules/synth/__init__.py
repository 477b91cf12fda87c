"""Procedural synthetic indoor buildings in the released Taskonomy layout.

``synthesize(out, buildings=3, resolution=256, seed=0, workers=1)`` writes buildings whose every
file follows the released folders, names and encodings; see :mod:`.dataset`.
"""

from taskonomy.datamodules.synth.dataset import (
    MANIFEST,
    SPLIT_FILE,
    assign_splits,
    read_split_csv,
    split_csv,
    synthesize,
)

__all__ = ["MANIFEST", "SPLIT_FILE", "assign_splits", "read_split_csv", "split_csv", "synthesize"]
