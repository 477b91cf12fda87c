"""Wall time of one source's transfers into every target, with and without the cache.

Acceptance (issue 6): one source into ALL targets, the cached arm ≥ 5× faster. Two measurements,
each with both arms run in turn per target, in the same process, median of ``--repeats``:

- **end to end** (``--mode e2e``): what a sweep pays. Tiny synthetic buildings are rendered and
  packed into real shards (``taskonomy data synth``/``pack`` APIs), and each transfer is the
  real thing: a :class:`TaskonomyDataModule` and a Lightning ``Trainer`` fit (validation every
  epoch) and test. The uncached arm reads and decodes the RGB and label shards and runs the
  frozen encoder on every batch. The cached arm starts every repeat from an empty cache: the
  first target fills it (one pass over the RGB shards of its train subset, validation and test
  samples, plus its own training); every later target, like a new process of a sweep, reads
  the cache file and opens only its label shards (no RGB shard, no PNG decode, no encoder).
- **compute only** (``--mode compute``): the same training loop on fixed in-memory batches, no
  data loading, no Trainer. It isolates what the cache removes from a step, the encoder's
  forward pass: with E the encoder and D the rest of a step, its ratio tends to (E + D) / D.

Defaults are the CPU transfer setting, read from ``experiments/configs/transfer_cpu.yaml``
(encoder, resolution, decoder and head widths, learning rate, batch size, training subset
``limit``, epochs, loader workers); flags override them. Use one torch thread (the default) on
a shared machine. ``--breakdown`` times the parts of one training step per target.

Measured on a shared 2-core CPU (one thread, one loader worker, one repeat; 8 targets: normal,
depth_zbuffer, edge_texture, segment_semantic, class_scene, room_layout, vanishing_point,
fixated_pose; CPU setting: resnet10_tiny at 64 px, width 0.125, 256 images × 20 epochs):
end to end 249 s → 210 s (1.19x), compute only 106 s → 83 s (1.28x); per target about 1.1-1.2x
for dense targets and 1.4-2.2x for the ones with FC heads (an earlier run, before the datamodule
kept samples in memory: 1.22x and 1.27x); test losses equal within the tolerance. The
5x target is out of reach here because the encoder is a small part of a step: at this setting
it costs ~6 ms of a 45-96 ms dense step (the eighth-width decoder's forward and backward), and
an RGB PNG at 64 px decodes in well under a millisecond. At the paper's networks (resnet50,
256 px, full-width decoder; ``--breakdown-only``) the bound is 1.6x for a dense target and 46x
for an FC one (encoder 2.1-2.7 s of a 4.5 s dense step and a 48 ms FC step per batch of 8), so
one source into all 21 targets would still be near 2x: the dense decoders dominate.

Measured on one H200 (``--config experiments/configs/transfer_paper.yaml --device cuda``:
ResNet-50 at 256 px, full-width decoders, batch 32; ``benchmarks/gpu_checks.sh``): compute only,
all 21 targets, 8 batches × 2 epochs, one repeat — 1.15x in fp32 with ``--deterministic``
(21.2 s → 18.4 s; every per-image test loss identical) and 1.13x in bf16-mixed (dense targets
agree within 0.1 of the bf16 tolerance; the pose, point-matching and layout heads drift by up to
110 tolerances, as bf16 reductions over the stored and the recomputed representation round
differently and training amplifies it). End to end on 256 px synthetic shards with the Trainer,
six targets (normal, depth_zbuffer, segment_semantic, class_scene, room_layout,
vanishing_point), 256 images × 2 epochs, bf16-mixed, 8 loader workers: 33.1 s → 23.5 s (1.41x;
1.22x for normal up to 1.78x for class_scene), where the cached arm also skips RGB decoding.

    python benchmarks/bench_representation_cache.py                    # both modes, all targets
    python benchmarks/bench_representation_cache.py --mode e2e --targets normal depth_zbuffer \\
        class_scene fixated_pose --epochs 5 --repeats 1 --data /tmp/cache-bench   # a quick look
    python benchmarks/bench_representation_cache.py --breakdown-only --encoder resnet50 \\
        --resolution 256 --decoder-width 1 --head-width 1 --batch-size 8 --batches 1 \\
        --targets normal segment_semantic class_scene    # the paper's networks, per step
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import statistics
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import lightning as L
import torch
import yaml
from lightning.fabric.utilities.apply_func import move_data_to_device
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

import taskonomy.experiments as experiments_package
from taskonomy.datamodules.datamodule import TaskonomyDataModule, task_domains
from taskonomy.tasks.build import build_task
from taskonomy.tasks.registry import get_spec, task_names
from taskonomy.tasks.source_runs import FrozenSource, register_task_run
from taskonomy.tasks.testing import fake_batch
from taskonomy.tasks.transfer import TransferTask

#: The CPU transfer setting the defaults come from.
CONFIG = Path(experiments_package.__file__).parent / "configs" / "transfer_cpu.yaml"

#: The earlier measurement's targets (``--subset``).
SUBSET = ("normal", "depth_zbuffer", "room_layout", "class_scene", "vanishing_point",
          "edge_texture")

#: Per-image test losses of the two arms must agree this closely (as the equivalence tests).
RTOL, ATOL = 1e-4, 1e-6
#: Under bf16 autocast the cached and uncached arms encode different batch compositions (the
#: cache encodes only unseen images), so bf16 rounding differs: bf16's epsilon is 2^-7.
BF16_RTOL = 1e-2


def tolerance(precision: str) -> tuple[float, float]:
    """Relative and absolute tolerance of the loss comparison at a precision."""
    return (BF16_RTOL if precision.startswith("bf16") else RTOL), ATOL

#: Synthetic buildings: fixated points and views per point (24 views per building); the
#: validation and test splits get two buildings each.
POINTS, VIEWS, EVAL_BUILDINGS = 8, 3, 2

Batch = dict[str, Any]
Losses = dict[str, float]


# --------------------------------------------------------------------------- settings
@dataclass(frozen=True)
class Defaults:
    """The benchmark's defaults, from a transfer config file."""

    encoder: str
    resolution: int
    decoder_width: float
    head_width: float
    lr: float
    epochs: int
    batch_size: int
    limit: int
    num_workers: int
    shuffle_buffer: int
    precision: str


def read_defaults(path: Path) -> Defaults:
    """The transfer setting of a LightningCLI config (``model``, ``data``, ``trainer``).

    Raises:
        FileNotFoundError: The file does not exist.
        ValueError: It lacks a value the benchmark needs.
    """
    if not path.is_file():
        raise FileNotFoundError(f"transfer config {path} not found; pass --config FILE")
    config = yaml.safe_load(path.read_text()) or {}
    model, data, trainer = (config.get(k) or {} for k in ("model", "data", "trainer"))
    try:
        return Defaults(
            encoder=str(model["encoder"]), resolution=int(model["resolution"]),
            decoder_width=float(model["decoder_width"]), head_width=float(model["head_width"]),
            lr=float(model["lr"]), epochs=int(trainer["max_epochs"]),
            batch_size=int(data["batch_size"]), limit=int(data["limit"]),
            num_workers=int(data.get("num_workers", 0)),
            shuffle_buffer=int(data.get("shuffle_buffer", 256)),
            precision=str(trainer.get("precision", "32-true")),
        )
    except (KeyError, TypeError) as error:
        raise ValueError(
            f"transfer config {path} lacks {error} (needs model.encoder/resolution/"
            "decoder_width/head_width/lr, data.batch_size/limit, trainer.max_epochs); "
            "pass the value as a flag or fix the file"
        ) from error


def parse_args() -> argparse.Namespace:
    """Command-line settings; defaults from ``--config`` (the CPU transfer setting)."""
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--config", type=Path, default=CONFIG)
    known, _ = pre.parse_known_args()
    d = read_defaults(known.config)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], parents=[pre])
    parser.add_argument("--mode", choices=("both", "e2e", "compute"), default="both",
                        help="end to end on real shards, compute only in memory, or both")
    parser.add_argument("--source", default="reshading", help="the one source task")
    parser.add_argument("--targets", nargs="+", default=None,
                        help="targets (default: every registered target except the source)")
    parser.add_argument("--subset", action="store_true",
                        help=f"the earlier measurement's targets: {' '.join(SUBSET)}")
    parser.add_argument("--encoder", default=d.encoder)
    parser.add_argument("--resolution", type=int, default=d.resolution)
    parser.add_argument("--decoder-width", type=float, default=d.decoder_width)
    parser.add_argument("--head-width", type=float, default=d.head_width)
    parser.add_argument("--lr", type=float, default=d.lr)
    parser.add_argument("--epochs", type=int, default=d.epochs, help="trainer.max_epochs")
    parser.add_argument("--batch-size", type=int, default=d.batch_size)
    parser.add_argument("--limit", type=int, default=d.limit,
                        help="training images (data.limit; e2e and the compute batches)")
    parser.add_argument("--num-workers", type=int, default=d.num_workers,
                        help="e2e DataLoader workers (data.num_workers)")
    parser.add_argument("--shuffle-buffer", type=int, default=d.shuffle_buffer,
                        help="e2e data.shuffle_buffer")
    parser.add_argument("--precision", default=d.precision,
                        help="trainer.precision (e2e); compute mode autocasts for bf16-mixed")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu",
                        help="where the networks run (cuda: the paper setting on a GPU)")
    parser.add_argument("--deterministic", action="store_true",
                        help="deterministic kernels (GPU atomics otherwise make the two arms' "
                             "losses drift apart during training)")
    parser.add_argument("--test-images", type=int, default=None,
                        help="compute mode: test images (default: the e2e test split's size)")
    parser.add_argument("--data", type=Path, default=None,
                        help="e2e: folder for the synthetic buildings and shards, reused when "
                             "present (default: a temporary folder)")
    parser.add_argument("--seed", type=int, default=0, help="synthetic data seed")
    parser.add_argument("--repeats", type=int, default=3, help="runs of both arms; medians")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1: stable)")
    parser.add_argument("--batches", type=int, default=None,
                        help="compute/breakdown: training batches (default: limit / batch size)")
    parser.add_argument("--breakdown", action="store_true",
                        help="also time the parts of one training step per target")
    parser.add_argument("--steps", type=int, default=5, help="repeats per --breakdown part")
    parser.add_argument("--breakdown-only", action="store_true",
                        help="only the per-step breakdown (quick; e.g. at the paper's 256 px)")
    args = parser.parse_args()
    if args.subset and args.targets:
        parser.error("give --subset or --targets, not both")
    args.targets = list(SUBSET) if args.subset else args.targets or [
        t for t in task_names(targets_only=True) if t != args.source]
    for target in args.targets:
        if not get_spec(target).target:
            parser.error(f"{target!r} cannot be a transfer target")
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda needs a CUDA device")
    if args.batches is None:
        args.batches = max(1, args.limit // args.batch_size)
    if args.test_images is None:
        args.test_images = EVAL_BUILDINGS * POINTS * VIEWS
    return args


# --------------------------------------------------------------------------- shared pieces
def build(target: str, runs: Path, cache: Path | None, args: argparse.Namespace) -> TransferTask:
    """A transfer of ``args.source`` into ``target`` with the benchmark's settings."""
    torch.manual_seed(0)
    return TransferTask(target=target, sources=[args.source], task_runs=str(runs),
                        cache_dir=str(cache) if cache else None, encoder=args.encoder,
                        resolution=args.resolution, decoder_width=args.decoder_width,
                        head_width=args.head_width, lr=args.lr, lr_milestone=None)


def worst_deviation(reference: Losses, other: Losses, rtol: float = RTOL,
                    atol: float = ATOL) -> float:
    """Largest |a - b| / (atol + rtol·|a|) over keys: ≤ 1 means within the tolerance."""
    if reference.keys() != other.keys():
        return float("inf")
    return max((abs(reference[k] - other[k]) / (atol + rtol * abs(reference[k]))
                for k in reference), default=0.0)


@dataclass
class ArmTimes:
    """Seconds per target and repeat of both arms, and the worst loss deviation per target
    (in units of the tolerance: ≤ 1 agrees)."""

    uncached: dict[str, list[float]]
    cached: dict[str, list[float]]
    deviations: dict[str, float] = field(default_factory=dict)

    @property
    def deviation(self) -> float:
        """The worst deviation over all targets."""
        return max(self.deviations.values(), default=0.0)

    def total_ratios(self) -> list[float]:
        """Uncached over cached total time, per repeat."""
        repeats = len(next(iter(self.uncached.values())))
        return [sum(v[r] for v in self.uncached.values()) / sum(v[r] for v in self.cached.values())
                for r in range(repeats)]


def run_arms(targets: list[str], repeats: int, label: str, console: Console,
             transfer: Callable[[str, int, bool], tuple[float, Losses]],
             warm_up: Callable[[], None], precision: str = "32-true") -> ArmTimes:
    """Both arms per target, interleaved (their order alternates between repeats).

    ``warm_up`` runs first, untimed, so that one-off costs (lazy imports, oneDNN kernel
    selection, the allocator's first growth) fall on neither arm.
    """
    times = ArmTimes({t: [] for t in targets}, {t: [] for t in targets})
    with Progress(console=console, transient=True) as progress:
        bar = progress.add_task(label, total=repeats * len(targets))
        progress.update(bar, description=f"{label}: warming up")
        warm_up()
        for repeat in range(repeats):
            for target in targets:
                progress.update(bar, description=f"{label}, repeat {repeat + 1}: {target}")
                results = {}
                for cached in ((False, True) if repeat % 2 == 0 else (True, False)):
                    results[cached] = transfer(target, repeat, cached)
                times.uncached[target].append(results[False][0])
                times.cached[target].append(results[True][0])
                times.deviations[target] = max(
                    times.deviations.get(target, 0.0),
                    worst_deviation(results[False][1], results[True][1], *tolerance(precision)))
                progress.advance(bar)
    return times


# --------------------------------------------------------------------------- compute only
def make_batches(target: str, count: int, size: int, resolution: int, prefix: str,
                 seed: int) -> list[Batch]:
    """Fixed batches for a target; the RGB images and sample keys are the same for every target."""
    out = []
    for i in range(count):
        batch = fake_batch(get_spec(target), size, resolution, seed=seed + i)
        batch["rgb"] = fake_batch(get_spec("normal"), size, resolution, seed=seed + i)["rgb"]
        batch["__key__"] = [f"{prefix}{i:04d}_{j}" for j in range(size)]
        out.append(batch)
    return out


def optimizer_of(model: TransferTask) -> torch.optim.Optimizer:
    """The transfer's own optimizer (Adam, fused where safe)."""
    configured = model.configure_optimizers()
    return cast(torch.optim.Optimizer,
                configured["optimizer"] if isinstance(configured, dict) else configured)


def synchronize(device: str) -> None:
    """Wait for queued GPU work, so wall times cover it."""
    if device == "cuda":
        torch.cuda.synchronize()


def run_in_memory(model: TransferTask, train: list[Batch], test: list[Batch],
                  epochs: int, device: str = "cpu", precision: str = "32-true") -> Losses:
    """Train for ``epochs`` passes, then test; the per-image test losses by key.

    ``precision="bf16-mixed"`` autocasts the steps to bfloat16, as the Trainer would.
    """
    model.log = lambda *a, **k: None  # no Trainer here
    model.to(device)
    optimizer = optimizer_of(model)
    autocast = torch.autocast(device, dtype=torch.bfloat16,
                              enabled=precision.startswith("bf16"))
    model.train()
    for _ in range(epochs):
        for batch in train:
            optimizer.zero_grad(set_to_none=True)
            with autocast:
                loss = model.training_step(batch, 0)
            loss.backward()
            optimizer.step()
        model.on_train_epoch_end()  # saves representations first seen in this epoch
    model.eval()
    model.on_test_epoch_start()
    with torch.no_grad(), autocast:
        for index, batch in enumerate(test):
            model.test_step(batch, index)
    model.on_test_epoch_end()
    synchronize(device)
    return dict(model.test_per_image_losses)


def compute_only(args: argparse.Namespace, runs: Path, tmp: Path, console: Console) -> ArmTimes:
    """In-memory arms: a fresh cache per repeat (the first target and each multi-view target
    fill it during their first epoch), no data loading."""
    def batches(target: str, count: int, prefix: str, seed: int) -> list[Batch]:
        return [move_data_to_device(b, args.device) for b in make_batches(
            target, count, args.batch_size, args.resolution, prefix, seed)]

    data = {t: batches(t, args.batches, "img", 100) for t in args.targets}
    test_batches = max(1, math.ceil(args.test_images / args.batch_size))
    tests = {t: batches(t, test_batches, "test", 900) for t in args.targets}

    def transfer(target: str, repeat: int, cached: bool) -> tuple[float, Losses]:
        start = time.perf_counter()
        cache = tmp / f"compute-cache{repeat}" if cached else None
        losses = run_in_memory(build(target, runs, cache, args), data[target], tests[target],
                               args.epochs, args.device, args.precision)
        return time.perf_counter() - start, losses

    def warm_up() -> None:
        target = args.targets[0]
        for cache in (None, tmp / "compute-warm-up"):
            run_in_memory(build(target, runs, cache, args), data[target][:2], tests[target][:1],
                          1, args.device, args.precision)

    return run_arms(args.targets, args.repeats, "compute only", console, transfer, warm_up,
                    args.precision)


# --------------------------------------------------------------------------- end to end
def make_shards(folder: Path, tasks: list[str], args: argparse.Namespace,
                console: Console) -> Path:
    """Synthetic buildings packed into shards with the domains of ``tasks`` (reused if there).

    Enough training buildings for ``--limit`` images; two buildings each for val and test.
    """
    from taskonomy.datamodules.packer import PackConfig, pack
    from taskonomy.datamodules.shards import read_manifest
    from taskonomy.datamodules.synth import synthesize

    train = math.ceil(args.limit / (POINTS * VIEWS))
    names = [f"synth{i:03d}" for i in range(train + 2 * EVAL_BUILDINGS)]
    splits = {n: "train" if i < train else "val" if i < train + EVAL_BUILDINGS else "test"
              for i, n in enumerate(names)}
    buildings, shards = folder / "buildings", folder / "shards"
    console.print(f"synthetic data: {len(names)} buildings × {POINTS * VIEWS} views at "
                  f"{args.resolution} px in {folder}")
    synthesize(buildings, buildings=names, resolution=args.resolution, seed=args.seed,
               points=POINTS, views=VIEWS, split_names=splits, progress=True)
    needed = set(task_domains(tasks)) | {"rgb"}
    for split in ("train", "val", "test"):
        manifest = shards / split / "manifest.json"
        packed = set(read_manifest(shards, split)["domains"]) if manifest.is_file() else set()
        if needed <= packed:
            continue
        # A reused folder gains the domains of new targets as new folders (resumable packing).
        pack(PackConfig(source=buildings, out=shards, split=split,
                        buildings=[n for n, s in splits.items() if s == split],
                        domains=sorted(needed - packed) if packed else sorted(needed),
                        shard_size=2 * POINTS * VIEWS, resume=True), progress=True)
    return shards


def fit_and_test(model: TransferTask, shards: Path, target: str,
                 args: argparse.Namespace) -> Losses:
    """A Lightning fit (validation every epoch) and test of a transfer on the shards."""
    data = TaskonomyDataModule(shards, tasks=[target], resolution=args.resolution,
                               batch_size=args.batch_size, num_workers=args.num_workers,
                               limit=args.limit, seed=0, shuffle_buffer=args.shuffle_buffer)
    trainer = L.Trainer(max_epochs=args.epochs, accelerator=args.device, devices=1,
                        precision=args.precision, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False,
                        num_sanity_val_steps=0)
    trainer.fit(model, datamodule=data)
    trainer.test(model, datamodule=data, verbose=False)
    return dict(model.test_per_image_losses)


def end_to_end(args: argparse.Namespace, runs: Path, tmp: Path, console: Console) -> ArmTimes:
    """Real shards, real Trainer; a fresh cache folder per repeat."""
    shards = make_shards(args.data or tmp / "data", [args.source, *args.targets], args, console)
    args.shuffle_buffer = min(args.shuffle_buffer, args.limit)

    def transfer(target: str, repeat: int, cached: bool) -> tuple[float, Losses]:
        start = time.perf_counter()
        L.seed_everything(0, verbose=False)
        cache = tmp / f"e2e-cache{repeat}" if cached else None
        losses = fit_and_test(build(target, runs, cache, args), shards, target, args)
        return time.perf_counter() - start, losses

    def warm_up() -> None:  # one epoch of the first target, both arms, a throwaway cache
        short = argparse.Namespace(**{**vars(args), "epochs": 1})
        for cache in (None, tmp / "e2e-warm-up"):
            fit_and_test(build(args.targets[0], runs, cache, short), shards, args.targets[0],
                         short)

    return run_arms(args.targets, args.repeats, "end to end", console, transfer, warm_up,
                    args.precision)


# --------------------------------------------------------------------------- breakdown
def median_ms(call: Callable[[], Any], repeats: int) -> float:
    """Median milliseconds of a call after one warm-up call."""
    call()  # warm-up (allocator, oneDNN primitive cache)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def step_breakdown(model: TransferTask, batch: Batch, repeats: int) -> dict[str, float]:
    """Median milliseconds of each part of one training step (cached path, plus the encoder)."""
    assert model.readout is not None and model.cache is not None
    model.log = lambda *a, **k: None  # no Trainer here
    optimizer = optimizer_of(model)
    model.train()
    source = cast(FrozenSource, model.sources[0])
    images = model.images(batch)
    model.frozen_representation(batch, "train")  # fill the cache for this batch
    representation = model.frozen_representation(batch, "train")
    readout, head = model.readout, model.head
    features = model._per_view(readout, representation)
    prediction = head(features)
    parts = {
        "encoder": median_ms(lambda: source(images), repeats),
        "cache read": median_ms(lambda: model.frozen_representation(batch, "train"), repeats),
        "readout": median_ms(lambda: model._per_view(readout, representation), repeats),
        "head": median_ms(lambda: head(features.detach()), repeats),
        "loss": median_ms(lambda: model._loss(prediction.detach(), batch, "mean"), repeats),
    }

    def forward_backward() -> None:
        optimizer.zero_grad(set_to_none=True)
        model.training_step(batch, 0).backward()

    forward_backward()
    parts["backward"] = max(0.0, median_ms(forward_backward, repeats) - sum(
        parts[k] for k in ("cache read", "readout", "head", "loss")))
    parts["optimizer"] = median_ms(optimizer.step, repeats)
    parts["cached step"] = sum(v for k, v in parts.items() if k != "encoder")
    return parts


def print_breakdown(console: Console, runs: Path, cache: Path,
                    args: argparse.Namespace) -> None:
    """A table of the parts of one training step per target."""
    table = Table(title=f"one training step, batch {args.batch_size} (median ms, "
                        f"{args.threads} thread(s))")
    columns = ("encoder", "cache read", "readout", "head", "loss", "backward", "optimizer",
               "cached step")
    table.add_column("target")
    for column in columns:
        table.add_column(column, justify="right")
    table.add_column("(E+D)/D", justify="right")
    for target in args.targets:
        batch = make_batches(target, 1, args.batch_size, args.resolution, "img", 100)[0]
        parts = step_breakdown(build(target, runs, cache, args), batch, args.steps)
        bound = (parts["encoder"] + parts["cached step"]) / parts["cached step"]
        table.add_row(target, *(f"{parts[c]:.1f}" for c in columns), f"{bound:.2f}x")
    console.print(table)


# --------------------------------------------------------------------------- report
def print_results(console: Console, args: argparse.Namespace,
                  results: dict[str, ArmTimes]) -> None:
    """Per-target medians of every mode run, then the totals and ratios."""
    table = Table(title=f"one source ({args.source}, {args.encoder}, {args.resolution} px) → "
                        f"{len(args.targets)} targets; median of {args.repeats} run(s), seconds")
    table.add_column("target")
    for mode in results:
        for name in ("uncached", "cached", "ratio", "loss dev."):
            table.add_column(f"{mode} {name}", justify="right")
    for target in [*args.targets, "all targets"]:
        row = [target]
        for times in results.values():
            if target == "all targets":
                u = sum(statistics.median(v) for v in times.uncached.values())
                c = sum(statistics.median(v) for v in times.cached.values())
                deviation = times.deviation
            else:
                u, c = statistics.median(times.uncached[target]), statistics.median(
                    times.cached[target])
                deviation = times.deviations[target]
            row += [f"{u:.2f}", f"{c:.2f}", f"{u / c:.2f}x", f"{deviation:.2g}"]
        table.add_row(*row)
    console.print(table)

    summary = Table(title="speed-up of the cache, one source into all targets (target ≥ 5x)")
    for name in ("mode", "what is timed", "ratio per repeat", "median", "losses agree"):
        summary.add_column(name, justify="left" if name in ("mode", "what is timed") else "right")
    what = {"end to end": "shards + Trainer fit/val/test (data loading counts)",
            "compute only": "in-memory batches, training loop + test pass"}
    for mode, times in results.items():
        ratios = times.total_ratios()
        summary.add_row(mode, what[mode], ", ".join(f"{r:.2f}x" for r in ratios),
                        f"{statistics.median(ratios):.2f}x",
                        "yes" if times.deviation <= 1.0 else f"NO ({times.deviation:.3g})")
    console.print(summary)
    rtol, atol = tolerance(args.precision)
    console.print(
        f"{args.limit} training images × {args.epochs} epochs, batch {args.batch_size}, decoder/"
        f"head width {args.decoder_width}/{args.head_width}, {args.threads} torch thread(s), "
        f"{args.num_workers} loader worker(s) (e2e), {args.precision} on {args.device}; test "
        f"losses compared within rtol {rtol:g} / atol {atol:g} (loss dev.: the worst per-image "
        "difference in units of that tolerance); the first target of each repeat fills the cache")


def main() -> None:
    """Run the chosen measurements and print their tables."""
    args = parse_args()
    torch.set_num_threads(args.threads)
    if args.deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # before cuBLAS starts
        torch.use_deterministic_algorithms(True, warn_only=True)
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
    logging.getLogger("lightning.fabric").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", module="lightning")
    console = Console(width=160)  # the tables are wide; keep them readable in logs

    with tempfile.TemporaryDirectory() as folder:
        tmp = Path(folder)
        runs = tmp / "runs"
        torch.manual_seed(0)
        register_task_run(build_task(args.source, encoder=args.encoder,
                                     resolution=args.resolution,
                                     decoder_width=args.decoder_width), runs)
        if args.breakdown_only:
            print_breakdown(console, runs, tmp / "breakdown-cache", args)
            return
        results: dict[str, ArmTimes] = {}
        if args.mode in ("both", "e2e"):
            results["end to end"] = end_to_end(args, runs, tmp, console)
        if args.mode in ("both", "compute"):
            results["compute only"] = compute_only(args, runs, tmp, console)
        print_results(console, args, results)
        if args.breakdown:
            print_breakdown(console, runs, tmp / "breakdown-cache", args)


if __name__ == "__main__":
    main()
