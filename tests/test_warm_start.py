"""Warm starts: a point forked from a process that has imported the suite acts like a fresh one."""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from taskonomy.analysis.records import read_record
from taskonomy.experiments import sweep_executor
from taskonomy.experiments.sweep_executor import run_sweep
from taskonomy.experiments.sweep_files import load_sweep_file
from taskonomy.experiments.warm_start import (
    CLI_MODULE,
    WarmStarter,
    WarmStartError,
    process_identity,
    suite_arguments,
)


def _running(pid: int) -> bool:
    return process_identity(pid) is not None

PROBE = '''
import atexit, json, os, signal, subprocess, sys, threading, time

print("probe imported")  # output while the server imports must not garble its replies
os.environ.setdefault("PROBE_SET_AT_IMPORT", "yes")  # as Lightning sets a CUDA-check variable
_WANDB_MEDIA = sys.modules.get("wandb.sdk.data_types._private")  # preloaded before the probe
SERVER_MEDIA = _WANDB_MEDIA.MEDIA_TMP.name if _WANDB_MEDIA else None


def main(args):
    out, action = args[0], args[1]
    import __main__
    import numpy as np
    import torch

    print("to stdout")
    print("to stderr", file=sys.stderr)
    if action == "report":
        report = {"cwd": os.getcwd(), "var": os.environ.get("POINT_VAR"), "argv": sys.argv[1:],
                  "main": __main__.__spec__.name, "own_session": os.getsid(0) == os.getpid(),
                  "stdin": sys.stdin.read(), "random": float(np.random.random()),
                  "threads": torch.get_num_threads(),
                  "set_at_import": os.environ.get("PROBE_SET_AT_IMPORT"),
                  "sighup_ignored": signal.getsignal(signal.SIGHUP) == signal.SIG_IGN}
        with open(out, "w") as f:
            json.dump(report, f)
        return 0
    if action == "global_file":  # left open in a global: a fresh process flushes it at exit
        global _FILE
        _FILE = open(out, "w")
        _FILE.write("written, never closed")
        return 0
    if action == "wandb_media":  # stage in W&B's media folder, clean it at exit as wandb.init
        _WANDB_MEDIA._cleanup_media_tmp_dir()
        own = _WANDB_MEDIA.MEDIA_TMP.name
        open(os.path.join(own, "panel.png"), "w").write("staged")
        with open(out, "w") as f:
            json.dump({"server": SERVER_MEDIA, "own": own}, f)
        return 0
    if action == "interrupt":
        raise KeyboardInterrupt
    if action == "exit3":
        return 3
    if action == "message":
        sys.exit("a message for the log")
    if action == "raise":
        raise ValueError("bad input in the point")
    if action == "atexit":
        atexit.register(lambda: open(out, "a").write("atexit\\n"))
        threading.Thread(target=lambda: (time.sleep(0.5), open(out, "a").write("thread\\n"))
                         ).start()
        return 0
    if action == "sleep":
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
        with open(out, "w") as f:
            f.write(str(child.pid))
        time.sleep(120)
    return 9
'''


@pytest.fixture(scope="module")
def probe_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    folder = tmp_path_factory.mktemp("probe")
    (folder / "probe.py").write_text(PROBE)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(folder), *sys.path])}
    env.pop("PYTHONUNBUFFERED", None)  # buffered output, as most users have it
    return env


@pytest.fixture(scope="module")
def starter(probe_env: dict[str, str],
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[WarmStarter]:
    log = tmp_path_factory.mktemp("server") / "server.log"
    server = WarmStarter(probe_env, log, preload=("numpy", "torch", "probe"), entry="probe:main")
    yield server
    server.close()
    assert "probe imported" in log.read_text()


def test_only_this_suites_cli_under_this_interpreter_starts_warm() -> None:
    assert suite_arguments([sys.executable, "-m", CLI_MODULE, "train", "fit"]) == ["train", "fit"]
    assert suite_arguments(["python3", "-m", CLI_MODULE, "train"]) is None
    assert suite_arguments([sys.executable, "-m", "other.module"]) is None
    assert suite_arguments(["./train.sh", "--x=1"]) is None


def test_a_warm_point_sees_what_a_fresh_process_would(starter: WarmStarter, tmp_path: Path,
                                                      probe_env: dict[str, str]) -> None:
    reports = []
    for i in range(2):
        out, log = tmp_path / f"report{i}.json", tmp_path / f"point{i}.log"
        env = {**probe_env, "POINT_VAR": f"value {i}", "OMP_NUM_THREADS": "1"}
        proc = starter.start([str(out), "report"], env, log, cwd=tmp_path)
        assert proc.wait() == 0
        reports.append(json.loads(out.read_text()))
        assert "to stdout" in log.read_text() and "to stderr" in log.read_text()
        assert "probe imported" not in log.read_text()  # the server's output stays its own
    first, second = reports
    assert first["cwd"] == str(tmp_path) and first["var"] == "value 0"
    assert second["var"] == "value 1"
    assert first["argv"] == [str(tmp_path / "report0.json"), "report"]
    # `python -m probe ...` is what Lightning re-executes for its other ranks
    assert first["main"] == "probe"
    assert first["own_session"] and first["stdin"] == ""
    assert first["threads"] == 1
    assert first["set_at_import"] == "yes"  # the server's import set it; the point keeps it
    assert not first["sighup_ignored"]
    assert first["random"] != second["random"]  # numpy's global generator is re-seeded


@pytest.mark.parametrize(("action", "status", "in_log"), [
    ("exit3", 3, "to stdout"),
    ("message", 1, "a message for the log"),
    ("raise", 1, "ValueError: bad input in the point"),
])
def test_exit_statuses_and_errors_reach_the_executor_and_the_log(
        starter: WarmStarter, tmp_path: Path, probe_env: dict[str, str], action: str,
        status: int, in_log: str) -> None:
    log = tmp_path / "point.log"
    assert starter.start([str(tmp_path / "out"), action], probe_env, log).wait() == status
    assert in_log in log.read_text()


def test_a_point_flushes_files_left_open_and_reports_an_interruption(
        starter: WarmStarter, tmp_path: Path, probe_env: dict[str, str]) -> None:
    out = tmp_path / "out.txt"
    assert starter.start([str(out), "global_file"], probe_env, tmp_path / "log").wait() == 0
    assert out.read_text() == "written, never closed"
    log = tmp_path / "interrupted.log"
    assert starter.start([str(out), "interrupt"], probe_env, log).wait() == -signal.SIGINT
    assert "KeyboardInterrupt" in log.read_text()


def test_a_signal_ignored_where_the_executor_started_stays_ignored_in_points(
        probe_env: dict[str, str], tmp_path: Path) -> None:
    previous = signal.signal(signal.SIGHUP, signal.SIG_IGN)  # as under nohup
    try:
        server = WarmStarter(probe_env, tmp_path / "server.log", preload=(), entry="probe:main")
    finally:
        signal.signal(signal.SIGHUP, previous)
    try:
        out = tmp_path / "report.json"
        assert server.start([str(out), "report"], probe_env, tmp_path / "log").wait() == 0
    finally:
        server.close()
    assert json.loads(out.read_text())["sighup_ignored"]


def test_a_point_joins_its_threads_and_runs_its_atexit_hooks(
        starter: WarmStarter, tmp_path: Path, probe_env: dict[str, str]) -> None:
    out = tmp_path / "out.txt"
    assert starter.start([str(out), "atexit"], probe_env, tmp_path / "log").wait() == 0
    assert out.read_text().splitlines() == ["thread", "atexit"]


def test_points_stage_wandb_media_in_folders_of_their_own(
        probe_env: dict[str, str], tmp_path: Path) -> None:
    # A point removing the server's folder at exit took the panels of the points still running.
    server = WarmStarter(probe_env, tmp_path / "server.log", preload=("wandb", "probe"),
                         entry="probe:main")
    try:
        folders = []
        for name in ("first", "second"):
            out = tmp_path / f"{name}.json"
            assert server.start([str(out), "wandb_media"], probe_env,
                                tmp_path / f"{name}.log").wait() == 0
            folders.append(json.loads(out.read_text()))
        first, second = folders
        assert first["server"] == second["server"] and Path(first["server"]).is_dir()
    finally:
        server.close()
    assert len({first["server"], first["own"], second["own"]}) == 3
    assert not Path(first["own"]).exists() and not Path(second["own"]).exists()  # cleaned up


def test_killing_a_points_group_stops_it_and_what_it_started(
        starter: WarmStarter, tmp_path: Path, probe_env: dict[str, str]) -> None:
    out = tmp_path / "pid"
    proc = starter.start([str(out), "sleep"], probe_env, tmp_path / "log")
    deadline = time.monotonic() + 60
    while not out.is_file() or not out.read_text():
        assert time.monotonic() < deadline
        time.sleep(0.05)
    grandchild = int(out.read_text())
    os.killpg(proc.pid, signal.SIGTERM)
    assert proc.wait() == -signal.SIGTERM
    deadline = time.monotonic() + 10
    while _running(grandchild):
        assert time.monotonic() < deadline
        time.sleep(0.05)


def test_closing_the_starter_leaves_running_points_running(
        probe_env: dict[str, str], tmp_path: Path) -> None:
    server = WarmStarter(probe_env, tmp_path / "server.log", preload=(), entry="probe:main")
    out = tmp_path / "pid"
    proc = server.start([str(out), "sleep"], probe_env, tmp_path / "log")
    server.close()
    try:
        assert _running(proc.pid)  # as a fresh process would: the next executor stops it
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
    assert proc.wait() is None  # its status went with the server; the record tells the rest


def _train_sweep(tmp_path: Path, shards: Path, *, wandb: bool = False,
                 **trainer: object) -> Path:
    """A one-point sweep of a tiny task network (logging to W&B, the CLI's default, if asked)."""
    config: dict[str, dict[str, object]] = {
        "trainer": {"accelerator": "cpu", "devices": 1, "precision": "bf16-mixed",
                    "max_steps": 4, "max_epochs": -1, "num_sanity_val_steps": 0,
                    "limit_val_batches": 2, "enable_progress_bar": False,
                    "enable_model_summary": False, **({} if wandb else {"logger": False}),
                    **trainer},
        "model": {"encoder": "resnet10_tiny", "resolution": 32, "decoder_width": 0.125,
                  "head_width": 0.125, "lr_milestone": None},
        "data": {"root": str(shards), "batch_size": 4, "num_workers": 0, "epoch_size": 8,
                 "shuffle_buffer": 8},
    }
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump(config))
    sweep = tmp_path / "sweep.yaml"
    sweep.write_text(yaml.safe_dump({
        "name": "warm", "method": "grid",
        "command": ["taskonomy", "train", "fit", "--config", str(tmp_path / "tiny.yaml"),
                    "${args}"],
        "parameters": {"model.task": {"values": ["normal"]}}}))
    return sweep


def test_warm_and_fresh_points_train_to_the_same_record(tiny_shards: Path,
                                                        tmp_path: Path) -> None:
    sweep = load_sweep_file(_train_sweep(tmp_path, tiny_shards))
    losses = {}
    for start in ("fresh", "warm"):
        runs = tmp_path / start
        (result,) = run_sweep(sweep, runs, start=start)
        assert result.outcome == "finished", (runs / result.point.run_id / "executor.log"
                                              ).read_text()[-3000:]
        assert result.started == start
        losses[start] = read_record(runs / result.point.run_id / "record.json").per_image_losses
    assert not (tmp_path / "fresh" / ".sweeps" / "warm.warm-start.log").exists()
    assert losses["warm"] == pytest.approx(losses["fresh"], rel=1e-6)


def test_a_warm_point_launches_its_other_ranks(tiny_shards: Path, tmp_path: Path) -> None:
    sweep = load_sweep_file(_train_sweep(tmp_path, tiny_shards, devices=2, strategy="ddp"))
    (result,) = run_sweep(sweep, tmp_path / "runs", start="warm")
    log = (tmp_path / "runs" / result.point.run_id / "executor.log").read_text()
    assert result.outcome == "finished", log[-3000:]
    assert result.started == "warm"
    assert "distributed_backend=gloo" in log and "All distributed processes registered" in log


def test_a_server_that_cannot_import_the_suite_is_reported_and_points_start_fresh(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    log = tmp_path / "server.log"
    with pytest.raises(WarmStartError, match="exited while importing"):
        WarmStarter(dict(os.environ), log, preload=("no_such_module_here",))
    assert "No module named 'no_such_module_here'" in log.read_text()

    def broken(env: dict[str, str], log: Path) -> WarmStarter:
        return WarmStarter(env, log, preload=("no_such_module_here",))

    monkeypatch.setattr(sweep_executor, "WarmStarter", broken)
    lazy = sweep_executor._LazyWarmStarter(dict(os.environ), tmp_path / "lazy.log", enabled=True)
    argv = [sys.executable, "-m", CLI_MODULE, "tasks"]
    assert lazy.start(argv, dict(os.environ), tmp_path / "p.log") is None
    assert lazy.start(argv, dict(os.environ), tmp_path / "p.log") is None  # not tried again
    assert (tmp_path / "lazy.log").read_text().count("points start as fresh processes") == 1


@pytest.mark.wandb
def test_a_warm_point_logs_a_complete_wandb_run(tiny_shards: Path, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    from taskonomy.analysis.wandb_source import read_offline_run

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.delenv("WANDB_SWEEP_ID", raising=False)
    sweep = load_sweep_file(_train_sweep(tmp_path, tiny_shards, wandb=True))
    (result,) = run_sweep(sweep, tmp_path / "runs", start="warm")
    folder = tmp_path / "runs" / result.point.run_id
    assert result.outcome == "finished", (folder / "executor.log").read_text()[-3000:]
    assert result.started == "warm"
    record = read_record(folder / "record.json")
    assert record.wandb is not None
    # the W&B log is read back whole: its tail (summary, final state) was flushed at exit
    from_wandb = read_offline_run(record.wandb)
    assert from_wandb.status == "finished"
    assert from_wandb.per_image_losses == pytest.approx(record.per_image_losses)
