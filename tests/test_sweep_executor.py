"""The local sweep executor: grid expansion, skipping finished points, failures, resume."""

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

import taskonomy.experiments.sweep_executor as sweep_executor
from taskonomy.analysis.records import RunRecord
from taskonomy.experiments.sweep_executor import (
    Ledger,
    _exclusive,
    failure_reason,
    gpu_slots,
    process_identity,
    record_status,
    run_sweep,
    thread_defaults,
)
from taskonomy.experiments.sweep_files import load_sweep_file, point_run_id

PROGRAM = r'''
import argparse, json, os, sys, time
from pathlib import Path
p = argparse.ArgumentParser()
p.add_argument("--task"); p.add_argument("--lr", type=float)
p.add_argument("--run_id"); p.add_argument("--runs_dir")
p.add_argument("--sleep", type=float, default=0)
a = p.parse_args()
out = Path(a.runs_dir) / a.run_id
out.mkdir(parents=True, exist_ok=True)
with open(Path(a.runs_dir) / "calls.txt", "a") as f:
    f.write(a.run_id + "\n")
with open(Path(a.runs_dir) / "gpus.txt", "a") as f:
    f.write(os.environ.get("CUDA_VISIBLE_DEVICES", "all") + "\n")
with open(Path(a.runs_dir) / "threads.txt", "a") as f:
    f.write(os.environ.get("OMP_NUM_THREADS", "unset") + "\n")
time.sleep(a.sleep)
if a.task == "boom":
    print("ValueError: boom is not a task", file=sys.stderr)
    sys.exit(3)
if a.task == "silent":  # exits 0 without writing its record
    sys.exit(0)
(out / "record.json").write_text(json.dumps({"status": "finished", "task": a.task, "lr": a.lr}))
'''


def _sweep(tmp_path: Path, tasks: list[str], sleep: float = 0.0) -> Path:
    program = tmp_path / "program.py"
    program.write_text(PROGRAM)
    sweep = tmp_path / "sweep.yaml"
    sweep.write_text(
        "name: demo\nmethod: grid\nprogram: " + str(program) + "\n"
        "command: [\"${env}\", \"${interpreter}\", \"${program}\", \"${args}\"]\n"
        "parameters:\n"
        f"  task: {{values: {json.dumps(tasks)}}}\n"
        "  lr: {values: [0.1, 0.01]}\n"
        f"  sleep: {{value: {sleep}}}\n"
    )
    return sweep


def test_grid_expansion_and_ids(tmp_path: Path) -> None:
    sweep = load_sweep_file(_sweep(tmp_path, ["a", "b", "c"]))
    points = sweep.points()
    assert len(points) == 6
    assert points[0].params == {"task": "a", "lr": 0.1, "sleep": 0.0}
    assert len({p.run_id for p in points}) == 6
    assert point_run_id({"task": "a", "lr": 0.1, "sleep": 0.0},
                        sweep.run_context()) == points[0].run_id
    argv = sweep.argv(points[0].params)
    assert argv[0] == sys.executable and argv[-3:] == ["--task=a", "--lr=0.1", "--sleep=0.0"]


def test_runs_skips_finished_and_survives_a_failure(tmp_path: Path) -> None:
    sweep = load_sweep_file(_sweep(tmp_path, ["a", "boom"]))
    runs = tmp_path / "runs"
    results = run_sweep(sweep, runs, workers=2)
    assert [r.outcome for r in results] == ["finished", "finished", "failed", "failed"]
    ledger = json.loads((runs / ".sweeps" / "demo.json").read_text())
    assert {v["status"] for v in ledger["points"].values()} == {"finished", "failed"}
    again = run_sweep(sweep, runs, workers=2)
    assert [r.outcome for r in again] == ["skipped", "skipped", "failed", "failed"]
    calls = (runs / "calls.txt").read_text().split()
    assert len(calls) == 6  # the two finished points ran once, the failing ones twice
    # Why a point failed, in one line: the log's last error line, or its record's error.
    boom = again[2].point.run_id
    assert failure_reason(runs, boom) == "ValueError: boom is not a task"
    entry = json.loads((runs / ".sweeps" / "demo.json").read_text())["points"][boom]
    assert entry["attempts"] == 2 and entry["returncode"] == 3 and entry["status"] == "failed"
    with open(runs / boom / "executor.log", "a") as log:  # a later attempt, killed silently
        log.write("\n=== attempt 3: python program.py\nKilled\n")
    assert failure_reason(runs, boom) == "Killed"
    (runs / boom / "record.json").write_text(json.dumps(
        {"status": "failed", "error": "RuntimeError: CUDA out of\nmemory"}))
    assert failure_reason(runs, boom) == "RuntimeError: CUDA out of memory"
    # The last error line is found whatever its case, even with plain lines after it.
    (runs / boom / "record.json").unlink()
    with open(runs / boom / "executor.log", "a") as log:
        log.write("\n=== attempt 4: python program.py\nRuntimeError: x\nplain line\n")
    assert failure_reason(runs, boom) == "RuntimeError: x"


def test_a_point_that_exits_0_without_finishing_its_record_failed(tmp_path: Path) -> None:
    sweep = load_sweep_file(_sweep(tmp_path, ["silent"]))
    results = run_sweep(sweep, tmp_path / "runs", workers=1)
    assert [r.outcome for r in results] == ["failed", "failed"]
    assert [r.returncode for r in results] == [0, 0]


def test_a_point_left_running_by_a_killed_executor_is_stopped_before_it_reruns(
        tmp_path: Path) -> None:
    sweep = load_sweep_file(_sweep(tmp_path, ["a"]))
    runs = tmp_path / "runs"
    orphan = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"],
                              start_new_session=True)
    try:
        identity = process_identity(orphan.pid)
        if identity is None:
            pytest.skip("no /proc: process identities are not available here")
        point = sweep.points()[0]
        Ledger(runs, sweep).update(point.run_id, status="running", pid=orphan.pid,
                                   host=os.uname().nodename, process=identity)
        results = run_sweep(sweep, runs, workers=1)
        assert results[0].outcome == "finished"
        assert orphan.wait(timeout=10) < 0  # stopped by a signal
    finally:
        orphan.kill()
        orphan.wait()


def _start_executor(sweep_path: Path, runs: Path, workers: int,
                    **popen: Any) -> subprocess.Popen[bytes]:
    """An executor in its own process (and session), as `taskonomy sweep run` would be."""
    code = (
        "from taskonomy.experiments.sweep_executor import run_sweep;"
        "from taskonomy.experiments.sweep_files import load_sweep_file;"
        f"run_sweep(load_sweep_file({str(sweep_path)!r}), {str(runs)!r}, workers={workers})"
    )
    return subprocess.Popen([sys.executable, "-c", code], start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, **popen)


def _running_point_pids(runs: Path, count: int) -> list[int]:
    """The process ids of ``count`` running points, read from the ledger once they started."""
    ledger = runs / ".sweeps" / "demo.json"
    pids: list[int] = []
    deadline = time.monotonic() + 60
    while len(pids) < count and time.monotonic() < deadline:
        time.sleep(0.1)
        with contextlib.suppress(OSError, ValueError):
            points = json.loads(ledger.read_text())["points"].values()
            pids = [p["pid"] for p in points if p.get("pid")]
    assert len(pids) == count, "the points did not start"
    return pids


def test_killed_executor_resumes_without_rerunning(tmp_path: Path) -> None:
    sweep_path = _sweep(tmp_path, ["a", "b", "c"], sleep=0.6)
    runs = tmp_path / "runs"
    proc = _start_executor(sweep_path, runs, workers=1)
    deadline = time.monotonic() + 60
    points = load_sweep_file(sweep_path).points()
    while time.monotonic() < deadline:
        if sum(record_status(runs, p.run_id) == "finished" for p in points) >= 2:
            break
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)  # the executor and its running point die at once
    proc.wait()
    done_before = {p.run_id for p in points if record_status(runs, p.run_id) == "finished"}
    assert 2 <= len(done_before) < 6
    results = run_sweep(load_sweep_file(sweep_path), runs, workers=2)
    assert all(r.outcome in {"skipped", "finished"} for r in results)
    # Finished points are never rerun (a point that was running when the executor died may
    # have finished on its own meanwhile, or is stopped and rerun).
    assert done_before <= {r.point.run_id for r in results if r.outcome == "skipped"}
    assert all(record_status(runs, p.run_id) == "finished" for p in points)


def test_a_hang_up_stops_the_executor_and_its_running_points(tmp_path: Path) -> None:
    sweep_path = _sweep(tmp_path, ["a"], sleep=60)
    runs = tmp_path / "runs"
    executor = _start_executor(  # SIGHUP at its default even when the tests run under nohup
        sweep_path, runs, workers=2,
        preexec_fn=lambda: signal.signal(signal.SIGHUP, signal.SIG_DFL))
    pids = _running_point_pids(runs, 2)
    executor.send_signal(signal.SIGHUP)  # the terminal closed: only the executor gets it
    assert executor.wait(timeout=30) != 0
    for pid in pids:  # the points ran in their own sessions and are stopped all the same
        with pytest.raises(ProcessLookupError):
            os.killpg(pid, 0)
    ledger = json.loads((runs / ".sweeps" / "demo.json").read_text())
    assert {p["status"] for p in ledger["points"].values()} == {"failed"}


def test_under_nohup_a_hang_up_leaves_the_sweep_running(tmp_path: Path) -> None:
    sweep_path = _sweep(tmp_path, ["a"], sleep=60)
    runs = tmp_path / "runs"
    executor = _start_executor(  # with SIGHUP ignored, as nohup starts it
        sweep_path, runs, workers=2,
        preexec_fn=lambda: signal.signal(signal.SIGHUP, signal.SIG_IGN))
    try:
        _running_point_pids(runs, 2)
        executor.send_signal(signal.SIGHUP)
        time.sleep(1.0)
        assert executor.poll() is None  # still running its points
    finally:
        executor.send_signal(signal.SIGTERM)  # stops it and its points
        executor.wait(timeout=30)


def test_run_ids_follow_the_config_contents_and_the_overrides(tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch
                                                             ) -> None:
    monkeypatch.chdir(tmp_path)
    Path("small.yaml").write_text("model: {resolution: 32}\n")
    Path("large.yaml").write_text("model: {resolution: 256}\n")

    def ids(config: str, extra: tuple[str, ...] = ()) -> list[str]:
        path = tmp_path / "sweep.yaml"
        path.write_text(f"method: grid\nprogram: taskonomy\ncommand: [--config, {config}, "
                        "'${args}']\nparameters: {model.task: {values: [normal, reshading]}}\n")
        return [p.run_id for p in load_sweep_file(path).points(extra)]

    small = ids("small.yaml")
    assert small == ids("small.yaml") and len(set(small)) == 2  # deterministic and distinct
    assert set(small).isdisjoint(ids("large.yaml"))  # another config: other runs
    assert set(small).isdisjoint(ids("small.yaml", ("--data.root=/data",)))  # --set too
    Path("small.yaml").write_text("model: {resolution: 64}\n")
    assert set(small).isdisjoint(ids("small.yaml"))  # an edited config file
    # A group config named by the top-level one (as configs/cpu.yaml names model/cpu.yaml).
    Path("model").mkdir()
    Path("model/tiny.yaml").write_text("resolution: 32\n")
    Path("grouped.yaml").write_text("model: model/tiny.yaml\n")
    grouped = ids("grouped.yaml")
    Path("model/tiny.yaml").write_text("resolution: 16\n")
    assert set(grouped).isdisjoint(ids("grouped.yaml"))
    # The order of --set arguments does not matter; a repeated key's order does (last wins).
    both = ("--data.root=/d", "--trainer.max_steps=5")
    assert ids("small.yaml", both) == ids("small.yaml", both[::-1])
    twice = ("--data.root=/a", "--data.root=/b")
    assert set(ids("small.yaml", twice)).isdisjoint(ids("small.yaml", twice[::-1]))
    # A config given with --set counts by its contents as well.
    Path("extra.yaml").write_text("trainer: {max_steps: 5}\n")
    with_extra = ids("small.yaml", ("--config=extra.yaml",))
    Path("extra.yaml").write_text("trainer: {max_steps: 50}\n")
    assert set(with_extra).isdisjoint(ids("small.yaml", ("--config=extra.yaml",)))
    # So does any file a --set names (a label set): other contents, other runs.
    Path("bins.npy").write_bytes(b"first")
    with_bins = ids("small.yaml", ("--data.ab_bins=bins.npy",))
    Path("bins.npy").write_bytes(b"second")
    assert set(with_bins).isdisjoint(ids("small.yaml", ("--data.ab_bins=bins.npy",)))
    # ... and one a config names (read from the working directory, as the CLI reads it).
    Path("colour.yaml").write_text("data: {ab_bins: bins.npy}\n")
    with_config_bins = ids("colour.yaml")
    Path("bins.npy").write_bytes(b"third")
    assert set(with_config_bins).isdisjoint(ids("colour.yaml"))


def test_files_among_a_points_parameters_count_by_their_contents(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    Path("sweep.yaml").write_text(
        "method: grid\nprogram: taskonomy\ncommand: ['${args}']\nparameters:\n"
        "  model.task: {value: colorization}\n  config: {values: [a.yaml, b.yaml]}\n"
        "  data.ab_bins: {value: bins.npy}\n")
    Path("a.yaml").write_text("model: {resolution: 32}\n")
    Path("b.yaml").write_text("model: {resolution: 64}\n")
    Path("bins.npy").write_bytes(b"first")

    def ids() -> list[str]:
        return [point.run_id for point in load_sweep_file("sweep.yaml").points()]

    first = ids()
    assert first == ids() and len(set(first)) == 2
    Path("b.yaml").write_text("model: {resolution: 128}\n")
    edited = ids()
    assert edited[0] == first[0] and edited[1] != first[1]  # only b.yaml's point changed
    Path("bins.npy").write_bytes(b"second")
    assert set(ids()).isdisjoint(edited)
    # A label set fixed in the command template, in either spelling, counts by contents too.
    for fixed in ("'--data.ab_bins=bins.npy'", "--data.ab_bins, bins.npy"):
        Path("fixed.yaml").write_text(
            f"method: grid\nprogram: taskonomy\ncommand: [{fixed}, '${{args}}']\nparameters:\n"
            "  model.task: {value: colorization}\n")
        before = [point.run_id for point in load_sweep_file("fixed.yaml").points()]
        Path("bins.npy").write_bytes(b"third" + fixed.encode())
        assert set(before).isdisjoint(p.run_id for p in load_sweep_file("fixed.yaml").points())


def test_a_point_killed_by_a_signal_says_so(tmp_path: Path) -> None:
    from taskonomy.experiments.sweep_executor import PointResult, failure_line
    from taskonomy.experiments.sweep_files import SweepPoint

    point = SweepPoint(0, {"model.task": "normal"}, "normal-1234")
    (tmp_path / "normal-1234").mkdir()
    (tmp_path / "normal-1234" / "executor.log").write_text(
        "=== attempt 1\nwarnings.warn('resource_tracker: There appear to be 1 leaked')\n")
    line = failure_line(tmp_path, PointResult(point, "failed", returncode=-9))
    assert "killed by SIGKILL" in line and "resource_tracker" not in line
    # A run whose rank 1 failed gets rank 0 killed: the recorded cause is the reason.
    (tmp_path / "normal-1234" / "record.json").write_text(json.dumps(
        {"status": "failed", "error": "rank 1: ShardKeyMismatchError: shard 3"}))
    line = failure_line(tmp_path, PointResult(point, "failed", returncode=-9))
    assert "rank 1: ShardKeyMismatchError" in line and "SIGKILL" not in line
    # A failure an earlier attempt recorded is not this attempt's cause.
    old = time.time() - 3600
    os.utime(tmp_path / "normal-1234" / "record.json", (old, old))
    line = failure_line(tmp_path, PointResult(point, "failed", returncode=-9, seconds=60.0))
    assert "killed by SIGKILL" in line


def test_point_ids_start_with_a_letter_or_digit() -> None:
    run_id = point_run_id({"data.root": "./data/synthetic", "model.task": "normal"})
    assert run_id.startswith("data_synthetic-normal-")
    RunRecord(run_id=run_id, role="task", target="normal")  # a valid record id


def test_an_orphan_is_recognized_by_its_start_time_not_its_pid(tmp_path: Path) -> None:
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        identity = process_identity(child.pid)
        if identity is None:
            pytest.skip("no /proc: process identities are not available here")
        from taskonomy.experiments.sweep_executor import _orphan_of

        entry = {"pid": child.pid, "host": os.uname().nodename, "process": identity}
        assert _orphan_of(entry) == child.pid
        # The same pid with another start time (a reboot, a reused pid) is left alone.
        assert _orphan_of({**entry, "process": identity + "0"}) is None
        assert _orphan_of({**entry, "host": "another-box"}) is None
    finally:
        child.kill()
        child.wait()
    assert process_identity(child.pid) is None or process_identity(child.pid) != identity


def test_a_point_locked_by_another_executor_is_busy_and_the_ledger_keeps_both(
        tmp_path: Path) -> None:
    sweep = load_sweep_file(_sweep(tmp_path, ["a"]))
    runs = tmp_path / "runs"
    first, second = sweep.points()
    with _exclusive(runs / first.run_id / ".executor.lock", wait=False) as taken:
        assert taken
        results = run_sweep(sweep, runs)
    assert [r.outcome for r in results] == ["busy", "finished"]
    assert record_status(runs, first.run_id) is None
    # Two ledgers of one sweep (two executors) merge instead of overwriting each other.
    one, two = Ledger(runs, sweep), Ledger(runs, sweep)
    one.update("x", status="running")
    two.update("y", status="running")
    data = json.loads((runs / ".sweeps" / "demo.json").read_text())
    assert {"x", "y", second.run_id} <= set(data["points"])
    assert [r.outcome for r in run_sweep(sweep, runs)] == ["finished", "skipped"]


def test_gpus_are_split_between_workers_and_never_shared(tmp_path: Path) -> None:
    assert gpu_slots(["0", "1", "2", "3"], 2) == ["0,1", "2,3"]
    assert gpu_slots(["4", "5", "6"], 3, per_point=1) == ["4", "5", "6"]
    assert gpu_slots(["0", "1"], 4, per_point=0) is None and gpu_slots([], 4) is None
    with pytest.raises(ValueError, match="lower --workers, or pass --gpus-per-point 0"):
        gpu_slots(["0"], 2)
    sweep = load_sweep_file(_sweep(tmp_path, ["a", "b"], sleep=0.3))
    runs = tmp_path / "runs"
    results = run_sweep(sweep, runs, workers=2, device_slots=["0,1", "2,3"])
    assert all(r.outcome == "finished" for r in results)
    seen = (runs / "gpus.txt").read_text().split()
    assert len(seen) == 4 and set(seen) == {"0,1", "2,3"}


def test_points_side_by_side_split_the_cores_between_their_threads(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sweep_executor, "usable_cores", lambda: 4)
    assert thread_defaults(2, {}) == {"OMP_NUM_THREADS": "2", "MKL_NUM_THREADS": "2"}
    assert thread_defaults(8, {"MKL_NUM_THREADS": "3"}) == {"OMP_NUM_THREADS": "1"}
    assert thread_defaults(1, {}) == {}  # one point at a time keeps torch's default
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    sweep = load_sweep_file(_sweep(tmp_path, ["a"]))
    run_sweep(sweep, tmp_path / "runs", workers=2)
    assert (tmp_path / "runs" / "threads.txt").read_text().split() == ["2", "2"]
    monkeypatch.setenv("OMP_NUM_THREADS", "3")  # the user's choice is kept
    run_sweep(sweep, tmp_path / "again", workers=2)
    assert (tmp_path / "again" / "threads.txt").read_text().split() == ["3", "3"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("method: grid\ncommand: ['${args_json_file}', '${args}']\n"
         "parameters: {a: {values: [1]}}\n", "cannot read"),
        ("method: grid\ncommand: [taskonomy, '${args_no_equals}']\n"
         "parameters: {a: {values: [1]}}\n", "args_no_equals.*cannot read"),
        ("method: random\nparameters: {a: {values: [1]}}\n", "cannot be enumerated"),
        ("method: grid\nparameters: {a: {min: 1, max: 2}}\n", "needs `values"),
        ("method: grid\ncommand: [python, x.py]\nparameters: {a: {values: [1]}}\n", "args"),
    ],
)
def test_bad_sweep_files(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ValueError, match=message):
        load_sweep_file(path)


def test_transfers_on_retrained_sources_are_found_and_set_aside(tmp_path: Path) -> None:
    from taskonomy.analysis.records import RunRecord, scan_records, write_record
    from taskonomy.experiments.sweep_executor import redo_stale, stale_transfer_points
    from taskonomy.experiments.sweep_files import SweepPoint

    runs = tmp_path / "runs"

    def finished(run_id: str, role: str, target: str, sources: tuple[str, ...] = (),
                 when: str = "2026-01-01T00:00:00", **config) -> None:
        write_record(RunRecord(run_id=run_id, role=role, target=target, sources=sources,
                               status="finished", finished_at=when, config=config), runs)

    finished("task-old", "task", "reshading")
    used = {"reshading": {"run_id": "task-old", "fingerprint": "f"}}
    finished("n-r", "transfer", "normal", ("reshading",), source_runs=used,
             model={"task_runs": str(runs)})
    finished("d-r", "transfer", "depth_zbuffer", ("reshading",), source_runs=used)
    finished("r-self", "baseline", "reshading", ("self",),
             source_runs={"reshading": {"run_id": "task-old", "fingerprint": ""}})
    # A random baseline as earlier versions recorded it (its encoder named after the target).
    finished("r-random", "baseline", "reshading", ("random",),
             source_runs={"reshading": {"run_id": "random-resnet50-seed0", "fingerprint": ""}})
    ids = ["n-r", "d-r", "r-self", "r-random", "todo"]
    points = [SweepPoint(i, {}, run_id) for i, run_id in enumerate(ids)]
    assert stale_transfer_points(points, runs) == {}
    finished("task-new", "task", "reshading", when="2026-02-01T00:00:00")
    stale = stale_transfer_points(points, runs)
    assert stale == {run_id: ["reshading: trained on task-old, latest task-new"]
                     for run_id in ("n-r", "d-r", "r-self")}
    # A finished record this version cannot read is warned about, not fatal.
    (runs / "odd").mkdir()
    (runs / "odd" / "record.json").write_text('{"status": "finished", "role": "teacher"}')
    with pytest.warns(UserWarning, match="staleness of odd unknown"):
        assert stale_transfer_points([SweepPoint(0, {}, "odd")], runs) == {}
    shutil.rmtree(runs / "odd")
    # A point another executor holds is left alone; the others move to RUNS/.stale/.
    with _exclusive(runs / "d-r" / ".executor.lock", wait=False) as mine:
        assert mine
        moved = redo_stale(points, runs)
    assert sorted(p.name.split("@")[0] for p in moved) == ["n-r", "r-self"]
    assert all(p.parent == runs / ".stale" and (p / "record.json").is_file() for p in moved)
    assert record_status(runs, "n-r") is None and record_status(runs, "d-r") == "finished"
    # A set-aside run is no result: the analysis and the source lookup never read it.
    assert {r.run_id for r in scan_records(runs).records} == {"task-old", "task-new", "d-r",
                                                             "r-random"}
    assert redo_stale(points, runs)[0].name.startswith("d-r@")


def test_a_copied_runs_folder_checks_staleness_against_its_own_task_runs(tmp_path: Path) -> None:
    from taskonomy.analysis.records import RunRecord, write_record
    from taskonomy.experiments.sweep_executor import stale_transfer_points
    from taskonomy.experiments.sweep_files import SweepPoint

    original, elsewhere = tmp_path / "runs", tmp_path / "shared_task_runs"

    def finished(folder: Path, run_id: str, role: str, sources: tuple[str, ...] = (),
                 when: str = "2026-01-01T00:00:00", **config) -> None:
        write_record(RunRecord(run_id=run_id, role=role, target="normal" if sources else
                               "reshading", sources=sources, status="finished", finished_at=when,
                               config=config), folder)

    used = {"reshading": {"run_id": "task-old", "fingerprint": ""}}
    finished(original, "task-old", "task")
    finished(original, "n-r", "transfer", ("reshading",), source_runs=used,
             runs_dir=str(original), model={"task_runs": str(original)})
    # Task runs kept in a folder of their own stay looked up there.
    finished(elsewhere, "task-old", "task")
    finished(original, "n-r-elsewhere", "transfer", ("reshading",), source_runs=used,
             runs_dir=str(original), model={"task_runs": str(elsewhere)})
    copy = tmp_path / "copy"
    shutil.copytree(original, copy)
    points = [SweepPoint(0, {}, "n-r"), SweepPoint(1, {}, "n-r-elsewhere")]
    finished(original, "task-new", "task", when="2026-02-01T00:00:00")  # in the original only
    assert stale_transfer_points(points, copy) == {}
    assert set(stale_transfer_points(points, original)) == {"n-r"}
    finished(copy, "task-new", "task", when="2026-02-01T00:00:00")  # now in the copy too
    assert set(stale_transfer_points(points, copy)) == {"n-r"}
    finished(elsewhere, "task-new", "task", when="2026-02-01T00:00:00")
    assert set(stale_transfer_points(points, copy)) == {"n-r", "n-r-elsewhere"}


def test_missing_task_runs_count_the_sources_and_self_targets_of_points_to_run(
        tmp_path: Path) -> None:
    from taskonomy.experiments.sweep_executor import missing_task_runs
    from taskonomy.experiments.sweep_files import SweepPoint

    runs = tmp_path / "runs"
    (runs / "done").mkdir(parents=True)
    (runs / "done" / "record.json").write_text(json.dumps({"status": "finished"}))
    points = [SweepPoint(0, {"model.transfer": "normal:self"}, "self-baseline"),
              SweepPoint(1, {"model.transfer": "normal:reshading"}, "done"),
              SweepPoint(2, {"model.transfer": "depth_zbuffer:reshading+normal"}, "to-do"),
              SweepPoint(3, {"model.transfer": "normal:pixels"}, "pixels"),
              SweepPoint(4, {"model.task": "normal"}, "a-task-run")]
    # self reads its target's network; a finished point and pixels read none.
    assert missing_task_runs(points, runs) == {"normal": 2, "reshading": 1}
