"""Fake batches that follow the datamodule's batch contract, for tests and benchmarks.

:func:`fake_batch` builds ``{"__key__": [...], "rgb": B×3×H×W, task: {"input", "target",
"mask"?, "raw"?}}`` for any spec with random but well-formed values: dense targets in the training
encoding's range, class indices, probability vectors, piecewise-constant segment maps, and
egomotion poses whose 0→2 entry is the composition of the other two.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from taskonomy.tasks.networks.pose import compose_poses, denormalize_pose, normalize_pose
from taskonomy.tasks.specs import TaskSpec


def _blocks(batch: int, resolution: int, cells: int, values: int, g: torch.Generator) -> Any:
    # Piecewise-constant label maps: a cells×cells grid of random labels, upsampled.
    coarse = torch.randint(0, values, (batch, 1, cells, cells), generator=g).float()
    up = torch.nn.functional.interpolate(coarse, size=(resolution, resolution), mode="nearest")
    return up[:, 0].long()


def _dense_mask(batch: int, resolution: int, g: torch.Generator) -> torch.Tensor:
    mask = (torch.rand(batch, 1, resolution, resolution, generator=g) > 0.1).float()
    mask[:, :, :2] = 0.0  # a missing band, like sky in depth
    return mask


def _input(spec: TaskSpec, rgb: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    b, _, h, w = rgb.shape
    if spec.towers > 1 or spec.views > 1:
        views = max(spec.towers, spec.views)
        return torch.rand(b, views, spec.input_channels, h, w, generator=g) * 2 - 1
    if spec.input_channels != 3:
        return rgb.mean(1, keepdim=True).repeat(1, spec.input_channels, 1, 1)
    return rgb.clone()


def _poses(batch: int, fixated: bool, g: torch.Generator) -> torch.Tensor:
    return denormalize_pose(torch.randn(batch, 6, generator=g) * 0.5, fixated)


def _target(spec: TaskSpec, batch: int, resolution: int, g: torch.Generator) -> dict[str, Any]:
    shape = spec.output_shape(resolution)
    out: dict[str, Any] = {}
    if spec.family == "dense_regression":
        target = torch.rand(batch, *shape, generator=g)
        out["target"] = target if "log(1+d)" in spec.encoding else target * 1.8 - 0.9
    elif spec.family == "dense_classification" and spec.output_kind == "dense_quarter":
        logits = torch.randn(batch, *shape, generator=g) * 3
        out["target"] = logits.softmax(1)  # no mask: the prior boost comes from class_weights
    elif spec.family == "dense_classification":
        out["target"] = _blocks(batch, resolution, 4, spec.output_channels, g)
    elif spec.family == "metric_segmentation":
        out["target"] = _blocks(batch, resolution, 4, 12, g)
    elif spec.family == "classification" and spec.towers == 1:
        out["target"] = (torch.randn(batch, *shape, generator=g) * 3).softmax(1)
    elif spec.loss in ("cross_entropy", "weighted_cross_entropy"):
        out["target"] = torch.randint(0, spec.output_channels, (batch,), generator=g)
    elif spec.loss == "pose_cycle":
        p01, p12 = _poses(batch, True, g), _poses(batch, True, g)
        poses = (p01, compose_poses(p01, p12), p12)
        out["target"] = torch.cat([normalize_pose(p) for p in poses], dim=1)
    else:
        out["target"] = torch.randn(batch, *shape, generator=g)
    if spec.mask == "depth_valid":
        out["mask"] = _dense_mask(batch, resolution, g)
    if "log(1+d)" in spec.encoding:  # depth: metres beside the log target, 0 where missing
        metres = (torch.exp(out["target"] * math.log(2.0**16)) - 1.0) / 512.0
        out["raw"] = metres * out.get("mask", torch.ones_like(metres))
    elif spec.mask == "semantic_certain":  # B×R×R, as the label map
        out["mask"] = _dense_mask(batch, resolution, g)[:, 0]
        out["target"] = torch.where(out["mask"] > 0, out["target"], -1)
    elif spec.mask == "sample_valid":
        out["mask"] = torch.ones(batch)
        if batch > 1:
            out["mask"][-1] = 0.0
    return out


def fake_batch(spec: TaskSpec, batch_size: int = 2, resolution: int = 32, seed: int = 0) -> dict:
    """A random batch for one task in the datamodule's batch format.

    Args:
        spec: The task.
        batch_size: Samples in the batch.
        resolution: Image side (a multiple of 16).
        seed: Seed of the values (the same seed gives the same batch).
    """
    if resolution % 16 or resolution <= 0:
        raise ValueError(f"resolution must be a positive multiple of 16, got {resolution}")
    g = torch.Generator().manual_seed(seed)
    rgb = torch.rand(batch_size, 3, resolution, resolution, generator=g) * 2 - 1
    task_batch = {"input": _input(spec, rgb, g), **_target(spec, batch_size, resolution, g)}
    return {
        "__key__": [f"fake/{seed}/{i}" for i in range(batch_size)],
        "rgb": rgb,
        spec.name: task_batch,
    }


def seeded_state_dict(shapes: list[tuple[str, list[int]]], seed: int) -> dict[str, torch.Tensor]:
    """Reproducible float64 weights for a network's parameter names and shapes.

    Values keep activations in range through deep networks (weights ~ N(0, 1/fan-in), BN
    scales near 1, running variances in [0.5, 1.5]), so two implementations of one architecture
    can be compared on them (e.g. against the authors' ``visualpriors`` port).

    Args:
        shapes: ``(name, shape)`` of each entry, in order.
        seed: Seed of the values.
    """
    g = torch.Generator().manual_seed(seed)
    state: dict[str, torch.Tensor] = {}
    for name, shape in shapes:
        if name.endswith("num_batches_tracked"):
            state[name] = torch.tensor(0)
            continue
        noise = torch.randn(shape, generator=g, dtype=torch.float64)
        if name.endswith("running_var"):
            state[name] = torch.rand(shape, generator=g, dtype=torch.float64) + 0.5
        elif name.endswith(("running_mean", "bias")):
            state[name] = 0.1 * noise
        elif len(shape) == 1:  # a BN scale
            state[name] = 1.0 + 0.1 * noise
        else:
            state[name] = noise / math.sqrt(math.prod(shape[1:]))
    return state
