"""TransferTask: source runs, frozen encoders, readout + fresh head, errors, CLI records."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from taskonomy.analysis.records import RunRecord, read_record, write_record
from taskonomy.tasks.build import build_task
from taskonomy.tasks.registry import get_spec
from taskonomy.tasks.source_runs import find_task_runs, register_task_run, source_input
from taskonomy.tasks.testing import fake_batch
from taskonomy.tasks.transfer import TransferTask
from taskonomy.tasks.transfer_identity import parse_transfer, resolve_identity

RES = 32
SMALL = {"encoder": "resnet10_tiny", "resolution": RES, "decoder_width": 0.25,
         "head_width": 0.05}


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("runs")
    torch.manual_seed(0)
    for task in ("reshading", "depth_zbuffer", "colorization", "normal"):
        register_task_run(build_task(task, encoder="resnet10_tiny", resolution=RES,
                                     decoder_width=0.25), folder)
    return folder


def transfer(runs: Path, target: str = "normal", sources: list[str] | None = None,
             **options: object) -> TransferTask:
    return TransferTask(target=target, sources=sources or ["reshading"], task_runs=str(runs),
                        **{**SMALL, **options})  # type: ignore[arg-type]


def test_identity_sorts_sources_and_names_baselines() -> None:
    ident = resolve_identity("normal", ["reshading", "depth_zbuffer"])
    assert (ident.role, ident.target, ident.sources) == (
        "transfer", "normal", ("depth_zbuffer", "reshading"))
    assert resolve_identity("normal", ["pixels"]).sources == ("pixels",)
    assert resolve_identity("normal", None, "self").role == "baseline"
    spelled = resolve_identity(None, None, transfer="normal:reshading+depth_zbuffer")
    assert spelled == ident
    assert parse_transfer("room_layout:random") == ("room_layout", ["random"])
    for bad in ("normal", "normal:reshading+", "normal:+reshading", "normal:a++b", "normal:"):
        with pytest.raises(ValueError, match="target:source"):
            parse_transfer(bad)
    with pytest.raises(ValueError, match="unknown kind"):
        resolve_identity("normal", None, "bogus")
    with pytest.raises(ValueError, match="takes no sources"):
        resolve_identity("normal", ["reshading"], "pixels")
    with pytest.raises(ValueError, match="duplicate"):
        resolve_identity("normal", ["reshading", "reshading"])
    with pytest.raises(ValueError, match="unknown task"):
        resolve_identity("normal", ["not_a_task"])


def test_missing_source_runs_are_all_listed(runs: Path) -> None:
    with pytest.raises(ValueError) as error:
        transfer(runs, sources=["reshading", "keypoints2d", "edge_texture"])
    message = str(error.value)
    assert "keypoints2d" in message and "edge_texture" in message
    assert "taskonomy train fit" in message
    # An unfinished run is named as such.
    write_record(RunRecord(run_id="task__keypoints2d__running", role="task",
                           target="keypoints2d", status="running"), runs)
    with pytest.raises(ValueError, match=r"keypoints2d \(only task__keypoints2d__running"):
        find_task_runs(runs, ["keypoints2d"])


def test_a_class_weighted_target_without_its_task_run_warns(runs: Path) -> None:
    with pytest.warns(UserWarning, match="'segment_semantic' is class-weighted.*unweighted"):
        transfer(runs, target="segment_semantic")


def test_a_missing_runs_folder_names_the_flags(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"no runs folder .*--runs_dir=FOLDER"):
        find_task_runs(tmp_path / "runs", ["reshading"])


def test_checkpoint_of_another_architecture_is_rejected(runs: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="holds a 'resnet10_tiny' encoder but this transfer "
                                         "expects 'resnet18'"):
        transfer(runs, encoder="resnet18")
    # Weights that do not fit the architecture the checkpoint declares.
    record = register_task_run(build_task("reshading", encoder="resnet10_tiny", resolution=RES),
                               tmp_path)
    path = tmp_path / record.run_id / "checkpoints" / "last.ckpt"
    data = torch.load(path, weights_only=False)
    data["hyper_parameters"]["encoder"] = "resnet10"
    torch.save(data, path)
    with pytest.raises(ValueError, match="do not fit the 'resnet10' architecture"):
        TransferTask(target="normal", sources=["reshading"], task_runs=str(tmp_path),
                     resolution=RES)
    data["hyper_parameters"]["encoder"] = "resnet10_tiny"
    data["hyper_parameters"]["resolution"] = 64
    torch.save(data, path)
    with pytest.raises(ValueError, match="trained at resolution 64"):
        TransferTask(target="normal", sources=["reshading"], task_runs=str(tmp_path),
                     resolution=RES)


def test_source_only_task_is_not_a_target(runs: Path) -> None:
    with pytest.raises(ValueError, match="source-only"):
        transfer(runs, target="colorization")


def test_frozen_sources_load_the_task_run_weights(runs: Path) -> None:
    model = transfer(runs, sources=["reshading", "depth_zbuffer"])
    record = find_task_runs(runs, ["depth_zbuffer"])["depth_zbuffer"]
    saved = torch.load(runs / record.run_id / "checkpoints" / "last.ckpt", weights_only=False)
    loaded = model.sources[0].encoder.state_dict()  # sorted: depth_zbuffer first
    for key, value in loaded.items():
        assert torch.equal(value, saved["state_dict"][f"encoder.{key}"]), key
    assert model.readout is not None and model.readout.in_channels == 16  # 8 per source


def test_training_moves_readout_and_head_only(runs: Path) -> None:
    model = transfer(runs, sources=["reshading", "colorization"], lr=5e-3)
    frozen = {k: v.clone() for k, v in model.sources.state_dict().items()}
    batch = fake_batch(get_spec("normal"), 2, RES, seed=1)
    batch["normal"]["target"] = torch.full_like(batch["normal"]["target"], 0.5)  # learnable
    configured = model.configure_optimizers()
    optimizer = configured["optimizer"]  # with the LR drop at lr_milestone
    assert isinstance(optimizer, torch.optim.Adam)
    drop = configured["lr_scheduler"]["scheduler"].lr_lambdas[0]
    assert (drop(4999), drop(5000)) == (1.0, 0.1)
    model.train()
    assert all(not m.training for source in model.sources for m in source.modules())
    first = None
    for _ in range(8):  # the readout and head can fit one fixed batch
        optimizer.zero_grad()
        loss = model.training_step(batch, 0)
        loss.backward()
        optimizer.step()
        first = loss.item() if first is None else first
    assert loss.item() < 0.7 * first
    for key, value in model.sources.state_dict().items():
        assert torch.equal(value, frozen[key]), key
    assert all(p.grad is None for p in model.sources.parameters())


def test_adam_is_fused_unless_gradients_are_scaled(runs: Path) -> None:
    model = transfer(runs)
    optimizer = model.configure_optimizers()["optimizer"]
    assert optimizer.defaults["fused"] is True  # CPU float32: one fused kernel per step
    model._trainer = SimpleNamespace(precision="16-mixed")  # type: ignore[assignment]
    optimizer = model.configure_optimizers()["optimizer"]
    # A GradScaler must unscale before the per-variable clip; fused Adam would unscale later.
    assert not optimizer.defaults["fused"] and optimizer.defaults["foreach"] is True


def test_higher_orders_and_weight_decay(runs: Path) -> None:
    first = transfer(runs)
    second = transfer(runs, sources=["reshading", "depth_zbuffer", "normal"])
    assert first.weight_decay == 1e-5 and second.weight_decay == 1e-6
    assert second.order == 3 and second.identity.sources == ("depth_zbuffer", "normal",
                                                             "reshading")
    batch = fake_batch(get_spec("normal"), 2, RES)
    second.eval()
    assert second.frozen_representation(batch, "test").shape == (2, 24, 2, 2)
    assert second(batch).shape == (2, 3, RES, RES)



def test_sources_are_concatenated_in_sorted_order_cached_or_not(runs: Path,
                                                                tmp_path: Path) -> None:
    pair = transfer(runs, sources=["reshading", "depth_zbuffer"]).eval()
    assert pair.weight_decay == 1e-6  # every higher order, 2 included
    assert [s.spec.name for s in pair.sources] == ["depth_zbuffer", "reshading"]
    batch = fake_batch(get_spec("normal"), 2, RES)
    with torch.no_grad():
        representation = pair.frozen_representation(batch, "test")
        assert torch.allclose(representation[:, :8], pair.sources[0](batch["rgb"]))
        assert torch.allclose(representation[:, 8:], pair.sources[1](batch["rgb"]))
        cached = transfer(runs, sources=["reshading", "depth_zbuffer"],
                          cache_dir=str(tmp_path / "cache")).eval()
        assert torch.allclose(cached.frozen_representation(batch, "test"), representation,
                              atol=1e-5)


def test_a_random_encoder_is_a_resnet50_unless_told(tmp_path: Path) -> None:
    random = TransferTask(target="normal", kind="random", resolution=RES,
                          task_runs=str(tmp_path))
    assert random.sources[0].run_id == "random-resnet50-seed0"


def test_multi_view_target_reads_each_view(runs: Path) -> None:
    model = transfer(runs, target="fixated_pose")
    batch = fake_batch(get_spec("fixated_pose"), 2, RES)
    model.eval()
    representation = model.frozen_representation(batch, "test")
    assert representation.shape == (2, 2, 8, 2, 2)
    assert model(batch).shape == (2, 6)
    # Each view is encoded on its own by the shared source: swapping the views swaps them.
    views = batch["fixated_pose"]["input"]
    (source,) = model.sources
    with torch.no_grad():
        assert torch.allclose(representation[:, 1], source(views[:, 1]), atol=1e-6)
        batch["fixated_pose"]["input"] = views.flip(1)
        swapped = model.frozen_representation(batch, "test")
    assert torch.allclose(swapped, representation.flip(1), atol=1e-6)


def test_colorization_source_reads_lightness() -> None:
    rgb = torch.rand(2, 3, RES, RES) * 2 - 1
    lightness = source_input(get_spec("colorization"), rgb)
    assert lightness.shape == (2, 1, RES, RES)
    assert lightness.min() >= -1.0 and lightness.max() <= 1.0
    white = source_input(get_spec("colorization"), torch.ones(1, 3, 4, 4))
    assert torch.allclose(white, torch.ones_like(white), atol=1e-3)
    assert source_input(get_spec("normal"), rgb) is rgb


def test_denoising_and_inpainting_sources_read_their_own_inputs() -> None:
    images = torch.rand(3, 3, 16, 16) * 2 - 1
    noisy = source_input(get_spec("denoising"), images)
    # Variance 0.01 on the [0,1] image: σ 0.2 in [-1,1] (a little less where clipped).
    assert 0.15 < float((noisy - images).std()) < 0.21
    # Each image's noise is its own, whatever else is in the batch (the cache encodes other
    # batches than training reads), and differs between images.
    assert torch.equal(source_input(get_spec("denoising"), images[1:2]), noisy[1:2])
    assert torch.equal(source_input(get_spec("denoising"), images.flip(0)), noisy.flip(0))
    same = images[:1].expand(2, -1, -1, -1).clone()
    same[1, 0, 0, 0] += 0.5
    twins = source_input(get_spec("denoising"), same) - same
    assert not torch.allclose(twins[0, :, 1:], twins[1, :, 1:])
    blank = source_input(get_spec("inpainting"), images)
    assert (blank[..., 4:12, 4:12] == 0).all()
    blank[..., 4:12, 4:12] = images[..., 4:12, 4:12]
    assert torch.equal(blank, images)


def test_checkpoints_leave_frozen_sources_out(runs: Path) -> None:
    model = transfer(runs)
    checkpoint = {"state_dict": model.state_dict()}
    model.on_save_checkpoint(checkpoint)
    assert checkpoint["state_dict"] and not any(
        k.startswith("sources.") for k in checkpoint["state_dict"])


def test_cli_transfer_writes_its_record(runs: Path, tiny_shards: Path, tmp_path: Path,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    from taskonomy.experiments.transfer import main

    monkeypatch.setenv("WANDB_MODE", "offline")
    runs_dir = tmp_path / "runs"
    for record_file in runs.glob("task__*__registered/**/*"):
        if record_file.is_file():
            target = runs_dir / record_file.relative_to(runs)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(record_file.read_bytes())
    argv = ["fit", "--model.transfer=normal:reshading+depth_zbuffer",
            "--model.encoder=resnet10_tiny", f"--model.resolution={RES}",
            "--model.decoder_width=0.25", "--model.head_width=0.25",
            f"--data.root={tiny_shards}", "--data.batch_size=4", "--data.num_workers=0",
            "--data.limit=8", "--regime=auto", "--trainer.max_steps=2",
            "--trainer.logger=false", "--trainer.enable_progress_bar=false",
            "--trainer.num_sanity_val_steps=0", f"--runs_dir={runs_dir}", "--run_id=t1"]
    assert main(argv) == 0
    record = read_record(runs_dir / "t1" / "record.json")
    assert record.status == "finished" and record.role == "transfer"
    assert (record.target, record.sources, record.order, record.regime) == (
        "normal", ("depth_zbuffer", "reshading"), 2, "8")
    assert len(record.per_image_losses) == 18 and "test/loss" in record.metrics
    assert record.checkpoint and Path(record.checkpoint).is_file()
    assert (runs_dir / "representations").is_dir()
    config = json.loads((runs_dir / "t1" / "record.json").read_text())["config"]
    assert config["model"]["task_runs"] == str(runs_dir)
    assert set(config["source_runs"]) == {"depth_zbuffer", "reshading"}
    assert config["source_runs"]["reshading"]["run_id"] == "task__reshading__full__registered"

    # A source retrained since: resuming the readout on the new encoder is refused.
    torch.manual_seed(1)
    register_task_run(build_task("reshading", encoder="resnet10_tiny", resolution=RES,
                                 decoder_width=0.25), runs_dir, run_id="task__reshading__new")
    assert find_task_runs(runs_dir, ["reshading"])["reshading"].run_id == "task__reshading__new"
    longer = [a.replace("max_steps=2", "max_steps=4") for a in argv]
    assert main(longer) == 2
    failed = read_record(runs_dir / "t1" / "record.json")
    assert failed.status == "failed" and "other source weights" in (failed.error or "")


def test_a_moved_runs_folder_still_finds_its_checkpoints(runs: Path, tmp_path: Path) -> None:
    from taskonomy.tasks.source_runs import resolve_checkpoint

    record = find_task_runs(runs, ["reshading"])["reshading"]
    elsewhere = f"/gone/box/runs/{record.run_id}/checkpoints/last.ckpt"
    moved = RunRecord.from_dict({**record.to_dict(), "checkpoint": elsewhere})
    assert resolve_checkpoint(moved, runs) == runs / record.run_id / "checkpoints" / "last.ckpt"


def test_a_transfer_resumes_from_a_moved_runs_folder_but_not_on_new_weights(
        runs: Path, tmp_path: Path) -> None:
    import shutil

    checkpoint: dict = {"state_dict": {}}
    transfer(runs).on_save_checkpoint(checkpoint)
    moved = Path(shutil.copytree(runs, tmp_path / "moved"))  # new path and file times
    transfer(moved).on_load_checkpoint(checkpoint)  # the same weights: resumes
    record = find_task_runs(moved, ["reshading"])["reshading"]
    path = moved / record.run_id / "checkpoints" / "last.ckpt"
    data = torch.load(path, weights_only=False)
    name = next(k for k, v in data["state_dict"].items()
                if k.startswith("encoder.") and v.is_floating_point())
    data["state_dict"][name] = data["state_dict"][name] + 1.0  # retrained in place
    torch.save(data, path)
    with pytest.raises(ValueError, match="whose weights changed"):
        transfer(moved).on_load_checkpoint(checkpoint)


def test_a_runs_folder_of_two_settings_gives_each_transfer_its_own_sources(
        runs: Path, tmp_path: Path) -> None:
    import shutil

    from taskonomy.analysis.affinities import stale_transfers
    from taskonomy.analysis.records import read_records

    mixed = Path(shutil.copytree(runs, tmp_path / "mixed"))
    used = find_task_runs(mixed, ["reshading"])["reshading"]
    # A newer reshading run of another setting (the paper's beside the CPU's, say).
    other = register_task_run(build_task("reshading", encoder="resnet10_tiny", resolution=16,
                                         decoder_width=0.25), mixed, run_id="reshading16")
    other = RunRecord.from_dict({**other.to_dict(), "finished_at": "2999-01-01T00:00:00Z"})
    write_record(other, mixed)
    assert find_task_runs(mixed, ["reshading"])["reshading"].run_id == other.run_id
    assert find_task_runs(mixed, ["reshading"], resolution=RES)["reshading"] == used
    model = transfer(mixed)  # builds: its sources are the ones at its resolution
    assert model.source_runs["reshading"]["run_id"] == used.run_id
    record = RunRecord(run_id="t", role="transfer", target="normal", sources=("reshading",),
                       config={"model": {"resolution": RES, "encoder": "resnet10_tiny"},
                               "source_runs": model.source_runs})
    write_record(record.finished(metrics={}, per_image_losses={"k": 1.0}), mixed)
    assert stale_transfers(read_records(mixed)) == []  # not stale: its setting was not retrained


def test_cli_reports_missing_sources(tiny_shards: Path, tmp_path: Path,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    from taskonomy.experiments.transfer import main

    (tmp_path / "runs").mkdir()
    code = main(["fit", "--model.target=normal", "--model.sources=[reshading,normal]",
                 f"--model.resolution={RES}", f"--data.root={tiny_shards}",
                 "--trainer.logger=false", f"--runs_dir={tmp_path / 'runs'}", "--run_id=x"])
    assert code == 2
    err = capsys.readouterr().err
    assert "reshading" in err and "normal" in err and "no finished task run" in err


def test_bare_source_names_are_read_as_a_list(tiny_shards: Path, tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    from taskonomy.experiments.transfer import main, sources_as_lists

    assert sources_as_lists(["--model.sources=reshading", "--model.sources", "a, b"]) == [
        "--model.sources=[reshading]", "--model.sources", "[a,b]"]
    kept = ["--model.sources=[a,b]", "--model.sources=['a']", "--model.sources=null"]
    assert sources_as_lists(kept) == kept
    (tmp_path / "runs").mkdir()
    code = main(["fit", "--model.target=normal", "--model.sources=reshading,normal",
                 f"--model.resolution={RES}", f"--data.root={tiny_shards}",
                 "--trainer.logger=false", f"--runs_dir={tmp_path / 'runs'}", "--run_id=x"])
    assert code == 2  # parsed: it fails later, on the missing task runs of both sources
    err = capsys.readouterr().err
    assert "reshading" in err and "normal" in err and "no finished task run" in err


def test_inner_modules_keep_their_own_hyperparameters_under_the_cli() -> None:
    from taskonomy.experiments.transfer import build_cli

    cli = build_cli(["--model.target=segment_semantic", "--model.kind=pixels",
                     f"--model.resolution={RES}", "--model.decoder_width=0.25",
                     "--data.root=unused", "--trainer.logger=false"], run=False)
    assert isinstance(cli.model, TransferTask)
    hparams = cli.model.loss_module.hparams
    assert hparams["task"] == "segment_semantic" and "class_weights" in hparams
    assert cli.datamodule.tasks == ["segment_semantic"] and cli.datamodule.resolution == RES


def _copy_task_runs(runs: Path, runs_dir: Path) -> None:
    for record_file in runs.glob("task__*__registered/**/*"):
        if record_file.is_file():
            target = runs_dir / record_file.relative_to(runs)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(record_file.read_bytes())


@pytest.mark.slow
def test_cli_transfers_in_separate_processes_encode_a_source_once(
        runs: Path, tiny_shards: Path, tmp_path: Path) -> None:
    # Two transfers of one source into two targets, each in its own process (as the sweep
    # executor runs them): the first encodes and writes the cache, the second encodes nothing
    # and leaves the cache files untouched.
    runs_dir = tmp_path / "runs"
    _copy_task_runs(runs, runs_dir)
    common = ["--model.encoder=resnet10_tiny", f"--model.resolution={RES}",
              "--model.decoder_width=0.25", "--model.head_width=0.25",
              f"--data.root={tiny_shards}", "--data.batch_size=4", "--data.num_workers=0",
              "--data.limit=8", "--regime=auto", "--trainer.max_epochs=2",
              "--trainer.logger=false", "--trainer.enable_progress_bar=false",
              "--trainer.enable_checkpointing=false", "--trainer.num_sanity_val_steps=0",
              f"--runs_dir={runs_dir}"]
    script = ("import sys; from taskonomy.experiments.transfer import main; "
              "sys.exit(main(sys.argv[1:]))")
    env = {**os.environ, "WANDB_MODE": "offline", "OMP_NUM_THREADS": "1"}

    def run(transfer: str, run_id: str) -> str:
        done = subprocess.run([sys.executable, "-c", script, "fit", f"--model.transfer={transfer}",
                               *common, f"--run_id={run_id}"],
                              capture_output=True, text=True, env=env, timeout=600)
        assert done.returncode == 0, done.stderr[-3000:]
        assert read_record(runs_dir / run_id / "record.json").status == "finished"
        return done.stdout + done.stderr

    first = run("normal:reshading", "first")
    files = sorted((runs_dir / "representations").rglob("*.pt"))
    # One file per split: its name tagged with a hash of the split's images.
    names = [re.sub(r"_[0-9a-f]{10}__", "__", f.name) for f in files]
    assert names == ["test__rgb__r32.pt", "train__rgb__r32.pt", "val__rgb__r32.pt"]
    stamps = {f: (f.stat().st_mtime_ns, f.read_bytes()) for f in files}
    assert " 0 encoded" not in first.split("after fit:")[1].splitlines()[0]

    second = run("depth_zbuffer:reshading", "second")
    for line in [x for x in second.splitlines() if "representation cache after" in x]:
        assert line.rstrip().endswith(" 0 encoded"), line
    assert "representation cache after test" in second
    assert {f: (f.stat().st_mtime_ns, f.read_bytes()) for f in files} == stamps


def test_class_weighted_target_is_scored_with_its_task_runs_weights(tmp_path: Path) -> None:
    """Transfers and baselines into segment_semantic use the weights its task run trained with."""
    from taskonomy.experiments.train import task_model
    from taskonomy.tasks.source_runs import register_task_run
    from taskonomy.tasks.transfer import TransferTask

    weights = [0.5] + [float(i) for i in range(1, 17)]
    network = task_model("segment_semantic", encoder="resnet10_tiny", resolution=32,
                         decoder_width=0.125, class_weights=weights)
    register_task_run(network, tmp_path)
    model = TransferTask(target="segment_semantic", kind="pixels", task_runs=str(tmp_path),
                         resolution=32, decoder_width=0.125, head_width=0.125)
    assert model.loss_module.hparams["class_weights"] == weights
    assert model.hparams["target_options"] == {"class_weights": weights}
    explicit = TransferTask(target="segment_semantic", kind="pixels", task_runs=str(tmp_path),
                            resolution=32, decoder_width=0.125, head_width=0.125,
                            target_options={"class_weights": [1.0] * 17})
    assert explicit.loss_module.hparams["class_weights"] == [1.0] * 17


def test_a_malformed_transfer_reads_as_its_own_error(tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    from taskonomy.experiments.cli import main

    with pytest.raises(SystemExit) as exited:  # the parser's exit
        main(["transfer", "fit", "--model.transfer=normal-reshading", f"--runs_dir={tmp_path}"])
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert "error: transfer 'normal-reshading' must read 'target:source" in err
    assert "compute_fn" not in err  # jsonargparse's wrapping of the linked value's error


@pytest.mark.parametrize("change, message", [
    ({"task": "normal"}, "is of task 'normal', not 'reshading'"),
    ({"encoder": "vgg99"}, "declares encoder 'vgg99', which is not a known architecture"),
])
def test_a_checkpoint_of_another_task_or_an_unknown_encoder_is_named(
        tmp_path: Path, change: dict[str, str], message: str) -> None:
    from taskonomy.tasks.source_runs import load_source, resolve_checkpoint

    record = register_task_run(build_task("reshading", encoder="resnet10_tiny", resolution=RES,
                                          decoder_width=0.25), tmp_path)
    path = resolve_checkpoint(record, tmp_path)
    data = torch.load(path, weights_only=False)
    data["hyper_parameters"] = {**data["hyper_parameters"], **change}
    torch.save(data, path)
    with pytest.raises(ValueError, match=message):
        load_source(record, tmp_path, resolution=RES)
