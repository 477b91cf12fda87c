"""One training sample per task from decoded domain files: the batch contract.

:func:`make_task_sample` is the single place where a task's input, target, mask and raw values
are made; the datamodule calls it for every sample and it works without shards (e.g. on files
read with :func:`taskonomy.datamodules.domains.read_domain_file`).

Batch contract (after :func:`collate_batch`): ``batch["__key__"]`` is a list of sample keys,
``batch["rgb"]`` is B×3×H×W in [-1,1], and ``batch[task]`` holds ``"input"``, ``"target"`` and,
when the task has them, ``"mask"`` and ``"raw"`` tensors (shapes in :func:`make_task_sample`).
Domains requested by name (not through tasks) arrive as ``batch["domains"][domain]`` in their
stored units (:func:`domain_tensor`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from taskonomy.datamodules import encodings as enc
from taskonomy.datamodules import selfsupervised as ss
from taskonomy.datamodules.domains import decode_domain
from taskonomy.datamodules.multiview import MULTIVIEW_TASKS
from taskonomy.datamodules.shards import MissingValue


class BadSampleError(ValueError):
    """A sample cannot be used (a needed file is missing or corrupt); the handler skips it."""


SampleBuilder = Callable[[dict[str, Any], np.random.Generator, int], dict[str, Any]]
_BUILDERS: dict[str, SampleBuilder] = {}


def register_sample_builder(task: str, builder: SampleBuilder) -> None:
    """Register how a (plugin) task makes its sample from decoded single-view domains.

    ``builder(decoded, rng, resolution)`` returns numpy arrays or tensors under ``"input"``,
    ``"target"`` and optionally ``"mask"``/``"raw"``. ``decoded`` maps each domain read to its
    decoded file at its stored size (:func:`~taskonomy.datamodules.domains.decode_domain`; each
    :class:`~taskonomy.datamodules.domains.Domain` kind says what it gives), which the builder
    resizes itself (:func:`~taskonomy.datamodules.encodings.resize`). A sample missing a
    file of the task's domains is skipped before the builder is called; a builder may raise
    :class:`BadSampleError` to skip one too.

    Raises:
        ValueError: the task already has a builder.
    """
    if task in _BUILDERS:
        raise ValueError(f"task {task!r} already has a sample builder")
    _BUILDERS[task] = builder


def decode_sample(raw: dict[str, Any]) -> dict[str, Any]:
    """Decode a shard sample's bytes per domain; missing files become ``None``.

    Raises:
        BadSampleError: a file does not decode (e.g. a PNG corrupted after packing).
    """
    decoded: dict[str, Any] = {}
    for name, value in raw.items():
        if name.startswith("__"):
            decoded[name] = value
        elif isinstance(value, MissingValue) or value is None:
            decoded[name] = None
        else:
            try:
                decoded[name] = decode_domain(name, value)
            except Exception as error:  # noqa: BLE001 - any decoder failure is a bad sample
                raise BadSampleError(f"sample {raw.get('__key__')}: {name}: {error}") from error
    return decoded


def _need(decoded: dict[str, Any], domain: str) -> Any:
    value = decoded.get(domain)
    if value is None:
        raise BadSampleError(f"sample {decoded.get('__key__', '?')}: no usable {domain!r} file")
    return value


def _rgb01(decoded: dict[str, Any], resolution: int) -> np.ndarray:
    return enc.resize(_need(decoded, "rgb").astype(np.float32) / 255.0, resolution)


def _depth_mask(decoded: dict[str, Any], resolution: int) -> np.ndarray:
    return enc.depth_valid_mask(_need(decoded, "depth_zbuffer"), resolution)


def _dense(target: np.ndarray, mask: np.ndarray | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"target": target}
    if mask is not None:
        out["mask"] = mask
    return out


def _single_view(task: str, d: dict[str, Any], rng: np.random.Generator, r: int,
                 jigsaw_tile: int, label_sets: ss.LabelSets | None) -> dict[str, Any]:
    # The datamodule passes the RGB encoding it already made for ``batch["rgb"]``.
    ready = d.get("__rgb__")
    rgb = ready if ready is not None and ready.shape[-1] == r else enc.rgb_encoding(
        _need(d, "rgb"), r)
    if task == "autoencoding":
        return {"input": rgb, "target": rgb}
    if task == "denoising":
        return {"input": ss.denoising_input(_rgb01(d, r), rng), "target": rgb}
    if task == "inpainting":
        return {"input": ss.inpainting_input(rgb), "target": rgb}
    if task == "colorization":
        lightness, soft = ss.colorization_sample(
            _need(d, "rgb"), r, label_sets.ab_bins if label_sets else None)
        return {"input": lightness, "target": soft}
    if task == "jigsaw":  # tiles from the stored image (the authors cut them from the 512² one)
        tiles, k = ss.jigsaw_sample(enc.rgb_encoding(_need(d, "rgb"), None), rng, jigsaw_tile,
                                    label_sets.jigsaw_permutations if label_sets else None)
        return {"input": tiles, "target": np.int64(k)}
    out: dict[str, Any] = {"input": rgb}
    if task == "principal_curvature":
        out |= _dense(enc.curvature_encoding(_need(d, task), r), _depth_mask(d, r))
    elif task in ("depth_zbuffer", "depth_euclidean"):
        target, metres = enc.depth_encoding(_need(d, task), r)
        out |= _dense(target, _depth_mask(d, r)) | {"raw": metres}
    elif task == "normal":
        out |= _dense(enc.normal_encoding(_need(d, task), r), _depth_mask(d, r))
    elif task == "reshading":
        out |= _dense(enc.reshading_encoding(_need(d, task), r), _depth_mask(d, r))
    elif task == "edge_texture":
        out |= _dense(enc.scaled16_encoding(_need(d, task), r, enc.EDGE_TEXTURE_SCALE))
    elif task == "edge_occlusion":
        out |= _dense(enc.edge_occlusion_encoding(_need(d, task), r), _depth_mask(d, r))
    elif task == "keypoints2d":
        out |= _dense(enc.scaled16_encoding(_need(d, task), r, enc.KEYPOINTS2D_SCALE))
    elif task == "keypoints3d":
        out |= _dense(enc.scaled16_encoding(_need(d, task), r, enc.KEYPOINTS3D_SCALE),
                      _depth_mask(d, r))
    elif task in ("segment_unsup2d", "segment_unsup25d"):
        out["target"] = enc.segment_ids(_need(d, task), r)
    elif task == "segment_semantic":
        labels, mask = enc.semantic_encoding(_need(d, task), r)
        out |= {"target": labels, "mask": mask}
    elif task in ("class_object", "class_selected", "class_scene"):
        domain = "class_scene" if task == "class_scene" else "class_object"
        encoder = {"class_object": enc.class_object_encoding,
                   "class_selected": enc.class_selected_encoding,
                   "class_scene": enc.class_scene_encoding}[task]
        try:
            target, valid = encoder(d.get(domain))
        except ValueError as error:  # a file of another label set: skip the sample, say why
            raise BadSampleError(f"sample {d.get('__key__', '?')}: {error}") from error
        out |= {"target": target, "mask": np.float32(valid)}
    elif task == "room_layout":
        out["target"] = enc.room_layout_target(_need(d, "point_info"))
    elif task == "vanishing_point":
        out["target"] = enc.vanishing_point_target(_need(d, "point_info"))
    elif (domains := _plugin_domains(task)) is not None:
        # A plugin's builder gets only usable files: a missing one skips the sample, as for
        # the built-in tasks, instead of reaching the builder as None.
        for domain in domains:
            _need(d, domain)
        return _BUILDERS[task](d, rng, r)
    else:
        raise ValueError(
            f"no sample builder for task {task!r}; register one with "
            "taskonomy.datamodules.task_samples.register_sample_builder"
        )
    return out


def require_sample_builder(task: str) -> None:
    """Check that a registered task's samples can be made (a plugin must register a builder).

    Raises:
        ValueError: a plugin task without a sample builder, naming the call that registers one.
    """
    from taskonomy.tasks.registry import get_registered

    if not get_registered(task).plugin or _plugin_domains(task) is not None:
        return
    raise ValueError(
        f"no sample builder for task {task!r}: its plugin must call taskonomy.datamodules."
        f"task_samples.register_sample_builder({task!r}, build) when the module its entry "
        "point names is imported"
    )


def _plugin_domains(task: str) -> tuple[str, ...] | None:
    """The domains of a plugin task with a sample builder; ``None`` if it has none.

    Looking the task up loads its plugin, which registers the builder on import.
    """
    from taskonomy.tasks.registry import get_spec

    try:
        domains = get_spec(task).domains
    except ValueError:  # not a task at all
        return None
    return domains if task in _BUILDERS else None


def _same_point(a: dict[str, Any], b: dict[str, Any]) -> bool:
    if "__key__" in a and "__key__" in b:
        return bool(a["__key__"].rsplit("__", 1)[0] == b["__key__"].rsplit("__", 1)[0])
    pa, pb = _need(a, "point_info"), _need(b, "point_info")
    return bool(np.allclose(pa["point_location"], pb["point_location"], atol=1e-6))


def _multi_view(task: str, views: Sequence[dict[str, Any]], r: int) -> dict[str, Any]:
    expected = MULTIVIEW_TASKS[task]
    if len(views) != expected:
        raise ValueError(f"task {task!r} takes {expected} views, got {len(views)}")
    images = np.stack([enc.rgb_encoding(_need(v, "rgb"), r) for v in views])
    infos = [_need(v, "point_info") for v in views]
    if task == "fixated_pose":
        target = enc.relative_pose(infos[0], infos[1], fixated=True)
    elif task == "nonfixated_pose":
        target = enc.relative_pose(infos[0], infos[1], fixated=False)
    elif task == "egomotion":
        target = enc.egomotion_target(infos)
    else:
        target = np.int64(_same_point(views[0], views[1]))
    return {"input": images, "target": target}


def _to_tensor(value: Any) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        return value
    array = np.asarray(value)
    if array.ndim == 0:  # ascontiguousarray would turn a scalar into shape (1,)
        return torch.tensor(array.item(), dtype=torch.from_numpy(array.reshape(1)).dtype)
    return torch.from_numpy(np.ascontiguousarray(array))


def make_task_sample(task: str, decoded_domains: dict[str, Any], rng: np.random.Generator, *,
                     resolution: int | None = None,
                     jigsaw_tile: int | None = None,
                     label_sets: ss.LabelSets | None = None) -> dict[str, torch.Tensor]:
    """Build one task's sample (without the batch axis) from decoded domain files.

    Args:
        task: A task name.
        decoded_domains: Single-view tasks: domain → decoded value (``decode_domain`` output;
            ``None`` for a missing file), optionally ``"__key__"``. Multi-view tasks:
            ``{"views": [per-view dicts, ...]}`` with 2 views (3 for egomotion); point matching
            labels the pair 1 when both views are centred on the same point.
        rng: Randomness of the self-supervised inputs (noise, jigsaw permutation and jitter).
        resolution: Training resolution (default: the RGB file's).
        jigsaw_tile: Jigsaw tile size (default: ``resolution``, as the authors resize tiles to
            the full input size).
        label_sets: The ab bins and jigsaw permutations the labels index (default: shipped).

    Returns:
        ``"input"``: 3×R×R (1×R×R colorization, 9×3×t×t jigsaw, V×3×R×R multi-view);
        ``"target"``: dense C×R×R float, R×R long (segmentation), 313×R/4×R/4 (colorization),
        K probabilities (classification), 9 (room layout, vanishing points), 6/18 (poses) or a
        long scalar (jigsaw, point matching); ``"mask"`` (1×R×R depth validity, R×R semantic
        certainty, or a scalar sample validity) and ``"raw"`` (depth in metres) when the task
        has them.

    Raises:
        BadSampleError: a domain the task needs is missing or corrupt.
        ValueError: the task has no sample builder.
    """
    if task in MULTIVIEW_TASKS:
        views = decoded_domains.get("views")
        if not views:
            raise ValueError(f"task {task!r} needs decoded_domains['views'] (a list of views)")
        r = resolution or int(_need(views[0], "rgb").shape[0])
        sample = _multi_view(task, views, r)
    else:
        r = resolution or int(_need(decoded_domains, "rgb").shape[0])
        sample = _single_view(task, decoded_domains, rng, r, jigsaw_tile or r, label_sets)
    return {name: _to_tensor(value) for name, value in sample.items()}


def domain_tensor(domain: str, value: Any, resolution: int) -> torch.Tensor | None:
    """A decoded domain value as a tensor in its released units, resized to ``resolution``.

    Images become C×R×R float32 of the stored values (bilinear for colour, nearest for depth,
    labels and 16-bit responses, so stored codes such as 65535 survive); class files become
    float vectors; JSON domains have no tensor form (``None``).
    """
    from taskonomy.datamodules.domains import get_domain

    kind = get_domain(domain).kind
    if kind == "json" or value is None:
        return None
    if kind == "npy":
        return torch.from_numpy(np.asarray(value, dtype=np.float32).reshape(-1))
    image = np.asarray(value)
    resized = enc.resize(image.astype(np.float32), resolution, nearest=kind != "rgb8")
    return torch.from_numpy(enc._chw(resized))


def collate_batch(samples: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Stack per-sample dicts (``__key__``, ``rgb``, per-task dicts) into the batch contract."""
    if not samples:
        raise ValueError("cannot collate an empty batch")
    batch: dict[str, Any] = {"__key__": [s["__key__"] for s in samples]}
    for name, value in samples[0].items():
        if name == "__key__":
            continue
        if isinstance(value, dict):
            batch[name] = {f: torch.stack([s[name][f] for s in samples]) for f in value}
        else:
            batch[name] = torch.stack([s[name] for s in samples])
    return batch
