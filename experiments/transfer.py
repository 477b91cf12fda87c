"""Transfers and baselines: ``taskonomy transfer fit --config CONFIG --model.target=normal ...``.

Examples::

    taskonomy transfer fit --config experiments/configs/transfer_cpu.yaml
        --model.target=normal --model.sources=[reshading]            # one line in a shell
    taskonomy transfer fit --config ... --model.transfer=normal:reshading+depth_zbuffer
    taskonomy transfer fit --config ... --model.target=normal --model.kind=pixels   # or random
    taskonomy transfer fit --config ... --model.target=normal --model.kind=self     # test only

The model is :class:`~taskonomy.tasks.transfer.TransferTask`; ``model.target`` (or
``model.transfer``) and ``model.resolution`` are linked into ``data.tasks`` and
``data.resolution``; a bare ``--model.sources=reshading`` (or ``=a,b``) is read as a list.
Besides the run arguments of
:class:`~taskonomy.experiments.lightning_cli.TaskonomyCLI`:

- ``model.task_runs`` defaults to ``--runs_dir``: the sources' task runs are found there;
- ``--cache`` (default true) puts the representation cache in ``RUNS_DIR/representations``
  unless ``model.cache_dir`` is set, so every transfer of a sweep shares it; a cached transfer
  fills it for its samples first (once per source and split, whatever the target) and then
  reads no images: only the target's label shards are opened;
- prediction panels still show the input images: with cached inputs, the few shown are read
  from the validation split's ``rgb`` shards once per run (:class:`TransferPanels`);
- ``--regime=auto`` names the data regime after ``data.limit`` (1000 → ``1k``, 16000 → ``16k``,
  64 → ``64``, no limit → ``full``).

Records carry role ``transfer`` (sorted sources, order) or ``baseline`` (``pixels``, ``random``,
``self``). The ``self`` baseline trains nothing: ``fit`` only tests the target's task network
and records it with the task run's checkpoint.
"""

from __future__ import annotations

import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.cli import LightningArgumentParser

from taskonomy.datamodules.datamodule import TaskonomyDataModule
from taskonomy.datamodules.task_samples import require_sample_builder
from taskonomy.experiments.lightning_cli import TaskonomyCLI, run_main
from taskonomy.experiments.panels import PredictionPanels
from taskonomy.tasks.transfer import TransferTask
from taskonomy.tasks.transfer_identity import parse_transfer, resolve_identity

#: Sub-folder of the runs folder holding the shared representation cache.
CACHE_FOLDER = "representations"


def regime_name(limit: int | None) -> str:
    """The data regime of a training subset size: ``1k``, ``16k``, ``64`` or ``full``."""
    if limit is None:
        return "full"
    if limit >= 1000 and limit % 1000 == 0:
        return f"{limit // 1000}k"
    return str(limit)


def _data_tasks(target: str | None, transfer: str | None) -> list[str]:
    if transfer:
        return [parse_transfer(transfer)[0]]
    return [target] if target else []


class TransferPanels(PredictionPanels):
    """Prediction panels of a transfer, also when its batches carry no images.

    With cached inputs a batch holds keys and labels only; the panel's input images (and the
    frozen sources' predictions from them) are then made from the validation split's ``rgb``
    shards, read once per run for the few samples shown (always the same ones: the validation
    order is fixed).
    """

    def __init__(self, samples: int = 4, size: int = 128, every_n_epochs: int = 1) -> None:
        super().__init__(samples=samples, size=size, every_n_epochs=every_n_epochs)
        self._images: dict[str, torch.Tensor] = {}

    def on_validation_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule,
                                outputs: Any, batch: Any, batch_idx: int,
                                dataloader_idx: int = 0) -> None:
        """Add the shown samples' input images to an image-less batch, then draw as usual."""
        datamodule = getattr(trainer, "datamodule", None)
        if (batch_idx == 0 and dataloader_idx == 0 and not trainer.sanity_checking
                and trainer.is_global_zero and isinstance(pl_module, TransferTask)
                and isinstance(batch, dict) and isinstance(batch.get(pl_module.target), dict)
                and "input" not in batch[pl_module.target]
                and isinstance(datamodule, TaskonomyDataModule)):
            batch = self._with_inputs(datamodule, pl_module, batch)
            if batch is None:  # no image of the shown samples could be read
                return
        super().on_validation_batch_end(trainer, pl_module, outputs, batch, batch_idx,
                                        dataloader_idx)

    def _with_inputs(self, datamodule: TaskonomyDataModule, model: TransferTask,
                     batch: dict[str, Any]) -> dict[str, Any] | None:
        task_batch = batch[model.target]
        units = [str(k) for k in batch["__key__"][: self.samples]]
        if model.multi_view:
            index = task_batch["view_index"][: len(units)].tolist()
            views = [[unit.split("+")[i] for i in positions]
                     for unit, positions in zip(units, index, strict=True)]
        else:
            views = [[unit] for unit in units]
        wanted = {k for keys in views for k in keys} - set(self._images)
        if wanted:
            for images in datamodule.image_dataloader("val", wanted, whole=True):
                for key, image in zip(images["__key__"], images["rgb"], strict=True):
                    self._images[str(key)] = image
        # Rows must stay aligned with the batch's labels: stop before an unreadable image.
        views = views[: next((i for i, keys in enumerate(views)
                              if not all(k in self._images for k in keys)), len(views))]
        if not views:
            return None
        stacks = [torch.stack([self._images[k] for k in keys]) for keys in views]
        inputs = torch.stack([s if model.multi_view else s[0] for s in stacks])
        return {**batch, model.target: {**task_batch, "input": inputs.to(model.device)}}


class TransferCLI(TaskonomyCLI):
    """The transfer CLI: role ``transfer``, or ``baseline`` for ``pixels``/``random``/``self``."""

    role = "transfer"
    prog = "taskonomy transfer"

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        """Run arguments, ``--cache``, and the links of target and resolution into the data."""
        super().add_arguments_to_parser(parser)
        parser.add_argument("--cache", type=bool, default=True,
                            help="Share source representations through RUNS_DIR/"
                                 f"{CACHE_FOLDER} (unless model.cache_dir is set).")
        parser.link_arguments(("model.target", "model.transfer"), "data.tasks",
                              compute_fn=_data_tasks)
        parser.link_arguments("model.resolution", "data.resolution")

    def record_identity(self) -> tuple[str, str, tuple[str, ...]]:
        """Role, target and sources from ``model.target/sources/kind/transfer``."""
        option = self.model_option
        identity = resolve_identity(option("target"), option("sources"),
                                    option("kind") or "transfer", option("transfer"))
        require_sample_builder(identity.target)  # its labels are read: before any run starts
        self.role = identity.role
        return identity.role, identity.target, identity.sources

    def before_instantiate_classes(self) -> None:
        """Resolve the regime, then the run id (base), then task-run and cache folders."""
        namespace = self._namespace() if self.subcommand is not None else None
        if namespace is not None and namespace.get("regime") in (None, "auto"):
            data = namespace.get("data")
            namespace["regime"] = regime_name(data.get("limit") if data is not None else None)
        super().before_instantiate_classes()
        if namespace is None:
            return
        model = namespace.get("model")
        runs_dir = str(namespace.get("runs_dir") or "runs")
        if model is not None:
            if model.get("task_runs") is None:
                model["task_runs"] = runs_dir
            if namespace.get("cache", True) and model.get("cache_dir") is None:
                model["cache_dir"] = str(Path(runs_dir) / CACHE_FOLDER)

    def _record_config(self) -> dict[str, Any]:
        """The base config plus ``source_runs``, the task runs the run read.

        Those of the frozen sources; for ``self``, that of the network it evaluates.
        """
        config = super()._record_config()
        model = getattr(self, "model", None)
        if isinstance(model, TransferTask) and model.kind in ("transfer", "self"):
            config["source_runs"] = model.source_runs
        return config

    def default_callbacks(self) -> list[Callback]:
        """Skipped-sample counts and prediction panels of the target."""
        return [*super().default_callbacks(), TransferPanels()]

    def data_stages(self) -> tuple[str, ...]:
        """Testing alone for ``self`` (it trains nothing), else training and testing."""
        model = getattr(self, "model", None)
        if isinstance(model, TransferTask) and model.kind == "self":
            return ("test",)
        return super().data_stages()

    def fit(self, model: L.LightningModule, datamodule: Any = None, ckpt_path: str | None = None,
            **kwargs: Any) -> None:
        """Train and test (transfers, ``pixels``, ``random``) or only test (``self``)."""
        if isinstance(model, TransferTask) and model.kind == "self":
            if not self.finished_already():
                self.evaluate_only(model, datamodule)
            return
        super().fit(model, datamodule=datamodule, ckpt_path=ckpt_path, **kwargs)

    def evaluate_only(self, model: TransferTask, datamodule: Any) -> None:
        """Test the target's task network and write a finished ``self`` baseline record.

        Raises:
            Exception: Whatever stopped the run, after its record was marked ``failed``.
        """
        self.check_data(datamodule)  # before the record is rewritten as running
        record = self._start_record()
        try:
            results = self.trainer.test(model, datamodule=datamodule)
            metrics = {k: float(v) for result in results for k, v in result.items()}
            losses = dict(model.test_per_image_losses)
            if not losses:
                raise ValueError(
                    f"run {self.run_id!r}: the test split gave no per-image losses; check that "
                    "the datamodule has a test split with samples"
                )
            record = record.finished(metrics=metrics, per_image_losses=losses,
                                     checkpoint=model.network_checkpoint)
            self._write(record)
        except BaseException as error:
            failed = (self.record or record).failed(f"{type(error).__name__}: {error}")
            self._write(failed)
            try:
                self._finish_wandb(failed, exit_code=1)
            except Exception:  # noqa: BLE001 - never hide the original error
                pass
            raise
        self._finish_wandb_of_finished(record)


def sources_as_lists(argv: Sequence[str]) -> list[str]:
    """Read a bare ``--model.sources=reshading`` (or ``=a,b``) as the list ``[reshading]``.

    The option is a list, and jsonargparse rejects a bare name with a union-type error that
    names no fix; a one-source transfer is what such a command means. Values that are already
    lists (``[a,b]``, as sweep agents pass them) or ``null`` are left as they are.
    """
    def listed(value: str) -> str:
        bare = value.strip()
        if not bare or bare.startswith("[") or bare.lower() in ("null", "none"):
            return value
        return "[" + ",".join(part.strip() for part in bare.split(",")) + "]"

    out = list(argv)
    for i, arg in enumerate(out):
        if arg.startswith("--model.sources="):
            out[i] = "--model.sources=" + listed(arg.split("=", 1)[1])
        elif arg == "--model.sources" and i + 1 < len(out):
            out[i + 1] = listed(out[i + 1])
    return out


def build_cli(argv: Sequence[str], *, run: bool = True) -> TransferCLI:
    """The transfer CLI on ``argv``; with ``run=False`` it only parses and builds the objects."""
    with warnings.catch_warnings():
        # The console script passes its own argv on; LightningCLI warns when sys.argv is set too.
        warnings.filterwarnings("ignore", message="LightningCLI's args parameter")
        return TransferCLI(TransferTask, TaskonomyDataModule, args=sources_as_lists(argv),
                           run=run)


def run_cli(argv: Sequence[str] | None = None) -> TransferCLI:
    """Parse ``argv`` (``fit --config ... --model.target=...``) and run it; raises on failure."""
    return build_cli(list(sys.argv[1:] if argv is None else argv))


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``taskonomy transfer`` (exit statuses: :func:`run_main`)."""
    return run_main(run_cli, argv)
