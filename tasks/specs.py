"""The task table: one frozen :class:`TaskSpec` row per task of the Taskonomy dictionary.

Names follow the released data folders (``normal``, ``depth_zbuffer``, ...) where one exists, and
the visualpriors names otherwise (``autoencoding``, ``fixated_pose``, ...). ``code_name`` is the
authors' name in their code and released result pickles (``rgb2sfnorm``, ``segmentsemantic_rb``),
so their affinities can be read under our names.

The 26 rows are the networks the authors trained for the 1k/16k affinities: the 25 task-bank
tasks plus ``class_selected`` (object classification restricted to 100 ImageNet classes). The
``random`` projection of the paper is a baseline here, never a task. Third-party tasks join the
registry through the ``taskonomy.tasks`` entry-point group (:mod:`taskonomy.tasks.registry`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

#: Families: one LightningModule class each, configured by a spec.
FAMILIES = (
    "dense_regression",
    "dense_classification",
    "metric_segmentation",
    "classification",
    "low_dim_regression",
    "multi_view",
)

#: Output kinds: ``dense`` is C×H×W at the input resolution, ``dense_quarter`` is C×H/4×W/4
#: (colorization), ``vector`` is C values per sample.
OUTPUT_KINDS = ("dense", "dense_quarter", "vector")

#: Mask policies: which pixels or samples count in the loss.
MASKS = ("none", "depth_valid", "semantic_certain", "sample_valid")

#: Baseline candidates of the affinity tournament; never task names.
BASELINES = ("self", "pixels", "random")


@dataclass(frozen=True)
class TaskSpec:
    """One task of the dictionary.

    Attributes:
        name: Our name (the released data folder where one exists).
        code_name: The authors' name in their code and result pickles.
        family: One of :data:`FAMILIES`, or a plugin's own family name when the plugin
            registers its family class with the spec (:mod:`taskonomy.tasks.registry`).
        domains: Data domains a training sample reads (input, labels, masks), in released names.
        output_channels: Channels of a dense output, or length of a vector output.
        output_kind: One of :data:`OUTPUT_KINDS`.
        encoding: The training encoding of the target values, in words.
        loss: Name of the task loss (the per-image loss that win rates compare).
        metrics: Names of the metrics logged besides the loss.
        mask: One of :data:`MASKS`.
        views: Camera views per sample (2 or 3 for the multi-view tasks).
        towers: Encoder passes per sample (9 for jigsaw tiles, ``views`` otherwise).
        target: Whether the task can be a transfer target (``False``: source-only).
        input_channels: Channels of the encoder input (1 for colorization's L channel).
        batch_size: The authors' batch size.
        weight_decay: The authors' weight decay.
    """

    name: str
    code_name: str
    family: str
    domains: tuple[str, ...]
    output_channels: int
    output_kind: str
    encoding: str
    loss: str
    metrics: tuple[str, ...]
    mask: str = "none"
    views: int = 1
    towers: int = 1
    target: bool = True
    input_channels: int = 3
    batch_size: int = 32
    weight_decay: float = 2e-6

    def __post_init__(self) -> None:
        if not self.family or not self.family.isidentifier():
            raise ValueError(
                f"task {self.name!r}: family {self.family!r} is not a name; built-in families: "
                f"{FAMILIES}"
            )
        if self.output_kind not in OUTPUT_KINDS:
            raise ValueError(
                f"task {self.name!r}: unknown output kind {self.output_kind!r}; "
                f"valid: {OUTPUT_KINDS}"
            )
        if self.mask not in MASKS:
            raise ValueError(f"task {self.name!r}: unknown mask {self.mask!r}; valid: {MASKS}")
        if self.name in BASELINES:
            raise ValueError(f"{self.name!r} is a baseline name and cannot be a task")

    def output_shape(self, resolution: int) -> tuple[int, ...]:
        """Shape of one sample's output at an input resolution (without the batch axis)."""
        if self.output_kind == "dense":
            return (self.output_channels, resolution, resolution)
        if self.output_kind == "dense_quarter":
            return (self.output_channels, resolution // 4, resolution // 4)
        return (self.output_channels,)

    @property
    def label_domains(self) -> tuple[str, ...]:
        """Domains other than the RGB input."""
        return tuple(d for d in self.domains if d != "rgb")

    def replace(self, **changes: object) -> TaskSpec:
        """A copy of this spec with some fields changed."""
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]


_R, _D, _PI = "rgb", "depth_zbuffer", "point_info"
_DENSE_METRICS = ("l1", "rmse")
_T = TaskSpec

# fmt: off
#: The 26 built-in tasks. Columns: name, code name, family, domains, channels, output kind,
#: encoding, loss, metrics, then keyword exceptions.
BUILTIN_TASKS: tuple[TaskSpec, ...] = (
    _T("autoencoding", "autoencoder", "dense_regression", (_R,), 3, "dense", "rgb in [-1,1]", "l1", _DENSE_METRICS),  # noqa: E501
    _T("denoising", "denoise", "dense_regression", (_R,), 3, "dense", "rgb in [-1,1]; input + gaussian noise var 0.01", "l1", _DENSE_METRICS),  # noqa: E501
    _T("inpainting", "impainting_whole", "dense_regression", (_R,), 3, "dense", "rgb in [-1,1]; input centre H/2×W/2 zeroed", "l1", _DENSE_METRICS, target=False),  # noqa: E501
    _T("colorization", "colorization", "dense_classification", (_R,), 313, "dense_quarter", "L in [-1,1] → soft 313-bin ab at H/4", "soft_cross_entropy", ("top1",), input_channels=1, target=False),  # noqa: E501
    _T("jigsaw", "jigsaw", "classification", (_R,), 100, "vector", "index into the 100-permutation max-Hamming set", "cross_entropy", ("top1",), towers=9, target=False, batch_size=4),  # noqa: E501
    _T("principal_curvature", "curvature", "dense_regression", (_R, "principal_curvature", _D), 2, "dense", "k1,k2 z-scored ((x-[123.572,120.1])/[31.922,21.658])", "l2", _DENSE_METRICS, mask="depth_valid", weight_decay=1e-6),  # noqa: E501
    _T("depth_zbuffer", "rgb2depth", "dense_regression", (_R, _D), 1, "dense", "log(1+d)/log(2^16), d in 1/512 m", "l1", ("abs_rel", "delta1", "rmse"), mask="depth_valid"),  # noqa: E501
    _T("depth_euclidean", "rgb2mist", "dense_regression", (_R, "depth_euclidean", _D), 1, "dense", "log(1+d)/log(2^16), d in 1/512 m", "l1", ("abs_rel", "delta1", "rmse"), mask="depth_valid"),  # noqa: E501
    _T("normal", "rgb2sfnorm", "dense_regression", (_R, "normal", _D), 3, "dense", "camera-frame unit normal, (v/255-0.5)*2", "l1", ("angle_mean", "angle_11_25")  , mask="depth_valid"),  # noqa: E501
    _T("reshading", "reshade", "dense_regression", (_R, "reshading", _D), 1, "dense", "grey shading in [-1,1]", "l1", _DENSE_METRICS, mask="depth_valid"),  # noqa: E501
    _T("edge_texture", "edge2d", "dense_regression", (_R, "edge_texture"), 1, "dense", "16-bit Canny magnitude, clip [0,0.08] → [-1,1]", "l1", _DENSE_METRICS),  # noqa: E501
    _T("edge_occlusion", "edge3d", "dense_regression", (_R, "edge_occlusion", _D), 1, "dense", "16-bit, scale [0,0.00625] → [-1,1] unclipped, blur σ=4 px at 256²", "l1", _DENSE_METRICS, mask="depth_valid"),  # noqa: E501
    _T("keypoints2d", "keypoint2d", "dense_regression", (_R, "keypoints2d"), 1, "dense", "16-bit corner response, clip [0,0.005] → [-1,1]", "l1", _DENSE_METRICS),  # noqa: E501
    _T("keypoints3d", "keypoint3d", "dense_regression", (_R, "keypoints3d", _D), 1, "dense", "16-bit 3D keypoint response, [0,1] → [-1,1]", "l1", _DENSE_METRICS, mask="depth_valid"),  # noqa: E501
    _T("segment_unsup2d", "segment2d", "metric_segmentation", (_R, "segment_unsup2d"), 64, "dense", "8-bit superpixel ids; 64-d embedding", "metric", ("pair_accuracy",)),  # noqa: E501
    _T("segment_unsup25d", "segment25d", "metric_segmentation", (_R, "segment_unsup25d"), 64, "dense", "8-bit superpixel ids on geometry; 64-d embedding", "metric", ("pair_accuracy",)),  # noqa: E501
    _T("segment_semantic", "segmentsemantic_rb", "dense_classification", (_R, "segment_semantic"), 17, "dense", "COCO-16 label-1 (0=background); 0 in file = uncertain", "weighted_cross_entropy", ("miou", "pixel_accuracy"), mask="semantic_certain"),  # noqa: E501
    _T("class_object", "class_1000", "classification", (_R, "class_object"), 1000, "vector", "1000-way ImageNet distribution", "soft_cross_entropy", ("top1", "kl"), mask="sample_valid"),  # noqa: E501
    _T("class_selected", "class_selected", "classification", (_R, "class_object"), 100, "vector", "100 selected ImageNet classes, renormalized", "soft_cross_entropy", ("top1", "kl"), mask="sample_valid", target=False),  # noqa: E501
    _T("class_scene", "class_places", "classification", (_R, "class_scene"), 63, "vector", "63 home/workspace Places365 classes, renormalized", "soft_cross_entropy", ("top1", "kl"), mask="sample_valid", weight_decay=1e-5),  # noqa: E501
    _T("room_layout", "room_layout", "low_dim_regression", (_R, _PI), 9, "vector", "box centre (3), camera euler (3), extents (3), z-scored", "mse", ("centre_error", "rotation_error")),  # noqa: E501
    _T("vanishing_point", "vanishing_point_well_defined", "low_dim_regression", (_R, _PI), 9, "vector", "3 unit VP directions in the camera frame", "mse", ("angle_error",)),  # noqa: E501
    _T("fixated_pose", "fix_pose", "multi_view", (_R, _PI), 6, "vector", "relative euler (3) + translation (3), z-scored (fixated stats)", "pose", ("rotation_error", "translation_error"), views=2, towers=2, batch_size=16),  # noqa: E501
    _T("nonfixated_pose", "non_fixated_pose", "multi_view", (_R, _PI, "nonfixated_matches"), 6, "vector", "relative euler (3) + translation (3), z-scored (non-fixated stats)", "pose", ("rotation_error", "translation_error"), views=2, towers=2, batch_size=8),  # noqa: E501
    _T("egomotion", "ego_motion", "multi_view", (_R, _PI), 18, "vector", "three pairwise fixated poses (0,1),(0,2),(1,2), z-scored", "pose_cycle", ("rotation_error", "translation_error"), views=3, towers=3, batch_size=8),  # noqa: E501
    _T("point_matching", "point_match", "multi_view", (_R, _PI, "nonfixated_matches"), 2, "vector", "1 iff both views are centred on the same point", "cross_entropy", ("accuracy",), views=2, towers=2),  # noqa: E501
)
# fmt: on

#: Authors' code name → our name, for the 26 tasks.
CODE_NAMES: dict[str, str] = {spec.code_name: spec.name for spec in BUILTIN_TASKS}


def metric_key(stage: str, metric: str) -> str:
    """The logged name of a metric, e.g. ``metric_key("test", "loss") == "test/loss"``.

    Training logs and analysis both build metric names through this function.
    """
    return f"{stage}/{metric}"
