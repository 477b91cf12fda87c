"""The whole Taskonomy pipeline on synthetic data, on one machine: ``taskonomy demo``.

Stages, each skipped when its outputs exist (a rerun continues where a killed run stopped):

1. **synth**: procedural buildings in the released layout (:func:`~taskonomy.datamodules.synth.
   synthesize`, itself resumable building by building);
2. **pack**: train/val/test shards of the domains the tasks read (a split with a manifest is done);
3. **tasks**: one task network per task, a W&B grid sweep file run by the local executor
   (:func:`~taskonomy.experiments.sweep_executor.run_sweep`: one process per run, finished
   records skipped);
4. **transfers**: every first-order transfer between the tasks (source ≠ target) plus the
   ``pixels``, ``random`` and ``self`` baselines of every target, as a second sweep file;
5. **beam**: a small higher-order beam (order 2 from each target's top-``beam_width``
   first-order sources), as a third sweep file;
6. **analyze**: ``taskonomy analyze`` over the run records (win rates, AHP affinities,
   quality and gain, taxonomies for every budget, figures), redone only when records changed;
7. **sanity** checks of the science and the one-page HTML report
   (:mod:`taskonomy.experiments.report`).

The sweep files are written into the output folder from the chosen task set, so every stage can
also be rerun by hand (``taskonomy sweep run OUT/sweeps/demo_tasks.yaml --runs OUT/runs``) or
launched on W&B (``wandb sweep``) unchanged. Output layout::

    OUT/data/buildings/   synthetic buildings (released layout)
    OUT/data/shards/      packed shards (train, val, test)
    OUT/sweeps/           demo_tasks.yaml, demo_transfers.yaml, demo_beam.yaml
    OUT/runs/             one folder per run with its record.json (+ executor logs, ledger)
    OUT/analysis/         tables, figures, taxonomies (``taskonomy analyze``)
    OUT/demo.json         settings, stage times, run counts, sanity results
    OUT/report.html       the one-page report
"""

from __future__ import annotations

import argparse
import json
import os
import time
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from itertools import combinations
from pathlib import Path
from typing import Any

import yaml
from rich.console import Console

import taskonomy.experiments as experiments_package
from taskonomy.datamodules.domains import atomic_write_bytes
from taskonomy.experiments.sweep_files import WANDB_PROJECT

#: The default task set: the four tasks of the sanity checks (two depths, normals, shading: the
#: paper's tightly connected 3D cluster) plus inpainting, a 2D self-supervised task that is a
#: source only (the paper never reads out into it), so it adds a contrasting source at the cost
#: of one task run and four transfers: 5 task runs + 4 targets × (4 sources + 3 baselines) + a
#: width-2 beam (one order-2 transfer per target) = 37 processes. A 2D *target* (texture edges,
#: autoencoding) was left out: at the demo's 32 px readouts into texture edges gained nothing over
#: the random encoder's (its best source lost to ``random``), so it only added noise.
DEFAULT_TASKS = ("depth_zbuffer", "depth_euclidean", "normal", "reshading", "inpainting")
#: Tasks the sanity checks need.
SANITY_TASKS = ("depth_zbuffer", "depth_euclidean", "normal", "reshading")
#: Folder names inside the demo's output folder.
DATA, SHARDS, BUILDINGS, SWEEPS, RUNS, ANALYSIS = ("data", "data/shards", "data/buildings",
                                                   "sweeps", "runs", "analysis")
STATE_FILE = "demo.json"
#: Per-image test losses of each sanity task's best constant prediction (by task run).
CONSTANTS_FILE = "constant_baselines.json"
SPLITS = ("train", "val", "test")

CONFIGS = Path(experiments_package.__file__).parent / "configs"


@dataclass(frozen=True)
class DemoSettings:
    """What the demo synthesizes and trains.

    Attributes:
        tasks: The task set (all of them targets and sources).
        resolution: Image side in pixels (rendering, packing and training).
        buildings: Synthetic buildings; the last ones are validation and test
            (:func:`split_sizes`).
        points: Fixated points per building.
        views: Views per fixated point.
        encoder: Encoder of the task networks and of the ``random`` baseline.
        task_steps: Optimizer steps per task network.
        batch_size: Batch size of task training.
        transfer_limit: Training images of each transfer (the demo's data regime).
        transfer_epochs: Passes over those images per transfer.
        beam_width: Order-2 transfers combine each target's top ``beam_width`` first-order
            sources (0: no higher orders).
        precision: Lightning precision of every run (``32-true`` is the fastest on most CPUs).
        wandb: Log every run to W&B (offline unless ``WANDB_MODE`` says otherwise); off by
            default because each W&B run costs seconds of start-up.
        seed: Seed of the synthetic world.
    """

    tasks: tuple[str, ...] = DEFAULT_TASKS
    resolution: int = 32
    buildings: int = 192
    points: int = 5
    views: int = 3
    encoder: str = "resnet10_tiny"
    task_steps: int = 1200
    batch_size: int = 16
    transfer_limit: int = 256
    transfer_epochs: int = 20
    beam_width: int = 2
    precision: str = "32-true"
    wandb: bool = False
    seed: int = 0

    def check(self) -> None:
        """Validate the settings against the task registry.

        Raises:
            ValueError: Unknown or duplicate tasks, too few tasks, or impossible sizes.
        """
        from taskonomy.tasks.registry import get_spec, task_names

        known = task_names()
        unknown = [t for t in self.tasks if t not in known]
        if unknown:
            raise ValueError(f"unknown task(s) {unknown}; valid names: {', '.join(known)}")
        if len(set(self.tasks)) != len(self.tasks):
            raise ValueError(f"the task list {list(self.tasks)} names a task twice")
        if len(self.tasks) < 2:
            raise ValueError("the demo needs at least two tasks (a source and a target)")
        if not any(get_spec(t).target for t in self.tasks):
            raise ValueError(f"none of {list(self.tasks)} can be a transfer target")
        unlabelled = {t: missing for t in self.tasks if (missing := unrendered_domains(t))}
        if unlabelled:
            listed = "; ".join(f"{t} reads {', '.join(d)}" for t, d in unlabelled.items())
            raise ValueError(
                f"the synthetic renderer makes no files of the domains these tasks read: "
                f"{listed}. Leave them out of --tasks (the demo trains on the data it renders); "
                "train them with `taskonomy train fit` on data that has those files"
            )
        if self.buildings < 5:
            raise ValueError(f"the demo needs at least 5 buildings (2 val, 2 test, 1 train), "
                             f"got {self.buildings}")
        if self.resolution % 16 or self.resolution < 16:
            raise ValueError(f"resolution must be a multiple of 16, got {self.resolution}")
        for name in ("points", "views", "task_steps", "batch_size", "transfer_limit",
                     "transfer_epochs"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.beam_width < 0:
            raise ValueError(f"beam_width must be ≥ 0, got {self.beam_width}")
        train = split_sizes(self.buildings)[0]
        images = train * self.points * self.views
        if self.transfer_limit > images:
            raise ValueError(
                f"transfer_limit={self.transfer_limit} exceeds the {images} training images "
                f"({train} training buildings × {self.points} points × {self.views} views); "
                "lower transfer_limit or add buildings"
            )

    @property
    def targets(self) -> list[str]:
        """The tasks that can be transfer targets (the paper reads out into 22 of 26)."""
        from taskonomy.tasks.registry import get_spec

        return [t for t in self.tasks if get_spec(t).target]


def split_sizes(buildings: int) -> tuple[int, int, int]:
    """Train, validation and test building counts of a demo with ``buildings`` buildings.

    Two validation buildings follow training; an eighth of the buildings (at least two) are
    the test set, because the win rates and affinities are counted over test images and a
    handful of images makes them swing.
    """
    test = max(2, buildings // 8)
    return buildings - 2 - test, 2, test


#: A minimal configuration for a fast end-to-end check (tests, a first look): three tasks,
#: a handful of steps.
QUICK = DemoSettings(tasks=("depth_zbuffer", "normal", "reshading"), buildings=6, points=2,
                     views=2, task_steps=4, transfer_limit=8, transfer_epochs=1, batch_size=4,
                     beam_width=2)


def unrendered_domains(task: str) -> list[str]:
    """The domains ``task`` reads that synthetic buildings lack (a plugin's own domains)."""
    from taskonomy.datamodules.synth.labels import RENDERED_DOMAINS
    from taskonomy.tasks.registry import get_spec

    return [d for d in get_spec(task).domains if d not in RENDERED_DOMAINS]


def full_settings() -> DemoSettings:
    """Every registered task the renderer labels (the paper's 26, plugins on its domains)."""
    from taskonomy.tasks.registry import task_names

    tasks = tuple(t for t in task_names() if not unrendered_domains(t))
    return DemoSettings(tasks=tasks, buildings=64, points=6, views=3,
                        resolution=64, encoder="resnet10", task_steps=400, beam_width=5)


class DemoError(RuntimeError):
    """A stage could not finish (e.g. failed runs); rerunning the demo retries it."""


@dataclass
class SanityCheck:
    """One fact about the results that the paper's science predicts."""

    name: str
    passed: bool
    detail: str


@dataclass
class DemoResult:
    """What a demo invocation produced.

    Attributes:
        out: The output folder.
        settings: The settings used.
        stages: Stage name → ``{"seconds": ..., "status": "done"|"skipped", ...}``.
        runs: Sweep name → outcome → count.
        sanity: The sanity checks (empty when the analysis could not run).
        report: Path of the HTML report.
    """

    out: Path
    settings: DemoSettings
    stages: dict[str, dict[str, Any]] = field(default_factory=dict)
    runs: dict[str, dict[str, int]] = field(default_factory=dict)
    sanity: list[SanityCheck] = field(default_factory=list)
    report: Path | None = None

    @property
    def sane(self) -> bool:
        """Whether every sanity check passed (``False`` when none ran)."""
        return bool(self.sanity) and all(c.passed for c in self.sanity)


# ---------------------------------------------------------------------------- sweep files
def _command(kind: str, config: Path, overrides: Sequence[str]) -> list[str]:
    return ["taskonomy", kind, "fit", "--config", str(config), *overrides, "${args}"]


def _sweep(name: str, description: str, command: list[str], metric: str,
           parameters: dict[str, list[Any]]) -> dict[str, Any]:
    return {
        "name": name, "description": description, "project": WANDB_PROJECT,
        "program": "taskonomy", "method": "grid",
        "metric": {"name": metric, "goal": "minimize"}, "command": command,
        "parameters": {k: {"values": v} for k, v in parameters.items()},
    }


def _common_overrides(settings: DemoSettings, shards: Path) -> list[str]:
    overrides = [f"--data.root={shards}", f"--model.resolution={settings.resolution}",
                 f"--model.encoder={settings.encoder}", f"--trainer.precision={settings.precision}",
                 "--data.num_workers=0", "--trainer.enable_progress_bar=false",
                 "--trainer.enable_model_summary=false"]
    if not settings.wandb:
        overrides.append("--trainer.logger=false")
    return overrides


def task_sweep(settings: DemoSettings, shards: Path) -> dict[str, Any]:
    """The sweep of the task networks (the CPU config with the demo's sizes)."""
    steps = settings.task_steps
    overrides = _common_overrides(settings, shards) + [
        f"--trainer.max_steps={steps}", f"--data.batch_size={settings.batch_size}",
        # validate about four times per run (the curves; the final weights are tested)
        f"--data.epoch_size={max(1, steps // 4) * settings.batch_size}",
        f"--trainer.log_every_n_steps={max(1, min(10, steps // 4))}",
    ]
    return _sweep("demo_tasks", f"Task networks of the demo ({len(settings.tasks)} tasks)",
                  _command("train", CONFIGS / "cpu.yaml", overrides), "val/loss",
                  {"model.task": list(settings.tasks)})


def _transfer_overrides(settings: DemoSettings, shards: Path) -> list[str]:
    batch = min(16, settings.transfer_limit)
    return _common_overrides(settings, shards) + [
        f"--data.limit={settings.transfer_limit}", f"--data.batch_size={batch}",
        f"--trainer.max_epochs={settings.transfer_epochs}",
        f"--data.shuffle_buffer={settings.transfer_limit}", "--trainer.log_every_n_steps=1",
    ]


def transfer_sweep(settings: DemoSettings, shards: Path) -> dict[str, Any]:
    """Every first-order transfer between distinct tasks, plus the three baselines per target.

    A grid is a product, so the pairs are listed explicitly as ``model.transfer`` values
    (``target:source``) and the baselines as ``target:pixels`` and so on are spelled through
    ``model.target``/``model.kind`` in a second parameter set: both fit in one grid by using
    ``model.transfer`` for everything (the CLI accepts a baseline name as the only source).
    """
    values = []
    for target in settings.targets:
        values += [f"{target}:{source}" for source in settings.tasks if source != target]
        values += [f"{target}:{baseline}" for baseline in ("pixels", "random", "self")]
    return _sweep("demo_transfers",
                  f"First-order transfers and baselines of the demo ({len(values)} runs)",
                  _command("transfer", CONFIGS / "transfer_cpu.yaml",
                           _transfer_overrides(settings, shards)),
                  "test/loss", {"model.transfer": values})


def beam_values(ranking: dict[str, list[str]], width: int) -> list[str]:
    """Order-2 transfers of each target from the pairs of its top-``width`` ranked sources."""
    values = []
    for target, ranked in ranking.items():
        values += [f"{target}:{'+'.join(sorted(pair))}"
                   for pair in combinations(ranked[:width], 2)]
    return values


def write_yaml(path: Path, data: dict[str, Any], header: str = "") -> Path:
    """Write a YAML file atomically (keys in insertion order)."""
    text = header + yaml.safe_dump(data, sort_keys=False, width=100)
    atomic_write_bytes(path, text.encode("utf-8"))
    return path


# ---------------------------------------------------------------------------- state
def _load_state(out: Path) -> dict[str, Any]:
    path = out / STATE_FILE
    if path.is_file():
        try:
            return dict(json.loads(path.read_text()))
        except json.JSONDecodeError:
            return {}
    return {}


def _save_state(out: Path, state: dict[str, Any]) -> None:
    atomic_write_bytes(out / STATE_FILE, json.dumps(state, indent=1, default=str).encode())


def _settings_key(settings: DemoSettings) -> dict[str, Any]:
    data = asdict(settings)
    data["tasks"] = list(settings.tasks)
    return data


# ---------------------------------------------------------------------------- the pipeline
class Demo:
    """The demo pipeline on one output folder; :func:`run_demo` is the usual entry point.

    Args:
        out: Output folder (created; a folder of an earlier demo with the same settings resumes).
        settings: What to synthesize and train.
        workers: Runs (and synthesis processes) at once.
        console: Where progress goes.
    """

    def __init__(self, out: str | os.PathLike[str], settings: DemoSettings, *, workers: int = 2,
                 console: Console | None = None) -> None:
        settings.check()
        if workers < 1:
            raise ValueError(f"workers must be at least 1, got {workers}")
        self.out = Path(out)
        if self.out.exists() and not self.out.is_dir():
            raise NotADirectoryError(f"--out {self.out} exists and is not a folder; choose "
                                     "another path")
        self.settings = settings
        self.workers = workers
        self.console = console or Console()
        self.result = DemoResult(self.out, settings)
        if (self.out.is_dir() and not (self.out / STATE_FILE).is_file()
                and any(self.out.iterdir())):
            # Its runs would join the demo's analysis, and its files the demo's data.
            raise ValueError(f"--out {self.out} holds files that no demo made (no {STATE_FILE}); "
                             "choose a new or empty folder")
        self.state = _load_state(self.out)
        previous = self.state.get("settings")
        if previous is not None and previous != _settings_key(settings):
            changed = sorted(k for k, v in _settings_key(settings).items()
                             if previous.get(k) != v)
            raise ValueError(
                f"{self.out} holds a demo made with other settings (differs in: "
                f"{', '.join(changed)}); use another --out, or the original settings to resume"
            )
        self.state["settings"] = _settings_key(settings)
        self.state.setdefault("stages", {})
        self.out.mkdir(parents=True, exist_ok=True)
        _save_state(self.out, self.state)  # claims the folder, even if the first stage is killed

    # ------------------------------------------------------------------ helpers
    def path(self, name: str) -> Path:
        """A folder or file inside the output folder."""
        return self.out / name

    def _stage(self, name: str, work: Callable[[], str | None]) -> None:
        """Run one stage (``work`` returns ``"skipped"`` when it had nothing to do)."""
        self.console.rule(f"[bold]{name}")
        start = time.perf_counter()
        status = "interrupted"
        try:
            status = work() or "done"
        except DemoError:
            status = "failed"
            raise
        finally:
            # Times add up over invocations, an interrupted or failed one's included, so a
            # resumed demo reports its total work.
            seconds = time.perf_counter() - start
            entry = self.state["stages"].setdefault(name, {"seconds": 0.0})
            entry["seconds"] = round(float(entry.get("seconds", 0.0)) + seconds, 2)
            entry["last"] = status
            entry["last_seconds"] = round(seconds, 2)
            self.result.stages[name] = dict(entry)
            _save_state(self.out, self.state)
            self.console.print(f"[dim]{name}: {status} in {seconds:.1f} s[/]")

    # ------------------------------------------------------------------ stages
    def synth(self) -> str | None:
        """Render the buildings (skips complete ones)."""
        from taskonomy.datamodules.synth import synthesize

        s = self.settings
        folder = self.path(BUILDINGS)
        names = [f"synth{i:03d}" for i in range(s.buildings)]
        if all((folder / n).is_dir() for n in names):
            return "skipped"
        train, val, _ = split_sizes(s.buildings)
        splits = {n: "train" if i < train else "val" if i < train + val else "test"
                  for i, n in enumerate(names)}
        synthesize(folder, buildings=names, resolution=s.resolution, seed=s.seed,
                   workers=min(self.workers, s.buildings), points=s.points, views=s.views,
                   split_names=splits, progress=True)
        return None

    def pack(self) -> str | None:
        """Pack the splits with the domains the tasks read (skips splits with a manifest)."""
        from taskonomy.datamodules.datamodule import task_domains
        from taskonomy.datamodules.packer import PackConfig, pack
        from taskonomy.datamodules.splits import split_buildings

        source = self.path(BUILDINGS)
        split_file = source / "train_val_test_synth.csv"
        domains = sorted(set(task_domains(self.settings.tasks)) | {"rgb"})
        did = False
        for split in SPLITS:
            if (self.path(SHARDS) / split / "manifest.json").is_file():
                continue
            self.console.print(f"packing {split}: {', '.join(domains)}")
            per_shard = self.settings.points * self.settings.views * 2
            pack(PackConfig(source=source, out=self.path(SHARDS), split=split,
                            buildings=split_buildings(split_file, split), domains=domains,
                            shard_size=per_shard, workers=1, resume=True), progress=True)
            did = True
        return None if did else "skipped"

    def _run_sweep(self, sweep_path: Path, label: str) -> str | None:
        from taskonomy.experiments.sweep_executor import failure_line, record_status, run_sweep
        from taskonomy.experiments.sweep_files import load_sweep_file

        sweep = load_sweep_file(sweep_path)
        runs = self.path(RUNS)
        points = sweep.points()
        todo = [p for p in points if record_status(runs, p.run_id) != "finished"]
        self.console.print(f"{label}: {len(points)} runs, {len(points) - len(todo)} already "
                           f"finished, {len(todo)} to run with {self.workers} worker(s)")
        counts = self.result.runs.setdefault(sweep.name, {})
        counts["total"] = len(points)
        counts["skipped"] = len(points) - len(todo)
        if not todo:
            counts.setdefault("finished", 0)
            return "skipped"
        results = run_sweep(sweep, runs, workers=self.workers, points=todo)
        for result in results:
            counts[result.outcome] = counts.get(result.outcome, 0) + 1
        failed = [r for r in results if r.outcome == "failed"]
        for r in failed[:10]:
            self.console.print(failure_line(runs, r))
        return None

    def tasks(self) -> str | None:
        """Train the task networks."""
        path = write_yaml(self.path(SWEEPS) / "demo_tasks.yaml",
                          task_sweep(self.settings, self.path(SHARDS).resolve()))
        result = self._run_sweep(path, "task networks")
        missing = self._unfinished_tasks()
        if missing:
            raise DemoError(
                f"task runs {missing} did not finish, so no transfer can read them; see the "
                f"executor logs under {self.path(RUNS)} and run the demo again to retry"
            )
        return result

    def _unfinished_tasks(self) -> list[str]:
        from taskonomy.analysis.records import read_records

        done = {r.target for r in read_records(self.path(RUNS))
                if r.role == "task" and r.status == "finished"}
        return [t for t in self.settings.tasks if t not in done]

    def transfers(self) -> str | None:
        """Run every first-order transfer and the baselines."""
        path = write_yaml(self.path(SWEEPS) / "demo_transfers.yaml",
                          transfer_sweep(self.settings, self.path(SHARDS).resolve()))
        result = self._run_sweep(path, "first-order transfers and baselines")
        failed = self.result.runs["demo_transfers"].get("failed", 0)
        if failed:
            raise DemoError(
                f"{failed} first-order runs failed (logs under {self.path(RUNS)}); the analysis "
                "needs all of them: fix the cause and run the demo again (finished runs are kept)"
            )
        return result

    def _records(self) -> list[Any]:
        from taskonomy.analysis.records import read_records

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # unfinished records are expected mid-demo
            return [r for r in read_records(self.path(RUNS)) if r.status == "finished"]

    def beam(self) -> str | None:
        """Rank first-order sources per target and run the order-2 beam."""
        from taskonomy.experiments.beam import rank_sources, ranking_comment

        if self.settings.beam_width < 2:
            self.console.print("beam width below 2: no higher-order transfers")
            return "skipped"
        # every target with first-order transfers (the demo's task set by construction)
        ranking = rank_sources(self._records())
        values = beam_values(ranking, self.settings.beam_width)
        if not values:
            self.console.print("too few sources per target for order-2 transfers")
            return "skipped"
        sweep = _sweep("demo_beam",
                       f"Order-2 transfers from each target's top-{self.settings.beam_width} "
                       "first-order sources", _command(
                           "transfer", CONFIGS / "transfer_cpu.yaml",
                           _transfer_overrides(self.settings, self.path(SHARDS).resolve())),
                       "test/loss", {"model.transfer": values})
        path = write_yaml(self.path(SWEEPS) / "demo_beam.yaml", sweep,
                          header=ranking_comment(ranking))
        return self._run_sweep(path, "higher-order beam")

    def analyze(self) -> str | None:
        """``taskonomy analyze`` over the records; skipped when no record changed since."""
        from taskonomy.experiments.commands import analyze

        records = self._records()
        fingerprint = sorted(f"{r.run_id}@{r.finished_at}" for r in records)
        out = self.path(ANALYSIS)
        if self.state.get("analyzed") == fingerprint and (out / "summary.json").is_file():
            return "skipped"
        parser = argparse.ArgumentParser()
        analyze.add_arguments(parser)
        order = 2 if self.settings.beam_width >= 2 else 1
        args = parser.parse_args([str(self.path(RUNS)), "--out", str(out),
                                  "--max-order", str(order)])
        analyze.run(args)
        self.state["analyzed"] = fingerprint
        return None

    def _constant_baselines(self, records: Sequence[Any]) -> dict[str, dict[str, float]]:
        """Per sanity task, the test losses of its best constant prediction.

        Each is fitted once per task run and kept in ``OUT/constant_baselines.json``.
        """
        from taskonomy.analysis.records import latest_task_runs
        from taskonomy.experiments.train import task_model
        from taskonomy.tasks.constant_baseline import constant_baseline

        path = self.path(CONSTANTS_FILE)
        try:
            stored = json.loads(path.read_text()) if path.is_file() else {}
        except json.JSONDecodeError:
            stored = {}
        stored = stored if isinstance(stored, dict) else {}
        runs = {task: r for task, r in latest_task_runs(records).items()
                if task in SANITY_TASKS and task in self.settings.tasks}
        found: dict[str, dict[str, float]] = {}
        kept: dict[str, Any] = {}
        for task, record in sorted(runs.items()):
            entry = stored.get(record.run_id)
            if not entry or entry.get("finished_at") != record.finished_at:
                if "model" not in record.config:
                    self.console.print(f"[yellow]warning[/]: the record of task run "
                                       f"{record.run_id} has no model config; its network is "
                                       "not compared with a constant prediction")
                    continue
                self.console.print(f"fitting the best constant prediction of {task}")
                module = task_model(**record.config["model"])
                entry = {"finished_at": record.finished_at,
                         "losses": constant_baseline(module, self.path(SHARDS),
                                                     self.settings.resolution,
                                                     batch_size=self.settings.batch_size)}
            kept[record.run_id] = entry
            found[task] = entry["losses"]
        if kept != stored:  # entries of runs no longer in the folder are dropped
            atomic_write_bytes(path, json.dumps(kept).encode())
        return found

    def sanity(self) -> str | None:
        """Check the science on the task runs and the first-order results; print the verdicts."""
        records = self._records()
        self.result.sanity = sanity_checks(records, self.settings.tasks,
                                           self._constant_baselines(records))
        self.state["sanity"] = [asdict(c) for c in self.result.sanity]
        for check in self.result.sanity:
            mark = "[green]PASS[/]" if check.passed else "[red]FAIL[/]"
            self.console.print(f"{mark} {check.name}: {check.detail}")
        return None

    def report(self) -> str | None:
        """Write the HTML report."""
        from taskonomy.experiments.report import write_report

        self.state["runs"] = self.result.runs
        _save_state(self.out, self.state)
        self.result.report = write_report(self.out)
        self.console.print(f"report: {self.result.report}")
        return None

    def run(self) -> DemoResult:
        """Run (or resume) every stage."""
        self.out.mkdir(parents=True, exist_ok=True)
        started = time.perf_counter()
        for name, stage in (("synth", self.synth), ("pack", self.pack), ("tasks", self.tasks),
                            ("transfers", self.transfers), ("beam", self.beam),
                            ("analyze", self.analyze), ("sanity", self.sanity)):
            self._stage(name, stage)
        self.state["last_invocation_seconds"] = round(time.perf_counter() - started, 2)
        self.state["total_seconds"] = round(sum(float(s.get("seconds", 0.0))
                                                for s in self.state["stages"].values()), 2)
        self._stage("report", self.report)
        return self.result


# ---------------------------------------------------------------------------- sanity
def _first_order_tournaments(records: Sequence[Any], targets: Iterable[str]) -> dict[str, Any]:
    from taskonomy.analysis.affinities import compute_affinities
    from taskonomy.experiments.beam import first_order_records

    wanted = set(targets)
    result = compute_affinities(first_order_records(records))
    return {t: tour for t, tour in result.tournaments.items() if t in wanted}


def _ranked(tournament: Any, target: str) -> list[str]:
    """First-order sources of a target from best to worst affinity (baselines, itself out)."""
    from taskonomy.tasks.specs import BASELINES

    scored = [(float(a), n) for n, a in zip(tournament.candidates, tournament.affinity,
                                            strict=True)
              if n not in BASELINES and n != target and "+" not in n]
    return [n for _, n in sorted(scored, key=lambda x: (-x[0], x[1]))]


def _buildings(keys: Sequence[str]) -> list[str]:
    """The building of each sample key: the views of one building share a scene."""
    from taskonomy.datamodules.layouts import parse_key

    def building(key: str) -> str:
        try:
            return parse_key(key).building
        except ValueError:
            return key
    return [building(k) for k in keys]


def _beats(tournament: Any, a: str, b: str) -> bool:
    """Whether candidate ``a`` beats ``b`` significantly (a sign test over buildings)."""
    from taskonomy.analysis.winrates import significantly_better

    aligned = tournament.alignment
    rows = {name: i for i, name in enumerate(aligned.candidates)}
    return significantly_better(aligned.losses[rows[a]], aligned.losses[rows[b]],
                                _buildings(aligned.keys))


def _rivals(tournament: Any, ranking: Sequence[str], name: str) -> list[str]:
    """The sources that beat ``name`` significantly.

    ``name`` ranks in the top k up to ties when fewer than k sources do.
    """
    return [other for other in ranking if other != name and _beats(tournament, other, name)]


def _beats_constant(records: Sequence[Any], constants: Mapping[str, Mapping[str, float]]
                    ) -> SanityCheck:
    """Every task network's test losses against its best constant prediction's."""
    import numpy as np

    from taskonomy.analysis.records import latest_task_runs
    from taskonomy.analysis.winrates import significantly_better

    runs = latest_task_runs(records)
    failed: list[str] = []
    passed: list[str] = []
    for task, constant in sorted(constants.items()):
        losses = runs[task].per_image_losses if task in runs else {}
        keys = sorted(set(losses) & set(constant))
        if not keys:
            failed.append(f"{task} (no test images in common)")
            continue
        network = np.array([losses[k] for k in keys])
        floor = np.array([constant[k] for k in keys])
        ratio = network.mean() / floor.mean() if floor.mean() > 0 else float("inf")
        text = f"{task} {ratio:.2f} ({np.mean(network < floor):.0%})"
        (passed if significantly_better(network, floor, _buildings(keys)) else failed).append(text)
    return SanityCheck(
        "every task network beats the best constant prediction", not failed and bool(passed),
        "test loss ÷ the constant's (share of test images won): " + "; ".join(failed + passed))


def sanity_checks(records: Sequence[Any], tasks: Sequence[str],
                  constants: Mapping[str, Mapping[str, float]] | None = None
                  ) -> list[SanityCheck]:
    """The paper's sanity facts on task runs and first-order results.

    - (with ``constants``) every task network beats the best constant prediction of its task
      significantly: a network that does not beat it has learned nothing its transfers could read;
    - depth_zbuffer and depth_euclidean rank each other in their top 2;
    - normal and reshading rank each other in their top 2 (each pair only where one of the two
      has more than two sources: otherwise every source is in the top 2);
    - every target's best source beats ``random``.

    Both facts hold in the authors' 1k-image affinities restricted to these tasks. A test set of
    a couple of dozen buildings cannot order sources that are about as good as each other, so a
    source ranks in the top k when fewer than k others beat it *significantly*: it wins more
    test images than it loses and a sign test over buildings (each building's balance of wins
    flipped at random, since the views of one building share a scene) rejects a tie at 5 %.
    The best source must beat ``random`` significantly too. Checks whose tasks are not in
    ``tasks`` are left out.

    Args:
        records: The demo's run records.
        tasks: The demo's task set.
        constants: Per task, the per-image test losses of its best constant prediction
            (:func:`~taskonomy.tasks.constant_baseline.constant_baseline`).
    """
    checks = [_beats_constant(records, constants)] if constants else []
    targets = [t for t in tasks if any(r.role == "transfer" and r.target == t for r in records)]
    if not targets:
        return checks
    tournaments = _first_order_tournaments(records, targets)
    rankings = {t: _ranked(tournaments[t], t) for t in tournaments}
    for a, b in (("depth_zbuffer", "depth_euclidean"), ("normal", "reshading")):
        # With two sources or fewer, every source of a target is in its top 2: no evidence.
        if a in rankings and b in rankings and max(len(rankings[a]), len(rankings[b])) > 2:
            rivals = {a: _rivals(tournaments[a], rankings[a], b),
                      b: _rivals(tournaments[b], rankings[b], a)}
            ok = b in rankings[a] and a in rankings[b] and all(len(r) < 2 for r in rivals.values())
            behind = [f"; significantly, into {target}, {', '.join(rivals[target])} beat {source}"
                      for target, source in ((a, b), (b, a)) if len(rivals[target]) >= 2]
            checks.append(SanityCheck(
                f"{a} and {b} rank each other in the top 2 (up to ties)", ok,
                f"ranked by affinity over {tournaments[a].n_images} test images, {a}: "
                f"{', '.join(rankings[a])}; {b}: {', '.join(rankings[b])}" + "".join(behind)))
    beaten: list[str] = []
    lost: list[str] = []
    for target, t in tournaments.items():
        ranked = rankings[target]
        if not ranked or "random" not in t.candidates:
            continue
        best = ranked[0]
        rate = float(t.win_rates[t.candidates.index(best), t.candidates.index("random")])
        (beaten if _beats(t, best, "random") else lost).append(f"{target} ← {best} ({rate:.2f})")
    images = sorted({t.n_images for t in tournaments.values()})
    checks.append(SanityCheck(
        "every target's best source beats random", not lost and bool(beaten),
        f"win rate of the best source vs random over {'/'.join(map(str, images))} test images: "
        + "; ".join(lost + beaten)))
    return checks


# ---------------------------------------------------------------------------- entry point
def run_demo(out: str | os.PathLike[str] = "demo", tasks: Sequence[str] | None = None,
             full: bool = False, *, workers: int = 2, settings: DemoSettings | None = None,
             console: Console | None = None, **overrides: Any) -> DemoResult:
    """Run (or resume) the demo pipeline.

    Args:
        out: Output folder.
        tasks: Task set (default: :data:`DEFAULT_TASKS`, or all tasks with ``full``).
        full: Cover every registered task, at 64 px with the larger CPU encoder.
        workers: Runs at once.
        settings: Start from these settings instead of the defaults.
        console: Where progress goes.
        **overrides: Fields of :class:`DemoSettings` to change (e.g. ``task_steps=100``).

    Returns:
        The stages' times, the run counts, the sanity checks and the report's path.

    Raises:
        ValueError: Bad settings, or ``out`` holds a demo made with other settings.
    """
    base = settings or (full_settings() if full else DemoSettings())
    if tasks is not None:
        base = replace(base, tasks=tuple(tasks))
    if overrides:
        unknown = sorted(set(overrides) - set(asdict(base)))
        if unknown:
            raise ValueError(f"unknown demo setting(s) {unknown}; valid: "
                             f"{', '.join(asdict(base))}")
        base = replace(base, **overrides)
    return Demo(out, base, workers=workers, console=console).run()
