"""The paper's task losses, each available as a batch mean or per sample.

``reduction="mean"`` gives the training loss exactly as the authors reduce it (TF-slim: a weighted
sum divided by the number of non-zero weights over the whole batch); ``reduction="none"`` gives one
value per sample (the same reduction within each sample), which is what win rates compare. Masks
and weights broadcast against the per-element losses; a weight of 0 removes an element from both
the sum and the count. A sample with no valid element has loss 0.

Loss names are the ``loss`` column of the task table; :func:`task_loss` dispatches on them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch
import torch.nn.functional as F

Reduction = Literal["mean", "none"]

#: Pixels sampled per image by the metric loss (``segment_pixel_sample``).
METRIC_SAMPLES = 300
#: Weight of the composed 0→2 term in the egomotion cycle loss.
CYCLE_WEIGHT = 0.5


def full_precision(like: torch.Tensor) -> torch.autocast:
    """A context that turns autocast off on ``like``'s device (for float32 geometry)."""
    return torch.autocast(device_type=like.device.type, enabled=False)


def _check_reduction(reduction: str) -> None:
    if reduction not in ("mean", "none"):
        raise ValueError(f"reduction must be 'mean' or 'none', got {reduction!r}")


def weighted_mean(
    values: torch.Tensor, weights: torch.Tensor | None = None, reduction: Reduction = "mean"
) -> torch.Tensor:
    """Weighted sum over non-batch elements divided by the number of non-zero weights.

    Args:
        values: ``B×…`` per-element losses.
        weights: Broadcastable to ``values`` (e.g. a ``B×1×H×W`` mask against ``B×C×H×W``), or
            ``None`` for all ones.
        reduction: ``"mean"`` over the batch (one scalar) or ``"none"`` (``B`` values).
    """
    _check_reduction(reduction)
    if weights is None:
        weights = torch.ones_like(values)
    else:
        weights = weights.to(values.dtype)
        while weights.ndim < values.ndim:
            weights = weights.unsqueeze(-1)
        weights = weights.expand_as(values)
    total = (values * weights).flatten(1).sum(1)
    count = (weights != 0).flatten(1).sum(1).to(values.dtype)
    if reduction == "none":
        return total / count.clamp_min(1)
    return total.sum() / count.sum().clamp_min(1)


def masked_l1(
    prediction: torch.Tensor,
    target: torch.Tensor,
    mask: torch.Tensor | None = None,
    reduction: Reduction = "mean",
) -> torch.Tensor:
    """Mean absolute error over valid pixel-channels (``absolute_difference`` with weights)."""
    return weighted_mean((prediction - target).abs(), mask, reduction)


def masked_l2(
    prediction: torch.Tensor,
    target: torch.Tensor,
    mask: torch.Tensor | None = None,
    reduction: Reduction = "mean",
) -> torch.Tensor:
    """Mean squared error over valid pixel-channels (``mean_squared_error``; curvature)."""
    return weighted_mean((prediction - target) ** 2, mask, reduction)


def weighted_cross_entropy(
    logits: torch.Tensor,
    labels: torch.Tensor,
    mask: torch.Tensor | None = None,
    reduction: Reduction = "mean",
    class_weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """Per-pixel softmax cross-entropy, weighted by a mask and optional class weights.

    Semantic segmentation: ``labels`` are ``label − 1`` (uncertain pixels may hold any value, e.g.
    −1, as long as ``mask`` is 0 there); ``class_weights[label]`` rebalances classes as the
    authors' ``semseg_prior_factor``.

    Args:
        logits: ``B×K×H×W``.
        labels: ``B×H×W`` class indices.
        mask: ``B×H×W`` or ``B×1×H×W``; 0 excludes a pixel.
        reduction: ``"mean"`` or ``"none"``.
        class_weights: ``K`` weights, or ``None``.
    """
    if logits.ndim != labels.ndim + 1:
        raise ValueError(
            f"logits {tuple(logits.shape)} need one more axis than labels {tuple(labels.shape)}"
        )
    valid = torch.ones_like(labels, dtype=logits.dtype) if mask is None else mask.to(logits.dtype)
    if valid.ndim == labels.ndim + 1:
        valid = valid.squeeze(1)
    safe = labels.clamp(0, logits.shape[1] - 1)
    valid = valid * ((labels >= 0) & (labels < logits.shape[1])).to(valid.dtype)
    if class_weights is not None:
        valid = valid * class_weights.to(logits)[safe]
    ce = F.cross_entropy(logits.float(), safe, reduction="none")
    return weighted_mean(ce, valid, reduction)


def class_balancing_weights(counts: torch.Tensor, mix: float = 0.5) -> torch.Tensor:
    """Per-class loss weights that boost rare classes, from label counts of the training data.

    The prior-boost rule the authors use for colorization (Zhang et al. 2016, their
    ``prior_factor`` files): smooth the empirical class distribution ``p`` with a uniform one,
    ``w_k ∝ 1 / ((1 − mix)·p_k + mix/K)``, and scale so the expected weight of a pixel
    ``Σ_k p_k·w_k`` is 1. The authors' 17 semantic-segmentation weights (``semseg_prior_factor``,
    in their repository's ``taskbank/lib/data/``, not bundled here; ``class_weights: FILE.npy``
    uses it) have the shape this rule gives on their background-dominated labels: background
    ≈ 0.54, objects ≈ 7–9.

    Args:
        counts: ``K`` non-negative label counts (classes never seen get the largest weight).
        mix: Weight of the uniform distribution in the smoothing, in (0, 1].

    Raises:
        ValueError: ``mix`` outside (0, 1], negative counts, or no labels at all.
    """
    if not 0.0 < mix <= 1.0:
        raise ValueError(f"mix must be in (0, 1], got {mix}")
    counts = torch.as_tensor(counts, dtype=torch.float64).flatten()
    if (counts < 0).any() or counts.sum() <= 0:
        raise ValueError(
            "class counts must be non-negative with at least one label; count the labels of "
            "the training split"
        )
    p = counts / counts.sum()
    weights = 1.0 / ((1.0 - mix) * p + mix / len(p))
    return (weights / (p * weights).sum()).float()


def soft_cross_entropy(
    logits: torch.Tensor,
    target: torch.Tensor,
    mask: torch.Tensor | None = None,
    reduction: Reduction = "mean",
) -> torch.Tensor:
    """Cross-entropy against soft targets: ``−Σ_k p_k log softmax(logits)_k`` along axis 1.

    Classification (``B×K`` with a ``B`` sample mask) and colorization (``B×313×h×w`` with
    ``B×1×h×w`` prior-boost weights) both use it.
    """
    ce = -(target.float() * F.log_softmax(logits.float(), dim=1)).sum(1)
    if mask is not None and mask.ndim == ce.ndim + 1:
        mask = mask.squeeze(1)
    if ce.ndim == 1:
        ce = ce.unsqueeze(1)
        mask = None if mask is None else mask.reshape(-1, 1)
    return weighted_mean(ce, mask, reduction)


def cross_entropy(
    logits: torch.Tensor,
    labels: torch.Tensor,
    mask: torch.Tensor | None = None,
    reduction: Reduction = "mean",
) -> torch.Tensor:
    """Softmax cross-entropy over ``B×K`` logits and ``B`` labels (jigsaw, point matching)."""
    ce = F.cross_entropy(logits.float(), labels.long(), reduction="none").unsqueeze(1)
    return weighted_mean(ce, None if mask is None else mask.reshape(-1, 1), reduction)


def mse(
    prediction: torch.Tensor,
    target: torch.Tensor,
    mask: torch.Tensor | None = None,
    reduction: Reduction = "mean",
) -> torch.Tensor:
    """Mean squared error over ``B×D`` (room layout, vanishing points)."""
    return weighted_mean((prediction - target) ** 2, mask, reduction)


def _norm(x: torch.Tensor) -> torch.Tensor:
    # The epsilon keeps the gradient finite at a perfect prediction.
    return torch.sqrt((x.float() ** 2).sum(-1) + 1e-12)


def pose_loss(
    prediction: torch.Tensor,
    target: torch.Tensor,
    mask: torch.Tensor | None = None,
    reduction: Reduction = "mean",
) -> torch.Tensor:
    """Per-sample Euclidean norm ``‖ŷ − y‖₂`` (not squared), averaged over the batch."""
    return weighted_mean(_norm(prediction - target).unsqueeze(1), mask, reduction)


def pose_cycle_loss(
    prediction: torch.Tensor,
    target: torch.Tensor,
    mask: torch.Tensor | None = None,
    reduction: Reduction = "mean",
    cycle_weight: float = CYCLE_WEIGHT,
) -> torch.Tensor:
    """Egomotion: ``‖p01−t01‖ + w·‖p02−t02‖ + ‖p12−t12‖`` over ``B×18`` ``[p01, p02, p12]``.

    ``p02`` is the composition of the predicted ``p01`` and ``p12``
    (:class:`~taskonomy.tasks.networks.heads.EgomotionCycleHead`), so its term checks the cycle.
    """
    if prediction.shape[-1] != 18 or target.shape[-1] != 18:
        raise ValueError(
            f"egomotion poses must be B×18, got {tuple(prediction.shape)}, {tuple(target.shape)}"
        )
    per_pair = _norm((prediction - target).reshape(-1, 3, 6))
    weights = per_pair.new_tensor([1.0, cycle_weight, 1.0])
    return weighted_mean((per_pair * weights).sum(1, keepdim=True), mask, reduction)


def sample_pixels(
    batch: int,
    pixels: int,
    samples: int = METRIC_SAMPLES,
    generator: torch.Generator | None = None,
    device: torch.device | None = None,
) -> torch.Tensor:
    """``B×n`` distinct random flat pixel indices per image, ``n = min(samples, pixels)``.

    Drawn without replacement, as the authors' ``segment_pixel_sample`` (``random.sample``).
    """
    idx = torch.rand(batch, pixels, generator=generator).argsort(dim=1)[:, :samples]
    return idx.to(device) if device is not None else idx


def metric_loss(
    embeddings: torch.Tensor,
    segments: torch.Tensor,
    mask: torch.Tensor | None = None,
    reduction: Reduction = "mean",
    samples: int = METRIC_SAMPLES,
    indices: torch.Tensor | None = None,
) -> torch.Tensor:
    """The pairwise metric loss of unsupervised 2D/2.5D segmentation.

    At ``samples`` pixels per image: ``d²_ij = ‖e_i − e_j‖²`` clipped to [0, 80],
    ``σ_ij = 2 / (1 + exp(d²_ij))`` clipped to [1e-7, 1 − 1e-7], and
    ``L = −mean_ij[same_ij·log σ_ij + (1 − same_ij)·log(1 − σ_ij)]`` over all pairs, the diagonal
    included.

    Args:
        embeddings: ``B×C×H×W``.
        segments: ``B×H×W`` segment ids.
        mask: Optional ``B`` sample weights.
        reduction: ``"mean"`` or ``"none"``.
        samples: Pixels per image when ``indices`` is not given.
        indices: ``B×N`` flat pixel indices to use (fixed pixels make per-image losses of
            different models comparable).
    """
    b, c = embeddings.shape[:2]
    if segments.shape != (b, *embeddings.shape[2:]):
        raise ValueError(
            f"segments {tuple(segments.shape)} must be B×H×W for embeddings "
            f"{tuple(embeddings.shape)}"
        )
    if indices is None:
        indices = sample_pixels(b, segments[0].numel(), samples, device=embeddings.device)
    e = embeddings.float().flatten(2).gather(2, indices.unsqueeze(1).expand(-1, c, -1))
    e = e.transpose(1, 2)  # B×N×C
    s = segments.flatten(1).gather(1, indices)
    sq = (e**2).sum(-1)
    with full_precision(e):  # autocast would run the Gram matrix in bf16
        gram = e @ e.transpose(1, 2)
    d2 = (sq.unsqueeze(2) + sq.unsqueeze(1) - 2 * gram).clamp(0.0, 80.0)
    sigma = (2.0 / (1.0 + torch.exp(d2))).clamp(1e-7, 1 - 1e-7)
    same = (s.unsqueeze(2) == s.unsqueeze(1)).float()
    per_pair = -(same * torch.log(sigma) + (1 - same) * torch.log1p(-sigma))
    per_sample = per_pair.flatten(1).mean(1, keepdim=True)
    return weighted_mean(per_sample, None if mask is None else mask.reshape(-1, 1), reduction)


def gan_discriminator_loss(
    real_logits: torch.Tensor, fake_logits: torch.Tensor, real_label: float = 0.9
) -> torch.Tensor:
    """½(BCE(real, 0.9) + BCE(fake, 0)), averaged over the logit map (one-sided smoothing)."""
    real = F.binary_cross_entropy_with_logits(
        real_logits.float(), torch.full_like(real_logits.float(), real_label)
    )
    fake = F.binary_cross_entropy_with_logits(
        fake_logits.float(), torch.zeros_like(fake_logits.float())
    )
    return 0.5 * (real + fake)


def gan_generator_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    """BCE of the discriminator's logits on a prediction against the "real" label 1."""
    return F.binary_cross_entropy_with_logits(
        fake_logits.float(), torch.ones_like(fake_logits.float())
    )


LossFn = Callable[..., torch.Tensor]

#: Loss name (the task table's ``loss`` column) → function ``(pred, target, mask, reduction)``.
LOSSES: dict[str, LossFn] = {
    "l1": masked_l1,
    "l2": masked_l2,
    "weighted_cross_entropy": weighted_cross_entropy,
    "soft_cross_entropy": soft_cross_entropy,
    "cross_entropy": cross_entropy,
    "mse": mse,
    "pose": pose_loss,
    "pose_cycle": pose_cycle_loss,
    "metric": metric_loss,
}


def get_loss(name: str) -> LossFn:
    """The loss function registered under ``name``.

    Raises:
        ValueError: Unknown loss; the message lists the valid names.
    """
    if name not in LOSSES:
        raise ValueError(f"unknown loss {name!r}; valid losses: {', '.join(LOSSES)}")
    return LOSSES[name]
