"""Encoders: the paper's ResNet-50 variant and small CPU variants with the same interface.

Every encoder maps a ``B×C×H×W`` image to a ``B×8×H/16×W/16`` representation (16×16×8 at 256²),
the representation that transfers read. The layout follows TF-slim ResNet-v1 as the authors used
it: a 7×7/2 root conv and a 3×3/2 max-pool, four blocks whose stride sits on the 3×3 conv of the
*last* unit of a block (blocks 1 and 2 stride 2; blocks 3 and 4 stride 1, no global pooling), then
``compress1``: a 3×3 conv to 8 channels with BN and ReLU.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

#: Checkpoint entry stamping the encoder layout a task network was trained with.
ENCODER_LAYOUT_KEY = "taskonomy_encoder_layout"
#: The encoder layout: 2 since the stem's max-pool pads like TF's SAME (bottom and right only);
#: networks of layout 1 (padding on every side) see every feature map shifted by a pixel here.
ENCODER_LAYOUT = 2

#: Channels of every encoder's representation.
REPRESENTATION_CHANNELS = 8
#: Spatial downsampling of every encoder (256² → 16²).
DOWNSAMPLING = 16
#: BN momentum matching TF-slim's decay 0.9 (PyTorch counts the other way).
BN_MOMENTUM = 0.1
BN_EPS = 1e-5


def _bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=BN_EPS, momentum=BN_MOMENTUM)


class _Shortcut(nn.Module):
    """The identity path: a strided subsample when shapes agree, a 1×1 projection otherwise."""

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.project: nn.Module | None = None
        if in_channels != out_channels:
            self.project = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
                _bn(out_channels),
            )
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.project is not None:
            return self.project(x)
        return x[:, :, :: self.stride, :: self.stride] if self.stride > 1 else x


class Bottleneck(nn.Module):
    """ResNet-v1 bottleneck unit (1×1, 3×3 with the stride, 1×1 ×4), post-activation."""

    expansion = 4

    def __init__(self, in_channels: int, width: int, stride: int) -> None:
        super().__init__()
        out = width * self.expansion
        self.body = nn.Sequential(
            nn.Conv2d(in_channels, width, 1, bias=False),
            _bn(width),
            nn.ReLU(inplace=True),
            nn.Conv2d(width, width, 3, stride=stride, padding=1, bias=False),
            _bn(width),
            nn.ReLU(inplace=True),
            nn.Conv2d(width, out, 1, bias=False),
            _bn(out),
        )
        self.shortcut = _Shortcut(in_channels, out, stride)
        self.out_channels = out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Residual unit: ``relu(body(x) + shortcut(x))``."""
        return torch.relu(self.body(x) + self.shortcut(x))


class BasicBlock(nn.Module):
    """ResNet basic unit (two 3×3 convs, the second carrying the stride), post-activation."""

    expansion = 1

    def __init__(self, in_channels: int, width: int, stride: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(in_channels, width, 3, padding=1, bias=False),
            _bn(width),
            nn.ReLU(inplace=True),
            nn.Conv2d(width, width, 3, stride=stride, padding=1, bias=False),
            _bn(width),
        )
        self.shortcut = _Shortcut(in_channels, width, stride)
        self.out_channels = width

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Residual unit: ``relu(body(x) + shortcut(x))``."""
        return torch.relu(self.body(x) + self.shortcut(x))


@dataclass(frozen=True)
class EncoderConfig:
    """Shape of a ResNet-style encoder.

    Attributes:
        block: ``"bottleneck"`` or ``"basic"``.
        units: Units per block (four blocks).
        widths: Inner width of each block (bottleneck output is 4× this).
        stem: Channels of the 7×7 root conv.
    """

    block: str
    units: tuple[int, int, int, int]
    widths: tuple[int, int, int, int]
    stem: int


#: Built-in encoders. ``resnet50`` is the paper's; the others keep its interface for CPU runs.
ENCODERS: dict[str, EncoderConfig] = {
    "resnet50": EncoderConfig("bottleneck", (3, 4, 6, 3), (64, 128, 256, 512), 64),
    "resnet18": EncoderConfig("basic", (2, 2, 2, 2), (64, 128, 256, 512), 64),
    "resnet10": EncoderConfig("basic", (1, 1, 1, 1), (32, 64, 128, 256), 32),
    "resnet10_tiny": EncoderConfig("basic", (1, 1, 1, 1), (8, 16, 32, 32), 8),
}

#: Strides of the four blocks (TF-slim: on the last unit; blocks 3 and 4 keep 16×16).
_BLOCK_STRIDES = (2, 2, 1, 1)


class TaskonomyEncoder(nn.Module):
    """A ResNet-v1 encoder with the Taskonomy 16×-downsampled, 8-channel representation.

    Args:
        config: Block type, units, widths and stem channels.
        in_channels: Channels of the input image (3 for RGB, 1 for colorization's L channel).

    Attributes:
        out_channels: Channels of the representation (always 8).
        downsampling: Spatial reduction factor (always 16).
    """

    def __init__(self, config: EncoderConfig, in_channels: int = 3) -> None:
        super().__init__()
        if in_channels < 1:
            raise ValueError(f"in_channels must be positive, got {in_channels}")
        unit_cls: Callable[[int, int, int], nn.Module] = (
            Bottleneck if config.block == "bottleneck" else BasicBlock
        )
        self.in_channels = in_channels
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, config.stem, 7, stride=2, padding=3, bias=False),
            _bn(config.stem),
            nn.ReLU(inplace=True),
            # TF's SAME pooling pads only the bottom and right: ceil_mode, not padding=1 (which
            # would shift every feature map by a pixel against the authors' weights).
            nn.MaxPool2d(3, stride=2, ceil_mode=True),
        )
        blocks: list[nn.Module] = []
        channels = config.stem
        for units, width, stride in zip(config.units, config.widths, _BLOCK_STRIDES, strict=True):
            for i in range(units):
                unit = unit_cls(channels, width, stride if i == units - 1 else 1)
                blocks.append(unit)
                channels = unit.out_channels  # type: ignore[assignment]
        self.blocks = nn.Sequential(*blocks)
        self.compress = nn.Sequential(
            nn.Conv2d(channels, REPRESENTATION_CHANNELS, 3, padding=1, bias=False),
            _bn(REPRESENTATION_CHANNELS),
            nn.ReLU(inplace=True),
        )
        self.out_channels = REPRESENTATION_CHANNELS
        self.downsampling = DOWNSAMPLING
        _init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Encode ``B×C×H×W`` (H, W multiples of 16) into ``B×8×H/16×W/16``."""
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ValueError(
                f"encoder expects B×{self.in_channels}×H×W, got shape {tuple(x.shape)}"
            )
        return self.compress(self.blocks(self.stem(x)))


def _init_weights(module: nn.Module) -> None:
    # TF-slim's variance_scaling_initializer() of resnet_arg_scope: factor 2 over fan-in, as a
    # normal truncated at 2σ with σ = sqrt(1.3·2/fan_in) (the 1.3 restores the truncated std).
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            fan_in = m.weight[0].numel()
            std = math.sqrt(1.3 * 2.0 / fan_in)
            nn.init.trunc_normal_(m.weight, std=std, a=-2 * std, b=2 * std)


def representation_shape(resolution: int) -> tuple[int, int, int]:
    """Shape ``(8, r/16, r/16)`` of one image's representation at input resolution ``r``.

    Raises:
        ValueError: ``resolution`` is not a positive multiple of 16.
    """
    if resolution <= 0 or resolution % DOWNSAMPLING:
        raise ValueError(
            f"resolution must be a positive multiple of {DOWNSAMPLING}, got {resolution}; "
            "resize the data (e.g. 32, 64, 128, 256)"
        )
    side = resolution // DOWNSAMPLING
    return (REPRESENTATION_CHANNELS, side, side)


def encoder_names() -> list[str]:
    """Names accepted by :func:`build_encoder`."""
    return list(ENCODERS)


def build_encoder(name: str, in_channels: int = 3) -> TaskonomyEncoder:
    """Build a registered encoder.

    Args:
        name: One of :func:`encoder_names` (``resnet50`` is the paper's encoder).
        in_channels: Input channels (1 for colorization).

    Raises:
        ValueError: Unknown name; the message lists the valid ones.
    """
    if name not in ENCODERS:
        raise ValueError(f"unknown encoder {name!r}; valid encoders: {', '.join(ENCODERS)}")
    return TaskonomyEncoder(ENCODERS[name], in_channels=in_channels)

