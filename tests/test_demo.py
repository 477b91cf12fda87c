"""The demo pipeline end to end: a minimal configuration (fast) and the default set (slow)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import yaml
from rich.console import Console

from taskonomy.analysis.records import RunRecord, read_records
from taskonomy.experiments.demo import (
    QUICK,
    DemoSettings,
    beam_values,
    run_demo,
    sanity_checks,
    split_sizes,
    transfer_sweep,
)
from taskonomy.experiments.report import render_report
from taskonomy.experiments.sweep_files import load_sweep_file

#: Two tasks, a handful of steps: 2 task runs + 2 × (1 + 3) transfer and baseline runs.
MINIMAL = DemoSettings(tasks=("depth_zbuffer", "normal"), buildings=5, points=2, views=2,
                       task_steps=3, batch_size=4, transfer_limit=4, transfer_epochs=1,
                       beam_width=2)


def _finished_at(runs: Path) -> dict[str, str | None]:
    return {r.run_id: r.finished_at for r in read_records(runs)}


def test_transfer_sweep_covers_every_pair_and_baseline(tmp_path: Path) -> None:
    settings = DemoSettings(tasks=("depth_zbuffer", "normal", "reshading"))
    sweep = transfer_sweep(settings, tmp_path)
    values = sweep["parameters"]["model.transfer"]["values"]
    assert len(values) == 3 * (2 + 3)
    assert "normal:reshading" in values and "normal:normal" not in values
    assert {"normal:pixels", "normal:random", "normal:self"} <= set(values)
    # a valid sweep file for the local executor and for `wandb sweep`
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(sweep, sort_keys=False))
    assert len(load_sweep_file(path).points()) == len(values)


def test_beam_values_take_pairs_of_the_top_sources() -> None:
    ranking = {"normal": ["reshading", "depth_zbuffer", "edge_texture"], "reshading": ["normal"]}
    assert beam_values(ranking, 2) == ["normal:depth_zbuffer+reshading"]
    assert len(beam_values(ranking, 3)) == 3


def test_bad_settings_name_the_problem(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown task"):
        run_demo(tmp_path / "d", ["normal", "no_such_task"])
    with pytest.raises(ValueError, match="at least two tasks"):
        run_demo(tmp_path / "d", ["normal"])
    with pytest.raises(ValueError, match="unknown demo setting"):
        run_demo(tmp_path / "d", ["normal", "reshading"], steps=3)
    with pytest.raises(ValueError, match=r"transfer_limit=256 exceeds the 60 training images "
                       r"\(4 training buildings × 5 points × 3 views\)"):
        DemoSettings(buildings=8).check()  # before any building is rendered
    other = tmp_path / "other"
    (other / "runs").mkdir(parents=True)
    with pytest.raises(ValueError, match="holds files that no demo made"):
        run_demo(other, ["normal", "reshading"])
    assert [p.name for p in other.iterdir()] == ["runs"]


def test_minimal_demo_end_to_end_and_rerun_redoes_nothing(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    console = Console(file=open(tmp_path / "log.txt", "w"), width=120)  # noqa: SIM115
    result = run_demo(out, settings=MINIMAL, workers=2, console=console)
    runs = out / "runs"
    records = read_records(runs)
    assert all(r.status == "finished" for r in records)
    roles = sorted((r.role, r.target, r.candidate) for r in records)
    assert ("task", "normal", "self") in roles
    assert sum(r.role == "task" for r in records) == 2
    assert sum(r.role == "transfer" for r in records) == 2
    assert {r.candidate for r in records if r.role == "baseline"} == {"pixels", "random", "self"}
    # analysis, sanity and the report
    assert (out / "analysis" / "affinities.csv").is_file()
    assert (out / "analysis" / "figures" / "affinity_after_ahp.png").is_file()
    assert list((out / "analysis" / "taxonomies").glob("budget_*.json"))
    assert result.report is not None and result.report.is_file()
    page = result.report.read_text()
    assert "Sanity of the science" in page and 'src="analysis/figures/' in page
    state = json.loads((out / "demo.json").read_text())
    assert state["stages"]["transfers"]["last"] == "done"
    assert [c.name for c in result.sanity][-1] == "every target's best source beats random"
    assert result.sanity[0].name == "every task network beats the best constant prediction"
    constants = json.loads((out / "constant_baselines.json").read_text())
    task_runs = {r.run_id for r in records if r.role == "task"}
    assert set(constants) == task_runs  # depth_zbuffer and normal, fitted once each

    # rerun: every stage skips, no record is rewritten
    before = _finished_at(runs)
    again = run_demo(out, settings=MINIMAL, workers=2, console=console)
    assert _finished_at(runs) == before
    for stage in ("synth", "pack", "tasks", "transfers", "analyze"):
        assert again.stages[stage]["last"] == "skipped", stage
    assert again.runs["demo_transfers"]["skipped"] == again.runs["demo_transfers"]["total"]

    # resuming with other settings is refused, naming what differs
    with pytest.raises(ValueError, match="task_steps"):
        run_demo(out, settings=MINIMAL.__class__(**{**MINIMAL.__dict__, "task_steps": 5}))


def test_report_needs_a_demo_folder(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="taskonomy demo"):
        render_report(tmp_path)


def _planted_records(quality: dict[str, dict[str, float]], seed: int = 0) -> list[RunRecord]:
    """Records of every target's candidates on 24 buildings × 15 views; a candidate's loss is
    its planted offset plus per-building and per-image noise."""
    rng = np.random.default_rng(seed)
    keys = [f"b{b}__{p}__{v}" for b in range(24) for p in range(5) for v in range(3)]
    records = []
    for target, offsets in quality.items():
        for name, offset in offsets.items():
            scene = np.repeat(rng.normal(0, 0.3, 24), 15)
            losses = dict(zip(keys, 1 + offset + scene + rng.normal(0, 0.3, len(keys)),
                              strict=True))
            role = ("task" if name == "self" else "baseline" if name in ("random", "pixels")
                    else "transfer")
            records.append(RunRecord(
                run_id=f"{target}_{name}", role=role, target=target,
                sources=() if role == "task" else (name,), status="finished",
                regime="full" if role == "task" else "256", per_image_losses=losses,
                finished_at="2026-01-01T00:00:00"))
    return records


def _demo_quality(depth_euclidean_into_zbuffer: float) -> dict[str, dict[str, float]]:
    base = {"self": -0.6, "random": 0.6, "pixels": 0.3, "inpainting": 0.4}
    return {
        "depth_zbuffer": {**base, "normal": 0.0, "reshading": 0.02,
                          "depth_euclidean": depth_euclidean_into_zbuffer},
        "depth_euclidean": {**base, "depth_zbuffer": 0.0, "normal": 0.1, "reshading": 0.2},
        "normal": {**base, "reshading": 0.0, "depth_zbuffer": 0.1, "depth_euclidean": 0.2},
        "reshading": {**base, "normal": 0.0, "depth_zbuffer": 0.1, "depth_euclidean": 0.2},
    }


def test_sanity_ranks_sources_up_to_ties_and_names_significant_rivals() -> None:
    # depth_euclidean third into depth_zbuffer, but within the test set's noise: passes
    near = {c.name: c for c in sanity_checks(_planted_records(_demo_quality(0.03)),
                                             DemoSettings().tasks)}
    assert [c.passed for c in near.values()] == [True, True, True]
    assert re.search(r"depth_zbuffer: \w+, \w+, depth_euclidean,", next(iter(near.values())).detail)
    # far behind both: fails, naming the sources that beat it significantly
    far = sanity_checks(_planted_records(_demo_quality(0.8)), DemoSettings().tasks)
    assert [c.passed for c in far] == [False, True, True]
    assert "into depth_zbuffer, normal, reshading, inpainting beat depth_euclidean" in far[0].detail


def test_a_top_2_check_over_two_sources_is_left_out() -> None:
    # With three tasks each target has two sources, both in its top 2: no evidence either way.
    tasks = ("normal", "reshading", "depth_zbuffer")
    quality = {t: {s: q for s, q in offsets.items() if s in (*tasks, "self", "random", "pixels")}
               for t, offsets in _demo_quality(0.0).items() if t in tasks}
    records = [r for r in _planted_records(quality) if r.target in tasks]
    names = [c.name for c in sanity_checks(records, tasks)]
    assert names == ["every target's best source beats random"]


def test_sanity_needs_the_best_source_to_beat_random_significantly() -> None:
    quality = _demo_quality(0.0)
    for offsets in quality.values():
        offsets["random"] = 0.01  # as good as the best source: no evidence of learning
    checks = sanity_checks(_planted_records(quality), DemoSettings().tasks)
    assert not checks[-1].passed and checks[-1].detail.count("←") == 4


def test_sanity_needs_every_task_network_to_beat_its_constant_prediction() -> None:
    records = _planted_records(_demo_quality(0.0))
    networks = {r.target: r.per_image_losses for r in records if r.role == "task"}
    constants = {task: {k: v + 0.6 for k, v in losses.items()}  # far above: every image lost
                 for task, losses in networks.items()}
    constants["normal"] = {k: v - 0.01 for k, v in networks["normal"].items()}  # below it
    checks = sanity_checks(records, DemoSettings().tasks, constants)
    assert checks[0].name == "every task network beats the best constant prediction"
    assert not checks[0].passed and len(checks) == 4
    assert checks[0].detail.split(": ", 1)[1].startswith("normal 1.0")  # the failure first
    del constants["normal"]
    assert sanity_checks(records, DemoSettings().tasks, constants)[0].passed


@pytest.mark.slow
def test_default_demo_passes_the_sanity_checks(tmp_path: Path) -> None:
    """The default task set: the paper's sanity facts hold on its results."""
    out = tmp_path / "demo"
    result = run_demo(out, workers=2)
    records = [r for r in read_records(out / "runs") if r.status == "finished"]
    checks = {c.name: c for c in sanity_checks(records, DemoSettings().tasks)}
    assert len(checks) == 3
    for check in checks.values():
        assert check.passed, f"{check.name}: {check.detail}"
    assert result.sane
    assert result.runs["demo_beam"]["total"] > 0


def test_split_sizes_keep_every_building_and_a_real_test_set() -> None:
    for buildings in (5, 6, 16, 64, 192):
        train, val, test = split_sizes(buildings)
        assert train + val + test == buildings and train >= 1 and val == 2 and test >= 2
    assert split_sizes(192) == (166, 2, 24)  # the default demo: 360 test images


def test_quick_settings_are_valid() -> None:
    QUICK.check()
    DemoSettings().check()


def test_full_demo_sweeps_parse_through_the_clis(tmp_path: Path) -> None:
    """`--full` starts correctly: its task and transfer grid points are accepted by the CLIs."""
    from taskonomy.experiments.commands.sweep_run import check_sweep
    from taskonomy.experiments.demo import full_settings, task_sweep, write_yaml
    from taskonomy.tasks.registry import task_names

    settings = full_settings()
    settings.check()
    assert set(settings.tasks) == set(task_names())
    tasks = load_sweep_file(write_yaml(tmp_path / "t.yaml", task_sweep(settings, tmp_path)))
    transfers = load_sweep_file(write_yaml(tmp_path / "x.yaml",
                                           transfer_sweep(settings, tmp_path)))
    n = len(settings.targets)
    assert len(transfers.points()) == n * (len(settings.tasks) - 1 + 3)
    assert check_sweep(tasks, str(tmp_path / "runs"), limit=2) == 2
    assert check_sweep(transfers, str(tmp_path / "runs"), limit=2) == 2


def test_an_interrupted_stage_keeps_its_time(tmp_path: Path) -> None:
    """Stage times add up over invocations, the interrupted one's included."""
    from taskonomy.experiments.demo import Demo

    demo = Demo(tmp_path / "d", MINIMAL, console=Console(file=open(tmp_path / "log", "w")))  # noqa: SIM115

    def interrupted() -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        demo._stage("transfers", interrupted)
    state = json.loads((tmp_path / "d" / "demo.json").read_text())
    assert state["stages"]["transfers"]["last"] == "interrupted"
    demo._stage("transfers", lambda: None)
    stage = json.loads((tmp_path / "d" / "demo.json").read_text())["stages"]["transfers"]
    assert stage["last"] == "done" and stage["seconds"] >= stage["last_seconds"] >= 0
    assert demo.result.stages["transfers"]["last"] == "done"


def test_quick_demo_shows_failed_checks_without_failing(monkeypatch: pytest.MonkeyPatch,
                                                        tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str]
                                                        ) -> None:
    import taskonomy.experiments.demo as demo
    from taskonomy.experiments.cli import main

    failed = demo.DemoResult(tmp_path, QUICK, sanity=[demo.SanityCheck("x", False, "")])
    monkeypatch.setattr(demo, "run_demo", lambda *args, **kwargs: failed)
    assert main(["demo", "--quick", "--out", str(tmp_path)]) == 0
    assert "shown, not required" in capsys.readouterr().err
    assert main(["demo", "--out", str(tmp_path)]) == 1  # the default demo's checks count
