"""The three baselines of every transfer target: ``pixels``, ``random`` and ``self``.

- ``pixels`` (the authors' ``transfer_two_stream_with_bn_ends_l2l0_pix_only`` with
  ``side_encoder_l2``): a small network trained from scratch on the same little transfer data.
  RGB is bilinearly resized to a quarter of the resolution (64² at 256²), then conv 3×3 with 4
  channels (BN, ReLU) and conv 3×3 with 8 channels at stride 4 (BN, no activation), which gives
  the encoders' representation grid (16×16×8 at 256²); it is concatenated with itself to 16
  channels and batch-normalized, then read by a fresh copy of the target's head. It measures
  whether a transfer helps at all (the *gain*).
- ``random``: the transfer readout on a frozen, randomly initialized encoder (seeded, so every
  target's ``random`` reads the same projection).
- ``self``: the target's own fully supervised network (its task run's checkpoint), evaluated on
  the transfer test data without training (the *quality* reference).
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from taskonomy.tasks.networks.encoders import (
    BN_EPS,
    DOWNSAMPLING,
    ENCODER_LAYOUT,
    ENCODER_LAYOUT_KEY,
    REPRESENTATION_CHANNELS,
    TaskonomyEncoder,
    build_encoder,
)
from taskonomy.tasks.networks.readout import READOUT_BN_MOMENTUM
from taskonomy.tasks.representations import weights_fingerprint

#: Stride of the pixels network's second conv (64² → 16² in the paper).
PIXELS_STRIDE = 4


class PixelsEncoder(nn.Module):
    """The ``pixels`` baseline's from-scratch encoder: RGB → a 16-channel representation.

    Args:
        resolution: Input resolution (a multiple of 16); the output grid is ``resolution/16``.
        in_channels: Input image channels.
    """

    def __init__(self, resolution: int, in_channels: int = 3) -> None:
        super().__init__()
        if resolution <= 0 or resolution % DOWNSAMPLING:
            raise ValueError(
                f"pixels baseline: resolution must be a positive multiple of {DOWNSAMPLING}, "
                f"got {resolution}"
            )
        # Resize to 4× the representation grid so the stride-4 conv lands on the encoders' grid.
        self.side = resolution // DOWNSAMPLING * PIXELS_STRIDE
        self.conv1 = nn.Sequential(
            nn.Conv2d(in_channels, 4, 3, padding=1, bias=False),
            nn.BatchNorm2d(4, eps=BN_EPS, momentum=READOUT_BN_MOMENTUM),
            nn.ReLU(inplace=True),
        )
        self.conv2 = nn.Sequential(
            nn.Conv2d(4, REPRESENTATION_CHANNELS, 3, stride=PIXELS_STRIDE, padding=1, bias=False),
            nn.BatchNorm2d(REPRESENTATION_CHANNELS, eps=BN_EPS, momentum=READOUT_BN_MOMENTUM),
        )
        self.output_norm = nn.BatchNorm2d(
            2 * REPRESENTATION_CHANNELS, eps=BN_EPS, momentum=READOUT_BN_MOMENTUM
        )
        self.out_channels = 2 * REPRESENTATION_CHANNELS
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.trunc_normal_(m.weight, std=0.01, a=-0.02, b=0.02)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``B×C×H×W`` → ``B×16×H/16×W/16``."""
        x = F.interpolate(x, size=(self.side, self.side), mode="bilinear", align_corners=False)
        half = self.conv2(self.conv1(x))
        return self.output_norm(torch.cat([half, half], dim=1))


def freeze(module: nn.Module) -> nn.Module:
    """Put a module in eval mode and stop its gradients."""
    module.eval()
    for p in module.parameters():
        p.requires_grad_(False)
    return module


def random_encoder(name: str, in_channels: int = 3, seed: int = 0) -> TaskonomyEncoder:
    """A frozen encoder with seeded random weights (the ``random`` baseline's source).

    The global RNG is left untouched, so building it does not shift other seeded randomness.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        encoder = build_encoder(name, in_channels)
    freeze(encoder)
    return encoder


def random_fingerprint(encoder: TaskonomyEncoder, name: str, seed: int) -> str:
    """Identity of a random encoder for the representation cache.

    Its weights' hash as well as its recipe: a change of the initialization must not serve
    representations of the former random weights.
    """
    return f"random|{name}|{encoder.in_channels}|{seed}|{weights_fingerprint(encoder)}"


def load_checkpoint(path: str | os.PathLike[str], what: str) -> dict[str, Any]:
    """Load a Lightning checkpoint of a task run on the CPU.

    Args:
        path: The checkpoint file.
        what: Who needs it, for messages (e.g. ``"source 'normal' (run abc)"``).

    Raises:
        FileNotFoundError: The file does not exist.
        ValueError: The file is not a task checkpoint (no ``state_dict``/``hyper_parameters``).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"{what}: checkpoint {path} does not exist; rerun that task run or fix the "
            "checkpoint path in its run record"
        )
    try:
        data = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as error:  # noqa: BLE001 - any unpickling failure means a bad file
        raise ValueError(f"{what}: cannot read checkpoint {path} ({error})") from error
    if not isinstance(data, dict) or "state_dict" not in data or "hyper_parameters" not in data:
        raise ValueError(
            f"{what}: {path} is not a task checkpoint (it needs 'state_dict' and "
            "'hyper_parameters' as Lightning writes them for `taskonomy train`)"
        )
    layout = data.get(ENCODER_LAYOUT_KEY, 1)
    if layout != ENCODER_LAYOUT:
        warnings.warn(
            f"{what}: {path} was trained with encoder layout {layout}, this version builds "
            f"layout {ENCODER_LAYOUT} (the stem's max-pool now pads like TensorFlow's SAME), so "
            "its features come out shifted by a pixel; retrain that task run for exact results",
            stacklevel=2,
        )
    return data
