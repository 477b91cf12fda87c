"""Run a W&B grid sweep file on one machine, without a W&B server.

Each grid point runs as its own process (a crash of one point never takes the others down), with
``--run_id=ID --runs_dir=RUNS`` appended to its arguments so that it writes its run record to
``RUNS/ID/record.json``. A point whose record says ``finished`` is skipped, so an interrupted
executor picks up where it stopped. A ledger ``RUNS/.sweeps/NAME.json`` keeps each point's status,
exit code, attempts and log path; it is rewritten atomically after every change.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from taskonomy.experiments.sweep_files import SweepFile, SweepPoint

RECORD_NAME = "record.json"


def record_status(runs_dir: Path, run_id: str) -> str | None:
    """Status of a run's record (``finished``, ``failed``, ...), or None if it has none."""
    path = runs_dir / run_id / RECORD_NAME
    try:
        return str(json.loads(path.read_text()).get("status"))
    except (FileNotFoundError, json.JSONDecodeError, AttributeError):
        return None


@dataclass
class PointResult:
    """What happened to one point in this invocation."""

    point: SweepPoint
    outcome: str  # "skipped" | "finished" | "failed"
    returncode: int | None = None
    seconds: float = 0.0


def _kill_group(pid: int) -> None:
    """Terminate a point's process group left running by an executor that was killed."""
    try:
        os.killpg(pid, signal.SIGTERM)
    except (ProcessLookupError, PermissionError):
        return
    for _ in range(50):
        try:
            os.killpg(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _raise_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


class Ledger:
    """Per-point status of a sweep under a runs folder, written atomically."""

    def __init__(self, runs_dir: Path, sweep: SweepFile) -> None:
        self.path = runs_dir / ".sweeps" / f"{sweep.name}.json"
        self._lock = threading.Lock()
        self.data: dict[str, Any] = {"sweep": str(sweep.path), "points": {}}
        if self.path.exists():
            self.data = json.loads(self.path.read_text())

    def update(self, run_id: str, **fields: Any) -> None:
        """Merge fields into a point's entry and save."""
        with self._lock:
            entry = self.data["points"].setdefault(run_id, {})
            entry.update(fields)
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_name(f".{self.path.name}.tmp")
            tmp.write_text(json.dumps(self.data, indent=2, default=str))
            os.replace(tmp, self.path)


def run_sweep(
    sweep: SweepFile,
    runs_dir: str | Path,
    *,
    workers: int = 1,
    extra_args: list[str] | None = None,
    env: dict[str, str] | None = None,
    points: list[SweepPoint] | None = None,
    on_result: Callable[[PointResult], None] | None = None,
) -> list[PointResult]:
    """Run every point of a sweep that has no finished record.

    Args:
        sweep: The parsed sweep file.
        runs_dir: Folder of run records (and the executor's ledger and logs).
        workers: Points run at once.
        extra_args: Arguments appended to every point's command line.
        env: Extra environment variables for the points (``WANDB_MODE`` defaults to offline).
        points: A subset of the grid (default: all points).
        on_result: Called after each point ends (or is skipped).

    Returns:
        One result per point, in grid order.
    """
    runs = Path(runs_dir)
    runs.mkdir(parents=True, exist_ok=True)
    ledger = Ledger(runs, sweep)
    todo = sweep.points() if points is None else points
    child_env = {**os.environ, "WANDB_MODE": os.environ.get("WANDB_MODE", "offline"),
                 **(env or {})}
    results: dict[int, PointResult] = {}
    children: set[subprocess.Popen[bytes]] = set()
    children_lock = threading.Lock()
    stopping = threading.Event()

    def run_point(point: SweepPoint) -> PointResult:
        if record_status(runs, point.run_id) == "finished":
            ledger.update(point.run_id, status="finished", params=point.params)
            return PointResult(point, "skipped")
        argv = sweep.argv(point.params, [f"--run_id={point.run_id}", f"--runs_dir={runs}",
                                         *(extra_args or [])])
        log_path = runs / point.run_id / "executor.log"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        attempts = int(ledger.data["points"].get(point.run_id, {}).get("attempts", 0)) + 1
        ledger.update(point.run_id, status="running", params=point.params, argv=argv,
                      attempts=attempts, log=str(log_path), started=time.time())
        stale = ledger.data["points"].get(point.run_id, {}).get("pid")
        if stale:  # an earlier executor was killed while this point ran
            _kill_group(int(stale))
        start = time.monotonic()
        with open(log_path, "ab") as log:
            log.write(f"\n=== attempt {attempts}: {' '.join(argv)}\n".encode())
            log.flush()
            # Own process group: an interrupted executor (or the next one) can stop the whole
            # point, dataloader workers included.
            proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=child_env,
                                    stdin=subprocess.DEVNULL, start_new_session=True)
            with children_lock:
                children.add(proc)
                if stopping.is_set():
                    _kill_group(proc.pid)
            ledger.update(point.run_id, pid=proc.pid)
            returncode = proc.wait()
            with children_lock:
                children.discard(proc)
        seconds = time.monotonic() - start
        finished = returncode == 0 and record_status(runs, point.run_id) == "finished"
        outcome = "finished" if finished else "failed"
        ledger.update(point.run_id, status=outcome, returncode=returncode, pid=None,
                      seconds=round(seconds, 2))
        return PointResult(point, outcome, returncode, seconds)

    columns = (TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
               TimeElapsedColumn(), TextColumn("{task.fields[last]}"))
    def stop_children() -> None:
        stopping.set()
        with children_lock:
            for proc in list(children):
                _kill_group(proc.pid)

    previous = None
    if threading.current_thread() is threading.main_thread():
        # SIGTERM (e.g. `kill`) behaves like Ctrl-C: stop the points, keep the ledger.
        previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    pool = ThreadPoolExecutor(max_workers=max(1, workers))
    try:
        with Progress(*columns, transient=False) as progress:
            bar = progress.add_task(f"sweep {sweep.name}", total=len(todo), last="")
            futures = [pool.submit(run_point, p) for p in todo]
            for future in as_completed(futures):
                result = future.result()
                results[result.point.index] = result
                progress.update(bar, advance=1, last=f"{result.outcome}: {result.point.run_id}")
                if on_result is not None:
                    on_result(result)
    except BaseException:
        # Interrupted: cancel queued points and stop the running ones before waiting for the
        # threads; their records stay unfinished, so the next invocation runs them again.
        pool.shutdown(wait=False, cancel_futures=True)
        stop_children()
        raise
    finally:
        pool.shutdown(wait=True)
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    return [results[p.index] for p in todo]
