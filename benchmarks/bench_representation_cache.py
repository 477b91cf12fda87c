"""Wall time of one source's transfers into every target, with and without the cache.

Acceptance (issue 6): one source into ALL targets, the cached arm ≥ 5× faster. Each target is
trained by both arms in turn, in the same process, on the same in-memory batches: the paper's
readout and a fresh target head for ``--epochs`` passes over the training batches, then one test
pass. The uncached arm runs the frozen encoder on every batch (eval mode, no grad: the natural
implementation). The cached arm opens a fresh :class:`RepresentationCache` per target (as a new
process would: the file is read from disk), so the first target pays the encoder once per key and
writes the file, and every later target only reads it. Multi-view targets have their own sample
units, so each of them fills its own file on its first epoch. Data loading is left out of both
arms, so the ratio isolates what the cache removes: the encoder's forward pass.

Defaults are the CPU transfer setting (``experiments/configs/transfer_cpu.yaml``: resnet10
source at 64 px, decoder and head width 0.25, batch 16, 64 training images, 10 epochs). Use one
torch thread (the default) on a shared machine; the run is repeated and medians are reported.
``--breakdown`` times the parts of one training step per target (encoder, cache read, readout,
head, loss, backward, optimizer), which is what bounds the ratio: with E the encoder's forward
and D the rest of a step, the speed-up of a long run tends to (E + D) / D.

    python benchmarks/bench_representation_cache.py [--source reshading] [--repeats 3]
    python benchmarks/bench_representation_cache.py --subset --encoder resnet50 \\
        --resolution 128 --batch-size 8 --epochs 4       # the earlier 6-target measurement
    python benchmarks/bench_representation_cache.py --breakdown-only --encoder resnet50 \\
        --resolution 256 --decoder-width 1 --head-width 1 --batch-size 8 --batches 1 \\
        --targets normal segment_semantic class_scene    # the paper's networks, per step
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import torch
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from taskonomy.tasks.build import build_task
from taskonomy.tasks.registry import get_spec, task_names
from taskonomy.tasks.testing import fake_batch
from taskonomy.tasks.transfer import FrozenSource, TransferTask, register_task_run

#: The earlier measurement's targets (``--subset``).
SUBSET = ("normal", "depth_zbuffer", "room_layout", "class_scene", "vanishing_point",
          "edge_texture")

#: Per-image test losses of the two arms must agree this closely (as the equivalence test).
RTOL, ATOL = 1e-4, 1e-6

Batch = dict[str, Any]


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


def build(target: str, runs: Path, cache: Path | None, args: argparse.Namespace) -> TransferTask:
    """A transfer of ``args.source`` into ``target`` with the benchmark's settings."""
    torch.manual_seed(0)
    model = TransferTask(target=target, sources=[args.source], task_runs=str(runs),
                         cache_dir=str(cache) if cache else None, encoder=args.encoder,
                         resolution=args.resolution, decoder_width=args.decoder_width,
                         head_width=args.head_width, lr=args.lr, lr_milestone=None)
    model.log = lambda *a, **k: None  # type: ignore[method-assign]  # no Trainer here
    return model


def optimizer_of(model: TransferTask) -> torch.optim.Optimizer:
    configured = model.configure_optimizers()
    return cast(torch.optim.Optimizer,
                configured["optimizer"] if isinstance(configured, dict) else configured)


def run_transfer(model: TransferTask, train: list[Batch], test: list[Batch],
                 epochs: int) -> dict[str, float]:
    """Train for ``epochs`` passes, then test; the per-image test losses by key."""
    optimizer = optimizer_of(model)
    model.train()
    for _ in range(epochs):
        for batch in train:
            optimizer.zero_grad(set_to_none=True)
            model.training_step(batch, 0).backward()
            optimizer.step()
        model.on_train_epoch_end()  # saves representations first seen in this epoch
    model.eval()
    model.on_test_epoch_start()
    with torch.no_grad():
        for index, batch in enumerate(test):
            model.test_step(batch, index)
    model.on_test_epoch_end()
    return dict(model.test_per_image_losses)


def timed_transfer(target: str, runs: Path, cache: Path | None, args: argparse.Namespace,
                   data: dict[str, list[Batch]], tests: dict[str, list[Batch]]
                   ) -> tuple[float, dict[str, float]]:
    """Seconds to build, train and test one transfer (one arm), and its per-image test losses."""
    start = time.perf_counter()
    losses = run_transfer(build(target, runs, cache, args), data[target], tests[target],
                          args.epochs)
    return time.perf_counter() - start, losses


def worst_deviation(reference: dict[str, float], other: dict[str, float]) -> float:
    """Largest |a - b| / (ATOL + RTOL·|a|) over keys: ≤ 1 means within the tolerance."""
    if reference.keys() != other.keys():
        return float("inf")
    return max((abs(reference[k] - other[k]) / (ATOL + RTOL * abs(reference[k]))
                for k in reference), default=0.0)


def median_ms(call: Callable[[], Any], repeats: int) -> float:
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


def print_breakdown(console: Console, runs: Path, cache: Path, args: argparse.Namespace,
                    data: dict[str, list[Batch]]) -> None:
    table = Table(title=f"one training step, batch {args.batch_size} (median ms, "
                        f"{args.threads} thread(s))")
    columns = ("encoder", "cache read", "readout", "head", "loss", "backward", "optimizer",
               "cached step")
    table.add_column("target")
    for column in columns:
        table.add_column(column, justify="right")
    table.add_column("(E+D)/D", justify="right")
    for target in args.targets:
        parts = step_breakdown(build(target, runs, cache, args), data[target][0], args.steps)
        bound = (parts["encoder"] + parts["cached step"]) / parts["cached step"]
        table.add_row(target, *(f"{parts[c]:.1f}" for c in columns), f"{bound:.2f}x")
    console.print(table)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", default="reshading", help="the one source task")
    parser.add_argument("--targets", nargs="+", default=None,
                        help="targets (default: every registered target except the source)")
    parser.add_argument("--subset", action="store_true",
                        help=f"the earlier measurement's targets: {' '.join(SUBSET)}")
    parser.add_argument("--encoder", default="resnet10")
    parser.add_argument("--resolution", type=int, default=64)
    parser.add_argument("--decoder-width", type=float, default=0.25)
    parser.add_argument("--head-width", type=float, default=0.25)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--batches", type=int, default=4, help="training batches (64 images)")
    parser.add_argument("--test-batches", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--epochs", type=int, default=10, help="transfer_cpu.yaml: max_epochs")
    parser.add_argument("--repeats", type=int, default=3, help="runs of both arms; medians")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1: stable)")
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
    torch.set_num_threads(args.threads)
    console = Console(width=132)  # the breakdown table is wide; keep it readable in logs

    with tempfile.TemporaryDirectory() as tmp:
        runs = Path(tmp) / "runs"
        torch.manual_seed(0)
        register_task_run(build_task(args.source, encoder=args.encoder,
                                     resolution=args.resolution, decoder_width=0.25), runs)
        data = {t: make_batches(t, args.batches, args.batch_size, args.resolution, "img", 100)
                for t in args.targets}
        if args.breakdown_only:
            print_breakdown(console, runs, Path(tmp) / "cache", args, data)
            return
        tests = {t: make_batches(t, args.test_batches, args.batch_size, args.resolution, "test",
                                 900) for t in args.targets}
        uncached: dict[str, list[float]] = {t: [] for t in args.targets}
        cached: dict[str, list[float]] = {t: [] for t in args.targets}
        totals: list[float] = []
        deviation = 0.0
        with Progress(console=console, transient=True) as progress:
            bar = progress.add_task("transfers", total=args.repeats * len(args.targets))
            for repeat in range(args.repeats):
                cache = Path(tmp) / f"cache{repeat}"  # every repeat starts with an empty cache
                for target in args.targets:
                    progress.update(bar, description=f"repeat {repeat + 1}: {target}")
                    t_u, losses_u = timed_transfer(target, runs, None, args, data, tests)
                    t_c, losses_c = timed_transfer(target, runs, cache, args, data, tests)
                    uncached[target].append(t_u)
                    cached[target].append(t_c)
                    deviation = max(deviation, worst_deviation(losses_u, losses_c))
                    progress.advance(bar)
                totals.append(sum(uncached[t][-1] for t in args.targets)
                              / sum(cached[t][-1] for t in args.targets))

        table = Table(title=f"one source ({args.source}, {args.encoder}, {args.resolution} px) "
                            f"→ {len(args.targets)} targets; median of {args.repeats} runs")
        for name in ("target", "uncached s", "cached s", "ratio"):
            table.add_column(name, justify="left" if name == "target" else "right")
        for target in args.targets:
            u, c = statistics.median(uncached[target]), statistics.median(cached[target])
            table.add_row(target, f"{u:.2f}", f"{c:.2f}", f"{u / c:.2f}x")
        sum_u = sum(statistics.median(v) for v in uncached.values())
        sum_c = sum(statistics.median(v) for v in cached.values())
        table.add_row("all targets", f"{sum_u:.2f}", f"{sum_c:.2f}", f"{sum_u / sum_c:.2f}x")
        console.print(table)
        if args.breakdown:
            print_breakdown(console, runs, Path(tmp) / "cache0", args, data)

    images = args.batches * args.batch_size
    print(f"{images} training images × {args.epochs} epochs + {args.test_batches * args.batch_size}"
          f" test images per target, batch {args.batch_size}, decoder/head width "
          f"{args.decoder_width}/{args.head_width}, {args.threads} torch thread(s); in-memory "
          "batches (no data loading); the first target (and each multi-view target) fills the "
          "cache")
    print(f"test losses: cached vs uncached within rtol {RTOL:g} / atol {ATOL:g}: "
          f"{'yes' if deviation <= 1.0 else 'NO'} (worst {deviation:.3g} of the tolerance)")
    print(f"total ratio per run: {', '.join(f'{r:.2f}x' for r in totals)}")
    print(f"speed-up: {statistics.median(totals):8.2f}x  (median of {args.repeats}; target ≥ 5x)")


if __name__ == "__main__":
    main()
