"""Every training config in ``experiments/configs`` parses through the train CLI parser."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

import taskonomy.experiments as experiments_package
from taskonomy.datamodules.datamodule import TaskonomyDataModule
from taskonomy.experiments.train import (
    TrainCLI,
    command_line_keys,
    load_task_overrides,
    task_model,
)
from taskonomy.tasks.registry import all_specs, get_spec, task_names

CONFIGS = Path(experiments_package.__file__).parent / "configs"
#: Group folders and the CLI section each file of theirs configures.
GROUPS = {"trainer": "trainer", "model": "model", "data": "data"}


class Parsed(Exception):
    """Raised by :class:`Probe` with the parsed (and task-overridden) config."""

    def __init__(self, cli: TrainCLI) -> None:
        super().__init__("parsed")
        self.cli = cli
        self.config: dict[str, Any] = cli.subcommand_config()
        self.run_id = cli.run_id


class Probe(TrainCLI):
    """The training CLI stopped right before anything is built."""

    def before_instantiate_classes(self) -> None:
        super().before_instantiate_classes()
        raise Parsed(self)


_PROBE: list[TrainCLI] = []


def parse(*args: str) -> Parsed:
    """Parse ``fit ARGS`` and apply the task overrides and run naming, building nothing.

    The first call builds the CLI (slow: the Trainer signature is introspected); later calls
    reuse its parser.
    """
    if not _PROBE:
        with pytest.raises(Parsed) as caught:
            Probe(task_model, TaskonomyDataModule, args=["fit", *args])
        _PROBE.append(caught.value.cli)
        return caught.value
    cli = _PROBE[0]
    cli.explicit_keys = command_line_keys(["fit", *args])
    cli.config = cli.parser.parse_args(["fit", *args])
    with pytest.raises(Parsed) as caught:
        cli.before_instantiate_classes()
    return caught.value


def top_level_configs() -> list[Path]:
    # transfer_*.yaml belong to `taskonomy transfer fit` and are tested with that command.
    return sorted(p for p in CONFIGS.glob("*.yaml") if not p.name.startswith("transfer"))


def group_configs() -> list[tuple[str, Path]]:
    return [(section, path) for folder, section in GROUPS.items()
            for path in sorted((CONFIGS / folder).glob("*.yaml"))]


@pytest.fixture(autouse=True)
def _offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WANDB_MODE", "offline")


def test_the_config_folder_has_the_cpu_and_paper_settings() -> None:
    assert {"cpu.yaml", "paper.yaml"} <= {p.name for p in top_level_configs()}
    assert len(group_configs()) >= 6


@pytest.mark.parametrize("path", top_level_configs(), ids=lambda p: p.name)
def test_top_level_config_parses_with_a_sample_task(path: Path) -> None:
    parsed = parse("--config", str(path), "--model.task=depth_zbuffer")
    config = parsed.config
    assert config["model"]["task"] == "depth_zbuffer"
    assert config["data"]["tasks"] == ["depth_zbuffer"]
    assert config["data"]["resolution"] == config["model"]["resolution"]
    assert config["trainer"]["precision"] in ("bf16-mixed", "32-true")
    assert parsed.run_id.startswith("task__depth_zbuffer__full__")
    # The same command names the same run (resume relies on it).
    assert parse("--config", str(path), "--model.task=depth_zbuffer").run_id == parsed.run_id


@pytest.mark.parametrize(("section", "path"), group_configs(),
                         ids=lambda v: v if isinstance(v, str) else v.name)
def test_group_config_parses_as_its_section(section: str, path: Path) -> None:
    config = parse("--data.root=shards", f"--{section}", str(path), "--model.task=normal").config
    for key, value in yaml.safe_load(path.read_text()).items():
        assert config[section][key] == value, f"{path.name}: {section}.{key}"


def test_cpu_and_paper_settings() -> None:
    cpu = parse("--config", str(CONFIGS / "cpu.yaml"), "--model.task=normal").config
    assert cpu["trainer"]["accelerator"] == "cpu" and cpu["model"]["resolution"] <= 128
    assert cpu["model"]["encoder"] != "resnet50"
    paper = parse("--config", str(CONFIGS / "paper.yaml"), "--model.task=normal").config
    assert paper["model"]["encoder"] == "resnet50" and paper["model"]["resolution"] == 256
    assert paper["model"]["lr"] == pytest.approx(1e-4)
    assert paper["model"]["lr_milestone"] == 80_000 and paper["model"]["lr_gamma"] == 0.1
    assert paper["data"]["batch_size"] == 32
    assert paper["trainer"]["devices"] == "auto"
    assert paper["trainer"]["precision"] == "bf16-mixed"
    assert paper["model"]["gan"] is True  # normal trains with the cGAN term, as the authors'
    assert paper["trainer"]["strategy"] == "ddp"
    # Per-GPU batches are the paper's divided by N: BN must see the whole step's batch.
    assert paper["trainer"]["sync_batchnorm"] is True
    transfer = yaml.safe_load((CONFIGS / "transfer_paper.yaml").read_text())
    assert transfer["trainer"]["sync_batchnorm"] is True


@pytest.mark.parametrize("task", task_names())
def test_paper_setting_applies_the_per_task_exceptions(task: str) -> None:
    config = parse("--config", str(CONFIGS / "paper.yaml"), f"--model.task={task}").config
    spec = get_spec(task)
    assert config["data"]["tasks"] == [task]
    assert config["model"]["gan"] == (spec.family == "dense_regression" or task == "colorization")
    assert config["data"]["batch_size"] == spec.batch_size
    weight_decay = config["model"]["weight_decay"]
    assert (spec.weight_decay if weight_decay is None else weight_decay) == spec.weight_decay
    constant_lr = task == "principal_curvature"
    assert (config["model"]["lr_milestone"] is None) == constant_lr


def test_command_line_values_beat_task_exceptions() -> None:
    """A task exception replaces config values, not what the user typed."""
    config = parse("--config", str(CONFIGS / "paper.yaml"), "--model.task=jigsaw",
                   "--data.batch_size=12").config
    assert config["data"]["batch_size"] == 12
    weights = [0.5] + [2.0] * 16
    config = parse("--config", str(CONFIGS / "cpu.yaml"), "--model.task=segment_semantic",
                   f"--model.class_weights={weights}").config
    assert config["model"]["class_weights"] == weights
    config = parse("--config", str(CONFIGS / "cpu.yaml"), "--model.task=segment_semantic").config
    assert config["model"]["class_weights"] == "auto"


def test_print_config_shows_the_task_exceptions(capsys: pytest.CaptureFixture[str]) -> None:
    """What --print_config shows is what the run uses (jigsaw's batch of 4 under paper.yaml)."""
    with pytest.raises(SystemExit) as stopped:
        TrainCLI(task_model, TaskonomyDataModule, args=[
            "fit", "--config", str(CONFIGS / "paper.yaml"), "--model.task=jigsaw",
            "--model.lr=0.01", "--print_config"])
    assert stopped.value.code == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["data"]["batch_size"] == get_spec("jigsaw").batch_size == 4
    assert printed["model"]["lr"] == 0.01
    assert "ckpt_path" in printed and printed["ckpt_path"] is None  # unset keys are listed
    with pytest.raises(SystemExit):  # jsonargparse's flags still work
        TrainCLI(task_model, TaskonomyDataModule, args=[
            "fit", "--config", str(CONFIGS / "paper.yaml"), "--model.task=jigsaw",
            "--print_config=skip_null"])
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["data"]["batch_size"] == 4 and "ckpt_path" not in printed
    with pytest.raises(SystemExit) as stopped:  # no task yet: a starter config
        TrainCLI(task_model, TaskonomyDataModule, args=["fit", "--print_config"])
    assert stopped.value.code == 0 and "model:" in capsys.readouterr().out


def test_a_class_weights_file_is_loaded_into_the_config(tmp_path: Path) -> None:
    # As the authors' semseg_prior_factor.npy: the weights reach the config, the run id and the
    # record (transfers read them there), not the file name.
    import numpy as np

    np.save(tmp_path / "prior.npy", np.asarray([0.54] + [8.0] * 16))
    parsed = parse("--config", str(CONFIGS / "cpu.yaml"), "--model.task=segment_semantic",
                   f"--model.class_weights={tmp_path / 'prior.npy'}")
    assert parsed.config["model"]["class_weights"] == pytest.approx([0.54] + [8.0] * 16)
    with pytest.raises(ValueError, match="is no such file"):
        parse("--config", str(CONFIGS / "cpu.yaml"), "--model.task=segment_semantic",
              "--model.class_weights=balanced")


def test_a_colorization_prior_without_its_bins_is_warned_about(tmp_path: Path) -> None:
    # The authors' prior_factor_in_door.npy weighs their pts_in_hull.npy bins, not the suite's.
    import warnings

    import numpy as np

    from taskonomy.datamodules.selfsupervised import ab_bins

    np.save(tmp_path / "prior.npy", np.ones(313))
    np.save(tmp_path / "bins.npy", ab_bins())
    argv = ["--config", str(CONFIGS / "cpu.yaml"), "--model.task=colorization",
            f"--model.class_weights={tmp_path / 'prior.npy'}"]
    with pytest.warns(UserWarning, match="--data.ab_bins=pts_in_hull.npy"):
        parse(*argv)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        parse(*argv, f"--data.ab_bins={tmp_path / 'bins.npy'}")


def test_task_exceptions_match_the_task_table() -> None:
    exceptions = load_task_overrides(CONFIGS / "tasks" / "paper_exceptions.yaml")
    assert set(exceptions) <= set(task_names())
    for spec in all_specs():
        if spec.batch_size != 32:
            assert exceptions[spec.name]["data"]["batch_size"] == spec.batch_size
        if spec.weight_decay != 2e-6:
            assert exceptions[spec.name]["model"]["weight_decay"] == spec.weight_decay
        # The authors train every dense regression network and colorization with the cGAN term.
        gan = exceptions.get(spec.name, {}).get("model", {}).get("gan", False)
        assert gan == (spec.family == "dense_regression" or spec.name == "colorization"), spec.name


def test_bad_task_override_names_the_key(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("normal: {model: {learning_rate: 0.1}}\n")
    with pytest.raises(ValueError, match=r"normal\.model\.learning_rate"):
        parse("--config", str(CONFIGS / "cpu.yaml"), "--model.task=normal",
              f"--task_overrides={bad}")
