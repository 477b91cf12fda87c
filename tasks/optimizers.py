"""The optimizers of task networks and transfers: Adam with L2 on weights, fused where safe."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


def l2_on_weights(params: list[nn.Parameter], decay: float) -> list[dict[str, Any]]:
    """Parameter groups with weight decay on weights only (not on BN parameters or biases).

    As slim's regularizers: Adam's coupled ``weight_decay`` adds wd·w to the gradient, the
    gradient of wd·‖w‖²/2.
    """
    return [
        {"params": [p for p in params if p.ndim > 1], "weight_decay": decay},
        {"params": [p for p in params if p.ndim <= 1], "weight_decay": 0.0},
    ]


def fused_adam_is_safe(trainer: Any, params: list[nn.Parameter]) -> bool:
    """Whether fused Adam may update ``params`` under ``trainer``'s precision.

    Fused Adam unscales gradients inside ``step``, so under 16-bit AMP (a GradScaler) the
    gradients would be clipped while still scaled; devices other than CPU and CUDA have no
    fused kernel.
    """
    precision = str(getattr(trainer, "precision", "32-true")) if trainer is not None else ""
    devices = {p.device.type for p in params}
    return not precision.startswith("16") and devices <= {"cpu", "cuda"}


def adam(params: list[nn.Parameter], lr: float, weight_decay: float,
         trainer: Any) -> torch.optim.Adam:
    """Adam with L2 on weights (:func:`l2_on_weights`): fused where safe, else multi-tensor.

    The default CPU Adam loops over parameters in Python: about 4 ms of a 20 ms task-network
    step at the CPU setting, and 14 ms of a 70 ms transfer step with a dense head (fused:
    3 ms).
    """
    fused = fused_adam_is_safe(trainer, params)
    return torch.optim.Adam(l2_on_weights(params, weight_decay), lr=lr, fused=fused or None,
                            foreach=None if fused else True)
