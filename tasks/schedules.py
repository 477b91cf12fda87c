"""The step-decay learning-rate schedule of task and transfer networks.

The paper drops Adam's learning rate once, by ``lr_gamma``, at a fixed step (80,000 for task
networks, 5,000 for transfers). Short CPU runs give the milestone as a fraction of the run
instead, so that changing ``trainer.max_steps`` or ``max_epochs`` moves the drop with it.
"""

from __future__ import annotations

import math
from typing import Any

import torch

#: A milestone: an optimizer step (``int``), a fraction of the run's steps (``float`` in (0, 1)),
#: or ``None`` for a constant learning rate.
Milestone = int | float | None


def check_milestone(milestone: Milestone) -> None:
    """Reject a milestone that is neither a positive step nor a fraction in (0, 1).

    Raises:
        ValueError: Naming the value and the two accepted forms.
    """
    if isinstance(milestone, bool):
        raise ValueError(f"lr_milestone must be a step or a fraction, got {milestone!r}")
    if milestone is None:
        return
    if isinstance(milestone, int):
        if milestone < 0:
            raise ValueError(f"lr_milestone must be a positive step, got {milestone}; use null "
                             "for a constant learning rate")
        return
    if not 0.0 < milestone < 1.0:
        raise ValueError(f"lr_milestone {milestone!r} is a float outside (0, 1): give an "
                         "optimizer step as an integer (e.g. 5000) or a fraction of the run's "
                         "steps (e.g. 0.67)")


def milestone_step(milestone: Milestone, total_steps: float) -> int | None:
    """The optimizer step of the drop (``None``: no drop).

    Args:
        milestone: A step, a fraction of ``total_steps``, ``None`` or ``0`` (no drop).
        total_steps: The run's optimizer steps (Lightning's ``estimated_stepping_batches``).

    Raises:
        ValueError: A fractional milestone in a run without a step or epoch bound.
    """
    check_milestone(milestone)
    if not milestone:
        return None
    if isinstance(milestone, int):
        return milestone
    if not math.isfinite(total_steps):
        raise ValueError(f"lr_milestone={milestone} is a fraction of the run, but the run has no "
                         "bound: set trainer.max_steps or trainer.max_epochs, or give the "
                         "milestone as a step")
    return max(1, round(milestone * total_steps))


def step_decay(optimizer: torch.optim.Optimizer, milestone: Milestone, gamma: float,
               trainer: Any) -> dict[str, Any] | None:
    """Lightning's scheduler config of a one-step drop by ``gamma`` (``None``: constant LR).

    Args:
        optimizer: The optimizer whose learning rate drops.
        milestone: A step or a fraction of the run (:func:`milestone_step`).
        gamma: Factor of the drop.
        trainer: The Lightning trainer (``None`` outside one); a fractional milestone reads its
            ``estimated_stepping_batches`` (which may load the training data's length).
    """
    total = math.inf
    if isinstance(milestone, float):
        if trainer is None:
            raise ValueError(f"lr_milestone={milestone} is a fraction of the run: configure the "
                             "optimizers under a Lightning Trainer, or give the milestone as a "
                             "step")
        total = float(trainer.estimated_stepping_batches)
    step = milestone_step(milestone, total)
    if step is None:
        return None
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=[step], gamma=gamma)
    return {"scheduler": scheduler, "interval": "step"}
