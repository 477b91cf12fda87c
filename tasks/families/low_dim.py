"""Low-dimensional regression: room layout and vanishing points (9 values each).

The flattened representation goes through FC 2048 (BN, ReLU, dropout) to 9 outputs, trained with
MSE; the authors clip every variable's gradient to norm 1 for these tasks.

Room layout targets are z-scored by the encoding itself (the authors' statistics). Vanishing
points are raw unit vectors whose values spread by about 0.03–0.3, so the head predicts them in
z-scored units and rescales with fixed statistics
(:data:`~taskonomy.datamodules.encodings.VANISHING_POINT_MEAN`/``_STD``); the loss still compares
unit vectors with unit vectors. Without the rescaling, Adam's steps move the predictions by a
large share of the targets' spread: in short CPU runs on synthetic data the pitch-dependent values
were fitted only weakly (test loss 0.94 of the best constant's after 2400 steps, against 0.90–0.91
with it).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from taskonomy.datamodules.encodings import VANISHING_POINT_MEAN, VANISHING_POINT_STD
from taskonomy.tasks.families.base import TaskModule, check_same_shape, flat_features, scaled
from taskonomy.tasks.losses import Reduction, get_loss
from taskonomy.tasks.networks.heads import FCHead

LOW_DIM_HIDDEN = (2048,)

#: Fixed ``(mean, std)`` of the outputs of tasks whose targets are not z-scored by their encoding.
OUTPUT_STATISTICS: dict[str, tuple[np.ndarray, np.ndarray]] = {
    "vanishing_point": (VANISHING_POINT_MEAN, VANISHING_POINT_STD),
}


class LowDimRegressionTask(TaskModule):
    """Vector regression from one image."""

    default_clip_norm = 1.0

    def output_statistics(self) -> tuple[np.ndarray, np.ndarray] | None:
        """``(mean, std)`` the head rescales its outputs with, or ``None`` for z-scored targets.

        Subclasses (plugins) may override this for their own targets.
        """
        return OUTPUT_STATISTICS.get(self.spec.name)

    def make_head(self, in_channels: int) -> nn.Module:
        """FC 2048 → outputs (rescaled by :meth:`output_statistics` where the task has them)."""
        features = flat_features(in_channels, self.hparams["resolution"])
        hidden = scaled(LOW_DIM_HIDDEN, self.hparams["head_width"])
        statistics = self.output_statistics()
        if statistics is None:
            return FCHead(features, hidden, self.spec.output_channels)
        mean, std = statistics
        return FCHead(features, hidden, self.spec.output_channels,
                      output_mean=mean.tolist(), output_std=std.tolist())

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
