"""Run a W&B grid sweep file on one machine, without a W&B server.

Each grid point runs as its own process (a crash of one point never takes the others down;
where no GPU is visible, points of this suite's CLI are forked from a process that has already
imported it, see :mod:`~taskonomy.experiments.warm_start`), with
``--run_id=ID --runs_dir=RUNS`` appended to its arguments so that it writes its run record to
``RUNS/ID/record.json``. A point whose record says ``finished`` is skipped, so an interrupted
executor picks up where it stopped. A ledger ``RUNS/.sweeps/NAME.json`` keeps each point's status,
exit code, attempts and log path; it is rewritten atomically after every change, merging with what
other executors on the same folder wrote.

Several executors may share a runs folder: a point is run by whoever takes its lock file
(``RUNS/ID/.executor.lock``; the others report it ``busy``). A point's process left running by an
executor that was killed is stopped before the point runs again, but only when the ledger's host,
pid and process start time all still match, so a reboot or a reused pid never hits another
process.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import queue
import shutil
import signal
import socket
import subprocess
import threading
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from taskonomy.experiments.sweep_files import SweepFile, SweepPoint
from taskonomy.experiments.warm_start import (
    WarmProcess,
    WarmStarter,
    WarmStartError,
    process_identity,
    suite_arguments,
)

RECORD_NAME = "record.json"


def record_status(runs_dir: Path, run_id: str) -> str | None:
    """Status of a run's record (``finished``, ``failed``, ...), or None if it has none."""
    path = runs_dir / run_id / RECORD_NAME
    try:
        status = json.loads(path.read_text()).get("status")
    except (FileNotFoundError, json.JSONDecodeError, AttributeError):
        return None
    return status if isinstance(status, str) else None  # a record without one: to do


def failure_reason(runs_dir: Path, run_id: str, limit: int = 300) -> str | None:
    """Why a point failed, in one line: its record's error, else its log's last error line."""
    path = runs_dir / run_id
    reason = None
    try:
        reason = json.loads((path / RECORD_NAME).read_text()).get("error")
    except (OSError, json.JSONDecodeError, AttributeError):
        pass
    if not reason:  # rejected before a record was written (e.g. by the argument parser)
        try:
            text = (path / "executor.log").read_text(errors="replace")
        except OSError:
            text = ""
        # The log is appended to by every attempt: only the last one's lines count.
        lines = text.rsplit("\n=== attempt ", 1)[-1].splitlines()[1:][-200:]
        errors = [line for line in lines if "error" in line.lower()]
        candidates = errors or [line for line in lines if line.strip()]
        reason = candidates[-1] if candidates else None
    if not reason:
        return None
    reason = " ".join(str(reason).split())
    return reason if len(reason) <= limit else reason[: limit - 1] + "…"


def failure_line(runs_dir: Path, result: PointResult) -> str:
    """A failed point for a console, as rich markup: its id, exit status, reason and log."""
    from rich.markup import escape

    reason = failure_reason(runs_dir, result.point.run_id)
    code = result.returncode
    # A signal ended it and its run did not record a failure in this attempt (a run that failed
    # on one DDP rank gets the others killed: then the record's cause counts).
    record = runs_dir / result.point.run_id / RECORD_NAME
    attempt_began = time.time() - result.seconds - 1.0
    failed_now = (record_status(runs_dir, result.point.run_id) == "failed"
                  and record.stat().st_mtime >= attempt_began)
    if code is not None and code < 0 and not failed_now:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        reason = f"killed by {name}; the same command resumes it from its last checkpoint"
    return (f"[red]failed[/red] {result.point.run_id} (exit {result.returncode})"
            + (f": {escape(reason)}" if reason else "")
            + f"; log: {runs_dir / result.point.run_id / 'executor.log'}")


def missing_task_runs(points: Sequence[SweepPoint], runs_dir: str | Path,
                      extra: Sequence[str] = (),
                      indexes: dict[str, Any] | None = None) -> dict[str, int]:
    """Tasks that transfer points still to run read, but that have no finished task run.

    Args:
        points: Sweep points; those with a finished record are left out, and so are points
            that are no transfers (no ``model.target``/``model.transfer`` parameter).
        runs_dir: The runs folder (where transfers look for task runs unless
            ``model.task_runs`` says otherwise).
        extra: The executor's extra arguments (``--set``), which may set ``model.task_runs``.
        indexes: Task-run indexes by folder (:func:`task_run_index`), shared between calls.

    Returns:
        Task → number of points that need it (``self`` baselines need their target's run).
    """
    from taskonomy.tasks.transfer_identity import resolve_identity

    runs = Path(runs_dir)
    default = str(runs)
    for argument in extra:
        if argument.startswith("--model.task_runs="):
            default = argument.split("=", 1)[1]
    missing: dict[str, int] = {}
    for point in points:
        params = point.params
        if "model.target" not in params and "model.transfer" not in params:
            continue
        if record_status(runs, point.run_id) == "finished":
            continue
        try:
            identity = resolve_identity(params.get("model.target"), params.get("model.sources"),
                                        params.get("model.kind") or "transfer",
                                        params.get("model.transfer"))
        except ValueError:
            continue  # the pre-check names what is wrong with it
        if identity.role == "transfer":
            needed: tuple[str, ...] = identity.sources
        elif identity.sources == ("self",):
            needed = (identity.target,)
        else:
            continue
        found = task_run_index(params.get("model.task_runs") or default, indexes).latest()
        for task in needed:
            if task not in found:
                missing[task] = missing.get(task, 0) + 1
    return missing


#: Folder of the runs folder where ``--redo-stale`` moves transfers it runs again.
STALE_FOLDER = ".stale"


def task_run_index(folder: str | Path, indexes: dict[str, Any] | None = None) -> Any:
    """The :class:`~taskonomy.analysis.records.TaskRunIndex` of a runs folder (empty if absent).

    Args:
        folder: Where task runs are looked up.
        indexes: Indexes by folder, shared between calls, so each folder is scanned once.
    """
    from taskonomy.analysis.records import TaskRunIndex, scan_records

    indexes = {} if indexes is None else indexes
    key = str(folder)
    if key not in indexes:
        found = Path(folder).is_dir()
        indexes[key] = TaskRunIndex(scan_records(folder).records if found else [])
    return indexes[key]


def source_runs_folder(record: Any, runs_dir: str | Path) -> Path:
    """Where a transfer's task runs are to be looked up now.

    Its recorded ``model.task_runs``, except where that was its own runs folder then (the
    usual case): a runs folder moved or copied elsewhere holds its task runs with it, and the
    recorded path would name the original folder's.
    """
    config = record.config if isinstance(record.config, dict) else {}
    recorded = (config.get("model") or {}).get("task_runs")
    own = config.get("runs_dir")
    if not recorded or (own and Path(recorded).resolve() == Path(own).resolve()):
        return Path(runs_dir)
    return Path(recorded)


def stale_transfer_points(points: Sequence[SweepPoint], runs_dir: str | Path,
                          indexes: dict[str, Any] | None = None) -> dict[str, list[str]]:
    """Finished transfer (and ``self`` baseline) points whose task runs were retrained since.

    Their point is skipped as finished, yet its readout was trained on other encoders than the
    latest task runs of its setting, which the analysis and later transfers use. The latest task
    runs are looked up where each transfer found its sources (:func:`source_runs_folder`).

    Args:
        points: The points to look at.
        runs_dir: The runs folder of their records.
        indexes: Task-run indexes by folder (:func:`task_run_index`), shared between calls.

    Returns:
        Run id → ``"task: trained on OLD, latest NEW"`` per retrained source.
    """
    from taskonomy.analysis.records import read_record

    runs = Path(runs_dir)
    indexes = {} if indexes is None else indexes
    stale: dict[str, list[str]] = {}
    for point in points:
        if record_status(runs, point.run_id) != "finished":
            continue
        try:
            record = read_record(runs / point.run_id / RECORD_NAME)
        except ValueError as error:  # finished, but not a record this version reads
            warnings.warn(f"staleness of {point.run_id} unknown: {error}", stacklevel=2)
            continue
        if record.role not in ("transfer", "baseline"):
            continue
        folder = source_runs_folder(record, runs)
        for task, old, new in task_run_index(folder, indexes).stale_sources(record):
            stale.setdefault(point.run_id, []).append(f"{task}: trained on {old}, latest {new}")
    return stale


def redo_stale(points: Sequence[SweepPoint], runs_dir: str | Path) -> list[Path]:
    """Set aside the stale points' run folders (:func:`set_aside`), so that they run again.

    Each point is taken under its executor lock and checked again there: a point another
    executor on the same runs folder is running, or has already set aside and run again, is
    left alone.

    Returns:
        Where the run folders went.
    """
    runs = Path(runs_dir)
    indexes: dict[str, Any] = {}
    moved: list[Path] = []
    for point in points:
        if record_status(runs, point.run_id) != "finished":
            continue
        with _exclusive(runs / point.run_id / ".executor.lock", wait=False) as mine:
            if mine and stale_transfer_points([point], runs, indexes):
                moved.append(set_aside(runs, point.run_id))
    return moved


def set_aside(runs_dir: str | Path, run_id: str) -> Path:
    """Move a run folder to ``RUNS/.stale/RUN_ID@TIME`` (kept, but no longer a result)."""
    runs = Path(runs_dir)
    stamp = time.strftime("%Y%m%dT%H%M%S")
    target = runs / STALE_FOLDER / f"{run_id}@{stamp}"
    target.parent.mkdir(parents=True, exist_ok=True)
    suffix = 1
    while target.exists():
        suffix += 1
        target = runs / STALE_FOLDER / f"{run_id}@{stamp}-{suffix}"
    shutil.move(runs / run_id, target)
    return target


@dataclass
class PointResult:
    """What happened to one point in this invocation."""

    point: SweepPoint
    outcome: str  # "skipped" | "finished" | "failed" | "busy" (another executor runs it)
    returncode: int | None = None
    seconds: float = 0.0
    started: str | None = None  # "warm" or "fresh" for a point that ran


def _orphan_of(entry: dict[str, Any]) -> int | None:
    """The pid of a point's process that a killed executor left running, if it still runs."""
    pid, identity = entry.get("pid"), entry.get("process")
    if not pid or not identity or entry.get("host") != socket.gethostname():
        return None
    return int(pid) if process_identity(int(pid)) == identity else None


@contextlib.contextmanager
def _exclusive(path: Path, *, wait: bool) -> Any:
    """Hold an advisory lock on ``path``; yields False (without waiting) when it is taken."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+b") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def gpu_slots(gpus: Sequence[str], workers: int, per_point: int | None = None) -> list[str] | None:
    """Split GPUs into one disjoint ``CUDA_VISIBLE_DEVICES`` value per worker.

    Args:
        gpus: The GPUs the executor may use (ids as ``CUDA_VISIBLE_DEVICES`` names them).
        workers: Points run at once.
        per_point: GPUs per point; ``None`` splits them evenly, ``0`` lets every point see all
            of them (points then share GPUs).

    Returns:
        One value per worker, or None when no split applies (no GPUs, or ``per_point`` 0).

    Raises:
        ValueError: Fewer GPUs than the split needs; the message names the fix.
    """
    if not gpus or per_point == 0:
        return None
    each = len(gpus) // workers if per_point is None else per_point
    if each < 1 or each * workers > len(gpus):
        raise ValueError(
            f"{workers} workers × {per_point or 1} GPU(s) each need {workers * (per_point or 1)} "
            f"GPUs, but {len(gpus)} are visible ({','.join(gpus)}); lower --workers, or pass "
            "--gpus-per-point 0 to let the points share GPUs"
        )
    return [",".join(gpus[i * each:(i + 1) * each]) for i in range(workers)]


def visible_gpus() -> list[str]:
    """The GPU ids this process may use: ``CUDA_VISIBLE_DEVICES``, else every CUDA device."""
    listed = os.environ.get("CUDA_VISIBLE_DEVICES")
    if listed is not None:
        return [g.strip() for g in listed.split(",") if g.strip() and g.strip() != "-1"]
    import torch

    return [str(i) for i in range(torch.cuda.device_count())] if torch.cuda.is_available() else []


def _kill_group(pid: int) -> None:
    """Terminate a point's process group left running by an executor that was killed."""
    _kill_groups([pid])


def _kill_groups(pids: Sequence[int], grace: float = 5.0) -> None:
    """SIGTERM every process group at once, then SIGKILL the ones alive after ``grace`` s.

    All groups share one grace period, so stopping N points takes at most ``grace`` seconds,
    not N times that.
    """
    alive = []
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGTERM)
            alive.append(pid)
    deadline = time.monotonic() + grace
    while alive and time.monotonic() < deadline:
        time.sleep(0.1)
        alive = [pid for pid in alive if _group_alive(pid)]
    for pid in alive:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)


def _group_alive(pid: int) -> bool:
    try:
        os.killpg(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


#: Signals that stop an executor like Ctrl-C does.
STOP_SIGNALS: tuple[signal.Signals, ...] = (signal.SIGTERM, signal.SIGHUP)


def _raise_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


class Ledger:
    """Per-point status of a sweep under a runs folder, written atomically.

    Every update re-reads the file under a lock and changes only its own point, so executors
    sharing the folder keep each other's entries.
    """

    def __init__(self, runs_dir: Path, sweep: SweepFile) -> None:
        self.path = runs_dir / ".sweeps" / f"{sweep.name}.json"
        self._lock = threading.Lock()
        self._file_lock = self.path.with_name(f".{self.path.name}.lock")
        self.data: dict[str, Any] = {"sweep": str(sweep.path), "points": {}}
        self.data = self._read()

    def _read(self) -> dict[str, Any]:
        try:
            data = json.loads(self.path.read_text())
        except FileNotFoundError:
            return self.data
        except json.JSONDecodeError as error:
            raise ValueError(f"sweep ledger {self.path} is not valid JSON ({error}); move it "
                             "away and rerun (finished points are found by their records)"
                             ) from error
        data.setdefault("points", {})
        return dict(data)

    def entry(self, run_id: str) -> dict[str, Any]:
        """A point's entry as last saved by any executor (empty if none)."""
        with self._lock, _exclusive(self._file_lock, wait=True):
            self.data = self._read()
            return dict(self.data["points"].get(run_id, {}))

    def update(self, run_id: str, **fields: Any) -> None:
        """Merge fields into a point's entry and save."""
        with self._lock, _exclusive(self._file_lock, wait=True):
            self.data = self._read()
            self.data["points"].setdefault(run_id, {}).update(fields)
            tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
            tmp.write_text(json.dumps(self.data, indent=2, default=str))
            os.replace(tmp, self.path)


def usable_cores() -> int:
    """Cores this process may use: its CPU affinity, capped by a cgroup v2 CPU quota."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # no affinity API on this OS
        cores = os.cpu_count() or 1
    try:
        with open("/sys/fs/cgroup/cpu.max") as limits:
            quota, period = limits.read().split()[:2]
    except (OSError, ValueError):
        return cores
    if quota == "max":
        return cores
    return max(1, min(cores, int(int(quota) // int(period))))


#: Thread-pool sizes of the math libraries torch uses on the CPU.
THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")


def thread_defaults(workers: int, environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """Thread counts that split the usable cores between ``workers`` points run at once.

    Points side by side would each start one OpenMP team per core, all spinning on the same
    cores; oversubscribed teams make CPU training several times slower. Variables the user set
    are kept.
    """
    environ = os.environ if environ is None else environ
    if workers <= 1:
        return {}  # one point at a time: torch's own default
    threads = str(max(1, usable_cores() // workers))
    return {name: threads for name in THREAD_VARIABLES if name not in environ}


#: How :func:`run_sweep` starts each point's process.
START_MODES = ("auto", "warm", "fresh")


class _LazyWarmStarter:
    """A :class:`WarmStarter` started by the first point that can use it.

    Points whose command is not this suite's CLI, and every point after the starter failed,
    start fresh (``start`` returns None); a failure is reported once in the starter's log.
    """

    def __init__(self, env: Mapping[str, str], log: Path, *, enabled: bool) -> None:
        self._env, self._log, self._enabled = dict(env), log, enabled
        self._starter: WarmStarter | None = None
        self._lock = threading.Lock()

    def start(self, argv: Sequence[str], env: Mapping[str, str],
              log: Path) -> WarmProcess | None:
        args = suite_arguments(argv)
        if args is None:
            return None
        with self._lock:
            if not self._enabled:
                return None
            if self._starter is None:
                self._log.parent.mkdir(parents=True, exist_ok=True)
                try:
                    self._starter = WarmStarter(self._env, self._log)
                except (WarmStartError, OSError) as error:
                    self._disable(error)
                    return None
            starter = self._starter
        try:
            return starter.start(args, env, log)
        except WarmStartError as error:
            with self._lock:
                self._disable(error)
            return None

    def _disable(self, error: BaseException) -> None:
        if not self._enabled:  # another worker's start failed the same way first
            return
        self._enabled = False
        with contextlib.suppress(OSError), open(self._log, "a") as log:
            log.write(f"warm starts stopped ({error}); points start as fresh processes\n")

    def close(self) -> None:
        with self._lock:
            if self._starter is not None:
                self._starter.close()
                self._starter = None


def run_sweep(
    sweep: SweepFile,
    runs_dir: str | Path,
    *,
    workers: int = 1,
    extra_args: list[str] | None = None,
    env: dict[str, str] | None = None,
    points: list[SweepPoint] | None = None,
    on_result: Callable[[PointResult], None] | None = None,
    device_slots: Sequence[str] | None = None,
    start: str = "auto",
) -> list[PointResult]:
    """Run every point of a sweep that has no finished record.

    Args:
        sweep: The parsed sweep file.
        runs_dir: Folder of run records (and the executor's ledger and logs).
        workers: Points run at once.
        extra_args: Arguments appended to every point's command line.
        env: Extra environment variables for the points (``WANDB_MODE`` defaults to offline,
            the thread counts to :func:`thread_defaults`).
        points: A subset of the grid (default: all points).
        on_result: Called after each point ends (or is skipped).
        device_slots: ``CUDA_VISIBLE_DEVICES`` values, one per worker (e.g. ``["0,1", "2,3"]``):
            each running point gets a slot of its own, so points never share GPUs (see
            :func:`gpu_slots`). ``None`` leaves the environment's GPUs to every point.
        start: How a point's process starts: ``"fresh"`` runs its command line anew;
            ``"warm"`` forks points that run this suite's CLI from a process that has already
            imported it (:mod:`~taskonomy.experiments.warm_start`; about 4 s less per point),
            other programs still start fresh; ``"auto"`` is warm where no GPU is visible and
            no ``device_slots`` are given. A warm point whose exit status was lost with its
            server counts as finished if its record is finished.

    Returns:
        One result per point, in grid order.
    """
    runs = Path(runs_dir)
    runs.mkdir(parents=True, exist_ok=True)
    ledger = Ledger(runs, sweep)
    todo = sweep.points(extra_args or ()) if points is None else points
    child_env = {**os.environ, "WANDB_MODE": os.environ.get("WANDB_MODE", "offline"),
                 **thread_defaults(workers), **(env or {})}
    if device_slots is not None and len(device_slots) < workers:
        raise ValueError(f"{len(device_slots)} device slot(s) for {workers} workers; give one "
                         "slot per worker")
    slots: queue.SimpleQueue[str | None] = queue.SimpleQueue()
    for slot in (device_slots if device_slots is not None else [None] * max(1, workers)):
        slots.put(slot)
    if start not in START_MODES:
        raise ValueError(f"start={start!r} is not one of {', '.join(START_MODES)}")
    warm = start == "warm" or (start == "auto" and device_slots is None and not visible_gpus())
    starter = _LazyWarmStarter(child_env, runs / ".sweeps" / f"{sweep.name}.warm-start.log",
                               enabled=warm)
    results: dict[int, PointResult] = {}
    children: set[subprocess.Popen[bytes] | WarmProcess] = set()
    children_lock = threading.Lock()
    stopping = threading.Event()

    def run_point(point: SweepPoint) -> PointResult:
        if record_status(runs, point.run_id) == "finished":
            ledger.update(point.run_id, status="finished", params=point.params)
            return PointResult(point, "skipped")
        with _exclusive(runs / point.run_id / ".executor.lock", wait=False) as mine:
            if not mine:  # another executor on this folder runs it now
                return PointResult(point, "busy")
            return run_locked(point)

    def run_locked(point: SweepPoint) -> PointResult:
        if record_status(runs, point.run_id) == "finished":  # finished while we waited
            return PointResult(point, "skipped")
        argv = sweep.argv(point.params, [f"--run_id={point.run_id}", f"--runs_dir={runs}",
                                         *(extra_args or [])])
        log_path = runs / point.run_id / "executor.log"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        previous = ledger.entry(point.run_id)
        orphan = _orphan_of(previous)
        if orphan is not None:  # an earlier executor was killed while this point ran
            _kill_group(orphan)
        attempts = int(previous.get("attempts", 0)) + 1
        ledger.update(point.run_id, status="running", params=point.params, argv=argv,
                      attempts=attempts, log=str(log_path), started=time.time())
        began = time.monotonic()
        slot = slots.get()
        point_env = child_env if slot is None else {**child_env, "CUDA_VISIBLE_DEVICES": slot}
        try:
            with open(log_path, "ab") as log:
                gpus = "" if slot is None else f" (CUDA_VISIBLE_DEVICES={slot})"
                log.write(f"\n=== attempt {attempts}{gpus}: {' '.join(argv)}\n".encode())
                log.flush()
                # Own process group: an interrupted executor (or the next one) can stop the
                # whole point, dataloader workers included.
                proc = starter.start(argv, point_env, log_path)
                if proc is None:
                    proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT,
                                            env=point_env, stdin=subprocess.DEVNULL,
                                            start_new_session=True)
                with children_lock:
                    children.add(proc)
                    if stopping.is_set():
                        _kill_group(proc.pid)
                ledger.update(point.run_id, pid=proc.pid, host=socket.gethostname(),
                              process=process_identity(proc.pid))
                returncode = proc.wait()
                with children_lock:
                    children.discard(proc)
        finally:
            slots.put(slot)
        seconds = time.monotonic() - began
        # None: a warm-started point whose status was lost with its server; its record tells.
        finished = returncode in (0, None) and record_status(runs, point.run_id) == "finished"
        outcome = "finished" if finished else "failed"
        ledger.update(point.run_id, status=outcome, returncode=returncode, pid=None,
                      process=None, seconds=round(seconds, 2))
        return PointResult(point, outcome, returncode, seconds,
                           "fresh" if isinstance(proc, subprocess.Popen) else "warm")

    columns = (TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
               TimeElapsedColumn(), TextColumn("{task.fields[last]}"))
    def stop_children() -> None:
        stopping.set()
        with children_lock:
            pids = [proc.pid for proc in children]
        _kill_groups(pids)

    previous: dict[signal.Signals, Any] = {}
    on_main_thread = threading.current_thread() is threading.main_thread()
    if on_main_thread:
        # SIGTERM (`kill`) and SIGHUP (a closed terminal or ssh session) behave like Ctrl-C:
        # stop the points, keep the ledger. Points run in their own sessions, so without this
        # a hang-up would leave them training with nobody to record their end.
        for signum in STOP_SIGNALS:
            if signal.getsignal(signum) is signal.SIG_IGN:
                continue  # e.g. SIGHUP under nohup: the user chose to outlive the terminal
            previous[signum] = signal.signal(signum, _raise_interrupt)
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
        if on_main_thread:  # a second Ctrl-C must not cut the stopping short
            previous.setdefault(signal.SIGINT, signal.getsignal(signal.SIGINT))
            for signum in previous:
                signal.signal(signum, signal.SIG_IGN)
        pool.shutdown(wait=False, cancel_futures=True)
        stop_children()
        raise
    finally:
        pool.shutdown(wait=True)
        starter.close()
        for signum, handler in previous.items():
            if handler is not None:  # None: a handler installed outside Python
                signal.signal(signum, handler)
    return [results[p.index] for p in todo]
