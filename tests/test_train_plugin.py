"""A third-party task (entry point ``taskonomy.tasks``) trains through ``taskonomy train fit``."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
import yaml

from taskonomy.analysis.records import read_record, record_path
from taskonomy.datamodules import task_samples
from taskonomy.datamodules.domains import DOMAINS
from taskonomy.datamodules.shards import manifest_keys, read_manifest
from taskonomy.experiments.cli import main as taskonomy_main
from taskonomy.tasks.registry import get_registered, reload_registry, task_names


@pytest.fixture(autouse=True)
def _one_thread():
    """One torch thread: on a shared 2-core machine OpenMP spin-waits make 2 threads far slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


PLUGIN = '''
"""A third-party task: predict the grey level of the image."""

from taskonomy.datamodules import encodings
from taskonomy.datamodules.domains import Domain, register_domain
from taskonomy.datamodules.task_samples import register_sample_builder
from taskonomy.tasks.specs import TaskSpec

GRAYSCALE = TaskSpec("grayscale", "grayscale", "dense_regression", ("rgb",), 1, "dense",
                     "mean of the RGB encoding, in [-1,1]", "l1", ("l1", "rmse"))


def _sample(decoded, rng, resolution):
    rgb = encodings.rgb_encoding(decoded["rgb"], resolution)
    return {"input": rgb, "target": rgb.mean(axis=0, keepdims=True)}


register_sample_builder("grayscale", _sample)

#: A second task, whose label is another domain's file (the depth PNG's grey level).
DEPTH_GREY = TaskSpec("depth_grey", "depth_grey", "dense_regression", ("rgb", "depth_zbuffer"),
                      1, "dense", "depth PNG level in [0,1]", "l1", ("l1",))


def _depth_sample(decoded, rng, resolution):
    level = decoded["depth_zbuffer"].astype("float32") / 65535.0
    return {"input": encodings.rgb_encoding(decoded["rgb"], resolution),
            "target": encodings.resize(level, resolution)[None]}


register_sample_builder("depth_grey", _depth_sample)

#: A third task, on a domain of the plugin's own (no synthetic building has its files).
register_domain(Domain("stored_grey", "stored_grey", "png", "gray8"))
STORED_GREY = TaskSpec("stored_grey", "stored_grey", "dense_regression",
                       ("rgb", "stored_grey"), 1, "dense", "stored grey level in [0,1]", "l1",
                       ("l1",))
register_sample_builder("stored_grey", _depth_sample)
'''


@pytest.fixture
def installed_plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """The plugin package and the ``.dist-info`` that installing it leaves, on ``sys.path``.

    The entry point is what the package's pyproject declares under
    ``[project.entry-points."taskonomy.tasks"]``.
    """
    site = tmp_path / "site"
    (site / "grayscale_task").mkdir(parents=True)
    (site / "grayscale_task" / "__init__.py").write_text(PLUGIN)
    info = site / "grayscale_task-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: grayscale-task\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(
        "[taskonomy.tasks]\ngrayscale = grayscale_task:GRAYSCALE\n"
        "depth_grey = grayscale_task:DEPTH_GREY\nstored_grey = grayscale_task:STORED_GREY\n")
    monkeypatch.syspath_prepend(str(site))
    reload_registry()
    yield site
    monkeypatch.undo()
    # What importing the plugin added; plain pops (monkeypatch's undo would put them back).
    sys.modules.pop("grayscale_task", None)
    for task in ("grayscale", "depth_grey", "stored_grey"):
        task_samples._BUILDERS.pop(task, None)
    DOMAINS.pop("stored_grey", None)
    reload_registry()
    assert "grayscale" not in task_names()  # uninstalled: the registry forgets the task


def test_plugin_task_trains_through_the_train_command(
        installed_plugin: Path, tmp_path: Path, tiny_shards: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    assert "grayscale" in task_names()
    assert taskonomy_main(["tasks"]) == 0
    assert "grayscale: plugin grayscale_task:GRAYSCALE (entry point 'grayscale' of " \
        "grayscale-task 0.1)" in " ".join(capsys.readouterr().out.split())
    assert "entry point 'grayscale' of grayscale-task 0.1" in get_registered("grayscale").origin
    config = {
        "trainer": {"accelerator": "cpu", "devices": 1, "precision": "bf16-mixed",
                    "max_steps": 2, "max_epochs": -1, "num_sanity_val_steps": 0,
                    "limit_val_batches": 1, "enable_progress_bar": False,
                    "enable_model_summary": False, "logger": False},
        "model": {"encoder": "resnet10_tiny", "resolution": 32, "decoder_width": 0.125,
                  "lr_milestone": None},
        "data": {"root": str(tiny_shards), "batch_size": 4, "num_workers": 0, "epoch_size": 8,
                 "shuffle_buffer": 8},
    }
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(config))
    runs = tmp_path / "runs"
    code = taskonomy_main(["train", "fit", "--config", str(path), "--model.task=grayscale",
                           f"--runs_dir={runs}", "--run_id=plugin"])
    assert code == 0
    record = read_record(record_path(runs, "plugin"))
    assert record.status == "finished" and record.target == "grayscale"
    assert sorted(record.per_image_losses) == sorted(
        manifest_keys(read_manifest(tiny_shards, "test")))
    assert {"test/loss", "test/l1", "test/rmse"} <= set(record.metrics)
    # The plugin's package and version are kept beside the results they made.
    assert record.config["task_origins"] == {"grayscale": get_registered("grayscale").origin}
    assert list((runs / "plugin" / "panels").glob("grayscale_step*.png"))


def test_a_plugin_sample_missing_a_file_is_skipped_before_its_builder(
        installed_plugin: Path) -> None:
    import numpy as np

    from taskonomy.datamodules.task_samples import BadSampleError, make_task_sample

    rgb = np.zeros((8, 8, 3), np.uint8)
    with pytest.raises(BadSampleError, match="b__1__0: no usable 'depth_zbuffer' file"):
        make_task_sample("depth_grey", {"__key__": "b__1__0", "rgb": rgb, "depth_zbuffer": None},
                         np.random.default_rng(0), resolution=8)
    sample = make_task_sample("depth_grey", {"rgb": rgb, "depth_zbuffer": np.full(
        (8, 8), 65535, np.uint16)}, np.random.default_rng(0), resolution=4)
    assert sample["target"].shape == (1, 4, 4) and float(sample["target"].min()) == 1.0


def test_the_demo_refuses_a_plugin_task_on_a_domain_it_does_not_render(
        installed_plugin: Path) -> None:
    from taskonomy.experiments.demo import DemoSettings, full_settings

    with pytest.raises(ValueError, match="makes no files of the domains these tasks read: "
                                         "stored_grey reads stored_grey"):
        DemoSettings(tasks=("normal", "stored_grey")).check()
    DemoSettings(tasks=("normal", "depth_grey")).check()  # on a rendered domain: fine
    tasks = full_settings().tasks
    assert "stored_grey" not in tasks and {"grayscale", "depth_grey", "normal"} <= set(tasks)


OWN_FAMILY = '''
from taskonomy.tasks.families.dense import DenseRegressionTask
from taskonomy.tasks.specs import TaskSpec

SPEC = TaskSpec("grey_level", "grey_level", "grey_family", ("rgb",), 1, "dense",
                "mean of the RGB encoding", "l1", ("l1",))


class GreyFamily(DenseRegressionTask):
    """A family of the plugin's own (built on dense regression here, for brevity)."""


PAIR = (SPEC, GreyFamily)
'''


@pytest.mark.parametrize("target", ["PAIR", "SPEC"])
def test_a_plugin_family_needs_its_class(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                         target: str,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    from taskonomy.tasks.build import build_task

    site = tmp_path / "site"
    (site / "grey_task").mkdir(parents=True)
    (site / "grey_task" / "__init__.py").write_text(OWN_FAMILY)
    info = site / "grey_task-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: grey-task\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[taskonomy.tasks]\ngrey_level = grey_task:{target}\n")
    monkeypatch.syspath_prepend(str(site))
    reload_registry()
    try:
        if target == "PAIR":  # a family name of its own, with its class
            model = build_task("grey_level", encoder="resnet10_tiny", resolution=32,
                               decoder_width=0.125)
            assert type(model).__name__ == "GreyFamily" and model.spec.family == "grey_family"
            # It registers no sample builder: refused before a run starts, naming the call.
            runs = tmp_path / "runs"
            assert taskonomy_main(["train", "fit", "--model.task=grey_level",
                                   f"--data.root={tmp_path / 'shards'}", f"--runs_dir={runs}",
                                   "--trainer.logger=false"]) == 2
            assert "register_sample_builder('grey_level', build)" in " ".join(
                capsys.readouterr().err.split())
            assert not runs.exists()
        else:
            with pytest.raises(ValueError, match=r"family 'grey_family', which has no built-in "
                                                 r"class.*\(TaskSpec, family_class\) pair"):
                task_names()
    finally:
        monkeypatch.delitem(sys.modules, "grey_task", raising=False)
        monkeypatch.undo()
        reload_registry()
