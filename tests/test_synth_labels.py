"""Keypoint labels of the synthetic renderer: SURF and NARF-style responses (issue 5)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from taskonomy.datamodules import encodings as enc
from taskonomy.datamodules.synth import labels


def _blob_image(size: int, centre: tuple[float, float], radius: float,
                contrast: float = 0.5) -> np.ndarray:
    """An RGB image, light grey with one dark Gaussian blob, in fractions of the width."""
    rows, cols = np.mgrid[0:size, 0:size] + 0.5
    r0, c0 = centre[0] * size, centre[1] * size
    sigma = radius * size
    grey = 0.8 - contrast * np.exp(-((rows - r0) ** 2 + (cols - c0) ** 2) / (2 * sigma**2))
    return np.repeat((grey * 255).round().astype(np.uint8)[..., None], 3, axis=-1)


def _box_scene(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Normals and z-depth of a wall at 4 m with a box face at 2 m over its lower left part.

    The box's top face (normal up) shows as a band above its front face, so the box has two
    3D corners (top-right of the front face and of the top face) and straight edges between.
    """
    depth = np.full((size, size), 4.0)
    normal = np.zeros((size, size, 3))
    normal[..., 2] = 1.0  # facing the camera
    front = slice(size // 2, size), slice(0, size // 2)
    top = slice(size // 2 - size // 8, size // 2), slice(0, size // 2)
    depth[front] = 2.0
    depth[top] = 2.2
    normal[top] = (0.0, -1.0, 0.0)  # y down in the released frame: the top face points up
    return normal, depth


def test_surf_scales_are_the_released_pyramid_scaled_to_the_render():
    at_512 = labels.surf_sigmas(512)
    assert at_512[0] == pytest.approx(1.2)
    assert at_512[-1] == pytest.approx(1.2 * 195 / 9)
    assert labels.surf_sigmas(128)[-1] == pytest.approx(at_512[-1] / 4)
    # Scales finer than a 32-pixel render resolves collapse onto the finest it resolves.
    assert labels.surf_sigmas(32) == pytest.approx(
        [labels.MIN_SIGMA] + [s / 16 for s in at_512 if s / 16 > labels.MIN_SIGMA])


def test_hessian_response_selects_the_blob_scale_and_is_negative_on_saddles():
    size, blob = 128, 4.0
    rows, cols = np.mgrid[0:size, 0:size] - size / 2 + 0.5
    grey = np.exp(-(rows**2 + cols**2) / (2 * blob**2)).astype(np.float32)
    centre = [labels.hessian_response(grey, s)[size // 2, size // 2] for s in (1, 2, 4, 8, 16)]
    assert int(np.argmax(centre)) == 2  # σ = the blob's own scale
    assert min(centre) > 0
    saddle = (rows * cols / size**2).astype(np.float32)
    assert labels.hessian_response(saddle, 2.0)[32:96, 32:96].max() < 0


def test_keypoints2d_fire_on_blobs_not_on_flat_image():
    image = _blob_image(64, (0.5, 0.5), 0.06)
    raw = labels.keypoints2d(image)
    assert raw.dtype == np.uint16
    assert np.unravel_index(np.argmax(raw), raw.shape) in {(r, c) for r in (31, 32)
                                                          for c in (31, 32)}
    # A blob of contrast 0.5 at its own scale saturates the training clip range.
    target = enc.scaled16_encoding(raw, 64, enc.KEYPOINTS2D_SCALE)
    assert target.max() == pytest.approx(1.0)
    assert target[0, :8, :8].max() == pytest.approx(-1.0)  # far from the blob: the floor
    flat = np.full((64, 64, 3), 128, dtype=np.uint8)
    assert not labels.keypoints2d(flat).any()


@pytest.mark.parametrize("low", [32, 64])
def test_keypoints2d_label_does_not_depend_on_the_render_resolution(low):
    centre, radius = (0.4, 0.6), 0.05
    high = labels.keypoints2d(_blob_image(256, centre, radius)).astype(np.float32)
    small = labels.keypoints2d(_blob_image(low, centre, radius)).astype(np.float32)
    shrunk = cv2.resize(high, (low, low), interpolation=cv2.INTER_AREA)
    # Same peak strength and place, and the same shape (the old 3×3 Harris label had 16×
    # weaker, pixel-sized responses at 256² than at 32²).
    assert small.max() == pytest.approx(high.max(), rel=0.15)
    assert np.corrcoef(small.ravel(), shrunk.ravel())[0, 1] > 0.95


def test_narf_interest_is_zero_on_planes_and_peaks_at_3d_corners():
    size = 64
    plane_depth = np.fromfunction(lambda r, c: 2.0 + 0.02 * r, (size, size))
    plane_normal = np.zeros((size, size, 3))
    plane_normal[..., 1] = -0.6
    plane_normal[..., 2] = 0.8
    assert labels.narf_interest(plane_normal, plane_depth).max() < 1e-6
    normal, depth = _box_scene(size)
    interest = labels.narf_interest(normal, depth)
    assert 0.0 <= interest.min() and interest.max() <= 1.0
    corner = interest[size // 2 - 10:size // 2 + 6, size // 2 - 6:size // 2 + 6].max()
    straight_edge = interest[size // 2 - 12:size // 2 + 4, 4:12].max()  # along the box's top
    wall = interest[:16, :].max()
    assert corner > 0.5
    assert corner > 2 * straight_edge
    assert wall < 0.01
    raw = labels.keypoints3d(normal, depth)
    assert raw.dtype == np.uint16
    assert raw.max() == round(interest.max() * 65535)


def test_narf_interest_treats_missing_depth_as_no_geometry():
    normal, depth = _box_scene(48)
    depth[:6, :6] = np.inf  # a window: no depth, zero normal
    normal[:6, :6] = 0.0
    interest = labels.narf_interest(normal, depth)
    assert np.isfinite(interest).all()


@pytest.mark.parametrize("resolution", [32, 64])
def test_rendered_keypoint_targets_are_not_almost_all_floor(tmp_path, resolution):
    """The training targets carry signal at low resolution (the constant-baseline failure)."""
    from taskonomy.datamodules.domains import read_domain_file
    from taskonomy.datamodules.synth import synthesize

    synthesize(tmp_path, buildings=["hanson"], resolution=resolution, points=2, views=2)
    views = sorted((tmp_path / "hanson" / "keypoints2d").glob("*.png"))
    assert len(views) == 4
    above: dict[str, list[float]] = {"keypoints2d": [], "keypoints3d": []}
    for path in views:
        kp2d = read_domain_file(path, "keypoints2d")
        kp3d = read_domain_file(str(path).replace("keypoints2d", "keypoints3d"), "keypoints3d")
        targets = {"keypoints2d": enc.scaled16_encoding(kp2d, resolution, enc.KEYPOINTS2D_SCALE),
                   "keypoints3d": enc.scaled16_encoding(kp3d, resolution, 1.0)}
        for name, target in targets.items():
            above[name].append(float((target > -0.9).mean()))
    # The old 3×3 Harris labels left 5 % (keypoints2d) and 0.4 % (keypoints3d) of the pixels
    # above -0.9 at 32²; these leave 23 % and 39 % on the quality benchmark's buildings.
    assert np.mean(above["keypoints2d"]) > 0.10, above
    assert np.mean(above["keypoints3d"]) > 0.15, above


def _inverse_depth_image(inverse: np.ndarray) -> np.ndarray:
    return 1.0 / inverse


def test_occlusion_edges_skip_creases_and_grazing_planes():
    size = 32
    cols = np.arange(size, dtype=np.float64)[None, :].repeat(size, axis=0)
    rows = cols.T
    # A room corner: a wall facing the camera meets a wall receding fast (inverse depth is
    # affine on each plane and continuous across the crease), 2 m to 6 m away. One pixel spans
    # 10 cm of depth at the crease, which the old per-pixel jump test marked as an edge.
    corner = np.where(cols < 16, 0.5 - 0.002 * cols, 0.468 - 0.02 * (cols - 16))
    assert not labels.occlusion_strength(_inverse_depth_image(corner)).any()
    grazing_floor = 0.9 - 0.025 * rows  # 1.1 m to 7 m down the image
    assert not labels.occlusion_strength(_inverse_depth_image(grazing_floor)).any()


def test_occlusion_edges_keep_one_pixel_slivers():
    depth = np.full((16, 16), 4.0)
    depth[:, 7] = 2.0  # a chair leg one pixel wide in front of the wall
    strength = labels.occlusion_strength(depth)
    assert set(np.nonzero(strength)[1].tolist()) == {6, 7, 8}
    assert np.allclose(strength[strength > 0], 2.0)
    # A thin wall-mounted frame 5 cm proud of a wall at 4 m is below the 2 cm + 2 % threshold.
    frame = np.full((16, 16), 4.0)
    frame[4:12, 4:12] = 3.95
    assert not labels.occlusion_strength(frame).any()


def test_occlusion_edges_have_the_same_length_at_every_resolution():
    """A box in front of a wall: edge pixels per image row do not depend on the resolution."""
    lengths = []
    for size in (32, 64, 128):
        normal, depth = _box_scene(size)
        lengths.append((labels.occlusion_strength(depth) > 0).sum() / size)
    assert max(lengths) < 1.2 * min(lengths)
