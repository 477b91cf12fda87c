import dataclasses
import json
import os

import pytest

from taskonomy.analysis.records import RunRecord, records_to_frame, scan_records, write_record
from taskonomy.analysis.wandb_source import (
    LOSS_FILE,
    LOSS_TABLE,
    log_identity,
    log_record,
    read_offline_runs,
    read_project,
    record_from_wandb,
)


def _records():
    config = {"model": {"lr": 0.001, "width": 16}, "seed": 7}
    a = RunRecord(run_id="normal__reshading", role="transfer", target="normal",
                  sources=("reshading",), regime="16k", config=config)
    b = RunRecord(run_id="normal__random", role="baseline", target="normal",
                  sources=("random",), regime="16k", config=config)
    return [
        a.finished(metrics={"test/loss": 0.25, "test/l1": 0.2},
                   per_image_losses={"b1-p0": 0.1, "b1-p1": 0.4}, checkpoint="a.ckpt"),
        b.finished(metrics={"test/loss": 0.9, "test/l1": 0.8},
                   per_image_losses={"b1-p0": 0.7, "b1-p1": 1.1}),
    ]


COMMON = ["run_id", "role", "target", "sources", "candidate", "order", "regime", "status",
          "n_images", "checkpoint", "test/loss", "test/l1", "config.model.lr",
          "config.model.width", "config.seed"]


@pytest.mark.wandb
def test_offline_wandb_runs_and_local_folder_give_the_same_table(tmp_path, monkeypatch):
    wandb = pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    # W&B truncates logged tables; the full losses travel as a run file
    monkeypatch.setattr(wandb.Table, "MAX_ROWS", 1)
    runs_dir = tmp_path / "runs"
    settings = wandb.Settings(console="off", x_disable_stats=True)
    for record in _records():
        write_record(record, runs_dir)
        run = wandb.init(project="taskonomy-test", dir=str(tmp_path), mode="offline",
                         id=record.run_id.replace("_", ""), config=record.config,
                         settings=settings)
        # What Lightning logs beside the record: flat hyperparameters, per-epoch values.
        run.config.update({"lr": 0.5, "task": record.target})
        run.log({"val/loss": 3.0, "train/loss_epoch": 2.0})
        log_record(run, record)
        run.finish()
    # The first run trained again (its record deleted, or a sweep agent's own W&B id): the
    # later one counts. A run set aside under a hidden folder (RUNS/.stale) is no result.
    again = _records()[0]
    again = RunRecord.from_dict({**again.to_dict(), "finished_at": "2999-01-01T00:00:00Z"})
    for where in (tmp_path, tmp_path / "wandb" / ".stale"):
        where.mkdir(parents=True, exist_ok=True)
        run = wandb.init(project="taskonomy-test", dir=str(where), mode="offline",
                         settings=settings)
        log_record(run, again)
        run.finish()
    # A run that was not logged through log_record is counted, not mistaken for a record.
    other = wandb.init(project="taskonomy-test", dir=str(tmp_path), mode="offline",
                       settings=wandb.Settings(console="off", x_disable_stats=True))
    other.finish()

    offline = read_offline_runs(tmp_path / "wandb")
    assert offline.skipped == {"foreign": 1, "superseded": 1}
    by_id = {r.run_id: r for r in offline.records}
    assert by_id[again.run_id].finished_at == again.finished_at
    write_record(again, runs_dir)
    local = scan_records(runs_dir)
    from_wandb = records_to_frame(offline.records)[COMMON]
    from_disk = records_to_frame(local.records)[COMMON]
    assert from_wandb.to_dict("records") == from_disk.to_dict("records")
    for mine, theirs in zip(local.records, offline.records, strict=True):
        assert mine.per_image_losses == theirs.per_image_losses
        assert theirs.wandb and os.path.isdir(theirs.wandb)
        assert theirs.metrics == mine.metrics and theirs.config == mine.config  # nothing extra


class _FakeFile:
    def __init__(self, payload, name):
        self.payload, self.name = payload, name
        self.md5 = "0" if payload is None else "abc"  # the server's placeholder of a missing file

    def download(self, root, replace):
        if self.payload is None:
            raise RuntimeError("404: file not found")  # wandb raises CommError
        path = os.path.join(root, self.name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as handle:
            json.dump(self.payload, handle)


class _FakeRun:
    """The public-API run surface the reader uses: id, path, state, config, summary, file()."""

    def __init__(self, record, state="finished", with_file=True):
        self.id = record.run_id
        self.path = ["me", "proj", record.run_id]
        self.state = state
        self.config = {**record.config, "taskonomy": {
            "run_id": record.run_id, "role": record.role, "target": record.target,
            "sources": list(record.sources), "regime": record.regime}}
        table = f"media/table/{LOSS_TABLE}_1_abc.table.json"
        self.summary = {**record.metrics, "_step": 1, "taskonomy/checkpoint": record.checkpoint,
                        LOSS_TABLE: {"_type": "table-file", "path": table}}
        self._table = _FakeFile({"columns": ["sample_key", "loss"],
                                 "data": [[k, v] for k, v in record.per_image_losses.items()]},
                                table)

        self._loss_file = _FakeFile(record.per_image_losses, LOSS_FILE) if with_file else None

    def files(self, names=None):
        files = [f for f in (self._table, self._loss_file) if f is not None]
        if names is None:
            return files
        # Like the server: every name asked for is listed, a missing one as a placeholder.
        present = {f.name: f for f in files}
        return [present.get(name, _FakeFile(None, name)) for name in names]

    def file(self, name):
        return {f.name: f for f in self.files()}[name]


class _FakeApi:
    def __init__(self, runs):
        self._runs = runs

    def runs(self, project, lazy=True):
        assert project == "me/proj"
        return self._runs


def test_online_project_reader_rebuilds_records():
    records = _records()
    crashed = RunRecord(run_id="crashed", role="task", target="normal")
    # one run with the full loss file, one with only the (dashboard) table
    api = _FakeApi([_FakeRun(records[0]), _FakeRun(records[1], with_file=False),
                    _FakeRun(crashed, state="crashed")])
    scan = read_project("me/proj", api=api)
    assert scan.skipped == {"failed": 1}  # read without a download (it has no loss file)
    got = records_to_frame(scan.records)
    want = records_to_frame(records)
    assert got[COMMON].to_dict("records") == want[COMMON].to_dict("records")
    assert scan.records[0].per_image_losses == records[1].per_image_losses
    assert scan.records[1].per_image_losses == records[0].per_image_losses
    with pytest.raises(ValueError, match="entity/project"):
        read_project("just-a-name", api=api)


def test_a_truncated_loss_table_is_not_read_as_the_whole_run():
    record = _records()[0]
    run = _FakeRun(record, with_file=False)
    run.summary[LOSS_TABLE]["nrows"] = 16000  # W&B kept fewer rows than were logged
    with pytest.warns(UserWarning, match="holds 2 of the run's 16000"):
        scan = read_project("me/proj", api=_FakeApi([run]))
    assert scan.records == [] and scan.skipped == {"incomplete": 1}


def test_an_online_run_without_its_losses_is_skipped_not_fatal():
    records = _records()
    lost = _FakeRun(records[1], with_file=False)
    del lost.summary[LOSS_TABLE]  # neither the loss file nor the table
    broken = _FakeRun(records[0], with_file=False)
    broken._table.payload = None  # listed, but the download fails
    with pytest.warns(UserWarning) as caught:
        scan = read_project("me/proj", api=_FakeApi([lost, broken]))
    assert scan.records == [] and scan.skipped == {"incomplete": 2}
    messages = " ".join(str(w.message) for w in caught)
    assert "neither per_image_losses.json nor" in messages and "could not be read" in messages


class _RunConfig(dict):
    """A W&B run config as :func:`log_identity` updates it."""

    def update(self, values, allow_val_change=False):
        super().update(values)


class _StartedRun:
    """A W&B run as far as a starting run touches it: its config."""

    def __init__(self):
        self.config = _RunConfig()


def test_a_run_killed_before_its_record_was_logged_reads_back_as_unfinished():
    record = _records()[0]
    run = _StartedRun()
    log_identity(run, record)  # at start; the process is then killed (W&B state "unknown")
    back = record_from_wandb(run.config, {}, "unknown", {}, "somewhere")
    assert (back.run_id, back.status, back.target) == (record.run_id, "running", record.target)


def test_a_run_whose_record_failed_reads_back_as_failed_though_wandb_finished_it():
    identity = {"taskonomy": {"run_id": "r", "role": "task", "target": "normal"}}
    back = record_from_wandb(identity, {"taskonomy/status": "failed"}, "finished", {}, "x")
    assert back.status == "failed"


def test_a_killed_attempt_of_a_run_finished_later_is_superseded_not_running():
    record = _records()[0]
    killed, redone = _FakeRun(record, state="running"), _FakeRun(record)
    for runs in ([killed, redone], [redone, killed]):
        scan = read_project("me/proj", api=_FakeApi(runs))
        assert [r.run_id for r in scan.records] == [record.run_id]
        assert scan.skipped == {"superseded": 1}
    assert read_project("me/proj", api=_FakeApi([killed])).skipped == {"running": 1}
    # A redo started after the finished attempt (e.g. `sweep run --redo-stale`) is running.
    redone.summary["taskonomy/finished_at"] = "2026-01-01T00:00:00+00:00"
    again = _FakeRun(record, state="running")
    again.config["taskonomy"]["started_at"] = "2026-01-02T00:00:00+00:00"
    killed.config["taskonomy"]["started_at"] = "2025-12-31T00:00:00+00:00"
    scan = read_project("me/proj", api=_FakeApi([killed, redone, again]))
    assert scan.skipped == {"superseded": 1, "running": 1}


def test_the_identity_keeps_the_config_types_and_names_the_order():
    record = dataclasses.replace(_records()[0], config={"trainer": {"overfit_batches": 0.0}})
    run = _StartedRun()
    log_identity(run, record)
    identity = run.config["taskonomy"]
    assert identity["order"] == 1
    identity["config"] = {"trainer": {"overfit_batches": 0}}  # as W&B stores a whole float
    back = record_from_wandb(run.config, {}, "unknown", {}, "somewhere")
    assert back.config == record.config
    assert isinstance(back.config["trainer"]["overfit_batches"], float)


def test_an_unreadable_run_is_named_and_skipped_unless_none_can_be_read():
    from taskonomy.analysis.wandb_source import _collect

    good = _records()[0]

    def corrupt():
        raise ValueError("`wandb leet inspect` failed on x (exit 1): bad log")

    with pytest.warns(UserWarning, match="x-run: skipped, unreadable: .*bad log"):
        scan = _collect([("good", lambda: good), ("x-run", corrupt)])
    assert scan.records == [good] and scan.skipped == {"unreadable": 1}
    with pytest.raises(ValueError, match="no run could be read; the first error: .*bad log"):
        with pytest.warns(UserWarning):
            _collect([("x-run", corrupt), ("y-run", corrupt)])


def test_an_online_project_without_a_login_says_how_to_log_in(monkeypatch):
    import wandb

    def no_key(*args, **kwargs):
        raise wandb.errors.UsageError("No API key configured. Use `wandb login` to log in.")

    monkeypatch.setattr(wandb, "Api", no_key)
    with pytest.raises(ValueError, match="needs a W&B login .*run `wandb login` or set "
                                         "WANDB_API_KEY; .*--wandb-offline"):
        read_project("me/taskonomy")


def test_a_damaged_offline_log_is_named_as_damaged(tmp_path):
    from taskonomy.analysis.wandb_source import inspect_offline_run

    run_dir = tmp_path / "offline-run-20261207_000000-abc"
    run_dir.mkdir()
    (run_dir / "run-abc.wandb").write_bytes(b"garbage" * 10)
    with pytest.raises(ValueError, match="damaged or not a W&B log"):
        inspect_offline_run(run_dir)
