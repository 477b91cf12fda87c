"""Relative camera poses as the authors encode them, in differentiable torch.

A relative pose from view 1 to view 2 is 6 numbers: the rotation ``R_rel = R2ᵀ·R1`` as a static-axes
``sxyz`` Euler triple (``R = Rz(γ)·Ry(β)·Rx(α)``), then the translation ``t = R2ᵀ·(c1 − c2)``.
Training targets are z-scored with the authors' fixed statistics (fixated and non-fixated sets).
Composition follows from the definitions: ``R02 = R12·R01`` and ``t02 = R12·t01 + t12``.
"""

from __future__ import annotations

import torch

#: z-score statistics of fixated relative poses ([euler(3), translation(3)], the authors' values).
FIXATED_POSE_MEAN = (
    -2.67375523e-01,
    -1.19147040e-02,
    1.14497274e-02,
    1.10903410e-03,
    2.10509948e-02,
    -4.02013549e00,
)
FIXATED_POSE_STD = (10.12015407, 8.1103528, 1.09171896, 1.21579016, 0.26040945, 10.05966329)
#: z-score statistics of non-fixated relative poses.
NONFIXATED_POSE_MEAN = (
    -9.53197445e-03,
    -1.05196691e-03,
    -1.07545642e-02,
    2.08785638e-02,
    -9.27858049e-02,
    -2.58052205e00,
)
NONFIXATED_POSE_STD = (1.02316223, 0.66477511, 1.03806996, 5.75692889, 1.37604962, 7.43157247)


def pose_statistics(fixated: bool) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """(mean, std) of the 6-d pose encoding for fixated or non-fixated pairs."""
    if fixated:
        return FIXATED_POSE_MEAN, FIXATED_POSE_STD
    return NONFIXATED_POSE_MEAN, NONFIXATED_POSE_STD


def euler_to_matrix(euler: torch.Tensor) -> torch.Tensor:
    """``…×3`` static ``sxyz`` Euler angles (radians) → ``…×3×3`` rotation matrices."""
    a, b, g = euler.unbind(-1)
    ca, sa, cb, sb, cg, sg = a.cos(), a.sin(), b.cos(), b.sin(), g.cos(), g.sin()
    rows = (
        (cg * cb, cg * sb * sa - sg * ca, cg * sb * ca + sg * sa),
        (sg * cb, sg * sb * sa + cg * ca, sg * sb * ca - cg * sa),
        (-sb, cb * sa, cb * ca),
    )
    return torch.stack([torch.stack(r, dim=-1) for r in rows], dim=-2)


def matrix_to_euler(rotation: torch.Tensor) -> torch.Tensor:
    """``…×3×3`` rotation matrices → ``…×3`` static ``sxyz`` Euler angles (radians)."""
    r = rotation
    cy = torch.sqrt(r[..., 0, 0] ** 2 + r[..., 1, 0] ** 2 + 1e-12)
    alpha = torch.atan2(r[..., 2, 1], r[..., 2, 2])
    beta = torch.atan2(-r[..., 2, 0], cy)
    gamma = torch.atan2(r[..., 1, 0], r[..., 0, 0])
    return torch.stack((alpha, beta, gamma), dim=-1)


def normalize_pose(pose: torch.Tensor, fixated: bool = True) -> torch.Tensor:
    """Metric ``…×6`` pose → z-scored training encoding."""
    mean, std = (pose.new_tensor(s) for s in pose_statistics(fixated))
    return (pose - mean) / std


def denormalize_pose(encoded: torch.Tensor, fixated: bool = True) -> torch.Tensor:
    """z-scored ``…×6`` pose → metric pose (radians, scene units)."""
    mean, std = (encoded.new_tensor(s) for s in pose_statistics(fixated))
    return encoded * std + mean


def compose_poses(pose01: torch.Tensor, pose12: torch.Tensor) -> torch.Tensor:
    """Compose metric relative poses 0→1 and 1→2 into 0→2 (all ``…×6``)."""
    r01 = euler_to_matrix(pose01[..., :3])
    r12 = euler_to_matrix(pose12[..., :3])
    r02 = r12 @ r01
    t02 = (r12 @ pose01[..., 3:].unsqueeze(-1)).squeeze(-1) + pose12[..., 3:]
    return torch.cat((matrix_to_euler(r02), t02), dim=-1)


def rotation_angle(euler_a: torch.Tensor, euler_b: torch.Tensor) -> torch.Tensor:
    """Geodesic angle (degrees) between the rotations of two ``…×3`` Euler triples."""
    rel = euler_to_matrix(euler_a).transpose(-1, -2) @ euler_to_matrix(euler_b)
    trace = rel.diagonal(dim1=-2, dim2=-1).sum(-1)
    cos = ((trace - 1) / 2).clamp(-1.0, 1.0)
    return torch.rad2deg(torch.acos(cos))
