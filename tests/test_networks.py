"""Networks: encoder shapes and layout, decoders, heads, pose geometry, readout, discriminator."""

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from taskonomy.tasks.baselines import PixelsEncoder
from taskonomy.tasks.networks.decoders import ColorizationDecoder, DenseDecoder, SameDeconv2d
from taskonomy.tasks.networks.discriminator import Pix2PixDiscriminator
from taskonomy.tasks.networks.encoders import (
    Bottleneck,
    build_encoder,
    encoder_names,
    representation_shape,
)
from taskonomy.tasks.networks.heads import EgomotionCycleHead, FCHead, SiameseHead
from taskonomy.tasks.networks.pose import (
    compose_poses,
    denormalize_pose,
    euler_to_matrix,
    matrix_to_euler,
    normalize_pose,
    rotation_angle,
)
from taskonomy.tasks.networks.readout import TransferReadout, clip_to_batch_sigma


@pytest.fixture(autouse=True)
def _single_thread():
    # One intra-op thread: on a few shared cores, more threads only contend.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize("name", ["resnet18", "resnet10", "resnet10_tiny"])
@pytest.mark.parametrize("resolution", [32, 64])
def test_small_encoders_give_16x_downsampled_8_channels(name, resolution) -> None:
    encoder = build_encoder(name).eval()
    with torch.no_grad():
        out = encoder(torch.randn(2, 3, resolution, resolution))
    assert out.shape == (2, 8, resolution // 16, resolution // 16)
    assert (out >= 0).all()  # compress1 ends with a ReLU


def test_paper_encoder_layout_and_256_representation() -> None:
    encoder = build_encoder("resnet50").eval()
    units = [m for m in encoder.blocks if isinstance(m, Bottleneck)]
    assert len(units) == 16  # [3, 4, 6, 3]
    assert [u.out_channels for u in units][-1] == 2048
    # TF-slim strides: on the last unit of blocks 1 and 2 only.
    strides = [u.shortcut.stride for u in units]
    assert [i for i, s in enumerate(strides) if s == 2] == [2, 6]
    backbone = sum(p.numel() for p in encoder.blocks.parameters())
    assert 23e6 < backbone < 24e6  # ResNet-50's bottleneck stack
    with torch.no_grad():
        out = encoder(torch.randn(1, 3, 256, 256))
    assert out.shape == (1, 8, 16, 16)


def test_colorization_encoder_takes_one_channel() -> None:
    encoder = build_encoder("resnet10_tiny", in_channels=1)
    assert encoder(torch.randn(2, 1, 32, 32)).shape == (2, 8, 2, 2)
    with pytest.raises(ValueError, match=r"B×1×H×W"):
        encoder(torch.randn(2, 3, 32, 32))


def test_unknown_encoder_and_bad_resolution() -> None:
    with pytest.raises(ValueError, match="valid encoders: resnet50"):
        build_encoder("vit")
    assert "resnet50" in encoder_names()
    assert representation_shape(256) == (8, 16, 16)
    with pytest.raises(ValueError, match="multiple of 16"):
        representation_shape(100)


def test_same_deconv_matches_tf_alignment() -> None:
    # TF SAME conv2d_transpose (k3, s2): input pixel i reaches output pixels 2i, 2i+1, 2i+2.
    deconv = SameDeconv2d(1, 1)
    torch.nn.init.ones_(deconv.conv.weight)
    x = torch.zeros(1, 1, 4, 4)
    x[0, 0, 1, 1] = 1.0
    out = deconv(x)[0, 0]
    assert out.shape == (8, 8)
    rows, cols = torch.nonzero(out, as_tuple=True)
    assert sorted(set(rows.tolist())) == [2, 3, 4]
    assert sorted(set(cols.tolist())) == [2, 3, 4]


def test_dense_decoder_upsamples_to_full_resolution_with_tanh() -> None:
    decoder = DenseDecoder(8, 3, width=0.125)
    out = decoder(torch.randn(2, 8, 2, 2) * 100)
    assert out.shape == (2, 3, 32, 32)
    assert out.abs().max() <= 1.0
    convs = [
        m for m in decoder.modules() if isinstance(m, torch.nn.Conv2d | torch.nn.ConvTranspose2d)
    ]
    assert len(convs) == 14  # 13 hidden layers + the output conv
    linear = DenseDecoder(16, 2, width=0.125, activation="linear")
    assert linear(torch.randn(2, 16, 2, 2) * 100).abs().max() > 1.0


def test_colorization_decoder_outputs_quarter_resolution_logits() -> None:
    decoder = ColorizationDecoder(8, 313, width=0.0625)
    assert decoder(torch.randn(2, 8, 4, 4)).shape == (2, 313, 16, 16)


def test_fc_and_siamese_heads() -> None:
    head = FCHead(32, (16,), 5)
    assert head(torch.randn(4, 8, 2, 2)).shape == (4, 5)
    assert any(isinstance(m, torch.nn.Dropout) and m.p == 0.5 for m in head.modules())
    siamese = SiameseHead(9, 32, (16, 16), 100)
    assert siamese(torch.randn(3, 9, 8, 2, 2)).shape == (3, 100)
    with pytest.raises(ValueError, match="B×9"):
        siamese(torch.randn(3, 2, 8, 2, 2))


def _random_rotation(n: int) -> torch.Tensor:
    q, _ = torch.linalg.qr(torch.randn(n, 3, 3, dtype=torch.float64))
    return q * torch.sign(torch.linalg.det(q)).reshape(-1, 1, 1)


def test_euler_roundtrip() -> None:
    euler = (torch.rand(50, 3, dtype=torch.float64) - 0.5) * torch.tensor([6.0, 3.0, 6.0])
    assert torch.allclose(matrix_to_euler(euler_to_matrix(euler)), euler, atol=1e-9)
    r = euler_to_matrix(euler)
    assert torch.allclose(r @ r.transpose(1, 2), torch.eye(3, dtype=torch.float64), atol=1e-12)


def _relative(r1, c1, r2, c2):
    # The authors' definition: R_rel = R2ᵀR1 as sxyz Euler, t = R2ᵀ(c1 − c2).
    rel = r2.transpose(1, 2) @ r1
    t = (r2.transpose(1, 2) @ (c1 - c2).unsqueeze(-1)).squeeze(-1)
    return torch.cat((matrix_to_euler(rel), t), dim=1)


def test_pose_composition_follows_camera_definitions() -> None:
    rotations = [_random_rotation(20) for _ in range(3)]
    centres = [torch.randn(20, 3, dtype=torch.float64) * 3 for _ in range(3)]
    p01 = _relative(rotations[0], centres[0], rotations[1], centres[1])
    p12 = _relative(rotations[1], centres[1], rotations[2], centres[2])
    p02 = _relative(rotations[0], centres[0], rotations[2], centres[2])
    composed = compose_poses(p01, p12)
    assert torch.allclose(composed[:, 3:], p02[:, 3:], atol=1e-9)
    assert rotation_angle(composed[:, :3], p02[:, :3]).max() < 1e-4
    assert torch.allclose(denormalize_pose(normalize_pose(p01)), p01)


def test_egomotion_head_output_is_cycle_consistent() -> None:
    head = EgomotionCycleHead(32, (16, 16)).eval()
    out = head(torch.randn(4, 3, 8, 2, 2))
    assert out.shape == (4, 18)
    p01, p02, p12 = (denormalize_pose(x) for x in out.reshape(4, 3, 6).unbind(1))
    assert torch.allclose(compose_poses(p01, p12), p02, atol=1e-4)


def _free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


#: One rank of a 2-process gloo group: clip its half of a saved batch, synchronized.
_CLIP_RANK = """
import sys, torch, torch.distributed as dist
from taskonomy.tasks.networks.readout import clip_to_batch_sigma
rank, address, folder = int(sys.argv[1]), sys.argv[2], sys.argv[3]
dist.init_process_group("gloo", init_method=address, rank=rank, world_size=2)
batch = torch.load(f"{folder}/batch.pt")
half = batch[rank * 4:(rank + 1) * 4]
torch.save(clip_to_batch_sigma(half, 1.0, synchronized=True), f"{folder}/out{rank}.pt")
dist.destroy_process_group()
"""


def test_synchronized_clip_takes_the_moments_of_every_ranks_batch(tmp_path: Path) -> None:
    # With batch norm synchronized over GPUs, the readout's clip sees the step's whole batch.
    import subprocess
    import sys

    batch = torch.randn(8, 3, 2, 2)
    batch[4:] += 3.0  # the second rank's half is shifted: its own moments would differ
    torch.save(batch, tmp_path / "batch.pt")
    address = f"tcp://127.0.0.1:{_free_port()}"
    ranks = [subprocess.Popen([sys.executable, "-c", _CLIP_RANK, str(rank), address,
                               str(tmp_path)]) for rank in (0, 1)]
    assert [rank.wait(timeout=120) for rank in ranks] == [0, 0]
    out = torch.cat([torch.load(tmp_path / f"out{rank}.pt") for rank in (0, 1)])
    assert torch.allclose(out, clip_to_batch_sigma(batch, 1.0), atol=1e-5)
    halves = torch.cat([clip_to_batch_sigma(batch[:4], 1.0), clip_to_batch_sigma(batch[4:], 1.0)])
    assert not torch.allclose(out, halves, atol=1e-3)


def test_readout_shapes_and_training_time_clipping() -> None:
    readout = TransferReadout(in_channels=16)
    x = torch.randn(8, 16, 2, 2)
    assert readout(x).shape == (8, 16, 2, 2)
    assert readout.out_channels == 16
    x[0, 0, 0, 0] = 1e6
    bounded = clip_to_batch_sigma(x, 5.0)
    mean, std = x[:, 0].mean(), x[:, 0].std(unbiased=False)
    assert bounded[0, 0, 0, 0] <= mean + 5 * std + 1e-3
    assert bounded[0, 0, 0, 0] < 1e6
    assert torch.equal(bounded[:, 1:], x[:, 1:])  # other channels untouched
    assert torch.equal(bounded[1:, 0], x[1:, 0])  # inliers untouched
    with pytest.raises(ValueError, match="B×16"):
        readout(torch.randn(2, 8, 2, 2))
    low = x.clone()
    low[0, 0, 0, 0] = -1e6  # clipped from below too
    mean, std = low[:, 0].mean(), low[:, 0].std(unbiased=False)
    assert clip_to_batch_sigma(low, 5.0)[0, 0, 0, 0] >= mean - 5 * std - 1e-3


def test_the_readout_clips_while_training_only_and_normalizes_its_input_and_output() -> None:
    torch.manual_seed(0)
    readout = TransferReadout(in_channels=8)
    unclipped = TransferReadout(in_channels=8, clip_sigmas=None)
    unclipped.load_state_dict(readout.state_dict())
    x = torch.randn(16, 8, 4, 4)
    x[0, 0, 0, 0] = 1e4  # an outlier
    readout.eval(), unclipped.eval()
    with torch.no_grad():
        assert torch.equal(readout(x), unclipped(x))  # no clip at evaluation
        readout.train(), unclipped.train()
        assert not torch.allclose(readout(x), unclipped(x))
        # Training mode: batch norm first, so a per-channel affine change of the input does
        # not change the output, and the output channels are standardized.
        inliers = torch.randn(16, 8, 4, 4)
        scale, shift = torch.rand(1, 8, 1, 1) + 0.5, torch.randn(1, 8, 1, 1)
        out = readout(inliers)
        assert torch.allclose(readout(inliers * scale + shift), out, atol=1e-4)
        assert torch.allclose(out.mean(dim=(0, 2, 3)), torch.zeros(16), atol=1e-4)
        assert torch.allclose(out.var(dim=(0, 2, 3), unbiased=False), torch.ones(16), atol=1e-2)


def test_discriminator_gives_4x4_logits_at_256() -> None:
    disc = Pix2PixDiscriminator(3 + 1, width=0.125).eval()
    with torch.no_grad():
        logits = disc(torch.randn(1, 3, 256, 256), torch.randn(1, 1, 256, 256))
    assert logits.shape == (1, 1, 4, 4)
    small = disc(torch.randn(2, 3, 32, 32), torch.randn(2, 1, 32, 32))
    assert small.shape == (2, 1, math.ceil(32 / 64), math.ceil(32 / 64))


def test_bf16_autocast_forward_on_cpu() -> None:
    encoder, decoder = build_encoder("resnet10_tiny"), DenseDecoder(8, 3, width=0.125)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        hidden = encoder(torch.randn(2, 3, 32, 32))
        out = decoder(hidden)
    assert hidden.dtype == torch.bfloat16  # the network runs in bf16 ...
    assert out.dtype == torch.float32  # ... but for its output layer (precision of depth)
    assert torch.isfinite(out).all()


def _fit_small_spread_targets(rescale: bool, seed: int) -> tuple[float, float]:
    """Train an FC head on targets that spread by 0.03–0.3 (like unit vectors); (MSE, variance)."""
    torch.manual_seed(seed)
    x = torch.randn(256, 32)
    mean, std = torch.tensor([0.6, 0.98, 0.0]), torch.tensor([0.3, 0.03, 0.2])
    y = mean + std * (x @ (torch.randn(32, 3) / 32**0.5))
    statistics = {"output_mean": mean.tolist(), "output_std": std.tolist()} if rescale else {}
    head = FCHead(32, (64,), 3, dropout=0.0, **statistics)
    optimizer = torch.optim.Adam(head.parameters(), lr=3e-3)
    for _ in range(300):
        index = torch.randint(256, (8,))
        loss = ((head(x[index]) - y[index]) ** 2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    head.eval()
    with torch.no_grad():
        return float(((head(x) - y) ** 2).mean()), float(y.var(0, unbiased=False).mean())


@pytest.mark.parametrize("seed", [0, 1])
def test_rescaled_fc_head_learns_small_spread_targets(seed: int) -> None:
    plain, variance = _fit_small_spread_targets(rescale=False, seed=seed)
    rescaled, _ = _fit_small_spread_targets(rescale=True, seed=seed)
    assert rescaled < 0.1 * variance  # explains most of the targets' variance
    assert rescaled < 0.5 * plain  # Adam's fixed-size steps hurt the unscaled head


def test_fc_head_rescaling_is_an_output_affine_outside_the_checkpoint() -> None:
    torch.manual_seed(0)
    mean, std = [0.5, -1.0, 2.0], [0.1, 0.2, 3.0]
    plain = FCHead(32, (16,), 3)
    rescaled = FCHead(32, (16,), 3, output_mean=mean, output_std=std)
    assert set(rescaled.state_dict()) == set(plain.state_dict())  # old checkpoints still load
    rescaled.load_state_dict(plain.state_dict())
    plain.eval()
    rescaled.eval()
    x = torch.randn(4, 8, 2, 2)
    expected = plain(x) * torch.tensor(std) + torch.tensor(mean)
    assert torch.allclose(rescaled(x), expected, atol=1e-6)
    # The last layer starts near zero, so a fresh head predicts about the given mean.
    fresh = FCHead(32, (16,), 3, output_mean=mean, output_std=std).eval()
    assert torch.allclose(fresh(x), torch.tensor(mean).expand(4, 3), atol=0.2)
    with pytest.raises(ValueError, match="output_std has 2 values"):
        FCHead(32, (16,), 3, output_std=[1.0, 1.0])
    with pytest.raises(ValueError, match="must be positive"):
        FCHead(32, (16,), 3, output_std=[1.0, 0.0, 1.0])


def test_low_dim_heads_rescale_vanishing_points_only() -> None:
    from taskonomy.datamodules.encodings import VANISHING_POINT_MEAN, VANISHING_POINT_STD
    from taskonomy.tasks.build import build_task

    vanishing = build_task("vanishing_point", encoder="resnet10_tiny", resolution=32,
                           head_width=0.01)
    assert vanishing.head.rescaled
    assert np.allclose(vanishing.head.output_mean.numpy(), VANISHING_POINT_MEAN)
    assert np.allclose(vanishing.head.output_std.numpy(), VANISHING_POINT_STD)
    layout = build_task("room_layout", encoder="resnet10_tiny", resolution=32, head_width=0.01)
    assert not layout.head.rescaled  # its encoding is already z-scored


@pytest.mark.parametrize("network", [TransferReadout(in_channels=16), PixelsEncoder(32)])
def test_readout_and_pixels_batch_norms_keep_the_transfer_prototypes_decay(network) -> None:
    # The authors' transfer prototype: batch_norm_decay 0.8 for every BN of the readout and of the
    # pixels network, so one training batch moves a running mean a fifth of the way.
    norms = [m for m in network.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert len(norms) >= 3
    first = norms[0]
    network.train()
    first(torch.full((4, first.num_features, 2, 2), 10.0))
    assert torch.allclose(first.running_mean, torch.full_like(first.running_mean, 2.0))
    assert all(m.momentum == pytest.approx(0.2) for m in norms)


def test_encoder_stem_pools_like_tf_same_padding() -> None:
    # TF SAME pads a 3×3/2 pool on an even map only at the bottom and right.
    encoder = build_encoder("resnet10_tiny")
    pool = encoder.stem[-1]
    x = torch.randn(2, 4, 16, 16)
    tf_same = torch.nn.functional.max_pool2d(
        torch.nn.functional.pad(x, (0, 1, 0, 1), value=float("-inf")), 3, stride=2
    )
    assert torch.equal(pool(x), tf_same)


def test_encoder_convs_start_from_tf_slims_truncated_fan_in_scaling() -> None:
    encoder = build_encoder("resnet50")
    convs = [m for m in encoder.modules() if isinstance(m, torch.nn.Conv2d)]
    for conv in convs:
        fan_in = conv.weight[0].numel()
        bound = 2 * math.sqrt(2.6 / fan_in)  # truncated at 2σ, σ = sqrt(1.3·2/fan_in)
        assert conv.weight.abs().max() <= bound + 1e-6
    widest = max(convs, key=lambda conv: conv.weight.numel())
    # A 2σ-truncated normal keeps 0.88σ of its spread: sqrt(2/fan_in), He's fan-in scaling.
    expected = math.sqrt(2.0 / widest.weight[0].numel())
    assert widest.weight.std().item() == pytest.approx(expected, rel=0.05)


def test_discriminator_starts_from_slims_glorot_uniform_init() -> None:
    discriminator = Pix2PixDiscriminator(4)
    for conv in (m for m in discriminator.modules() if isinstance(m, torch.nn.Conv2d)):
        fan_in = conv.weight[0].numel()
        fan_out = conv.weight.shape[0] * conv.weight[0, 0].numel()
        bound = math.sqrt(6.0 / (fan_in + fan_out))
        assert conv.weight.abs().max() <= bound
        assert conv.weight.abs().max() > 0.9 * bound
        assert conv.bias is None or not conv.bias.any()
