"""``taskonomy sweep run FILE``: run a W&B grid sweep file locally, without a W&B server.

Every grid point still to run is first parsed by the CLI it targets, without running it (so a sweep
file with an unknown or renamed parameter is rejected before any run starts); then
:func:`taskonomy.experiments.sweep_executor.run_sweep` runs each point as its own process,
skipping points whose run record is finished (an interrupted sweep resumes where it stopped).
``--dry-run`` lists the points and their command lines.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import logging
import multiprocessing
import os
import re
import sys
from collections.abc import Collection, Sequence
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

COMMAND = ("sweep", "run")
HELP = "run a W&B grid sweep file locally (skips finished points; resumable)"
#: What an interrupt (Ctrl-C) leaves, printed in its place.
INTERRUPTED = "finished points are kept; run the same command again to run the rest"


class _Parsed(Exception):
    """Raised by a checking CLI once its arguments are parsed, before anything is built."""


def _checking(cli_class: type, holder: list[Any]) -> type:
    class Checking(cli_class):
        def before_instantiate_classes(self) -> None:
            holder.append(self)
            # Target, source and kind names, and files the options name, as a run would.
            if self.subcommand is not None:
                self.preflight()
            raise _Parsed

    return Checking


class LightningChecker:
    """Parses argument lists with a LightningCLI class, building its parser only once.

    Args:
        cli_class: The CLI class (a :class:`TaskonomyCLI` subclass).
        model: Its model class or factory.
    """

    def __init__(self, cli_class: type, model: Any) -> None:
        self.cli_class, self.model = cli_class, model
        self._cli: Any = None

    def __call__(self, argv: list[str]) -> None:
        """Parse ``argv`` (``fit --config ... --model.x=...``); exits like the CLI on errors."""
        from taskonomy.datamodules.datamodule import TaskonomyDataModule

        if self._cli is None:
            holder: list[Any] = []
            # Checking seeds nothing a run uses: keep Lightning's "Seed set to 0" out of the way.
            seed_log = logging.getLogger("lightning.fabric.utilities.seed")
            level = seed_log.level
            seed_log.setLevel(logging.WARNING)
            try:
                with contextlib.suppress(_Parsed):
                    _checking(self.cli_class, holder)(self.model, TaskonomyDataModule, args=argv)
            finally:
                seed_log.setLevel(level)
            self._cli = holder[0] if holder else None
            return
        cli = self._cli
        cli.parse_arguments(cli.parser, argv)
        cli.subcommand = cli.config["subcommand"]
        cli.preflight()

    def parsed_config(self, argv: list[str]) -> dict[str, Any]:
        """The config ``argv`` resolves to (its subcommand's part, as a nested dict).

        Raises:
            SystemExit: The CLI rejects the arguments.
        """
        self(argv)
        config = self._cli.config[self._cli.config["subcommand"]]
        return dict(config.as_dict() if hasattr(config, "as_dict") else config)


_CHECKERS: dict[str, LightningChecker] = {}


def _lightning_checker(command: str) -> LightningChecker | None:
    """The in-process parser of a LightningCLI command (``train``, ``transfer``), if known."""
    if command not in _CHECKERS:
        if command == "transfer":
            from taskonomy.experiments.transfer import TransferCLI
            from taskonomy.tasks.transfer import TransferTask

            _CHECKERS[command] = LightningChecker(TransferCLI, TransferTask)
        elif command == "train":
            from taskonomy.experiments.train import TrainCLI, task_model

            _CHECKERS[command] = LightningChecker(TrainCLI, task_model)
        else:
            return None
    return _CHECKERS[command]


def _cli_arguments(argv: Sequence[str]) -> list[str] | None:
    """The ``taskonomy`` arguments of a point's command line (``None``: not a taskonomy CLI)."""
    argv = list(argv)
    for i, item in enumerate(argv):
        if item == "taskonomy.experiments.cli" and i > 0 and argv[i - 1] == "-m":
            return argv[i + 1:]
        if item == "taskonomy" or item.endswith("/taskonomy"):
            return argv[i + 1:]
    return None


def check_point_arguments(argv: Sequence[str]) -> None:
    """Parse one point's command line with the CLI it runs, without running anything.

    Raises:
        ValueError: The CLI rejects the arguments; the message holds the parser's complaint.
    """
    from taskonomy.experiments import cli

    args = _cli_arguments(argv)
    if args is None:
        raise ValueError(
            f"the command {' '.join(argv)} does not run the taskonomy CLI; sweep files run "
            "`taskonomy ...` or `${interpreter} -m taskonomy.experiments.cli ...`"
        )
    modules = cli._command_modules()
    stderr = io.StringIO()
    try:
        with contextlib.redirect_stderr(stderr), contextlib.redirect_stdout(io.StringIO()):
            for module in modules:
                path = list(module.COMMAND)
                if getattr(module, "PASSTHROUGH", False) and args[: len(path)] == path:
                    checker = _lightning_checker(path[0])
                    if checker is None:
                        raise ValueError(f"no in-process parser for `taskonomy {path[0]}`")
                    checker(args[len(path):])
                    return
            cli.build_parser(modules).parse_args(args)
    except SystemExit as error:
        lines = [line.strip() for line in stderr.getvalue().strip().splitlines()]
        # The parser's complaint starts at its last "error:" line (usage and tips come before).
        starts = [i for i, line in enumerate(lines) if line.startswith("error:")]
        kept = lines[starts[-1]:] if starts else lines[-3:]
        detail = " ".join(line for line in kept if line).removeprefix("error:").strip()
        raise ValueError(detail or f"exit status {error.code}") from None


def points_to_run(points: Sequence[Any], runs_dir: str | Path,
                  redo: Collection[str] = ()) -> list[Any]:
    """The points the executor will run: those without a finished record, and ``redo``."""
    from taskonomy.experiments.sweep_executor import record_status

    return [p for p in points
            if p.run_id in redo or record_status(Path(runs_dir), p.run_id) != "finished"]


def check_sweep(sweep: Any, runs_dir: str, extra: Sequence[str] = (),
                limit: int | None = None, progress: bool = False,
                skip_finished: bool = False, processes: int | None = None,
                redo: Collection[str] = ()) -> int:
    """Parse every grid point (or the first ``limit``) of a sweep; returns the count checked.

    Args:
        sweep: The loaded sweep file.
        runs_dir: The runs folder the points would write to.
        extra: Arguments added to every point (``--set``).
        limit: Check only the first ``limit`` points.
        progress: Show a progress bar.
        skip_finished: Leave out points whose run record is finished (the executor skips them,
            so a resumed sweep re-checks only what it will run).
        processes: Parser processes; default one per available core (at most 16) on Linux
            when there are enough points, else this process alone. Parsing a point costs about
            0.1 s, so a first-order sweep (638 points) takes a minute on one core.
        redo: Run ids checked even when finished (they are to be run again).

    Raises:
        ValueError: A point's arguments are rejected; the message names the point, the sweep
            file and the parser's complaint (the first such point in grid order).
    """
    points = sweep.points(extra)
    if limit is not None:
        points = points[:limit]
    if skip_finished:
        points = points_to_run(points, runs_dir, redo)
    if not points:
        return 0
    # The first point builds the parser here (about 10 s); forked parser processes inherit it.
    _check_point(sweep, points[0], runs_dir, extra)
    rest = points[1:]
    if processes is None:
        processes = _default_processes(len(rest))
    bar = Progress(TextColumn("checking points"), BarColumn(), MofNCompleteColumn(),
                   TimeElapsedColumn(), disable=not progress, transient=True)
    if processes <= 1:
        with bar:
            for point in bar.track(rest, total=len(points), completed=1):
                _check_point(sweep, point, runs_dir, extra)
        return len(points)
    size = max(1, min(32, len(rest) // (4 * processes)))
    chunks = [(sweep, rest[i:i + size], runs_dir, list(extra)) for i in range(0, len(rest), size)]
    from taskonomy.datamodules.worker_pool import worker_pool

    # With fork, every worker is forked at the first submission, before the progress bar starts
    # its thread (no child inherits a held lock); a worker that dies breaks the pool with an
    # error rather than leaving the check waiting.
    with worker_pool(processes, multiprocessing.get_context("fork")) as pool:
        futures = [pool.submit(_check_chunk, chunk) for chunk in chunks]
        try:
            with bar:
                task = bar.add_task("check", total=len(points), completed=1)
                for (_, chunk, _, _), future in zip(chunks, futures, strict=True):
                    rejected = future.result()
                    if rejected is not None:
                        raise ValueError(rejected)
                    bar.advance(task, len(chunk))
        except BrokenProcessPool:
            raise RuntimeError("a parser process of the sweep check died (out of memory?); "
                               "nothing was run") from None
        except BaseException:
            pool.shutdown(wait=False, cancel_futures=True)  # the first rejection is enough
            raise
    return len(points)


def point_data_root(sweep: Any, point: Any, runs_dir: str, extra: Sequence[str]) -> str | None:
    """The ``data.root`` a point's command resolves to (``None``: not a training command)."""
    args = _cli_arguments(sweep.argv(point.params, [f"--run_id={point.run_id}",
                                                    f"--runs_dir={runs_dir}", *extra]))
    checker = _lightning_checker(args[0]) if args else None
    if args is None or checker is None:
        return None
    with contextlib.redirect_stderr(io.StringIO()), contextlib.redirect_stdout(io.StringIO()):
        try:
            config = checker.parsed_config(args[1:])
        except SystemExit:
            return None  # the check names what is wrong with it
    data = config.get("data") or {}
    data = data.get("init_args", data) if isinstance(data, dict) else {}
    root = data.get("root") if isinstance(data, dict) else None
    return str(root) if root else None


def _default_processes(count: int) -> int:
    """Parser processes for ``count`` points: one per core on Linux, none for small sweeps."""
    if sys.platform != "linux" or count < 32:
        return 1
    from taskonomy.experiments.sweep_executor import usable_cores

    return max(1, min(16, usable_cores(), count // 16))


def _check_chunk(job: tuple[Any, list[Any], str, list[str]]) -> str | None:
    """Parse a run of points in a parser process; the first rejection's message, if any."""
    sweep, points, runs_dir, extra = job
    for point in points:
        try:
            _check_point(sweep, point, runs_dir, extra)
        except ValueError as error:
            return str(error)
    return None


def _check_point(sweep: Any, point: Any, runs_dir: str, extra: Sequence[str]) -> None:
    argv = sweep.argv(point.params, [f"--run_id={point.run_id}", f"--runs_dir={runs_dir}",
                                     *extra])
    from taskonomy.experiments.sweep_files import config_paths

    missing = [path for path in config_paths(argv) if not os.path.isfile(path)]
    if missing:

        raise ValueError(
            f"{sweep.path}: config file(s) {', '.join(missing)} not found from {os.getcwd()}; "
            "run sweeps from the project folder (their configs are named relative to it), or "
            "name the configs by absolute path in the sweep file's command — nothing was run"
        )
    try:
        check_point_arguments(argv)
    except ValueError as error:
        # An argument of --set named in the complaint is the user's, not the sweep file's
        # (jsonargparse names it `--key=value` or `Parser key "key"`; `model.lr` must not
        # match `model.lr_milestone`).
        named = [a for a in extra if a.startswith("--") and re.search(
            rf"(?<![\w.]){re.escape(a[2:].split('=', 1)[0])}(?![\w.])", str(error))]
        if named:
            raise ValueError(
                f"--set {' '.join(a.removeprefix('--') for a in named)} is rejected by the CLI "
                f"({error}); fix the --set value — nothing was run"
            ) from None
        raise ValueError(
            f"{sweep.path}: point {point.index} {point.params} is rejected by the CLI "
            f"({error}); fix the sweep file — nothing was run"
        ) from None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the command's arguments."""
    parser.add_argument("file", help="W&B sweep file (method: grid)")
    parser.add_argument("--workers", type=int, default=1, help="points run at once")
    parser.add_argument("--runs", default="runs",
                        help="runs folder (records, logs, ledger; default: runs)")
    parser.add_argument("--dry-run", action="store_true",
                        help="list the points and their command lines, run nothing")
    parser.add_argument("--gpus-per-point", type=int, default=None, metavar="K",
                        help="GPUs each running point gets to itself (default: the visible GPUs "
                             "split evenly over --workers; 0: every point sees all of them)")
    parser.add_argument("--redo-stale", action="store_true",
                        help="run again the finished transfers whose source task runs were "
                             "retrained since (their folders move to RUNS/.stale/)")
    from taskonomy.experiments.sweep_executor import START_MODES

    parser.add_argument("--start", choices=START_MODES, default="auto",
                        help="how each point's process starts: warm forks it from a process "
                             "that has already imported the suite (about 4 s less per point), "
                             "fresh runs its command line anew; auto (default) is warm where "
                             "no GPU is visible")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="extra argument for every point, e.g. --set data.root=/data "
                             "(repeatable)")


def extra_arguments(pairs: Sequence[str]) -> list[str]:
    """``KEY=VALUE`` pairs (``--set``) as ``--KEY=VALUE`` arguments.

    Raises:
        ValueError: A pair without ``=``, or one that sets the run id or runs folder.
    """
    extra = []
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"--set takes KEY=VALUE, got {pair!r} (e.g. --set data.root=/data)")
        if key.lstrip("-") in ("run_id", "runs_dir"):
            raise ValueError(f"--set {key.lstrip('-')}=... would move the points' records out of "
                             "the executor's sight; it names each run itself: use --runs DIR "
                             "for the runs folder")
        if key.lstrip("-") == "data.root" and not value.strip():
            raise ValueError("--set data.root= is empty; give the shard root (--set "
                             "data.root=/data/shards)")
        extra.append(f"--{key.lstrip('-')}={value}")
    return extra


def check_set_against_grid(extra: Sequence[str], parameters: dict[str, list[Any]]) -> None:
    """Refuse a ``--set`` of a key the grid varies: every point would train the same thing.

    Raises:
        ValueError: Naming the parameter and its values.
    """
    for argument in extra:
        key = argument[2:].split("=", 1)[0]
        values = parameters.get(key, [])
        if len(values) > 1:
            raise ValueError(
                f"--set {key}=... would replace the grid's {len(values)} values of {key} "
                f"({', '.join(map(str, values[:5]))}{', ...' if len(values) > 5 else ''}) in "
                "every point, under each point's own name; drop it, or edit the sweep file"
            )


def matching_task_sweep(path: Path) -> Path | None:
    """The task sweep file beside a transfer sweep file, of the same setting.

    ``transfers_first_order_paper.yaml`` → ``tasks_paper.yaml``, ``transfers_demo_cpu.yaml`` →
    ``tasks_demo_cpu.yaml``; ``None`` where no such file exists.
    """
    for prefix in ("transfers_first_order_", "transfers_"):
        if path.stem.startswith(prefix):
            candidate = path.with_name(f"tasks_{path.stem[len(prefix):]}{path.suffix}")
            if candidate.is_file():
                return candidate
    return None


def run(args: argparse.Namespace) -> int:
    """Check every point, then run the sweep (or list it with ``--dry-run``)."""
    from taskonomy.experiments.sweep_executor import (
        failure_line,
        gpu_slots,
        missing_task_runs,
        record_status,
        redo_stale,
        run_sweep,
        stale_transfer_points,
        visible_gpus,
    )
    from taskonomy.experiments.sweep_files import load_sweep_file, shell_line

    if args.workers < 1:
        raise ValueError(f"--workers must be at least 1, got {args.workers}")
    if args.gpus_per_point is not None and args.gpus_per_point < 0:
        raise ValueError(f"--gpus-per-point must be ≥ 0, got {args.gpus_per_point}")
    if Path(args.runs).is_file():
        raise ValueError(f"--runs {args.runs} is a file; it names the folder of the run folders")
    sweep = load_sweep_file(args.file)
    extra = extra_arguments(args.set)
    check_set_against_grid(extra, sweep.parameters)
    console = Console()
    points = sweep.points(extra)
    indexes: dict[str, Any] = {}  # each task-runs folder is scanned once
    stale = stale_transfer_points(points, args.runs, indexes)
    redo = set(stale) if args.redo_stale else set()
    checked = check_sweep(sweep, args.runs, extra, progress=True, skip_finished=True, redo=redo)
    to_run = points_to_run(points, args.runs, redo)
    # One root for every point (a root per point, a parameter, fails those points alone).
    root = (point_data_root(sweep, to_run[0], args.runs, extra)
            if to_run and "data.root" not in sweep.parameters else None)
    from taskonomy.datamodules.shards import is_url

    if root is not None and not is_url(root) and not Path(root).is_dir():
        message = (f"the points read shards from data.root={root}, which does not exist here "
                   f"({Path.cwd()}): make them (`taskonomy data pack`, README section 1) or "
                   "point the sweep at them with --set data.root=DIR")
        if not args.dry_run:
            raise ValueError(f"{message} — nothing was run")
        console.print(f"[yellow]warning:[/yellow] {escape(message)}")
    lacking = missing_task_runs(points, args.runs, extra, indexes)
    if lacking:
        tasks = ", ".join(f"{task} ({count} points)" for task, count in sorted(lacking.items()))
        task_sweep = matching_task_sweep(Path(args.file))
        how = (f"`taskonomy sweep run {task_sweep} --runs {args.runs}`" if task_sweep else
               "the task sweep file of this sweep's setting: same resolution and encoder")
        console.print(
            f"[yellow]transfers still to run read task runs that {args.runs} lacks[/yellow]: "
            f"{tasks}; those points will fail. Train the tasks first ({how}), or point "
            "`--set model.task_runs=FOLDER` at the runs folder that has them"
        )
    if stale and not args.dry_run:
        first = next(iter(stale))
        if args.redo_stale:
            moved = redo_stale([p for p in points if p.run_id in stale], args.runs)
            console.print(f"{len(moved)} finished transfer(s) trained on since-retrained sources "
                          f"moved to {args.runs}/.stale/ and queued again")
        else:
            console.print(
                f"[yellow]{len(stale)} finished transfer(s) were trained on source task runs "
                f"retrained since[/yellow] (e.g. {first}: {'; '.join(stale[first])}); they "
                "are skipped as finished: add --redo-stale to set them aside and run them again"
            )
    if args.dry_run:
        table = Table(title=f"{sweep.name}: {len(points)} points ({checked} to run, all "
                            "of them parsed)")
        for column in ("#", "run id", "status", "command"):
            table.add_column(column, overflow="fold")
        for point in points:
            argv = sweep.argv(point.params, [f"--run_id={point.run_id}",
                                             f"--runs_dir={args.runs}", *extra])
            status = record_status(Path(args.runs), point.run_id) or "todo"
            if point.run_id in stale:
                status += " (sources retrained since)"
            table.add_row(str(point.index), point.run_id, status, shell_line(argv))
        Console(width=max(console.width, 160)).print(table)
        return 0
    slots = gpu_slots(visible_gpus(), args.workers, args.gpus_per_point)
    if slots is not None and args.workers > 1:
        console.print("GPUs per worker: " + "; ".join(slots))
    results = run_sweep(sweep, args.runs, workers=args.workers, extra_args=extra,
                        device_slots=slots, start=args.start)
    counts: dict[str, int] = {}
    for result in results:
        counts[result.outcome] = counts.get(result.outcome, 0) + 1
    console.print(f"{sweep.name}: " + ", ".join(f"{n} {o}" for o, n in sorted(counts.items())))
    busy = sum(r.outcome == "busy" for r in results)
    if busy:
        console.print(f"{busy} point(s) are being run by another executor on {args.runs}; run "
                      "the same command again once it is done to pick up what it left")
    failed = [r for r in results if r.outcome == "failed"]
    for result in failed:
        console.print(failure_line(Path(args.runs), result))
    return 1 if failed else 0
