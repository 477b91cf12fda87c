"""Short CPU training runs beat the best constant prediction on synthetic test images (slow).

The runner is ``benchmarks/task_quality.py`` (which prints the table for every dense and
low-dimensional task); this test asserts it for a few representative tasks.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest
import torch


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
    return quality.make_synthetic_shards(tmp_path_factory.mktemp("quality"), buildings=8,
                                         resolution=64)


@pytest.mark.slow
@pytest.mark.parametrize("task", ["normal", "denoising", "segment_unsup25d"])
def test_short_training_beats_the_constant_predictor(task: str, quality: ModuleType,
                                                     synthetic_shards: Path,
                                                     tmp_path: Path) -> None:
    row = quality.compare(task, synthetic_shards, tmp_path / "runs", steps=300, resolution=32,
                          precision="32-true", batch_size=8, margin=0.05)
    assert row["constant_loss"] > 0
    assert row["network_loss"] < 0.95 * row["constant_loss"], row
    assert row["wins"] > 0.5, row


def test_constant_predictor_fits_the_loss_minimizer(quality: ModuleType) -> None:
    # For an L1 loss the best constant is the median; for MSE the mean.
    from taskonomy.experiments.train import task_model

    module = task_model("room_layout", encoder="resnet10_tiny", resolution=32)
    targets = torch.randn(64, 9) * 2 + 3
    constant = quality.ConstantPredictor((9,))
    optimizer = torch.optim.Adam(constant.parameters(), lr=0.1)
    for _ in range(300):
        loss = module.compute_loss(constant(64), {"target": targets}, "mean")
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert torch.allclose(constant.value.detach(), targets.mean(0), atol=0.05)
