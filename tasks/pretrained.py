"""The authors' released PyTorch weights (``visualpriors``) as finished task runs.

The authors ported their TensorFlow task networks to PyTorch as the ``visualpriors`` package
(``<task>_encoder-<hash>.pth`` and ``<task>_decoder-<hash>.pth`` for 17 tasks; each file holds
``{"state_dict": ...}``). Their encoder is the same ResNet-50 as this suite's ``resnet50``
(16×16×8 representation at 256²; the same strides, SAME max-pool and ``compress1``), and their
dense decoder the same 15-layer decoder, so the weights load one to one once renamed:
:func:`import_visualpriors` builds the task module of the paper setting (``resnet50``, 256²),
loads the renamed weights and registers it as a finished task run. Transfers then read it as a
source like any trained task run, without the ~48,000 GPU hours of training the authors spent.

Decoders exist for the dense tasks (the 15-layer decoder) and for the two classification
tasks (an FC head over the representation flattened in TensorFlow's H×W×C order, reordered here
to PyTorch's C×H×W). A run imported without its decoder has an untrained head: it serves as a
source, not as a target's ``self`` baseline.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import torch

from taskonomy.analysis.records import RunRecord, read_record, record_path
from taskonomy.tasks.build import build_task
from taskonomy.tasks.families.base import TaskModule
from taskonomy.tasks.registry import get_spec
from taskonomy.tasks.source_runs import register_task_run
from taskonomy.tasks.specs import TaskSpec

#: Name of the import format in run records.
VISUALPRIORS = "visualpriors"
#: Config key of an imported task run's record describing where its weights came from.
IMPORTED_KEY = "imported"
#: Bottleneck units per block of the authors' ResNet-50.
RESNET50_UNITS = (3, 4, 6, 3)
#: Layer names of the authors' dense decoder, in order (``deconv*`` upsample by 2).
DENSE_DECODER_LAYERS = ("conv2", "conv3", "conv4", "conv5", "conv6", "conv7", "deconv8", "conv9",
                        "deconv10", "conv11", "deconv12", "conv13", "deconv14")
#: Tasks whose released decoder is the FC head (``is_decoder_mlp``).
MLP_DECODER_TASKS = frozenset({"class_object", "class_scene"})
#: Task names of the released files that differ from this suite's.
FILE_TASK_NAMES = {"curvature": "principal_curvature"}

_RELEASED_FILE = re.compile(
    r"^(?P<task>[a-z0-9_]+?)_(?P<part>encoder|decoder)(?:-[0-9a-f]+)?\.pth?$"
)


def released_file_task(path: str | os.PathLike[str]) -> tuple[str, str] | None:
    """``(task, "encoder"|"decoder")`` of a released file name, or ``None`` if it is not one.

    ``normal_encoder-f5e2….pth`` → ``("normal", "encoder")``; the authors' ``curvature`` is
    ``principal_curvature`` here.
    """
    match = _RELEASED_FILE.match(Path(path).name)
    if match is None:
        return None
    task = match["task"]
    return FILE_TASK_NAMES.get(task, task), match["part"]


def encoder_key_prefixes() -> dict[str, str]:
    """Parameter-name prefixes of the authors' encoder → this suite's ``resnet50``."""
    prefixes = {"conv1.": "stem.0.", "bn1.": "stem.1.", "compress1.": "compress.0.",
                "compress_bn.": "compress.1."}
    unit_layers = (("conv1.", "body.0."), ("bn1.", "body.1."), ("conv2.", "body.3."),
                   ("bn2.", "body.4."), ("conv3.", "body.6."), ("bn3.", "body.7."),
                   ("downsample.0.", "shortcut.project.0."),
                   ("downsample.1.", "shortcut.project.1."))
    unit = 0
    for layer, units in enumerate(RESNET50_UNITS, start=1):
        for i in range(units):
            for theirs, ours in unit_layers:
                prefixes[f"layer{layer}.{i}.{theirs}"] = f"blocks.{unit}.{ours}"
            unit += 1
    return prefixes


def dense_decoder_key_prefixes() -> dict[str, str]:
    """Prefixes of the authors' 15-layer decoder → this suite's ``DenseDecoder``.

    Their transposed convs sit in ``Sequential(pad, deconv, crop, bn, act)``; the convs in
    ``Sequential(conv, bn, act)``.
    """
    prefixes = {"decoder_output.0.": "output."}
    for i, name in enumerate(DENSE_DECODER_LAYERS):
        if name.startswith("deconv"):
            prefixes |= {f"{name}.1.": f"layers.{i}.0.conv.", f"{name}.3.": f"layers.{i}.1."}
        else:
            prefixes |= {f"{name}.0.": f"layers.{i}.0.", f"{name}.1.": f"layers.{i}.1."}
    return prefixes


def mlp_decoder_key_prefixes() -> dict[str, str]:
    """Prefixes of the authors' FC decoder (fc0, bn0, fc2) → this suite's ``FCHead``."""
    return {"fc0.": "net.1.", "bn0.": "net.2.", "fc2.": "net.5."}


def rename(state: Mapping[str, torch.Tensor], prefixes: Mapping[str, str],
           what: str) -> dict[str, torch.Tensor]:
    """Rename every key of ``state`` by its longest matching prefix.

    Raises:
        ValueError: Keys no prefix matches (the file is not of this network); the first few
            are named.
    """
    renamed: dict[str, torch.Tensor] = {}
    unknown = []
    for key, value in state.items():
        matches = [p for p in prefixes if key.startswith(p)]
        if not matches:
            unknown.append(key)
            continue
        prefix = max(matches, key=len)
        renamed[prefixes[prefix] + key[len(prefix):]] = value
    if unknown:
        raise ValueError(
            f"{what}: {len(unknown)} parameter(s) are not of the authors' network "
            f"({', '.join(unknown[:5])}{', ...' if len(unknown) > 5 else ''}); pass a "
            "visualpriors file of that part (encoder or decoder)"
        )
    return renamed


def nhwc_to_nchw_columns(weight: torch.Tensor, channels: int, side: int) -> torch.Tensor:
    """Reorder an FC layer's input columns from TensorFlow's H×W×C flattening to C×H×W."""
    out = weight.shape[0]
    return weight.reshape(out, side, side, channels).permute(0, 3, 1, 2).reshape(out, -1)


def read_state_dict(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """The ``state_dict`` of a released ``.pth`` (or a bare state dict), on the CPU.

    Raises:
        FileNotFoundError: No such file.
        ValueError: Not a file of tensors (read with ``weights_only``: no code runs).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no weights file {path}")
    with path.open("rb") as handle:
        head = handle.read(16)
    # torch.save writes a zip archive (or, before PyTorch 1.6, a pickle: protocol byte 0x80).
    if not head.startswith((b"PK\x03\x04", b"\x80")):
        raise ValueError(
            f"{path} is not a PyTorch weights file (it begins {head!r}: a web page or an "
            "interrupted download?); download it again"
        )
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - any unpickling failure is a bad file
        text = str(error)
        # torch's own advice (weights_only=False runs the file's code) is not an option here.
        reason = ("it holds Python objects besides tensors, which are not loaded (no code in "
                  "a downloaded file runs)" if "weights_only" in text
                  else " ".join(text.split())[:200] or type(error).__name__)
        raise ValueError(
            f"cannot read {path} as a PyTorch weights file ({reason}); download it again"
        ) from error
    state = data.get("state_dict", data) if isinstance(data, dict) else None
    if not isinstance(state, Mapping) or not all(
            isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(
            f"{path} holds no state dict of tensors (expected visualpriors' "
            "{'state_dict': ...} or a bare state dict)"
        )
    # Weights saved from nn.DataParallel carry a 'module.' prefix.
    return {k.removeprefix("module."): v for k, v in state.items()}


def _load(module: torch.nn.Module, state: dict[str, torch.Tensor], what: str) -> None:
    # Older PyTorch wrote no BN step counters; keep the module's own where missing.
    own = module.state_dict()
    for key, value in own.items():
        if key.endswith("num_batches_tracked") and key not in state:
            state[key] = value
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as error:
        raise ValueError(
            f"{what} does not fit this suite's network ({' '.join(str(error).split())[:400]})"
        ) from error


def load_encoder(module: TaskModule, state: Mapping[str, torch.Tensor], what: str) -> None:
    """Load the authors' encoder weights into a task module's ``resnet50`` encoder.

    Raises:
        ValueError: The weights are not the authors' encoder, or read another number of input
            channels than the task's.
    """
    renamed = rename(state, encoder_key_prefixes(), what)
    stem = renamed.get("stem.0.weight")
    if stem is not None and stem.shape[1] != module.spec.input_channels:
        if module.spec.name == "colorization":
            raise ValueError(
                f"{what}: the released colorization encoder reads {stem.shape[1]} channels (the "
                "PyTorch port feeds every encoder RGB), but colorization's encoder reads the L "
                "channel alone, as the authors trained it; it cannot stand in for this suite's "
                "colorization network: train that task instead"
            )
        raise ValueError(
            f"{what}: its first conv reads {stem.shape[1]} channel(s), but {module.spec.name!r} "
            f"reads {module.spec.input_channels} here; import the encoder of the task it names"
        )
    _load(module.encoder, renamed, what)


def load_decoder(module: TaskModule, state: Mapping[str, torch.Tensor], what: str) -> None:
    """Load the authors' decoder weights into a task module's head.

    Raises:
        ValueError: The task has no released decoder of a layout this suite shares, or the
            weights do not fit its head.
    """
    spec = module.spec
    if spec.name in MLP_DECODER_TASKS:
        renamed = rename(state, mlp_decoder_key_prefixes(), what)
        weight = renamed.get("net.1.weight")
        if weight is not None:
            channels, side, _ = module.representation_shape
            if weight.ndim != 2 or weight.shape[1] != channels * side * side:
                raise ValueError(
                    f"{what}: its first FC layer has shape {tuple(weight.shape)}, but it must "
                    f"read the {channels}×{side}×{side} representation ({channels * side * side} "
                    "values); pass the released decoder file of this task"
                )
            renamed["net.1.weight"] = nhwc_to_nchw_columns(weight, channels, side)
    elif has_dense_decoder(spec):
        renamed = rename(state, dense_decoder_key_prefixes(), what)
    else:
        raise ValueError(
            f"{what}: the authors released no decoder of {spec.name!r} in a layout this suite "
            "shares (dense 15-layer or classification FC); import its encoder only"
        )
    _load(module.head, renamed, what)


def has_dense_decoder(spec: TaskSpec) -> bool:
    """Whether the task's head is the 15-layer dense decoder the authors released."""
    return spec.output_kind == "dense" and spec.views == 1 and spec.towers == 1


def has_released_decoder(spec: TaskSpec) -> bool:
    """Whether the authors released a decoder of the task that loads into its head here."""
    return spec.name in MLP_DECODER_TASKS or has_dense_decoder(spec)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def import_visualpriors(runs_dir: str | os.PathLike[str], encoder: str | os.PathLike[str],
                        decoder: str | os.PathLike[str] | None = None, *,
                        task: str | None = None, run_id: str | None = None,
                        class_weights: str | os.PathLike[str] | None = None) -> RunRecord:
    """Register the authors' released weights of a task as a finished task run.

    Args:
        runs_dir: The runs folder transfers read their sources from.
        encoder: The task's ``<task>_encoder-<hash>.pth``.
        decoder: Its ``<task>_decoder-<hash>.pth``, where released (dense and classification
            tasks); without it the head stays untrained and the run cannot be a ``self``
            baseline.
        task: The task (this suite's name); ``None`` takes it from the encoder's file name.
        run_id: The run's id (default ``<task>-visualpriors``). A run of that id that was not
            imported (a trained one) is never overwritten.
        class_weights: The class weights of a class-weighted task (semantic segmentation: the
            authors' ``semseg_prior_factor.npy``), which its transfers and ``self`` baseline
            score with; without them they are unweighted (and warn).

    Returns:
        The written record (paper setting: ``resnet50``, resolution 256).

    Raises:
        ValueError: The task cannot be told from the file name, is unknown, the files name
            another task, the run id holds a run that was not imported, or the weights do not
            fit.
    """
    encoder, decoder = Path(encoder), (Path(decoder) if decoder is not None else None)
    named = released_file_task(encoder)
    if task is None:
        if named is None:
            raise ValueError(
                f"cannot tell the task from the file name {encoder.name!r} (released files are "
                "named <task>_encoder-<hash>.pth); pass --task"
            )
        task = named[0]
    spec = get_spec(task)
    for path, part in ((encoder, "encoder"), (decoder, "decoder")):
        released = released_file_task(path) if path is not None else None
        if released is not None and (released[0] != spec.name or released[1] != part):
            raise ValueError(
                f"{Path(path or '').name} is the released {released[1]} of {released[0]!r}, "
                f"not the {part} of {spec.name!r}; pass the {part} file of {spec.name!r}"
            )
    run_id = run_id or f"{spec.name}-{VISUALPRIORS}"
    existing = record_path(runs_dir, run_id)
    if existing.is_file():
        try:
            earlier = read_record(existing)
        except ValueError:
            earlier = None
        if earlier is None or IMPORTED_KEY not in earlier.config:
            raise ValueError(
                f"{existing} holds a run that was not imported (a trained one, or an unreadable "
                "record); importing would replace its weights: choose another --run_id"
            )
    module = build_task(spec.name, encoder="resnet50", resolution=256,
                        **({"class_weights": str(class_weights)} if class_weights else {}))
    load_encoder(module, read_state_dict(encoder), f"encoder weights {encoder}")
    sources: dict[str, Any] = {"format": VISUALPRIORS, "encoder": encoder.name,
                               "encoder_sha256": _sha256(encoder), "decoder": None}
    if decoder is not None:
        load_decoder(module, read_state_dict(decoder), f"decoder weights {decoder}")
        sources |= {"decoder": decoder.name, "decoder_sha256": _sha256(decoder)}
    module.eval()
    return register_task_run(module, runs_dir, run_id=run_id,
                             extra_config={IMPORTED_KEY: sources})


def imported_without_head(record: RunRecord) -> bool:
    """Whether a task run was imported without its decoder (its head is untrained)."""
    imported = record.config.get(IMPORTED_KEY) if isinstance(record.config, dict) else None
    return isinstance(imported, dict) and not imported.get("decoder")


def released_pairs(paths: Iterable[str | os.PathLike[str]]) -> dict[str, dict[str, Path]]:
    """Group released files by task: ``{task: {"encoder": path, "decoder": path}}``.

    Raises:
        ValueError: A file name is not a released one, or a task has two files of a part.
    """
    pairs: dict[str, dict[str, Path]] = {}
    for raw in paths:
        path = Path(raw)
        if not path.is_file():  # e.g. a shell pattern that matched nothing, passed as it is
            raise ValueError(f"no weights file {path}: download the released files first "
                             "(or fix the path)")
        named = released_file_task(path)
        if named is None:
            raise ValueError(
                f"{path.name!r} is not named like a released file (<task>_encoder-<hash>.pth or "
                "<task>_decoder-<hash>.pth); import it alone with --task"
            )
        task, part = named
        if part in pairs.setdefault(task, {}):
            raise ValueError(f"two {part} files of {task!r}: {pairs[task][part]} and {path}")
        pairs[task][part] = path
    for task, parts in pairs.items():
        if "encoder" not in parts:
            raise ValueError(f"{task!r}: a decoder ({parts['decoder']}) without its encoder file")
    return pairs
