"""The best constant prediction of a task: the floor a trained task network must beat.

A network whose test loss is no lower than a constant's learned nothing its transfers could
read. :func:`constant_baseline` fits one value per output channel with the task's own loss on
the training split and scores it on the test split, per image, like a run record's losses.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch

from taskonomy.datamodules.datamodule import TaskonomyDataModule
from taskonomy.tasks.families.base import TaskModule

#: Closed output ranges of the output activations a task network may end with.
ACTIVATION_RANGES: dict[type[torch.nn.Module], tuple[float, float] | None] = {
    torch.nn.Identity: None,
    torch.nn.Tanh: (-1.0, 1.0),
    torch.nn.Sigmoid: (0.0, 1.0),
}


def output_range(activation: torch.nn.Module) -> tuple[float, float] | None:
    """The closed range of values an output activation can produce (``None``: unbounded).

    Raises:
        ValueError: an activation without a known range.
    """
    for kind, bounds in ACTIVATION_RANGES.items():
        if type(activation) is kind:
            return bounds
    raise ValueError(
        f"no known output range for {type(activation).__name__}; add it to ACTIVATION_RANGES"
    )


class ConstantPredictor(torch.nn.Module):
    """One learnable value per output channel, broadcast to the task's output shape.

    With ``bounds`` (the range of the task network's output activation, see
    :meth:`TaskModule.output_activation` and :func:`output_range`) the values are projected into
    that range after every optimizer step (:meth:`project`), so the baseline is the best constant
    *the network could output*. Without it the comparison is unfair wherever the output is
    bounded: semantic segmentation's logits are tanh-bounded as the paper's, so the network's
    cross-entropy cannot fall below ``log(1 + 16·e⁻²) ≈ 1.15`` on a background pixel while an
    unbounded constant's reaches the label entropy (≈ 0.4 on synthetic scenes). Where the best
    unbounded constant lies inside the range (every L1/L2 task: the median or mean of targets,
    inside [-1, 1]; linear outputs) the projection changes nothing, so no other baseline gets
    looser. The values live in output space rather than behind a tanh because Adam stalls on
    the tanh's vanishing gradient short of the bound (its second-moment memory of the early,
    large gradients shrinks the steps).

    Args:
        shape: The task's output shape for one image (channels first).
        bounds: The output activation's range (``None``: unbounded).
    """

    def __init__(self, shape: Sequence[int], bounds: tuple[float, float] | None = None) -> None:
        super().__init__()
        self.shape = tuple(shape)
        self.bounds = bounds
        self.value = torch.nn.Parameter(torch.zeros(self.shape[0]))

    @torch.no_grad()
    def project(self) -> None:
        """Clamp the values into ``bounds`` (call after each optimizer step)."""
        if self.bounds is not None:
            self.value.clamp_(*self.bounds)

    def forward(self, batch_size: int) -> torch.Tensor:
        """The constant prediction for a batch."""
        view = self.value.view(1, -1, *([1] * (len(self.shape) - 1)))
        return view.expand(batch_size, *self.shape)


def _training_batches(datamodule: TaskonomyDataModule, count: int) -> Iterator[dict[str, Any]]:
    """``count`` training batches, passing over the split again as often as needed.

    Streamed rather than held: a large split at 64 px with 313-bin colour targets would take
    gigabytes.
    """
    datamodule.setup("fit")
    produced = 0
    while produced < count:
        for batch in datamodule.train_dataloader():
            yield batch
            produced += 1
            if produced == count:
                return
        if produced == 0:
            raise ValueError(f"no training batches under {datamodule.root}")


def constant_baseline(module: TaskModule, root: str | Path, resolution: int,
                      batch_size: int = 16, steps: int = 400, lr: float = 0.1
                      ) -> dict[str, float]:
    """Per-image test losses of the best constant prediction of ``module``'s task.

    The constant (kept inside the range of the network's output activation, see
    :class:`ConstantPredictor`) is fitted with Adam (cosine-decayed learning rate) on the training
    batches, using ``module.compute_loss``, and scored on the test split with the same loss
    (``reduction="none"``), keyed by sample key.

    Args:
        module: The task network whose loss (class weights included) and output range count;
            build it from the run's own model config so the constant meets the same loss.
        root: The shards folder.
        resolution: Image side of the run.
        batch_size: Training batch size of the fit.
        steps: Adam steps of the fit.
        lr: Initial Adam learning rate.
    """
    task = module.spec.name
    datamodule = TaskonomyDataModule(root, tasks=[task], resolution=resolution,
                                     batch_size=batch_size, num_workers=0, seed=0)
    constant = ConstantPredictor(module.spec.output_shape(resolution),
                                 output_range(module.output_activation()))
    optimizer = torch.optim.Adam(constant.parameters(), lr=lr)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps)
    module.eval()
    for batch in _training_batches(datamodule, steps):
        prediction = constant(len(batch["__key__"]))
        loss = module.compute_loss(prediction, batch[task], "mean", keys=batch["__key__"])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        constant.project()
        schedule.step()
    losses: dict[str, float] = {}
    datamodule.setup("test")
    with torch.no_grad():
        for batch in datamodule.test_dataloader():
            keys = batch["__key__"]
            per_image = module.compute_loss(constant(len(keys)), batch[task], "none", keys=keys)
            losses.update(zip(keys, per_image.float().tolist(), strict=True))
    return losses
