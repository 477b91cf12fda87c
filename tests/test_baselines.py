"""Baselines: the pixels network, the random frozen encoder, and self (the task network)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from taskonomy.analysis.records import read_record
from taskonomy.tasks.baselines import PixelsEncoder, load_checkpoint, random_encoder
from taskonomy.tasks.build import build_task
from taskonomy.tasks.networks.encoders import build_encoder, representation_shape
from taskonomy.tasks.registry import get_spec
from taskonomy.tasks.source_runs import register_task_run
from taskonomy.tasks.testing import fake_batch
from taskonomy.tasks.transfer import TransferTask

RES = 32
SMALL = {"encoder": "resnet10_tiny", "resolution": RES, "decoder_width": 0.25,
         "head_width": 0.05}


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("runs")
    torch.manual_seed(0)
    register_task_run(build_task("normal", encoder="resnet10_tiny", resolution=RES,
                                 decoder_width=0.25), folder)
    return folder


@pytest.mark.parametrize("resolution", [32, 64, 256])
def test_pixels_network_lands_on_the_encoder_grid(resolution: int) -> None:
    net = PixelsEncoder(resolution)
    out = net(torch.rand(2, 3, resolution, resolution))
    _, h, w = representation_shape(resolution)
    assert out.shape == (2, 16, h, w)
    # The paper's numbers at 256²: RGB resized to 64², 16×16×8 concatenated with itself.
    if resolution == 256:
        assert net.side == 64
    with pytest.raises(ValueError, match="multiple of 16"):
        PixelsEncoder(40)


def test_pixels_halves_are_the_same_features_before_the_last_norm() -> None:
    net = PixelsEncoder(64).eval()
    x = torch.rand(1, 3, 64, 64)
    half = net.conv2(net.conv1(torch.nn.functional.interpolate(x, size=(16, 16),
                                                               mode="bilinear")))
    doubled = torch.cat([half, half], dim=1)
    assert torch.allclose(net(x), net.output_norm(doubled), atol=1e-6)


def test_pixels_baseline_trains_its_network_and_head() -> None:
    model = TransferTask(target="normal", kind="pixels", **SMALL)  # type: ignore[arg-type]
    assert model.identity.sources == ("pixels",) and len(model.sources) == 0
    assert model.weight_decay == 1e-6
    trainable = {id(p) for p in model.trainable_parameters()}
    assert model.pixels is not None
    assert all(id(p) in trainable for p in model.pixels.parameters())
    batch = fake_batch(get_spec("normal"), 2, RES)
    assert model(batch).shape == (2, 3, RES, RES)


def test_pixels_baseline_reads_the_targets_own_input() -> None:
    # The authors' side encoder took the target's input: denoising's noisy image, not the clean.
    model = TransferTask(target="denoising", kind="pixels", **SMALL)  # type: ignore[arg-type]
    assert model.pixels is not None
    seen: list[torch.Tensor] = []
    model.pixels.register_forward_hook(lambda _, inputs, __: seen.append(inputs[0]))
    batch = fake_batch(get_spec("denoising"), 2, RES)
    batch["rgb"] = torch.zeros_like(batch["denoising"]["input"])
    model(batch)
    assert seen[0] is batch["denoising"]["input"]


def test_random_baseline_reads_the_plain_image_under_its_own_name() -> None:
    # Into denoising, a source named after the target read the noisy input; and keyed by the
    # target's name, the target's task run looked like a retrained source of the baseline.
    from taskonomy.tasks.source_runs import source_input

    model = TransferTask(target="denoising", kind="random", **SMALL)  # type: ignore[arg-type]
    (source,) = model.sources
    images = torch.rand(2, 3, RES, RES) * 2 - 1
    assert source_input(source.spec, images) is images
    assert list(model.source_runs) == ["random_encoder"]


def test_random_encoder_is_seeded_frozen_and_leaves_the_rng_alone() -> None:
    torch.manual_seed(123)
    state = torch.random.get_rng_state()
    a = random_encoder("resnet10_tiny", seed=0)
    assert torch.equal(torch.random.get_rng_state(), state)
    b = random_encoder("resnet10_tiny", seed=0)
    c = random_encoder("resnet10_tiny", seed=1)
    for (key, va), vb in zip(a.state_dict().items(), b.state_dict().values(),
                             strict=True):
        assert torch.equal(va, vb), key
    assert any(not torch.equal(va, vc) for va, vc in zip(a.state_dict().values(),
                                                        c.state_dict().values(), strict=True))
    assert not a.training and not any(p.requires_grad for p in a.parameters())


def test_random_baseline_reads_out_the_random_encoder() -> None:
    model = TransferTask(target="room_layout", kind="random", random_seed=3,
                         **SMALL)  # type: ignore[arg-type]
    assert model.weight_decay == 1e-5 and model.identity.sources == ("random",)
    expected = random_encoder("resnet10_tiny", seed=3).state_dict()
    for key, value in model.sources[0].encoder.state_dict().items():
        assert torch.equal(value, expected[key]), key
    assert build_encoder("resnet10_tiny").out_channels == model.readout.in_channels
    model.eval()
    assert model(fake_batch(get_spec("room_layout"), 2, RES)).shape == (2, 9)


def test_self_baseline_reproduces_the_task_networks_losses(runs: Path) -> None:
    model = TransferTask(target="normal", kind="self", task_runs=str(runs), resolution=RES)
    assert model.identity.sources == ("self",) and model.network is not None
    record_dir = next(runs.glob("task__normal__*"))
    assert model.network_checkpoint == str(record_dir / "checkpoints" / "last.ckpt")
    original = build_task("normal", encoder="resnet10_tiny", resolution=RES, decoder_width=0.25)
    original.load_state_dict(load_checkpoint(model.network_checkpoint, "test")["state_dict"])
    original.eval()
    model.eval()
    batch = fake_batch(get_spec("normal"), 3, RES, seed=4)
    with torch.no_grad():
        expected = original.compute_loss(original(batch["normal"]["input"]), batch["normal"],
                                         "none")
        prediction = model.predict_batch(batch, "test")
        got = model._loss(prediction, batch, "none", batch["__key__"])
    assert torch.allclose(got, expected)
    with pytest.raises(ValueError, match="nothing to train"):
        model.configure_optimizers()


def test_self_baseline_cli_tests_without_training(runs: Path, tiny_shards: Path,
                                                  tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    from taskonomy.experiments.transfer import main

    monkeypatch.setenv("WANDB_MODE", "offline")
    code = main(["fit", "--model.target=normal", "--model.kind=self",
                 f"--model.resolution={RES}", f"--data.root={tiny_shards}",
                 "--data.batch_size=6", "--data.num_workers=0", "--data.limit=8",
                 "--regime=auto", "--trainer.logger=false", "--trainer.enable_progress_bar=false",
                 f"--runs_dir={runs}", "--run_id=self-normal"])
    assert code == 0
    # It trains nothing, so the test split alone is data enough.
    only_test = tmp_path / "only_test"
    shutil.copytree(tiny_shards / "test", only_test / "test")
    assert main(["fit", "--model.target=normal", "--model.kind=self",
                 f"--model.resolution={RES}", f"--data.root={only_test}",
                 "--data.batch_size=6", "--data.num_workers=0", "--trainer.logger=false",
                 "--trainer.enable_progress_bar=false", f"--runs_dir={tmp_path / 'runs'}",
                 f"--model.task_runs={runs}", "--run_id=self-test-only"]) == 0
    record = read_record(runs / "self-normal" / "record.json")
    assert (record.role, record.target, record.sources, record.regime) == (
        "baseline", "normal", ("self",), "8")
    assert record.status == "finished" and len(record.per_image_losses) == 18
    assert record.checkpoint is not None and record.checkpoint.endswith("last.ckpt")
    assert not (runs / "self-normal" / "checkpoints").exists()  # nothing was trained
    # The task run it evaluated, so a retrained target flags this baseline as stale.
    # (and its weights, so one trained further under the same run id does too).
    task_run = read_record(next(runs.glob("task__normal__*")) / "record.json")
    assert record.config["source_runs"] == {"normal": {
        "run_id": task_run.run_id, "fingerprint": task_run.config["encoder_fingerprint"]}}
