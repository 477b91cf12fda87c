"""Prediction panels: input, target and prediction of a few fixed validation samples per task.

:class:`PredictionPanels` draws, at the end of each validation epoch, one row per sample
(input | target | prediction) for every task module, with the renderers of
:mod:`taskonomy.datamodules.visualize` (the ones ``taskonomy data inspect`` uses): predictions are
turned back into the released encodings first (depth in 1/512 m, 127-centred normals, ...), so a
prediction looks like the label it imitates. Embeddings are projected to RGB by PCA,
classifications and low-dimensional outputs are shown as text. The panel goes to W&B
(``panels/<task>``) when a :class:`~lightning.pytorch.loggers.WandbLogger` is attached, and is
written as a PNG under ``<default_root_dir>/panels/`` otherwise.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import cv2
import lightning as L
import numpy as np
import torch
from lightning.pytorch.loggers import WandbLogger

from taskonomy.datamodules import encodings as enc
from taskonomy.datamodules.domains import DEPTH_MISSING, atomic_write_bytes
from taskonomy.datamodules.selfsupervised import ab_bins
from taskonomy.datamodules.visualize import (
    depth_to_rgb,
    render_domain,
    response_to_rgb,
    segments_to_rgb,
    semantic_to_rgb,
    text_panel,
    top_k_lines,
)

#: Panel columns.
COLUMNS = ("input", "target", "prediction")

_RESPONSE_SCALES = {"edge_texture": enc.EDGE_TEXTURE_SCALE, "keypoints2d": enc.KEYPOINTS2D_SCALE,
                    "keypoints3d": enc.KEYPOINTS3D_SCALE,
                    "edge_occlusion": enc.EDGE_OCCLUSION_SCALE}


def _numpy(value: torch.Tensor) -> np.ndarray:
    return np.asarray(value.detach().float().cpu().numpy())


def rgb_from_signed(image: np.ndarray) -> np.ndarray:
    """C×H×W values in [-1, 1] (3 or 1 channels) → H×W×3 uint8."""
    image = np.clip((image + 1.0) * 127.5, 0, 255).astype(np.uint8)
    if image.shape[0] == 1:
        image = np.repeat(image, 3, axis=0)
    return np.ascontiguousarray(image[:3].transpose(1, 2, 0))


def pca_rgb(embedding: np.ndarray) -> np.ndarray:
    """A C×H×W embedding → H×W×3 uint8: its first three principal components as colours."""
    c, h, w = embedding.shape
    flat = embedding.reshape(c, -1).T.astype(np.float64)
    flat = flat - flat.mean(0, keepdims=True)
    try:
        _, _, vt = np.linalg.svd(flat, full_matrices=False)
    except np.linalg.LinAlgError:
        vt = np.eye(c)
    components = flat @ vt[: min(3, c)].T
    if components.shape[1] < 3:
        components = np.pad(components, ((0, 0), (0, 3 - components.shape[1])))
    lo, hi = components.min(0), components.max(0)
    scaled = (components - lo) / np.where(hi > lo, hi - lo, 1.0)
    return np.ascontiguousarray((scaled.reshape(h, w, 3) * 255).astype(np.uint8))


def _mosaic(images: list[np.ndarray], columns: int) -> np.ndarray:
    rows = [np.concatenate(images[i:i + columns], axis=1) for i in range(0, len(images), columns)]
    return np.concatenate(rows, axis=0)


def render_input(task_input: np.ndarray) -> np.ndarray:
    """The encoder input of one sample as a picture (views side by side, jigsaw tiles 3×3)."""
    if task_input.ndim == 4:  # views or jigsaw tiles
        tiles = [rgb_from_signed(view) for view in task_input]
        return _mosaic(tiles, 3 if len(tiles) == 9 else len(tiles))
    return rgb_from_signed(task_input)


def _depth_raw(log_depth: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
    metres_units = np.expm1(np.clip(log_depth, 0, 1) * enc.LOG_DEPTH_NORMALIZER)
    raw = np.clip(np.round(metres_units), 0, DEPTH_MISSING - 1).astype(np.uint16)
    if mask is not None:
        raw[mask < 0.5] = DEPTH_MISSING
    return raw


def render_dense(task: str, value: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """A dense regression output or target (C×H×W, training encoding) as a picture."""
    if task in ("depth_zbuffer", "depth_euclidean"):
        return depth_to_rgb(_depth_raw(value[0], mask))
    if task == "normal":
        normal = np.clip((value.transpose(1, 2, 0) / 2.0 + 0.5) * 255.0, 0, 255)
        return render_domain("normal", normal.astype(np.uint8))
    if task == "principal_curvature":
        k = value.transpose(1, 2, 0) * enc.CURVATURE_STD + enc.CURVATURE_MEAN
        stored = np.concatenate([np.clip(k, 0, 255), np.zeros_like(k[..., :1])], axis=-1)
        return render_domain("principal_curvature", stored.astype(np.uint8))
    if task in _RESPONSE_SCALES:
        response = (value[0] + 1.0) / 2.0 * _RESPONSE_SCALES[task] * 65535.0
        return response_to_rgb(np.clip(response, 0, 65535).astype(np.uint16))
    if value.shape[0] in (1, 3):
        return rgb_from_signed(value)
    return pca_rgb(value)


def _lab_to_rgb(lightness: np.ndarray, ab: np.ndarray) -> np.ndarray:
    h, w = lightness.shape
    ab_full = cv2.resize(ab.astype(np.float32), (w, h), interpolation=cv2.INTER_LINEAR)
    lab = np.concatenate([((lightness + 1.0) / 2.0 * 100.0)[..., None], ab_full], axis=-1)
    rgb = cv2.cvtColor(lab.astype(np.float32), cv2.COLOR_LAB2RGB)
    return np.ascontiguousarray((np.clip(rgb, 0, 1) * 255).astype(np.uint8))


def render_colorization(lightness: np.ndarray, distribution: np.ndarray,
                        bins: np.ndarray | None = None) -> np.ndarray:
    """Colorization: the input lightness with the expected ab colour of a 313-bin distribution.

    ``bins``: the 313×2 centres the distribution is over (default: the shipped set).
    """
    weights = distribution.reshape(distribution.shape[0], -1)
    centres = ab_bins() if bins is None else bins
    ab = (centres.T @ weights).T.reshape(*distribution.shape[1:], 2)
    return _lab_to_rgb(lightness[0], ab)


def _softmax(logits: np.ndarray, axis: int = 0) -> np.ndarray:
    shifted = np.exp(logits - logits.max(axis=axis, keepdims=True))
    return np.asarray(shifted / shifted.sum(axis=axis, keepdims=True))


def _vector_lines(task: str, values: np.ndarray) -> list[str]:
    values = values.reshape(-1)
    if task in ("fixated_pose", "nonfixated_pose", "egomotion"):
        lines = []
        for i in range(0, len(values), 6):
            pose = values[i:i + 6]
            lines += [f"pair {i // 6}: rot " + " ".join(f"{v:+.2f}" for v in pose[:3]),
                      "         t " + " ".join(f"{v:+.2f}" for v in pose[3:])]
        return lines
    if task == "vanishing_point":
        return [f"VP{i}: " + " ".join(f"{v:+.2f}" for v in values[3 * i:3 * i + 3])
                for i in range(len(values) // 3)]
    if task == "room_layout":
        names = ("centre", "euler", "extent")
        return [f"{names[i] if i < 3 else i}: " + " ".join(
            f"{v:+.2f}" for v in values[3 * i:3 * i + 3]) for i in range((len(values) + 2) // 3)]
    return [" ".join(f"{v:+.2f}" for v in values[i:i + 4]) for i in range(0, len(values), 4)]


def render_vector(task: str, family: str, value: np.ndarray, *, is_logits: bool,
                  size: int) -> np.ndarray:
    """A vector output or target (class distribution, label, pose, layout) as a text panel."""
    if family == "classification" or task == "point_matching":
        if value.ndim == 0 or value.size == 1 and not is_logits:
            label = int(value.reshape(-1)[0])
            return text_panel([f"{task}", f"label {label}"], size)
        probabilities = _softmax(value) if is_logits else value
        return text_panel(top_k_lines(probabilities, k=min(5, probabilities.size)), size)
    return text_panel([task, *_vector_lines(task, value)], size)


def render_tile(module: Any, column: str, sample: dict[str, np.ndarray], size: int) -> np.ndarray:
    """One tile of a panel (``column`` in :data:`COLUMNS`) for one sample of a task module."""
    spec = module.spec
    if column == "input":
        return render_input(sample["input"])
    value = sample[column]
    mask = sample.get("mask")
    is_prediction = column == "prediction"
    if spec.output_kind == "vector":
        return render_vector(spec.name, spec.family, value, is_logits=is_prediction, size=size)
    if spec.family == "dense_classification" and spec.output_kind == "dense_quarter":
        distribution = _softmax(value) if is_prediction else value
        return render_colorization(sample["input"], distribution,
                                   getattr(module, "ab_centres", None))
    if spec.family == "dense_classification":
        labels = value.argmax(0) if is_prediction else value
        stored = labels.astype(np.int64) + 1  # back to file labels: 0 uncertain, 1 background
        if mask is not None and not is_prediction:
            stored[mask.reshape(stored.shape) < 0.5] = 0
        return semantic_to_rgb(stored)
    if spec.family == "metric_segmentation":
        return pca_rgb(value) if is_prediction else segments_to_rgb(value)
    dense_mask = mask[0] if mask is not None and mask.ndim == 3 else mask
    return render_dense(spec.name, value, dense_mask)


def _fit(tile: np.ndarray, size: int) -> np.ndarray:
    if tile.shape[:2] == (size, size):
        return tile
    h, w = tile.shape[:2]
    scale = size / max(h, w)
    resized = cv2.resize(tile, (max(1, round(w * scale)), max(1, round(h * scale))),
                         interpolation=cv2.INTER_NEAREST if scale >= 1 else cv2.INTER_AREA)
    out = np.full((size, size, 3), 24, dtype=np.uint8)
    out[: resized.shape[0], : resized.shape[1]] = resized
    return out


def render_panel(module: Any, samples: list[dict[str, np.ndarray]], size: int = 128
                 ) -> np.ndarray:
    """The panel of a task module: one row per sample, columns :data:`COLUMNS`."""
    rows = []
    for sample in samples:
        tiles = [_fit(render_tile(module, column, sample, size), size) for column in COLUMNS]
        rows.append(np.concatenate(tiles, axis=1))
    return np.concatenate(rows, axis=0)


def with_header(panel: np.ndarray, title: str, columns: tuple[str, ...] = COLUMNS
                ) -> np.ndarray:
    """The panel under a white strip with its title and a name over each column.

    The image explains itself wherever it is opened (a PNG in the run folder, a W&B media
    panel, a report).
    """
    width = panel.shape[1]
    line = 18
    strip = np.full((2 * line + 4, width, 3), 255, np.uint8)
    font, scale = cv2.FONT_HERSHEY_SIMPLEX, 0.45

    def put(text: str, x: int, y: int) -> None:
        cv2.putText(strip, text, (x, y), font, scale, (30, 30, 30), 1, cv2.LINE_AA)

    put(title, 4, line - 4)
    column_width = width // len(columns)
    for i, name in enumerate(columns):
        text_width = cv2.getTextSize(name, font, scale, 1)[0][0]
        put(name, i * column_width + max(0, (column_width - text_width) // 2), 2 * line - 2)
    return np.concatenate([strip, panel], axis=0)


def _modules(pl_module: L.LightningModule) -> list[Any]:
    # A task module draws itself; a module that wraps several tasks lists them in ``tasks``.
    if hasattr(pl_module, "spec") and hasattr(pl_module, "head"):
        return [pl_module]
    return [m for m in getattr(pl_module, "panel_modules", []) if hasattr(m, "spec")]


def logged_step(trainer: L.Trainer) -> int:
    """The step Lightning logs metrics at now: training batches that stepped.

    ``trainer.global_step`` counts optimizer steps instead: one ahead of the validation
    metrics it logged, and twice the batches for a cGAN task (its discriminator steps too).
    """
    loop = getattr(getattr(trainer, "fit_loop", None), "epoch_loop", None)
    step = getattr(loop, "_batches_that_stepped", None)
    return int(step) if isinstance(step, int) else int(trainer.global_step)


class PredictionPanels(L.Callback):
    """Log input/target/prediction panels of the first validation samples each epoch.

    Args:
        samples: Validation samples per panel (taken from the first validation batch, whose
            order is deterministic, so every epoch shows the same images).
        size: Side of each tile in pixels.
        every_n_epochs: Draw every n-th validation epoch.
    """

    def __init__(self, samples: int = 4, size: int = 128, every_n_epochs: int = 1) -> None:
        if samples < 1 or size < 16 or every_n_epochs < 1:
            raise ValueError("PredictionPanels needs samples >= 1, size >= 16, every_n_epochs >= 1")
        self.samples, self.size, self.every_n_epochs = samples, size, every_n_epochs
        self._pending: dict[str, list[dict[str, np.ndarray]]] = {}
        self._validations = 0

    def on_validation_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Forget samples of the previous epoch."""
        self._pending = {}

    def on_validation_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule,
                                outputs: Any, batch: Any, batch_idx: int,
                                dataloader_idx: int = 0) -> None:
        """Keep the first samples of the first batch with their predictions."""
        if batch_idx != 0 or dataloader_idx != 0 or trainer.sanity_checking:
            return
        if not trainer.is_global_zero or self._validations % self.every_n_epochs:
            return
        for module in _modules(pl_module):
            task_batch = batch.get(module.spec.name) if isinstance(batch, dict) else None
            if not task_batch:
                continue
            count = min(self.samples, len(task_batch["input"]))
            with torch.no_grad():
                prediction = module(task_batch["input"][:count])
            samples = []
            for i in range(count):
                sample = {"input": _numpy(task_batch["input"][i]),
                          "target": _numpy(task_batch["target"][i]),
                          "prediction": _numpy(prediction[i])}
                if "mask" in task_batch:
                    sample["mask"] = _numpy(task_batch["mask"][i])
                samples.append(sample)
            self._pending[module.spec.name] = samples

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Render and log (or write) the panels."""
        if trainer.sanity_checking:
            return
        self._validations += 1
        if not trainer.is_global_zero:
            return
        for task, samples in self._pending.items():
            try:
                panel = render_panel(next(m for m in _modules(pl_module) if m.spec.name == task),
                                     samples, self.size)
                self.emit(trainer, task, panel)
            except Exception as error:  # noqa: BLE001 - a picture must never stop training
                warnings.warn(f"prediction panel of {task!r} skipped: "
                              f"{type(error).__name__}: {error}", RuntimeWarning, stacklevel=2)
        self._pending = {}

    def emit(self, trainer: L.Trainer, task: str, panel: np.ndarray) -> Path | None:
        """Log a panel to W&B, or write it as ``panels/<task>_step<N>.png`` in the run folder.

        Returns:
            The PNG path when one was written.
        """
        wandb_loggers = [lg for lg in trainer.loggers if isinstance(lg, WandbLogger)]
        # On W&B at the step of the validation metrics it shows beside; as a file, named by
        # the optimizer steps (as the checkpoints are).
        step = logged_step(trainer) if wandb_loggers else trainer.global_step
        caption = f"{task} at step {step}: " + " | ".join(COLUMNS)
        panel = with_header(panel, f"{task}, step {step}")
        if wandb_loggers:
            wandb_loggers[0].log_image(key=f"panels/{task}", images=[panel],
                                       caption=[caption], step=step)
            return None
        ok, png = cv2.imencode(".png", cv2.cvtColor(panel, cv2.COLOR_RGB2BGR))
        if not ok:
            raise ValueError(f"could not encode the {task} panel as PNG")
        name = f"{task}_step{step:07d}.png"
        path = Path(trainer.default_root_dir) / "panels" / name
        atomic_write_bytes(path, png.tobytes())
        return path
