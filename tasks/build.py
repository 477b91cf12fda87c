"""Build a task's LightningModule by name: ``build_task("normal")``.

The spec comes from the registry (built-in table and ``taskonomy.tasks`` entry points); a plugin
may bring its own family class, otherwise the spec's family picks one of the built-in classes.
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

from taskonomy.tasks.baselines import load_checkpoint
from taskonomy.tasks.families.base import TaskModule
from taskonomy.tasks.families.classification import ClassificationTask
from taskonomy.tasks.families.dense import DenseClassificationTask, DenseRegressionTask
from taskonomy.tasks.families.low_dim import LowDimRegressionTask
from taskonomy.tasks.families.multi_view import MultiViewTask
from taskonomy.tasks.families.segmentation import MetricSegmentationTask
from taskonomy.tasks.registry import get_registered

#: Family name (``TaskSpec.family``) → LightningModule class.
FAMILY_CLASSES: dict[str, type[TaskModule]] = {
    "dense_regression": DenseRegressionTask,
    "dense_classification": DenseClassificationTask,
    "metric_segmentation": MetricSegmentationTask,
    "classification": ClassificationTask,
    "low_dim_regression": LowDimRegressionTask,
    "multi_view": MultiViewTask,
}


def family_class(task: str) -> type[TaskModule]:
    """The LightningModule class that trains ``task``.

    Raises:
        ValueError: Unknown task (valid names listed) or a family without a class.
    """
    registered = get_registered(task)
    if registered.family_class is not None:
        return registered.family_class
    family = registered.spec.family
    if family not in FAMILY_CLASSES:
        raise ValueError(
            f"task {task!r} has family {family!r} with no built-in class; its plugin must "
            "register a (TaskSpec, family_class) pair"
        )
    return FAMILY_CLASSES[family]


def build_task(name: str, **options: Any) -> TaskModule:
    """Instantiate the family module of a task.

    Args:
        name: Registered task name.
        **options: Constructor options of :class:`~taskonomy.tasks.families.base.TaskModule`
            (``encoder``, ``resolution``, ``decoder_width``, ``lr``, ...).

    Raises:
        ValueError: Unknown task, or an option the family does not take (valid ones listed).
    """
    cls = family_class(name)
    accepted = [p for p in inspect.signature(cls.__init__).parameters if p not in ("self", "task")]
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise ValueError(
            f"unknown option(s) {', '.join(unknown)} for task {name!r}; valid options: "
            f"{', '.join(accepted)}"
        )
    return cls(task=name, **options)


def load_task(checkpoint: str | Path, **overrides: Any) -> TaskModule:
    """Load a trained task module from a Lightning checkpoint, whatever its family.

    The task name saved in the checkpoint's hyper-parameters picks the family class, so a user
    (predicting with a task run's network, say) needs only the path. A checkpoint of a former
    encoder layout loads with a warning, as a transfer's source does.

    Args:
        checkpoint: Path of a ``.ckpt`` written by a Trainer.
        **overrides: Hyper-parameters to change on load (e.g. ``lr``).

    Raises:
        FileNotFoundError: No file at ``checkpoint``.
        ValueError: The checkpoint was not written by a task module.
    """
    path = Path(checkpoint)
    hparams = load_checkpoint(path, f"task checkpoint {path}")["hyper_parameters"]
    if "task" not in hparams:
        raise ValueError(
            f"{path} has no 'task' hyper-parameter: it was not written by a taskonomy task module"
        )
    cls = family_class(hparams["task"])
    return cls.load_from_checkpoint(path, map_location="cpu", **overrides)
