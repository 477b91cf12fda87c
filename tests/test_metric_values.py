"""Metric values on planted predictions with known answers, for metrics without another check.

Every metric is built from the task's spec (:func:`build_metrics`) and fed ``(prediction,
task_batch)`` as the families feed it.
"""

import math

import pytest
import torch

from taskonomy.tasks.metrics import LOG_DEPTH_TASKS, build_metrics
from taskonomy.tasks.networks.pose import compose_poses, normalize_pose
from taskonomy.tasks.registry import get_spec
from taskonomy.tasks.specs import BUILTIN_TASKS


def _metrics(name: str) -> dict:
    return build_metrics(get_spec(name))


def _logits(labels: torch.Tensor, classes: int) -> torch.Tensor:
    """Confident logits whose argmax over dim 1 is ``labels`` (``B`` or ``B×H×W``)."""
    return torch.nn.functional.one_hot(labels, classes).movedim(-1, 1).float() * 10.0


# ------------------------------------------------------------------------- vanishing points


@pytest.mark.parametrize("degrees", [90.0, 180.0, 45.0, 0.0])
def test_vanishing_point_angle_error_is_the_mean_over_axes_and_samples(degrees) -> None:
    metric = _metrics("vanishing_point")["angle_error"]
    target = torch.eye(3).reshape(1, 9).repeat(2, 1)  # 3 unit VP directions per sample
    pred = target.reshape(2, 3, 3).clone()
    theta = math.radians(degrees)
    pred[1, 0] = torch.tensor([math.cos(theta), math.sin(theta), 0.0])  # one axis off by θ
    # Directions, not vectors: a prediction's length does not matter.
    pred = pred * torch.tensor([2.0, 0.5, 3.0]).reshape(1, 3, 1)
    metric.update(pred.reshape(2, 9), {"target": target})
    # Six axes, one off by θ.
    assert metric.compute().item() == pytest.approx(degrees / 6, abs=1e-3)


# --------------------------------------------------------------------------- classification


@pytest.mark.parametrize(
    ("task", "labels", "predicted", "expected"),
    [
        ("jigsaw", [4, 0, 99, 17], [4, 0, 99, 16], 0.75),
        ("point_matching", [1, 0, 0, 1, 1], [1, 0, 1, 0, 1], 0.6),
    ],
)
def test_hard_label_top1_and_accuracy(task, labels, predicted, expected) -> None:
    spec = get_spec(task)
    (name,) = spec.metrics
    metric = build_metrics(spec)[name]
    metric.update(_logits(torch.tensor(predicted), spec.output_channels),
                  {"target": torch.tensor(labels)})
    assert metric.compute().item() == pytest.approx(expected)
    # A second batch, all wrong: the epoch value counts samples, not batches.
    wrong = (torch.tensor(labels[:2]) + 1) % spec.output_channels
    metric.update(_logits(wrong, spec.output_channels), {"target": torch.tensor(labels[:2])})
    right = expected * len(labels)
    assert metric.compute().item() == pytest.approx(right / (len(labels) + 2))


def test_colorization_top1_compares_with_the_most_likely_bin_and_counts_every_pixel() -> None:
    metric = _metrics("colorization")["top1"]
    bins = get_spec("colorization").output_channels
    # Soft targets over the bins (B×313×h×w): the label of a pixel is its most likely bin,
    # even where that bin holds well under half of the mass.
    best = torch.tensor([[[5, 300], [42, 7]]])
    target = torch.full((1, bins, 2, 2), 1.0)
    target.scatter_(1, best.unsqueeze(1), 150.0)
    target = target / target.sum(1, keepdim=True)
    assert float(target.amax(1).max()) < 0.5
    predicted = best.clone()
    predicted[0, 1, 1] = 8  # one pixel of four is wrong
    # Colorization's mask holds prior-boost weights, not validity: top1 counts every pixel
    # once. Weighted by the mask it would be (0.2 + 1 + 1) / (0.2 + 1 + 1 + 6) ≈ 0.27.
    boost = torch.tensor([[[[0.2, 1.0], [1.0, 6.0]]]])
    metric.update(_logits(predicted, bins), {"target": target, "mask": boost})
    assert metric.compute().item() == pytest.approx(0.75)


# ------------------------------------------------------------------------ dense regression

#: Dense regression tasks with an RMSE in their own units (not metres of decoded depth).
RMSE_TASKS = [s.name for s in BUILTIN_TASKS
              if "rmse" in s.metrics and s.name not in LOG_DEPTH_TASKS]


@pytest.mark.parametrize("task", RMSE_TASKS)
def test_rmse_and_l1_in_target_units_over_valid_pixel_channels(task) -> None:
    spec = get_spec(task)
    metrics = build_metrics(spec)
    c = spec.output_channels
    target = torch.linspace(-0.9, 0.9, c * 16).reshape(1, c, 4, 4)
    error = torch.zeros_like(target)
    error[0, 0, 0, 0] = 0.3
    error[0, c - 1, 0, 1] = 0.4
    batch = {"target": target}
    count = c * 16
    if spec.mask == "depth_valid":
        # An invalid pixel with a huge error in every channel: it must not count.
        mask = torch.ones(1, 1, 4, 4)
        mask[0, 0, 3, 3] = 0.0
        error[0, :, 3, 3] = 100.0
        batch["mask"] = mask
        count = c * 15
    for metric in metrics.values():
        metric.update(target + error, batch)
    assert metrics["rmse"].compute().item() == pytest.approx(math.sqrt(0.25 / count), rel=1e-4)
    assert metrics["l1"].compute().item() == pytest.approx(0.7 / count, rel=1e-4)


# ------------------------------------------------------------------------------------ poses


def _random_poses(n: int, seed: int) -> torch.Tensor:
    """Metric poses: Euler angles within ±0.5 rad, translations of a few scene units."""
    g = torch.Generator().manual_seed(seed)
    euler = torch.rand(n, 3, generator=g) - 0.5
    return torch.cat((euler, torch.randn(n, 3, generator=g) * 2.0), dim=1)


def _turned_and_moved(pose: torch.Tensor, degrees: float, shift: tuple[float, ...]) -> torch.Tensor:
    """``pose`` turned by ``degrees`` about the z axis after its rotation, and shifted.

    ``Rz(γ + δ)·Ry(β)·Rx(α) = Rz(δ)·R``: the geodesic angle to ``R`` is exactly ``δ``.
    """
    out = pose.clone()
    out[:, 2] += math.radians(degrees)
    out[:, 3:] += torch.tensor(shift)
    return out


def test_nonfixated_pose_errors_undo_the_nonfixated_statistics() -> None:
    metrics = _metrics("nonfixated_pose")
    target = _random_poses(4, seed=1)
    pred = _turned_and_moved(target, 30.0, (3.0, 0.0, -4.0))
    for metric in metrics.values():
        metric.update(normalize_pose(pred, fixated=False),
                      {"target": normalize_pose(target, fixated=False)})
    # Decoded with the fixated statistics instead, both errors would be far off.
    assert metrics["rotation_error"].compute().item() == pytest.approx(30.0, abs=0.05)
    assert metrics["translation_error"].compute().item() == pytest.approx(5.0, rel=1e-4)


def test_egomotion_errors_average_the_three_pairwise_fixated_poses() -> None:
    metrics = _metrics("egomotion")
    p01, p12 = _random_poses(3, seed=2), _random_poses(3, seed=3)
    poses = [p01, compose_poses(p01, p12), p12]
    target = torch.cat([normalize_pose(p) for p in poses], dim=1)  # B×18, fixated statistics
    # Only the 0→2 pose is turned by 90°, only the 1→2 pose is moved, by 10 scene units.
    wrong = [p01, _turned_and_moved(poses[1], 90.0, (0.0, 0.0, 0.0)),
             _turned_and_moved(p12, 0.0, (0.0, 6.0, 8.0))]
    pred = torch.cat([normalize_pose(p) for p in wrong], dim=1)
    for metric in metrics.values():
        metric.update(pred, {"target": target})
    assert metrics["rotation_error"].compute().item() == pytest.approx(90.0 / 3, abs=0.05)
    assert metrics["translation_error"].compute().item() == pytest.approx(10.0 / 3, rel=1e-4)
