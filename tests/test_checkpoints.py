"""``last.ckpt`` always holds a run's latest state, and ``--test_checkpoint`` picks what is tested.

Lightning 2.6 alone writes ``last.ckpt`` only at steps where the best checkpoint changed; a
finished run's final weights, or a killed run's latest validation, were then not on disk.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch
import yaml

from taskonomy.analysis.records import read_record, record_path
from taskonomy.experiments.train import run_cli
from taskonomy.tasks.baselines import load_checkpoint
from taskonomy.tasks.build import build_task
from taskonomy.tasks.networks.encoders import ENCODER_LAYOUT, ENCODER_LAYOUT_KEY
from taskonomy.tasks.source_runs import register_task_run


def _config(tmp_path: Path, root: Path) -> Path:
    # Two steps per epoch, validation after each: at steps 2 and 4; step 5 is never validated.
    config = {
        "trainer": {"accelerator": "cpu", "devices": 1, "max_steps": 5, "max_epochs": -1,
                    "num_sanity_val_steps": 0, "limit_val_batches": 1, "limit_test_batches": 1,
                    "enable_progress_bar": False, "enable_model_summary": False,
                    "logger": False},
        "model": {"encoder": "resnet10_tiny", "resolution": 32, "decoder_width": 0.125,
                  "lr_milestone": None},
        "data": {"root": str(root), "batch_size": 4, "num_workers": 0, "epoch_size": 8,
                 "shuffle_buffer": 8},
    }
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def _step(path: Path) -> int:
    return int(torch.load(path, map_location="cpu", weights_only=False)["global_step"])


@pytest.mark.parametrize("choice", ["best", "last"])
def test_last_checkpoint_holds_the_final_weights(choice: str, tmp_path: Path,
                                                 tiny_shards: Path) -> None:
    runs = tmp_path / "runs"
    torch.set_num_threads(1)
    run_cli(["fit", "--config", str(_config(tmp_path, tiny_shards)), "--model.task=normal",
             f"--runs_dir={runs}", f"--run_id={choice}", f"--test_checkpoint={choice}"])
    folder = runs / choice / "checkpoints"
    assert _step(folder / "last.ckpt") == 5  # saved at the end of training, after no validation
    best = [p for p in folder.glob("best-*.ckpt")]
    assert len(best) == 1 and _step(best[0]) in (2, 4)
    record = read_record(record_path(runs, choice))
    assert record.status == "finished" and record.checkpoint is not None
    tested = Path(record.checkpoint)
    assert tested == (folder / "last.ckpt" if choice == "last" else best[0]).resolve()
    assert record.config["test_checkpoint"] == choice
    saved = torch.load(folder / "last.ckpt", map_location="cpu", weights_only=False)
    assert saved[ENCODER_LAYOUT_KEY] == ENCODER_LAYOUT  # readers can tell a former layout


def test_a_checkpoint_of_a_former_encoder_layout_warns(tmp_path: Path) -> None:
    module = build_task("normal", encoder="resnet10_tiny", resolution=32)
    record = register_task_run(module, tmp_path, run_id="now")
    path = tmp_path / "now" / str(record.checkpoint)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_checkpoint(path, "source")  # the current layout: silent
    data = torch.load(path, map_location="cpu", weights_only=False)
    del data[ENCODER_LAYOUT_KEY]  # as every checkpoint before the SAME max-pool
    torch.save(data, path)
    with pytest.warns(UserWarning, match="encoder layout 1.*shifted by a pixel"):
        load_checkpoint(path, "source")


def test_unknown_test_checkpoint_is_rejected(tmp_path: Path, tiny_shards: Path) -> None:
    with pytest.raises(SystemExit):
        run_cli(["fit", "--config", str(_config(tmp_path, tiny_shards)), "--model.task=normal",
                 f"--runs_dir={tmp_path}", "--test_checkpoint=latest"])


def _checkpoint_file(path: Path, payload: bytes = b"weights" * 1000) -> Path:
    import zipfile

    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as archive:
        archive.writestr("archive/data/0", payload)
    return path


def test_a_checkpoint_damaged_inside_is_passed_over_when_resuming(tmp_path: Path) -> None:
    import os
    from types import SimpleNamespace

    from taskonomy.experiments.lightning_cli import TaskonomyCLI, checkpoint_intact

    folder = tmp_path / "run" / "checkpoints"
    best = _checkpoint_file(folder / "best-step=4.ckpt")
    last = _checkpoint_file(folder / "last.ckpt")
    os.utime(best, (1, 1))
    assert checkpoint_intact(last) and not checkpoint_intact(tmp_path / "none.ckpt")
    data = bytearray(last.read_bytes())
    data[len(data) // 3] ^= 0xFF  # inside a member: the zip directory is still whole
    last.write_bytes(bytes(data))
    assert not checkpoint_intact(last)
    cli = SimpleNamespace(run_dir=tmp_path / "run")
    with pytest.warns(RuntimeWarning, match=f"resuming from {best}"):
        assert TaskonomyCLI.resume_checkpoint(cli) == str(best)  # type: ignore[arg-type]
    (tmp_path / "garbage.ckpt").write_bytes(b"not a checkpoint")
    assert not checkpoint_intact(tmp_path / "garbage.ckpt")


def test_a_damaged_ckpt_path_is_refused_before_the_run_starts(tmp_path: Path,
                                                             tiny_shards: Path,
                                                             capsys: pytest.CaptureFixture[str]
                                                             ) -> None:
    from taskonomy.experiments.cli import main

    garbage = tmp_path / "garbage.ckpt"
    garbage.write_bytes(b"not a checkpoint")
    args = ["train", "fit", "--config", str(_config(tmp_path, tiny_shards)),
            "--model.task=normal", f"--runs_dir={tmp_path / 'runs'}", "--run_id=case",
            f"--ckpt_path={garbage}"]
    assert main(args) == 2
    assert "is not a complete Lightning checkpoint" in " ".join(capsys.readouterr().err.split())
