"""Task-specific training: ``taskonomy train fit --config CONFIG --model.task=normal``.

The model is built by name through :func:`task_model` (any registered task, third-party
plugins included), the data by :class:`~taskonomy.datamodules.datamodule.TaskonomyDataModule`;
``model.task`` and ``model.resolution`` are linked into ``data.tasks`` and ``data.resolution``.
``model.class_weights: auto`` (semantic segmentation, as the paper's configs set it) is resolved
before fitting from the label counts of the run's own training split
(:func:`resolve_class_weights`). The run life cycle (run folder, record, resume, W&B, test with
per-image losses) comes from :class:`~taskonomy.experiments.lightning_cli.TaskonomyCLI`;
prediction panels are drawn each validation epoch by
:class:`~taskonomy.experiments.panels.PredictionPanels`.
"""

from __future__ import annotations

import contextlib
import copy
import io
import math
import sys
import warnings
from collections.abc import Collection, Sequence
from pathlib import Path
from typing import Any

import lightning as L
import torch
import yaml
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.cli import LightningArgumentParser
from lightning.pytorch.utilities import rank_zero_only
from rich.progress import Progress

from taskonomy.analysis.records import ENCODER_FINGERPRINT_KEY
from taskonomy.datamodules.datamodule import (
    ShardStream,
    SkipCounter,
    TaskonomyDataModule,
    task_domains,
)
from taskonomy.datamodules.selfsupervised import AB_BIN_COUNT, smooth_ab_distribution
from taskonomy.datamodules.task_samples import require_sample_builder
from taskonomy.experiments.lightning_cli import TaskonomyCLI, run_main
from taskonomy.experiments.panels import PredictionPanels
from taskonomy.tasks.build import build_task
from taskonomy.tasks.families.base import (
    AUTO_CLASS_WEIGHTS,
    TaskModule,
    load_class_weights,
)
from taskonomy.tasks.losses import class_balancing_weights
from taskonomy.tasks.registry import get_spec
from taskonomy.tasks.representations import weights_fingerprint

#: The packaged configs (``task_overrides`` paths are also looked up here).
CONFIGS_DIR = Path(__file__).parent / "configs"
#: Training samples (views) whose labels ``class_weights: auto`` counts at most: enough for a
#: stable class distribution, while the real 4M-image split is never read whole.
CLASS_COUNT_SAMPLES = 1024
#: Weight of the uniform distribution in the class-balancing rule (see
#: :func:`~taskonomy.tasks.losses.class_balancing_weights`).
CLASS_BALANCE_MIX = 0.5


def task_model(
    task: str,
    encoder: str = "resnet50",
    resolution: int = 256,
    decoder_width: float = 1.0,
    head_width: float = 1.0,
    lr: float = 1e-4,
    weight_decay: float | None = None,
    lr_milestone: int | float | None = 80_000,
    lr_gamma: float = 0.1,
    clip_norm: float | None = None,
    gan: bool = False,
    gan_weight: float | None = None,
    gan_warmup_steps: int = 25_000,
    gan_lr: float = 1e-5,
    gan_noise: float | None = None,
    class_weights: list[float] | str | None = None,
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
        lr_milestone: Optimizer step of the ×``lr_gamma`` LR drop, or a fraction in (0, 1) of
            the run's steps (the CPU setting's 0.67); ``None``: constant LR.
        lr_gamma: Factor of the LR drop.
        clip_norm: Per-variable gradient clip (``None``: the family's default, ``0``: off).
        gan: Add the cGAN term (dense regression tasks and colorization).
        gan_weight: Weight of the GAN term (None: 0.01 for colorization, else 0.004).
        gan_warmup_steps: Steps on the task loss alone before the GAN term starts.
        gan_lr: SGD learning rate of the discriminator.
        gan_noise: Initial σ of the discriminator's instance noise (None: 0.03 for depth, else 0.1).
        class_weights: Per-class loss weights (semantic segmentation, colorization); a ``.npy``
            or text file of them (the authors' ``semseg_prior_factor.npy``; the training CLI
            puts the loaded list in the config); ``auto``: counted from the training labels
            before fitting (:func:`resolve_class_weights`) and stored as the list in the
            hyper-parameters, the checkpoint and the run record.
        metric_samples: Pixels per image of the metric loss (unsupervised segmentation).

    Raises:
        ValueError: Unknown task (the valid names are listed) or invalid options (``auto``
            class weights on a task without a class-weighted loss).
    """
    return build_task(
        task, encoder=encoder, resolution=resolution, decoder_width=decoder_width,
        head_width=head_width, lr=lr, weight_decay=weight_decay, lr_milestone=lr_milestone,
        lr_gamma=lr_gamma, clip_norm=clip_norm, gan=gan, gan_weight=gan_weight,
        gan_warmup_steps=gan_warmup_steps, gan_lr=gan_lr, gan_noise=gan_noise,
        class_weights=class_weights, metric_samples=metric_samples,
    )


def count_keys(datamodule: TaskonomyDataModule,
               max_samples: int = CLASS_COUNT_SAMPLES) -> dict[int, list[str]]:
    """The training samples whose labels are counted: at most ``max_samples``, by shard.

    Whole shards spread evenly over the training split (its ``limit`` subset, if any) are taken,
    so the count covers many buildings (shards are packed building by building) while reading
    about ``max_samples`` samples; the last shard taken may be cut short. Deterministic: every
    rank of a DDP job, and a repeated command, picks the same samples.

    Returns:
        Shard index → the keys to count in it, in shard order.

    Raises:
        ValueError: No training split, or ``max_samples`` < 1.
    """
    if max_samples < 1:
        raise ValueError(f"max_samples must be at least 1, got {max_samples}")
    split = datamodule.splits.get("train")
    if split is None:
        raise ValueError("class_weights: auto counts the training labels; set data.train_split")
    wanted = set(datamodule.role_keys("train"))
    manifest = datamodule.manifests[split]
    shards = [(int(s["index"]), [k for k in s["keys"] if k in wanted])
              for s in manifest["shards"]]
    shards = [(index, keys) for index, keys in shards if keys]
    total = sum(len(keys) for _, keys in shards)
    picked = list(range(len(shards)))
    if total > max_samples:
        # As many evenly spaced shards as samples of the mean shard size need, more if the
        # picked shards are small.
        count = math.ceil(max_samples * len(shards) / total)
        while True:
            step = len(shards) / count
            picked = sorted({int(i * step) for i in range(count)})
            if sum(len(shards[i][1]) for i in picked) >= max_samples or count >= len(shards):
                break
            count = min(len(shards), count * 2)
    chosen: dict[int, list[str]] = {}
    left = max_samples
    for position in picked:
        index, keys = shards[position]
        if left <= 0:
            break
        chosen[index] = keys[:left]
        left -= len(chosen[index])
    return chosen


def count_class_labels(datamodule: TaskonomyDataModule, task: str,
                       max_samples: int = CLASS_COUNT_SAMPLES,
                       progress: bool = False) -> tuple[torch.Tensor, int]:
    """Pixel counts of each class among the certain labels of (part of) the training split.

    Reads only the label domains of the samples :func:`count_keys` picks (no images), at the
    datamodule's resolution, as the loss sees them: the ``target`` of the task's samples where
    its ``mask`` is set (semantic segmentation: "uncertain" pixels are left out).

    Args:
        datamodule: The run's datamodule (root, split, resolution, ``limit`` subset).
        task: A task whose samples hold integer class labels, or soft targets over classes
            along axis 0 (colorization: each pixel counts for its arg-max bin).
        max_samples: Training samples counted at most (see :data:`CLASS_COUNT_SAMPLES`).
        progress: Show a progress bar.

    Returns:
        ``(counts, samples)``: ``K`` pixel counts (float64) and the number of samples read.

    Raises:
        ValueError: Labels outside the task's classes, or no readable sample.
        FileNotFoundError: A label domain folder is missing.
    """
    spec = get_spec(task)
    datamodule.setup("fit")
    chosen = count_keys(datamodule, max_samples)
    keys = frozenset(k for shard in chosen.values() for k in shard)
    split = datamodule.splits["train"]
    assert split is not None  # count_keys checked it
    # Cached-inputs mode of the stream: labels only, the rgb shards are never opened -- unless
    # the labels are made from the image (colorization's ab bins).
    label_domains = [d for d in task_domains([task]) if d != "rgb"]
    stream = ShardStream(
        datamodule.root, split, label_domains or ["rgb"], [task],
        datamodule.resolution, list(chosen), keys, train=False, epoch_size=len(keys),
        seed=datamodule.seed, counter=SkipCounter().stream("images"), rank=0, world_size=1,
        jigsaw_tile=datamodule.jigsaw_tile, label_sets=datamodule.label_sets,
        cached_inputs=keys if label_domains else None,
    )
    counts = torch.zeros(spec.output_channels, dtype=torch.float64)
    samples = 0
    with Progress(transient=True, disable=not progress) as bar:
        counting = bar.add_task(f"counting {task} labels", total=len(keys))
        for sample in stream:
            target = torch.as_tensor(sample[task]["target"])
            if target.is_floating_point():  # soft targets (colorization): count arg-max bins
                target = target.argmax(0)
            mask = sample[task].get("mask")
            labels = target.flatten() if mask is None else (
                target.flatten()[torch.as_tensor(mask).flatten() > 0])
            if len(labels) and (labels.min() < 0 or labels.max() >= spec.output_channels):
                raise ValueError(
                    f"sample {sample['__key__']}: {task} labels outside 0–"
                    f"{spec.output_channels - 1}; check the packed {task} domain"
                )
            counts += torch.bincount(labels, minlength=spec.output_channels).double()
            samples += 1
            bar.advance(counting)
    if samples == 0:
        raise ValueError(
            f"no readable {task} sample among the {len(keys)} training samples picked to count "
            f"class labels (split {split!r} under {datamodule.root}); check the shards"
        )
    return counts, samples


def is_ab_bin_task(task: str) -> bool:
    """Whether a task's dense soft targets are distributions over the 313 ab bins."""
    spec = get_spec(task)
    return (spec.family == "dense_classification" and spec.loss == "soft_cross_entropy"
            and spec.output_channels == AB_BIN_COUNT)


def checkpoint_class_weights(path: str | Path) -> list[float] | None:
    """The concrete ``class_weights`` saved in a checkpoint's hyper-parameters, if any."""
    try:
        saved = torch.load(path, map_location="cpu", weights_only=False, mmap=True)
    except RuntimeError:  # not a zip checkpoint: mmap is unsupported, read it whole
        saved = torch.load(path, map_location="cpu", weights_only=False)
    hparams = saved.get("hyper_parameters", {}) if isinstance(saved, dict) else {}
    weights = hparams.get("class_weights")
    return [float(w) for w in weights] if isinstance(weights, (list, tuple)) else None


def resolve_class_weights(model: TaskModule, datamodule: Any, ckpt_path: str | None = None,
                          max_samples: int = CLASS_COUNT_SAMPLES,
                          progress: bool = False) -> tuple[list[float], str]:
    """Turn a model's ``class_weights: auto`` into concrete weights (stored in its hparams).

    A run that resumes from a checkpoint holding concrete weights takes them from there, so it
    trains on with exactly the loss it started with even if the data changed; otherwise they
    come from :func:`count_class_labels` on at most ``max_samples`` training samples of
    ``datamodule`` through :func:`~taskonomy.tasks.losses.class_balancing_weights` (the
    authors' prior-boost rule; their ``semseg_prior_factor`` has this shape: background
    lowest, rare classes highest). Colorization's ab-bin counts are first smoothed in ab space
    (:func:`~taskonomy.datamodules.selfsupervised.smooth_ab_distribution`), as Zhang et al.
    do. The count is deterministic, so DDP ranks agree.

    Returns:
        ``(weights, origin)``: the weights and a phrase saying where they came from.

    Raises:
        ValueError: The datamodule is not a :class:`TaskonomyDataModule`, or the count failed.
    """
    if ckpt_path is not None and Path(ckpt_path).is_file():
        saved = checkpoint_class_weights(ckpt_path)
        if saved is not None:
            return model.set_class_weights(saved), f"from checkpoint {ckpt_path}"
    if not isinstance(datamodule, TaskonomyDataModule):
        raise ValueError(
            f"class_weights: auto counts the training labels of a TaskonomyDataModule, got "
            f"{type(datamodule).__name__}; pass class_weights as a list instead"
        )
    counts, samples = count_class_labels(datamodule, model.spec.name, max_samples, progress)
    if is_ab_bin_task(model.spec.name):  # Zhang et al.'s Gaussian smoothing of the colours
        counts = torch.from_numpy(smooth_ab_distribution(
            counts.numpy(), bins=datamodule.label_sets.ab_bins))
    weights = class_balancing_weights(counts, CLASS_BALANCE_MIX).tolist()
    return model.set_class_weights(weights), f"counted on {samples} training samples"


@rank_zero_only
def _announce(message: str) -> None:
    print(message, flush=True)


def find_task_overrides(path: str | Path, config_dirs: Sequence[Path] = ()) -> Path:
    """The task-overrides file a config names.

    A relative path is tried beside the config files (the latest first), in the working
    directory, then among the packaged configs. So the saved ``config.yaml`` of a run (in its
    run folder) still finds a packaged ``tasks/cpu_exceptions.yaml``, which it names as
    written; the run id hashes that name, not where the suite is installed.

    Raises:
        FileNotFoundError: No such file in any of those places (they are listed).
    """
    given = Path(path).expanduser()
    places = [given] if given.is_absolute() else [
        *(d / given for d in reversed(config_dirs)), Path.cwd() / given, CONFIGS_DIR / given]
    for place in places:
        if place.is_file():
            return place
    raise FileNotFoundError(
        f"task_overrides file {str(path)!r} not found (looked in: "
        f"{', '.join(str(p) for p in dict.fromkeys(places))}); give an existing YAML file or "
        "--task_overrides=null")


def load_task_overrides(path: str | Path) -> dict[str, dict[str, dict[str, Any]]]:
    """Read a task-overrides YAML file: ``{task: {section: {key: value}}}``.

    Raises:
        FileNotFoundError: The file does not exist.
        ValueError: The file is not YAML, or not a mapping of that shape.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"task overrides file {path} does not exist; fix task_overrides")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as error:
        raise ValueError(f"task overrides file {path} is not valid YAML ({error}); fix it or "
                         "pass --task_overrides=null") from None
    if not isinstance(data, dict) or not all(
        isinstance(sections, dict) and all(isinstance(v, dict) for v in sections.values())
        for sections in data.values()
    ):
        raise ValueError(
            f"{path}: task overrides must map task -> section (model, data, trainer) -> "
            "{key: value}"
        )
    return data


def apply_task_overrides(namespace: Any, overrides: dict[str, dict[str, dict[str, Any]]],
                         explicit: Collection[str] = ()) -> None:
    """Set the values listed for ``namespace.model.task`` (after parsing, so they beat configs).

    Args:
        namespace: The parsed config of the subcommand.
        overrides: ``{task: {section: {key: value}}}``.
        explicit: Dotted keys (``data.batch_size``) the user gave on the command line: those
            keep the user's value.

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
            if f"{section}.{key}" not in explicit:
                group[key] = value


def command_line_keys(args: Sequence[str]) -> set[str]:
    """Dotted keys set by ``--key=value`` or ``--key value`` arguments (``--config`` aside)."""
    keys = set()
    for arg in args:
        if arg.startswith("--") and arg != "--config" and not arg.startswith("--config="):
            keys.add(arg[2:].split("=", 1)[0])
    return keys


def _as_task_list(task: str) -> list[str]:
    return [task]


class TrainCLI(TaskonomyCLI):
    """The task-specific training CLI: one task's network, role ``task``."""

    role = "task"
    prog = "taskonomy train"
    #: Training samples counted at most for ``class_weights: auto``.
    class_count_samples = CLASS_COUNT_SAMPLES

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        """Run arguments, plus the links model.task → data.tasks, model.resolution → data."""
        super().add_arguments_to_parser(parser)
        parser.add_argument(
            "--task_overrides", type=str | None, default=None,
            help="YAML file mapping task names to config values that replace the parsed ones "
                 "for that task (the paper's per-task batch sizes, weight decays, LR schedules). "
                 "A relative path is looked up beside the --config files, in the working "
                 "directory, then among the packaged configs, so a run's saved config.yaml "
                 "works from any folder.")
        parser.add_argument(
            "--task_overrides_keep", type=list[str] | None, default=None,
            help="dotted keys (data.batch_size) that keep their configured value over the task "
                 "overrides. A run's saved config.yaml lists here the keys typed on its command "
                 "line, so that a rerun from it keeps them.")
        parser.link_arguments("model.task", "data.tasks", compute_fn=_as_task_list)
        parser.link_arguments("model.resolution", "data.resolution")

    def record_identity(self) -> tuple[str, str, tuple[str, ...]]:
        """Role ``task`` and ``model.task``, which must name a registered task.

        Checked here, before anything is built, so that a sweep's pre-check rejects a point
        with an unknown task before any point runs.
        """
        role, task, sources = super().record_identity()
        get_spec(task)
        require_sample_builder(task)
        return role, task, sources

    def preflight(self) -> None:
        """Also read the ``task_overrides`` file and check that its keys exist."""
        super().preflight()
        if self.subcommand is not None:
            self._apply_task_overrides(copy.deepcopy(self.config[self.subcommand]))

    def parse_arguments(self, parser: LightningArgumentParser, args: Any) -> None:
        """Parse, remembering which keys the command line set (they beat task overrides).

        ``--print_config`` prints the config with the task's overrides applied (the values the
        run would use); jsonargparse alone prints it before they are.
        """
        raw = sys.argv[1:] if args is None else args
        listed = [str(a) for a in raw] if isinstance(raw, (list, tuple)) else None
        self.explicit_keys = command_line_keys(listed) if listed is not None else set()
        printing = [a for a in listed or [] if a.split("=", 1)[0] == "--print_config"]
        if listed is None or not printing:
            super().parse_arguments(parser, args)
            return
        flags = printing[-1].partition("=")[2].split(",")
        try:  # without --print_config, to apply the overrides before printing
            with contextlib.redirect_stderr(io.StringIO()):
                super().parse_arguments(parser, [a for a in listed if a not in printing])
        except SystemExit:  # e.g. no task yet: print the starter config as jsonargparse does
            super().parse_arguments(parser, args)
            return
        subcommand = self.config.get("subcommand")
        if subcommand is not None:
            self._apply_task_overrides(self.config[subcommand])
            sys.stdout.write(self._subcommand_parsers[subcommand].dump(
                self.config[subcommand], skip_validation=True, skip_none="skip_null" in flags,
                skip_default="skip_default" in flags))
            sys.exit(0)
        super().parse_arguments(parser, args)

    def _apply_task_overrides(self, namespace: Any) -> Path | None:
        """Apply the task's entry of the ``task_overrides`` file, if one is named.

        Returns:
            The file found, or ``None``.
        """
        path = namespace.get("task_overrides")
        if path is None:
            return None
        # Given on the command line, it is relative to the working directory.
        given_here = "task_overrides" in getattr(self, "explicit_keys", set())
        found = find_task_overrides(path, [] if given_here else [
            Path(str(getattr(c, "absolute", c))).parent for c in namespace.get("config") or []])
        overrides = load_task_overrides(found)
        typed: set[str] = getattr(self, "explicit_keys", set())
        keep = set(namespace.get("task_overrides_keep") or [])
        for name in keep:
            section, _, key = str(name).partition(".")
            group = namespace.get(section)
            if group is None or not hasattr(group, "__contains__") or key not in group:
                raise ValueError(f"task_overrides_keep names {name!r}, which the config does not "
                                 "have; name dotted keys such as data.batch_size")
        apply_task_overrides(namespace, overrides, typed | keep)
        # The saved config.yaml cannot tell a typed value from a configured one: it names the
        # typed keys that an override would replace, so that a rerun from it keeps them too.
        listed = {f"{section}.{key}" for section, values
                  in overrides.get(namespace.get("model", {}).get("task"), {}).items()
                  for key in values}
        namespace["task_overrides_keep"] = sorted(keep | (typed & listed)) or None
        return found

    def before_instantiate_classes(self) -> None:
        """Apply the task's entry of ``task_overrides``, then fix the run id and folder.

        The run id hashes the ``task_overrides`` path as written; the config then keeps it
        absolute (:func:`find_task_overrides`), unless it is a packaged one.

        A key the user set on the command line keeps the user's value (e.g.
        ``--model.class_weights=[...]`` or ``--data.batch_size=...`` beside a task exception).
        """
        found: Path | None = None
        if self.subcommand is not None:
            namespace = self.config[self.subcommand]
            path = namespace.get("task_overrides")
            found = self._apply_task_overrides(namespace)
            model = namespace.get("model")
            weights = model.get("class_weights") if model is not None else None
            if isinstance(weights, str) and weights != AUTO_CLASS_WEIGHTS:
                # The weights, not the file name, go into the config, the run id and the
                # record (transfers and `self` baselines read them from there).
                model["class_weights"] = load_class_weights(weights)
                data = namespace.get("data")
                if (is_ab_bin_task(str(model.get("task")))
                        and (data is None or data.get("ab_bins") is None)):
                    warnings.warn(
                        f"class_weights {weights} weighs colorization's ab bins in the order of "
                        "the bins it was made for, and this run uses the suite's own bins; pass "
                        "those bins too (the authors' prior_factor_in_door.npy goes with their "
                        "pts_in_hull.npy: --data.ab_bins=pts_in_hull.npy)", UserWarning,
                        stacklevel=2)
        super().before_instantiate_classes()
        if found is not None and found.resolve() != (CONFIGS_DIR / str(path)).resolve():
            # The run id hashed the path as written. The saved config.yaml and the record get
            # one that resolves from the run folder too (a packaged file keeps its short name:
            # it is found among the packaged configs from anywhere).
            namespace["task_overrides"] = str(found.resolve())

    def default_callbacks(self) -> list[Callback]:
        """Skipped-sample counts and per-task prediction panels."""
        return [*super().default_callbacks(), PredictionPanels()]

    def finished_config(self, model: L.LightningModule) -> dict[str, Any]:
        """The fingerprint of the tested encoder weights (those transfers will load).

        A transfer records the fingerprint of the weights it read, so a run trained further
        under the same run id later is told apart (its transfers become stale).
        """
        if not isinstance(model, TaskModule):
            return {}
        return {ENCODER_FINGERPRINT_KEY: weights_fingerprint(model.encoder)}

    def prepare_fit(self, model: L.LightningModule, datamodule: Any,
                    ckpt_path: str | None) -> None:
        """Resolve ``class_weights: auto`` (:func:`resolve_class_weights`) and print them.

        The concrete list replaces ``auto`` in the model's hyper-parameters (so checkpoints and
        ``self`` baselines carry it) and in the config the run record and ``config.yaml`` get.
        """
        if not isinstance(model, TaskModule) or not model.class_weights_pending:
            return
        weights, origin = resolve_class_weights(model, datamodule, ckpt_path,
                                                self.class_count_samples,
                                                progress=self.trainer.is_global_zero)
        self.set_model_option("class_weights", weights)
        _announce(f"class weights of {model.spec.name} ({origin}): "
                  f"[{', '.join(f'{w:.4g}' for w in weights)}]")


def run_cli(argv: Sequence[str] | None = None) -> TrainCLI:
    """Parse ``argv`` (``fit --config ... --model.task=...``) and run it; raises on failure."""
    with warnings.catch_warnings():
        # The console script passes its own argv on; LightningCLI warns when sys.argv is set too.
        warnings.filterwarnings("ignore", message="LightningCLI's args parameter")
        return TrainCLI(task_model, TaskonomyDataModule,
                        args=list(sys.argv[1:] if argv is None else argv))


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``taskonomy train`` (exit statuses: :func:`run_main`)."""
    return run_main(run_cli, argv)
