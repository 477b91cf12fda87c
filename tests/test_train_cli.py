"""``taskonomy train fit``: records, W&B offline runs, per-image keys, panels and bad input."""

from __future__ import annotations

import dataclasses
import math
import os
import shutil
from pathlib import Path

import pytest
import torch
import yaml

from taskonomy.analysis.records import (
    UnreadableRecordWarning,
    read_record,
    read_records,
    record_path,
    scan_records,
)
from taskonomy.datamodules.shards import manifest_keys, read_manifest
from taskonomy.experiments.cli import main as taskonomy_main
from taskonomy.experiments.lightning_cli import (
    configure_wandb_mode,
    default_run_id,
    wandb_run_id,
)
from taskonomy.tasks.families.dense import DenseRegressionTask
from taskonomy.tasks.registry import task_names

TINY = {
    "trainer": {"accelerator": "cpu", "devices": 1, "precision": "bf16-mixed", "max_steps": 4,
                "max_epochs": -1, "log_every_n_steps": 1, "num_sanity_val_steps": 0,
                "limit_val_batches": 2, "enable_progress_bar": False,
                "enable_model_summary": False},
    "model": {"encoder": "resnet10_tiny", "resolution": 32, "decoder_width": 0.125,
              "head_width": 0.125, "lr": 1e-3, "lr_milestone": None},
    "data": {"batch_size": 4, "num_workers": 0, "epoch_size": 8, "shuffle_buffer": 8},
}

@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """One torch thread: on a shared 2-core machine OpenMP spin-waits make 2 threads far slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)



def tiny_config(tmp_path: Path, root: Path, **trainer: object) -> Path:
    config = {**TINY, "data": {**TINY["data"], "root": str(root)},
              "trainer": {**TINY["trainer"], **trainer}}
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture(scope="module")
def wandb_run(tiny_shards: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One finished ``normal`` run with an offline W&B run; returns the runs folder."""
    tmp = tmp_path_factory.mktemp("train_cli")
    runs = tmp / "runs"
    environ = dict(os.environ)
    try:
        for name in ("WANDB_MODE", "WANDB_SWEEP_ID"):
            os.environ.pop(name, None)
        os.environ["WANDB_SILENT"] = "true"
        code = taskonomy_main(["train", "fit", "--config", str(tiny_config(tmp, tiny_shards)),
                               "--model.task=normal", f"--runs_dir={runs}"])
    finally:  # the CLI sets WANDB_MODE for its subprocesses: leave no trace of it
        os.environ.clear()
        os.environ.update(environ)
    assert code == 0
    return runs


def test_run_leaves_a_finished_record_keyed_by_test_shard_keys(wandb_run: Path,
                                                                tiny_shards: Path) -> None:
    (record,) = read_records(wandb_run)
    assert record.status == "finished" and record.role == "task" and record.target == "normal"
    # The --config files, absolute: `sweep beam` runs higher orders with a transfer's configs.
    (config,) = record.config["config_files"]
    assert Path(config).is_absolute() and Path(config).name == "tiny.yaml"
    assert record.run_id.startswith("task__normal__full__")
    test_keys = manifest_keys(read_manifest(tiny_shards, "test"))
    assert sorted(record.per_image_losses) == sorted(test_keys)
    assert all(math.isfinite(v) and v > 0 for v in record.per_image_losses.values())
    # The record's test loss is the mean of the per-image losses (equal batch weights).
    mean = sum(record.per_image_losses.values()) / len(record.per_image_losses)
    assert record.metrics["test/loss"] == pytest.approx(mean, rel=0.05)
    assert {"test/angle_mean", "test/angle_11_25"} <= set(record.metrics)
    assert record.config["model"]["task"] == "normal"
    assert record.config["data"]["tasks"] == ["normal"]
    assert record.config["data"]["resolution"] == 32
    checkpoint = Path(record.checkpoint or "")
    assert checkpoint.is_file() and checkpoint.parent == wandb_run / record.run_id / "checkpoints"
    assert torch.load(checkpoint, map_location="cpu", weights_only=False)["global_step"] == 4
    assert (wandb_run / record.run_id / "checkpoints" / "last.ckpt").is_file()
    assert (wandb_run / record.run_id / "config.yaml").is_file()
    # The fingerprint of the tested encoder is that of the weights transfers load from it.
    from taskonomy.tasks.source_runs import load_source
    assert record.config["encoder_fingerprint"] == load_source(
        record, wandb_run, resolution=32).fingerprint


@pytest.mark.wandb
def test_offline_wandb_run_reads_back_like_the_record(wandb_run: Path) -> None:
    from taskonomy.analysis.wandb_source import read_offline_run

    (record,) = read_records(wandb_run)
    assert record.wandb is not None and Path(record.wandb).is_dir()
    assert Path(record.wandb).is_relative_to(wandb_run / record.run_id)
    from_wandb = read_offline_run(record.wandb)
    assert from_wandb.run_id == record.run_id and from_wandb.status == "finished"
    assert from_wandb.config["model"] == record.config["model"]
    assert from_wandb.per_image_losses == pytest.approx(record.per_image_losses)
    for key in ("test/loss", "test/angle_mean"):
        assert from_wandb.metrics[key] == pytest.approx(record.metrics[key])
    panels = list(Path(record.wandb).rglob("panels/normal_*.png"))
    assert panels, "the prediction panels were not logged to W&B"
    from taskonomy.analysis.wandb_source import inspect_offline_run

    logged = inspect_offline_run(record.wandb)
    assert logged["summary"].get("lr-Adam/pg1") == pytest.approx(1e-3)  # the learning rate
    # Every kind of run is filtered by the same top-level keys; the settings appear once.
    config = logged["config"]
    assert {k: config.get(k) for k in ("role", "target", "sources", "order", "regime")} == {
        "role": "task", "target": "normal", "sources": "", "order": 0, "regime": "full"}
    assert "lr" not in config and "config" not in config["taskonomy"], sorted(config)
    assert {"task", "target:normal", "regime:full"} <= set(logged.get("tags") or []), logged


@pytest.mark.wandb
def test_a_finished_point_handed_out_by_a_sweep_agent_fills_the_agents_run(
        wandb_run: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    from taskonomy.analysis.wandb_source import find_offline_runs, read_offline_run

    (record,) = read_records(wandb_run)
    before = set(find_offline_runs(wandb_run))
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_SWEEP_ID", "sweep0001")
    config = wandb_run.parent / "tiny.yaml"  # the command that trained it, handed out again
    assert taskonomy_main(["train", "fit", "--config", str(config), "--model.task=normal",
                           f"--runs_dir={wandb_run}"]) == 0
    assert "already finished" in capsys.readouterr().out
    (agents_run,) = set(find_offline_runs(wandb_run)) - before
    copy = read_offline_run(agents_run)
    assert copy.run_id == record.run_id and copy.status == "finished"
    assert copy.per_image_losses == pytest.approx(record.per_image_losses)
    assert copy.metrics["test/loss"] == pytest.approx(record.metrics["test/loss"])
    assert read_records(wandb_run) == [record]  # the record itself is left as it was


def test_run_ids_are_deterministic_and_wandb_safe() -> None:
    config = {"model": {"task": "normal", "lr": 1e-3}, "run_id": None}
    first = default_run_id("task", "normal", (), "full", config)
    assert first == default_run_id("task", "normal", (), "full", {**config, "run_id": "x"})
    assert first != default_run_id("task", "normal", (), "full",
                                   {"model": {"task": "normal", "lr": 1e-4}})
    transfer = default_run_id("transfer", "normal", ("reshading", "depth_zbuffer"), "16k", config)
    assert transfer.startswith("transfer__normal__from__depth_zbuffer+reshading__16k__")
    wid = wandb_run_id(transfer)
    assert wid == wandb_run_id(transfer) and set(wid) <= set(
        "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-")
    assert wandb_run_id("a+b") != wandb_run_id("a=b")


def test_wandb_ids_are_read_back_from_record_locations() -> None:
    from taskonomy.experiments.lightning_cli import wandb_id_of

    assert wandb_id_of("me/proj/task-normal-1a2b") == "task-normal-1a2b"
    assert wandb_id_of("/r/x/wandb/offline-run-20261207_040000-task__n-1a2b") == "task__n-1a2b"
    assert wandb_id_of("runs/x/wandb/run-20261207_040000-abc") == "abc"
    assert wandb_id_of(None) is None and wandb_id_of("somewhere/else") is None


@pytest.mark.wandb
def test_a_resumed_run_continues_its_wandb_run_and_a_redone_one_gets_a_new_id(
        wandb_run: Path, tiny_shards: Path, tmp_path: Path) -> None:
    # W&B refuses the id of a deleted run for good (409): a run started afresh needs a new one.
    from taskonomy.datamodules.datamodule import TaskonomyDataModule
    from taskonomy.experiments.lightning_cli import wandb_id_of
    from taskonomy.experiments.train import TrainCLI, task_model

    (record,) = read_records(wandb_run)
    runs = tmp_path / "runs"
    shutil.copytree(wandb_run / record.run_id, runs / record.run_id)

    def attempt_id() -> str:
        seen: list[str] = []
        with pytest.MonkeyPatch.context() as mp:  # build the run as `train fit` would, no fit
            mp.setattr(TrainCLI, "fit", lambda self, *a, **k: seen.append(
                self.trainer.logger._wandb_init["id"]))
            TrainCLI(task_model, TaskonomyDataModule, args=[
                "fit", "--config", str(tiny_config(tmp_path, tiny_shards)),
                "--model.task=normal", f"--runs_dir={runs}", f"--run_id={record.run_id}"])
        return seen[0]

    earlier = wandb_id_of(record.wandb)
    assert earlier and attempt_id() == earlier  # it has checkpoints: a resume
    shutil.rmtree(runs / record.run_id / "checkpoints")
    fresh = attempt_id()
    assert fresh != earlier and fresh.startswith(earlier.rsplit("-", 1)[0][:20])


def test_wandb_is_offline_unless_chosen_or_swept() -> None:
    assert configure_wandb_mode({}) == "offline"
    assert configure_wandb_mode({"WANDB_MODE": "online"}) == "online"
    env = {"WANDB_SWEEP_ID": "abc"}
    configure_wandb_mode(env)
    assert "WANDB_MODE" not in env


def _no_wandb_args(tmp_path: Path, root: Path, task: str) -> list[str]:
    return ["train", "fit", "--config", str(tiny_config(tmp_path, root)), f"--model.task={task}",
            f"--runs_dir={tmp_path / 'runs'}", "--run_id=case", "--trainer.logger=false"]


def test_unknown_task_lists_valid_names(tmp_path: Path, tiny_shards: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    assert taskonomy_main(_no_wandb_args(tmp_path, tiny_shards, "nromal")) == 2
    message = capsys.readouterr().err
    assert "unknown task 'nromal'" in message
    assert "normal" in message and "depth_zbuffer" in message and "egomotion" in message


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks a machine without a GPU")
def test_a_gpu_config_without_a_gpu_names_the_cpu_config_before_the_run_exists(
        tmp_path: Path, tiny_shards: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = [*_no_wandb_args(tmp_path, tiny_shards, "normal"), "--trainer.accelerator=gpu"]
    assert taskonomy_main(args) == 2
    message = capsys.readouterr().err
    assert "none is visible here; on a CPU use experiments/configs/cpu.yaml" in message
    assert "--trainer.accelerator=cpu --trainer.devices=1" in message
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_missing_domain_fails_before_training(tmp_path: Path, tiny_shards: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    root = tmp_path / "shards"
    shutil.copytree(tiny_shards, root)
    shutil.rmtree(root / "train" / "normal")
    assert taskonomy_main(_no_wandb_args(tmp_path, root, "normal")) == 2
    message = capsys.readouterr().err
    assert str(root / "train" / "normal") in message and "taskonomy data pack" in message
    # Refused before the run exists: no folder, record or W&B run for a wrong data path.
    assert not (tmp_path / "runs" / "case").exists()
    args = [*_no_wandb_args(tmp_path, root, "normal"), f"--data.root={tmp_path / 'nowhere'}"]
    assert taskonomy_main(args) == 2
    assert "no shard manifest" in capsys.readouterr().err
    assert not (tmp_path / "runs" / "case").exists()


def test_a_finished_run_trained_further_from_a_wrong_data_path_keeps_its_results(
        tmp_path: Path, tiny_shards: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = _no_wandb_args(tmp_path, tiny_shards, "normal")
    assert taskonomy_main(args) == 0
    path = record_path(tmp_path / "runs", "case")
    before = path.read_text()
    further = [*args, "--trainer.max_steps=7", f"--data.root={tmp_path / 'nowhere'}"]
    assert taskonomy_main(further) == 2
    assert "no shard manifest" in capsys.readouterr().err
    assert path.read_text() == before  # not rewritten as running, then failed


def test_a_run_that_trains_no_step_is_not_recorded_finished(
        tmp_path: Path, tiny_shards: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = [*_no_wandb_args(tmp_path, tiny_shards, "normal"), "--trainer.max_steps=0"]
    assert taskonomy_main(args) == 2
    assert "took no training step" in capsys.readouterr().err
    record = read_record(record_path(tmp_path / "runs", "case"))
    assert record.status == "failed" and "max_steps" in (record.error or "")
    # Repeating the command with steps trains it (a failed record is not "finished").
    assert taskonomy_main(_no_wandb_args(tmp_path, tiny_shards, "normal")) == 0
    assert read_record(record_path(tmp_path / "runs", "case")).status == "finished"


def test_nan_loss_stops_the_run_and_fails_its_record(
        tmp_path: Path, tiny_shards: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    original = DenseRegressionTask.compute_loss

    def poisoned(self, prediction, task_batch, reduction="mean", keys=None):  # type: ignore[no-untyped-def]
        loss = original(self, prediction, task_batch, reduction, keys)
        return loss * float("nan") if self.training and self.global_step >= 1 else loss

    monkeypatch.setattr(DenseRegressionTask, "compute_loss", poisoned)
    assert taskonomy_main(_no_wandb_args(tmp_path, tiny_shards, "normal")) == 1
    assert "diverged" in capsys.readouterr().err
    record = read_record(record_path(tmp_path / "runs", "case"))
    assert record.status == "failed"
    assert "NonFiniteLossError" in (record.error or "")
    assert "'normal'" in (record.error or "") and "at step 1" in (record.error or "")
    assert record.per_image_losses == {}


def test_panels_are_png_files_without_wandb(tmp_path: Path, tiny_shards: Path) -> None:
    args = _no_wandb_args(tmp_path, tiny_shards, "segment_semantic")
    assert taskonomy_main(args) == 0
    run_dir = tmp_path / "runs" / "case"
    panels = sorted((run_dir / "panels").glob("segment_semantic_step*.png"))
    assert [p.name for p in panels] == ["segment_semantic_step0000002.png",
                                        "segment_semantic_step0000004.png"]
    import cv2

    panel = cv2.imread(str(panels[-1]))
    # A header strip (title, column names) over 4 samples × (input, target, prediction).
    assert panel.shape == (40 + 4 * 128, 3 * 128, 3)
    assert (panel[:40] < 128).any() and (panel[:40] == 255).mean() > 0.8  # dark text on white
    record = read_record(record_path(tmp_path / "runs", "case"))
    assert record.status == "finished" and record.wandb is None


#: One task per renderer: dense encodings, colorization, jigsaw, embeddings, labels, text.
PANEL_TASKS = ("depth_zbuffer", "principal_curvature", "edge_occlusion", "colorization", "jigsaw",
               "segment_unsup2d", "segment_semantic", "class_scene", "room_layout", "egomotion",
               "point_matching")


def test_panel_tasks_cover_every_family() -> None:
    from taskonomy.tasks.registry import get_spec

    assert {get_spec(t).family for t in PANEL_TASKS} == {
        get_spec(t).family for t in task_names()}


@pytest.mark.parametrize("task", PANEL_TASKS)
def test_panels_render_a_task_of_every_kind(task: str) -> None:
    from taskonomy.experiments.panels import render_panel, render_tile
    from taskonomy.experiments.train import task_model
    from taskonomy.tasks.testing import fake_batch

    module = task_model(task, encoder="resnet10_tiny", resolution=32, decoder_width=0.125,
                        head_width=0.125).eval()
    batch = fake_batch(module.spec, 2, 32)[task]
    with torch.no_grad():
        prediction = module(batch["input"])
    samples = [{**{k: batch[k][i].float().numpy() for k in ("input", "target", "mask")
                   if k in batch}, "prediction": prediction[i].float().numpy()}
               for i in range(2)]
    panel = render_panel(module, samples, size=48)
    assert panel.shape == (2 * 48, 3 * 48, 3) and panel.dtype.name == "uint8"
    if module.spec.family == "dense_regression":
        # A perfect prediction is drawn exactly like its target.
        perfect = {**samples[0], "prediction": samples[0]["target"]}
        assert (render_tile(module, "prediction", perfect, 48)
                == render_tile(module, "target", perfect, 48)).all()


def test_wandb_failure_after_the_run_keeps_its_record_finished(
        tmp_path: Path, tiny_shards: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from taskonomy.experiments.lightning_cli import TaskonomyCLI

    def upload_fails(self, record, exit_code):  # type: ignore[no-untyped-def]
        raise ConnectionError("W&B server unreachable")

    monkeypatch.setattr(TaskonomyCLI, "_finish_wandb", upload_fails)
    with pytest.warns(UserWarning, match="record is written.*W&B server unreachable"):
        assert taskonomy_main(_no_wandb_args(tmp_path, tiny_shards, "normal")) == 0
    record = read_record(record_path(tmp_path / "runs", "case"))
    assert record.status == "finished" and record.per_image_losses


def test_repeating_a_finished_run_leaves_it_as_it_is(
        tmp_path: Path, tiny_shards: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = _no_wandb_args(tmp_path, tiny_shards, "normal")
    assert taskonomy_main(args) == 0
    path = record_path(tmp_path / "runs", "case")
    before = path.read_text()
    capsys.readouterr()
    assert taskonomy_main(args) == 0
    assert "already finished" in capsys.readouterr().out
    assert path.read_text() == before  # not rewritten as running, not re-tested


def test_a_cut_record_is_rewritten_by_running_again(
        tmp_path: Path, tiny_shards: Path) -> None:
    args = _no_wandb_args(tmp_path, tiny_shards, "normal")
    assert taskonomy_main(args) == 0
    path = record_path(tmp_path / "runs", "case")
    path.write_text(path.read_text()[:300])
    with pytest.warns(UnreadableRecordWarning, match="case/record.json"):
        assert scan_records(tmp_path / "runs").skipped == {"unreadable": 1}
    assert taskonomy_main(args) == 0
    assert read_record(path).status == "finished"


def test_ddp_spawn_is_refused_with_the_strategy_to_use(
        tmp_path: Path, tiny_shards: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = [*_no_wandb_args(tmp_path, tiny_shards, "normal"), "--trainer.strategy=ddp_spawn"]
    assert taskonomy_main(args) == 2
    assert "--trainer.strategy=ddp " in capsys.readouterr().err
    assert not (tmp_path / "runs" / "case").exists()


def test_float16_weights_are_refused_with_the_precision_to_use(
        tmp_path: Path, tiny_shards: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = [*_no_wandb_args(tmp_path, tiny_shards, "normal"), "--trainer.precision=16-true"]
    assert taskonomy_main(args) == 2
    assert "--trainer.precision=16-mixed" in capsys.readouterr().err
    assert not (tmp_path / "runs" / "case").exists()


def test_progress_bar_shows_no_epoch_total_for_runs_bounded_by_steps() -> None:
    from types import SimpleNamespace

    from taskonomy.experiments.lightning_cli import RunProgressBar

    bar = RunProgressBar()
    bar._trainer = SimpleNamespace(max_epochs=-1)  # type: ignore[assignment]
    assert bar._get_train_description(3).strip() == "Epoch 3"  # Lightning's: "Epoch 3/-2"
    bar._trainer = SimpleNamespace(max_epochs=20)  # type: ignore[assignment]
    assert bar._get_train_description(3).strip() == "Epoch 3/19"


def test_a_run_bounded_by_steps_shows_its_epoch_without_a_total(
        tmp_path: Path, tiny_shards: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = _no_wandb_args(tmp_path, tiny_shards, "normal")
    args[args.index("--config") + 1] = str(tiny_config(tmp_path, tiny_shards,
                                                       enable_progress_bar=True))
    assert taskonomy_main(args) == 0
    out = capsys.readouterr().out
    assert "Epoch 1 " in out and "/-2" not in out  # Lightning's bar: "Epoch 1/-2"


def test_task_overrides_are_found_beside_the_config_then_among_the_packaged_configs(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from taskonomy.experiments.train import CONFIGS_DIR, find_task_overrides

    monkeypatch.chdir(tmp_path)
    packaged = find_task_overrides("tasks/cpu_exceptions.yaml")
    assert packaged == CONFIGS_DIR / "tasks" / "cpu_exceptions.yaml"
    beside = tmp_path / "mine" / "tasks" / "cpu_exceptions.yaml"
    beside.parent.mkdir(parents=True)
    beside.write_text("{}\n")
    assert find_task_overrides("tasks/cpu_exceptions.yaml", [tmp_path / "mine"]) == beside
    with pytest.raises(FileNotFoundError, match="'nope.yaml' not found .*--task_overrides=null"):
        find_task_overrides("nope.yaml", [tmp_path / "mine"])


def test_a_runs_saved_config_runs_from_any_folder(tiny_shards: Path, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    # Its task_overrides path is kept as written (relative to the config that named it): the
    # run's own config.yaml, in the run folder, must still find it.
    monkeypatch.setenv("WANDB_MODE", "offline")
    configs = tmp_path / "configs"
    (configs / "tasks").mkdir(parents=True)
    (configs / "tasks" / "exceptions.yaml").write_text("normal: {model: {lr: 0.002}}\n")
    config = yaml.safe_load(tiny_config(configs, tiny_shards).read_text())
    (configs / "tiny.yaml").write_text(yaml.safe_dump(
        {**config, "task_overrides": "tasks/exceptions.yaml"}))
    runs = tmp_path / "runs"
    args = ["train", "fit", "--model.task=normal", f"--runs_dir={runs}",
            "--trainer.logger=false"]
    assert taskonomy_main([*args[:2], "--config", str(configs / "tiny.yaml"), *args[2:]]) == 0
    (record,) = read_records(runs)
    assert record.config["model"]["lr"] == 0.002
    # kept absolute (the run id hashed it as written); a packaged file keeps its short name
    assert record.config["task_overrides"] == str(configs / "tasks" / "exceptions.yaml")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    saved = runs / record.run_id / "config.yaml"
    assert taskonomy_main([*args[:2], "--config", str(saved), *args[2:]]) == 0
    assert "is already finished" in capsys.readouterr().out
    # On the command line, a relative path is the working directory's (not the config's).
    (elsewhere / "tasks").mkdir()
    (elsewhere / "tasks" / "exceptions.yaml").write_text("normal: {model: {lr: 0.003}}\n")
    assert taskonomy_main([*args[:2], "--config", str(configs / "tiny.yaml"), *args[2:],
                           "--task_overrides=tasks/exceptions.yaml", "--run_id=here"]) == 0
    assert read_record(record_path(runs, "here")).config["model"]["lr"] == 0.003


def test_a_typed_value_beats_a_task_override_in_a_rerun_from_the_saved_config(
        tiny_shards: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    # The saved config.yaml names the typed keys an override would replace: a rerun from it
    # is the same run (finished, not retrained with the override's value).
    monkeypatch.setenv("WANDB_MODE", "offline")
    overrides = tmp_path / "exceptions.yaml"
    overrides.write_text("normal: {model: {lr: 0.002}, data: {batch_size: 3}}\n")
    runs = tmp_path / "runs"
    args = ["train", "fit", "--config", str(tiny_config(tmp_path, tiny_shards)),
            "--model.task=normal", f"--runs_dir={runs}", "--trainer.logger=false",
            f"--task_overrides={overrides}"]
    assert taskonomy_main([*args, "--model.lr=0.005"]) == 0
    (record,) = read_records(runs)
    assert record.config["model"]["lr"] == 0.005 and record.config["data"]["batch_size"] == 3
    assert record.config["task_overrides_keep"] == ["model.lr"]
    saved = runs / record.run_id / "config.yaml"
    assert taskonomy_main([*args[:2], "--config", str(saved), *args[4:]]) == 0
    assert "is already finished" in capsys.readouterr().out
    # The key list is checked.
    assert taskonomy_main([*args, "--task_overrides_keep=[model.lrr]"]) == 2
    assert "task_overrides_keep names 'model.lrr'" in capsys.readouterr().err


def test_the_failing_rank_records_its_cause(tmp_path: Path) -> None:
    # A rank that fails alone gets rank 0 killed or cut off: it writes its cause itself, and
    # rank 0, if it gets there, adds its own (a lost connection) instead of replacing it.
    from taskonomy.analysis.records import RunRecord, write_record
    from taskonomy.experiments.lightning_cli import write_failed_record

    def attempt(started: str) -> RunRecord:  # each rank builds its own record of the attempt
        return dataclasses.replace(RunRecord(run_id="r", role="task", target="normal",
                                             sources=(), regime="full"), started_at=started)

    write_record(attempt("2026-01-01T00:00:00+00:00"), tmp_path)  # rank 0, as the run starts
    rank1 = attempt("2026-01-01T00:00:07+00:00")  # started seconds later
    write_failed_record(rank1.failed("ShardKeyMismatchError: shard 3"), tmp_path, rank=1)
    on_disk = read_record(record_path(tmp_path, "r"))
    assert on_disk.error == "rank 1: ShardKeyMismatchError: shard 3"
    assert on_disk.started_at == "2026-01-01T00:00:00+00:00"  # the attempt's start
    write_failed_record(rank1.failed("RuntimeError: Connection closed"), tmp_path, rank=2)
    written = write_failed_record(attempt("2026-01-01T00:00:00+00:00").failed(
        "RuntimeError: Connection closed by peer"), tmp_path, rank=0)
    assert written.error == ("rank 1: ShardKeyMismatchError: shard 3; "
                             "rank 0: RuntimeError: Connection closed by peer")
    assert read_record(record_path(tmp_path, "r")) == written
    # A later attempt is its own: rank 0 writes its failure as it is.
    assert write_failed_record(attempt("2099-01-01T00:00:00+00:00").failed("ValueError: x"),
                               tmp_path, 0).error == "ValueError: x"


def test_a_nan_on_one_rank_is_recorded_by_that_rank(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    # Every rank stops on a NaN; only the rank that saw it names the loss. The others' echo
    # ("not finite on another GPU") never replaces it, whoever writes first.
    import taskonomy.experiments.lightning_cli as cli
    from taskonomy.analysis.records import RunRecord, write_record
    from taskonomy.experiments.lightning_cli import write_failed_record

    monkeypatch.setattr(cli, "ECHO_WAIT_SECONDS", 0.2)  # rank 0's wait for the cause

    running = RunRecord(run_id="r", role="task", target="normal", sources=(), regime="full")
    echo = "NonFiniteLossElsewhereError: train loss is not finite on another GPU at step 5"
    cause = "NonFiniteLossError: task 'normal': train loss is nan at step 5"
    for first_writer in (0, 1):
        write_record(running, tmp_path)
        order = [(0, echo, True), (1, cause, False)]
        for rank, error, is_echo in (order if first_writer == 0 else order[::-1]):
            write_failed_record(running.failed(error), tmp_path, rank, echo=is_echo)
        assert read_record(record_path(tmp_path, "r")).error == f"rank 1: {cause}"

    # Under a launcher that starts every rank at once there may be no record yet: the failing
    # rank still writes its cause.
    alone = tmp_path / "alone"
    write_failed_record(running.failed(cause), alone, rank=2)
    assert read_record(record_path(alone, "r")).error == f"rank 2: {cause}"


def test_a_wandb_panel_sits_at_the_step_of_the_validation_metrics(tmp_path: Path) -> None:
    from types import SimpleNamespace

    import numpy as np
    from lightning.pytorch.loggers import WandbLogger

    from taskonomy.experiments.panels import PredictionPanels

    class Recorder(WandbLogger):
        def __init__(self) -> None:  # no W&B run: only the calls are kept
            self.calls: list[tuple[str, int | None]] = []

        def log_image(self, key, images, step=None, **kwargs):  # type: ignore[no-untyped-def, override]
            self.calls.append((key, step))

    recorder = Recorder()
    # A cGAN task after 3 batches: 6 optimizer steps (its discriminator's count too), while
    # Lightning logs the validation metrics at 3.
    trainer = SimpleNamespace(loggers=[recorder], global_step=6, default_root_dir=str(tmp_path),
                              fit_loop=SimpleNamespace(epoch_loop=SimpleNamespace(
                                  _batches_that_stepped=3)))
    PredictionPanels().emit(trainer, "normal", np.zeros((8, 24, 3), np.uint8))  # type: ignore[arg-type]
    assert recorder.calls == [("panels/normal", 3)]


def test_a_failed_upload_still_closes_the_wandb_run_with_the_runs_exit_code(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from types import SimpleNamespace

    from taskonomy.analysis import wandb_source
    from taskonomy.analysis.records import RunRecord
    from taskonomy.experiments.lightning_cli import TaskonomyCLI

    closed: list[int] = []
    run = SimpleNamespace(finish=lambda exit_code: closed.append(exit_code))

    def upload_fails(run, record):  # type: ignore[no-untyped-def]
        raise ConnectionError("W&B server unreachable")

    monkeypatch.setattr(wandb_source, "log_record", upload_fails)
    cli = object.__new__(TaskonomyCLI)
    cli.trainer = SimpleNamespace(is_global_zero=True)  # type: ignore[assignment]
    monkeypatch.setattr(TaskonomyCLI, "_wandb_run", lambda self: run)
    with pytest.raises(ConnectionError):
        cli._finish_wandb(RunRecord(run_id="r", role="task", target="normal"), exit_code=1)
    assert closed == [1]  # shown failed in W&B, not finished by the exit hooks
