"""The base LightningModule of every task family.

A :class:`TaskModule` is configured by a task name (looked up in the registry) and plain options,
so ``LightningCLI`` can build it from ``--model.task=normal``. It owns an encoder (16×-downsampled,
8-channel representation) and a family-specific head, and implements the training loop the
authors used: Adam at 1e-4, L2 weight decay on weights, LR ×0.1 at a step milestone, optional
per-variable gradient clipping, and an optional cGAN term (0.996·L_task + 0.004·L_GAN after a
warm-up of task-loss-only steps; 0.99/0.01 for colorization, whose discriminator judges the
recoloured image).

Batches follow the datamodule contract: ``batch[task]`` holds ``"input"``, ``"target"`` and
optionally ``"mask"``; ``batch["__key__"]`` the sample keys. At test time the per-image task losses
are collected in :attr:`TaskModule.test_per_image_losses`, keyed by sample key.
"""

from __future__ import annotations

import math
import weakref
from collections.abc import Sequence
from pathlib import Path
from typing import Any, cast

import lightning as L
import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torchmetrics import Metric

from taskonomy.tasks.losses import Reduction, gan_discriminator_loss, gan_generator_loss
from taskonomy.tasks.metrics import (
    LOG_DEPTH_TASKS,
    build_metrics,
    labelled_images,
    log_loss,
    loss_means,
)
from taskonomy.tasks.networks.discriminator import Pix2PixDiscriminator
from taskonomy.tasks.networks.encoders import (
    ENCODER_LAYOUT,
    ENCODER_LAYOUT_KEY,
    build_encoder,
    representation_shape,
)
from taskonomy.tasks.optimizers import (
    adam,
    l2_on_weights,
    restore_adam_implementation,
    set_l2_on_weights,
)
from taskonomy.tasks.registry import get_spec
from taskonomy.tasks.schedules import (
    check_milestone,
    resync_learning_rates,
    run_steps,
    step_decay,
    upgrade_scheduler_states,
)
from taskonomy.tasks.specs import TaskSpec, metric_key

#: Value of the ``class_weights`` option that asks the training CLI to count them.
AUTO_CLASS_WEIGHTS = "auto"
#: Task losses (``TaskSpec.loss``) that take per-class weights.
CLASS_WEIGHTED_LOSSES = frozenset({"weighted_cross_entropy"})


class NonFiniteLossError(FloatingPointError):
    """A task loss became NaN or infinite; the message names the task, stage and step."""


class NonFiniteLossElsewhereError(NonFiniteLossError):
    """Another DDP rank's loss became NaN or infinite (that rank's error names it)."""


#: The first non-finite evaluation loss of a module's current pass (see check_finite_loss).
_NONFINITE_EVAL: weakref.WeakKeyDictionary[L.LightningModule, str] = weakref.WeakKeyDictionary()


def per_view(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """A shared-weight tower over the views of ``B×V×…`` inputs (``B×…`` inputs pass through).

    In training each view is a pass of its own, as the authors called their tower once per view:
    batch-norm statistics (and the transfer readout's clip moments) are taken over the B samples
    of one view, and running averages move once per view. In evaluation, where the statistics
    are fixed, the views go through as one batch (the same result, faster).
    """
    if x.ndim != 5:
        return cast(torch.Tensor, module(x))
    b, v = x.shape[:2]
    if module.training:
        return torch.stack([cast(torch.Tensor, module(x[:, i])) for i in range(v)], dim=1)
    return cast(torch.Tensor, module(x.flatten(0, 1))).unflatten(0, (b, v))


def _any_rank(module: L.LightningModule, flag: bool) -> bool:
    trainer = module._trainer
    if trainer is None or trainer.world_size <= 1:
        return flag
    return bool(trainer.strategy.reduce_boolean_decision(flag, all=False))


def check_finite_loss(module: L.LightningModule, loss: torch.Tensor, stage: str,
                      what: str) -> None:
    """Stop every DDP rank together when a loss is NaN or infinite.

    A rank that raised alone left the others waiting in their next collective (or had them
    killed), and the run record got a lost connection instead of the cause. Ranks take their
    training steps in step, so they decide at once; evaluation ranks may read different numbers
    of batches, so a bad evaluation loss is noted and decided at the end of the pass
    (:func:`settle_finite_losses`).

    Args:
        module: The module whose loss it is.
        loss: The loss of a batch.
        stage: ``train``, ``val`` or ``test``.
        what: The module named in the message (``task 'normal'``).

    Raises:
        NonFiniteLossError: A training loss is not finite on some rank.
    """
    finite = bool(torch.isfinite(loss).all())

    def message() -> str:  # only for a bad loss: reading it back costs a device sync
        return (f"{what}: {stage} loss is {loss.detach().float().cpu().tolist()} at step "
                f"{module.global_step} (epoch {module.current_epoch}); lower the learning rate "
                "or check the data for NaN values")

    if stage != "train":
        if not finite and module not in _NONFINITE_EVAL:
            _NONFINITE_EVAL[module] = message()
        return
    if _any_rank(module, not finite):
        if not finite:
            raise NonFiniteLossError(message())
        raise NonFiniteLossElsewhereError(
            f"{what}: train loss is not finite on another GPU at step {module.global_step}; "
            "lower the learning rate or check the data for NaN values")


def seed_rank(module: L.LightningModule) -> None:
    """Give each DDP rank its own random stream: dropout, instance noise, sampled pixels.

    Every rank is seeded alike before the networks are built (their first weights agree); left
    so, each sample slot of a step drew the same noise on every GPU. Rank 0 goes on with its
    stream; every other rank takes one seeded from (seed, rank) through a seed sequence, so it
    is not simply another seed's rank 0.
    """
    trainer = module._trainer
    if trainer is not None and trainer.world_size > 1 and trainer.global_rank > 0:
        state = np.random.SeedSequence([torch.initial_seed(), trainer.global_rank])
        torch.manual_seed(int(state.generate_state(1, np.uint64)[0]))


def settle_finite_losses(module: L.LightningModule, stage: str) -> None:
    """At the end of an evaluation pass: raise on every rank if one saw a non-finite loss.

    Raises:
        NonFiniteLossError: A ``stage`` loss of this pass was not finite on some rank.
    """
    message = _NONFINITE_EVAL.pop(module, None)
    if _any_rank(module, message is not None):
        if message is not None:
            raise NonFiniteLossError(message)
        raise NonFiniteLossElsewhereError(f"a {stage} loss was not finite on another GPU")


def uses_class_weights(spec: TaskSpec) -> bool:
    """Whether a task's loss is class-weighted, as in the paper.

    Semantic segmentation's per label; colorization's per pixel, by its arg-max ab bin (the
    prior boost).
    """
    return spec.loss in CLASS_WEIGHTED_LOSSES or (
        spec.family == "dense_classification" and spec.loss == "soft_cross_entropy")


def load_class_weights(path: str | Path) -> list[float]:
    """Per-class weights from a file: a ``.npy`` array or whitespace-separated text.

    The authors' ``semseg_prior_factor.npy`` (the 17 weights of semantic segmentation, in their
    repository's ``taskbank/lib/data/``) loads as it is. Their colorization prior
    (``prior_factor_in_door.npy``) follows the order of their ``pts_in_hull.npy`` bins, so it
    fits when the run's data uses those bins (``--data.ab_bins=pts_in_hull.npy``).

    Raises:
        ValueError: No such file (a misspelt option lands here too), or it holds no numbers.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(
            f"class_weights must be a list of per-class weights, {AUTO_CLASS_WEIGHTS!r}, or a "
            f".npy or text file of them; {str(path)!r} is no such file"
        )
    try:
        values = np.load(path) if path.suffix == ".npy" else np.loadtxt(path)
    except ValueError as error:
        raise ValueError(f"class_weights file {path} holds no array of numbers ({error})") from None
    return [float(v) for v in np.asarray(values, dtype=np.float64).reshape(-1)]


def check_class_weights(spec: TaskSpec, weights: Sequence[float]) -> list[float]:
    """``weights`` as a plain list after checking them against a task's classes.

    Raises:
        ValueError: Not one finite, non-negative weight per class of the task.
    """
    values = [float(w) for w in weights]
    if len(values) != spec.output_channels:
        raise ValueError(
            f"class_weights has {len(values)} values; task {spec.name!r} has "
            f"{spec.output_channels} classes"
        )
    if not all(math.isfinite(w) and w >= 0 for w in values):
        raise ValueError(
            f"class_weights of task {spec.name!r} must be finite and non-negative, got {values}"
        )
    return values


def per_variable_clip(parameters: Any, max_norm: float) -> None:
    """Clip each parameter's gradient to ``max_norm`` on its own (``tf.clip_by_norm`` per var)."""
    for p in parameters:
        if p.grad is not None:
            norm = p.grad.detach().norm()
            if norm > max_norm:
                p.grad.mul_(max_norm / (norm + 1e-6))


def store_per_image_losses(store: dict[str, float], keys: Any, per_image: torch.Tensor,
                           owner: str) -> None:
    """Add one test batch's per-image losses to ``store``, keyed by sample key.

    Raises:
        ValueError: the batch does not carry one ``__key__`` per sample.
    """
    if keys is None or len(keys) != len(per_image):
        raise ValueError(
            f"{owner}: test batches need one '__key__' per sample to key per-image losses; "
            "the datamodule must carry the sample keys"
        )
    for key, value in zip(keys, per_image.detach().float().cpu().tolist(), strict=True):
        store[str(key)] = value


def gather_per_image_losses(store: dict[str, float]) -> dict[str, float]:
    """All ranks' per-image losses merged (the store itself outside DDP)."""
    if not (dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
        return store
    gathered: list[dict[str, float] | None] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, store)
    merged: dict[str, float] = {}
    for part in gathered:
        merged.update(part or {})
    return merged


class TaskModule(L.LightningModule):
    """Base class of the task families: encoder + head, the task loss, metrics and loops.

    Args:
        task: Registered task name (``normal``, ``depth_zbuffer``, ...).
        encoder: Encoder name (``resnet50`` is the paper's; ``resnet18``, ``resnet10``,
            ``resnet10_tiny`` for CPU).
        resolution: Input resolution (a multiple of 16); FC heads are sized for it.
        decoder_width: Channel multiplier of the dense decoders (1.0 = the paper).
        head_width: Multiplier of the hidden widths of FC heads (1.0 = the paper).
        lr: Initial Adam learning rate.
        weight_decay: L2 weight decay on weights (not BN or biases); ``None`` takes the spec's.
        lr_milestone: Optimizer step at which the LR drops, or a fraction in (0, 1) of the run's
            steps (short CPU runs); ``None`` keeps it constant.
        lr_gamma: Factor of the LR drop.
        clip_norm: Per-variable gradient clip; ``None`` takes the family's default (1.0 for room
            layout and vanishing points, off otherwise); ``0`` disables it.
        gan: Add the cGAN term (dense regression tasks and colorization). Lightning then counts two
            optimizer steps per batch after the warm-up, as the authors' global step did: the
            LR milestone, the instance noise and ``trainer.max_steps`` count them; the paper
            setting bounds runs by epochs.
        gan_weight: Weight of the GAN term (the task loss gets ``1 − gan_weight``); ``None`` takes
            the paper's (0.01 for colorization, 0.004 otherwise).
        gan_warmup_steps: Generator steps on the task loss alone before the GAN term starts.
        gan_lr: SGD learning rate of the discriminator.
        gan_noise: Initial σ of the discriminator's instance noise; ``None`` takes the paper's
            (0.03 for depth and distance, 0.1 otherwise).
        class_weights: Per-class loss weights of a class-weighted loss (semantic segmentation's
            class rebalancing, the authors' ``semseg_prior_factor``); a ``.npy`` or text file of
            them (:func:`load_class_weights`; the authors' ``semseg_prior_factor.npy`` loads as
            it is);
            ``"auto"``: counted from the training labels by the training CLI before fitting (see
            :meth:`set_class_weights`), which stores the list in the hyper-parameters; ``None``:
            unweighted.
        metric_samples: Pixels per image of the metric loss (unsupervised segmentation).
    """

    #: Families whose outputs can be judged by the pix2pix discriminator set this.
    supports_gan = False
    #: Default per-variable gradient clip of the family (``None``: no clipping).
    default_clip_norm: float | None = None

    def __init__(
        self,
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
    ) -> None:
        super().__init__()
        # Kept in checkpoints; W&B gets the run's whole config from its record instead.
        self.save_hyperparameters(logger=False)
        self.spec: TaskSpec = get_spec(task)
        representation_shape(resolution)  # validates the resolution early
        if lr <= 0:
            raise ValueError(f"lr must be positive, got {lr}")
        check_milestone(lr_milestone)
        if gan and not self.gan_supported():
            raise ValueError(
                f"task {task!r} ({self.spec.family}) has no cGAN term: the authors gave one to "
                "the dense regression tasks and colorization only; drop gan=True"
            )
        if gan_weight is not None and not 0.0 <= gan_weight <= 1.0:
            raise ValueError(f"gan_weight must be in [0, 1], got {gan_weight}")
        if class_weights is not None:
            if not uses_class_weights(self.spec):
                raise ValueError(
                    f"task {task!r} has no class-weighted loss (its loss is {self.spec.loss!r}); "
                    "drop class_weights"
                )
            if isinstance(class_weights, str) and class_weights != AUTO_CLASS_WEIGHTS:
                # A file (e.g. the authors' prior factors): the weights, not the path, are kept,
                # so checkpoints and `self` baselines do not depend on the file.
                self.set_class_weights(load_class_weights(class_weights))
            elif not isinstance(class_weights, str):
                self.hparams["class_weights"] = check_class_weights(self.spec, class_weights)
        self.weight_decay = self.spec.weight_decay if weight_decay is None else weight_decay
        self.clip_norm = self.default_clip_norm if clip_norm is None else clip_norm
        self.encoder = build_encoder(encoder, self.spec.input_channels)
        self.head = self.make_head(self.encoder.out_channels)
        self.discriminator: nn.Module | None = None
        if gan:
            channels = self.spec.input_channels + self.discriminator_channels()
            self.discriminator = Pix2PixDiscriminator(channels, width=decoder_width)
            self.automatic_optimization = False
        self.val_metrics = nn.ModuleDict(self.build_metrics())
        self.test_metrics = nn.ModuleDict(self.build_metrics())
        self.loss_means = loss_means()
        #: Per-image test task losses, keyed by sample key (filled by ``test_step``).
        self.test_per_image_losses: dict[str, float] = {}

    # ----------------------------------------------------------------- class weights
    @property
    def class_weights_pending(self) -> bool:
        """Whether ``class_weights`` is still ``"auto"`` (the loss cannot run yet)."""
        return self.hparams.get("class_weights") == AUTO_CLASS_WEIGHTS

    def set_class_weights(self, weights: Sequence[float]) -> list[float]:
        """Replace ``class_weights`` (typically ``"auto"``) by concrete per-class weights.

        They go into the hyper-parameters, so checkpoints hold them and a module rebuilt from a
        checkpoint (a resumed run, a ``self`` baseline) computes the same loss.

        Returns:
            The weights as stored.

        Raises:
            ValueError: The task has no class-weighted loss, or not one finite, non-negative
                weight per class.
        """
        if not uses_class_weights(self.spec):
            raise ValueError(
                f"task {self.spec.name!r} has no class-weighted loss (its loss is "
                f"{self.spec.loss!r}); it takes no class weights"
            )
        values = check_class_weights(self.spec, weights)
        self.hparams["class_weights"] = values
        # The loggers record the initial hyper-parameters when fitting starts: keep them in step
        # so a W&B config shows the weights trained with, not "auto".
        initial = getattr(self, "_hparams_initial", None)
        if initial is not None:
            initial["class_weights"] = list(values)
        return values

    # ----------------------------------------------------------------- family hooks
    def make_head(self, in_channels: int) -> nn.Module:
        """A fresh head reading ``in_channels``-channel representations (transfers use 16)."""
        raise NotImplementedError

    def compute_loss(
        self,
        prediction: torch.Tensor,
        task_batch: dict[str, Any],
        reduction: Reduction = "mean",
        keys: list[str] | None = None,
    ) -> torch.Tensor:
        """The task loss of a prediction (``reduction="none"``: one value per sample).

        Args:
            prediction: The head's output.
            task_batch: ``batch[task]`` (``"target"``, optional ``"mask"``).
            reduction: ``"mean"`` or ``"none"``.
            keys: Sample keys, for losses that sample deterministically per image at eval time.
        """
        raise NotImplementedError

    def output_activation(self) -> nn.Module:
        """The nonlinearity the head applies last (identity for a linear output).

        It bounds what the network can predict: a tanh decoder's values, or semantic
        segmentation's logits, lie in [-1, 1]. Baselines that should be reachable by the network
        (the best constant prediction) pass their parameters through it.
        """
        activation = getattr(self.head, "activation", None)
        return activation if isinstance(activation, nn.Module) else nn.Identity()

    def build_metrics(self) -> dict[str, Metric]:
        """Fresh metrics named as ``spec.metrics``."""
        return build_metrics(self.spec)

    # ----------------------------------------------------------------- forward
    @property
    def representation_shape(self) -> tuple[int, int, int]:
        """Shape of one image's representation at the configured resolution."""
        return representation_shape(self.hparams["resolution"])

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Representation of images: ``B×C×H×W`` → ``B×8×h×w`` (``B×V×…`` keeps the view axis).

        This is the frozen-source interface of transfers. Views are encoded by one shared tower
        (:func:`per_view`).
        """
        return per_view(self.encoder, x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Prediction for an encoder input (``batch[task]["input"]``)."""
        return self.head(self.encode(x))

    # ----------------------------------------------------------------- steps
    def _task_batch(self, batch: dict[str, Any]) -> dict[str, Any]:
        if self.spec.name not in batch:
            raise ValueError(
                f"batch has no entry for task {self.spec.name!r} (keys: {sorted(batch)}); "
                "the datamodule must be configured with this task"
            )
        return batch[self.spec.name]

    def _check_finite(self, loss: torch.Tensor, stage: str) -> None:
        check_finite_loss(self, loss, stage, f"task {self.spec.name!r}")

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor | None:
        """One optimization step (manual when the cGAN term is on)."""
        task_batch = self._task_batch(batch)
        prediction = self(task_batch["input"])
        loss = self.compute_loss(prediction, task_batch, "mean")
        self._check_finite(loss, "train")
        log_loss(self, "train", loss, prediction.shape[0])
        if self.discriminator is None:
            return loss
        self._gan_step(task_batch, prediction, loss)
        return None

    def _scheduler_steps(self) -> float:
        """The LR scheduler's steps in the run: one per optimizer step.

        Under a cGAN each batch after the warm-up takes two optimizer steps (generator, then
        discriminator), and the schedule counts both, as the authors' TensorFlow global step did
        (their ``gan_train_step_fn`` increments it once per train op): the 80k drop and the
        instance noise follow that count. ``trainer.max_steps`` counts optimizer steps too, but
        an epoch bound counts batches; Lightning's estimate is the smaller of the two bounds as
        it counts them, so an epoch bound is converted.
        """
        total = run_steps(self._trainer)
        if self.discriminator is None:
            return total
        warmup = int(self.hparams["gan_warmup_steps"])
        by_batches = total if total <= warmup else warmup + 2 * (total - warmup)
        max_steps = int(getattr(self._trainer, "max_steps", -1))
        return by_batches if max_steps < 0 else min(max_steps, by_batches)

    # ----------------------------------------------------------------- cGAN
    def gan_supported(self) -> bool:
        """Whether the task has the authors' cGAN term (the family's ``supports_gan``)."""
        return self.supports_gan

    def discriminator_channels(self) -> int:
        """Channels of the image the discriminator judges beside the input: the prediction's."""
        return self.spec.output_channels

    def discriminator_images(
        self, prediction: torch.Tensor, task_batch: dict[str, Any]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The real and the generated image the discriminator judges, beside the input.

        The target and the prediction as they are; families whose prediction is not an image
        (colorization's bin logits) override this. The generated image keeps its gradient.
        """
        return task_batch["target"].to(prediction.dtype), prediction

    def gan_weight(self) -> float:
        """Weight of the GAN term: the option, or the paper's (0.01 colorization, else 0.004)."""
        weight = self.hparams["gan_weight"]
        if weight is None:
            return 0.01 if self.spec.name == "colorization" else 0.004
        return float(weight)

    def _instance_noise(self) -> float:
        # σ0 / (1 + 0.2·step/1000): tf.train.inverse_time_decay of the authors' global step.
        sigma0 = self.hparams["gan_noise"]
        if sigma0 is None:
            sigma0 = 0.03 if self.spec.name in LOG_DEPTH_TASKS else 0.1
        return float(sigma0) / (1.0 + 0.2 * self.global_step / 1000.0)

    def _gan_step(
        self, task_batch: dict[str, Any], prediction: torch.Tensor, task_loss: torch.Tensor
    ) -> None:
        assert self.discriminator is not None
        opt_g, opt_d = cast(list[Any], self.optimizers())
        condition = task_batch["input"]
        target, generated = self.discriminator_images(prediction, task_batch)
        active = self.global_step >= self.hparams["gan_warmup_steps"]  # one step per batch so far
        total = task_loss
        sigma = self._instance_noise()
        if active:
            fake = self.discriminator(condition, generated + sigma * torch.randn_like(generated))
            g_loss = gan_generator_loss(fake)
            weight = self.gan_weight()
            total = (1 - weight) * task_loss + weight * g_loss
            self.log(metric_key("train", "gan_generator"), g_loss, batch_size=len(target))
        opt_g.zero_grad()
        self.manual_backward(total)
        if self.clip_norm:
            per_variable_clip(self._generator_parameters(), self.clip_norm)
        # The authors' warm-up op minimizes the task loss alone, without the L2 terms that
        # their generator loss adds once the discriminator plays.
        set_l2_on_weights(opt_g.optimizer, self.weight_decay if active else 0.0)
        opt_g.step()
        scheduler = self.lr_schedulers()
        if scheduler is not None:
            scheduler.step()  # type: ignore[union-attr]
        if not active:
            return
        real = self.discriminator(condition, target + sigma * torch.randn_like(target))
        fake = self.discriminator(
            condition, generated.detach() + sigma * torch.randn_like(generated)
        )
        d_loss = gan_discriminator_loss(real, fake)
        opt_d.zero_grad()
        self.manual_backward(d_loss)
        opt_d.step()
        if scheduler is not None:
            scheduler.step()  # type: ignore[union-attr]  # the schedule counts every optimizer step
        self.log(metric_key("train", "gan_discriminator"), d_loss, batch_size=len(target))

    def _eval_step(self, batch: dict[str, Any], stage: str) -> tuple[torch.Tensor, torch.Tensor]:
        task_batch = self._task_batch(batch)
        keys = batch.get("__key__")
        prediction = self(task_batch["input"])
        per_image = self.compute_loss(prediction, task_batch, "none", keys=keys)
        loss = self.compute_loss(prediction, task_batch, "mean", keys=keys)
        self._check_finite(loss, stage)
        size = prediction.shape[0]
        log_loss(self, stage, loss, size, labelled_images(task_batch, size))
        metrics = self.val_metrics if stage == "val" else self.test_metrics
        for name, module in metrics.items():
            metric = cast(Metric, module)
            metric.update(prediction, task_batch)
            self.log(
                metric_key(stage, name),
                metric,
                on_step=False,
                on_epoch=True,
                batch_size=prediction.shape[0],
            )
        return per_image, loss

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        """Loss and metrics on a validation batch."""
        return self._eval_step(batch, "val")[1]

    def on_validation_epoch_end(self) -> None:
        """Stop if a validation loss was not finite (on any rank)."""
        settle_finite_losses(self, "val")

    def on_test_epoch_start(self) -> None:
        """Start a fresh collection of per-image losses."""
        self.test_per_image_losses = {}

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        """Loss and metrics on a test batch; collects the per-image losses by sample key."""
        per_image, loss = self._eval_step(batch, "test")
        store_per_image_losses(self.test_per_image_losses, batch.get("__key__"), per_image,
                               f"task {self.spec.name!r}")
        return loss

    def on_test_epoch_end(self) -> None:
        """Stop if a test loss was not finite; merge per-image losses across DDP ranks."""
        settle_finite_losses(self, "test")
        self.test_per_image_losses = gather_per_image_losses(self.test_per_image_losses)

    def predict_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, Any]:
        """Predictions and representations of a batch, with the sample keys."""
        x = self._task_batch(batch)["input"]
        representation = self.encode(x)
        return {
            "__key__": batch.get("__key__"),
            "representation": representation,
            "prediction": self.head(representation),
        }

    # ----------------------------------------------------------------- optimization
    def _generator_parameters(self) -> list[nn.Parameter]:
        return list(self.encoder.parameters()) + list(self.head.parameters())

    def setup(self, stage: str) -> None:
        """Let DDP tolerate the cGAN's idle parameters, however the strategy was spelt.

        The discriminator gets no gradient during the warm-up, nor the generator in the
        discriminator's step; plain DDP rejects that at the second step. The module's setup
        runs before the strategy wraps it, so the wrapper is built with
        ``find_unused_parameters`` (what ``ddp_find_unused_parameters_true`` would set).
        """
        ddp_kwargs = getattr(self.trainer.strategy, "_ddp_kwargs", None)
        if self.discriminator is not None and isinstance(ddp_kwargs, dict):
            ddp_kwargs["find_unused_parameters"] = True

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Stamp the encoder layout, so readers can tell networks of a former layout."""
        checkpoint[ENCODER_LAYOUT_KEY] = ENCODER_LAYOUT

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Resume checkpoints saved under the former LR scheduler too.

        Under a cGAN the schedule counts every optimizer step (:meth:`_scheduler_steps`), so its
        count is the checkpoint's global step; checkpoints written when it counted generator
        steps only are brought in line, or their LR would drop late.
        """
        upgrade_scheduler_states(checkpoint)
        if type(self).configure_optimizers is TaskModule.configure_optimizers:  # our Adam
            restore_adam_implementation(checkpoint, self._trainer, self._generator_parameters())
        step = checkpoint.get("global_step")
        if self.discriminator is not None and isinstance(step, int):
            for state in checkpoint.get("lr_schedulers") or []:
                if isinstance(state, dict) and "last_epoch" in state:
                    state["last_epoch"], state["_step_count"] = step, step + 1

    def on_train_start(self) -> None:
        """The schedule's rates for the current step; each DDP rank's own random stream.

        A resumed run's rates may differ from its checkpoint's (the config's schedule wins).
        """
        resync_learning_rates(self.lr_schedulers())
        seed_rank(self)

    def configure_optimizers(self) -> Any:
        """Adam with an LR drop at a step milestone (+ SGD for the discriminator)."""
        optimizer = adam(self._generator_parameters(), self.hparams["lr"], self.weight_decay,
                         self._trainer)
        decay = step_decay(optimizer, self.hparams["lr_milestone"], self.hparams["lr_gamma"],
                           self._scheduler_steps)
        schedulers = [decay] if decay else []
        if self.discriminator is None:
            return (
                {"optimizer": optimizer, "lr_scheduler": schedulers[0]}
                if schedulers
                else (optimizer)
            )
        d_optimizer = torch.optim.SGD(
            l2_on_weights(list(self.discriminator.parameters()), 10 * self.weight_decay),
            lr=self.hparams["gan_lr"],
        )
        return [optimizer, d_optimizer], schedulers

    def configure_gradient_clipping(
        self,
        optimizer: torch.optim.Optimizer,
        gradient_clip_val: float | int | None = None,
        gradient_clip_algorithm: str | None = None,
    ) -> None:
        """Per-variable clipping where the task asks for it, then the Trainer's own clipping."""
        if self.clip_norm:
            per_variable_clip(self._generator_parameters(), self.clip_norm)
        self.clip_gradients(optimizer, gradient_clip_val, gradient_clip_algorithm)


def check_same_shape(task: str, prediction: torch.Tensor, target: torch.Tensor) -> None:
    """Raise a clear error when a regression target does not match the prediction's shape.

    Element-wise losses would otherwise broadcast a mismatch silently (e.g. B×H×W against
    B×1×H×W gives B×B×H×W).
    """
    if prediction.shape != target.shape:
        raise ValueError(
            f"task {task!r}: target shape {tuple(target.shape)} does not match the prediction "
            f"{tuple(prediction.shape)}; check that the data resolution equals the model's "
            "`resolution`, and that the task's sample builder (a plugin's "
            "register_sample_builder) makes a target of the spec's output shape"
        )


def flat_features(in_channels: int, resolution: int) -> int:
    """Flattened size of one image's representation with ``in_channels`` channels."""
    _, h, w = representation_shape(resolution)
    return in_channels * h * w


def scaled(widths: tuple[int, ...], factor: float) -> tuple[int, ...]:
    """Hidden widths multiplied by ``factor`` (at least 8 each)."""
    if factor <= 0:
        raise ValueError(f"head width multiplier must be positive, got {factor}")
    return tuple(max(8, math.ceil(w * factor)) for w in widths)
