"""Dense decoders: the paper's 15-layer decoder and the 64-resolution colorization decoder.

Both read a ``B×C×h×w`` representation (``C = 8`` for a task network, 16 after a transfer
readout). Every hidden layer is a 3×3 conv (or stride-2 transposed conv) + BN + LeakyReLU(0.2).
A ``width`` multiplier scales every hidden layer for CPU runs; ``width=1`` is the paper's net.
"""

from __future__ import annotations

import torch
from torch import nn

from taskonomy.tasks.networks.encoders import BN_EPS, BN_MOMENTUM

#: Hidden layers of ``decoder_fc_15_layer_256_resolution_fully_convolutional_16x16x4``:
#: (channels, upsample ×2?). Four stride-2 deconvs bring 16² back to 256².
DENSE_LAYERS: tuple[tuple[int, bool], ...] = (
    (1024, False),
    (1024, False),
    (512, False),
    (256, False),
    (256, False),
    (128, False),
    (64, True),
    (64, False),
    (32, True),
    (32, False),
    (16, True),
    (32, False),
    (16, True),
)
#: Hidden layers of ``decoder_fc_15_layer_64_resolution_16x16`` (colorization, 16² → 64²).
COLORIZATION_LAYERS: tuple[tuple[int, bool], ...] = (
    (1024, False),
    (1024, False),
    (512, False),
    (512, False),
    (512, False),
    (512, False),
    (256, False),
    (256, False),
    (256, False),
    (256, True),
    (256, False),
    (256, True),
)


class SameDeconv2d(nn.Module):
    """Stride-2 3×3 transposed conv with TF ``SAME`` alignment (output exactly 2× the input).

    PyTorch's ``padding=1, output_padding=1`` shifts the output grid by one pixel against TF;
    a padding-free transposed conv followed by dropping the last row and column matches TF.
    """

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv = nn.ConvTranspose2d(in_channels, out_channels, 3, stride=2, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Upsample ``B×C×h×w`` to ``B×out×2h×2w``."""
        h, w = x.shape[-2:]
        return self.conv(x)[..., : 2 * h, : 2 * w]


def _hidden(in_channels: int, out_channels: int, upsample: bool) -> nn.Sequential:
    conv: nn.Module = (
        SameDeconv2d(in_channels, out_channels)
        if upsample
        else nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False)
    )
    return nn.Sequential(
        conv,
        nn.BatchNorm2d(out_channels, eps=BN_EPS, momentum=BN_MOMENTUM),
        nn.LeakyReLU(0.2, inplace=True),
    )


def _scaled(channels: int, width: float) -> int:
    return max(4, round(channels * width))


class DenseDecoder(nn.Module):
    """The 15-layer dense decoder: representation → full-resolution ``B×out×H×W``.

    Args:
        in_channels: Representation channels (8, or 16 behind a transfer readout).
        out_channels: Output channels of the task.
        width: Multiplier on every hidden layer's channels (1.0 = the paper).
        activation: ``"tanh"`` (the paper's bounded output) or ``"linear"``.
    """

    def __init__(
        self, in_channels: int, out_channels: int, width: float = 1.0, activation: str = "tanh"
    ) -> None:
        super().__init__()
        self.layers, channels = _stack(DENSE_LAYERS, in_channels, width)
        self.output = nn.Conv2d(channels, out_channels, 3, padding=1)
        self.activation = _activation(activation)
        self.upsampling = 16

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Decode ``B×C×h×w`` into ``B×out×16h×16w`` (the output layer outside autocast).

        Under bf16 autocast the output would be rounded to 8 bits of mantissa: log depth, in
        [0.5, 0.8], would move in steps of 2⁻⁸ (4 % in metres), a floor no network could beat.
        The output layer is one cheap convolution, so it runs outside autocast, in the
        precision of its weights (fp32 under mixed precision).
        """
        hidden = self.layers(x)
        with torch.autocast(hidden.device.type, enabled=False):
            # In the weights' own precision: fp32 under mixed precision, bf16 under bf16-true.
            return self.activation(self.output(hidden.to(self.output.weight.dtype)))


class ColorizationDecoder(nn.Module):
    """The colorization decoder: representation → ``B×313×4h×4w`` logits (a linear 1×1 output).

    Args:
        in_channels: Representation channels.
        out_channels: Number of ab bins (313).
        width: Multiplier on every hidden layer's channels.
    """

    def __init__(self, in_channels: int, out_channels: int = 313, width: float = 1.0) -> None:
        super().__init__()
        self.layers, channels = _stack(COLORIZATION_LAYERS, in_channels, width)
        self.output = nn.Conv2d(channels, out_channels, 1)
        self.upsampling = 4

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Decode ``B×C×h×w`` into ``B×313×4h×4w`` logits."""
        return self.output(self.layers(x))


def _stack(
    layers: tuple[tuple[int, bool], ...], in_channels: int, width: float
) -> tuple[nn.Sequential, int]:
    if width <= 0:
        raise ValueError(f"decoder width multiplier must be positive, got {width}")
    modules = []
    channels = in_channels
    for out, upsample in layers:
        out = _scaled(out, width)
        modules.append(_hidden(channels, out, upsample))
        channels = out
    return nn.Sequential(*modules), channels


def _activation(name: str) -> nn.Module:
    if name == "tanh":
        return nn.Tanh()
    if name == "linear":
        return nn.Identity()
    raise ValueError(f"unknown decoder activation {name!r}; valid: 'tanh', 'linear'")
