"""Source task runs of transfers: finding them, their checkpoints, and their frozen encoders.

A transfer reads each source through the encoder of the source's latest finished task run
(:func:`find_task_runs`, :func:`resolve_checkpoint`, :func:`load_source`), frozen and fed the
image as the source's task read it (:func:`source_input`). :func:`register_task_run` makes a
network trained elsewhere such a run.
"""

from __future__ import annotations

import io
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from taskonomy.analysis.records import (
    ENCODER_FINGERPRINT_KEY,
    RunRecord,
    latest_task_runs,
    network_setting,
    record_path,
    scan_records,
    write_record,
)
from taskonomy.datamodules.domains import atomic_write_bytes
from taskonomy.datamodules.selfsupervised import DENOISE_VARIANCE, rgb_to_lab
from taskonomy.tasks.baselines import freeze, load_checkpoint
from taskonomy.tasks.families.base import TaskModule
from taskonomy.tasks.networks.encoders import (
    ENCODER_LAYOUT,
    ENCODER_LAYOUT_KEY,
    ENCODERS,
    TaskonomyEncoder,
    build_encoder,
)
from taskonomy.tasks.registry import get_spec
from taskonomy.tasks.representations import weights_fingerprint
from taskonomy.tasks.specs import TaskSpec


# --------------------------------------------------------------------------- finding source runs
def run_class_weights(record: RunRecord | None, *, resolution: int | None,
                      encoder: str | None) -> list[float] | None:
    """The class weights a task run trained with, if it is of this setting (else ``None``).

    Args:
        record: The task run (``None``: no run).
        resolution: The setting's resolution (``None``: any).
        encoder: The setting's encoder architecture (``None``: any).
    """
    if record is None:
        return None
    trained_at, architecture = network_setting(record)
    if (resolution is not None and trained_at not in (None, resolution)) or (
            encoder is not None and architecture not in (None, encoder)):
        return None  # only a run of another setting: not this transfer's weights
    model = record.config.get("model", {}) if isinstance(record.config, dict) else {}
    weights = model.get("class_weights") if isinstance(model, dict) else None
    return [float(w) for w in weights] if isinstance(weights, list) else None


def latest_task_run(runs_dir: str | os.PathLike[str], task: str, *,
                    resolution: int | None = None,
                    encoder: str | None = None) -> RunRecord | None:
    """:func:`find_task_runs` of one task; ``None`` when it has no finished run."""
    try:
        return find_task_runs(runs_dir, [task], resolution=resolution, encoder=encoder)[task]
    except (FileNotFoundError, ValueError):
        return None


def find_task_runs(runs_dir: str | os.PathLike[str], tasks: Sequence[str], *,
                   resolution: int | None = None,
                   encoder: str | None = None) -> dict[str, RunRecord]:
    """The latest finished task run of each task under a runs folder.

    Args:
        runs_dir: Folder of run records (``<run_id>/record.json``).
        tasks: Tasks whose task-specific networks are needed.
        resolution: Prefer task runs trained at this resolution: a runs folder may hold
            several settings (the CPU and the paper one). A task with runs of other settings
            only gets its latest run, which :func:`load_source` then rejects, naming the
            mismatch.
        encoder: Prefer task runs of this encoder architecture, likewise.

    Raises:
        FileNotFoundError: ``runs_dir`` does not exist.
        ValueError: Some tasks have no finished task run; the message lists them all and how to
            train them.
    """
    wanted = list(dict.fromkeys(tasks))
    if not Path(runs_dir).is_dir():
        raise FileNotFoundError(
            f"no runs folder {runs_dir} (from {Path.cwd()}) to find the task runs of "
            f"{', '.join(wanted)} in; pass --runs_dir=FOLDER, or --model.task_runs=FOLDER, "
            "naming the folder your task runs wrote (the default is ./runs)"
        )
    scan = scan_records(runs_dir, statuses=("finished", "running", "failed"))
    found = {**latest_task_runs(scan.records),
             **latest_task_runs(scan.records, resolution=resolution, encoder=encoder)}
    unfinished = {r.target: f"{r.run_id} ({r.status})" for r in scan.records
                  if r.role == "task" and r.status != "finished"}
    missing = [t for t in wanted if t not in found]
    if missing:
        details = ", ".join(
            f"{t} (only {unfinished[t]})" if t in unfinished else t for t in missing
        )
        raise ValueError(
            f"no finished task run under {runs_dir} for source(s): {details}; train them first "
            "with the config of this transfer's setting, e.g. `taskonomy train fit --config "
            f"experiments/configs/cpu.yaml --model.task={missing[0]} --runs_dir={runs_dir}` "
            "(paper.yaml for the paper setting; or run the tasks sweep file), or point "
            "--model.task_runs at the folder holding their run records"
        )
    return {t: found[t] for t in wanted}


def resolve_checkpoint(record: RunRecord, runs_dir: str | os.PathLike[str]) -> Path:
    """The checkpoint file of a finished run.

    A relative path is looked up in the run folder, then as given. An absolute path that no
    longer exists (the runs folder was moved, copied from a GPU box or mounted elsewhere) falls
    back to the file of the same name in the run folder's ``checkpoints/``.

    Raises:
        ValueError: The record names no checkpoint.
        FileNotFoundError: The checkpoint file is missing.
    """
    if not record.checkpoint:
        raise ValueError(
            f"task run {record.run_id!r} ({record.target}) has no checkpoint in its record; "
            "rerun it so that it saves one"
        )
    path = Path(record.checkpoint)
    folder = record_path(runs_dir, record.run_id).parent
    candidates = ([path, folder / "checkpoints" / path.name] if path.is_absolute()
                  else [folder / path, path])
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(
        f"task run {record.run_id!r} ({record.target}): checkpoint {record.checkpoint} not "
        f"found (looked in {', '.join(map(str, candidates))}); rerun that task run"
    )


#: Integer weights of the image hash that seeds the denoising source's noise, by pixel count.
_HASH_WEIGHTS: dict[tuple[int, str], torch.Tensor] = {}


def _image_seeds(images: torch.Tensor) -> list[int]:
    """One seed per ``B×C×H×W`` image in [-1,1], from its 8-bit levels.

    An integer sum is exact in any order, so an image gets one seed on any device and in any
    batch (a float hash would depend on how the reduction was split).
    """
    levels = ((images.detach().float().clamp(-1.0, 1.0) + 1.0) * 127.5).round().long()
    levels = levels.flatten(1)
    key = (levels.shape[1], str(levels.device))
    if key not in _HASH_WEIGHTS:
        weights = torch.randint(1, 2**20, (levels.shape[1],),
                                generator=torch.Generator().manual_seed(0))
        _HASH_WEIGHTS[key] = weights.to(levels.device)
    return [int(v) % 2**31 for v in (levels * _HASH_WEIGHTS[key]).sum(1).tolist()]


def noisy_images(images: torch.Tensor) -> torch.Tensor:
    """Denoising's input made of ``B×3×H×W`` images in [-1,1]: each with its own fixed noise.

    The denoising task's corruption (Gaussian noise of variance 0.01 on the [0,1] image,
    clipped), drawn on the images' device from a seed hashed from each image's pixels, so a
    representation does not depend on the batch, the epoch or whether it came from the cache
    (the authors extracted each one once). The seed is the same on every device; torch's CPU
    and CUDA generators draw different noise from it.
    """
    pixels = (images.detach().float() + 1.0) / 2.0
    noise = torch.empty_like(pixels)
    for i, seed in enumerate(_image_seeds(images)):
        generator = torch.Generator(device=pixels.device).manual_seed(seed)
        noise[i] = torch.randn(pixels.shape[1:], generator=generator, device=pixels.device)
    noisy = (pixels + DENOISE_VARIANCE**0.5 * noise).clamp(0.0, 1.0)
    return (noisy * 2.0 - 1.0).to(images.dtype)


def centre_blanked(images: torch.Tensor) -> torch.Tensor:
    """Inpainting's input: ``B×3×H×W`` images with the centre block (H/4:3H/4, W/4:3W/4) at 0."""
    out = images.clone()
    h, w = images.shape[-2:]
    out[..., h // 4: 3 * h // 4, w // 4: 3 * w // 4] = 0.0
    return out


def source_input(spec: TaskSpec, images: torch.Tensor) -> torch.Tensor:
    """The image in the form a source's encoder reads, as it did when its task was trained.

    RGB in [-1,1]; colorization's L; denoising's noisy image (:func:`noisy_images`); inpainting's
    image with its centre blanked (:func:`centre_blanked`). The authors extracted every source's
    representations through its task's own input step; jigsaw's through the whole image, not
    tiles.
    """
    if spec.name == "denoising":
        return noisy_images(images)
    if spec.name == "inpainting":
        return centre_blanked(images)
    if spec.input_channels == 3:
        return images
    if spec.input_channels == 1:
        rgb01 = ((images.detach().float().cpu() + 1.0) / 2.0).clamp(0.0, 1.0)
        lightness = [
            rgb_to_lab(np.ascontiguousarray(image.permute(1, 2, 0).numpy()))[:, :, 0]
            for image in rgb01
        ]
        out = torch.from_numpy(np.stack(lightness) / 100.0 * 2.0 - 1.0).float()[:, None]
        return out.to(images.device)
    raise ValueError(
        f"source {spec.name!r} reads {spec.input_channels}-channel inputs; transfers can make "
        "RGB (3) or lightness (1) inputs only"
    )


class FrozenSource(nn.Module):
    """A frozen encoder of one source task; always in eval mode, never trained.

    Args:
        spec: The source task's spec (its input form).
        encoder: The encoder with trained (or, for ``random``, seeded) weights.
        run_id: The task run it came from (keys the representation cache).
        fingerprint: Identity of its weights for the representation cache.
    """

    def __init__(self, spec: TaskSpec, encoder: TaskonomyEncoder, run_id: str,
                 fingerprint: str) -> None:
        super().__init__()
        self.spec = spec
        self.encoder = freeze(encoder)
        self.run_id = run_id
        self.fingerprint = fingerprint

    def train(self, mode: bool = True) -> FrozenSource:
        """Stay in eval mode whatever the parent does (BN statistics are part of the source)."""
        return super().train(False)

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """``B×3×H×W`` (or ``B×V×3×H×W``) → ``B×8×h×w`` (or ``B×V×8×h×w``)."""
        if images.ndim == 5:
            b, v = images.shape[:2]
            flat = self.encoder(source_input(self.spec, images.flatten(0, 1)))
            return flat.unflatten(0, (b, v))
        return self.encoder(source_input(self.spec, images))


def load_source(record: RunRecord, runs_dir: str | os.PathLike[str], *, resolution: int,
                encoder: str | None = None) -> FrozenSource:
    """The frozen encoder of a finished task run.

    Args:
        record: The source's finished task-run record.
        runs_dir: Its runs folder (resolves a relative checkpoint path).
        resolution: The transfer's resolution; the source must have been trained at it.
        encoder: The encoder architecture the transfer expects (``None``: the checkpoint's).

    Raises:
        ValueError: The checkpoint is not a task checkpoint, is of another task, resolution or
            architecture, or its weights do not fit the architecture it declares.
    """
    path = resolve_checkpoint(record, runs_dir)
    what = f"source {record.target!r} (task run {record.run_id!r})"
    data = load_checkpoint(path, what)
    hparams = dict(data["hyper_parameters"])
    task = hparams.get("task")
    if task != record.target:
        raise ValueError(f"{what}: checkpoint {path} is of task {task!r}, not {record.target!r}")
    arch = hparams.get("encoder")
    if arch not in ENCODERS:
        raise ValueError(
            f"{what}: checkpoint {path} declares encoder {arch!r}, which is not a known "
            f"architecture ({', '.join(ENCODERS)})"
        )
    if encoder is not None and arch != encoder:
        raise ValueError(
            f"{what}: checkpoint {path} holds a {arch!r} encoder but this transfer expects "
            f"{encoder!r}; set --model.encoder={arch} or retrain the source with {encoder}"
        )
    trained_at = hparams.get("resolution")
    if trained_at != resolution:
        raise ValueError(
            f"{what}: trained at resolution {trained_at}, the transfer runs at {resolution}; "
            "use the same resolution for the task runs and their transfers"
        )
    spec = get_spec(record.target)
    network = build_encoder(arch, spec.input_channels)
    state = {k[len("encoder."):]: v for k, v in data["state_dict"].items()
             if k.startswith("encoder.")}
    try:
        network.load_state_dict(state, strict=True)
    except RuntimeError as error:
        first = str(error).splitlines()[:3]
        raise ValueError(
            f"{what}: the encoder weights in {path} do not fit the {arch!r} architecture "
            f"({' '.join(first)}); the checkpoint was written by another network version — "
            "retrain the source"
        ) from error
    return FrozenSource(spec, network, record.run_id, weights_fingerprint(network))


# --------------------------------------------------------------------------- outside networks
def register_task_run(module: TaskModule, runs_dir: str | os.PathLike[str], *,
                      run_id: str | None = None, regime: str = "full",
                      metrics: dict[str, float] | None = None,
                      per_image_losses: dict[str, float] | None = None,
                      extra_config: dict[str, Any] | None = None) -> RunRecord:
    """Save a task network as a finished task run, so transfers can use it as a source.

    For networks trained outside ``taskonomy train`` (an external encoder, a test fixture): the
    weights go to ``RUNS_DIR/RUN_ID/checkpoints/last.ckpt`` in Lightning's layout and a finished
    ``task`` record points at them (relative to the run folder). ``extra_config`` joins the
    record's config (e.g. where imported weights came from).

    Returns:
        The written record.
    """
    task = module.spec.name
    run_id = run_id or f"task__{task}__{regime}__registered"
    # Validates the run id (it names a folder) before the weights are written.
    RunRecord(run_id=run_id, role="task", target=task, regime=regime)
    folder = record_path(runs_dir, run_id).parent
    checkpoint = Path("checkpoints") / "last.ckpt"
    buffer = io.BytesIO()
    torch.save({"state_dict": module.state_dict(), "hyper_parameters": dict(module.hparams),
                ENCODER_LAYOUT_KEY: ENCODER_LAYOUT}, buffer)
    atomic_write_bytes(folder / checkpoint, buffer.getvalue())
    config = {"model": dict(module.hparams), **(extra_config or {}),
              ENCODER_FINGERPRINT_KEY: weights_fingerprint(module.encoder)}
    record = RunRecord(run_id=run_id, role="task", target=task, regime=regime,
                       config=config).finished(
        metrics=metrics or {}, per_image_losses=per_image_losses or {},
        checkpoint=str(checkpoint))
    write_record(record, runs_dir)
    return record
