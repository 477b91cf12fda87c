"""The pix2pix-style cGAN discriminator of the authors' dense tasks.

``pix2pix_discriminator`` with n_layers=5, stride 4: 5×5/4 64 (no BN) → 5×5/4 128 → 5×5/4 256
→ 4×4/1 512 → 4×4/1 1, TF ``SAME`` padding, BN and LeakyReLU(0.2) between. It reads the input
image concatenated with a real or predicted target and returns a map of real/fake logits (4×4 at
256²).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from taskonomy.tasks.networks.encoders import BN_EPS, BN_MOMENTUM

#: (out channels, kernel, stride, batch norm) per layer; the last gives the logits.
LAYERS: tuple[tuple[int, int, int, bool], ...] = (
    (64, 5, 4, False),
    (128, 5, 4, True),
    (256, 5, 4, True),
    (512, 4, 1, True),
    (1, 4, 1, False),
)


class SameConv2d(nn.Conv2d):
    """A conv with TF ``SAME`` padding (output = ceil(input / stride)), any kernel and stride."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Pad like TF (extra pixel at the bottom/right), then convolve."""
        pads = []
        for size, k, s in zip(
            reversed(x.shape[-2:]), reversed(self.kernel_size), reversed(self.stride), strict=True
        ):
            total = max((math.ceil(size / s) - 1) * s + k - size, 0)
            pads += [total // 2, total - total // 2]
        return super().forward(F.pad(x, pads))


class Pix2PixDiscriminator(nn.Module):
    """Conditional patch discriminator.

    Args:
        in_channels: Channels of ``concat(input image, target)``.
        width: Multiplier on every hidden layer's channels (1.0 = the paper).
    """

    def __init__(self, in_channels: int, width: float = 1.0) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        channels = in_channels
        for i, (out, kernel, stride, bn) in enumerate(LAYERS):
            last = i == len(LAYERS) - 1
            out = out if last else max(4, round(out * width))
            layers.append(SameConv2d(channels, out, kernel, stride=stride, bias=not bn))
            if bn:
                layers.append(nn.BatchNorm2d(out, eps=BN_EPS, momentum=BN_MOMENTUM))
            if not last:
                layers.append(nn.LeakyReLU(0.2, inplace=True))
            channels = out
        self.net = nn.Sequential(*layers)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):  # slim.conv2d's defaults: Glorot uniform, zero biases
                nn.init.xavier_uniform_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def forward(self, condition: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Logits ``B×1×h×w`` for ``condition`` (the input image) paired with ``target``."""
        if condition.shape[-2:] != target.shape[-2:]:
            raise ValueError(
                f"discriminator inputs differ in size: {tuple(condition.shape)} vs "
                f"{tuple(target.shape)}"
            )
        return self.net(torch.cat((condition, target), dim=1))
