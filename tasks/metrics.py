"""Per-task evaluation metrics as torchmetrics ``Metric`` objects.

:func:`build_metrics` returns, for a spec, one metric per name in ``spec.metrics`` (the names the
analysis reads). Every metric is updated with ``(prediction, task_batch)``, where ``task_batch`` is
the task's part of a batch (``"target"``, optional ``"mask"``). Values are accumulated as weighted
sums over valid elements, so they are exact over an epoch and under DDP (states sum across ranks).

Units: depth metrics in metres (decoded from the log encoding), angles in degrees, shares in
[0, 1]; room-layout and pose errors are computed after undoing the authors' z-scoring (centre and
translation errors in scene units, rotation errors as geodesic angles in degrees).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics import Metric

from taskonomy.tasks.losses import METRIC_SAMPLES, full_precision, sample_pixels
from taskonomy.tasks.networks.pose import denormalize_pose, rotation_angle
from taskonomy.tasks.specs import TaskSpec, metric_key

#: Tasks whose targets use the log depth encoding ``log(1 + d) / log(2^16)``, d in 1/512 m.
LOG_DEPTH_TASKS = frozenset({"depth_zbuffer", "depth_euclidean"})
#: Pose tasks z-scored with the non-fixated statistics.
NONFIXATED_TASKS = frozenset({"nonfixated_pose"})
#: z-score statistics of the room-layout vector [box centre (3), camera sxyz Euler (3), box
#: extents (3)], the authors' values (``load_ops.room_layout``).
ROOM_LAYOUT_MEAN = (
    0.006072743318127848,
    0.010272365569691076,
    -3.135909774145468,
    1.5603802322235532,
    5.6228218371102496e-05,
    -1.5669352793761442,
    5.622875878174759,
    4.082800262277375,
    2.7713941642895956,
)
ROOM_LAYOUT_STD = (
    0.8669452525283652,
    0.687915294956501,
    2.080513632043758,
    0.19627420479282623,
    0.014680602791251812,
    0.4183827359302299,
    3.991778013006544,
    2.703495278378409,
    1.2269185938626304,
)
#: ``d² < ln 3`` ⇔ the metric loss's σ > ½: two pixels are predicted to share a segment.
SAME_SEGMENT_D2 = math.log(3.0)

Values = tuple[torch.Tensor, torch.Tensor | None]
ValueFn = Callable[[torch.Tensor, dict[str, Any]], Values]


class Float64States(Metric):
    """A metric whose floating states stay float64 whatever ``.to(dtype)`` asks.

    Lightning's ``bf16-true`` and ``16-true`` convert the whole module with ``.to(dtype)``,
    which torchmetrics applies to metric states too: a bf16 running sum stops growing after a
    few hundred batches, and the epoch's mean drifts far from its batches'.
    """

    def _apply(self, fn: Callable[..., Any], exclude_state: Any = "") -> nn.Module:
        this = super()._apply(fn, exclude_state)
        defaults = cast(dict[str, Any], this._defaults)
        for key, default in defaults.items():
            if isinstance(default, torch.Tensor) and default.is_floating_point():
                defaults[key] = default.double()
            value = getattr(this, key)
            if isinstance(value, torch.Tensor) and value.is_floating_point():
                setattr(this, key, value.double())
        return this


class LossMean(Float64States):
    """Weighted mean of batch losses over an epoch (float64 sums, reduced over ranks)."""

    full_state_update = False
    higher_is_better = False
    total: torch.Tensor
    weight: torch.Tensor

    def __init__(self) -> None:
        super().__init__()
        zero = torch.tensor(0.0, dtype=torch.float64)
        self.add_state("total", default=zero.clone(), dist_reduce_fx="sum")
        self.add_state("weight", default=zero.clone(), dist_reduce_fx="sum")

    def update(self, loss: torch.Tensor, weight: float = 1.0) -> None:
        """Add a batch's mean loss with its weight (its labelled images)."""
        self.total += loss.detach().double() * weight
        self.weight += weight

    def compute(self) -> torch.Tensor:
        """The weighted mean (NaN before any weight)."""
        return (self.total / self.weight if self.weight > 0 else self.total * math.nan).float()


class WeightedMean(Float64States):
    """Weighted mean of per-element values, optionally transformed at the end (e.g. sqrt).

    Args:
        values: ``(prediction, task_batch) → (values, weights)``; weights broadcast to values
            and may be ``None``.
        finalize: Applied to the mean in :meth:`compute`.
    """

    full_state_update = False
    higher_is_better: bool | None = None
    total: torch.Tensor
    count: torch.Tensor

    def __init__(
        self, values: ValueFn, finalize: Callable[[torch.Tensor], torch.Tensor] | None = None
    ) -> None:
        super().__init__()
        self.values = values
        self.finalize = finalize
        zero = torch.tensor(0.0, dtype=torch.float64)
        self.add_state("total", default=zero.clone(), dist_reduce_fx="sum")
        self.add_state("count", default=zero.clone(), dist_reduce_fx="sum")

    def update(self, prediction: torch.Tensor, task_batch: dict[str, Any]) -> None:
        """Accumulate one batch (in float32, even inside an autocast region)."""
        with full_precision(prediction):
            values, weights = self.values(prediction.detach().float(), task_batch)
        values = values.double()
        w = torch.ones_like(values) if weights is None else weights.double().expand_as(values)
        self.total += (values * w).sum()
        self.count += w.sum()

    def compute(self) -> torch.Tensor:
        """The weighted mean (NaN before any valid element)."""
        mean = (self.total / self.count if self.count > 0 else self.total * math.nan).float()
        return self.finalize(mean) if self.finalize is not None else mean


class MeanIoU(Metric):
    """Mean intersection-over-union from a confusion matrix, over classes that occur.

    Args:
        num_classes: Number of classes (17 for semantic segmentation).
    """

    full_state_update = False
    higher_is_better = True
    confusion: torch.Tensor

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.add_state(
            "confusion",
            default=torch.zeros(num_classes, num_classes, dtype=torch.long),
            dist_reduce_fx="sum",
        )

    def update(self, prediction: torch.Tensor, task_batch: dict[str, Any]) -> None:
        """Accumulate ``B×K×H×W`` logits against ``B×H×W`` labels (mask 0 = ignore)."""
        labels = task_batch["target"].long()
        valid = _valid(task_batch, labels) & (labels >= 0) & (labels < self.num_classes)
        pred = prediction.argmax(1)[valid]
        idx = labels[valid] * self.num_classes + pred
        self.confusion += torch.bincount(idx, minlength=self.num_classes**2).reshape(
            self.num_classes, self.num_classes
        )

    def compute(self) -> torch.Tensor:
        """Mean IoU over classes present in the targets or predictions."""
        conf = self.confusion.double()
        inter = conf.diagonal()
        union = conf.sum(0) + conf.sum(1) - inter
        present = union > 0
        if not present.any():
            return torch.tensor(math.nan)
        return (inter[present] / union[present]).mean().float()


def _valid(task_batch: dict[str, Any], like: torch.Tensor) -> torch.Tensor:
    """Boolean validity of each element of ``like`` (``B×H×W`` or ``B``) from the task mask."""
    mask = task_batch.get("mask")
    if mask is None:
        return torch.ones_like(like, dtype=torch.bool)
    mask = mask.reshape(like.shape) if mask.numel() == like.numel() else mask
    return mask != 0


def _mask(task_batch: dict[str, Any]) -> torch.Tensor | None:
    mask = task_batch.get("mask")
    return None if mask is None else (mask != 0).float()


def decode_log_depth(encoded: torch.Tensor) -> torch.Tensor:
    """Log-encoded depth → metres, floored at one raw unit (1/512 m) for bounded predictions."""
    raw = torch.exp(encoded.clamp(max=1.0) * math.log(2.0**16)) - 1.0
    return raw.clamp_min(1.0) / 512.0


def _depth_pair(prediction: torch.Tensor, task_batch: dict[str, Any]) -> Values:
    # The metric target is the raw depth in metres when the batch carries it (exact, not
    # resized in the log domain), else the decoded training target.
    raw = task_batch.get("raw")
    if raw is not None:
        target = raw.float().reshape(prediction.shape)
        weights = (target > 0).float()
        target = target.clamp_min(1.0 / 512.0)
    else:
        target = decode_log_depth(task_batch["target"].float())
        weights = (task_batch["target"] > 0).float()
    mask = _mask(task_batch)
    return (
        torch.stack((decode_log_depth(prediction), target)),
        weights if mask is None else weights * mask.reshape(weights.shape),
    )


def _abs_rel(prediction: torch.Tensor, task_batch: dict[str, Any]) -> Values:
    (pred, target), w = _depth_pair(prediction, task_batch)
    return (pred - target).abs() / target, w


def _delta1(prediction: torch.Tensor, task_batch: dict[str, Any]) -> Values:
    (pred, target), w = _depth_pair(prediction, task_batch)
    return (torch.maximum(pred / target, target / pred) < 1.25).float(), w


def _depth_sq(prediction: torch.Tensor, task_batch: dict[str, Any]) -> Values:
    (pred, target), w = _depth_pair(prediction, task_batch)
    return (pred - target) ** 2, w


def _abs(prediction: torch.Tensor, task_batch: dict[str, Any]) -> Values:
    return (prediction - task_batch["target"].float()).abs(), _mask(task_batch)


def _sq(prediction: torch.Tensor, task_batch: dict[str, Any]) -> Values:
    return (prediction - task_batch["target"].float()) ** 2, _mask(task_batch)


def _normal_angles(prediction: torch.Tensor, task_batch: dict[str, Any]) -> Values:
    cos = F.cosine_similarity(prediction, task_batch["target"].float(), dim=1, eps=1e-6)
    angles = torch.rad2deg(torch.acos(cos.clamp(-1.0, 1.0)))  # B×H×W
    mask = _mask(task_batch)
    return angles, None if mask is None else mask.reshape(angles.shape)


# Value functions are module-level (partials, not closures), so that a model holding these
# metrics can be pickled into spawned processes (ddp_spawn).
def _normal_share_below(threshold: float, prediction: torch.Tensor,
                        task_batch: dict[str, Any]) -> Values:
    angles, w = _normal_angles(prediction, task_batch)
    return (angles < threshold).float(), w


def _normal_below(threshold: float) -> ValueFn:
    return functools.partial(_normal_share_below, threshold)


def _pixel_accuracy(prediction: torch.Tensor, task_batch: dict[str, Any]) -> Values:
    labels = task_batch["target"].long()
    valid = _valid(task_batch, labels) & (labels >= 0)
    return (prediction.argmax(1) == labels).float(), valid.float()


def _top1(prediction: torch.Tensor, task_batch: dict[str, Any]) -> Values:
    target = task_batch["target"]
    labels = target.argmax(1) if target.ndim == prediction.ndim else target.long()
    correct = (prediction.argmax(1) == labels).float()
    # Colorization's mask holds prior-boost weights, not validity: count every pixel.
    valid = _valid(task_batch, correct) if prediction.ndim == 2 else None
    return correct, None if valid is None else valid.float()


def _kl(prediction: torch.Tensor, task_batch: dict[str, Any]) -> Values:
    target = task_batch["target"].float()
    log_q = F.log_softmax(prediction, dim=1)
    kl = (target * (torch.log(target.clamp_min(1e-12)) - log_q)).sum(1)
    return kl, _valid(task_batch, kl).float()


def _pair_accuracy(prediction: torch.Tensor, task_batch: dict[str, Any]) -> Values:
    segments = task_batch["target"].long()
    b, c = prediction.shape[:2]
    # Fixed pixels: the metric is deterministic for a given batch.
    generator = torch.Generator().manual_seed(0)
    idx = sample_pixels(b, segments[0].numel(), METRIC_SAMPLES, generator, prediction.device)
    e = prediction.flatten(2).gather(2, idx.unsqueeze(1).expand(-1, c, -1)).transpose(1, 2)
    s = segments.flatten(1).gather(1, idx)
    d2 = torch.cdist(e, e) ** 2
    same = s.unsqueeze(2) == s.unsqueeze(1)
    correct = ((d2 < SAME_SEGMENT_D2) == same).float()
    off_diagonal = 1.0 - torch.eye(idx.shape[1], device=prediction.device)
    return correct, off_diagonal.expand_as(correct)


def _room_layout(prediction: torch.Tensor, task_batch: dict[str, Any]) -> tuple[Any, Any]:
    mean, std = prediction.new_tensor(ROOM_LAYOUT_MEAN), prediction.new_tensor(ROOM_LAYOUT_STD)
    return prediction * std + mean, task_batch["target"].float() * std + mean


def _layout_centre_error(prediction: torch.Tensor, task_batch: dict[str, Any]) -> Values:
    pred, target = _room_layout(prediction, task_batch)
    return (pred[:, :3] - target[:, :3]).norm(dim=1), None


def _layout_rotation_error(prediction: torch.Tensor, task_batch: dict[str, Any]) -> Values:
    pred, target = _room_layout(prediction, task_batch)
    return rotation_angle(pred[:, 3:6], target[:, 3:6]), None


def _vp_angle(prediction: torch.Tensor, task_batch: dict[str, Any]) -> Values:
    pred = prediction.reshape(-1, 3, 3)
    target = task_batch["target"].float().reshape(-1, 3, 3)
    cos = F.cosine_similarity(pred, target, dim=2, eps=1e-6)
    return torch.rad2deg(torch.acos(cos.clamp(-1.0, 1.0))), None


def _pose_pair(fixated: bool, prediction: torch.Tensor,
               task_batch: dict[str, Any]) -> tuple[Any, Any]:
    pred = denormalize_pose(prediction.reshape(-1, 6), fixated)
    target = denormalize_pose(task_batch["target"].float().reshape(-1, 6), fixated)
    return pred, target


def _pose_rotation_error(fixated: bool, prediction: torch.Tensor,
                         task_batch: dict[str, Any]) -> Values:
    pred, target = _pose_pair(fixated, prediction, task_batch)
    return rotation_angle(pred[:, :3], target[:, :3]), None


def _pose_translation_error(fixated: bool, prediction: torch.Tensor,
                            task_batch: dict[str, Any]) -> Values:
    pred, target = _pose_pair(fixated, prediction, task_batch)
    return (pred[:, 3:] - target[:, 3:]).norm(dim=1), None


def _rotation_error(spec: TaskSpec) -> ValueFn:
    return functools.partial(_pose_rotation_error, spec.name not in NONFIXATED_TASKS)


def _translation_error(spec: TaskSpec) -> ValueFn:
    return functools.partial(_pose_translation_error, spec.name not in NONFIXATED_TASKS)


def _metric(spec: TaskSpec, name: str) -> Metric:
    depth = spec.name in LOG_DEPTH_TASKS
    if name == "l1":
        return WeightedMean(_abs)
    if name == "rmse":
        return WeightedMean(_depth_sq if depth else _sq, torch.sqrt)
    if name == "abs_rel":
        return WeightedMean(_abs_rel)
    if name == "delta1":
        return WeightedMean(_delta1)
    if name == "angle_mean":
        return WeightedMean(_normal_angles)
    if name == "angle_11_25":
        return WeightedMean(_normal_below(11.25))
    if name == "miou":
        return MeanIoU(spec.output_channels)
    if name == "pixel_accuracy":
        return WeightedMean(_pixel_accuracy)
    if name in ("top1", "accuracy"):
        return WeightedMean(_top1)
    if name == "kl":
        return WeightedMean(_kl)
    if name == "pair_accuracy":
        return WeightedMean(_pair_accuracy)
    if name == "centre_error":
        return WeightedMean(_layout_centre_error)
    if name == "rotation_error" and spec.family == "low_dim_regression":
        return WeightedMean(_layout_rotation_error)
    if name == "angle_error":
        return WeightedMean(_vp_angle)
    if name == "rotation_error":
        return WeightedMean(_rotation_error(spec))
    if name == "translation_error":
        return WeightedMean(_translation_error(spec))
    raise ValueError(
        f"task {spec.name!r}: no metric named {name!r}; known metrics: {', '.join(METRIC_NAMES)}. "
        "A plugin task with new metrics overrides its family's build_metrics"
    )


#: Metric names :func:`build_metrics` knows.
METRIC_NAMES = (
    "l1",
    "rmse",
    "abs_rel",
    "delta1",
    "angle_mean",
    "angle_11_25",
    "miou",
    "pixel_accuracy",
    "top1",
    "accuracy",
    "kl",
    "pair_accuracy",
    "centre_error",
    "rotation_error",
    "angle_error",
    "translation_error",
)


def build_metrics(spec: TaskSpec) -> dict[str, Metric]:
    """One fresh metric per name in ``spec.metrics``.

    Raises:
        ValueError: A metric name is unknown.
    """
    return {name: _metric(spec, name) for name in spec.metrics}


def loss_means() -> nn.ModuleDict:
    """Means of the loss over an epoch, weighted by batch size, per stage.

    Metrics rather than tensors logged with ``sync_dist``: their epoch value is reduced over
    every rank of a DDP run (a plain logged tensor gives rank 0's mean), and Lightning would
    average the batch-size weights across ranks as integers, which biases ``val/loss`` and
    ``test/loss`` when ranks see different numbers of samples
    (Lightning-AI/pytorch-lightning#21859).
    """
    # Keyed ``<stage>_loss``: a ``train`` key would shadow ``nn.Module.train``.
    return nn.ModuleDict({f"{stage}_loss": LossMean() for stage in ("train", "val", "test")})


def labelled_images(task_batch: dict[str, Any], size: int) -> int:
    """How many images of a batch have at least one labelled element (all without a mask).

    The weight of the batch's mean loss in the epoch's: a batch of images without any valid
    label contributes a loss of 0 that says nothing about the network.
    """
    mask = task_batch.get("mask") if isinstance(task_batch, dict) else None
    if not isinstance(mask, torch.Tensor) or mask.ndim == 0 or mask.shape[0] != size:
        return size
    return int((mask.reshape(size, -1) > 0).any(dim=1).sum())


def log_loss(module: Any, stage: str, loss: torch.Tensor, size: int,
             weight: int | None = None) -> None:
    """Log a batch loss through ``module.loss_means`` (:func:`loss_means`).

    ``train/loss`` is logged per step (this rank's batch) and per epoch; ``val``/``test`` per
    epoch only.

    Args:
        module: The LightningModule; it holds ``loss_means``.
        stage: ``train``, ``val`` or ``test``.
        loss: The batch's mean loss.
        size: The batch size.
        weight: The weight of the batch in the epoch's mean: its images with any label
            (:func:`labelled_images`); the batch size if not given.
    """
    mean = cast(Metric, module.loss_means[f"{stage}_loss"])
    weight = size if weight is None else weight
    value = loss.detach().float()
    if stage == "train":
        mean(value, weight=weight)  # forward: the step's value is this batch's alone
        module.log(metric_key(stage, "loss"), mean, on_step=True, on_epoch=True, prog_bar=True,
                   batch_size=size)
        return
    if weight > 0:
        mean.update(value, weight=weight)
    module.log(metric_key(stage, "loss"), mean, on_epoch=True, prog_bar=True, batch_size=size)
