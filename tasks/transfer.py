"""Transfers: frozen source encoders read out into a target (``TransferTask``), and baselines.

A transfer for target t from sources S (order |S| = 1..4, or longer beam chains):

1. each source's encoder is taken from its finished task run (found through the run records of
   ``task_runs``; the record names the checkpoint), frozen and kept in eval mode
   (:mod:`taskonomy.tasks.source_runs`);
2. the sources' representations of the image (``B×8×h×w`` each; each encoder reads the image
   as its task did: colorization's the L channel, denoising's a noisy copy, inpainting's one
   with the centre blanked, as the authors extracted representations through each source's own
   input step) are concatenated channel-wise (``8·|S|`` channels);
3. the paper's readout (:class:`~taskonomy.tasks.networks.readout.TransferReadout`) maps them to
   16 channels, and a freshly initialized copy of t's head (``make_head(16)`` of t's family)
   predicts t; multi-view targets apply the readout per view with shared weights;
4. t's loss, metrics and per-image test losses are used unchanged. For the authors' cGAN targets
   the transfer objective also had a 0.004-weighted GAN term against a discriminator that is
   never trained; it is left out here (the comparison, win rates and affinities, uses the task
   loss only, as the authors' did).

The same module runs the baselines (``kind``): ``pixels`` (a small from-scratch network instead
of frozen sources, reading t's own input as the authors' side encoder did: denoising's noisy
image), ``random`` (the readout on a random frozen encoder) and ``self`` (t's own task network,
evaluated only). With ``cache_dir`` set, representations come from the
representation cache (:mod:`taskonomy.tasks.representations`) by sample key.

With the cache on and a :class:`~taskonomy.datamodules.datamodule.TaskonomyDataModule`, a
transfer does not read images at all once the cache holds its samples: ``setup`` fills the
cache by one image-only pass over the stage's samples (skipped when an earlier run filled it;
the first target of a source pays, the next ones do not), then switches the datamodule to
cached inputs, so the ``rgb`` shards are never opened and batches carry only keys and labels.
Targets whose labels are the image (autoencoding, denoising) keep reading it; the ``pixels``
and ``self`` baselines read their own inputs and never use the cache.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterable, Iterator
from typing import Any, cast

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_info
from torch import nn
from torchmetrics import Metric

from taskonomy.analysis.records import (
    RunRecord,
    other_weights,
)
from taskonomy.datamodules.datamodule import TaskonomyDataModule
from taskonomy.tasks.baselines import (
    PixelsEncoder,
    freeze,
    load_checkpoint,
    random_encoder,
    random_fingerprint,
)
from taskonomy.tasks.build import build_task, family_class
from taskonomy.tasks.families.base import (
    TaskModule,
    check_finite_loss,
    gather_per_image_losses,
    per_variable_clip,
    per_view,
    seed_rank,
    settle_finite_losses,
    store_per_image_losses,
    uses_class_weights,
)
from taskonomy.tasks.losses import Reduction
from taskonomy.tasks.metrics import labelled_images, log_loss, loss_means
from taskonomy.tasks.networks.encoders import (
    REPRESENTATION_CHANNELS,
    representation_shape,
)
from taskonomy.tasks.networks.readout import TransferReadout
from taskonomy.tasks.optimizers import adam, restore_adam_implementation
from taskonomy.tasks.pretrained import IMPORTED_KEY, has_released_decoder, imported_without_head
from taskonomy.tasks.registry import get_spec
from taskonomy.tasks.representations import (
    RepresentationCache,
    RepresentationStore,
    weights_fingerprint,
)
from taskonomy.tasks.schedules import (
    check_milestone,
    resync_learning_rates,
    run_steps,
    step_decay,
    upgrade_scheduler_states,
)
from taskonomy.tasks.source_runs import (
    FrozenSource,
    find_task_runs,
    latest_task_run,
    load_source,
    resolve_checkpoint,
    run_class_weights,
)
from taskonomy.tasks.specs import TaskSpec, metric_key
from taskonomy.tasks.transfer_identity import TransferIdentity, resolve_identity

#: The encoder of CPU settings, used to build the (encoder-less) loss module of a target.
_LOSS_MODULE_ENCODER = "resnet10_tiny"

#: Datamodule roles whose samples a stage reads (what ``setup`` fills the cache with).
STAGE_ROLES = {"fit": ("train", "val"), "validate": ("val",), "test": ("test",)}

#: Weight decay of first-order transfers and of higher orders / ``pixels`` (spec §3.6).
FIRST_ORDER_WEIGHT_DECAY = 1e-5
HIGHER_ORDER_WEIGHT_DECAY = 1e-6



#: Checkpoint entry naming the task runs a transfer's readout was trained on.
SOURCE_RUNS_KEY = "taskonomy_source_runs"


# --------------------------------------------------------------------------- the module
@contextlib.contextmanager
def _own_hyperparameters() -> Iterator[None]:
    """Let inner LightningModules record their own hyper-parameters.

    LightningCLI hands the outer model's config to every ``save_hyperparameters`` call made
    while the outer model is built (a context variable); the target's family module and the
    ``self`` network built inside a :class:`TransferTask` would otherwise record the transfer's
    arguments as theirs (and read wrong decoder widths, class weights, ...).
    """
    from lightning.pytorch.core.mixins.hparams_mixin import _given_hyperparameters

    token = _given_hyperparameters.set(None)
    try:
        yield
    finally:
        _given_hyperparameters.reset(token)




class TransferTask(L.LightningModule):
    """A transfer (frozen sources → readout → fresh target head) or a baseline of a target.

    Args:
        target: The target task.
        sources: Source tasks (``kind="transfer"``); their finished task runs are looked up in
            ``task_runs``. Order = number of sources. A baseline name as the only source
            (``[pixels]``) selects that baseline, so a sweep can grid over target × sources.
        kind: ``transfer``, ``pixels``, ``random`` or ``self`` (see the module docstring).
        transfer: Alternative spelling of target and sources, ``"target:src+src"``; a baseline
            name as the only source selects that kind (``"normal:pixels"``). Sweep files use it
            for explicit (target, sources) combinations.
        task_runs: Runs folder holding the task runs of the sources (and of the target for
            ``self``); the CLI defaults it to the run's own runs folder.
        cache_dir: Representation cache folder (``None``: encode every batch).
        encoder: Encoder architecture the sources must have (``None``: whatever they have); the
            ``random`` baseline builds this architecture (default ``resnet50``).
        resolution: Input resolution of the transfer data (the sources' training resolution).
        decoder_width: Channel multiplier of the target's fresh dense decoder.
        head_width: Width multiplier of the target's fresh FC head.
        lr: Adam learning rate (the authors': the target's, 1e-4).
        weight_decay: L2 on weights; ``None``: 1e-5 for first order and ``random``, 1e-6 for
            higher orders and ``pixels`` (the authors' values).
        lr_milestone: Step of the ×``lr_gamma`` LR drop (5,000 in the paper), or a fraction in
            (0, 1) of the run's steps; ``None`` keeps the LR constant.
        lr_gamma: Factor of the LR drop.
        random_seed: Seed of the ``random`` baseline's encoder.
        target_options: Extra options of the target's family (e.g. ``class_weights``).
    """

    def __init__(
        self,
        target: str | None = None,
        sources: list[str] | None = None,
        kind: str = "transfer",
        transfer: str | None = None,
        task_runs: str | None = None,
        cache_dir: str | None = None,
        encoder: str | None = None,
        resolution: int = 256,
        decoder_width: float = 1.0,
        head_width: float = 1.0,
        lr: float = 1e-4,
        weight_decay: float | None = None,
        lr_milestone: int | float | None = 5_000,
        lr_gamma: float = 0.1,
        random_seed: int = 0,
        target_options: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        # Kept in checkpoints; W&B gets the run's whole config from its record instead.
        self.save_hyperparameters(logger=False)
        identity = resolve_identity(target, sources, kind, transfer)
        target = identity.target
        kind = "transfer" if identity.role == "transfer" else identity.sources[0]
        source_list = list(identity.sources) if kind == "transfer" else []
        self.target = target
        self.kind = kind
        self.spec: TaskSpec = get_spec(target)
        if not self.spec.target:
            raise ValueError(
                f"task {target!r} is source-only (the paper never reads out into it); "
                "choose a target task (`taskonomy tasks` lists their roles)"
            )
        representation_shape(resolution)
        if lr <= 0:
            raise ValueError(f"lr must be positive, got {lr}")
        check_milestone(lr_milestone)
        self.source_names = tuple(source_list)
        self.resolution = resolution
        self.multi_view = self.spec.views > 1
        self.strict_loading = False  # frozen sources are rebuilt from their runs, not stored
        runs = task_runs
        if kind in ("transfer", "self") and runs is None:
            raise ValueError(
                f"a {kind!r} run needs the folder of the task runs: set --model.task_runs "
                "(the CLI sets it to --runs_dir by default)"
            )
        self.cache = RepresentationCache(cache_dir) if cache_dir else None
        #: Whether the datamodule was switched to cached inputs (batches without images).
        self.cached_inputs = False
        with _own_hyperparameters():
            self._build(kind, target, source_list, runs, encoder, resolution, decoder_width,
                        head_width, lr, random_seed, target_options)
        self.weight_decay = self._default_weight_decay() if weight_decay is None else weight_decay
        #: Per-image test task losses, keyed by sample key (filled by ``test_step``).
        self.test_per_image_losses: dict[str, float] = {}

    def _build(self, kind: str, target: str, source_list: list[str], runs: str | None,
               encoder: str | None, resolution: int, decoder_width: float, head_width: float,
               lr: float, random_seed: int, target_options: dict[str, Any] | None) -> None:
        self.sources = nn.ModuleList()
        self.readout: nn.Module | None = None
        self.pixels: PixelsEncoder | None = None
        self.network: TaskModule | None = None
        #: The checkpoint of the target's task network (``self`` baseline only).
        self.network_checkpoint: str | None = None
        #: The task run of that network (``self`` baseline only).
        self.network_run: str | None = None
        #: Its encoder's weight fingerprint (``self`` baseline only).
        self.network_fingerprint = ""
        if kind == "self":
            record = find_task_runs(cast(str, runs), [target], resolution=resolution,
                                    encoder=encoder)[target]
            self.network_run = record.run_id
            if imported_without_head(record):
                fix = ("import it again with its decoder file (`taskonomy weights import "
                       "ENCODER DECODER`) or train the task" if has_released_decoder(self.spec)
                       else "the authors released no decoder of it: train the task")
                raise ValueError(
                    f"the task run {record.run_id!r} of {target!r} was imported without its "
                    f"decoder, so its head is untrained and cannot be the `self` baseline; {fix}"
                )
            self.network = self._load_task_network(record, cast(str, runs))
            self.network_fingerprint = weights_fingerprint(self.network.encoder)
            loss_module: TaskModule = self.network
            self.head: nn.Module = nn.Identity()
        else:
            options = dict(target_options or {})
            if uses_class_weights(self.spec) and "class_weights" not in options and runs:
                # Per-image losses are compared with the target's own network (``self``): a
                # class-weighted target must be scored with the weights its task run used.
                task_run = latest_task_run(runs, target, resolution=resolution,
                                            encoder=encoder)
                weights = run_class_weights(task_run, resolution=resolution, encoder=encoder)
                if task_run is None:
                    warnings.warn(
                        f"target {target!r} is class-weighted, but {runs} holds no finished "
                        "task run of it to take the weights from: this run's loss is "
                        "unweighted and its per-image losses will not compare with a weighted "
                        "`self` baseline; train the target's task run first",
                        stacklevel=2,
                    )
                elif (weights is None and task_run is not None
                      and IMPORTED_KEY in task_run.config
                      and not task_run.config.get("model", {}).get("class_weights")):
                    warnings.warn(
                        f"target {target!r} is class-weighted, but its task run "
                        f"{task_run.run_id!r} was imported without class weights: this run's "
                        "loss is unweighted, unlike the authors'; import it again with "
                        "--class_weights FILE (their semseg_prior_factor.npy)",
                        stacklevel=2,
                    )
                if weights is not None:
                    options["class_weights"] = weights
                    self.hparams["target_options"] = options  # the record carries them
            loss_module = build_task(
                target, encoder=_LOSS_MODULE_ENCODER, resolution=resolution,
                decoder_width=decoder_width, head_width=head_width, lr=lr, **options,
            )
            if kind == "transfer":
                records = find_task_runs(cast(str, runs), source_list, resolution=resolution,
                                         encoder=encoder)
                for name in source_list:
                    self.sources.append(load_source(records[name], cast(str, runs),
                                                    resolution=resolution, encoder=encoder))
            elif kind == "random":
                arch = encoder or "resnet50"
                network = random_encoder(arch, 3, random_seed)
                # Not named after the target: it reads the plain image whatever the target reads.
                self.sources.append(FrozenSource(get_spec(target).replace(name="random_encoder",
                                                                          input_channels=3),
                                                 network, f"random-{arch}-seed{random_seed}",
                                                 random_fingerprint(network, arch, random_seed)))
            if kind == "pixels":
                self.pixels = PixelsEncoder(resolution)
            else:
                self.readout = TransferReadout(REPRESENTATION_CHANNELS * len(self.sources))
            self.head = loss_module.make_head(16)
            # Only the loss and metric logic of the target's module is used.
            loss_module.encoder = nn.Identity()
            loss_module.head = nn.Identity()
        # Not a submodule: its weights are either unused or already registered as `network`.
        self._loss_holder = [loss_module]
        self.clip_norm = loss_module.clip_norm
        self.val_metrics = nn.ModuleDict(loss_module.build_metrics())
        self.test_metrics = nn.ModuleDict(loss_module.build_metrics())
        self.loss_means = loss_means()

    # ----------------------------------------------------------------- identity
    @property
    def identity(self) -> TransferIdentity:
        """Role, target and sorted sources for this run's record."""
        if self.kind == "transfer":
            return TransferIdentity("transfer", self.target, tuple(sorted(self.source_names)))
        return TransferIdentity("baseline", self.target, (self.kind,))

    @property
    def order(self) -> int:
        """Number of sources (0 for baselines)."""
        return len(self.source_names)

    @property
    def loss_module(self) -> TaskModule:
        """The target's family module whose loss and metrics this run uses."""
        return self._loss_holder[0]

    def _default_weight_decay(self) -> float:
        if self.kind == "pixels" or self.order > 1:
            return HIGHER_ORDER_WEIGHT_DECAY
        return FIRST_ORDER_WEIGHT_DECAY

    def _load_task_network(self, record: RunRecord, runs: str) -> TaskModule:
        path = resolve_checkpoint(record, runs)
        self.network_checkpoint = str(path)
        data = load_checkpoint(path, f"target {record.target!r} (task run {record.run_id!r})")
        hparams = dict(data["hyper_parameters"])
        if hparams.get("resolution") != self.resolution:
            raise ValueError(
                f"the task run {record.run_id!r} of {record.target!r} was trained at resolution "
                f"{hparams.get('resolution')}; evaluate it at that resolution "
                f"(--model.resolution={hparams.get('resolution')})"
            )
        hparams.pop("task", None)
        network = family_class(record.target)(task=record.target, **hparams)
        try:
            network.load_state_dict(data["state_dict"], strict=True)
        except RuntimeError as error:
            raise ValueError(
                f"checkpoint {path} of task run {record.run_id!r} does not fit its declared "
                f"architecture ({' '.join(str(error).split())[:400]}); retrain it"
            ) from error
        return cast(TaskModule, freeze(network))

    # ----------------------------------------------------------------- representations
    def images(self, batch: dict[str, Any]) -> torch.Tensor:
        """The images a batch's representations are made of (``B×3×H×W`` or ``B×V×3×H×W``)."""
        images = self._batch_images(batch)
        if images is None:
            own = self.multi_view or self.pixels is not None
            what = f"'{self.target}'/'input'" if own else "'rgb'"
            raise KeyError(
                f"transfer batches need the images under {what} (batch contract); batches "
                "without images can only be read out of a filled representation cache"
            )
        return images

    def _batch_images(self, batch: dict[str, Any]) -> torch.Tensor | None:
        # Multi-view targets' views, and the pixels baseline's input: the target's own, as the
        # authors' side encoder read it (denoising's noisy image).
        if self.multi_view or self.pixels is not None:
            return cast(torch.Tensor | None, self._task_batch(batch).get("input"))
        return cast(torch.Tensor | None, batch.get("rgb"))

    def _split(self, stage: str) -> str:
        """The cache's name of the data a stage reads: its split and a hash of its images."""
        datamodule = getattr(self._trainer, "datamodule", None) if self._trainer else None
        if isinstance(datamodule, TaskonomyDataModule) and datamodule.splits.get(stage):
            return datamodule.images_identity(stage)
        splits = getattr(datamodule, "splits", None)
        if isinstance(splits, dict) and splits.get(stage):
            return str(splits[stage])
        return stage

    def _store(self, source: FrozenSource, split: str, kind: str = "rgb") -> RepresentationStore:
        assert self.cache is not None
        return self.cache.store(source.run_id, split, kind, self.resolution, source.fingerprint,
                                source)

    def _cache_lookup(self, batch: dict[str, Any], images: torch.Tensor | None
                      ) -> tuple[list[str], str, torch.Tensor | None, tuple[int, int] | None]:
        """Cache keys, input kind, matching encoder inputs and the views' shape of a batch.

        One key per image: the sample key, or for multi-view batches each view's own key
        (``view_index`` picks them from the ``+``-joined unit key), so a view is encoded once
        whatever unit or target it appears in. Multi-view batches without ``view_index`` fall
        back to whole units under their own input kind.
        """
        keys = [str(k) for k in batch["__key__"]]
        if not self.multi_view:
            return keys, "rgb", images, None
        index = self._task_batch(batch).get("view_index")
        if index is None:
            return keys, f"views-{self.target}", images, None
        view_keys: list[str] = []
        for unit, positions in zip(keys, index.tolist(), strict=True):
            parts = unit.split("+")
            if max(positions) >= len(parts):
                raise ValueError(f"unit key {unit!r} has no view at positions {positions}")
            view_keys.extend(parts[i] for i in positions)
        shape = (len(keys), index.shape[1])
        return view_keys, "rgb", None if images is None else images.flatten(0, 1), shape

    def frozen_representation(self, batch: dict[str, Any], stage: str) -> torch.Tensor:
        """The sources' concatenated representation of a batch (through the cache if set).

        Batches without images (cached inputs) are served from the cache alone.
        """
        images = self._batch_images(batch)
        if self.cache is None:
            images = self.images(batch)
            return torch.cat([source(images) for source in self.sources], dim=-3)
        keys, kind, inputs, views = self._cache_lookup(batch, images)
        if inputs is None and kind != "rgb":
            self.images(batch)  # unit-keyed multi-view batches must bring their images
        parts = []
        for source in self.sources:
            store = self._store(cast(FrozenSource, source), self._split(stage), kind)
            part = store.take(keys, self.device) if inputs is None else store.get(keys, inputs)
            parts.append(part if views is None else part.unflatten(0, views))
        return torch.cat(parts, dim=-3)

    # ----------------------------------------------------------------- cached inputs
    def setup(self, stage: str) -> None:
        """Fill the cache for the stage's samples, then let the datamodule leave images out.

        Only with the cache on, frozen sources (a transfer or ``random``) and a
        :class:`TaskonomyDataModule`; otherwise representations are cached lazily per batch.
        """
        trainer = self._trainer
        datamodule = getattr(trainer, "datamodule", None) if trainer is not None else None
        if self.cache is None or not len(self.sources) or not isinstance(
                datamodule, TaskonomyDataModule):
            return
        cached: dict[str, set[str]] = {}
        for role in STAGE_ROLES.get(stage, ()):
            split = datamodule.splits.get(role)
            if split is None or (role == "val" and trainer is not None
                                 and trainer.limit_val_batches == 0):
                continue
            cached.setdefault(split, set()).update(self.fill_cache(datamodule, role))
        if cached:
            self.cached_inputs = datamodule.use_cached_inputs(cached)

    def teardown(self, stage: str) -> None:
        """Give the datamodule its images back (it may serve an uncached model next)."""
        datamodule = getattr(self._trainer, "datamodule", None) if self._trainer else None
        if self.cached_inputs and isinstance(datamodule, TaskonomyDataModule):
            datamodule.use_cached_inputs(None)
        self.cached_inputs = False

    def fill_cache(self, datamodule: TaskonomyDataModule, role: str) -> list[str]:
        """Encode what the cache lacks of a role's samples, for every source.

        Reads only the ``rgb`` shards that hold a missing key, once, whatever the number of
        sources; a no-op when the cache holds every key. Under DDP each rank encodes its share
        of the shards and then takes in what the others saved.

        Returns:
            The role's keys now cached for every source (a key whose image cannot be read is
            left out; its sample is skipped as it would be without the cache).
        """
        split = cast(str, datamodule.splits[role])
        wanted = datamodule.role_keys(role)
        stores = [self._store(cast(FrozenSource, s), datamodule.images_identity(role))
                  for s in self.sources]
        missing = list(dict.fromkeys(k for store in stores for k in store.missing(wanted)))
        if missing:
            self._encode(datamodule.image_dataloader(role, missing), stores,
                         f"encoding {len(stores)} source(s) of {len(missing)} {split} images",
                         len(missing))
            for store in stores:
                store.save()
        trainer = self._trainer
        if trainer is not None and trainer.world_size > 1:
            trainer.strategy.barrier("representation cache filled")
            for store in stores:
                store.reload()
        return [k for k in wanted if all(k in store for store in stores)]

    def _encode(self, loader: Iterable[dict[str, Any]], stores: list[RepresentationStore],
                description: str, total: int) -> None:
        from rich.progress import Progress

        trainer = self._trainer
        device = trainer.strategy.root_device if trainer is not None else self.device
        self.sources.to(device)  # setup runs before the Trainer moves the module
        context = (trainer.precision_plugin.forward_context() if trainer is not None
                   else contextlib.nullcontext())
        show = trainer is None or (trainer.is_global_zero
                                   and trainer.progress_bar_callback is not None)
        with Progress(transient=True, disable=not show) as progress, context, torch.no_grad():
            bar = progress.add_task(description, total=total)
            for batch in loader:
                images = batch["rgb"].to(device)
                keys = [str(k) for k in batch["__key__"]]
                for store in stores:
                    store.get(keys, images)
                progress.advance(bar, len(keys))

    def _per_view(self, module: nn.Module, x: torch.Tensor) -> torch.Tensor:
        return per_view(module, x)  # multi-view: shared weights, statistics per view

    def predict_batch(self, batch: dict[str, Any], stage: str) -> torch.Tensor:
        """The target prediction of a batch."""
        if self.network is not None:
            return cast(torch.Tensor, self.network(self._task_batch(batch)["input"]))
        if self.pixels is not None:
            features = self._per_view(self.pixels, self.images(batch))
        else:
            assert self.readout is not None
            features = self._per_view(self.readout, self.frozen_representation(batch, stage))
        return cast(torch.Tensor, self.head(features))

    def predict_images(self, images: torch.Tensor) -> torch.Tensor:
        """The target prediction from images alone (no cache; ``self`` reads its own input)."""
        if self.network is not None:
            return cast(torch.Tensor, self.network(images))
        if self.pixels is not None:
            features = self._per_view(self.pixels, images)
        else:
            assert self.readout is not None
            parts = [source(images) for source in self.sources]
            features = self._per_view(self.readout, torch.cat(parts, dim=-3))
        return cast(torch.Tensor, self.head(features))

    def forward(self, x: torch.Tensor | dict[str, Any]) -> torch.Tensor:
        """The target prediction of a batch dict (datamodule contract) or of images.

        Images are what :meth:`images` returns for a batch (``B×3×H×W`` RGB in [-1,1], or
        ``B×V×3×H×W`` for multi-view targets); prediction panels call this form.
        """
        if isinstance(x, dict):
            return self.predict_batch(x, "test")
        return self.predict_images(x)

    # ----------------------------------------------------------------- steps
    def _task_batch(self, batch: dict[str, Any]) -> dict[str, Any]:
        if self.target not in batch:
            raise KeyError(
                f"batch has no entry for target {self.target!r} (keys: {sorted(batch)}); the "
                "datamodule must be configured with tasks=[target]"
            )
        return cast(dict[str, Any], batch[self.target])

    def _loss(self, prediction: torch.Tensor, batch: dict[str, Any], reduction: str,
              keys: list[str] | None = None) -> torch.Tensor:
        module = self.loss_module
        if module is not self.network:
            module.train(self.training)  # losses sample pixels differently in train and eval
        return module.compute_loss(prediction, self._task_batch(batch),
                                   cast(Reduction, reduction), keys=keys)

    def _check_finite(self, loss: torch.Tensor, stage: str) -> None:
        check_finite_loss(self, loss, stage, f"transfer into {self.target!r}")

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        """One optimization step of the readout and head (or the pixels network)."""
        if self.kind == "self":
            raise RuntimeError("the 'self' baseline is evaluated only; run `test`, not `fit`")
        prediction = self.predict_batch(batch, "train")
        loss = self._loss(prediction, batch, "mean")
        self._check_finite(loss, "train")
        log_loss(self, "train", loss, prediction.shape[0])
        return loss

    def _eval_step(self, batch: dict[str, Any], stage: str) -> tuple[torch.Tensor, torch.Tensor]:
        keys = [str(k) for k in batch.get("__key__", [])] or None
        prediction = self.predict_batch(batch, stage)
        per_image = self._loss(prediction, batch, "none", keys)
        loss = self._loss(prediction, batch, "mean", keys)
        self._check_finite(loss, stage)
        size = prediction.shape[0]
        log_loss(self, stage, loss, size, labelled_images(self._task_batch(batch), size))
        metrics = self.val_metrics if stage == "val" else self.test_metrics
        for name, module in metrics.items():
            metric = cast(Metric, module)
            metric.update(prediction, self._task_batch(batch))
            self.log(metric_key(stage, name), metric, on_step=False, on_epoch=True,
                     batch_size=size)
        return per_image, loss

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        """Loss and metrics on a validation batch."""
        return self._eval_step(batch, "val")[1]

    def on_test_epoch_start(self) -> None:
        """Start a fresh collection of per-image losses."""
        self.test_per_image_losses = {}

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        """Loss and metrics on a test batch; collects per-image losses by sample key."""
        per_image, loss = self._eval_step(batch, "test")
        store_per_image_losses(self.test_per_image_losses, batch.get("__key__"), per_image,
                               f"transfer into {self.target!r}")
        return loss

    def on_test_epoch_end(self) -> None:
        """Save new representations, stop on a non-finite test loss, merge per-image losses.

        Per-image losses are merged across DDP ranks; the stop is decided on all of them.
        """
        self._save_cache()
        settle_finite_losses(self, "test")
        self.test_per_image_losses = gather_per_image_losses(self.test_per_image_losses)

    def on_train_epoch_end(self) -> None:
        """Save the representations first seen in this epoch."""
        self._save_cache()

    def on_validation_epoch_end(self) -> None:
        """Save the representations first seen in this pass; stop on a non-finite loss."""
        self._save_cache()
        settle_finite_losses(self, "val")

    def on_fit_end(self) -> None:
        """Say how many representations the cache served and how many were encoded."""
        self._report_cache("fit")

    def on_test_end(self) -> None:
        """Say how many representations the cache served and how many were encoded."""
        self._report_cache("test")

    def _save_cache(self) -> None:
        if self.cache is not None:
            self.cache.save()

    def _report_cache(self, stage: str) -> None:
        if self.cache is not None:  # counts are cumulative over this process
            rank_zero_info(
                f"representation cache after {stage}: {self.cache.hits} representations "
                f"served from {self.cache.root}, {self.cache.misses} encoded"
            )

    def predict_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, Any]:
        """Predictions of a batch with the sample keys."""
        return {"__key__": batch.get("__key__"), "prediction": self.predict_batch(batch, "test")}

    # ----------------------------------------------------------------- optimization
    def trainable_parameters(self) -> list[nn.Parameter]:
        """Parameters the transfer trains: readout (or pixels network) and head."""
        modules = [m for m in (self.readout, self.pixels, self.head) if m is not None]
        return [p for m in modules for p in m.parameters() if p.requires_grad]

    def configure_optimizers(self) -> Any:
        """Adam (L2 on weights only) with a ×``lr_gamma`` drop at ``lr_milestone``."""
        params = self.trainable_parameters()
        if not params:
            raise ValueError("the 'self' baseline has nothing to train; run `test`, not `fit`")
        optimizer = adam(params, self.hparams["lr"], self.weight_decay, self._trainer)
        decay = step_decay(optimizer, self.hparams["lr_milestone"], self.hparams["lr_gamma"],
                           lambda: run_steps(self._trainer))
        return {"optimizer": optimizer, "lr_scheduler": decay} if decay else optimizer

    def configure_gradient_clipping(
        self,
        optimizer: torch.optim.Optimizer,
        gradient_clip_val: float | int | None = None,
        gradient_clip_algorithm: str | None = None,
    ) -> None:
        """The target's per-variable clipping (e.g. room layout), then the Trainer's."""
        if self.clip_norm:
            per_variable_clip(self.trainable_parameters(), self.clip_norm)
        self.clip_gradients(optimizer, gradient_clip_val, gradient_clip_algorithm)

    @property
    def source_runs(self) -> dict[str, dict[str, str]]:
        """Each frozen source's task run and weight fingerprint, by source task.

        For the ``self`` baseline, the target's task run it evaluates (and its encoder's); for
        ``random``, its encoder's recipe under ``random_encoder`` (no task run).
        """
        if self.network_run is not None:
            return {self.target: {"run_id": self.network_run,
                                  "fingerprint": self.network_fingerprint}}
        return {cast(FrozenSource, source).spec.name: {
                    "run_id": cast(FrozenSource, source).run_id,
                    "fingerprint": cast(FrozenSource, source).fingerprint}
                for source in self.sources}

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Leave frozen sources out of checkpoints (their task runs hold them); name them."""
        state = checkpoint.get("state_dict", {})
        for key in [k for k in state if k.startswith(("sources.", "network."))]:
            del state[key]
        checkpoint[SOURCE_RUNS_KEY] = self.source_runs

    def on_train_start(self) -> None:
        """The schedule's rates for the current step; each DDP rank's own random stream.

        A resumed run's rates may differ from its checkpoint's (the config's schedule wins).
        """
        resync_learning_rates(self.lr_schedulers())
        seed_rank(self)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Refuse to resume a readout on source weights other than those it was trained on.

        Raises:
            ValueError: A source task was retrained since (another run, or changed weights).
        """
        upgrade_scheduler_states(checkpoint)
        if type(self).configure_optimizers is TransferTask.configure_optimizers:  # our Adam
            restore_adam_implementation(checkpoint, self._trainer, self.trainable_parameters())
        saved = checkpoint.get(SOURCE_RUNS_KEY)
        if saved is None:  # a checkpoint from before sources were named
            return
        changed = [f"{task} (trained on {saved[task]['run_id']}, now {now['run_id']}"
                   + ("" if saved[task]["run_id"] != now["run_id"] else ", whose weights changed")
                   + ")" for task, now in self.source_runs.items()
                   if task in saved and _other_weights(saved[task], now)]
        if changed:
            raise ValueError(
                "this transfer's checkpoint was trained on other source weights than the latest "
                f"finished task runs: {', '.join(changed)}. Its readout does not fit the new "
                "encoders: delete the run folder's checkpoints/ to train it again from scratch, "
                "or give the run another --run_id"
            )


def _other_weights(saved: dict[str, str], now: dict[str, str]) -> bool:
    """Whether a source's weights differ from those a checkpoint was trained on.

    Another task run, or the same one with other weights (:func:`other_weights`).
    """
    was, is_now = str(saved.get("fingerprint") or ""), str(now.get("fingerprint") or "")
    # A random encoder's fingerprint names its recipe and weights: any difference is a change.
    random_source = was.startswith("random|") or is_now.startswith("random|")
    return (saved.get("run_id") != now.get("run_id") or other_weights(was, is_now)
            or (random_source and was != is_now))

