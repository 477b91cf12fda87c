"""Task-specific training: ``taskonomy train fit --config CONFIG --model.task=normal``.

The model is built by name through :func:`task_model` (any registered task, third-party
plugins included), the data by :class:`~taskonomy.datamodules.datamodule.TaskonomyDataModule`;
``model.task`` and ``model.resolution`` are linked into ``data.tasks`` and ``data.resolution``.
The run life cycle (run folder, record, resume, W&B, test with per-image losses) comes from
:class:`~taskonomy.experiments.lightning_cli.TaskonomyCLI`; prediction panels are drawn each
validation epoch by :class:`~taskonomy.experiments.panels.PredictionPanels`.
"""

from __future__ import annotations

import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml
from jsonargparse.typing import Path_fr
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.cli import LightningArgumentParser

from taskonomy.datamodules.datamodule import TaskonomyDataModule
from taskonomy.experiments.lightning_cli import TaskonomyCLI
from taskonomy.experiments.panels import PredictionPanels
from taskonomy.tasks.build import build_task
from taskonomy.tasks.families.base import NonFiniteLossError, TaskModule


def task_model(
    task: str,
    encoder: str = "resnet50",
    resolution: int = 256,
    decoder_width: float = 1.0,
    head_width: float = 1.0,
    lr: float = 1e-4,
    weight_decay: float | None = None,
    lr_milestone: int | None = 80_000,
    lr_gamma: float = 0.1,
    clip_norm: float | None = None,
    gan: bool = False,
    gan_weight: float = 0.004,
    gan_warmup_steps: int = 25_000,
    gan_lr: float = 1e-5,
    gan_noise: float | None = None,
    class_weights: list[float] | None = None,
    metric_samples: int = 300,
) -> TaskModule:
    """The LightningModule of a registered task (its family class configured by its spec).

    Args:
        task: Registered task name (``taskonomy tasks`` lists them; plugins included).
        encoder: Encoder name (``resnet50`` is the paper's; ``resnet18``, ``resnet10``,
            ``resnet10_tiny`` for CPU).
        resolution: Input resolution (a multiple of 16); also the data's resolution.
        decoder_width: Channel multiplier of dense decoders (1.0 = the paper).
        head_width: Multiplier of FC head widths (1.0 = the paper).
        lr: Initial Adam learning rate.
        weight_decay: L2 weight decay on weights; ``None`` takes the task's (the paper's).
        lr_milestone: Optimizer step of the ×``lr_gamma`` LR drop; ``None``: constant LR.
        lr_gamma: Factor of the LR drop.
        clip_norm: Per-variable gradient clip (``None``: the family's default, ``0``: off).
        gan: Add the cGAN term (dense regression tasks only).
        gan_weight: Weight of the GAN term.
        gan_warmup_steps: Steps on the task loss alone before the GAN term starts.
        gan_lr: SGD learning rate of the discriminator.
        gan_noise: Initial σ of the discriminator's instance noise (None: 0.03 for depth, else 0.1).
        class_weights: Per-class loss weights (semantic segmentation).
        metric_samples: Pixels per image of the metric loss (unsupervised segmentation).

    Raises:
        ValueError: Unknown task (the valid names are listed) or invalid options.
    """
    return build_task(
        task, encoder=encoder, resolution=resolution, decoder_width=decoder_width,
        head_width=head_width, lr=lr, weight_decay=weight_decay, lr_milestone=lr_milestone,
        lr_gamma=lr_gamma, clip_norm=clip_norm, gan=gan, gan_weight=gan_weight,
        gan_warmup_steps=gan_warmup_steps, gan_lr=gan_lr, gan_noise=gan_noise,
        class_weights=class_weights, metric_samples=metric_samples,
    )


def load_task_overrides(path: str | Path) -> dict[str, dict[str, dict[str, Any]]]:
    """Read a task-overrides YAML file: ``{task: {section: {key: value}}}``.

    Raises:
        FileNotFoundError: The file does not exist.
        ValueError: The file is not a mapping of that shape.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"task overrides file {path} does not exist; fix task_overrides")
    data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    if not isinstance(data, dict) or not all(
        isinstance(sections, dict) and all(isinstance(v, dict) for v in sections.values())
        for sections in data.values()
    ):
        raise ValueError(
            f"{path}: task overrides must map task -> section (model, data, trainer) -> "
            "{key: value}"
        )
    return data


def apply_task_overrides(namespace: Any, overrides: dict[str, dict[str, dict[str, Any]]]) -> None:
    """Set the values listed for ``namespace.model.task`` (after parsing, so they win).

    Raises:
        ValueError: An override names a section or key the config does not have.
    """
    task = namespace.get("model", {}).get("task")
    for section, values in overrides.get(task, {}).items():
        group = namespace.get(section)
        for key, value in values.items():
            if group is None or key not in group:
                raise ValueError(
                    f"task override {task}.{section}.{key}: the config has no {section}.{key}; "
                    "fix the task overrides file"
                )
            group[key] = value


def _as_task_list(task: str) -> list[str]:
    return [task]


class TrainCLI(TaskonomyCLI):
    """The task-specific training CLI: one task's network, role ``task``."""

    role = "task"

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        """Run arguments, plus the links model.task → data.tasks, model.resolution → data."""
        super().add_arguments_to_parser(parser)
        parser.add_argument(
            "--task_overrides", type=Path_fr | None, default=None,
            help="YAML file mapping task names to config values that replace the parsed ones "
                 "for that task (the paper's per-task batch sizes, weight decays, LR schedules).")
        parser.link_arguments("model.task", "data.tasks", compute_fn=_as_task_list)
        parser.link_arguments("model.resolution", "data.resolution")

    def before_instantiate_classes(self) -> None:
        """Apply the task's entry of ``task_overrides``, then fix the run id and folder."""
        if self.subcommand is not None:
            namespace = self.config[self.subcommand]
            path = namespace.get("task_overrides")
            if path is not None:
                apply_task_overrides(namespace, load_task_overrides(path.absolute))
        super().before_instantiate_classes()

    def default_callbacks(self) -> list[Callback]:
        """Skipped-sample counts and per-task prediction panels."""
        return [*super().default_callbacks(), PredictionPanels()]


def run_cli(argv: Sequence[str] | None = None) -> TrainCLI:
    """Parse ``argv`` (``fit --config ... --model.task=...``) and run it; raises on failure."""
    with warnings.catch_warnings():
        # The console script passes its own argv on; LightningCLI warns when sys.argv is set too.
        warnings.filterwarnings("ignore", message="LightningCLI's args parameter")
        return TrainCLI(task_model, TaskonomyDataModule,
                        args=list(sys.argv[1:] if argv is None else argv))


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``taskonomy train``: 0 on success, 2 on bad input, 1 on a failed run."""
    try:
        run_cli(argv)
    except (ValueError, FileNotFoundError, NotADirectoryError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except NonFiniteLossError as error:
        print(f"error: the run diverged: {error}", file=sys.stderr)
        return 1
    return 0
