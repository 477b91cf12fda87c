"""Messages of the ``taskonomy`` command itself: a file given for a folder, an interrupt."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from taskonomy.experiments.cli import main


def _error(capsys: pytest.CaptureFixture[str]) -> str:
    return " ".join(capsys.readouterr().err.split())


def test_a_file_given_where_a_folder_belongs_is_named(tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    a_file = tmp_path / "notes.txt"
    a_file.write_text("mine")
    assert main(["analyze", str(a_file), "--out", str(tmp_path / "out")]) == 2
    assert "is a file, not a runs folder" in _error(capsys)
    assert main(["taxonomy", "--affinities", "paper-2018-1k", "--budget", "3",
                 "--out", str(a_file)]) == 2
    assert f"--out {a_file} is a file" in _error(capsys)
    sweep = tmp_path / "sweep.yaml"
    sweep.write_text(json.dumps({"method": "grid", "command": ["taskonomy", "train", "fit",
                                                                "${args}"],
                                 "parameters": {"model.task": {"values": ["normal"]}}}))
    assert main(["sweep", "run", str(sweep), "--runs", str(a_file), "--dry-run"]) == 2
    assert f"--runs {a_file} is a file" in _error(capsys)
    assert main(["train", "fit", "--model.task=normal", f"--data.root={tmp_path}",
                 f"--runs_dir={a_file}"]) == 2
    assert f"--runs_dir {a_file} is a file" in _error(capsys)
    assert a_file.read_text() == "mine"


def test_an_interrupt_says_what_it_left(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    import taskonomy.experiments.commands.data_pack as data_pack

    def interrupted(_args: object) -> int:
        raise KeyboardInterrupt

    monkeypatch.setattr(data_pack, "run", interrupted)
    assert main(["data", "pack", str(tmp_path), "--out", str(tmp_path / "o")]) == 130
    assert "interrupted: nothing is left half-written; repeat the command with --resume" in (
        _error(capsys))


def test_an_empty_config_file_is_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    empty = tmp_path / "empty.yaml"
    empty.write_text("\n")
    assert main(["train", "fit", "--config", str(empty), "--model.task=normal"]) == 2
    assert f"config file {empty} is empty" in _error(capsys)
    assert main(["transfer", "fit", "-c", str(empty)]) == 2
    assert f"config file {empty} is empty" in _error(capsys)


def test_a_bad_batch_size_is_refused_before_the_run_exists(
        tmp_path: Path, tiny_shards: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["train", "fit", "--config", str(Path(__file__).resolve().parents[1] / "experiments"
                                           / "configs" / "cpu.yaml"),
            "--model.task=normal", f"--data.root={tiny_shards}", "--model.resolution=32",
            f"--runs_dir={tmp_path / 'runs'}"]
    assert main([*args, "--data.batch_size=-4"]) == 2
    assert "data.batch_size must be at least 1, got -4" in _error(capsys)
    assert main([*args, "--data.num_workers=-1"]) == 2
    assert "data.num_workers must be ≥ 0" in _error(capsys)
    assert main([*args, "--data.limit=0"]) == 2
    assert "data.limit must be at least 1" in _error(capsys)
    assert main([*args, "--data.limit=100000"]) == 2
    assert "data.limit 100000 exceeds the" in _error(capsys)
    assert not (tmp_path / "runs").exists()
