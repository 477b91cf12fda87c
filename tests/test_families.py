"""Task families: perfect vs wrong predictions, overfitting, NaN, GAN, clipping, test loop."""

import copy
import warnings

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader

from taskonomy.datamodules.selfsupervised import ab_bins
from taskonomy.tasks.build import build_task
from taskonomy.tasks.families.base import NonFiniteLossError, per_variable_clip
from taskonomy.tasks.families.dense import RECOLOUR_LOGIT_SCALE, regenerate_ab
from taskonomy.tasks.families.low_dim import LowDimRegressionTask
from taskonomy.tasks.registry import get_spec
from taskonomy.tasks.testing import fake_batch

TINY = {"encoder": "resnet10_tiny", "resolution": 32, "decoder_width": 0.125, "head_width": 0.125}
#: One task per family (two for dense classification: hard labels and soft colour bins).
REPRESENTATIVE = [
    "normal",
    "segment_semantic",
    "colorization",
    "segment_unsup2d",
    "class_scene",
    "jigsaw",
    "room_layout",
    "fixated_pose",
    "egomotion",
    "point_matching",
]


@pytest.fixture(autouse=True)
def _quiet_single_thread():
    # One intra-op thread: on a few shared cores, more threads only contend (measured 3-8x).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", ".*does not have many workers.*")
        yield
    torch.set_num_threads(threads)


def _loss_floor(model, task_batch: dict) -> float:
    """The lowest loss any prediction can reach on a batch."""
    target = task_batch["target"]
    if model.spec.loss == "soft_cross_entropy":  # the targets' entropy, reached at log p
        return model.compute_loss(target.clamp_min(1e-12).log(), task_batch).item()
    return 0.0


def _one_hot_logits(labels: torch.Tensor, classes: int, scale: float = 30.0) -> torch.Tensor:
    logits = torch.nn.functional.one_hot(labels.clamp(0), classes).float() * scale
    return logits.movedim(-1, 1) if logits.ndim > 2 else logits


def _perfect_and_wrong(name: str, task_batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
    spec = get_spec(name)
    target = task_batch["target"]
    if spec.family in ("dense_regression", "low_dim_regression", "multi_view") and (
        target.is_floating_point()
    ):
        return target.clone(), target + 0.5
    if spec.family == "metric_segmentation":
        good = _one_hot_logits(target, spec.output_channels, 5.0)
        return good, torch.zeros_like(good)
    if target.is_floating_point():  # soft targets: make them one-hot so the optimum is 0
        hard = target.argmax(1)
        task_batch["target"] = torch.nn.functional.one_hot(hard, spec.output_channels)
        task_batch["target"] = task_batch["target"].movedim(-1, 1).float()
        perfect = _one_hot_logits(hard, spec.output_channels)
        return perfect, perfect.roll(1, dims=1)
    perfect = _one_hot_logits(target, spec.output_channels)
    return perfect, perfect.roll(1, dims=1)


@pytest.mark.parametrize("name", REPRESENTATIVE)
def test_perfect_prediction_has_near_zero_loss_and_wrong_one_positive(name) -> None:
    model = build_task(name, **TINY)
    batch = fake_batch(model.spec, 2, 32)
    task_batch = batch[name]
    perfect, wrong = _perfect_and_wrong(name, task_batch)
    assert model.compute_loss(perfect, task_batch).item() < 1e-4
    assert model.compute_loss(wrong, task_batch).item() > 0.1
    per_sample = model.compute_loss(wrong, task_batch, "none", keys=batch["__key__"])
    assert per_sample.shape == (2,)


def _loss(model, batch) -> float:
    task_batch = batch[model.spec.name]
    return model.compute_loss(model(task_batch["input"]), task_batch).item()


@pytest.mark.parametrize(
    "name",
    [
        "depth_zbuffer",
        "colorization",
        "segment_unsup25d",
        "class_object",
        "room_layout",
        "nonfixated_pose",
    ],
)
def test_short_training_overfits_a_fixed_batch(name) -> None:
    # One task per family. (Semantic segmentation's tanh-bounded logits, the paper's decoder,
    # approach their floor too slowly for a short test; colorization covers the family.)
    torch.manual_seed(0)
    model = build_task(name, **{**TINY, "head_width": 0.25})
    # Views are normalized one at a time (as the authors' towers): 4 samples are too few.
    batch = fake_batch(model.spec, 8 if model.spec.views > 1 else 4, 32, seed=1)
    task_batch = batch[name]
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(60):
        loss = model.compute_loss(model(task_batch["input"]), task_batch)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    start, end = sum(losses[:3]) / 3, sum(losses[-3:]) / 3
    floor = _loss_floor(model, task_batch)
    assert end - floor < 0.5 * (start - floor), (start, end, floor)


def _trainer(**kwargs) -> L.Trainer:
    options = {
        "accelerator": "cpu",
        "logger": False,
        "enable_checkpointing": False,
        "enable_progress_bar": False,
        "enable_model_summary": False,
    }
    return L.Trainer(**{**options, **kwargs})


def _loader(batches: list[dict]) -> DataLoader:
    return DataLoader(batches, batch_size=None)


def test_nan_loss_raises_naming_task_and_step() -> None:
    model = build_task("reshading", **TINY)
    batch = fake_batch(model.spec, 2, 32)
    batch["reshading"]["target"][0, 0, 5, 5] = float("nan")
    batch["reshading"]["mask"][0, 0, 5, 5] = 1.0
    with pytest.raises(NonFiniteLossError, match=r"task 'reshading'.*step 0"):
        _trainer(max_steps=1).fit(model, _loader([batch]))


def test_a_nan_evaluation_loss_stops_at_the_end_of_the_pass() -> None:
    # DDP ranks may read different numbers of evaluation batches: a rank that raised mid-pass
    # left the others waiting. The loss is noted and the pass ends on every rank first.
    model = build_task("reshading", **TINY)
    batches = [fake_batch(model.spec, 2, 32, seed=s) for s in range(3)]
    batches[0]["reshading"]["target"][0, 0, 5, 5] = float("nan")
    batches[0]["reshading"]["mask"][0, 0, 5, 5] = 1.0
    seen: list[int] = []
    model.on_test_batch_end = lambda *args: seen.append(args[2])  # type: ignore[method-assign]
    with pytest.raises(NonFiniteLossError, match=r"task 'reshading': test loss is nan"):
        _trainer().test(model, _loader(batches), verbose=False)
    assert seen == [0, 1, 2]


def test_ranks_stop_together_on_another_ranks_nan_loss() -> None:
    from types import SimpleNamespace

    from taskonomy.tasks.families.base import check_finite_loss, settle_finite_losses

    model = build_task("reshading", **TINY)
    votes: list[bool] = []

    def another_rank_saw_nan(decision: bool, all: bool = True) -> bool:
        votes.append(decision)
        return True

    model._trainer = SimpleNamespace(  # type: ignore[assignment]
        world_size=2, strategy=SimpleNamespace(reduce_boolean_decision=another_rank_saw_nan),
        global_step=7, current_epoch=0)
    with pytest.raises(NonFiniteLossError, match="another GPU"):
        check_finite_loss(model, torch.tensor(0.5), "train", "task 'reshading'")
    with pytest.raises(NonFiniteLossError, match="val loss was not finite on another GPU"):
        settle_finite_losses(model, "val")
    assert votes == [False, False]  # this rank's own losses were finite


def test_each_rank_trains_with_its_own_random_stream() -> None:
    from types import SimpleNamespace

    from taskonomy.tasks.families.base import seed_rank

    model = build_task("reshading", **TINY)
    draws = []
    for rank, world in [(0, 1), (0, 2), (1, 2), (1, 2), (0, 2)]:
        torch.manual_seed(5)  # what seed_everything gives every rank
        torch.rand(3)  # the networks' initialization draws
        model._trainer = SimpleNamespace(world_size=world, global_rank=rank)  # type: ignore[assignment]
        seed_rank(model)
        draws.append(torch.rand(4))
    model._trainer = None
    torch.manual_seed(5)
    replay = torch.rand(4)  # the initialization draws again
    assert torch.equal(draws[0], draws[1])  # rank 0 goes on with its stream,
    assert not torch.equal(draws[1], replay)  # not rewound to replay its initialization
    assert not torch.equal(draws[1], draws[2]) and torch.equal(draws[2], draws[3])
    torch.manual_seed(6)  # rank 1 of seed 5 is not rank 0 of seed 6
    assert not torch.equal(draws[2], torch.rand(4))


def test_test_loop_collects_per_image_losses_by_key() -> None:
    model = build_task("keypoints2d", **TINY)
    batches = [fake_batch(model.spec, 3, 32, seed=s) for s in range(2)]
    results = _trainer().test(model, _loader(batches), verbose=False)
    keys = [k for b in batches for k in b["__key__"]]
    assert sorted(model.test_per_image_losses) == sorted(keys)
    model.eval()
    with torch.no_grad():
        task_batch = batches[1]["keypoints2d"]
        expected = model.compute_loss(model(task_batch["input"]), task_batch, "none")
    got = [model.test_per_image_losses[k] for k in batches[1]["__key__"]]
    assert got == pytest.approx(expected.tolist(), rel=1e-5)
    assert {"test/loss", "test/l1", "test/rmse"} <= set(results[0])


def test_metric_segmentation_eval_losses_are_deterministic_per_key() -> None:
    model = build_task("segment_unsup2d", **TINY).eval()
    batch = fake_batch(model.spec, 2, 32)
    task_batch = batch["segment_unsup2d"]
    with torch.no_grad():
        prediction = model(task_batch["input"])
        a = model.compute_loss(prediction, task_batch, "none", keys=batch["__key__"])
        b = model.compute_loss(prediction, task_batch, "none", keys=batch["__key__"])
        swapped = model.compute_loss(
            prediction.flip(0),
            {"target": task_batch["target"].flip(0)},
            "none",
            keys=batch["__key__"][::-1],
        )
    assert torch.equal(a, b)
    assert torch.allclose(swapped.flip(0), a)


@pytest.mark.parametrize("task", ["depth_zbuffer", "colorization"])
def test_cgan_term_trains_the_discriminator_after_warmup(task: str) -> None:
    model = build_task(task, **TINY, gan=True, gan_warmup_steps=2)
    assert model.discriminator is not None
    before = [p.detach().clone() for p in model.discriminator.parameters()]
    batch = fake_batch(model.spec, 2, 32)
    trainer = _trainer(max_steps=6, limit_val_batches=0)
    trainer.fit(model, _loader([batch] * 4))
    after = list(model.discriminator.parameters())
    assert any(not torch.equal(a, b) for a, b in zip(after, before, strict=True))
    assert "train/gan_discriminator" in trainer.callback_metrics
    assert "train/gan_generator" in trainer.callback_metrics


def test_cgan_warmup_trains_without_weight_decay() -> None:
    # The authors' warm-up op minimizes the task loss alone; L2 joins with the GAN term.
    model = build_task("depth_zbuffer", **TINY, gan=True, gan_warmup_steps=2, weight_decay=0.1)
    seen: list[list[float]] = []

    class Watch(L.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            groups = trainer.optimizers[0].param_groups
            seen.append([g["weight_decay"] for g in groups])

    batch = fake_batch(model.spec, 2, 32)
    _trainer(max_steps=6, limit_val_batches=0, callbacks=[Watch()]).fit(
        model, _loader([batch] * 4))
    assert seen[:2] == [[0.0, 0.0], [0.0, 0.0]]  # two warm-up batches, then two steps each
    assert seen[2] == [0.1, 0.0]


@pytest.mark.parametrize("task", ["room_layout", "segment_semantic", "segment_unsup2d"])
def test_tasks_without_the_authors_cgan_term_refuse_it(task: str) -> None:
    with pytest.raises(ValueError, match="dense regression tasks and colorization"):
        build_task(task, **TINY, gan=True)


def test_gan_weight_defaults_to_the_papers_per_task() -> None:
    assert build_task("colorization", **TINY, gan=True).gan_weight() == 0.01
    assert build_task("normal", **TINY, gan=True).gan_weight() == 0.004
    assert build_task("normal", **TINY, gan=True, gan_weight=0.5).gan_weight() == 0.5
    with pytest.raises(ValueError, match=r"gan_weight must be in \[0, 1\]"):
        build_task("normal", **TINY, gan=True, gan_weight=1.5)


def test_regenerate_ab_takes_each_pixels_expected_bin_centre() -> None:
    bins = torch.from_numpy(ab_bins())
    distribution = torch.zeros(1, len(bins), 2, 2)
    distribution[0, 7, 0, 0] = 1.0
    distribution[0, 3, 0, 1] = distribution[0, 5, 0, 1] = 0.5
    distribution[0, 0, 1, :] = 1.0
    ab = regenerate_ab(distribution, (8, 8))
    assert ab.shape == (1, 2, 8, 8)
    assert torch.allclose(ab[0, :, 0, 0], bins[7])
    assert torch.allclose(ab[0, :, 3, 4], (bins[3] + bins[5]) / 2)  # nearest-neighbour enlarged
    assert torch.allclose(ab[0, :, 7, 7], bins[0])


def test_colorizations_discriminator_judges_recoloured_images_beside_lightness() -> None:
    model = build_task("colorization", **TINY, gan=True, gan_warmup_steps=0)
    assert model.discriminator is not None
    task_batch = fake_batch(model.spec, 2, 32)["colorization"]
    first_conv = next(m for m in model.discriminator.modules() if isinstance(m, torch.nn.Conv2d))
    assert first_conv.in_channels == 1 + 2  # L, then the recoloured ab
    logits = torch.randn(2, 313, 8, 8, requires_grad=True)
    real, fake = model.discriminator_images(logits, task_batch)
    assert real.shape == fake.shape == (2, 2, 32, 32)
    assert torch.allclose(real, regenerate_ab(task_batch["target"], (32, 32)))
    expected = regenerate_ab(torch.softmax(logits.detach() * RECOLOUR_LOGIT_SCALE, 1), (32, 32))
    assert torch.allclose(fake, expected)
    model.discriminator(task_batch["input"], fake).sum().backward()
    assert logits.grad is not None and logits.grad.abs().sum() > 0  # the GAN term reaches G


def test_per_variable_clip_bounds_each_gradient_separately() -> None:
    a, b = torch.nn.Parameter(torch.zeros(3)), torch.nn.Parameter(torch.zeros(2))
    a.grad, b.grad = torch.tensor([30.0, 40.0, 0.0]), torch.tensor([0.3, 0.4])
    per_variable_clip([a, b], 1.0)
    assert a.grad.norm().item() == pytest.approx(1.0, rel=1e-4)
    assert torch.allclose(a.grad, torch.tensor([0.6, 0.8, 0.0]), atol=1e-4)
    assert torch.equal(b.grad, torch.tensor([0.3, 0.4]))  # already within the bound


class _RecordingLowDim(LowDimRegressionTask):
    max_grad_norm = 0.0

    def configure_gradient_clipping(
        self, optimizer, gradient_clip_val=None, gradient_clip_algorithm=None
    ):
        super().configure_gradient_clipping(optimizer, gradient_clip_val, gradient_clip_algorithm)
        norms = [p.grad.norm().item() for p in self.parameters() if p.grad is not None]
        type(self).max_grad_norm = max(norms)


def test_room_layout_gradients_are_clipped_per_variable_in_training() -> None:
    model = _RecordingLowDim(task="room_layout", **TINY)
    batch = fake_batch(model.spec, 4, 32)
    batch["room_layout"]["target"] *= 1e4  # huge errors, huge gradients
    _trainer(max_steps=1, limit_val_batches=0).fit(model, _loader([batch]))
    assert 0 < _RecordingLowDim.max_grad_norm <= 1.0 + 1e-4


def test_bf16_mixed_training_step_on_cpu() -> None:
    model = build_task("segment_semantic", **TINY)
    batch = fake_batch(model.spec, 2, 32)
    before = model.head.output.weight.detach().clone()
    trainer = _trainer(max_steps=1, limit_val_batches=0, precision="bf16-mixed")
    trainer.fit(model, _loader([batch]))
    assert torch.isfinite(trainer.callback_metrics["train/loss"])
    assert not torch.equal(before, model.head.output.weight)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = build_task("egomotion", **TINY)(
            fake_batch(get_spec("egomotion"), 2, 32)["egomotion"]["input"]
        )
    assert out.shape == (2, 18) and torch.isfinite(out.float()).all()


def test_dense_outputs_keep_full_precision_under_bf16_autocast() -> None:
    # bf16 would round log depth (in [0.5, 0.8]) to steps of 2**-8: a floor on the loss.
    model = build_task("depth_zbuffer", **TINY)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(fake_batch(model.spec, 2, 32)["depth_zbuffer"]["input"])
    assert out.dtype == torch.float32
    # Held in bf16 (``bf16-true``), it computes in bf16, and its weights are the same weights
    # as the fp32 copy a transfer loads them into.
    from taskonomy.tasks.representations import weights_fingerprint
    half = build_task("depth_zbuffer", **TINY).to(torch.bfloat16)
    assert half(fake_batch(model.spec, 2, 32)["depth_zbuffer"]["input"].bfloat16()).dtype == (
        torch.bfloat16)
    assert weights_fingerprint(half.encoder) == weights_fingerprint(half.encoder.float())


def test_eval_loss_weighs_batches_by_their_labelled_images() -> None:
    # A batch of images without any label adds a loss of 0 that says nothing of the network.
    model = build_task("class_object", **TINY).eval()
    unlabelled = fake_batch(model.spec, 4, 32, seed=1)
    unlabelled["class_object"]["mask"] = torch.zeros(4)
    labelled = fake_batch(model.spec, 4, 32, seed=2)
    labelled["class_object"]["mask"] = torch.tensor([1.0, 1.0, 1.0, 0.0])
    with torch.no_grad():
        expected = model.compute_loss(model(labelled["class_object"]["input"]),
                                      labelled["class_object"], "mean")
    result = _trainer().validate(model, _loader([unlabelled, labelled]), verbose=False)[0]
    assert result["val/loss"] == pytest.approx(float(expected), rel=1e-5)


def test_encode_and_fresh_heads_for_transfers() -> None:
    model = build_task("fixated_pose", **TINY).eval()
    views = torch.randn(2, 2, 3, 32, 32)
    assert model.encode(views).shape == (2, 2, 8, 2, 2)
    assert model.encode(views[:, 0]).shape == (2, 8, 2, 2)
    head = model.make_head(16)  # behind a transfer readout: 16 channels per view
    assert head(torch.randn(2, 2, 16, 2, 2)).shape == (2, 6)
    dense = build_task("normal", **TINY)
    assert dense.make_head(16)(torch.randn(2, 16, 2, 2)).shape == (2, 3, 32, 32)
    prediction = model.predict_step({"__key__": ["a", "b"], "fixated_pose": {"input": views}}, 0)
    assert prediction["prediction"].shape == (2, 6)
    assert prediction["representation"].shape == (2, 2, 8, 2, 2)


def test_optimizer_follows_spec_weight_decay_and_lr_milestone() -> None:
    model = build_task("class_scene", **TINY, lr_milestone=10)
    config = model.configure_optimizers()
    optimizer, scheduler = config["optimizer"], config["lr_scheduler"]["scheduler"]
    decays = {g["weight_decay"] for g in optimizer.param_groups}
    assert decays == {1e-5, 0.0}  # the spec's 1e-5 on weights, none on BN and biases
    assert optimizer.defaults["fused"] is True  # CPU float32: one fused kernel per step
    for _ in range(10):
        optimizer.step()
        scheduler.step()
    assert optimizer.param_groups[0]["lr"] == pytest.approx(1e-5)
    assert build_task("normal", **TINY, lr_milestone=None).configure_optimizers().__class__ is (
        torch.optim.Adam
    )


def test_bad_batches_are_clear_value_errors() -> None:
    model = build_task("depth_zbuffer", **TINY)
    batch = fake_batch(model.spec, 2, 32)
    wrong = {**batch["depth_zbuffer"], "target": batch["depth_zbuffer"]["target"][:, 0]}
    prediction = model(batch["depth_zbuffer"]["input"])
    with pytest.raises(ValueError, match=r"task 'depth_zbuffer': target shape \(2, 32, 32\)"):
        model.compute_loss(prediction, wrong)
    with pytest.raises(ValueError, match="no entry for task 'depth_zbuffer'"):
        model.validation_step({"__key__": ["a"], "normal": batch["depth_zbuffer"]}, 0)


def test_cgan_schedule_counts_every_optimizer_step() -> None:
    # After the warm-up each batch takes two optimizer steps; the LR schedule and the instance
    # noise count both, as the authors' TensorFlow global step did.
    model = build_task("depth_zbuffer", **TINY, gan=True, gan_warmup_steps=3, lr_milestone=8)
    batch = fake_batch(model.spec, 2, 32)
    trainer = _trainer(max_steps=9, limit_val_batches=0)
    trainer.fit(model, _loader([batch] * 10))
    assert trainer.global_step == 9  # 3 warm-up batches, then 3 batches of two steps each
    scheduler = trainer.lr_scheduler_configs[0].scheduler
    assert scheduler.last_epoch == 9  # type: ignore[attr-defined]
    assert scheduler.get_last_lr()[0] == pytest.approx(1e-5)  # dropped at step 8, batch 6
    assert model._instance_noise() == pytest.approx(0.03 / (1 + 0.2 * 9 / 1000))


def test_cgan_trains_under_plain_ddp() -> None:
    # Idle discriminator (warm-up) and generator (D step) parameters: plain DDP rejected them
    # at the second step until the module asked for find_unused_parameters in its setup.
    model = build_task("depth_zbuffer", **TINY, gan=True, gan_warmup_steps=2)
    assert model.discriminator is not None
    before = [p.detach().clone() for p in model.discriminator.parameters()]
    batch = fake_batch(model.spec, 2, 32)
    trainer = _trainer(max_steps=6, limit_val_batches=0, devices=2, strategy="ddp_spawn")
    trainer.fit(model, _loader([batch] * 8))  # rank 0's weights come back to this process
    after = list(model.discriminator.parameters())
    assert any(not torch.equal(a, b) for a, b in zip(after, before, strict=True))


def test_train_loss_of_the_epoch_is_the_mean_over_every_ddp_rank() -> None:
    # Each rank trains on its own batch; a plain logged tensor gave rank 0's mean alone.
    model = build_task("reshading", **TINY)
    batches = [fake_batch(model.spec, 2, 32, seed=seed) for seed in (0, 1)]
    batches[1]["reshading"]["target"] += 2.0
    reference = copy.deepcopy(model).train()
    with torch.no_grad():
        losses = [reference.compute_loss(reference(b["reshading"]["input"]), b["reshading"])
                  for b in batches]
    assert abs(losses[0].item() - losses[1].item()) > 0.5  # the ranks' losses differ
    trainer = _trainer(max_steps=1, limit_val_batches=0, devices=2, strategy="ddp_spawn")
    trainer.fit(model, _loader(batches))  # the sampler gives rank r batch r
    epoch = trainer.callback_metrics["train/loss_epoch"].item()
    assert epoch == pytest.approx(sum(loss.item() for loss in losses) / 2, rel=1e-4)


def test_epoch_means_keep_float64_sums_under_bf16_true() -> None:
    # bf16-true converts the module with .to(dtype); a bf16 sum stops growing after ~256 adds.
    model = build_task("reshading", **TINY).to(torch.bfloat16)
    means = model.loss_means["train_loss"]
    assert means.total.dtype == torch.float64
    assert all(m.total.dtype == torch.float64 for m in model.val_metrics.values()
               if hasattr(m, "total"))
    for _ in range(300):
        means.update(torch.tensor(1.0, dtype=torch.bfloat16), 2)
    means.update(torch.tensor(3.0), 2)
    assert means.compute().item() == pytest.approx(606 / 602)
    means.reset()
    assert means.total.dtype == torch.float64  # the defaults stay float64 too


def test_a_cgan_checkpoint_counting_generator_steps_resumes_on_the_global_step(
        tmp_path) -> None:
    # Checkpoints written when the schedule counted generator steps only: the LR dropped late.
    options = {**TINY, "gan": True, "gan_warmup_steps": 2, "lr_milestone": 12}
    batch = fake_batch(get_spec("depth_zbuffer"), 2, 32)
    trainer = _trainer(max_steps=8, limit_val_batches=0)
    trainer.fit(build_task("depth_zbuffer", **options), _loader([batch] * 10))
    path = tmp_path / "old.ckpt"
    trainer.save_checkpoint(path)
    checkpoint = torch.load(path, weights_only=False)
    assert checkpoint["lr_schedulers"][0]["last_epoch"] == 8
    checkpoint["lr_schedulers"][0].update(last_epoch=5, _step_count=6)  # 2 + 3 generator steps
    torch.save(checkpoint, path)
    resumed = _trainer(max_steps=20, limit_val_batches=0)
    resumed.fit(build_task("depth_zbuffer", **options), _loader([batch] * 20), ckpt_path=path)
    scheduler = resumed.lr_scheduler_configs[0].scheduler
    assert resumed.global_step == 20 and scheduler.last_epoch == 20  # type: ignore[attr-defined]
    assert scheduler.get_last_lr()[0] == pytest.approx(1e-5)


def test_a_checkpoint_resumes_with_the_adam_implementation_of_this_run(tmp_path) -> None:
    # Saved param groups carry `fused`, which loading restores: a checkpoint from before fused
    # Adam resumed without it.
    batch = fake_batch(get_spec("normal"), 2, 32)
    trainer = _trainer(max_steps=2, limit_val_batches=0)
    trainer.fit(build_task("normal", **TINY), _loader([batch] * 4))
    path = tmp_path / "old.ckpt"
    trainer.save_checkpoint(path)
    checkpoint = torch.load(path, weights_only=False)
    for group in checkpoint["optimizer_states"][0]["param_groups"]:
        group.update(fused=None, foreach=None)
    torch.save(checkpoint, path)
    resumed = _trainer(max_steps=3, limit_val_batches=0)
    resumed.fit(build_task("normal", **TINY), _loader([batch] * 4), ckpt_path=path)
    assert all(g["fused"] is True for g in resumed.optimizers[0].param_groups)


def test_a_family_with_its_own_optimizer_resumes_it_as_saved(tmp_path) -> None:
    from taskonomy.tasks.families.dense import DenseRegressionTask

    class OwnOptimizer(DenseRegressionTask):
        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=1e-3, momentum=0.9, foreach=False)

    batch = fake_batch(get_spec("normal"), 2, 32)
    trainer = _trainer(max_steps=2, limit_val_batches=0)
    trainer.fit(OwnOptimizer("normal", **TINY), _loader([batch] * 4))
    path = tmp_path / "own.ckpt"
    trainer.save_checkpoint(path)
    resumed = _trainer(max_steps=3, limit_val_batches=0)
    resumed.fit(OwnOptimizer("normal", **TINY), _loader([batch] * 4), ckpt_path=path)
    group = resumed.optimizers[0].param_groups[0]
    assert group["foreach"] is False and not group["fused"]


def test_metric_segmentation_scores_each_image_on_its_own_key_seeded_pixels() -> None:
    from taskonomy.tasks.families.segmentation import keyed_pixel_indices
    from taskonomy.tasks.losses import metric_loss

    cpu = torch.device("cpu")
    one, again = (keyed_pixel_indices(["a"], 1024, 300, cpu) for _ in range(2))
    assert torch.equal(one, again)
    assert not torch.equal(one, keyed_pixel_indices(["b"], 1024, 300, cpu))
    model = build_task("segment_unsup2d", **TINY)
    task_batch = fake_batch(model.spec, 2, 32, seed=0)["segment_unsup2d"]
    prediction = torch.randn(2, model.spec.output_channels, 32, 32).tanh()
    samples = model.hparams["metric_samples"]
    # Drawn over the whole image (pixel indices up to H·W), as the metric loss reads them.
    expected = metric_loss(prediction, task_batch["target"], None, "none", samples=samples,
                           indices=keyed_pixel_indices(["k0", "k1"], 32 * 32, samples, cpu))
    got = model.compute_loss(prediction, task_batch, "none", ["k0", "k1"])
    assert torch.allclose(got, expected)


def test_classification_heads_have_the_papers_depths() -> None:
    # Object and scene: one hidden FC layer (2048); jigsaw: two per tile tower, then 100-way.
    def linear_layers(task: str) -> int:
        head = build_task(task, **TINY).head
        return sum(isinstance(m, torch.nn.Linear) for m in head.modules())

    assert linear_layers("class_object") == 2 and linear_layers("class_scene") == 2
    assert linear_layers("jigsaw") == 3


def test_classification_loss_leaves_masked_samples_out() -> None:
    model = build_task("class_scene", **TINY)
    target = torch.rand(4, 63).softmax(1)
    prediction = torch.randn(4, 63)
    masked = model.compute_loss(prediction, {"target": target,
                                             "mask": torch.tensor([1.0, 1.0, 1.0, 0.0])})
    first_three = model.compute_loss(prediction[:3], {"target": target[:3],
                                                      "mask": torch.ones(3)})
    assert torch.allclose(masked, first_three)
