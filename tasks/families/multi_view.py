"""Multi-view tasks: camera pose (fixated, non-fixated), egomotion and point matching.

One encoder is shared by all views (``B×V×3×H×W`` in); the head reads the concatenated flattened
representations. Pose heads regress the z-scored 6-d relative pose with the per-sample Euclidean
loss; the egomotion head predicts poses 0→1 and 1→2 and composes 0→2 (cycle loss); point matching
classifies whether two views are centred on the same point.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from taskonomy.tasks.families.base import TaskModule, check_same_shape, flat_features, scaled
from taskonomy.tasks.losses import Reduction, get_loss
from taskonomy.tasks.networks.heads import EgomotionCycleHead, SiameseHead

#: Hidden widths per task (the authors' layer_num); other multi-view tasks get the default.
HIDDEN: dict[str, tuple[int, ...]] = {
    "fixated_pose": (2048,),
    "nonfixated_pose": (2048, 2048),
    "egomotion": (1024, 1024),
    "point_matching": (256,),
}
DEFAULT_HIDDEN = (2048,)


class MultiViewTask(TaskModule):
    """Siamese (2 views) or triplet (3 views, pose cycle) tasks over a shared encoder."""

    def make_head(self, in_channels: int) -> nn.Module:
        """A siamese FC head, or the egomotion cycle head for the ``pose_cycle`` loss."""
        features = flat_features(in_channels, self.hparams["resolution"])
        hidden = scaled(HIDDEN.get(self.spec.name, DEFAULT_HIDDEN), self.hparams["head_width"])
        if self.spec.loss == "pose_cycle":
            return EgomotionCycleHead(features, hidden)
        return SiameseHead(self.spec.towers, features, hidden, self.spec.output_channels)

    def compute_loss(
        self,
        prediction: torch.Tensor,
        task_batch: dict[str, Any],
        reduction: Reduction = "mean",
        keys: list[str] | None = None,
    ) -> torch.Tensor:
        """Pose, cycle or cross-entropy loss as the spec says."""
        if task_batch["target"].is_floating_point():
            check_same_shape(self.spec.name, prediction, task_batch["target"])
        loss = get_loss(self.spec.loss)
        return loss(prediction, task_batch["target"], task_batch.get("mask"), reduction)
