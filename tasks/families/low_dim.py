"""Low-dimensional regression: room layout and vanishing points (9 values each).

The flattened representation goes through FC 2048 (BN, ReLU, dropout) to 9 outputs, trained with
MSE; the authors clip every variable's gradient to norm 1 for these tasks.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from taskonomy.tasks.families.base import TaskModule, check_same_shape, flat_features, scaled
from taskonomy.tasks.losses import Reduction, get_loss
from taskonomy.tasks.networks.heads import FCHead

LOW_DIM_HIDDEN = (2048,)


class LowDimRegressionTask(TaskModule):
    """Vector regression from one image."""

    default_clip_norm = 1.0

    def make_head(self, in_channels: int) -> nn.Module:
        """FC 2048 → outputs."""
        features = flat_features(in_channels, self.hparams["resolution"])
        hidden = scaled(LOW_DIM_HIDDEN, self.hparams["head_width"])
        return FCHead(features, hidden, self.spec.output_channels)

    def compute_loss(
        self,
        prediction: torch.Tensor,
        task_batch: dict[str, Any],
        reduction: Reduction = "mean",
        keys: list[str] | None = None,
    ) -> torch.Tensor:
        """The spec's loss (MSE for the built-in tasks)."""
        check_same_shape(self.spec.name, prediction, task_batch["target"])
        loss = get_loss(self.spec.loss)
        return loss(prediction, task_batch["target"], task_batch.get("mask"), reduction)
