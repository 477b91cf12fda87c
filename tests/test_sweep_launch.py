"""Every sweep file launches: one of its points runs to a finished record through the executor.

The parser test (tests/test_sweep_files.py) catches a renamed argument; this one runs a point of
each file with its own configs (the paper ones included) through `taskonomy sweep run`, shrunk
to tiny data and CPU by `--set`, so a config value that only fails once training starts (a key
the trainer refuses, a regime, a checkpoint choice) fails here too.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

from taskonomy.analysis.records import read_records
from taskonomy.experiments.cli import main
from taskonomy.experiments.sweep_files import SweepPoint, load_sweep_file
from taskonomy.tasks.build import build_task
from taskonomy.tasks.source_runs import register_task_run
from taskonomy.tasks.specs import BASELINES

ROOT = Path(__file__).resolve().parents[1]
SWEEPS = sorted((ROOT / "sweeps").glob("*.yaml"))
RES = 32
#: CPU, one step on a few 32² images, no logger: what makes a paper point run here.
TINY = ["trainer.accelerator=cpu", "trainer.devices=1", "trainer.strategy=auto",
        "trainer.sync_batchnorm=false", "trainer.precision=bf16-mixed", "trainer.max_steps=1",
        "trainer.max_epochs=-1", "trainer.limit_val_batches=1", "trainer.limit_test_batches=1",
        "trainer.logger=false", "trainer.enable_progress_bar=false", "trainer.benchmark=false",
        "model.encoder=resnet10_tiny", f"model.resolution={RES}", "model.decoder_width=0.125",
        "model.head_width=0.125", "data.batch_size=2", "data.num_workers=0",
        "data.epoch_size=2", "data.shuffle_buffer=2", "data.limit=4"]


@pytest.fixture(autouse=True)
def in_project_root(monkeypatch: pytest.MonkeyPatch) -> None:
    # Sweep commands name configs relative to the project folder, where sweeps are run from.
    monkeypatch.chdir(ROOT)
    monkeypatch.setenv("WANDB_MODE", "offline")


def _sources(point: SweepPoint) -> list[str]:
    sources = point.params.get("model.sources") or []
    return [sources] if isinstance(sources, str) else list(sources)


def one_point_file(path: Path, folder: Path) -> tuple[Path, SweepPoint]:
    """A copy of a sweep file with one point: a transfer from a task if it has one."""
    points = load_sweep_file(path).points()
    point = next((p for p in points if _sources(p) and _sources(p)[0] not in BASELINES),
                 points[0])
    content: dict[str, Any] = yaml.safe_load(path.read_text())
    content["parameters"] = {k: {"value": v} for k, v in point.params.items()}
    copy = folder / path.name
    copy.write_text(yaml.safe_dump(content, sort_keys=False))
    return copy, point


@pytest.mark.parametrize("path", SWEEPS, ids=lambda p: p.stem)
def test_a_point_of_every_sweep_file_runs_to_a_finished_record(
        path: Path, tmp_path: Path, tiny_shards: Path) -> None:
    copy, point = one_point_file(path, tmp_path)
    runs = tmp_path / "runs"
    torch.manual_seed(0)
    sources = {register_task_run(build_task(source, encoder="resnet10_tiny", resolution=RES,
                                            decoder_width=0.125), runs).run_id
               for source in _sources(point) if source not in BASELINES}
    overrides = [*TINY, f"data.root={tiny_shards}"]
    assert main(["sweep", "run", str(copy), "--runs", str(runs),
                 *[arg for value in overrides for arg in ("--set", value)]]) == 0
    (record,) = [r for r in read_records(runs) if r.run_id not in sources]
    assert record.status == "finished" and record.per_image_losses
    assert record.target == point.params.get("model.task", point.params.get("model.target"))
