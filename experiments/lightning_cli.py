"""``TaskonomyCLI``: a ``LightningCLI`` that owns the life cycle of one run.

Every training stage of the suite (task-specific networks, transfers, baselines) is a subclass.
The base class adds three top-level arguments to each subcommand:

- ``--run_id``: the run's name and folder (default: derived from the record identity, the data
  regime and a hash of the resolved config, so repeating a command finds the same run);
- ``--runs_dir``: the folder of runs (default ``runs``);
- ``--regime``: the data regime written to the record (default ``full``).

``fit`` then does, in ``RUNS_DIR/RUN_ID``:

1. writes the run record with status ``running`` (:mod:`taskonomy.analysis.records`), checks the
   data and calls :meth:`TaskonomyCLI.prepare_fit` (where a subclass completes the model from
   the data, e.g. semantic segmentation's ``class_weights: auto``; a config it changes is
   written to the record);
2. trains with checkpoints in ``checkpoints/`` (best by validation loss, and ``last.ckpt``, the
   latest state: :class:`BestAndLatestCheckpoint`); if ``checkpoints/last.ckpt`` exists and no
   ``--ckpt_path`` was given, training resumes from it, so killing a run and repeating its
   command continues it;
3. tests the best (``--test_checkpoint=last``: the final) checkpoint on the test split and
   collects the model's ``test_per_image_losses``;
4. writes the record ``finished`` (checkpoint, resolved config, test metrics, per-image losses,
   W&B run) and logs it to W&B with :func:`taskonomy.analysis.wandb_source.log_record`.

Any exception marks the record ``failed`` with the error message and is raised again (a NaN
loss raises :class:`~taskonomy.tasks.families.base.NonFiniteLossError`, which names the task
and step). A W&B logger is the default (project ``taskonomy``, named after the run, with an id
that is stable per run id, saving into the run folder); it runs offline unless the user set
``WANDB_MODE`` or a sweep agent drives the run (``WANDB_SWEEP_ID``).

Subclasses override :meth:`TaskonomyCLI.record_identity` (role, target, sources), may add
callbacks with :meth:`TaskonomyCLI.default_callbacks` and may complete the model before training
with :meth:`TaskonomyCLI.prepare_fit`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import inspect
import json
import os
import re
import sys
import time
import warnings
import zipfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal, NoReturn

import lightning as L
import yaml
from jsonargparse import ArgumentParser
from lightning.pytorch.callbacks import (
    Callback,
    LearningRateMonitor,
    ModelCheckpoint,
    ProgressBar,
    RichProgressBar,
)
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI
from lightning.pytorch.loggers import Logger, WandbLogger

from taskonomy.analysis.records import (
    CONFIG_FILES_KEY,
    ENCODER_FINGERPRINT_KEY,
    TASK_ORIGINS_KEY,
    RunRecord,
    read_record,
    record_path,
    utc_now,
    write_record,
)
from taskonomy.datamodules.datamodule import SkippedSamplesCallback, TaskonomyDataModule
from taskonomy.datamodules.shards import is_url
from taskonomy.experiments.sweep_files import WANDB_PROJECT, config_paths, file_digest
from taskonomy.tasks.specs import metric_key

#: Top-level arguments the base class adds to every subcommand.
RUN_ARGUMENTS = ("run_id", "runs_dir", "regime", "test_checkpoint")
#: Config keys left out of the run-id hash: they name the run or where it lives, not what it is
#: (``task_overrides_keep`` says why a value beat a task override; the value is hashed).
_UNHASHED = (*RUN_ARGUMENTS, "config", "ckpt_path", "task_overrides_keep")
#: Name of the checkpoint folder inside a run folder.
CHECKPOINT_DIR = "checkpoints"
#: The checkpoint that resumes a run.
LAST_CHECKPOINT = "last.ckpt"


class BestAndLatestCheckpoint(ModelCheckpoint):
    """The best checkpoint by the monitored metric, and ``last.ckpt`` always the latest state.

    Lightning (2.6) writes ``last.ckpt`` only at steps where a top-k checkpoint was saved: with
    ``save_top_k=1`` it stays at the best step, so a killed run repeated would resume from there
    rather than from its latest validation, and the final weights of a finished run would not be
    on disk when the last validation did not improve. This callback also saves ``last.ckpt`` after
    every validation that saved nothing, and at the end of training.
    """

    def _save_latest(self, trainer: L.Trainer) -> None:
        # Skipped when this step was already saved (then last.ckpt is current) or outside fit.
        if self.save_last and not self._should_skip_saving_checkpoint(trainer):
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Save the best as Lightning does, then the latest state if it was not saved."""
        super().on_validation_end(trainer, pl_module)
        if not self._should_save_on_train_epoch_end(trainer):
            self._save_latest(trainer)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """As Lightning, then the latest state where checkpoints are saved at epoch ends."""
        super().on_train_epoch_end(trainer, pl_module)
        if self._should_save_on_train_epoch_end(trainer):
            self._save_latest(trainer)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """The final weights, also after steps that no validation saw."""
        super().on_train_end(trainer, pl_module)
        self._save_latest(trainer)



class RunProgressBar(RichProgressBar):
    """Lightning's rich progress bar, without an epoch total when epochs are unbounded.

    Runs bounded by steps (``max_epochs: -1``, the CPU setting) showed ``Epoch 3/-2``.
    """

    def _get_train_description(self, current_epoch: int) -> str:
        max_epochs = self.trainer.max_epochs
        if max_epochs is not None and max_epochs >= 0:
            return super()._get_train_description(current_epoch)
        description = f"Epoch {current_epoch}"
        return f"{description:{len(self.validation_description)}}"  # pad: no flicker, as Lightning


_DUMP_PARAMETERS = inspect.signature(ArgumentParser.dump).parameters

_WANDB_ID_BAD = re.compile(r"[^A-Za-z0-9_-]+")


def configure_wandb_mode(environ: dict[str, str] | Any = None) -> str | None:
    """Make W&B offline unless the user chose a mode or a sweep agent drives the run.

    Args:
        environ: The environment to update (default ``os.environ``).

    Returns:
        The ``WANDB_MODE`` now in effect (``None`` when a sweep agent decides).
    """
    env = os.environ if environ is None else environ
    if "WANDB_MODE" not in env and "WANDB_SWEEP_ID" not in env:
        env["WANDB_MODE"] = "offline"
    return env.get("WANDB_MODE")


def wandb_run_id(run_id: str) -> str:
    """A W&B run id derived from a run id (W&B ids allow letters, digits, ``_`` and ``-``)."""
    readable = _WANDB_ID_BAD.sub("-", run_id)[:48].strip("-")
    digest = hashlib.sha1(run_id.encode("utf-8")).hexdigest()[:10]
    return f"{readable}-{digest}" if readable else digest


_OFFLINE_RUN_FOLDER = re.compile(r"^(?:offline-)?run-\d{8}_\d{6}-(?P<id>[A-Za-z0-9_-]+)$")


def wandb_id_of(location: str | None) -> str | None:
    """The W&B run id in a record's ``wandb`` entry; ``None`` if there is none.

    The entry is ``entity/project/id`` online, an offline run folder
    ``…/offline-run-DATE_TIME-id`` offline.
    """
    if not location:
        return None
    name = Path(location).name
    match = _OFFLINE_RUN_FOLDER.match(name)
    if match:
        return match.group("id")
    parts = location.split("/")
    return parts[-1] if len(parts) == 3 and all(parts) else None


def config_hash(config: dict[str, Any], length: int = 8) -> str:
    """A short stable hash of a resolved config, ignoring run naming and location keys."""
    kept = {k: v for k, v in config.items() if k not in _UNHASHED}
    text = json.dumps(kept, sort_keys=True, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:length]


def default_run_id(role: str, target: str, sources: tuple[str, ...], regime: str,
                   config: dict[str, Any]) -> str:
    """The deterministic run id of a config, e.g. ``task__normal__full__1a2b3c4d``.

    Transfers read ``transfer__normal__from__depth_zbuffer+reshading__16k__<hash>``.
    """
    parts = [role, target]
    if sources:
        parts += ["from", "+".join(sorted(sources))]
    parts += [regime, config_hash(config)]
    return "__".join(parts)


def _with_label_set_digests(config: dict[str, Any]) -> dict[str, Any]:
    """``config`` with each label-set file of the data named with a hash of its contents.

    The labels are made from the file (``--data.ab_bins``, ``--data.jigsaw_permutations``), so a
    file edited under the same name gives another run id.
    """
    from taskonomy.datamodules.selfsupervised import LABEL_SET_OPTIONS

    data = config.get("data")
    if not isinstance(data, dict):
        return config
    named = {key: data[key] for key in LABEL_SET_OPTIONS
             if isinstance(data.get(key), str) and Path(data[key]).is_file()}
    if not named:
        return config
    digests = {key: file_digest(value) for key, value in named.items()}
    return {**config, "data": {**data, **{k: f"{named[k]}#{d}" for k, d in digests.items()}}}


def plugin_origins(tasks: Sequence[str]) -> dict[str, str]:
    """Where the plugin tasks among ``tasks`` came from (baselines and built-ins left out)."""
    from taskonomy.tasks.registry import get_registered, task_names

    known = set(task_names())
    found = [get_registered(task) for task in tasks if task in known]
    return {item.spec.name: item.origin for item in found if item.plugin}


def _global_rank() -> int:
    # Before the Trainer exists, the launcher's environment tells which process this is.
    for name in ("RANK", "SLURM_PROCID", "LOCAL_RANK"):
        if name in os.environ:
            return int(os.environ[name])
    return 0


def write_failed_record(failed: RunRecord, runs_dir: Path, rank: int, *,
                        echo: bool = False) -> RunRecord:
    """Write a run's failed record from the DDP rank that failed; returns what was written.

    A rank that fails alone gets the others stopped (Lightning kills them, or their next
    collective breaks), so rank 0, which writes the records, may never get here, or only with a
    lost connection for a cause. Another rank therefore writes its own failure, named by its
    rank, over the attempt's ``running`` record (rank 0 wrote it before the other ranks
    started, so its start time is the attempt's); rank 0 adds its message to such a failure
    instead of replacing it. ``echo``: the error only repeats another rank's (a loss that was
    not finite on another GPU); it is written only where nothing better is.
    """
    path = record_path(runs_dir, failed.run_id)

    def read() -> RunRecord | None:
        try:
            return read_record(path)
        except (OSError, ValueError):
            return None

    on_disk = read()
    if rank == 0 and echo:
        # The rank with the cause fails at the same collective: give its record a moment.
        deadline = time.monotonic() + ECHO_WAIT_SECONDS
        while (on_disk is None or on_disk.status != "failed") and time.monotonic() < deadline:
            time.sleep(0.1)
            on_disk = read()
    if rank != 0:
        if echo:
            return on_disk or failed
        if on_disk is not None and on_disk.status == "failed" \
                and not (on_disk.error or "").startswith(_ECHO_ERRORS):
            return on_disk  # another rank's cause, or rank 0's own, is there already
        started = on_disk.started_at if on_disk is not None else failed.started_at
        failed = dataclasses.replace(failed, started_at=started,
                                     error=f"rank {rank}: {failed.error}")
    elif (on_disk is not None and on_disk.status == "failed"
          and on_disk.started_at == failed.started_at
          and (on_disk.error or "").startswith("rank ")):
        if echo:
            return on_disk
        failed = dataclasses.replace(failed, error=f"{on_disk.error}; rank 0: {failed.error}")
    write_record(failed, runs_dir)
    return failed


#: Seconds rank 0 waits for the failing rank's record before recording only an echo of it.
ECHO_WAIT_SECONDS = 5.0
#: Error messages that only repeat another rank's failure.
_ECHO_ERRORS = ("NonFiniteLossElsewhereError",)


#: jsonargparse's wrapping of an error raised by a linked value's function (the error itself
#: names the problem and the fix; the link is an implementation detail).
_LINK_ERROR = re.compile(r"Call to compute_fn of link '[^']*' with args \(.*?\) failed: ")


class _ArgumentParser(LightningArgumentParser):
    """The CLI's parser: errors of linked values read as the error itself."""

    def error(self, message: str, ex: Exception | None = None) -> NoReturn:
        """Report ``message`` (without jsonargparse's link wrapping) and exit."""
        super().error(_LINK_ERROR.sub("", message), ex)


class TaskonomyCLI(LightningCLI):
    """A LightningCLI with run folders, run records, resume and W&B logging.

    Construct it like ``LightningCLI`` (``model_class``, ``datamodule_class``, ``args``, ...);
    ``parser_mode`` is ``"omegaconf"``, the seed defaults to 0 (so the derived run id is
    stable), and the saved ``config.yaml`` is overwritten when a run resumes.

    Attributes:
        role: Record role of the runs of this CLI (``task``, ``transfer``, ``baseline``).
        monitor: Metric that picks the best checkpoint (lower is better).
        run_id: The run's id (set before the classes are instantiated).
        run_dir: ``runs_dir / run_id``.
        record: The run record as last written (``None`` until ``fit`` starts).
    """

    role = "task"
    monitor = metric_key("val", "loss")
    #: How users call it; named in usage lines and in the parser's "run ... --help" tips.
    prog = "taskonomy"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        parser_kwargs = dict(kwargs.pop("parser_kwargs", None) or {})
        parser_kwargs.setdefault("parser_mode", "omegaconf")
        parser_kwargs.setdefault("prog", self.prog)
        save_config_kwargs = dict(kwargs.pop("save_config_kwargs", None) or {})
        save_config_kwargs.setdefault("overwrite", True)
        kwargs.setdefault("seed_everything_default", 0)
        kwargs.setdefault("parser_class", _ArgumentParser)
        self.run_id = ""
        self.run_dir = Path()
        self.record: RunRecord | None = None
        self.resumed_from: str | None = None
        kwargs["parser_kwargs"] = parser_kwargs
        kwargs["save_config_kwargs"] = save_config_kwargs
        super().__init__(*args, **kwargs)

    # ------------------------------------------------------------------ hooks for subclasses
    def record_identity(self) -> tuple[str, str, tuple[str, ...]]:
        """The record's ``(role, target, sources)``, read from the parsed model options.

        The base implementation reads ``model.task`` (a task run with no sources); transfer
        and baseline CLIs override it.
        """
        task = self.model_option("task")
        if not task:
            raise ValueError("no task given; pass --model.task=NAME (see `taskonomy tasks`)")
        return self.role, str(task), ()

    def parse_arguments(self, parser: LightningArgumentParser, args: Any) -> None:
        """Parse, after refusing an empty ``--config`` file.

        jsonargparse reported one as "Unexpected config:" and nothing more.
        """
        raw = sys.argv[1:] if args is None else args
        if isinstance(raw, (list, tuple)):
            for name in config_paths([str(a) for a in raw]):
                path = Path(name)
                if path.is_file() and not path.read_text(errors="replace").strip():
                    raise ValueError(f"config file {name} is empty; give a YAML mapping of "
                                     "settings (see experiments/configs/), or leave it out")
        super().parse_arguments(parser, args)

    def _parse_ckpt_path(self) -> None:
        """Refuse a ``--ckpt_path`` that is no whole checkpoint, then let Lightning read it.

        Lightning unpickles the file while parsing; a damaged or foreign one raised an
        unpickling traceback suggesting an unsafe load.
        """
        subcommand = self.config.get("subcommand")
        path = self.config[subcommand].get("ckpt_path") if subcommand else None
        if path and not is_url(path) and str(path) not in ("last", "best", "hpc") and (
                not checkpoint_intact(Path(path))):
            raise ValueError(f"--ckpt_path {path} is not a complete Lightning checkpoint "
                             "(missing, cut short or damaged); give another one, or leave it "
                             "out to resume from the run's own last.ckpt")
        super()._parse_ckpt_path()

    def preflight(self) -> None:
        """Check a parsed point as far as can be done without building anything.

        ``sweep run`` calls it for every point before the first runs: the record identity
        here (task, target and source names); subclasses add what their options name.
        """
        self.record_identity()

    def default_callbacks(self) -> list[Callback]:
        """Callbacks every run of this CLI gets (besides those in ``trainer.callbacks``)."""
        return [SkippedSamplesCallback()]

    def prepare_fit(self, model: L.LightningModule, datamodule: Any,
                    ckpt_path: str | None) -> None:
        """Complete the model from the data before training (the base class does nothing).

        Called by ``fit`` after the data check and before ``trainer.fit``. A subclass that
        resolves a model option here (e.g. ``class_weights: auto``) writes the value into the
        parsed config (:meth:`set_model_option`) so the run record carries it.

        Args:
            model: The instantiated model.
            datamodule: The instantiated datamodule (its splits are set up).
            ckpt_path: The checkpoint the run resumes from, or ``None`` for a fresh run; a
                value resolved from the data must come back unchanged from it.
        """

    def set_model_option(self, name: str, value: Any) -> None:
        """Write a resolved model option into the parsed config (record and saved config).

        The run id was derived before and does not change: repeating the command finds the
        same run.
        """
        self._namespace()["model"][name] = value

    # ------------------------------------------------------------------ parser
    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        """Add ``--run_id``, ``--runs_dir``, ``--regime`` and ``--test_checkpoint``."""
        parser.add_argument("--run_id", type=str | None, default=None,
                            help="Run id and folder name (default: derived from the config).")
        parser.add_argument("--runs_dir", type=str, default="runs",
                            help="Folder of runs; the run lives in RUNS_DIR/RUN_ID.")
        parser.add_argument("--regime", type=str, default="full",
                            help="Data regime written to the run record (full, 1k, 16k, ...).")
        parser.add_argument("--test_checkpoint", type=Literal["best", "last"], default="best",
                            help="Weights the test split scores: the best by validation loss, "
                                 "or the last (the paper's fixed schedule; unbiased when the "
                                 "validation split is small).")

    # ------------------------------------------------------------------ config helpers
    def subcommand_config(self) -> dict[str, Any]:
        """The resolved config of the running subcommand as plain data (JSON-ready)."""
        # jsonargparse >= 4.49 renamed skip_none to skip_unset; keep None values either way.
        keep_none = ({"skip_unset": False} if "skip_unset" in _DUMP_PARAMETERS
                     else {"skip_none": False})
        dumped = yaml.safe_load(self.parser.dump(self.config, skip_link_targets=False,
                                                 format="yaml", **keep_none))
        if self.subcommand is not None:
            dumped = dumped.get(self.subcommand, dumped)
        return dict(dumped)

    def model_option(self, name: str) -> Any:
        """One parsed ``model.NAME`` value (``None`` if unset).

        Read from the parsed namespace rather than :meth:`subcommand_config`: dumping the whole
        config costs about 0.1 s, which the sweep check would pay at every grid point.
        """
        model = self._namespace().get("model")
        return model.get(name) if model is not None else None

    def _namespace(self) -> Any:
        return self.config[self.subcommand] if self.subcommand is not None else self.config

    def before_instantiate_classes(self) -> None:
        """Fix the run id and folder, and the W&B mode, before anything is built."""
        configure_wandb_mode()
        if self.subcommand is None:
            return
        namespace = self._namespace()
        trainer = namespace.get("trainer")
        strategy = trainer.get("strategy") if trainer is not None else None
        if isinstance(strategy, str) and strategy.startswith("ddp_spawn"):
            raise ValueError(
                f"--trainer.strategy={strategy} is not supported: the run's test results are "
                "gathered in the launching process, which spawned processes do not share; use "
                "--trainer.strategy=ddp (one process per GPU, the paper config's default)"
            )
        precision = trainer.get("precision") if trainer is not None else None
        if str(precision) == "16-true":
            # Adam's epsilon (1e-8) is zero in float16: a parameter whose gradients are all
            # below float16's range gets 0/0 at the first update (the loss is NaN at step 1).
            raise ValueError(
                "--trainer.precision=16-true is not supported: it keeps the weights and Adam's "
                "state in float16, where Adam's epsilon rounds to zero and the first update "
                "makes the weights NaN; use --trainer.precision=16-mixed (float16 compute, "
                "float32 weights) or bf16-mixed"
            )
        role, target, sources = self.record_identity()
        regime = str(namespace.get("regime") or "full")
        self.run_id = namespace.get("run_id") or default_run_id(
            role, target, sources, regime, _with_label_set_digests(self.subcommand_config()))
        # Validates the run id (it names a folder) before anything is written.
        RunRecord(run_id=self.run_id, role=role, target=target, sources=sources, regime=regime)
        runs_dir = Path(namespace.get("runs_dir") or "runs")
        if runs_dir.is_file():
            raise ValueError(f"--runs_dir {runs_dir} is a file; it names the folder that holds "
                             "the run folders")
        self.run_dir = runs_dir / self.run_id
        namespace["run_id"] = self.run_id
        if namespace.get("trainer") is not None:
            namespace.trainer.default_root_dir = str(self.run_dir)

    # ------------------------------------------------------------------ trainer
    def make_logger(self) -> Logger:
        """The default logger: W&B, saving into the run folder, resumable (:meth:`wandb_id`)."""
        self.run_dir.mkdir(parents=True, exist_ok=True)
        role, target, sources = self.record_identity()
        regime = str(self._namespace().get("regime") or "full")
        # Tags to pick a target's runs, or a regime's, in the run table at a glance.
        tags = [role, f"target:{target}", f"regime:{regime}",
                *([f"order:{len(sources)}"] if role == "transfer" else [])]
        return WandbLogger(project=WANDB_PROJECT, name=self.run_id, id=self.wandb_id(),
                           save_dir=str(self.run_dir), resume="allow", job_type=self.role,
                           tags=tags)

    def wandb_id(self) -> str:
        """The W&B run id of this attempt.

        A run resuming from a checkpoint continues its earlier attempt's W&B run (the id in its
        record). A run started afresh gets a new id: W&B refuses the id of a deleted run for
        good (HTTP 409), so a redone run must not reuse its predecessor's.
        """
        folder = self.run_dir / CHECKPOINT_DIR
        if folder.is_dir() and any(folder.glob("*.ckpt")):
            path = record_path(self.run_dir.parent, self.run_id)
            try:
                location = read_record(path).wandb if path.is_file() else None
            except ValueError:
                location = None
            return wandb_id_of(location) or wandb_run_id(self.run_id)
        return wandb_run_id(f"{self.run_id}@{utc_now()}")

    def instantiate_trainer(self, **kwargs: Any) -> L.Trainer:
        """Build the Trainer with the run's logger, checkpoints and default callbacks."""
        trainer_config = self._get(self.config_init, "trainer", default={})
        _check_accelerator(trainer_config.get("accelerator"))
        if self.subcommand is not None and self.run_id:
            if self.subcommand == "fit" and not self._recorded_finished():
                # A missing split is refused before the run's folder, record or W&B run exist.
                self.check_data(getattr(self, "datamodule", None))
            logger = trainer_config.get("logger")
            if logger is None or logger is True:
                kwargs["logger"] = self.make_logger()
            callbacks = list(kwargs.get("callbacks") or trainer_config.get("callbacks") or [])
            checkpoints = [c for c in callbacks if isinstance(c, ModelCheckpoint)]
            if not checkpoints and trainer_config.get("enable_checkpointing", True) is not False:
                callbacks.append(BestAndLatestCheckpoint(
                    dirpath=self.run_dir / CHECKPOINT_DIR, filename="best-{step}",
                    monitor=self.monitor, mode="min", save_top_k=1, save_last=True))
            for checkpoint in checkpoints:
                if checkpoint.dirpath is None:
                    checkpoint.dirpath = str(self.run_dir / CHECKPOINT_DIR)
            known = {type(c) for c in callbacks}
            callbacks += [c for c in self.default_callbacks() if type(c) not in known]
            if logger is not False and LearningRateMonitor not in known:
                # The schedule's drops on the dashboards (the monitor needs a logger).
                callbacks.append(LearningRateMonitor(logging_interval="step"))
            if (trainer_config.get("enable_progress_bar", True) is not False
                    and not any(isinstance(c, ProgressBar) for c in callbacks)):
                callbacks.append(RunProgressBar())
            kwargs["callbacks"] = callbacks
        return super().instantiate_trainer(**kwargs)

    # ------------------------------------------------------------------ records
    def _write(self, record: RunRecord) -> None:
        self.record = record
        if _global_rank() == 0 and (getattr(self, "trainer", None) is None
                                    or self.trainer.is_global_zero):
            write_record(record, self.run_dir.parent)

    def _record_config(self) -> dict[str, Any]:
        config = self.subcommand_config()
        config["ckpt_path"] = self.resumed_from or config.get("ckpt_path")
        config[CONFIG_FILES_KEY] = [os.path.abspath(str(path))
                                    for path in self._namespace().get("config") or []]
        _, target, sources = self.record_identity()
        origins = plugin_origins([target, *sources])
        if origins:
            config[TASK_ORIGINS_KEY] = origins
        return config

    def _start_record(self) -> RunRecord:
        namespace = self._namespace()
        role, target, sources = self.record_identity()
        config = self._record_config()
        started = None
        previous = record_path(self.run_dir.parent, self.run_id)
        if previous.is_file() and self.resumed_from:
            try:
                started = read_record(previous).started_at
            except ValueError:
                started = None
        record = RunRecord(run_id=self.run_id, role=role, target=target, sources=sources,
                           regime=str(namespace.get("regime") or "full"), status="running",
                           config=config, wandb=self._wandb_location(),
                           **({"started_at": started} if started else {}))
        self._write(record)
        if record.wandb is not None:  # rank 0 with a W&B run
            from taskonomy.analysis.wandb_source import log_identity

            log_identity(self._wandb_run(), record)
        return record

    def _wandb_run(self) -> Any:
        for logger in self.trainer.loggers:
            if isinstance(logger, WandbLogger):
                return logger.experiment
        return None

    def _wandb_location(self) -> str | None:
        if _global_rank() != 0 or not self.trainer.is_global_zero:
            return None  # other ranks hold a placeholder experiment
        run = self._wandb_run()
        if run is None:
            return None
        if getattr(run, "offline", False) or os.environ.get("WANDB_MODE") in ("offline",
                                                                               "dryrun"):
            return str(Path(run.dir).parent)
        return "/".join(run.path) if isinstance(run.path, (list, tuple)) else str(run.path)

    def _finish_wandb(self, record: RunRecord, exit_code: int) -> None:
        if not self.trainer.is_global_zero:
            return
        run = self._wandb_run()
        if run is None:
            return
        from taskonomy.analysis.wandb_source import log_record

        try:
            log_record(run, record)
        finally:  # the run's state (a failed run's exit code) even if the upload failed
            run.finish(exit_code=exit_code)

    def _finish_wandb_of_finished(self, record: RunRecord) -> None:
        """Close the W&B run of a finished run; a W&B failure leaves the record finished.

        The record is written before this is called and is what the analysis and the sweep
        executor read, so an upload error only warns instead of marking the run failed.
        """
        try:
            self._finish_wandb(record, exit_code=0)
        except Exception as error:  # noqa: BLE001 - the run itself succeeded
            warnings.warn(
                f"run {self.run_id!r} finished and its record is written, but closing its W&B "
                f"run failed ({type(error).__name__}: {error}); the W&B run may lack the final "
                "metrics (`taskonomy analyze` reads the record)", stacklevel=2,
            )

    # ------------------------------------------------------------------ data checks
    def data_stages(self) -> tuple[str, ...]:
        """The datamodule stages the run reads: training and testing."""
        return ("fit", "test")

    def check_data(self, datamodule: Any) -> None:
        """Check before training that every split the run needs has the domains it reads.

        A missing split or domain folder raises ``FileNotFoundError`` (naming the folder and
        the pack command) here rather than after training.
        """
        if isinstance(datamodule, TaskonomyDataModule):
            for stage in self.data_stages():
                datamodule.setup(stage)

    def _recorded_finished(self) -> bool:
        """Whether the run's record says finished (whatever config it finished with)."""
        path = record_path(self.run_dir.parent, self.run_id)
        try:
            return path.is_file() and read_record(path).status == "finished"
        except ValueError:
            return False

    def resume_checkpoint(self) -> str | None:
        """``RUN_DIR/checkpoints/last.ckpt`` if it exists and is complete, else ``None``.

        A process killed while writing leaves a truncated file (no zip directory at its end), and
        a disk or a copy can damage one inside: the newest intact checkpoint of the folder is
        used instead, with a warning.
        """
        folder = self.run_dir / CHECKPOINT_DIR
        last = folder / LAST_CHECKPOINT
        if not last.is_file():
            return None
        if checkpoint_intact(last):
            return str(last)
        others = sorted((p for p in folder.glob("*.ckpt") if p != last),
                        key=lambda p: p.stat().st_mtime, reverse=True)
        fallback = next((str(p) for p in others if checkpoint_intact(p)), None)
        warnings.warn(f"{last} is incomplete (the run was killed while saving); resuming from "
                      f"{fallback or 'scratch'}", RuntimeWarning, stacklevel=2)
        return fallback

    def _record_checkpoint(self, checkpoint: str | None) -> str | None:
        """The checkpoint path as a record stores it: absolute.

        A path relative to the working directory would break as soon as the analysis or a
        transfer runs from another folder.
        """
        return None if checkpoint is None else str(Path(checkpoint).resolve())

    def finished_config(self, model: L.LightningModule) -> dict[str, Any]:
        """Config entries a finished run adds to its record, known only after testing.

        None here; task runs add their encoder's weight fingerprint.
        """
        return {}

    def best_checkpoint(self) -> str | None:
        """The checkpoint to test.

        The best by :attr:`monitor` (``--test_checkpoint=best``) or the last one saved
        (``last``); either falls back to the other.
        """
        callback = self.trainer.checkpoint_callback
        if isinstance(callback, ModelCheckpoint):
            paths = (callback.best_model_path, callback.last_model_path)
            if (self._namespace().get("test_checkpoint") or "best") == "last":
                paths = paths[::-1]
            for path in paths:
                if path and Path(path).is_file():
                    return str(path)
        return self.resume_checkpoint()

    # ------------------------------------------------------------------ the fit subcommand
    def finished_already(self) -> bool:
        """Whether the run is finished with this very config; says so (it is not redone).

        Repeating the command of a finished run (by hand, or a W&B agent handed the point
        again) would otherwise rewrite its record as running and lose its results if stopped.
        A changed config under the same run id (``--trainer.max_steps`` raised to train on)
        goes ahead.
        """
        path = record_path(self.run_dir.parent, self.run_id)
        try:
            record = read_record(path) if path.is_file() else None
        except ValueError:
            return False
        if record is None or record.status != "finished":
            return False

        def setting(config: dict[str, Any]) -> dict[str, Any]:
            # Left out: where it resumed from, the source runs found (a retrained source makes
            # a stale transfer, which `sweep run --redo-stale` handles), what testing added,
            # where the task overrides file lies and which keys beat it (the values are in the
            # config), the plugin versions (provenance only), and class weights that fitting
            # resolves (`auto` or a file becomes the list).
            out = {k: v for k, v in config.items() if k not in (
                "ckpt_path", "source_runs", ENCODER_FINGERPRINT_KEY, "task_overrides",
                "task_overrides_keep", CONFIG_FILES_KEY, TASK_ORIGINS_KEY)}
            model = out.get("model")
            if isinstance(model, dict) and "class_weights" in model:
                out["model"] = {**model, "class_weights": None}
            return out

        finished = setting(record.config) == setting(self._record_config())
        if finished and self.trainer.is_global_zero:
            print(f"run {self.run_id} is already finished ({path}); nothing to do. To run it "
                  "again, delete its folder or its record.json, or pass another --run_id")
            self._report_to_sweep_agent(record)
        return finished

    def _report_to_sweep_agent(self, record: RunRecord) -> None:
        """Under a W&B sweep agent, fill the agent's run of this point with the finished record.

        The agent made a W&B run for the point and expects the process to log into it; left
        alone it would stay an empty run in the sweep (no metrics, no state). The record's
        results go there instead, so the sweep's table and its metric see every point; the
        analysis reads such a copy as the same run (one run id) and counts it once.
        """
        if not os.environ.get("WANDB_SWEEP_ID") or _global_rank() != 0 or (
                not self.trainer.is_global_zero):
            return
        try:
            run = self._wandb_run()  # the agent's run: W&B ignores our id under a sweep
            if run is None:
                return
            from taskonomy.analysis.wandb_source import log_record

            log_record(run, record)
            run.summary["finished_earlier_in"] = record.wandb or str(
                record_path(self.run_dir.parent, self.run_id))
            run.finish(exit_code=0)
        except Exception as error:  # noqa: BLE001 - the run itself is finished and recorded
            warnings.warn(f"run {self.run_id!r} is finished, but logging its record to the W&B "
                          f"sweep agent's run failed ({type(error).__name__}: {error})",
                          stacklevel=2)

    def fit(self, model: L.LightningModule, datamodule: Any = None, ckpt_path: str | None = None,
            **kwargs: Any) -> None:
        """Train (resuming from ``last.ckpt``), test the chosen checkpoint, write the record.

        A run whose record is finished is left as it is (:meth:`finished_already`).

        Raises:
            Exception: Whatever stopped the run, after its record was marked ``failed``.
        """
        if self.finished_already():
            return
        if ckpt_path is None:
            ckpt_path = self.resume_checkpoint()
        self.resumed_from = ckpt_path
        # Before the record is rewritten as running: a finished run trained further with a
        # wrong data path keeps its results.
        self.check_data(datamodule)
        record = self._start_record()
        try:
            self.prepare_fit(model, datamodule, ckpt_path)
            config = self._record_config()
            if config != record.config:
                record = dataclasses.replace(record, config=config)
                self._write(record)
            self.trainer.fit(model, datamodule=datamodule, ckpt_path=ckpt_path, **kwargs)
            if self.trainer.interrupted:
                raise KeyboardInterrupt("training was interrupted")
            if self.trainer.global_step == 0:
                # A finished record of an untrained network would enter the analysis (and
                # a task run's transfers) as if trained.
                raise ValueError(
                    f"run {self.run_id!r} took no training step (trainer.max_steps, "
                    "max_epochs or limit_train_batches is 0, or the training split gave no "
                    "batch); set them above 0 and repeat the command")
            checkpoint = self.best_checkpoint()
            results = self.trainer.test(model, datamodule=datamodule, ckpt_path=checkpoint)
            metrics = {k: float(v) for result in results for k, v in result.items()}
            losses = dict(getattr(model, "test_per_image_losses", {}) or {})
            if not losses:
                raise ValueError(
                    f"run {self.run_id!r}: the test split gave no per-image losses; check that "
                    "the datamodule has a test split with samples"
                )
            extra = self.finished_config(model)
            if extra:
                record = dataclasses.replace(record, config={**record.config, **extra})
            record = record.finished(metrics=metrics, per_image_losses=losses,
                                     checkpoint=self._record_checkpoint(checkpoint))
            self._write(record)
        except BaseException as error:
            message = f"{type(error).__name__}: {error}"
            if isinstance(error, (SystemExit, KeyboardInterrupt)) and self.trainer.interrupted:
                message = "interrupted; repeat the command to resume from the last checkpoint"
            failed = (self.record or record).failed(message)
            from taskonomy.tasks.families.base import NonFiniteLossElsewhereError

            trainer = getattr(self, "trainer", None)
            rank = trainer.global_rank if trainer is not None else _global_rank()
            self.record = write_failed_record(
                failed, self.run_dir.parent, rank,
                echo=isinstance(error, NonFiniteLossElsewhereError))
            try:
                self._finish_wandb(self.record, exit_code=1)
            except Exception:  # noqa: BLE001 - never hide the original error
                pass
            raise
        self._finish_wandb_of_finished(record)


def checkpoint_intact(path: Path) -> bool:
    """Whether ``path`` is a whole checkpoint: a zip archive whose members pass their CRC.

    Reading it through costs about as much as loading it (a resumed run's checkpoint, or a
    given ``--ckpt_path``, is read twice).
    """
    try:
        with zipfile.ZipFile(path) as archive:
            return archive.testzip() is None
    except (OSError, zipfile.BadZipFile, RuntimeError, ValueError):
        return False


#: Exit status of a run stopped by SIGTERM (a scheduler, a W&B stop): 128 + 15, as a shell
#: reports it, so that ``train … && next`` and sweep ledgers do not take it for a success.
SIGTERM_EXIT = 143


#: Overrides that run a GPU config (``paper.yaml``, ``transfer_paper.yaml``) on the CPU.
CPU_OVERRIDES = ("--trainer.accelerator=cpu --trainer.devices=1 --trainer.strategy=auto "
                 "--trainer.precision=32-true --trainer.sync_batchnorm=false")


def _check_accelerator(accelerator: Any) -> None:
    """Refuse a GPU config where no GPU is visible, before the run's folder exists.

    Raises:
        ValueError: ``accelerator`` is ``gpu``/``cuda`` and Lightning sees no such device;
            names the CPU config and the overrides.
    """
    from lightning.pytorch.accelerators import CUDAAccelerator, MPSAccelerator

    kind = str(accelerator).lower()
    # Lightning's checks (no CUDA context is made before a forked DDP launch); "gpu" is MPS on
    # Apple silicon.
    available = CUDAAccelerator.is_available() or (kind == "gpu" and MPSAccelerator.is_available())
    if kind in ("gpu", "cuda") and not available:
        raise ValueError(
            f"this config trains on GPUs (--trainer.accelerator={accelerator}), but none is "
            "visible here; on a CPU use experiments/configs/cpu.yaml (transfer_cpu.yaml for "
            f"transfers), or keep this config and add {CPU_OVERRIDES}")


def run_main(run: Callable[[Sequence[str] | None], Any], argv: Sequence[str] | None) -> int:
    """Run a training CLI: 0 on success, 2 on bad input, 1 on a failed run, 143 when stopped.

    Lightning turns SIGTERM into a ``SystemExit`` without a status (0); the run's record is
    already ``failed`` by then, so the process must not exit 0.
    """
    from lightning.pytorch.utilities.exceptions import SIGTERMException

    from taskonomy.tasks.families.base import NonFiniteLossError

    try:
        run(argv)
    except (ValueError, FileNotFoundError, NotADirectoryError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except NonFiniteLossError as error:
        print(f"error: the run diverged: {error}", file=sys.stderr)
        return 1
    except SIGTERMException:
        print("error: the run was stopped (SIGTERM); its record says failed. Repeat the command "
              "to resume from its last checkpoint", file=sys.stderr)
        return SIGTERM_EXIT
    return 0
