"""Classification: soft-target distillation (object, scene) and jigsaw (9 tiles, 100 classes).

Object and scene classification read the flattened 16×16×8 representation through FC 2048 (BN,
ReLU, dropout) to the class logits and learn soft targets (a 1000- or 63-way distribution) with a
per-sample validity mask. Jigsaw encodes its 9 tiles with the shared encoder and classifies the
permutation from their concatenation (FC 2048, FC 2048, 100) with hard-label cross-entropy.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from taskonomy.tasks.families.base import TaskModule, flat_features, scaled
from taskonomy.tasks.losses import Reduction, cross_entropy, soft_cross_entropy
from taskonomy.tasks.networks.heads import FCHead, SiameseHead

#: Hidden widths of the single-image classification head.
CLASSIFICATION_HIDDEN = (2048,)
#: Hidden widths of the jigsaw head over the concatenated towers.
JIGSAW_HIDDEN = (2048, 2048)


class ClassificationTask(TaskModule):
    """Soft-target classification (one tower) or permutation classification (several towers)."""

    def make_head(self, in_channels: int) -> nn.Module:
        """An FC head, or a siamese head when the task encodes several tiles."""
        features = flat_features(in_channels, self.hparams["resolution"])
        width = self.hparams["head_width"]
        if self.spec.towers > 1:
            return SiameseHead(
                self.spec.towers,
                features,
                scaled(JIGSAW_HIDDEN, width),
                self.spec.output_channels,
            )
        return FCHead(features, scaled(CLASSIFICATION_HIDDEN, width), self.spec.output_channels)

    def compute_loss(
        self,
        prediction: torch.Tensor,
        task_batch: dict[str, Any],
        reduction: Reduction = "mean",
        keys: list[str] | None = None,
    ) -> torch.Tensor:
        """Soft-target CE for distributions, CE for class indices."""
        target, mask = task_batch["target"], task_batch.get("mask")
        if target.is_floating_point():
            return soft_cross_entropy(prediction, target, mask, reduction)
        return cross_entropy(prediction, target, mask, reduction)
