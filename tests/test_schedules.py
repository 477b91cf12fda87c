"""The step-decay schedule: steps, fractions of the run, and the drop in a real Trainer fit."""

import math
import warnings
from pathlib import Path
from types import SimpleNamespace

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader

from taskonomy.tasks.build import build_task
from taskonomy.tasks.schedules import (
    check_milestone,
    milestone_step,
    step_decay,
    upgrade_scheduler_states,
)
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


@pytest.mark.parametrize("bad", [1.0, 1.5, -0.2, -1, -3, True])
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


def _fit(model: L.LightningModule, rates: _LearningRates, max_steps: int,
         ckpt_path: Path | None = None) -> L.Trainer:
    batches = [fake_batch(model.spec, 2, 32, seed=i) for i in range(3)]  # type: ignore[arg-type]
    trainer = L.Trainer(accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False,
                        callbacks=[rates], max_steps=max_steps)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", ".*does not have many workers.*")
        trainer.fit(model, DataLoader(batches, batch_size=None), ckpt_path=ckpt_path)
    return trainer


def test_a_run_resumed_with_more_steps_drops_where_a_fresh_run_of_that_length_would(
        tmp_path: Path) -> None:
    torch.set_num_threads(1)
    rates = _LearningRates()
    first = _fit(build_task("depth_zbuffer", **TINY, lr=1e-3, lr_milestone=0.67), rates, 6)
    assert rates.seen == pytest.approx([1e-3] * 4 + [1e-4] * 2)
    first.save_checkpoint(tmp_path / "six.ckpt")
    longer = _LearningRates()
    _fit(build_task("depth_zbuffer", **TINY, lr=1e-3, lr_milestone=0.67), longer, 12,
         ckpt_path=tmp_path / "six.ckpt")
    # round(0.67 × 12) = 8: steps 6 and 7 at the first rate again, not the milestone saved at 4
    assert longer.seen == pytest.approx([1e-3] * 2 + [1e-4] * 4)


def test_a_run_resumed_past_its_new_milestone_starts_at_the_dropped_rate(
        tmp_path: Path) -> None:
    torch.set_num_threads(1)
    first = _fit(build_task("depth_zbuffer", **TINY, lr=1e-3, lr_milestone=0.67),
                 _LearningRates(), 6)
    first.save_checkpoint(tmp_path / "six.ckpt")
    resumed = _LearningRates()
    _fit(build_task("depth_zbuffer", **TINY, lr=1e-3, lr_milestone=0.5), resumed, 8,
         ckpt_path=tmp_path / "six.ckpt")
    assert resumed.seen == pytest.approx([1e-4, 1e-4])  # round(0.5 × 8) = 4 is behind it


def test_checkpoints_of_the_former_multistep_scheduler_resume() -> None:
    parameter = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.Adam([parameter], lr=1e-3)
    old = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=[4], gamma=0.1)
    for _ in range(3):
        optimizer.step()
        old.step()
    checkpoint = {"lr_schedulers": [old.state_dict()]}
    upgrade_scheduler_states(checkpoint)
    config = step_decay(optimizer, 5, 0.1, lambda: math.inf)
    assert config is not None
    scheduler = config["scheduler"]
    scheduler.load_state_dict(checkpoint["lr_schedulers"][0])
    assert scheduler.last_epoch == 3
    scheduler.step()
    scheduler.step()
    assert scheduler.get_last_lr() == pytest.approx([1e-4])  # at step 5, the config's milestone


def test_a_gan_run_counts_its_milestone_in_optimizer_steps() -> None:
    # As the authors' global step: two optimizer steps per batch once the discriminator trains.
    gan = build_task("depth_zbuffer", **TINY, gan=True, gan_warmup_steps=100, lr_milestone=0.67)
    plain = build_task("depth_zbuffer", **TINY, lr_milestone=0.67)
    for model in (gan, plain):
        model._trainer = SimpleNamespace(  # type: ignore[assignment]
            estimated_stepping_batches=400, max_steps=400)
    assert gan._scheduler_steps() == 400 == plain._scheduler_steps()
    # bounded by epochs, Lightning's estimate counts batches: 100 warm-up + 20 batches of two
    gan._trainer = SimpleNamespace(  # type: ignore[assignment]
        estimated_stepping_batches=120, max_steps=-1)
    assert gan._scheduler_steps() == 140
    gan._trainer = SimpleNamespace(  # type: ignore[assignment]
        estimated_stepping_batches=120, max_steps=400)  # the epochs end it first
    assert gan._scheduler_steps() == 140
    gan._trainer = SimpleNamespace(  # type: ignore[assignment]
        estimated_stepping_batches=120, max_steps=130)  # the steps end it first
    assert gan._scheduler_steps() == 130
