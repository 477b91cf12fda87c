"""The step-decay schedule: steps, fractions of the run, and the drop in a real Trainer fit."""

import math
import warnings

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader

from taskonomy.tasks.build import build_task
from taskonomy.tasks.schedules import check_milestone, milestone_step
from taskonomy.tasks.testing import fake_batch
from taskonomy.tasks.transfer import TransferTask

TINY = {"encoder": "resnet10_tiny", "resolution": 32, "decoder_width": 0.125, "head_width": 0.125}


def test_a_step_stays_and_a_fraction_scales_with_the_run() -> None:
    assert milestone_step(5_000, math.inf) == 5_000
    assert milestone_step(0.67, 1200) == 804
    assert milestone_step(0.5, 9) == 4  # rounds half to even, never step 0
    assert milestone_step(0.01, 3) == 1
    assert milestone_step(None, 100) is None
    assert milestone_step(0, 100) is None


@pytest.mark.parametrize("bad", [1.0, 1.5, -0.2, -3, True])
def test_a_bad_milestone_names_both_forms(bad: object) -> None:
    with pytest.raises(ValueError, match="lr_milestone"):
        check_milestone(bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="lr_milestone"):
        build_task("normal", **TINY, lr_milestone=bad)


def test_a_fraction_needs_a_bounded_run() -> None:
    with pytest.raises(ValueError, match="trainer.max_steps or trainer.max_epochs"):
        milestone_step(0.5, math.inf)
    with pytest.raises(ValueError, match="under a Lightning Trainer"):
        build_task("normal", **TINY, lr_milestone=0.5).configure_optimizers()


class _LearningRates(L.Callback):
    def __init__(self) -> None:
        self.seen: list[float] = []

    def on_train_batch_start(self, trainer: L.Trainer, *args: object) -> None:
        self.seen.append(trainer.optimizers[0].param_groups[0]["lr"])


@pytest.mark.parametrize("bound", [{"max_steps": 6}, {"max_epochs": 2, "max_steps": -1}])
def test_a_fractional_milestone_drops_the_lr_two_thirds_into_a_fit(bound: dict[str, int]) -> None:
    torch.set_num_threads(1)
    model = build_task("depth_zbuffer", **TINY, lr=1e-3, lr_milestone=0.67)
    batches = [fake_batch(model.spec, 2, 32, seed=i) for i in range(3)]
    rates = _LearningRates()
    trainer = L.Trainer(accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False,
                        callbacks=[rates], **bound)  # type: ignore[arg-type]
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", ".*does not have many workers.*")
        trainer.fit(model, DataLoader(batches, batch_size=None))  # 3 steps an epoch
    assert rates.seen == pytest.approx([1e-3] * 4 + [1e-4] * 2)  # round(0.67 × 6) = 4


def test_transfers_accept_a_fractional_milestone_and_reject_a_bad_one() -> None:
    assert TransferTask("normal", kind="pixels", **TINY, lr_milestone=0.67).hparams[
        "lr_milestone"] == 0.67
    with pytest.raises(ValueError, match="outside \\(0, 1\\)"):
        TransferTask("normal", kind="pixels", **TINY, lr_milestone=2.5)
