"""Dense families: per-pixel regression and per-pixel classification.

Dense regression (depth, normals, curvature, edges, keypoints, reshading, autoencoding, denoising,
inpainting): the 15-layer decoder with a tanh output, masked L1 (L2 for curvature), and the
optional cGAN term. Dense classification: semantic segmentation (17 tanh-bounded logits, class-
weighted cross-entropy with uncertain pixels masked; with ``class_weights: auto`` the training
CLI counts the weights) and colorization (313 ab-bin logits at a quarter of the resolution,
soft-target cross-entropy, each pixel weighted by the prior boost of its arg-max ab bin as in
Zhang et al. 2016; ``class_weights: auto`` counts the bins of the training images; the authors'
``prior_factor_in_door.npy`` fits with their bins, ``--data.ab_bins=pts_in_hull.npy``).
Colorization's optional cGAN term judges the recoloured image (:func:`regenerate_ab`), as the
authors' ``EDSoftmaxRegenCGAN`` did.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from taskonomy.datamodules.selfsupervised import LabelSets, ab_bins
from taskonomy.tasks.families.base import TaskModule, check_same_shape
from taskonomy.tasks.losses import Reduction, get_loss, soft_cross_entropy, weighted_cross_entropy
from taskonomy.tasks.networks.decoders import ColorizationDecoder, DenseDecoder

#: Logit scale before the softmax that recolours a prediction for the discriminator: 1/0.38, the
#: annealed-mean temperature of Zhang et al. (2016), as the authors' ``EDSoftmaxRegenCGAN`` used.
RECOLOUR_LOGIT_SCALE = 2.606


def regenerate_ab(distribution: torch.Tensor, size: tuple[int, int],
                  bins: np.ndarray | None = None) -> torch.Tensor:
    """The ab image of a distribution over the 313 ab bins, enlarged to ``size``.

    Each pixel's expected ab value under ``distribution`` (``B×313×h×w``, summing to 1 over the
    bins), in Lab units as the authors fed it to the discriminator, enlarged by nearest neighbour:
    their ``colorized_image_from_softmax`` (a 1×1 convolution with the bin centres, then a
    nearest-neighbour resize to the input size). ``bins``: the 313×2 centres (default:
    :func:`~taskonomy.datamodules.selfsupervised.ab_bins`).

    Returns:
        ``B×2×size``.
    """
    centres = distribution.new_tensor(ab_bins() if bins is None else bins)
    ab = torch.einsum("bkhw,kc->bchw", distribution, centres)
    return F.interpolate(ab, size=size, mode="nearest")


class DenseRegressionTask(TaskModule):
    """Per-pixel regression in the paper's target encoding (``l1`` or ``l2`` loss)."""

    supports_gan = True

    def make_head(self, in_channels: int) -> nn.Module:
        """The 15-layer decoder with a tanh output."""
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
        """Masked L1/L2 over valid pixel-channels."""
        check_same_shape(self.spec.name, prediction, task_batch["target"])
        loss = get_loss(self.spec.loss)
        return loss(prediction, task_batch["target"], task_batch.get("mask"), reduction)


class DenseClassificationTask(TaskModule):
    """Per-pixel classification: semantic segmentation or colorization (by ``output_kind``)."""

    #: Colorization's 313×2 bin centres, taken from the datamodule in :meth:`setup` (``None``:
    #: the shipped set). Not saved: the run's config names the file, and the bins only serve
    #: to draw and judge colours.
    ab_centres: np.ndarray | None = None

    def setup(self, stage: str) -> None:
        """Take the ab bins of the trainer's datamodule (``--data.ab_bins``), if it has any."""
        super().setup(stage)
        sets = getattr(self.trainer.datamodule, "label_sets", None)
        if isinstance(sets, LabelSets):
            self.ab_centres = sets.ab_bins

    def gan_supported(self) -> bool:
        """Colorization has the authors' cGAN term; semantic segmentation has none."""
        return self.spec.output_kind == "dense_quarter"

    def discriminator_channels(self) -> int:
        """The discriminator judges the recoloured image's two ab channels."""
        return 2

    def discriminator_images(
        self, prediction: torch.Tensor, task_batch: dict[str, Any]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The target's and the prediction's ab images at the input's size (:func:`regenerate_ab`).

        The prediction's distribution is the softmax of its logits × :data:`RECOLOUR_LOGIT_SCALE`.
        """
        size = tuple(task_batch["input"].shape[-2:])
        generated = torch.softmax(prediction.float() * RECOLOUR_LOGIT_SCALE, dim=1)
        real = regenerate_ab(task_batch["target"].float(), size, self.ab_centres)
        fake = regenerate_ab(generated, size, self.ab_centres)
        return real.to(prediction.dtype), fake.to(prediction.dtype)

    def make_head(self, in_channels: int) -> nn.Module:
        """The 15-layer decoder (tanh-bounded logits) or the 64-resolution colorization one."""
        width = self.hparams["decoder_width"]
        if self.spec.output_kind == "dense_quarter":
            return ColorizationDecoder(in_channels, self.spec.output_channels, width=width)
        return DenseDecoder(in_channels, self.spec.output_channels, width=width)

    def compute_loss(
        self,
        prediction: torch.Tensor,
        task_batch: dict[str, Any],
        reduction: Reduction = "mean",
        keys: list[str] | None = None,
    ) -> torch.Tensor:
        """Class-weighted CE on hard labels, or prior-boost-weighted CE on soft targets."""
        target, mask = task_batch["target"], task_batch.get("mask")
        if self.class_weights_pending:
            raise ValueError(
                f"task {self.spec.name!r}: class_weights is still 'auto'; `taskonomy train` "
                "counts them from the training labels before fitting. Outside it, call "
                "set_class_weights(weights) first or pass class_weights as a list"
            )
        weights = self.hparams["class_weights"]
        class_weights = None if weights is None else prediction.new_tensor(weights).float()
        if target.is_floating_point():
            if class_weights is not None:  # the prior boost of each pixel's arg-max bin
                boost = class_weights[target.argmax(1, keepdim=True)]
                mask = boost if mask is None else mask * boost
            return soft_cross_entropy(prediction, target, mask, reduction)
        return weighted_cross_entropy(prediction, target, mask, reduction, class_weights)
