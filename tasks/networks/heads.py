"""Fully connected heads: single-image FC heads and siamese heads over 2, 3 or 9 towers.

Hidden layers are FC → BN → ReLU → dropout(0.5) (``encoder_multilayers_fc_bn``; the egomotion
heads drop the BN as the authors' ``encoder_multilayers_fc`` does); the last layer is linear.
Representations are flattened channel-first (PyTorch order); porting TF weights would need an
NHWC permutation of the first layer.

An :class:`FCHead` can predict its outputs in z-scored units and rescale them with fixed
statistics (``output_mean + output_std · z``). With small-spread targets such as unit vectors,
Adam's roughly constant step size would otherwise move the predictions by a large fraction of the
targets' spread at every step; the loss is unchanged, it still compares the rescaled outputs with
the targets in their own units.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from taskonomy.tasks.networks.pose import compose_poses, denormalize_pose, normalize_pose

BN_MOMENTUM = 0.1


class FCHead(nn.Module):
    """Flatten → hidden FC layers (BN, ReLU, dropout) → linear output.

    Args:
        in_features: Flattened input size (2048 for a 16×16×8 representation).
        hidden: Widths of the hidden layers.
        out_features: Output size.
        batch_norm: Whether hidden layers have BN.
        dropout: Drop probability after each hidden layer (the authors' keep_prob 0.5).
        output_mean: Fixed per-output offset added to the last layer (``None``: 0).
        output_std: Fixed positive per-output scale of the last layer (``None``: 1).

    Raises:
        ValueError: output statistics of the wrong length, or a scale that is not positive.
    """

    def __init__(
        self,
        in_features: int,
        hidden: Sequence[int],
        out_features: int,
        batch_norm: bool = True,
        dropout: float = 0.5,
        output_mean: Sequence[float] | None = None,
        output_std: Sequence[float] | None = None,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Flatten()]
        width = in_features
        for h in hidden:
            layers.append(nn.Linear(width, h, bias=not batch_norm))
            if batch_norm:
                layers.append(nn.BatchNorm1d(h, momentum=BN_MOMENTUM))
            layers += [nn.ReLU(inplace=True), nn.Dropout(dropout)]
            width = h
        layers.append(nn.Linear(width, out_features))
        self.net = nn.Sequential(*layers)
        self.in_features = in_features
        for m in self.net:
            if isinstance(m, nn.Linear):  # the authors' truncated normal, std 0.01
                nn.init.trunc_normal_(m.weight, std=0.01, a=-0.02, b=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        self.rescaled = output_mean is not None or output_std is not None
        mean = _output_statistic(output_mean, out_features, 0.0, "output_mean")
        std = _output_statistic(output_std, out_features, 1.0, "output_std")
        if not bool((std > 0).all()):
            raise ValueError(f"output_std must be positive, got {std.tolist()}")
        # Constants of the task, not learned state: rebuilt from the task on construction, so
        # they stay out of checkpoints (older checkpoints load unchanged).
        self.register_buffer("output_mean", mean, persistent=False)
        self.register_buffer("output_std", std, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``B×…`` (any trailing shape of ``in_features`` values) → ``B×out``."""
        out = self.net(x)
        if self.rescaled:
            out = out * self.output_std.to(out.dtype) + self.output_mean.to(out.dtype)
        return out


def _output_statistic(values: Sequence[float] | None, size: int, default: float,
                      name: str) -> torch.Tensor:
    if values is None:
        return torch.full((size,), default)
    tensor = torch.as_tensor(values, dtype=torch.float32).flatten()
    if tensor.numel() != size:
        raise ValueError(f"{name} has {tensor.numel()} values; the head has {size} outputs")
    return tensor


def _check_towers(x: torch.Tensor, towers: int) -> None:
    if x.ndim < 3 or x.shape[1] != towers:
        raise ValueError(
            f"siamese head expects B×{towers}×C×h×w representations, got {tuple(x.shape)}"
        )


class SiameseHead(nn.Module):
    """Concatenate the flattened representations of ``towers`` views, then an :class:`FCHead`.

    Args:
        towers: Views per sample (2 for pose and point matching, 9 for jigsaw).
        tower_features: Flattened representation size of one view.
        hidden: Hidden widths of the FC stack.
        out_features: Output size.
        batch_norm: Whether hidden layers have BN.
    """

    def __init__(
        self,
        towers: int,
        tower_features: int,
        hidden: Sequence[int],
        out_features: int,
        batch_norm: bool = True,
    ) -> None:
        super().__init__()
        self.towers = towers
        self.fc = FCHead(towers * tower_features, hidden, out_features, batch_norm=batch_norm)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``B×towers×C×h×w`` → ``B×out``."""
        _check_towers(x, self.towers)
        return self.fc(x.flatten(1))


class EgomotionCycleHead(nn.Module):
    """Triplet head: predicts poses 0→1 and 1→2, and composes 0→2 through the cycle.

    The two FC stacks (no BN) read the concatenation of all three views. The output is the
    z-scored ``[p01, p02, p12]`` (``B×18``), where ``p02`` is the composition of the de-normalized
    ``p01`` and ``p12``, normalized again (the authors' ``CycleSiamese``).

    Args:
        tower_features: Flattened representation size of one view.
        hidden: Hidden widths of each FC stack (1024, 1024 in the paper).
    """

    def __init__(self, tower_features: int, hidden: Sequence[int] = (1024, 1024)) -> None:
        super().__init__()
        self.towers = 3
        self.head01 = FCHead(3 * tower_features, hidden, 6, batch_norm=False)
        self.head12 = FCHead(3 * tower_features, hidden, 6, batch_norm=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``B×3×C×h×w`` → ``B×18`` z-scored ``[p01, p02, p12]``."""
        _check_towers(x, 3)
        flat = x.flatten(1)
        p01, p12 = self.head01(flat), self.head12(flat)
        # Compose in float32 even under autocast: rotation products lose too much in bf16.
        with torch.autocast(device_type=flat.device.type, enabled=False):
            p02 = compose_poses(denormalize_pose(p01.float()), denormalize_pose(p12.float()))
        return torch.cat((p01, normalize_pose(p02).to(p01.dtype), p12), dim=1)
