"""The step-decay learning-rate schedule of task and transfer networks.

The paper drops Adam's learning rate once, by ``lr_gamma``, at a fixed step (80,000 for task
networks, 5,000 for transfers). Short CPU runs give the milestone as a fraction of the run
instead, so that changing ``trainer.max_steps`` or ``max_epochs`` moves the drop with it.
"""

from __future__ import annotations

import math
from collections.abc import Callable
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


def run_steps(trainer: Any) -> float:
    """The optimizer steps of the trainer's run (Lightning's ``estimated_stepping_batches``).

    Reading it may load the training data's length.

    Raises:
        ValueError: Outside a Lightning Trainer.
    """
    if trainer is None:
        raise ValueError("lr_milestone is a fraction of the run: configure the optimizers under "
                         "a Lightning Trainer, or give the milestone as a step")
    return float(trainer.estimated_stepping_batches)


def step_decay(optimizer: torch.optim.Optimizer, milestone: Milestone, gamma: float,
               total_steps: Callable[[], float]) -> dict[str, Any] | None:
    """Lightning's scheduler config of a one-step drop by ``gamma`` (``None``: constant LR).

    The factor is computed from the milestone at every step and is not part of the scheduler's
    saved state: a run resumed with another length (``trainer.max_steps``) drops where a fresh
    run of that length would, even when that step has passed (``MultiStepLR`` restored the old
    milestone from the checkpoint).

    Args:
        optimizer: The optimizer whose learning rate drops.
        milestone: A step or a fraction of the run (:func:`milestone_step`).
        gamma: Factor of the drop.
        total_steps: The scheduler's steps in the run (called for a fractional milestone only,
            e.g. :func:`run_steps`).
    """
    step = milestone_step(milestone, total_steps() if isinstance(milestone, float) else math.inf)
    if step is None:
        return None

    def factor(done: int) -> float:  # a closure, so the scheduler does not save the milestone
        return gamma if done >= step else 1.0

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
    return {"scheduler": scheduler, "interval": "step"}


def upgrade_scheduler_states(checkpoint: dict[str, Any]) -> None:
    """Let a checkpoint saved under the former ``MultiStepLR`` resume with :func:`step_decay`.

    Call from ``on_load_checkpoint`` (before Lightning restores the schedulers): the step count
    and base rates carry over, the saved milestone is dropped for the config's.
    """
    for state in checkpoint.get("lr_schedulers") or []:
        if isinstance(state, dict) and "milestones" in state and "lr_lambdas" not in state:
            state.pop("milestones")
            state.pop("gamma", None)
            state["lr_lambdas"] = [None] * len(state.get("base_lrs", []))


def resync_learning_rates(schedulers: Any) -> None:
    """Set each step-decay scheduler's rates for its current step.

    Call from ``on_train_start``: a resumed run's optimizer state carries the rate of the
    schedule it was saved under, which the config's milestone may have moved.

    Args:
        schedulers: ``LightningModule.lr_schedulers()``: one scheduler, a list, or ``None``.
    """
    found = schedulers if isinstance(schedulers, list) else [schedulers]
    for scheduler in found:
        if isinstance(scheduler, torch.optim.lr_scheduler.LambdaLR):
            rates = [base * factor(scheduler.last_epoch)
                     for base, factor in zip(scheduler.base_lrs, scheduler.lr_lambdas, strict=True)]
            for group, rate in zip(scheduler.optimizer.param_groups, rates, strict=True):
                group["lr"] = rate
            scheduler._last_lr = rates  # what get_last_lr() reports
