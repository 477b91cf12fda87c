"""The transfer readout: frozen source representation(s) → a 16-channel input for a decoder.

The authors' ``transfer_two_stream_with_bn_ends_l2l0_no_image``: at training time each input
channel is clipped to its batch mean ± 5σ (moments over batch and space) so outliers of a frozen
encoder cannot blow up the small readout; then BN on the input, two parallel streams of two 3×3
conv layers with 8 channels (BN, ReLU), concatenated to 16 channels and batch-normalized. The
authors' batch *re*normalization is replaced by plain BN (their rmax/dmax schedule is malformed),
with their transfer prototype's BN decay of 0.8 (:data:`READOUT_BN_MOMENTUM`).
Higher-order transfers concatenate the k sources channel-wise first (``in_channels = 8·k``).
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn

from taskonomy.tasks.networks.encoders import BN_EPS, REPRESENTATION_CHANNELS

#: PyTorch momentum of every BN of the readout and of the ``pixels`` baseline's network: the
#: authors' transfer prototype set ``batch_norm_decay`` 0.8 (TF decay d is momentum 1 − d), not
#: the task networks' 0.9.
READOUT_BN_MOMENTUM = 0.2


def clip_to_batch_sigma(x: torch.Tensor, sigmas: float, *,
                        synchronized: bool = False) -> torch.Tensor:
    """Clip every channel of ``B×C×h×w`` to its batch mean ± ``sigmas`` standard deviations.

    ``synchronized``: under DDP, take the moments over every rank's batch (as synchronized batch
    norm does), so the clip sees the step's whole batch however it is split over GPUs.
    """
    dims = (0, 2, 3)
    if synchronized and dist.is_available() and dist.is_initialized() \
            and dist.get_world_size() > 1:
        channels = x.shape[1]
        flat = x.detach().double().transpose(0, 1).reshape(channels, -1)
        sums = torch.cat([flat.sum(1), (flat * flat).sum(1),
                          flat.new_tensor([flat.shape[1]])])
        dist.all_reduce(sums)
        count = sums[-1]
        mean64 = sums[:channels] / count
        var64 = (sums[channels:2 * channels] / count - mean64 * mean64).clamp_min(0.0)
        mean = mean64.to(x.dtype).view(1, channels, 1, 1)
        std = var64.sqrt().to(x.dtype).view(1, channels, 1, 1)
    else:
        mean = x.mean(dim=dims, keepdim=True)
        std = x.std(dim=dims, keepdim=True, unbiased=False)
    return torch.maximum(torch.minimum(x, mean + sigmas * std), mean - sigmas * std)


def _conv_bn_relu(in_channels: int, out_channels: int) -> list[nn.Module]:
    return [
        nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
        nn.BatchNorm2d(out_channels, eps=BN_EPS, momentum=READOUT_BN_MOMENTUM),
        nn.ReLU(inplace=True),
    ]


class TransferReadout(nn.Module):
    """Two-stream readout over concatenated frozen representations.

    Args:
        in_channels: Channels of the concatenated representations (8 per source).
        stream_channels: Channels of each stream (8; the output has twice as many).
        clip_sigmas: Training-time clip in batch standard deviations (``None`` disables it).
    """

    def __init__(
        self,
        in_channels: int = REPRESENTATION_CHANNELS,
        stream_channels: int = 8,
        clip_sigmas: float | None = 5.0,
    ) -> None:
        super().__init__()
        if in_channels < 1 or stream_channels < 1:
            raise ValueError(
                f"readout channels must be positive, got in={in_channels}, stream={stream_channels}"
            )
        self.clip_sigmas = clip_sigmas
        self.input_norm = nn.BatchNorm2d(in_channels, eps=BN_EPS, momentum=READOUT_BN_MOMENTUM)
        self.streams = nn.ModuleList(
            nn.Sequential(
                *_conv_bn_relu(in_channels, stream_channels),
                *_conv_bn_relu(stream_channels, stream_channels),
            )
            for _ in range(2)
        )
        self.output_norm = nn.BatchNorm2d(
            2 * stream_channels, eps=BN_EPS, momentum=READOUT_BN_MOMENTUM
        )
        self.in_channels = in_channels
        self.out_channels = 2 * stream_channels
        for m in self.modules():
            if isinstance(m, nn.Conv2d):  # the authors' truncated normal, std 0.01
                nn.init.trunc_normal_(m.weight, std=0.01, a=-0.02, b=0.02)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``B×in×h×w`` → ``B×16×h×w``."""
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ValueError(
                f"readout expects B×{self.in_channels}×h×w representations, got {tuple(x.shape)}"
            )
        if self.training and self.clip_sigmas is not None:
            # Batch norm made synchronized (``sync_batchnorm``): the clip's moments are too.
            x = clip_to_batch_sigma(x, self.clip_sigmas,
                                    synchronized=isinstance(self.input_norm, nn.SyncBatchNorm))
        x = self.input_norm(x)
        return self.output_norm(torch.cat([s(x) for s in self.streams], dim=1))
