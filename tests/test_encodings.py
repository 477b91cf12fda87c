import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from taskonomy.datamodules import encodings as enc
from taskonomy.datamodules import selfsupervised as ss
from taskonomy.datamodules.task_samples import BadSampleError, make_task_sample

REFERENCE = Path(__file__).resolve().parents[2] / "shared" / "reference" / "taskonomy2018"
POINT_INFO = {
    "camera_location": [-2.125469923019409, -10.290050506591797, 1.5054166316986084],
    "camera_rotation_final": [1.2809059619903564, 0.014322374016046524, 0.396561861038208],
    "point_location": [-2.7812304496765137, -8.742630004882812, 1.004150152206421],
    "bounding_box_ranges": {"x": [-10.290050506591797, -5.961729275487249],
                            "y": [-3.5429351193291825, -1.4695079743873167],
                            "z": [-0.08235783459480928, 2.4245548768714027]},
    # The released record's Gaussian-sphere vanishing points of this camera.
    "vanishing_points_gaussian_sphere": {
        "x": [-0.38620969618188905, -0.2689648356416762, 0.8823264632568486],
        "y": [0.9222998179569449, -0.09774904691866532, 0.3739093066815518],
        "z": [-0.014321884362022957, 0.9581769361734496, 0.28581784866166454]},
}


def test_depth_log_encoding_mask_and_metres():
    raw = np.array([[0, 511], [64499, 65535]], dtype=np.uint16)
    target, metres = enc.depth_encoding(raw, 2)
    assert target.shape == (1, 2, 2)
    assert target[0, 0, 0] == 0.0
    assert target[0, 0, 1] == pytest.approx(math.log(512) / math.log(2**16))
    assert metres[0, 0, 1] == pytest.approx(511 / 512) and metres[0, 1, 1] == 0.0
    mask = enc.depth_valid_mask(raw, 2)
    assert mask[0].tolist() == [[1.0, 1.0], [1.0, 0.0]]
    # The log comes before the resize (the authors'), so a resized target is a mean of logs.
    mixed = np.array([[1, 1], [4095, 4095]], dtype=np.uint16)
    logs = np.log1p(mixed.astype(np.float64)) / math.log(2**16)
    assert enc.depth_encoding(mixed, 1)[0].item() == pytest.approx(logs.mean(), rel=1e-5)
    # Metres resize by nearest neighbour: no depth between a surface and a hole is made up.
    checker = np.where((np.indices((4, 4)).sum(0) % 2) == 0, 1024, 65535).astype(np.uint16)
    assert set(np.unique(enc.depth_encoding(checker, 2)[1]).tolist()) <= {0.0, 2.0}
    big = np.full((8, 8), 1000, np.uint16)
    big[0, 0] = 65535
    down = enc.depth_valid_mask(big, 4)  # a partly invalid pixel becomes invalid (< 0.99)
    assert down[0, 0, 0] == 0.0 and down[0, 3, 3] == 1.0


def test_dense_encodings_follow_the_released_conventions():
    normal = np.full((4, 4, 3), 255, np.uint8)
    assert np.allclose(enc.normal_encoding(normal, 4), 1.0)
    curvature = np.zeros((4, 4, 3), np.uint8)
    curvature[..., 0], curvature[..., 1] = 123, 120
    out = enc.curvature_encoding(curvature, 4)
    assert out.shape == (2, 4, 4) and np.abs(out).max() < 0.02
    edges = np.array([[0, 65535], [2621, 5243]], np.uint16)
    scaled = enc.scaled16_encoding(edges, 2, enc.EDGE_TEXTURE_SCALE)
    assert scaled[0, 0, 0] == -1.0 and scaled[0, 0, 1] == 1.0
    assert scaled[0, 1, 0] == pytest.approx(0.0, abs=1e-3)
    occlusion = np.zeros((64, 64), np.uint16)
    occlusion[32, 32] = 4096  # 10× the 0.00625 scale: unclipped, then blurred
    blurred = enc.edge_occlusion_encoding(occlusion, 64)
    assert blurred.max() > 1.0  # unclipped (σ = 1 px at 64²)
    assert blurred[0, 32, 32] > blurred[0, 32, 33] > blurred[0, 32, 34] >= -1.0
    labels = np.array([[0, 1], [2, 17]], np.uint8)
    target, mask = enc.semantic_encoding(labels, 2)
    assert target.tolist() == [[0, 0], [1, 16]] and mask.tolist() == [[0, 1], [1, 1]]


def test_labels_take_the_pixel_under_each_centre():
    # 8 → 4 as PIL's nearest (the authors' imresize): pixels 1, 3, 5, 7; OpenCV's plain
    # nearest took 0, 2, 4, 6. Odd factors and enlargements agree either way.
    labels = np.tile(np.arange(8, dtype=np.uint8), (8, 1))
    assert enc.semantic_encoding(labels + 1, 4)[0][0].tolist() == [1, 3, 5, 7]  # label − 1
    assert enc.segment_ids(labels, 4)[0].tolist() == [1, 3, 5, 7]
    assert enc.segment_ids(labels[:5, :5], 3)[0].tolist() == [0, 2, 4]
    assert enc.segment_ids(labels[:5, :5], 8)[0].tolist() == [0, 0, 1, 2, 2, 3, 4, 4]


def test_class_distributions():
    probs = np.random.default_rng(0).dirichlet(np.ones(365)).astype(np.float32)
    scene, valid = enc.class_scene_encoding(probs)
    assert scene.shape == (63,) and valid == 1.0
    assert scene.sum() == pytest.approx(1.0, abs=1e-5)
    kept = probs[enc.places_mask()]
    assert np.allclose(scene, kept / kept.sum(), atol=1e-6)
    logits = np.array([0.0, -1.0, 2.0])
    assert np.allclose(enc.to_distribution(logits), np.exp(logits) / np.exp(logits).sum())
    assert np.allclose(enc.to_distribution([0.2, 0.9, 0.1]), np.exp([0.2, 0.9, 0.1]) / np.exp(
        [0.2, 0.9, 0.1]).sum())  # sums to 1.2: logits
    # Probabilities rounded to half precision (their sum drifts) stay probabilities.
    drifted = (np.random.default_rng(1).dirichlet(np.ones(1000)) * 1.01).astype(np.float16)
    assert np.allclose(enc.to_distribution(drifted), drifted / drifted.astype(np.float64).sum(),
                       atol=1e-6)
    target, valid = enc.class_object_encoding(None)
    assert valid == 0.0 and target.sum() == pytest.approx(1.0)


def test_a_class_file_of_another_label_set_is_a_bad_sample_named_as_such():
    with pytest.raises(ValueError, match="class_scene file holds 300 values, not the 365"):
        enc.class_scene_encoding(np.full(300, 1 / 300))
    with pytest.raises(ValueError, match="class_object file holds 365 values, not the 1000"):
        enc.class_selected_encoding(np.full(365, 1 / 365))
    decoded = {"__key__": "b-p0-v0", "rgb": np.zeros((8, 8, 3), np.uint8),
               "class_object": np.full(365, 1 / 365, np.float32)}
    with pytest.raises(BadSampleError, match="b-p0-v0: a class_object file holds 365"):
        make_task_sample("class_object", decoded, np.random.default_rng(0), resolution=8)


def test_vanishing_points_match_the_released_gaussian_sphere():
    vps = enc.vanishing_point_target(POINT_INFO).reshape(3, 3)
    released = POINT_INFO["vanishing_points_gaussian_sphere"]
    for row, axis in zip(vps, ("x", "y", "z"), strict=True):
        # The well-defined world turn flips the sign of horizontal axes only.
        assert np.allclose(np.abs(row), np.abs(released[axis]), atol=1e-5)
    assert np.allclose(vps @ vps.T, np.eye(3), atol=1e-5)


def test_room_layout_is_invariant_to_a_quarter_turn_of_the_world():
    raw = enc.room_layout_target(POINT_INFO, normalize=False)
    assert np.allclose(raw[6:], [2.07342, 4.32832, 2.50691], atol=1e-4) or np.allclose(
        sorted(raw[6:8]), sorted([2.07342, 4.32832]), atol=1e-4)
    turn = np.array([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    turned = dict(POINT_INFO)
    turned["camera_location"] = list(turn @ POINT_INFO["camera_location"])
    rotation = turn @ enc.euler_to_matrix(POINT_INFO["camera_rotation_final"])
    turned["camera_rotation_final"] = list(enc.matrix_to_euler(rotation))
    # Authors' box convention is (x, -y reversed); build the turned box in world coordinates.
    box = POINT_INFO["bounding_box_ranges"]
    corners = np.array([[x, y, 0.0] for x in box["x"] for y in box["y"]]) @ turn.T
    turned["bounding_box_ranges"] = {"x": [corners[:, 0].min(), corners[:, 0].max()],
                                     "y": [corners[:, 1].min(), corners[:, 1].max()],
                                     "z": box["z"]}
    assert np.allclose(np.sort(enc.room_layout_target(turned, normalize=False)[6:]),
                       np.sort(raw[6:]), atol=1e-4)


def test_relative_pose_identity_and_egomotion():
    raw = enc.relative_pose(POINT_INFO, POINT_INFO, normalize=False)
    assert np.allclose(raw, 0.0, atol=1e-6)
    other = dict(POINT_INFO, camera_location=[0.0, -10.0, 1.5])
    pose = enc.relative_pose(other, POINT_INFO, normalize=False)
    r2 = enc.euler_to_matrix(POINT_INFO["camera_rotation_final"])
    assert np.allclose(pose[3:], r2.T @ (np.array([0.0, -10.0, 1.5]) -
                                         np.array(POINT_INFO["camera_location"])), atol=1e-5)
    ego = enc.egomotion_target([POINT_INFO, other, POINT_INFO])
    assert ego.shape == (18,)
    assert np.allclose(ego[:6], enc.relative_pose(POINT_INFO, other))


def test_relative_pose_of_two_turned_cameras_is_view_1_in_the_frame_of_view_2():
    # Two cameras turned about different axes (their rotations do not commute).
    first = dict(POINT_INFO, camera_rotation_final=[0.3, 0.0, 0.0], camera_location=[1, 2, 3])
    second = dict(POINT_INFO, camera_rotation_final=[0.0, 0.0, math.pi / 2],
                  camera_location=[0.0, 0.0, 0.0])
    r1, r2 = (enc.euler_to_matrix(v["camera_rotation_final"]) for v in (first, second))
    pose = enc.relative_pose(first, second, normalize=False)
    assert np.allclose(enc.euler_to_matrix(pose[:3]), r2.T @ r1, atol=1e-6)
    assert not np.allclose(r2.T @ r1, r1.T @ r2, atol=1e-3)
    assert np.allclose(pose[3:], r2.T @ np.array([1.0, 2.0, 3.0]), atol=1e-6)
    assert not np.allclose(pose[3:], r1.T @ np.array([1.0, 2.0, 3.0]), atol=1e-3)
    # Egomotion's pairs are (0, 1), (0, 2), (1, 2), in that order.
    third = dict(POINT_INFO, camera_location=[0.5, -1.0, 2.0])
    views = [first, second, third]
    ego = enc.egomotion_target(views)
    for k, (i, j) in enumerate(((0, 1), (0, 2), (1, 2))):
        assert np.allclose(ego[6 * k:6 * k + 6], enc.relative_pose(views[i], views[j]))


def test_jigsaw_permutation_set_and_tiles():
    perms = ss.jigsaw_permutations()
    assert perms.shape == (100, 9)
    assert len({tuple(p) for p in perms}) == 100
    assert all(sorted(p) == list(range(9)) for p in perms)
    image = np.zeros((3, 30, 30), np.float32)
    for cell in range(9):
        row, col = (cell // 3) * 10, (cell % 3) * 10
        image[:, row : row + 10, col : col + 10] = cell
    tiles, k = ss.jigsaw_sample(image, np.random.default_rng(1), 6)
    assert tiles.shape == (9, 3, 6, 6)
    assert [int(round(t.mean())) for t in tiles] == list(perms[k])
    # Each tile is a crop of 90 % of its cell at a random offset (the authors' jitter).
    ramp = np.repeat(np.arange(60, dtype=np.float32)[None, :, None], 60, axis=2)
    ramp = np.repeat(ramp, 3, axis=0)  # 3×60×60: value = row
    identity = np.tile(np.arange(9), (100, 1))
    tops = {float(ss.jigsaw_sample(ramp, np.random.default_rng(seed), 18, identity)[0][0].min())
            for seed in range(10)}
    assert len(tops) > 1


def test_jigsaw_tiles_are_cut_from_the_stored_image_not_the_resized_one():
    # A one-pixel checkerboard at 64² averages to flat grey at 16²; the authors cut tiles from
    # the native image, so the detail must survive into the (enlarged) tiles.
    checker = ((np.indices((64, 64)).sum(0) % 2) * 255).astype(np.uint8)
    decoded = {"rgb": np.repeat(checker[:, :, None], 3, axis=2)}
    sample = make_task_sample("jigsaw", decoded, np.random.default_rng(0), resolution=16,
                              jigsaw_tile=32)
    assert sample["input"].shape == (9, 3, 32, 32)
    assert all(tile.std() > 0.3 for tile in sample["input"])


def test_colorization_soft_encoding_peaks_at_the_true_colour():
    rgb = np.zeros((16, 16, 3), np.uint8)
    rgb[..., 0] = 204  # a reddish image
    rgb[..., 1:] = 51
    lightness, soft = ss.colorization_sample(rgb, 16)
    assert lightness.shape == (1, 16, 16) and soft.shape == (313, 4, 4)
    assert np.allclose(soft.sum(0), 1.0, atol=1e-5)
    ab = ss.rgb_to_lab(rgb.astype(np.float32) / 255)[0, 0, 1:]
    best = ss.ab_bins()[soft[:, 0, 0].argmax()]
    assert np.abs(best - ab).max() <= 5.0 + 1e-3
    assert ss.ab_bins().shape == (313, 2) and len(np.unique(ss.ab_bins(), axis=0)) == 313
    # The weights of the 10 nearest bins are a Gaussian of σ = 5 in their distance.
    weights = soft[:, 0, 0]
    used = np.flatnonzero(weights)
    assert len(used) == 10
    d2 = ((ss.ab_bins()[used] - ab) ** 2).sum(1)
    gaussian = np.exp(-d2 / 50.0)
    assert np.allclose(weights[used], gaussian / gaussian.sum(), atol=1e-4)
    # Lightness spans [-1, 1]: white is 1, black is −1.
    for level, value in ((255, 1.0), (0, -1.0)):
        flat, _ = ss.colorization_sample(np.full((16, 16, 3), level, np.uint8), 16)
        assert np.allclose(flat, value, atol=1e-3)


def test_colorization_target_is_the_image_sampled_bilinearly_at_a_quarter():
    # The authors resize the 0-255 image straight to R/4 (bilinear, no anti-aliasing),
    # truncate to uint8, then take Lab: at a factor of 4 each target pixel is the mean of the
    # 2×2 pixels around its centre, floored. (Lab at R averaged over 4×4 blocks moved the
    # arg-max bin of 38 % of the pixels of a blurred colour-block image.)
    rgb = np.random.default_rng(0).integers(0, 256, (64, 64, 3)).astype(np.uint8)
    _, soft = ss.colorization_sample(rgb, 64)
    centre = rgb.astype(np.float64).reshape(16, 4, 16, 4, 3)[:, 1:3, :, 1:3].mean((1, 3))
    ab = ss.rgb_to_lab((np.floor(centre) / 255).astype(np.float32))[:, :, 1:].reshape(-1, 2)
    nearest = ((ab[:, None] - ss.ab_bins()[None]) ** 2).sum(-1).argmin(1)
    assert (soft.reshape(313, -1).argmax(0) == nearest).all()


def test_denoising_and_inpainting_inputs():
    rgb01 = np.full((32, 32, 3), 0.5, np.float32)
    noisy = ss.denoising_input(rgb01, np.random.default_rng(0))
    assert abs(float((noisy / 2).std()) - 0.1) < 0.01  # variance 0.01 on the [0,1] image
    assert abs(float(noisy.mean())) < 0.02  # in [-1, 1]: grey 0.5 is 0
    chw = np.ones((3, 8, 8), np.float32)
    masked = ss.inpainting_input(chw)
    assert masked[:, 2:6, 2:6].sum() == 0 and masked.sum() == 3 * (64 - 16)


def test_make_task_sample_without_shards(tmp_path: Path, building_factory):
    from taskonomy.datamodules.domains import DOMAINS, read_domain_file

    building = building_factory(tmp_path, "hanson", points=1, views=2, res=16)
    decoded = {d: read_domain_file(building / d / DOMAINS[d].file_name(0, 0), d)
               for d in DOMAINS if d != "nonfixated_matches"}
    rng = np.random.default_rng(0)
    depth = make_task_sample("depth_zbuffer", decoded, rng)
    assert depth["target"].shape == (1, 16, 16) and depth["raw"].shape == (1, 16, 16)
    assert set(depth) == {"input", "target", "mask", "raw"}
    assert torch.all((depth["mask"] == 0) == (depth["raw"] == 0))
    jig = make_task_sample("jigsaw", decoded, rng, jigsaw_tile=8)
    assert jig["input"].shape == (9, 3, 8, 8) and jig["target"].dtype == torch.int64
    assert jig["target"].ndim == 0
    other = {d: read_domain_file(building / d / DOMAINS[d].file_name(0, 1), d)
             for d in ("rgb", "point_info")}
    pair = make_task_sample("point_matching", {"views": [decoded, other]}, rng)
    assert pair["input"].shape == (2, 3, 16, 16) and int(pair["target"]) == 1
    with pytest.raises(BadSampleError, match="depth_zbuffer"):
        make_task_sample("normal", {**decoded, "depth_zbuffer": None}, rng)
    with pytest.raises(ValueError, match="register_sample_builder"):
        make_task_sample("my_plugin_task", decoded, rng)


@pytest.mark.skipif(not (REFERENCE / "point_0_view_0_domain_point_info.json").is_file(),
                    reason="released point_info example not available")
def test_released_point_info_gives_finite_targets():
    info = json.loads((REFERENCE / "point_0_view_0_domain_point_info.json").read_text())
    assert np.isfinite(enc.room_layout_target(info)).all()
    assert np.abs(enc.room_layout_target(info)).max() < 3.0  # within the authors' statistics


@pytest.mark.slow
def test_shipped_sets_equal_their_constructions():
    assert np.array_equal(ss.jigsaw_permutations(), ss.build_jigsaw_permutations())
    assert np.array_equal(ss.ab_bins(), ss.build_ab_bins())


def test_vanishing_point_statistics_follow_the_authors_camera_prior():
    mean, std = enc.vanishing_point_prior_statistics(samples=4000, seed=1)
    assert np.allclose(mean, enc.VANISHING_POINT_MEAN, atol=0.02)
    assert np.allclose(std, enc.VANISHING_POINT_STD, rtol=0.08, atol=0.002)
    # Unit vectors: every component within [-1, 1]; heading spreads x and y the most.
    assert np.abs(enc.VANISHING_POINT_MEAN).max() <= 1.0
    assert enc.VANISHING_POINT_STD[[0, 2, 3, 5]].min() > enc.VANISHING_POINT_STD[[6, 7]].max()
    # The released record's camera lies within a few spreads of the prior.
    released = enc.vanishing_point_target(POINT_INFO)
    z = (released - enc.VANISHING_POINT_MEAN) / enc.VANISHING_POINT_STD
    assert np.abs(z).max() < 4.0
    with pytest.raises(ValueError, match="at least 2"):
        enc.vanishing_point_prior_statistics(samples=1)


def test_selected_classes_keep_the_mass_of_indoor_object_targets():
    from taskonomy.datamodules.synth.classes import object_distribution

    selected = enc.selected_object_classes()
    assert len(selected) == len(set(selected.tolist())) == 100
    assert (np.diff(selected) > 0).all() and 0 <= selected[0] and selected[-1] < 1000
    # A chair and a bed in a room: almost all of the 1000-way mass is on selected classes.
    target = object_distribution({"chair": 30.0, "bed": 50.0, "background": 400.0})
    assert target[selected].sum() > 0.95
    restricted, mask = enc.class_selected_encoding(np.log(target))
    assert mask == 1.0 and math.isclose(float(restricted.sum()), 1.0, rel_tol=1e-5)
    chair = int(np.searchsorted(selected, 559))  # folding chair
    assert restricted[chair] > 10 / 100  # far above uniform


def test_pose_statistics_are_the_authors_in_both_places():
    # The z-scoring statistics of the authors' calculate_relative_camera_pose (the spec's
    # rounded values); the encodings and the pose networks must agree on them exactly.
    from taskonomy.tasks.networks import pose

    authors = {
        "FIXATED_POSE_MEAN": [-0.267, -0.0119, 0.0114, 0.0011, 0.0211, -4.020],
        "FIXATED_POSE_STD": [10.12, 8.11, 1.09, 1.22, 0.26, 10.06],
        "NONFIXATED_POSE_MEAN": [-0.0095, -0.0011, -0.0108, 0.0209, -0.0928, -2.5805],
        "NONFIXATED_POSE_STD": [1.023, 0.665, 1.038, 5.757, 1.376, 7.432],
    }
    for name, rounded in authors.items():
        values = np.asarray(getattr(enc, name))
        assert np.allclose(values, rounded, rtol=0.01, atol=1e-4), name
        assert np.array_equal(values, np.asarray(getattr(pose, name))), name
