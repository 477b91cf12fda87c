"""Short CPU training runs beat the best constant prediction on synthetic test images (slow).

The runner is ``benchmarks/task_quality.py`` (which prints the table for all 26 tasks); this
test asserts it for a few representative tasks.
"""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path
from types import ModuleType

import pytest
import torch

from taskonomy.tasks.constant_baseline import ConstantPredictor, output_range
from taskonomy.tasks.registry import all_specs


@pytest.fixture(autouse=True)
def _one_thread():
    """One torch thread: on a shared 2-core machine OpenMP spin-waits make 2 threads far slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


BENCHMARK = Path(__file__).resolve().parents[1] / "benchmarks" / "task_quality.py"


def _runner() -> ModuleType:
    spec = importlib.util.spec_from_file_location("task_quality", BENCHMARK)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def quality() -> ModuleType:
    return _runner()


@pytest.fixture(scope="module")
def synthetic_shards(quality: ModuleType, tmp_path_factory: pytest.TempPathFactory) -> Path:
    # The runner's default data (32 buildings at 64 px, about 15 s to render): with 8 buildings
    # (60 training views) the depth tasks sat at the constant's loss.
    return quality.make_synthetic_shards(tmp_path_factory.mktemp("quality"))


@pytest.mark.slow
@pytest.mark.parametrize("task", ["normal", "edge_texture", "denoising", "segment_unsup25d"])
def test_short_training_beats_the_constant_predictor(task: str, quality: ModuleType,
                                                     synthetic_shards: Path,
                                                     tmp_path: Path) -> None:
    # One task per kind of target that passes in the runner's table at this setting (the table
    # in benchmarks/task_quality.py's docstring): geometry, texture edges, images, embeddings.
    row = quality.compare(task, synthetic_shards, tmp_path / "runs", steps=600, resolution=64,
                          precision="32-true", batch_size=8, margin=0.05)
    assert row["constant_loss"] > 0
    assert row["network_loss"] < 0.95 * row["constant_loss"], row
    assert row["wins"] > 0.5, row


def test_constant_predictor_fits_the_loss_minimizer() -> None:
    # For an L1 loss the best constant is the median; for MSE the mean.
    from taskonomy.experiments.train import task_model

    module = task_model("room_layout", encoder="resnet10_tiny", resolution=32)
    targets = torch.randn(64, 9) * 2 + 3
    constant = ConstantPredictor((9,))
    optimizer = torch.optim.Adam(constant.parameters(), lr=0.1)
    for _ in range(300):
        loss = module.compute_loss(constant(64), {"target": targets}, "mean")
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert torch.allclose(constant.value.detach(), targets.mean(0), atol=0.05)


def _fit_constant(module, task_batch: dict, shape, steps: int = 400):
    constant = ConstantPredictor(shape, output_range(module.output_activation()))
    optimizer = torch.optim.Adam(constant.parameters(), lr=0.1)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps)
    batch = len(task_batch["target"])
    for _ in range(steps):
        loss = module.compute_loss(constant(batch), task_batch, "mean")
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        constant.project()
        schedule.step()
    return constant, float(module.compute_loss(constant(batch), task_batch, "mean"))


def test_constant_predictor_is_bounded_like_the_network_output() -> None:
    # Semantic logits are tanh-bounded: on background-only labels the best reachable constant
    # puts +1 on background and -1 elsewhere, CE = log(1 + 16 e^-2), not the unbounded 0.
    from taskonomy.experiments.train import task_model

    module = task_model("segment_semantic", encoder="resnet10_tiny", resolution=32)
    assert isinstance(module.output_activation(), torch.nn.Tanh)
    labels = torch.zeros(4, 32, 32, dtype=torch.long)
    task_batch = {"target": labels, "mask": torch.ones(4, 32, 32)}
    constant, loss = _fit_constant(module, task_batch, (17, 32, 32))
    assert loss == pytest.approx(math.log(1 + 16 * math.exp(-2)), rel=1e-3)
    values = constant(1)[0, :, 0, 0].detach()
    assert values[0] == pytest.approx(1.0, abs=1e-3)
    assert torch.allclose(values[1:], torch.full((16,), -1.0), atol=1e-3)


def test_bounded_constant_equals_the_free_one_inside_the_range() -> None:
    # For L1 targets in [-1, 1] the tanh-bounded constant reaches the median: no looser baseline.
    from taskonomy.experiments.train import task_model

    module = task_model("reshading", encoder="resnet10_tiny", resolution=32)
    generator = torch.Generator().manual_seed(0)
    target = (torch.rand(8, 1, 32, 32, generator=generator) * 1.6 - 0.9)
    task_batch = {"target": target, "mask": torch.ones(8, 1, 32, 32)}
    constant, loss = _fit_constant(module, task_batch, (1, 32, 32))
    median = target.median()
    assert float(constant(1).flatten()[0]) == pytest.approx(float(median), abs=0.02)
    assert loss == pytest.approx(float((target - median).abs().mean()), rel=0.01)


def test_linear_outputs_keep_an_unbounded_constant() -> None:
    from taskonomy.experiments.train import task_model

    for task in ("colorization", "room_layout"):
        module = task_model(task, encoder="resnet10_tiny", resolution=32)
        assert isinstance(module.output_activation(), torch.nn.Identity), task


def test_settings_file_resolves_per_task_and_rejects_bad_entries(quality: ModuleType,
                                                                  tmp_path: Path) -> None:
    defaults, per_task = quality.read_settings(quality.SETTINGS)  # the shipped file is valid
    assert set(defaults) == set(quality.BUILT_IN)
    path = tmp_path / "settings.yaml"
    path.write_text("defaults: {steps: 100}\ntasks:\n  keypoints2d: {resolution: 64}\n"
                    "  colorization: {buildings: 768}\n")
    defaults, per_task = quality.read_settings(path)
    flags = {"resolution": None, "steps": None, "batch_size": None, "buildings": None}
    assert quality.task_setting("keypoints2d", defaults, per_task, flags)["resolution"] == 64
    assert quality.task_setting("normal", defaults, per_task, flags) == {
        **quality.BUILT_IN, "steps": 100}
    typed = quality.task_setting("keypoints2d", defaults, per_task, {**flags, "resolution": 32})
    assert typed["resolution"] == 32  # a flag typed on the command line wins
    assert quality.task_setting("colorization", defaults, per_task, flags)["buildings"] == 768
    assert set(quality.default_tasks()) == {spec.name for spec in all_specs()}  # all 26
    for text, message in (("tasks:\n  jigsw: {steps: 5}\n", "unknown task"),
                          ("defaults: {epochs: 5}\n", "unknown keys"),
                          ("tasks:\n  normal: {steps: -1}\n", "positive integer"),
                          ("task: {}\n", "unknown sections")):
        path.write_text(text)
        with pytest.raises(ValueError, match=message):
            quality.read_settings(path)
    with pytest.raises(FileNotFoundError, match="--settings"):
        quality.read_settings(tmp_path / "missing.yaml")
