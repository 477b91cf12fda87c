import json
import warnings

import numpy as np
import pytest

from taskonomy.analysis.losses_table import losses_frame, losses_summary
from taskonomy.analysis.records import (
    RECORD_COLUMNS,
    RunRecord,
    UnreadableRecordWarning,
    read_record,
    read_records,
    record_path,
    records_to_frame,
    scan_records,
    write_record,
)


def _finished(run_id="normal__reshading", **kw):
    base = dict(run_id=run_id, role="transfer", target="normal", sources=("reshading",),
                regime="16k", config={"model": {"lr": 0.001, "widths": [8, 16]}, "seed": 3})
    base.update(kw)
    return RunRecord(**base).finished(metrics={"test/loss": 0.25},
                                      per_image_losses={"a": 0.1, "b": 0.4},
                                      checkpoint="ckpt/last.ckpt")


def test_round_trip_is_exact_and_sources_are_sorted(tmp_path):
    rec = _finished(sources=("reshading", "depth_zbuffer"))
    assert rec.sources == ("depth_zbuffer", "reshading") and rec.order == 2
    assert rec.candidate == "depth_zbuffer+reshading"
    path = write_record(rec, tmp_path)
    assert path == record_path(tmp_path, rec.run_id) == tmp_path / rec.run_id / "record.json"
    assert read_record(path) == rec
    assert [p.name for p in path.parent.iterdir()] == ["record.json"]  # no temp file left


def test_rewrite_replaces_running_record(tmp_path):
    running = RunRecord(run_id="r1", role="task", target="normal")
    write_record(running, tmp_path)
    assert scan_records(tmp_path).skipped == {"running": 1}
    write_record(running.finished(metrics={}, per_image_losses={"k": 1.0}), tmp_path)
    assert [r.status for r in read_records(tmp_path)] == ["finished"]
    assert read_records(tmp_path)[0].candidate == "self"


def test_a_run_id_found_twice_is_named(tmp_path):
    write_record(_finished("same"), tmp_path / "a")
    write_record(_finished("same"), tmp_path / "a" / "copy")
    (tmp_path / "a" / "copy" / "same").rename(tmp_path / "a" / "elsewhere")
    with pytest.raises(ValueError, match="run id 'same' appears twice"):
        scan_records(tmp_path / "a")


def test_latest_task_runs_keep_to_the_setting_asked_for():
    from taskonomy.analysis.records import latest_task_runs

    def task_run(run_id, encoder, resolution, when):
        record = RunRecord(run_id=run_id, role="task", target="normal", config={
            "model": {"encoder": encoder, "resolution": resolution}}).finished(
            metrics={}, per_image_losses={}, checkpoint="c")
        return RunRecord.from_dict({**record.to_dict(), "finished_at": f"2026-0{when}-01T00:00:00"})

    paper = task_run("paper", "resnet50", 256, 1)
    cpu = task_run("cpu", "resnet10_tiny", 64, 2)  # finished later
    assert latest_task_runs([paper, cpu])["normal"].run_id == "cpu"
    assert latest_task_runs([paper, cpu], encoder="resnet50")["normal"].run_id == "paper"
    assert latest_task_runs([paper, cpu], resolution=256)["normal"].run_id == "paper"


def test_reader_skips_unfinished_with_counts(tmp_path):
    write_record(_finished("ok"), tmp_path)
    write_record(RunRecord(run_id="run", role="transfer", target="normal",
                           sources=("normal",)), tmp_path)
    write_record(RunRecord(run_id="bad", role="baseline", target="normal",
                           sources=("random",)).failed("CUDA out of memory"), tmp_path)
    scan = scan_records(tmp_path)
    assert [r.run_id for r in scan.records] == ["ok"]
    assert scan.skipped == {"running": 1, "failed": 1}
    assert "skipped 1 failed, 1 running" in scan.describe()
    with pytest.warns(UserWarning, match="1 failed, 1 running"):
        read_records(tmp_path)


def test_a_runs_folder_nested_inside_is_not_read(tmp_path):
    write_record(_finished("study"), tmp_path)
    write_record(_finished("demo_run"), tmp_path / "demo")  # another study's runs folder
    write_record(_finished("set_aside"), tmp_path / ".stale")
    assert [r.run_id for r in read_records(tmp_path)] == ["study"]


def test_malformed_files_are_named_and_skipped(tmp_path):
    # One bad file stopped every transfer, sweep and analysis of the folder.
    write_record(_finished("ok"), tmp_path)
    bad = tmp_path / "broken" / "record.json"
    bad.parent.mkdir()
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="broken/record.json: not valid JSON.*rerun that run"):
        read_record(bad)
    for text, reason in (
            ("{not json", "not valid JSON"),
            (json.dumps({"run_id": "x", "role": "teacher", "target": "normal"}),
             "unknown role 'teacher'"),
            (json.dumps({"run_id": "x", "role": "task", "target": "normal", "lr": 1}),
             r"unknown fields \['lr'\]")):
        bad.write_text(text)
        with pytest.warns(UnreadableRecordWarning, match=f"broken/record.json.*{reason}"):
            scan = scan_records(tmp_path)
        assert [r.run_id for r in scan.records] == ["ok"]
        assert scan.skipped == {"unreadable": 1} and "skipped 1 unreadable" in scan.describe()
        assert len(scan.unreadable) == 1
    with pytest.raises(FileNotFoundError, match="does not exist"):
        scan_records(tmp_path / "nowhere")


@pytest.mark.parametrize("kwargs, message", [
    (dict(role="baseline", sources=("imagenet",)), "baseline's sources"),
    (dict(role="transfer", sources=()), "at least one source"),
    (dict(role="transfer", sources=("random",)), "not transfer sources"),
    (dict(role="task", sources=("normal",)), "no sources"),
    (dict(run_id="a/b"), "run_id"),
    (dict(target="self"), "target must be a task"),
    (dict(per_image_losses={"k": float("nan")}), "not finite"),
])
def test_invalid_records_are_rejected(kwargs, message):
    base = dict(run_id="r", role="transfer", target="normal", sources=("normal",))
    base.update(kwargs)
    with pytest.raises(ValueError, match=message):
        RunRecord(**base)


def test_tidy_frames():
    recs = [_finished("b"), _finished("a", role="baseline", sources=("pixels",))]
    frame = records_to_frame(recs)
    assert list(frame["run_id"]) == ["a", "b"]
    assert list(frame.columns[: len(RECORD_COLUMNS)]) == list(RECORD_COLUMNS)
    assert frame.loc[0, "candidate"] == "pixels" and frame.loc[1, "order"] == 1
    assert frame.loc[1, "test/loss"] == 0.25
    assert frame.loc[1, "config.model.lr"] == 0.001
    assert frame.loc[1, "config.model.widths"] == "[8, 16]"
    losses = losses_frame(recs)
    assert len(losses) == 4 and set(losses["sample_key"]) == {"a", "b"}
    summary = losses_summary(losses).set_index("run_id")
    assert summary.loc["b", "n_images"] == 2
    assert summary.loc["b", "mean"] == pytest.approx(0.25)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert records_to_frame([]).empty and losses_summary(losses_frame([])).empty
    assert np.isfinite(summary["std"]).all()


def test_config_values_are_made_plain_or_rejected(tmp_path):
    from pathlib import Path

    rec = _finished("paths", config={"data": {"root": Path("/data/shards")},
                                     "lr": np.float32(0.5)})
    back = read_record(write_record(rec, tmp_path))
    assert back.config == {"data": {"root": "/data/shards"}, "lr": 0.5}
    with pytest.raises(ValueError, match="not JSON-serializable"):
        write_record(_finished("obj", config={"model": object()}), tmp_path)
    assert not (tmp_path / "obj" / "record.json").exists()
