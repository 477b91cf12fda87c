"""Decoders from released domain values into the paper's training encodings (spec §1b).

Inputs are the arrays :func:`taskonomy.datamodules.domains.decode_domain` returns (uint8/uint16
images at file resolution, float vectors, ``point_info`` dicts); outputs are float32 (or int64
label) numpy arrays in C×H×W at the training ``resolution``. The numbers follow the authors'
``code/lib/data/load_ops.py``:

- RGB: bilinear resize, [0,1] → [-1,1].
- Depth (z-buffer and euclidean): ``log(1 + d) / log(2^16)`` on raw 1/512 m units, computed
  before the resize; valid where raw z-buffer depth < 64500; metres kept as ``raw``.
- Normals (v/255 − 0.5)·2; curvature channels 0,1 z-scored; reshading grey → [-1,1].
- 16-bit edges/keypoints: value/65535 clipped to ``current_scale``, rescaled to [-1,1]; occlusion
  edges unclipped and blurred (σ = 4 px at 256²).
- Semantic labels: label − 1 (background 0), uncertain (0 in the file) masked.
- Classes: softmax of logits or renormalized probabilities; scenes restricted to the authors' 63
  home/workspace Places365 classes.
- ``point_info``: room layout (9), well-defined vanishing points (9), relative poses (6).

Vanishing points stay raw unit vectors (the authors' target); :data:`VANISHING_POINT_MEAN` and
:data:`VANISHING_POINT_STD` describe their spread under the authors' camera statistics, so an FC
head can predict them in z-scored units and rescale (see
:func:`vanishing_point_prior_statistics`).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from typing import Any

import cv2
import numpy as np
from scipy.spatial.transform import Rotation

from taskonomy.datamodules.domains import DEPTH_MISSING, DEPTH_UNITS_PER_METRE

#: Raw depth at and above which a pixel is invalid in training (the authors' threshold).
DEPTH_VALID_BELOW = 64500
LOG_DEPTH_NORMALIZER = math.log(2.0**16)
CURVATURE_MEAN = np.array([123.572, 120.1], dtype=np.float32)
CURVATURE_STD = np.array([31.922, 21.658], dtype=np.float32)
#: ``current_scale`` upper bounds (in [0,1] units of 65535) of the 16-bit domains.
EDGE_TEXTURE_SCALE = 0.08
EDGE_OCCLUSION_SCALE = 0.00625
KEYPOINTS2D_SCALE = 0.005
KEYPOINTS3D_SCALE = 1.0
#: Blur of occlusion edges in pixels at 256² (scaled with the resolution).
EDGE_OCCLUSION_BLUR_AT_256 = 4.0

ROOM_LAYOUT_MEAN = np.array([0.006072743318127848, 0.010272365569691076, -3.135909774145468,
                             1.5603802322235532, 5.6228218371102496e-05, -1.5669352793761442,
                             5.622875878174759, 4.082800262277375, 2.7713941642895956])
ROOM_LAYOUT_STD = np.array([0.8669452525283652, 0.687915294956501, 2.080513632043758,
                            0.19627420479282623, 0.014680602791251812, 0.4183827359302299,
                            3.991778013006544, 2.703495278378409, 1.2269185938626304])
#: Mean and spread of the 9 well-defined vanishing-point values under the authors' camera
#: orientations (:func:`vanishing_point_prior_statistics`, 200k samples, seed 0). Roll-free
#: cameras make value 6 nearly constant; the others are dominated by heading and pitch.
VANISHING_POINT_MEAN = np.array([0.6362, 0.0066, -0.6247, -0.6369, 0.0063, -0.6240, 0.0001, 0.9810,
                                 0.0102])
VANISHING_POINT_STD = np.array([0.3077, 0.1368, 0.3026, 0.3079, 0.1367, 0.3025, 0.0144, 0.0268,
                                0.1928])
FIXATED_POSE_MEAN = np.array([-2.67375523e-01, -1.19147040e-02, 1.14497274e-02, 1.10903410e-03,
                              2.10509948e-02, -4.02013549e00])
FIXATED_POSE_STD = np.array([10.12015407, 8.1103528, 1.09171896, 1.21579016, 0.26040945,
                             10.05966329])
NONFIXATED_POSE_MEAN = np.array([-9.53197445e-03, -1.05196691e-03, -1.07545642e-02,
                                 2.08785638e-02, -9.27858049e-02, -2.58052205e00])
NONFIXATED_POSE_STD = np.array([1.02316223, 0.66477511, 1.03806996, 5.75692889, 1.37604962,
                                7.43157247])


# ---------------------------------------------------------------------------------------------
# Resizing


def resize(image: np.ndarray, resolution: int, *, nearest: bool = False) -> np.ndarray:
    """Resize an H×W or H×W×C array to ``resolution``² (bilinear, or nearest for labels).

    Nearest takes the pixel under each output pixel's centre, as PIL's (the authors' labels
    went through ``scipy.misc.imresize(..., interp='nearest')``); OpenCV's plain nearest
    takes the one up and left of it.
    """
    if image.shape[0] == resolution and image.shape[1] == resolution:
        return image
    interpolation = cv2.INTER_NEAREST_EXACT if nearest else cv2.INTER_LINEAR
    out = cv2.resize(image, (resolution, resolution), interpolation=interpolation)
    if image.ndim == 3 and out.ndim == 2:
        out = out[:, :, None]
    return np.asarray(out)


def _chw(image: np.ndarray) -> np.ndarray:
    image = image if image.ndim == 3 else image[:, :, None]
    return np.ascontiguousarray(image.transpose(2, 0, 1), dtype=np.float32)


def resize_mask(valid: np.ndarray, resolution: int) -> np.ndarray:
    """Resize a boolean mask bilinearly and keep pixels whose value stays ≥ 0.99 (the authors')."""
    resized = resize(valid.astype(np.float32), resolution)
    return (resized >= 0.99).astype(np.float32)[None]


# ---------------------------------------------------------------------------------------------
# Dense domains


def rgb_encoding(rgb: np.ndarray, resolution: int | None) -> np.ndarray:
    """uint8 H×W×3 RGB → 3×R×R float in [-1, 1] (``None``: 3×H×W, the stored size)."""
    image = rgb.astype(np.float32) / 255.0
    if resolution is not None:
        image = resize(image, resolution)
    return _chw(image * 2.0 - 1.0)


def depth_valid_mask(zbuffer_raw: np.ndarray, resolution: int) -> np.ndarray:
    """1×R×R float mask: raw z-buffer depth below :data:`DEPTH_VALID_BELOW`."""
    return resize_mask(zbuffer_raw < DEPTH_VALID_BELOW, resolution)


def depth_encoding(raw: np.ndarray, resolution: int) -> tuple[np.ndarray, np.ndarray]:
    """uint16 depth (1/512 m) → ``(log target 1×R×R, metres 1×R×R)``.

    The log encoding is applied before the resize, as the authors do; metres of missing pixels
    (65535) are 0 and must be masked.
    """
    log_depth = np.log1p(raw.astype(np.float32)) / LOG_DEPTH_NORMALIZER
    metres = np.where(raw == DEPTH_MISSING, 0.0, raw / DEPTH_UNITS_PER_METRE).astype(np.float32)
    return _chw(resize(log_depth, resolution)), _chw(resize(metres, resolution, nearest=True))


def normal_encoding(normal: np.ndarray, resolution: int) -> np.ndarray:
    """uint8 127-centred normals → 3×R×R in [-1, 1]."""
    return _chw(resize(normal.astype(np.float32) / 255.0, resolution) * 2.0 - 1.0)


def curvature_encoding(curvature: np.ndarray, resolution: int) -> np.ndarray:
    """uint8 curvature (k1, k2 in channels 0, 1) → 2×R×R z-scored."""
    values = resize(curvature[:, :, :2].astype(np.float32), resolution)
    return _chw((values - CURVATURE_MEAN) / CURVATURE_STD)


def reshading_encoding(reshading: np.ndarray, resolution: int) -> np.ndarray:
    """RGB-stored grey shading → 1×R×R in [-1, 1] (luminance, as skimage ``as_grey``)."""
    grey = reshading.astype(np.float32) @ np.array([0.2125, 0.7154, 0.0721], np.float32) / 255.0
    return _chw(resize(grey, resolution) * 2.0 - 1.0)


def scaled16_encoding(raw: np.ndarray, resolution: int, upper: float, *,
                      clip: bool = True) -> np.ndarray:
    """uint16 response → 1×R×R: value/65535 in ``[0, upper]`` rescaled to [-1, 1]."""
    values = resize(raw.astype(np.float32) / 65535.0, resolution)
    if clip:
        values = np.clip(values, 0.0, upper)
    return _chw(values / upper * 2.0 - 1.0)


def edge_occlusion_encoding(raw: np.ndarray, resolution: int) -> np.ndarray:
    """uint16 occlusion edges → 1×R×R, unclipped, Gaussian-blurred (σ = 4 px at 256²)."""
    values = scaled16_encoding(raw, resolution, EDGE_OCCLUSION_SCALE, clip=False)[0]
    sigma = EDGE_OCCLUSION_BLUR_AT_256 * resolution / 256.0
    blurred = cv2.GaussianBlur(values, (0, 0), sigmaX=sigma, sigmaY=sigma,
                               borderType=cv2.BORDER_REFLECT)
    return blurred[None].astype(np.float32)


def segment_ids(labels: np.ndarray, resolution: int) -> np.ndarray:
    """uint8 superpixel ids → R×R int64 (nearest resize)."""
    return resize(labels, resolution, nearest=True).astype(np.int64)


def semantic_encoding(labels: np.ndarray, resolution: int) -> tuple[np.ndarray, np.ndarray]:
    """uint8 labels (0 uncertain, 1 background, 2..17) → ``(label − 1, mask)``, both R×R.

    Uncertain pixels get class 0 and mask 0, so any loss with the mask ignores them.
    """
    resized = resize(labels, resolution, nearest=True).astype(np.int64)
    mask = (resized > 0).astype(np.float32)
    return np.maximum(resized - 1, 0), mask


# ---------------------------------------------------------------------------------------------
# Class distributions


def to_distribution(values: np.ndarray) -> np.ndarray:
    """A probability vector from stored class values.

    Probabilities are renormalized; anything else (negative values, values above 1, or a sum
    far from 1) is treated as logits and soft-maxed, as the authors' ``class_1000_softmax``
    does. The sum may be off by a few percent: probabilities stored in half precision over 1000
    classes drift, and soft-maxing them would give a nearly uniform target.
    """
    vector = np.asarray(values, dtype=np.float64).reshape(-1)
    total = vector.sum()
    if vector.min() >= 0 and vector.max() <= 1 and abs(total - 1.0) < 0.05:
        return (vector / total).astype(np.float32)
    shifted = np.exp(vector - vector.max())
    return (shifted / shifted.sum()).astype(np.float32)


def places_mask() -> np.ndarray:
    """Boolean (365,) mask of the authors' 63 home/workspace Places365 classes."""
    from taskonomy.datamodules.synth.classes import places_home_workspace_mask

    return places_home_workspace_mask()


#: ImageNet indices of ``class_selected``: 100 classes of furniture, fixtures, appliances and
#: household objects found in homes and offices, sorted (see :func:`selected_object_classes`).
SELECTED_OBJECT_CLASSES: tuple[int, ...] = (
    409, 412, 421, 423, 431, 434, 435, 440, 441, 446, 453, 462, 463, 470, 492, 493, 495, 504,
    505, 508, 516, 520, 521, 526, 527, 528, 530, 532, 533, 534, 539, 545, 548, 550, 553, 556,
    559, 564, 567, 588, 606, 619, 620, 632, 648, 651, 659, 664, 673, 681, 700, 720, 721, 725,
    737, 738, 742, 750, 753, 754, 760, 761, 765, 766, 773, 782, 789, 794, 799, 804, 809, 811,
    827, 831, 846, 849, 850, 851, 854, 859, 861, 868, 876, 881, 882, 883, 892, 894, 896, 897,
    898, 899, 904, 905, 907, 909, 921, 923, 968, 999,
)


def selected_object_classes() -> np.ndarray:
    """Indices of the 100 ImageNet classes of ``class_selected``.

    The authors' ``selected_class.npy`` (``code/lib/data/`` of their repository) is not bundled
    here. The stand-in keeps what the restriction
    is for on indoor scans: the 100 ImageNet classes an indoor image can show (furniture,
    fixtures, appliances, household objects; :data:`SELECTED_OBJECT_CLASSES`), so the 100-way
    target keeps the mass of the distillation target. An arbitrary pick such as every tenth
    class would keep almost none of it and leave a near-uniform target.
    """
    return np.asarray(SELECTED_OBJECT_CLASSES, dtype=np.int64)


def _class_vector(values: np.ndarray, classes: int, domain: str) -> np.ndarray:
    """The stored class values as a distribution over ``classes``.

    Raises:
        ValueError: The file holds another number of values (another label set's file).
    """
    size = int(np.asarray(values).size)
    if size != classes:
        raise ValueError(f"a {domain} file holds {size} values, not the {classes} classes of "
                         f"its label set; repack the domain from the released {domain} files")
    return to_distribution(values)


def class_object_encoding(values: np.ndarray | None) -> tuple[np.ndarray, float]:
    """1000-way target and sample mask (a missing file gives uniform and mask 0).

    Raises:
        ValueError: The file does not hold 1000 values.
    """
    if values is None:
        return np.full(1000, 1e-3, np.float32), 0.0
    return _class_vector(values, 1000, "class_object"), 1.0


def class_selected_encoding(values: np.ndarray | None) -> tuple[np.ndarray, float]:
    """100-way target restricted to :func:`selected_object_classes`, renormalized.

    Raises:
        ValueError: The file does not hold 1000 values.
    """
    if values is None:
        return np.full(100, 1e-2, np.float32), 0.0
    selected = _class_vector(values, 1000, "class_object")[selected_object_classes()]
    return (selected / max(float(selected.sum()), 1e-12)).astype(np.float32), 1.0


def class_scene_encoding(values: np.ndarray | None) -> tuple[np.ndarray, float]:
    """63-way target: the 365-way distribution restricted to home/workspace classes.

    Raises:
        ValueError: The file does not hold 365 values.
    """
    if values is None:
        return np.full(63, 1.0 / 63, np.float32), 0.0
    kept = _class_vector(values, 365, "class_scene")[places_mask()]
    return (kept / max(float(kept.sum()), 1e-12)).astype(np.float32), 1.0


# ---------------------------------------------------------------------------------------------
# point_info geometry (``camera_rotation_final`` is an extrinsic xyz Euler angle)


def euler_to_matrix(angles: Sequence[float]) -> np.ndarray:
    """Rotation matrix of an extrinsic xyz Euler angle (transforms3d ``sxyz``)."""
    return np.asarray(Rotation.from_euler("xyz", list(angles)).as_matrix())


def matrix_to_euler(matrix: np.ndarray) -> np.ndarray:
    """Extrinsic xyz Euler angle of a rotation matrix (transforms3d ``sxyz``)."""
    return np.asarray(Rotation.from_matrix(matrix).as_euler("xyz"))


def _camera_matrix(info: dict[str, Any], flip_xy: bool) -> np.ndarray:
    matrix = np.eye(4)
    matrix[:3, :3] = euler_to_matrix(info["camera_rotation_final"])
    matrix[:3, 3] = info["camera_location"]
    if flip_xy:  # the authors swap x and y of the camera frame for layout and vanishing points
        row0 = matrix[0].copy()
        matrix[0] = matrix[1]
        matrix[1] = -row0
    return matrix


def _z_rotations() -> list[np.ndarray]:
    return [np.asarray(Rotation.from_rotvec([0.0, 0.0, k * math.pi / 2]).as_matrix())
            for k in range(4)]


def _angle_to_view_axis(world_dir: np.ndarray, rotation: np.ndarray) -> float:
    in_cam = rotation.T @ world_dir
    return math.degrees(math.acos(float(np.clip(-in_cam[2], -1.0, 1.0))))


def _well_defined_world_rotation(info: dict[str, Any], use_y: bool) -> np.ndarray:
    """Inverse of the 90°·k turn about world z that brings world x (and y) nearest the view."""
    rotation = _camera_matrix(info, flip_xy=True)[:3, :3]
    best: tuple[float, int] | None = None
    turns = _z_rotations()
    for k, turn in enumerate(turns):
        cost = _angle_to_view_axis(turn @ np.array([1.0, 0, 0]), rotation)
        if use_y:
            cost += _angle_to_view_axis(turn @ np.array([0, 1.0, 0]), rotation)
        if best is None or cost < best[0]:
            best = (cost, k)
    assert best is not None
    return np.asarray(np.linalg.inv(turns[best[1]]))


def vanishing_point_target(info: dict[str, Any]) -> np.ndarray:
    """The 9 values of ``vanishing_point_well_defined``: world axes in the camera frame."""
    matrix = _camera_matrix(info, flip_xy=True)[:3, :3]
    rotation = _well_defined_world_rotation(info, use_y=True) @ matrix
    inverse = np.linalg.inv(rotation)
    return np.concatenate([inverse @ axis for axis in np.eye(3)]).astype(np.float32)


def room_layout_target(info: dict[str, Any], *, normalize: bool = True) -> np.ndarray:
    """The 9 values of room layout.

    Box centre in the camera frame (3), camera Euler angle relative to the x-major world (3),
    box extents (3); z-scored with the authors' statistics.
    """
    box = info["bounding_box_ranges"]
    ranges = np.array([box["x"], (-np.asarray(box["y"], dtype=float))[::-1], box["z"]])
    camera = _camera_matrix(info, flip_xy=True)
    world = np.eye(4)
    world[:3, :3] = _well_defined_world_rotation(info, use_y=False)
    ranges = np.sort(world[:3, :3] @ ranges, axis=1)
    camera = world @ camera
    euler = matrix_to_euler(camera[:3, :3])
    vertices = np.array(list(itertools.product(*ranges)))
    homogeneous = np.concatenate([vertices, np.ones((len(vertices), 1))], axis=1)
    in_camera = (homogeneous @ np.linalg.inv(camera).T)[:, :3]
    values = np.concatenate([in_camera.mean(axis=0), euler, ranges[:, 1] - ranges[:, 0]])
    if normalize:
        values = (values - ROOM_LAYOUT_MEAN) / ROOM_LAYOUT_STD
    return values.astype(np.float32)


def relative_pose(info1: dict[str, Any], info2: dict[str, Any], *, fixated: bool = True,
                  normalize: bool = True) -> np.ndarray:
    """Pose of view 1 relative to view 2.

    Euler(R2ᵀR1) (3) and R2ᵀ(c1 − c2) (3), z-scored with the fixated or non-fixated statistics.
    """
    r1 = euler_to_matrix(info1["camera_rotation_final"])
    r2 = euler_to_matrix(info2["camera_rotation_final"])
    c1 = np.asarray(info1["camera_location"], dtype=float)
    c2 = np.asarray(info2["camera_location"], dtype=float)
    pose = np.concatenate([matrix_to_euler(r2.T @ r1), r2.T @ (c1 - c2)])
    if normalize:
        mean, std = ((FIXATED_POSE_MEAN, FIXATED_POSE_STD) if fixated
                     else (NONFIXATED_POSE_MEAN, NONFIXATED_POSE_STD))
        pose = (pose - mean) / std
    return pose.astype(np.float32)


def egomotion_target(infos: Sequence[dict[str, Any]]) -> np.ndarray:
    """18 values: fixated relative poses of the view pairs (0,1), (0,2), (1,2)."""
    if len(infos) != 3:
        raise ValueError(f"egomotion needs 3 views of one point, got {len(infos)}")
    return np.concatenate([relative_pose(infos[i], infos[j]) for i, j in ((0, 1), (0, 2), (1, 2))])


def _axis_rotations(axis: int, angles: np.ndarray) -> np.ndarray:
    """``N×3×3`` rotations by ``angles`` about coordinate axis ``axis`` (0 x, 1 y, 2 z)."""
    c, s = np.cos(angles), np.sin(angles)
    i, j = [k for k in range(3) if k != axis]
    out = np.zeros((len(angles), 3, 3))
    out[:, axis, axis] = 1.0
    out[:, i, i], out[:, i, j], out[:, j, i], out[:, j, j] = c, -s, s, c
    return out


def vanishing_point_prior_statistics(samples: int = 200_000, seed: int = 0
                                     ) -> tuple[np.ndarray, np.ndarray]:
    """Mean and standard deviation of :func:`vanishing_point_target` over plausible cameras.

    Cameras get a uniform heading and the pitch and roll statistics of the authors' data, read
    off :data:`ROOM_LAYOUT_MEAN`/:data:`ROOM_LAYOUT_STD` (the room-layout Euler x angle is
    π/2 + pitch and its y angle is the roll). The well-defined target keeps every heading within
    one quadrant, so these statistics hold for any scene whose walls follow the world axes.

    Args:
        samples: Number of random cameras.
        seed: Seed of the generator.

    Returns:
        ``(mean, std)``, each of 9 values.

    Raises:
        ValueError: ``samples`` is below 2.
    """
    if samples < 2:
        raise ValueError(f"samples must be at least 2 to estimate a spread, got {samples}")
    rng = np.random.default_rng(seed)
    heading = rng.uniform(-math.pi, math.pi, samples)
    pitch = rng.normal(ROOM_LAYOUT_MEAN[3] - math.pi / 2, ROOM_LAYOUT_STD[3], samples)
    roll = rng.normal(ROOM_LAYOUT_MEAN[4], ROOM_LAYOUT_STD[4], samples)
    # A level OpenGL camera looking along world +x: right = -y, up = +z, backwards = -x.
    level = np.array([[0.0, 0.0, -1.0], [-1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    rotations = (_axis_rotations(2, heading) @ level @ _axis_rotations(0, pitch)
                 @ _axis_rotations(2, roll))
    angles = Rotation.from_matrix(rotations).as_euler("xyz")
    values = np.stack([vanishing_point_target({"camera_rotation_final": a, "camera_location":
                                               (0.0, 0.0, 0.0)}) for a in angles])
    return values.mean(axis=0), values.std(axis=0)
