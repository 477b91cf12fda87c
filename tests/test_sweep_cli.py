"""``taskonomy sweep run``: checks before running, dry runs, and kill/resume of a real sweep."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from taskonomy.analysis.records import read_record
from taskonomy.experiments.cli import main
from taskonomy.tasks.build import build_task
from taskonomy.tasks.source_runs import register_task_run

ROOT = Path(__file__).resolve().parents[1]
RES = 32


def write_sweep(path: Path, parameters: dict, extra: tuple[str, ...] = ()) -> Path:
    command = ["taskonomy", "transfer", "fit", "--config",
               str(ROOT / "experiments" / "configs" / "transfer_cpu.yaml"), *extra, "${args}"]
    path.write_text(json.dumps({"name": path.stem, "method": "grid", "command": command,
                                "parameters": parameters}))
    return path


def test_unknown_parameter_rejects_the_sweep_before_any_run(tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]
                                                            ) -> None:
    sweep = write_sweep(tmp_path / "bad.yaml", {
        "model.target": {"values": ["normal", "reshading"]},
        "model.sources": {"values": [["reshading"]]},
        "model.readout_width": {"values": [8]},
    })
    runs = tmp_path / "runs"
    assert main(["sweep", "run", str(sweep), "--runs", str(runs)]) == 2
    err = capsys.readouterr().err
    assert "model.readout_width" in err and "nothing was run" in err
    assert "fix the sweep file" in err and "tip:" not in err  # the complaint, not the usage
    assert not runs.exists()
    # The same mistake in --set is the user's, not the sweep file's.
    good = write_sweep(tmp_path / "good.yaml", {"model.target": {"values": ["normal"]},
                                                "model.sources": {"values": [["reshading"]]}})
    assert main(["sweep", "run", str(good), "--runs", str(runs), "--set", "data.rot=x"]) == 2
    err = capsys.readouterr().err
    assert "--set data.rot=x is rejected" in err and "fix the --set value" in err
    assert main(["sweep", "run", str(good), "--runs", str(runs), "--set",
                 "trainer.max_steps=abc"]) == 2  # a bad value: `Parser key "trainer.max_steps"`
    assert "--set trainer.max_steps=abc is rejected" in capsys.readouterr().err
    assert not runs.exists()


def test_bad_values_are_rejected_too(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    sweep = write_sweep(tmp_path / "bad.yaml", {
        "model.target": {"values": ["normal"]},
        "model.sources": {"values": [["reshading"], ["not_a_task"]]},
    })
    assert main(["sweep", "run", str(sweep), "--runs", str(tmp_path / "r"), "--dry-run"]) == 2
    assert "not_a_task" in capsys.readouterr().err
    assert main(["sweep", "run", str(sweep), "--set", "novalue"]) == 2
    assert main(["sweep", "run", str(sweep), "--set", "runs_dir=/elsewhere"]) == 2
    assert "use --runs DIR" in capsys.readouterr().err
    assert main(["sweep", "run", str(sweep), "--set", "data.root="]) == 2
    assert "--set data.root= is empty" in capsys.readouterr().err
    # A --set of a key the grid varies would train one thing under every point's name.
    assert main(["sweep", "run", str(sweep), "--dry-run", "--set",
                 "model.sources=[normal]"]) == 2
    assert "would replace the grid's 2 values of model.sources" in " ".join(
        capsys.readouterr().err.split())
    source_only = write_sweep(tmp_path / "source_only.yaml", {
        "model.target": {"values": ["jigsaw"]}, "model.sources": {"values": [["normal"]]}})
    assert main(["sweep", "run", str(source_only), "--dry-run"]) == 2
    assert "source-only" in capsys.readouterr().err


def test_a_broken_sweep_file_or_task_overrides_file_is_named_before_any_run(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    broken = tmp_path / "broken.yaml"
    broken.write_text("method: grid\nparameters: {model.task: [\n")
    assert main(["sweep", "run", str(broken), "--dry-run"]) == 2
    assert f"sweep file {broken} is not valid YAML" in " ".join(capsys.readouterr().err.split())
    overrides = tmp_path / "exceptions.yaml"
    overrides.write_text("jigsaw: {data: {batch_size: 4}\n")
    command = ["taskonomy", "train", "fit", "--config",
               str(ROOT / "experiments" / "configs" / "cpu.yaml"),
               f"--task_overrides={overrides}", "${args}"]
    tasks = tmp_path / "tasks.yaml"
    tasks.write_text(json.dumps({"method": "grid", "command": command,
                                 "parameters": {"model.task": {"values": ["jigsaw"]}}}))
    runs = tmp_path / "runs"
    assert main(["sweep", "run", str(tasks), "--runs", str(runs), "--dry-run"]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert f"task overrides file {overrides} is not valid YAML" in err
    overrides.write_text("jigsaw: {data: {batch_sise: 4}}\n")
    assert main(["sweep", "run", str(tasks), "--runs", str(runs), "--dry-run"]) == 2
    assert "the config has no data.batch_sise" in " ".join(capsys.readouterr().err.split())
    assert not runs.exists()


def test_a_config_named_relative_to_another_folder_says_where_to_run_from(
        tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    sweep = tmp_path / "relative.yaml"
    sweep.write_text(json.dumps({
        "name": "relative", "method": "grid",
        "command": ["taskonomy", "transfer", "fit", "--config",
                    "experiments/configs/transfer_cpu.yaml", "${args}"],
        "parameters": {"model.transfer": {"values": ["normal:reshading"]}}}))
    monkeypatch.chdir(tmp_path)
    assert main(["sweep", "run", str(sweep), "--dry-run"]) == 2
    assert "run sweeps from the project folder" in capsys.readouterr().err
    monkeypatch.chdir(ROOT)
    assert main(["sweep", "run", str(sweep), "--dry-run", "--runs", str(tmp_path / "r")]) == 0


def test_dry_run_lists_points_and_their_status(tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    sweep = write_sweep(tmp_path / "ok.yaml", {
        "model.target": {"values": ["normal", "room_layout"]},
        "model.sources": {"values": [["reshading"], ["pixels"]]},
    })
    runs = tmp_path / "runs"
    assert main(["sweep", "run", str(sweep), "--runs", str(runs), "--dry-run",
                 "--set", "data.root=/data/shards"]) == 0
    out = capsys.readouterr().out
    assert "4 points" in out and out.count("todo") == 4
    assert "--data.root=/data/shards" in out.replace("\n", "").replace("│", "").replace(" ", "")
    assert not (runs / ".sweeps").exists()


def test_a_missing_data_root_stops_the_sweep_once_before_any_point_runs(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    sweep = write_sweep(tmp_path / "ok.yaml", {"model.target": {"values": ["normal", "reshading"]},
                                               "model.sources": {"values": [["pixels"]]}})
    runs, nowhere = tmp_path / "runs", tmp_path / "nowhere"
    argv = ["sweep", "run", str(sweep), "--runs", str(runs), "--set", f"data.root={nowhere}"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert f"data.root={nowhere}, which does not exist here" in err
    assert "--set data.root=DIR — nothing was run" in err and not runs.exists()
    assert main([*argv, "--dry-run"]) == 0  # listed, with the warning
    assert "does not exist here" in capsys.readouterr().out
    # Roots the datamodule streams (URLs, pipe: commands) and roots per point are not checked.
    for root in ("https://example.com/shards", "pipe:cat /shards/{000..003}.tar"):
        assert main([*argv[:-1], f"data.root={root}", "--dry-run"]) == 0
        assert "does not exist here" not in capsys.readouterr().out
    per_point = write_sweep(tmp_path / "roots.yaml", {
        "model.target": {"values": ["normal"]}, "model.sources": {"values": [["pixels"]]},
        "data.root": {"values": [str(nowhere), str(tmp_path)]}})
    assert main(["sweep", "run", str(per_point), "--runs", str(runs), "--dry-run"]) == 0
    assert "does not exist here" not in capsys.readouterr().out


def _sweep_process(sweep: Path, runs: Path, shards: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "WANDB_MODE": "offline"}
    return subprocess.Popen(
        [sys.executable, "-m", "taskonomy.experiments.cli", "sweep", "run", str(sweep),
         "--runs", str(runs), "--set", f"data.root={shards}"],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _finished(runs: Path) -> dict[str, str]:
    out = {}
    for path in runs.glob("*/record.json"):
        record = read_record(path)
        if record.status == "finished" and record.role != "task":
            out[record.run_id] = str(record.finished_at)
    return out


@pytest.mark.slow
def test_killed_sweep_resumes_without_rerunning_or_losing_points(tiny_shards: Path,
                                                                 tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    torch.manual_seed(0)
    for task in ("normal", "reshading"):
        register_task_run(build_task(task, encoder="resnet10_tiny", resolution=RES,
                                     decoder_width=0.25), runs)
    sweep = write_sweep(tmp_path / "tiny.yaml", {
        "model.target": {"values": ["normal", "reshading"]},
        "model.sources": {"values": [["reshading"], ["normal"], ["pixels"], ["random"],
                                     ["self"]]},
    }, extra=("--model.encoder=resnet10_tiny", f"--model.resolution={RES}",
              "--trainer.max_steps=2", "--trainer.logger=false", "--data.limit=8",
              "--data.batch_size=4", "--data.num_workers=0"))
    first = _sweep_process(sweep, runs, tiny_shards)
    deadline = time.monotonic() + 600
    while len(_finished(runs)) < 2 and time.monotonic() < deadline:
        time.sleep(1)
    first.send_signal(signal.SIGTERM)  # kill the executor mid-way
    first.wait(timeout=120)
    before = _finished(runs)
    assert 2 <= len(before) < 10

    second = _sweep_process(sweep, runs, tiny_shards)
    assert second.wait(timeout=900) == 0
    after = _finished(runs)
    assert len(after) == 10  # nothing lost
    for run_id, finished_at in before.items():
        assert after[run_id] == finished_at  # finished points were not run again
    ledger = json.loads((runs / ".sweeps" / "tiny.json").read_text())["points"]
    assert all(ledger[r]["attempts"] == 1 for r in before)
    roles = {read_record(runs / r / "record.json").sources for r in after}
    assert {("pixels",), ("random",), ("self",), ("normal",), ("reshading",)} <= roles
