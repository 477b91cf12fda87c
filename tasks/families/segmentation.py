"""Metric-embedding segmentation (unsupervised 2D and 2.5D segmentation).

The decoder outputs a 64-d tanh embedding per pixel; the metric loss pulls pixels of one segment
together and pushes others apart over 300 sampled pixels per image. At evaluation the pixels are
drawn from a generator seeded by the sample key, so every model is judged on the same pixels of
an image and per-image losses are comparable across models (win rates). The rule is keyed on the
``keys`` argument, not on the module's mode: callers pass keys exactly when they evaluate.
"""

from __future__ import annotations

import zlib
from typing import Any

import torch
from torch import nn

from taskonomy.tasks.families.base import TaskModule
from taskonomy.tasks.losses import Reduction, metric_loss, sample_pixels
from taskonomy.tasks.networks.decoders import DenseDecoder


def keyed_pixel_indices(
    keys: list[str], pixels: int, samples: int, device: torch.device
) -> torch.Tensor:
    """``B×samples`` pixel indices, a fixed draw per sample key."""
    rows = [
        sample_pixels(1, pixels, samples, torch.Generator().manual_seed(zlib.crc32(k.encode())))
        for k in keys
    ]
    return torch.cat(rows).to(device)


class MetricSegmentationTask(TaskModule):
    """Per-pixel embeddings trained with the pairwise metric loss."""

    def make_head(self, in_channels: int) -> nn.Module:
        """The 15-layer decoder with a tanh embedding output."""
        return DenseDecoder(
            in_channels, self.spec.output_channels, width=self.hparams["decoder_width"]
        )

    def compute_loss(
        self,
        prediction: torch.Tensor,
        task_batch: dict[str, Any],
        reduction: Reduction = "mean",
        keys: list[str] | None = None,
    ) -> torch.Tensor:
        """The metric loss: key-seeded pixels when ``keys`` are given (evaluation), else random."""
        segments = task_batch["target"]
        samples = self.hparams["metric_samples"]
        indices = None
        if keys is not None:
            indices = keyed_pixel_indices(
                [str(k) for k in keys], segments[0].numel(), samples, prediction.device
            )
        return metric_loss(
            prediction,
            segments,
            task_batch.get("mask"),
            reduction,
            samples=samples,
            indices=indices,
        )
