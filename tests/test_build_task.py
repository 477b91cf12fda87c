"""build_task: every task builds and trains one step through a real Trainer; errors name fixes."""

import pickle
import warnings

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader

from taskonomy.tasks import build as build_module
from taskonomy.tasks.build import FAMILY_CLASSES, build_task, family_class
from taskonomy.tasks.families.dense import DenseRegressionTask
from taskonomy.tasks.metrics import build_metrics
from taskonomy.tasks.registry import RegisteredTask, get_spec
from taskonomy.tasks.specs import BUILTIN_TASKS, FAMILIES
from taskonomy.tasks.testing import fake_batch

TINY = {"encoder": "resnet10_tiny", "resolution": 32, "decoder_width": 0.125, "head_width": 0.125}


@pytest.fixture(autouse=True)
def _quiet_single_thread():
    # One intra-op thread: on a few shared cores, more threads only contend.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", ".*does not have many workers.*")
        yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize("spec", BUILTIN_TASKS, ids=lambda s: s.name)
def test_every_task_trains_one_step_through_a_trainer(spec) -> None:
    torch.manual_seed(0)
    model = build_task(spec.name, **TINY)
    assert isinstance(model, FAMILY_CLASSES[spec.family])
    batch = fake_batch(spec, 2, 32)
    with torch.no_grad():
        out = model.eval()(batch[spec.name]["input"])
    assert out.shape == (2, *spec.output_shape(32))
    model.train()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    trainer = L.Trainer(
        accelerator="cpu",
        fast_dev_run=1,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    loader = DataLoader([batch], batch_size=None)
    trainer.fit(model, loader, loader)
    loss = trainer.callback_metrics["train/loss"]
    assert torch.isfinite(loss)
    changed = [n for n, p in model.named_parameters() if not torch.equal(p, before[n])]
    assert any(n.startswith("encoder.") for n in changed)  # the optimizer stepped the encoder
    assert any(n.startswith("head.") for n in changed)
    for metric in spec.metrics:
        assert torch.isfinite(trainer.callback_metrics[f"val/{metric}"]), metric
    assert torch.isfinite(trainer.callback_metrics["val/loss"])
    # ddp_spawn pickles the model into its processes (no closures among its metrics).
    assert isinstance(pickle.loads(pickle.dumps(model)), type(model))


@pytest.mark.parametrize("spec", BUILTIN_TASKS, ids=lambda s: s.name)
def test_real_samples_keep_the_batch_contract_of_every_task(spec, tiny_shards) -> None:
    # Models are tested on fake_batch; a sample builder drifting from it (a key, dtype or shape)
    # would only show on real data.
    from taskonomy.datamodules.datamodule import TaskonomyDataModule

    data = TaskonomyDataModule(tiny_shards, tasks=[spec.name], resolution=32, batch_size=2,
                               num_workers=0)
    data.setup("test")
    real = next(iter(data.test_dataloader()))[spec.name]
    fake = fake_batch(spec, 2, 32)[spec.name]
    if spec.views > 1:  # where each view sits in the unit's key (for the representation cache)
        assert real.pop("view_index").shape == (2, spec.views)
    assert sorted(real) == sorted(fake)
    for key, value in fake.items():
        assert real[key].dtype == value.dtype, key
        assert real[key].shape[1:] == value.shape[1:], key
    assert all(torch.isfinite(v.float()).all() for v in real.values())
    model = build_task(spec.name, **TINY).eval()
    with torch.no_grad():
        loss = model.compute_loss(model(real["input"]), real)
    assert torch.isfinite(loss)


def test_every_family_has_a_class_and_every_metric_name_is_known() -> None:
    assert set(FAMILY_CLASSES) == set(FAMILIES)
    for spec in BUILTIN_TASKS:
        assert set(build_metrics(spec)) == set(spec.metrics)


def test_unknown_task_lists_valid_names() -> None:
    with pytest.raises(ValueError, match="valid tasks: autoencoding, denoising"):
        build_task("surface_normals")


def test_unknown_option_lists_valid_options() -> None:
    with pytest.raises(ValueError, match=r"unknown option\(s\) learning_rate.*valid options:.*lr"):
        build_task("normal", learning_rate=1e-3)


def test_bad_options_are_value_errors() -> None:
    with pytest.raises(ValueError, match="multiple of 16"):
        build_task("normal", **{**TINY, "resolution": 40})
    with pytest.raises(ValueError, match="valid encoders"):
        build_task("normal", encoder="vgg16")
    with pytest.raises(ValueError, match="17 classes"):
        build_task("segment_semantic", **TINY, class_weights=[1.0, 2.0])


def test_plugin_family_class_comes_from_the_registry(monkeypatch) -> None:
    class CustomDense(DenseRegressionTask):
        pass

    plugin = RegisteredTask(get_spec("reshading").replace(name="my_shading"), CustomDense, "test")
    real = build_module.get_registered

    def fake_registered(name: str) -> RegisteredTask:
        return plugin if name == "my_shading" else real(name)

    monkeypatch.setattr(build_module, "get_registered", fake_registered)
    monkeypatch.setattr(
        "taskonomy.tasks.families.base.get_spec",
        lambda name: plugin.spec if name == "my_shading" else get_spec(name),
    )
    assert family_class("my_shading") is CustomDense
    model = build_task("my_shading", **TINY)
    assert isinstance(model, CustomDense)
    assert model.spec.name == "my_shading"
    assert family_class("normal") is DenseRegressionTask


def test_family_arguments_parse_from_the_command_line() -> None:
    # LightningCLI builds models through jsonargparse: plain typed arguments must parse.
    from jsonargparse import ArgumentParser

    parser = ArgumentParser()
    parser.add_class_arguments(DenseRegressionTask, "model")
    config = parser.parse_args(
        [
            "--model.task=normal",
            "--model.encoder=resnet10_tiny",
            "--model.resolution=32",
            "--model.decoder_width=0.125",
            "--model.lr_milestone=null",
        ]
    )
    model = parser.instantiate(config).model
    assert isinstance(model, DenseRegressionTask)
    assert model.hparams["lr_milestone"] is None
    assert model.hparams["encoder"] == "resnet10_tiny"


def test_load_task_restores_the_family_and_weights(tmp_path) -> None:
    from taskonomy.tasks.build import load_task
    from taskonomy.tasks.families.multi_view import MultiViewTask

    model = build_task("fixated_pose", **TINY)
    batch = fake_batch(model.spec, 2, 32)
    trainer = L.Trainer(
        accelerator="cpu",
        max_steps=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
    )
    trainer.fit(model, DataLoader([batch], batch_size=None))
    path = tmp_path / "pose.ckpt"
    trainer.save_checkpoint(path)
    loaded = load_task(path)
    assert isinstance(loaded, MultiViewTask)
    assert loaded.spec.name == "fixated_pose"
    views = batch["fixated_pose"]["input"]
    with torch.no_grad():
        assert torch.equal(loaded.eval().encode(views), model.eval().encode(views))
    with pytest.raises(FileNotFoundError, match="missing.ckpt does not exist"):
        load_task(tmp_path / "missing.ckpt")
    torch.save({"state_dict": {}}, tmp_path / "other.ckpt")
    with pytest.raises(ValueError, match="not a task checkpoint"):
        load_task(tmp_path / "other.ckpt")
    torch.save({"state_dict": {}, "hyper_parameters": {"lr": 1.0}}, tmp_path / "module.ckpt")
    with pytest.raises(ValueError, match="not written by a taskonomy task"):
        load_task(tmp_path / "module.ckpt")
