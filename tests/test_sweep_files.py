"""Every sweep file in sweeps/ is a valid W&B grid sweep whose points the CLI accepts.

A sample of each file's grid points is fed through the CLI parser, so renaming an argument of
`taskonomy train` or `taskonomy transfer` without updating the sweep files fails here.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from taskonomy.experiments.commands.sweep_run import check_point_arguments, check_sweep
from taskonomy.experiments.sweep_files import SweepFile, load_sweep_file
from taskonomy.tasks.registry import task_names
from taskonomy.tasks.specs import BASELINES

ROOT = Path(__file__).resolve().parents[1]
SWEEPS = sorted((ROOT / "sweeps").glob("*.yaml"))
#: Top-level keys of a W&B sweep configuration.
WANDB_KEYS = {"program", "method", "parameters", "command", "name", "description", "metric",
              "early_terminate", "project", "entity", "run_cap"}


@pytest.fixture(autouse=True)
def in_project_root(monkeypatch: pytest.MonkeyPatch) -> None:
    # Sweep commands name configs relative to the project folder, where sweeps are run from.
    monkeypatch.chdir(ROOT)


def sample(sweep: SweepFile, count: int = 4) -> list:
    points = sweep.points()
    step = max(1, len(points) // count)
    chosen = points[::step][:count] + [points[-1]]
    return list({p.index: p for p in chosen}.values())


def test_there_are_sweep_files() -> None:
    names = {p.name for p in SWEEPS}
    assert {"tasks_cpu.yaml", "tasks_paper.yaml", "transfers_first_order_cpu.yaml",
            "transfers_first_order_paper.yaml"} <= names
    assert (ROOT / "sweeps" / "README.md").is_file()


@pytest.mark.parametrize("path", SWEEPS, ids=lambda p: p.name)
def test_sweep_file_is_a_wandb_grid_the_cli_accepts(path: Path) -> None:
    sweep = load_sweep_file(path)
    assert set(sweep.raw) <= WANDB_KEYS, f"unknown W&B sweep keys {set(sweep.raw) - WANDB_KEYS}"
    assert sweep.method == "grid" and "${args}" in sweep.command
    assert sweep.command[0] == "taskonomy" or "${interpreter}" in sweep.command
    for config in [a for a in sweep.command if a.endswith(".yaml")]:
        assert (ROOT / config).is_file(), config
    for point in sample(sweep):
        argv = sweep.argv(point.params, [f"--run_id={point.run_id}", "--runs_dir=runs"])
        check_point_arguments(argv)
        # A W&B agent writes each value with Python's str (['normal'], True): accepted too.
        agent = [f"--{k}={v}" for k, v in point.params.items()]
        check_point_arguments([*argv[:-len(agent) - 2], *agent, *argv[-2:]])


def test_task_sweeps_cover_every_task() -> None:
    for name in ("tasks_cpu.yaml", "tasks_paper.yaml"):
        sweep = load_sweep_file(ROOT / "sweeps" / name)
        assert sweep.parameters["model.task"] == task_names()


def test_first_order_sweeps_cover_every_pair_and_baseline() -> None:
    targets = task_names(targets_only=True)
    sources = [[t] for t in task_names()] + [[b] for b in BASELINES]
    for name in ("transfers_first_order_cpu.yaml", "transfers_first_order_paper.yaml"):
        sweep = load_sweep_file(ROOT / "sweeps" / name)
        assert sweep.parameters["model.target"] == targets
        assert sorted(map(tuple, sweep.parameters["model.sources"])) == sorted(map(tuple,
                                                                                   sources))
        assert len(sweep.points()) == len(targets) * (len(task_names()) + 3)


def test_demo_sweeps_pair_up() -> None:
    tasks = load_sweep_file(ROOT / "sweeps" / "tasks_demo_cpu.yaml").parameters["model.task"]
    transfers = load_sweep_file(ROOT / "sweeps" / "transfers_demo_cpu.yaml")
    assert len(tasks) >= 6
    assert transfers.parameters["model.target"] == tasks
    assert sorted(s[0] for s in transfers.parameters["model.sources"]) == sorted([*tasks,
                                                                             *BASELINES])


def _transfer_sweep(tmp_path: Path, parameters: str) -> SweepFile:
    """A `taskonomy transfer` grid sweep file with the given ``parameters:`` block."""
    path = tmp_path / "sweep.yaml"
    path.write_text(
        "method: grid\n"
        "command: [taskonomy, transfer, fit, --config, "
        f"{os.path.join('experiments', 'configs', 'transfer_cpu.yaml')}, '${{args}}']\n"
        "parameters:\n" + parameters
    )
    return load_sweep_file(path)


def test_unknown_parameter_is_rejected(tmp_path: Path) -> None:
    sweep = _transfer_sweep(tmp_path, "  model.target: {values: [normal]}\n"
                                      "  model.sourcez: {values: [[reshading]]}\n")
    with pytest.raises(ValueError, match=r"point 0 .*model\.sourcez"):
        check_sweep(sweep, "runs")


def test_unknown_task_value_is_rejected_before_any_point_runs(tmp_path: Path) -> None:
    path = tmp_path / "tasks.yaml"
    path.write_text(
        "method: grid\n"
        "command: [taskonomy, train, fit, --config, "
        f"{os.path.join('experiments', 'configs', 'cpu.yaml')}, '${{args}}']\n"
        "parameters:\n  model.task: {values: [normal, reshade]}\n")
    with pytest.raises(ValueError, match=r"point 1 .*unknown task 'reshade'"):
        check_sweep(load_sweep_file(path), str(tmp_path / "runs"))


def _grid_with_unknown_source(tmp_path: Path) -> SweepFile:
    return _transfer_sweep(
        tmp_path,
        "  model.target: {values: [normal, depth_zbuffer, reshading]}\n"
        "  model.sources:\n"
        "    values: [[principal_curvature], [edge_texture], [nosuchtask], [keypoints2d]]\n")


def test_parallel_check_names_the_first_rejected_point(tmp_path: Path) -> None:
    sweep = _grid_with_unknown_source(tmp_path)
    first_bad = next(p for p in sweep.points() if p.params["model.sources"] == ["nosuchtask"])
    with pytest.raises(ValueError, match=rf"point {first_bad.index} .*nosuchtask"):
        check_sweep(sweep, str(tmp_path / "runs"), processes=2)


def test_check_leaves_out_finished_points(tmp_path: Path) -> None:
    sweep = _grid_with_unknown_source(tmp_path)
    good = [p for p in sweep.points() if p.params["model.sources"] != ["nosuchtask"]]
    bad = [p for p in sweep.points() if p not in good]
    runs = tmp_path / "runs"
    for point in bad:  # finished: the executor would skip them, so they need no parse
        (runs / point.run_id).mkdir(parents=True)
        (runs / point.run_id / "record.json").write_text('{"status": "finished"}')
    assert check_sweep(sweep, str(runs), skip_finished=True, processes=2) == len(good)
    with pytest.raises(ValueError, match="nosuchtask"):
        check_sweep(sweep, str(runs))


def test_transfers_whose_task_runs_are_missing_are_named(tmp_path: Path) -> None:
    from taskonomy.analysis.records import RunRecord, write_record
    from taskonomy.experiments.sweep_executor import missing_task_runs

    sweep = _transfer_sweep(tmp_path, "  model.target: {values: [normal, depth_zbuffer]}\n"
                                      "  model.sources: {values: [[reshading], [pixels], "
                                      "[self], [reshading, normal]]}\n")
    runs = tmp_path / "runs"
    points = sweep.points()
    assert missing_task_runs(points, runs) == {"reshading": 4, "normal": 3, "depth_zbuffer": 1}
    write_record(RunRecord(run_id="r", role="task", target="reshading").finished(
        metrics={}, per_image_losses={"k": 1.0}), runs)
    assert missing_task_runs(points, runs) == {"normal": 3, "depth_zbuffer": 1}
    elsewhere = tmp_path / "elsewhere"
    for task in ("normal", "depth_zbuffer"):
        write_record(RunRecord(run_id=task, role="task", target=task).finished(
            metrics={}, per_image_losses={"k": 1.0}), elsewhere)
    assert missing_task_runs(points, runs, [f"--model.task_runs={elsewhere}"]) == {
        "reshading": 4}


def test_a_transfer_sweep_names_the_task_sweep_of_its_setting() -> None:
    from taskonomy.experiments.commands.sweep_run import matching_task_sweep

    sweeps = Path(__file__).parents[1] / "sweeps"
    assert matching_task_sweep(sweeps / "transfers_first_order_paper.yaml") == (
        sweeps / "tasks_paper.yaml")
    assert matching_task_sweep(sweeps / "transfers_first_order_cpu.yaml") == (
        sweeps / "tasks_cpu.yaml")
    assert matching_task_sweep(sweeps / "transfers_demo_cpu.yaml") == sweeps / "tasks_demo_cpu.yaml"
    assert matching_task_sweep(sweeps / "higher_order.yaml") is None


def test_the_label_set_arguments_are_the_datamodules_label_set_options() -> None:
    from taskonomy.datamodules.selfsupervised import LABEL_SET_OPTIONS
    from taskonomy.experiments.sweep_files import LABEL_SET_ARGS

    assert LABEL_SET_ARGS == tuple(f"--data.{option}" for option in LABEL_SET_OPTIONS)
