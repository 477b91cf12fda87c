import json

import numpy as np
import pandas as pd
import pytest

from taskonomy.analysis.affinity_table import AffinityTable
from taskonomy.analysis.records import RunRecord, write_record
from taskonomy.experiments.cli import main

TASKS = ["normal", "reshading", "edge_texture"]
NOVEL = "surface_wetness"



def stderr(capsys: pytest.CaptureFixture[str]) -> str:
    """What a command printed to stderr, with rich's line wrapping undone.

    Off a terminal rich wraps at 80 columns, so where a line breaks moves with the length of the
    temporary paths in it.
    """
    return " ".join(capsys.readouterr().err.split())

def _write_runs(runs, *, skip=(), n=60, seed=0, drop_keys=None):
    rng = np.random.default_rng(seed)
    keys = [f"b0-p{i}" for i in range(n)]

    def add(run_id, role, target, sources, offset, regime="1k"):
        if run_id in skip:
            return
        use = keys[:-drop_keys[1]] if drop_keys and drop_keys[0] == run_id else keys
        losses = dict(zip(use, rng.random(len(use)) + offset, strict=True))
        record = RunRecord(run_id=run_id, role=role, target=target, sources=sources,
                           regime=regime, config={"seed": seed})
        write_record(record.finished(metrics={"test/loss": float(np.mean(list(losses.values())))},
                                     per_image_losses=losses), runs)

    for t in TASKS:
        for s in TASKS:
            add(f"{t}--{s}", "transfer", t, (s,), 0.1 if s == t else 0.4)
        add(f"{t}--reshading+normal", "transfer", t, ("normal", "reshading"), 0.2)
        add(f"{t}--random", "baseline", t, ("random",), 1.5)
        add(f"{t}--pixels", "baseline", t, ("pixels",), 0.8)
        add(f"{t}--task", "task", t, (), 0.0, regime="full")
    write_record(RunRecord(run_id="still-running", role="transfer", target="normal",
                           sources=("normal",), regime="1k"), runs)
    return add


def test_analyze_writes_tables_figures_and_taxonomies(tmp_path, capsys):
    runs, out = tmp_path / "runs", tmp_path / "out"
    _write_runs(runs)
    assert main(["analyze", str(runs), "--out", str(out), "--budgets", "1..3",
                 "--bootstrap", "20", "--solver", "highs"]) == 0
    err = stderr(capsys)
    assert "skipped 1 running" in err
    table = AffinityTable.read_csv(out / "affinities.csv")
    assert table.targets() == sorted(TASKS)
    assert table.normalization_error().max() < 1e-6
    assert table.has_confidence_intervals()
    frame = table.frame.set_index(["target", "sources"])
    assert frame.loc[("normal", "normal+reshading"), "order"] == 2
    assert frame.loc[("normal", "self"), "quality"] == pytest.approx(0.5)
    assert (out / "winrates" / "normal.png").is_file()
    wins = pd.read_csv(out / "winrates" / "normal.csv", index_col=0)
    np.testing.assert_allclose(wins.to_numpy() + wins.to_numpy().T, 1.0, atol=1e-9)
    assert "pixels" not in wins.index
    assert len(pd.read_csv(out / "records.csv")) == 3 * 7
    assert (pd.read_csv(out / "losses_summary.csv")["n_images"] == 60).all()
    for name in ("affinity_before_ahp", "affinity_after_ahp", "quality_gain", "budget_curve"):
        assert (out / "figures" / f"{name}.png").is_file()
        assert (out / "figures" / f"{name}.svg").is_file()
    # Three targets are too few for a similarity tree (every merge at one height).
    assert not (out / "figures" / "similarity_tree.png").exists()
    sweep = pd.read_csv(out / "taxonomies" / "sweep.csv")
    assert list(sweep["budget"]) == [1, 2, 3]
    best = json.loads((out / "taxonomies" / "budget_3.json").read_text())
    # with every task supervised, each target takes its highest-affinity candidate
    for edge in best["edges"]:
        rows = table.candidates(edge["target"])
        assert edge["label"] == rows[rows["sources"] != "random"]["sources"].iloc[0]
    assert (out / "taxonomies" / "budget_1.png").is_file()
    summary = json.loads((out / "summary.json").read_text())
    assert summary["regime"] == "1k" and "affinities.csv" in summary["files"]
    # the results folder is an --affinities source for `taskonomy taxonomy`
    capsys.readouterr()
    assert main(["taxonomy", "--affinities", str(out), "--budget", "3", "--json",
                 "--solver", "highs"]) == 0
    solved = json.loads(capsys.readouterr().out)
    assert solved["objective"] == pytest.approx(best["objective"])


def test_analyze_bad_input_is_reported(tmp_path, capsys):
    runs = tmp_path / "runs"
    _write_runs(runs, skip={"normal--edge_texture"}, drop_keys=("normal--reshading", 5))
    out = tmp_path / "out"
    assert main(["analyze", str(runs), "--out", str(out), "--targets", "normal,nope"]) == 2
    err = stderr(capsys)
    assert "unknown target(s) ['nope']" in err and "valid task names" in err
    assert main(["analyze", str(runs), "--out", str(out), "--strict"]) == 2
    assert "55 of 60 sample keys" in stderr(capsys)
    # A missing transfer is named, and the taxonomies use what exists; figures are still drawn.
    assert main(["analyze", str(runs), "--out", str(out), "--budgets", "1..2"]) == 0
    err = stderr(capsys)
    assert "reshading lacks 5" in err  # key mismatch reported with counts
    assert "edge_texture → normal" in err and "use the transfers present" in err
    assert (out / "taxonomies" / "budget_2.json").is_file()
    assert (out / "figures" / "quality_gain.png").is_file()
    assert main(["analyze", str(tmp_path / "none"), "--out", str(out)]) == 2
    assert "does not exist" in stderr(capsys)
    assert main(["analyze", str(runs), "--out", str(out), "--max-order", "0"]) == 2
    assert "--max-order must be ≥ 1" in stderr(capsys)
    # Baselines alone: what the folder holds, and which sweep makes the transfers.
    only = tmp_path / "baselines"
    _write_runs(only, skip={f"{t}--{s}" for t in TASKS for s in [*TASKS, "reshading+normal"]})
    assert main(["analyze", str(only), "--out", str(out)]) == 2
    assert f"(it holds {2 * len(TASKS)} baseline run(s))" in stderr(capsys)


def test_analyze_places_a_novel_task(tmp_path, capsys):
    runs, out = tmp_path / "runs", tmp_path / "out"
    _write_runs(runs)
    assert main(["analyze", str(runs), "--out", str(out), "--budgets", "none"]) == 0
    novel_runs = tmp_path / "novel"
    rng = np.random.default_rng(5)
    keys = [f"k{i}" for i in range(80)]
    for source, offset in (("edge_texture", 0.0), ("normal", 0.5), ("reshading", 0.9)):
        write_record(RunRecord(run_id=f"novel--{source}", role="transfer", target=NOVEL,
                               sources=(source,), regime="1k", status="finished",
                               per_image_losses=dict(zip(keys, rng.random(80) + offset,
                                                         strict=True))), novel_runs)
    write_record(RunRecord(run_id="novel--random", role="baseline", target=NOVEL,
                           sources=("random",), regime="1k", status="finished",
                           per_image_losses=dict(zip(keys, rng.random(80) + 2, strict=True))),
                 novel_runs)
    novel_out = tmp_path / "novel_out"
    assert main(["analyze", str(novel_runs), "--out", str(novel_out), "--novel-task", NOVEL,
                 "--base", str(out), "--budget", "2", "--solver", "highs"]) == 0
    err = stderr(capsys)
    assert f"novel task {NOVEL}: best sources edge_texture" in err
    ranking = pd.read_csv(novel_out / "novel_task" / "ranking.csv")
    assert list(ranking["sources"][:3]) == ["edge_texture", "normal", "reshading"]
    placed = json.loads((novel_out / "novel_task" / "taxonomy.json").read_text())
    assert NOVEL in [e["target"] for e in placed["edges"]] and placed["convention"] == "paper"
    assert (novel_out / "novel_task" / "taxonomy.png").is_file()
    # The authors' solver's program places it too (a supervised task keeps its network).
    assert main(["analyze", str(novel_runs), "--out", str(novel_out), "--novel-task", NOVEL,
                 "--base", str(out), "--budget", "2", "--solver", "highs",
                 "--convention", "supervision-api"]) == 0
    placed = json.loads((novel_out / "novel_task" / "taxonomy.json").read_text())
    assert placed["convention"] == "supervision-api"
    assert all((e["label"] == "self") == (e["target"] in placed["supervised"])
               for e in placed["edges"])


def test_analyze_draws_an_affinity_source_without_records(tmp_path, capsys):
    from taskonomy.analysis.affinity_table import load_affinities

    # a slice of the paper's data keeps the test fast (its full figures are in test_figures)
    tasks = ["normal", "reshading", "depth_zbuffer", "edge_texture", "keypoints2d"]
    small = load_affinities("paper-2018").restrict(targets=tasks, sources=tasks, max_order=2)
    source = small.to_csv(tmp_path / "slice.csv")
    out = tmp_path / "paper"
    assert main(["analyze", "--affinities", str(source), "--out", str(out), "--budgets", "2..4",
                 "--solver", "highs"]) == 0
    said = stderr(capsys)
    assert "5 targets, transfers up to order 2; wrote" in said
    for name in ("affinity_before_ahp", "affinity_after_ahp", "quality_gain", "similarity_tree",
                 "budget_curve"):
        assert (out / "figures" / f"{name}.png").is_file()
    solved = json.loads((out / "taxonomies" / "budget_4.json").read_text())
    assert solved["status"] == "optimal" and len(solved["supervised"]) <= 4
    assert solved["convention"] == "paper"
    assert len(pd.read_csv(out / "taxonomies" / "sweep.csv")) == 3
    # The authors' solver's program: a supervised target keeps its own network.
    api_out = tmp_path / "api"
    assert main(["analyze", "--affinities", str(source), "--out", str(api_out), "--budgets", "2",
                 "--solver", "highs", "--convention", "supervision-api"]) == 0
    solved = json.loads((api_out / "taxonomies" / "budget_2.json").read_text())
    assert solved["convention"] == "supervision-api"
    assert all((edge["label"] == "self") == (edge["target"] in solved["supervised"])
               for edge in solved["edges"])
    assert main(["analyze", str(tmp_path), "--affinities", "paper-2018", "--out",
                 str(out)]) == 2
    assert "drop RUNS" in stderr(capsys)


def test_a_reused_out_folder_shows_only_the_latest_analysis(tmp_path, capsys):
    runs, out = tmp_path / "runs", tmp_path / "out"
    _write_runs(runs)
    # another regime's transfer: not part of a 1k analysis, nor of its records table
    write_record(RunRecord(run_id="normal--reshading-16k", role="transfer", target="normal",
                           sources=("reshading",), regime="16k").finished(
        metrics={}, per_image_losses={"b0-p0": 0.1}), runs)
    assert main(["analyze", str(runs), "--out", str(out), "--regime", "1k", "--budgets", "1..3",
                 "--figure-budgets", "3", "--solver", "highs"]) == 0
    assert (out / "winrates" / "edge_texture.png").is_file()
    assert (out / "taxonomies" / "budget_3_quality_gain.png").is_file()
    assert "16k" not in set(pd.read_csv(out / "records.csv")["regime"])
    (out / "notes.txt").write_text("mine")  # not the analysis's: never touched
    assert main(["analyze", str(runs), "--out", str(out), "--regime", "1k", "--budgets", "1..2",
                 "--targets", "normal,reshading", "--solver", "highs"]) == 0
    assert not (out / "winrates" / "edge_texture.png").exists()
    assert not (out / "taxonomies" / "budget_3.json").exists()
    assert (out / "winrates" / "normal.png").is_file() and (out / "notes.txt").is_file()
    summary = json.loads((out / "summary.json").read_text())
    assert all((out / name).is_file() for name in summary["files"])


def test_a_failed_or_refused_analysis_leaves_the_out_folder_as_it_was(tmp_path, capsys,
                                                                     monkeypatch):
    runs, out = tmp_path / "runs", tmp_path / "out"
    _write_runs(runs)
    args = ["analyze", str(runs), "--out", str(out), "--regime", "1k", "--solver", "highs"]
    assert main([*args, "--budgets", "1..2"]) == 0

    def contents():
        return {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}

    before = contents()
    for bad in ("-1", "5..1", "x"):  # refused before anything is read or written
        assert main([*args, "--budgets", bad]) == 2
        assert "budget" in stderr(capsys)
    assert main([*args, "--budgets", "1", "--figure-budgets", "-2"]) == 2
    assert "--figure-budgets -2: budgets must be integers ≥ 0" in stderr(capsys)

    # A new --out is not left behind, empty, by a failed analysis.
    assert main(["analyze", str(runs), "--out", str(tmp_path / "new"), "--novel-task",
                 "no_such_task"]) == 2
    capsys.readouterr()
    assert not (tmp_path / "new").exists()

    # A failure part-way (here: drawing the figures) publishes nothing of the new analysis.
    import taskonomy.experiments.commands.analyze as analyze_command

    def broken(*_args, **_kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(analyze_command, "all_figures", broken)
    assert main([*args, "--budgets", "1..3", "--targets", "normal,reshading"]) == 130
    assert "interrupted: the results folder holds the previous analysis" in stderr(capsys)
    assert contents() == before
    assert {p.name for p in tmp_path.iterdir()} == {"runs", "out"}
    assert not list(out.glob(".partial-*"))  # no staging folder left
    monkeypatch.undo()

    # A Ctrl-C while publishing waits until the new analysis is whole, summary included.
    import os
    import signal

    publish = analyze_command._publish

    def interrupted_publish(stage, folder):
        os.kill(os.getpid(), signal.SIGINT)
        return publish(stage, folder)

    monkeypatch.setattr(analyze_command, "_publish", interrupted_publish)
    assert main([*args, "--budgets", "1..3", "--targets", "normal,reshading"]) == 130
    summary = json.loads((out / "summary.json").read_text())
    assert summary["targets"] == ["normal", "reshading"]
    assert all((out / name).is_file() for name in summary["files"])
    assert not (out / "winrates" / "edge_texture.png").exists()


def test_the_suites_warnings_print_as_one_line_without_source(tmp_path):
    import subprocess
    import sys

    (tmp_path / "runs" / "broken").mkdir(parents=True)
    (tmp_path / "runs" / "broken" / "record.json").write_text("{not json")
    done = subprocess.run([sys.executable, "-m", "taskonomy.experiments.cli", "analyze",
                           str(tmp_path / "runs"), "--out", str(tmp_path / "out")],
                          capture_output=True, text=True, timeout=300)
    lines = [line for line in done.stderr.splitlines() if "unreadable run record" in line]
    assert len(lines) == 1 and lines[0].startswith("UnreadableRecordWarning: skipped an unre")
    assert "scan_records(" not in done.stderr  # no line of the suite's code


def test_a_folder_holding_a_runs_folder_is_pointed_at_it(tmp_path, capsys):
    (tmp_path / "demo" / "runs").mkdir(parents=True)  # a demo's output folder
    assert main(["analyze", str(tmp_path / "demo"), "--out", str(tmp_path / "out")]) == 2
    assert f"analyze {tmp_path / 'demo' / 'runs'}" in stderr(capsys)
