"""Losses: the authors' reductions, masks, per-sample values, and the metric and pose losses."""

import math

import pytest
import torch

from taskonomy.tasks.losses import (
    cross_entropy,
    gan_discriminator_loss,
    gan_generator_loss,
    get_loss,
    masked_l1,
    masked_l2,
    metric_loss,
    mse,
    pose_cycle_loss,
    pose_loss,
    soft_cross_entropy,
    weighted_cross_entropy,
    weighted_mean,
)
from taskonomy.tasks.networks.pose import compose_poses, denormalize_pose, normalize_pose


def test_masked_l1_is_mean_over_valid_pixel_channels() -> None:
    pred = torch.zeros(2, 3, 4, 4)
    target = torch.ones(2, 3, 4, 4)
    target[0, :, 0, 0] = 100.0  # masked out below
    mask = torch.ones(2, 1, 4, 4)
    mask[0, :, 0, 0] = 0
    assert masked_l1(pred, target, mask).item() == pytest.approx(1.0)
    # TF-slim counts non-zero weights after broadcasting over channels.
    mask[1] = 0
    target[1] = 7.0
    assert masked_l1(pred, target, mask).item() == pytest.approx(1.0)
    per_sample = masked_l1(pred, target, mask, reduction="none")
    assert per_sample.tolist() == pytest.approx([1.0, 0.0])  # no valid pixel → 0


def test_masked_l2_and_mse() -> None:
    pred, target = torch.zeros(2, 2, 3, 3), torch.full((2, 2, 3, 3), 2.0)
    assert masked_l2(pred, target).item() == pytest.approx(4.0)
    assert mse(torch.zeros(3, 9), torch.ones(3, 9), reduction="none").tolist() == [1.0] * 3


def test_per_sample_mean_equals_batch_mean_with_equal_counts() -> None:
    pred, target = torch.randn(4, 3, 8, 8), torch.randn(4, 3, 8, 8)
    batch = masked_l1(pred, target)
    assert masked_l1(pred, target, reduction="none").mean().item() == pytest.approx(batch.item())
    with pytest.raises(ValueError, match="reduction"):
        weighted_mean(pred, None, "sum")  # type: ignore[arg-type]


def test_weighted_cross_entropy_masks_uncertain_and_weights_classes() -> None:
    labels = torch.tensor([[[0, 1], [2, -1]]])  # -1: uncertain (label 0 in the file)
    mask = (labels >= 0).float()
    perfect = torch.nn.functional.one_hot(labels.clamp(0), 3).permute(0, 3, 1, 2).float() * 50
    assert weighted_cross_entropy(perfect, labels, mask).item() < 1e-6
    uniform = torch.zeros(1, 3, 2, 2)
    assert weighted_cross_entropy(uniform, labels, mask).item() == pytest.approx(math.log(3))
    # Class weights change the weighted sum but uniform logits still give log 3 per pixel.
    weights = torch.tensor([0.5, 8.0, 8.0])
    wrong = perfect.roll(1, dims=1)
    plain = weighted_cross_entropy(wrong, labels, mask)
    weighted = weighted_cross_entropy(wrong, labels, mask, class_weights=weights)
    assert weighted.item() > plain.item() > 10
    # A label outside the classes (an unexpected file value) is left out even where the mask
    # keeps the pixel: it is not the last class.
    two = torch.tensor([[[0, 3]]])
    logits = torch.randn(1, 3, 1, 2)
    assert weighted_cross_entropy(logits, two, torch.ones(1, 1, 2)).item() == pytest.approx(
        weighted_cross_entropy(logits[..., :1], two[..., :1], torch.ones(1, 1, 1)).item())


def test_soft_cross_entropy_classification_and_colorization() -> None:
    target = torch.nn.functional.one_hot(torch.tensor([1, 3]), 5).float()
    assert soft_cross_entropy(target * 50, target).item() < 1e-6
    assert soft_cross_entropy(-target * 50, target).item() > 10
    # Invalid samples (mask 0) do not count; per-sample value 0.
    mask = torch.tensor([1.0, 0.0])
    logits = torch.zeros(2, 5)
    assert soft_cross_entropy(logits, target, mask).item() == pytest.approx(math.log(5))
    assert soft_cross_entropy(logits, target, mask, "none").tolist() == pytest.approx(
        [math.log(5), 0.0]
    )
    # Colorization: soft targets over bins with per-pixel prior-boost weights.
    probs = torch.rand(2, 313, 4, 4).softmax(1)
    boost = torch.rand(2, 1, 4, 4) + 0.5
    entropy = -(probs * probs.log()).sum(1)
    at_target = soft_cross_entropy(probs.log(), probs, boost)
    expected = (entropy * boost[:, 0]).sum() / boost.numel()
    assert at_target.item() == pytest.approx(expected.item(), rel=1e-5)


def test_cross_entropy_for_jigsaw_and_point_matching() -> None:
    labels = torch.tensor([4, 0, 99])
    logits = torch.nn.functional.one_hot(labels, 100).float() * 50
    assert cross_entropy(logits, labels).item() < 1e-6
    assert cross_entropy(torch.zeros(3, 100), labels, reduction="none").tolist() == pytest.approx(
        [math.log(100)] * 3
    )


def _separated_embeddings(segments: torch.Tensor, channels: int = 16) -> torch.Tensor:
    return torch.nn.functional.one_hot(segments, channels).permute(0, 3, 1, 2).float() * 5.0


def test_metric_loss_prefers_embeddings_that_separate_segments() -> None:
    torch.manual_seed(0)
    segments = torch.zeros(2, 16, 16, dtype=torch.long)
    segments[:, :, 8:] = 1
    segments[:, 8:, :8] = 2
    good = metric_loss(_separated_embeddings(segments), segments)
    random = metric_loss(torch.randn(2, 16, 16, 16).tanh(), segments)
    collapsed = metric_loss(torch.zeros(2, 16, 16, 16), segments)
    assert good.item() < 1e-5
    assert random.item() > 0.5
    assert collapsed.item() > 5  # everything "same": different pairs cost −log(1e-7)


def test_metric_loss_exact_value_on_fixed_pixels() -> None:
    # Two pixels, same segment, at squared distance 1: −mean(log σ) with σ = 2/(1+e).
    embeddings = torch.zeros(1, 1, 1, 2)
    embeddings[0, 0, 0, 1] = 1.0
    segments = torch.zeros(1, 1, 2, dtype=torch.long)
    indices = torch.tensor([[0, 1]])
    loss = metric_loss(embeddings, segments, indices=indices)
    sigma_diag = 1 - 1e-7
    expected = -(2 * math.log(sigma_diag) + 2 * math.log(2 / (1 + math.e))) / 4
    assert loss.item() == pytest.approx(expected, rel=1e-5)
    per_sample = metric_loss(embeddings, segments, reduction="none", indices=indices)
    assert per_sample.shape == (1,)


def test_pose_loss_is_a_per_sample_euclidean_norm() -> None:
    pred = torch.zeros(2, 6)
    target = torch.tensor([[3.0, 4, 0, 0, 0, 0], [0, 0, 0, 0, 0, 1]])
    assert pose_loss(pred, target, reduction="none").tolist() == pytest.approx([5.0, 1.0])
    assert pose_loss(pred, target).item() == pytest.approx(3.0)
    perfect = target.clone().requires_grad_()
    loss = pose_loss(perfect, target)
    loss.backward()
    assert loss.item() < 1e-5
    assert torch.isfinite(perfect.grad).all()  # finite gradient at a perfect prediction


def test_pose_cycle_loss_weights_the_composed_pair_by_half() -> None:
    p01 = denormalize_pose(torch.randn(3, 6) * 0.3)
    p12 = denormalize_pose(torch.randn(3, 6) * 0.3)
    target = torch.cat([normalize_pose(p) for p in (p01, compose_poses(p01, p12), p12)], 1)
    assert pose_cycle_loss(target, target).item() < 1e-5
    offset = torch.zeros(3, 18)
    offset[:, 6] = 2.0  # only the 0→2 pose is off by 2
    assert pose_cycle_loss(target + offset, target).item() == pytest.approx(1.0, rel=1e-4)
    for column in (0, 12):  # the 0→1 and 1→2 poses weigh 1
        offset = torch.zeros(3, 18)
        offset[:, column] = 2.0
        assert pose_cycle_loss(target + offset, target).item() == pytest.approx(2.0, rel=1e-4)
    with pytest.raises(ValueError, match="B×18"):
        pose_cycle_loss(torch.zeros(2, 6), torch.zeros(2, 6))


def test_gan_losses_use_one_sided_label_smoothing() -> None:
    confident = torch.full((2, 1, 4, 4), 20.0)
    # Real at 0.9: the minimum is at logit log(9), not at +∞.
    best = torch.full((2, 1, 4, 4), math.log(9.0))
    fake = torch.full((2, 1, 4, 4), -20.0)
    assert gan_discriminator_loss(best, fake) < gan_discriminator_loss(confident, fake)
    best.requires_grad_(True)  # log 9 is the minimum exactly: the real label is 0.9
    gan_discriminator_loss(best, fake).backward()
    assert best.grad is not None and best.grad.abs().max().item() < 1e-7
    assert gan_generator_loss(confident).item() < 1e-6


def test_every_table_loss_is_registered() -> None:
    from taskonomy.tasks.specs import BUILTIN_TASKS

    for spec in BUILTIN_TASKS:
        assert callable(get_loss(spec.loss))
    with pytest.raises(ValueError, match="valid losses: l1"):
        get_loss("huber")


# ---------------------------------------------------------------------------- metrics


def _metrics(name: str) -> dict:
    from taskonomy.tasks.metrics import build_metrics
    from taskonomy.tasks.registry import get_spec

    return build_metrics(get_spec(name))


def _encode_depth(metres: torch.Tensor) -> torch.Tensor:
    return torch.log1p(metres * 512.0) / math.log(2.0**16)


def test_depth_metrics_in_metres_with_mask() -> None:
    metrics = _metrics("depth_zbuffer")
    target = torch.full((1, 1, 2, 2), 2.0)
    pred = torch.tensor([[[[2.2, 2.2], [3.0, 50.0]]]])
    mask = torch.tensor([[[[1.0, 1.0], [1.0, 0.0]]]])  # the 50 m pixel is invalid
    batch = {"target": _encode_depth(target), "mask": mask}
    for metric in metrics.values():
        metric.update(_encode_depth(pred), batch)
    assert metrics["abs_rel"].compute().item() == pytest.approx((0.1 + 0.1 + 0.5) / 3, rel=1e-4)
    assert metrics["delta1"].compute().item() == pytest.approx(2 / 3)
    expected_rmse = math.sqrt((0.04 + 0.04 + 1.0) / 3)
    assert metrics["rmse"].compute().item() == pytest.approx(expected_rmse, rel=1e-4)
    # Raw metres, when the batch has them, are the target; 0 m (missing) pixels do not count.
    raw_metrics = _metrics("depth_euclidean")
    raw = torch.tensor([[[[2.0, 2.0], [0.0, 4.0]]]])
    with_raw = {"target": torch.zeros(1, 1, 2, 2), "raw": raw, "mask": torch.ones(1, 1, 2, 2)}
    for metric in raw_metrics.values():
        metric.update(_encode_depth(torch.tensor([[[[2.2, 2.2], [9.0, 4.0]]]])), with_raw)
    assert raw_metrics["abs_rel"].compute().item() == pytest.approx(0.2 / 3, rel=1e-4)
    # A 0 target (no depth) counts nowhere, even where the mask keeps the pixel.
    holes = _metrics("depth_zbuffer")["abs_rel"]
    holes.update(_encode_depth(torch.full((1, 1, 1, 2), 2.2)),
                 {"target": _encode_depth(torch.tensor([[[[2.0, 0.0]]]])),
                  "mask": torch.ones(1, 1, 1, 2)})
    assert holes.compute().item() == pytest.approx(0.1, rel=1e-4)
    # A prediction below 0 (the head's tanh) is the nearest depth, one raw unit: 1/512 m.
    negative = _metrics("depth_zbuffer")
    for metric in negative.values():
        metric.update(torch.full((1, 1, 1, 1), -0.5),
                      {"target": _encode_depth(torch.full((1, 1, 1, 1), 2.0))})
    assert negative["abs_rel"].compute().item() == pytest.approx(1 - 1 / 1024, rel=1e-4)
    assert negative["delta1"].compute().item() == 0.0


def test_normal_angle_metrics() -> None:
    metrics = _metrics("normal")
    target = torch.zeros(1, 3, 1, 2)
    target[:, 2] = 1.0  # both pixels face the camera
    pred = target.clone()
    pred[0, :, 0, 1] = torch.tensor([1.0, 0.0, 0.0])  # second pixel off by 90°
    for metric in metrics.values():
        metric.update(pred * 0.5, {"target": target, "mask": torch.ones(1, 1, 1, 2)})
    assert metrics["angle_mean"].compute().item() == pytest.approx(45.0, abs=1e-3)
    assert metrics["angle_11_25"].compute().item() == pytest.approx(0.5)


def test_semantic_miou_and_pixel_accuracy_ignore_uncertain() -> None:
    metrics = _metrics("segment_semantic")
    labels = torch.tensor([[[0, 0, 1, 1]]])
    predicted = torch.tensor([[[0, 1, 1, 1]]])
    logits = torch.nn.functional.one_hot(predicted, 17).permute(0, 3, 1, 2).float()
    mask = torch.ones(1, 1, 1, 4)
    batch = {"target": labels, "mask": mask}
    for metric in metrics.values():
        metric.update(logits, batch)
    # class 0: inter 1, union 2; class 1: inter 2, union 3.
    assert metrics["miou"].compute().item() == pytest.approx((1 / 2 + 2 / 3) / 2)
    # A class of the targets that is never predicted counts with IoU 0.
    missed = _metrics("segment_semantic")["miou"]
    never = torch.nn.functional.one_hot(torch.zeros(1, 1, 4, dtype=torch.long), 17)
    missed.update(never.permute(0, 3, 1, 2).float(), batch)
    assert missed.compute().item() == pytest.approx((2 / 4 + 0) / 2)
    assert metrics["pixel_accuracy"].compute().item() == pytest.approx(0.75)
    uncertain = {"target": torch.tensor([[[5, 5, 5, 5]]]), "mask": torch.zeros(1, 1, 1, 4)}
    for metric in metrics.values():
        metric.update(logits, uncertain)  # masked out: nothing changes
    assert metrics["pixel_accuracy"].compute().item() == pytest.approx(0.75)


def test_classification_top1_and_kl() -> None:
    target = torch.rand(3, 63).softmax(1)
    prediction = target.log()
    # The masked third sample is predicted wrongly and confidently: all mass on a class that
    # is not its argmax. Only the mask keeps it out of top1 and KL.
    wrong = int(target[2].argmin())
    prediction[2] = -50.0
    prediction[2, wrong] = 50.0
    mask = torch.tensor([1.0, 1.0, 0.0])
    masked = _metrics("class_scene")
    unmasked = _metrics("class_scene")
    for name in ("top1", "kl"):
        masked[name].update(prediction, {"target": target, "mask": mask})
        unmasked[name].update(prediction, {"target": target})
    assert masked["kl"].compute().item() == pytest.approx(0.0, abs=1e-5)
    assert masked["top1"].compute().item() == pytest.approx(1.0)
    # Were the mask ignored: top1 2/3, and KL the third sample's −log q(wrong) ≈ 100 over 3.
    assert unmasked["top1"].compute().item() == pytest.approx(2 / 3)
    log_q = torch.log_softmax(prediction[2], 0)
    kl_third = (target[2] * (target[2].log() - log_q)).sum().item()
    assert kl_third > 50
    assert unmasked["kl"].compute().item() == pytest.approx(kl_third / 3, rel=1e-4)


def test_pose_and_room_layout_errors_are_in_scene_units() -> None:
    from taskonomy.tasks.metrics import ROOM_LAYOUT_STD
    from taskonomy.tasks.networks.pose import FIXATED_POSE_STD

    pose = _metrics("fixated_pose")
    target = torch.randn(4, 6) * 0.1
    pred = target.clone()
    pred[:, 5] += 1.0  # one std of the z translation
    for metric in pose.values():
        metric.update(pred, {"target": target})
    assert pose["translation_error"].compute().item() == pytest.approx(FIXATED_POSE_STD[5], 1e-4)
    assert pose["rotation_error"].compute().item() == pytest.approx(0.0, abs=1e-2)
    layout = _metrics("room_layout")
    target = torch.randn(4, 9) * 0.1
    pred = target.clone()
    pred[:, 0] += 2.0
    for metric in layout.values():
        metric.update(pred, {"target": target})
    assert layout["centre_error"].compute().item() == pytest.approx(2 * ROOM_LAYOUT_STD[0], 1e-4)
    assert layout["rotation_error"].compute().item() == pytest.approx(0.0, abs=1e-2)


def test_pair_accuracy_of_separating_embeddings_is_one() -> None:
    metrics = _metrics("segment_unsup2d")
    segments = torch.zeros(2, 16, 16, dtype=torch.long)
    segments[:, :, 8:] = 1
    metrics["pair_accuracy"].update(_separated_embeddings(segments, 64), {"target": segments})
    assert metrics["pair_accuracy"].compute().item() == pytest.approx(1.0)
    collapsed = _metrics("segment_unsup2d")["pair_accuracy"]
    collapsed.update(torch.zeros(2, 64, 16, 16), {"target": segments})
    assert 0.3 < collapsed.compute().item() < 0.7  # "all same" is right only for same pairs
    # Every pixel its own segment: "all same" is always wrong (a pixel with itself not counted).
    distinct = torch.arange(400).reshape(1, 20, 20)
    alone = _metrics("segment_unsup2d")["pair_accuracy"]
    alone.update(torch.zeros(1, 8, 20, 20), {"target": distinct})
    assert alone.compute().item() == 0.0


def test_pair_accuracy_calls_pixels_one_segment_below_a_squared_distance_of_ln_3() -> None:
    segments = torch.zeros(1, 16, 16, dtype=torch.long)
    segments[:, :, 8:] = 1

    def accuracy(d2: float) -> float:
        embeddings = torch.zeros(1, 4, 16, 16)
        embeddings[:, 0, :, 8:] = math.sqrt(d2)  # segment 1 lies d2 (squared) from segment 0
        metric = _metrics("segment_unsup2d")["pair_accuracy"]
        metric.update(embeddings, {"target": segments})
        return metric.compute().item()

    assert accuracy(math.log(3.0) + 0.01) == 1.0
    assert accuracy(math.log(3.0) - 0.01) < 0.6  # the two segments are called one


def test_metrics_accumulate_exactly_over_batches() -> None:
    one, two = _metrics("edge_texture")["l1"], _metrics("edge_texture")["l1"]
    pred, target = torch.randn(4, 1, 8, 8), torch.randn(4, 1, 8, 8)
    one.update(pred, {"target": target})
    two.update(pred[:1], {"target": target[:1]})
    two.update(pred[1:], {"target": target[1:]})
    assert two.compute().item() == pytest.approx(one.compute().item(), rel=1e-6)
    assert one.compute().item() == pytest.approx((pred - target).abs().mean().item(), rel=1e-5)


def test_metric_loss_pixels_are_distinct_and_seedable() -> None:
    from taskonomy.tasks.losses import sample_pixels

    idx = sample_pixels(3, 1024, 300, torch.Generator().manual_seed(1))
    assert idx.shape == (3, 300)
    assert all(len(set(row.tolist())) == 300 for row in idx)  # without replacement
    again = sample_pixels(3, 1024, 300, torch.Generator().manual_seed(1))
    assert torch.equal(idx, again)
    assert sample_pixels(1, 100, 300).shape == (1, 100)  # small images: every pixel once


def test_class_balancing_weights_boost_rare_classes_with_unit_expected_weight() -> None:
    from taskonomy.tasks.losses import class_balancing_weights

    # Background-dominated labels (as semantic segmentation's): background well below 1, rare
    # objects near the authors' published 7-9.
    counts = torch.tensor([9500.0] + [500.0 / 16] * 16)
    weights = class_balancing_weights(counts)
    p = counts / counts.sum()
    assert float((p * weights).sum()) == pytest.approx(1.0, rel=1e-6)
    assert 0.5 < float(weights[0]) < 0.6
    assert torch.all((weights[1:] > 7) & (weights[1:] < 10))
    # Rarer classes weigh more; an unseen class weighs most; uniform counts give all ones.
    skewed = class_balancing_weights(torch.tensor([90.0, 9.0, 1.0, 0.0]))
    assert torch.all(skewed[1:] > skewed[:-1])
    assert torch.allclose(class_balancing_weights(torch.ones(5)), torch.ones(5))
    # p = (¾, ¼), mix ½: w ∝ 1 / (½p + ¼) = (1.6, 8/3), scaled to Σ p·w = 1.
    assert torch.allclose(class_balancing_weights(torch.tensor([3.0, 1.0])),
                          torch.tensor([6 / 7, 10 / 7]))


@pytest.mark.parametrize("counts, mix", [([1.0, -1.0], 0.5), ([0.0, 0.0], 0.5), ([1.0], 0.0)])
def test_class_balancing_weights_reject_bad_input(counts, mix) -> None:
    from taskonomy.tasks.losses import class_balancing_weights

    with pytest.raises(ValueError, match="count|mix"):
        class_balancing_weights(torch.tensor(counts), mix)
