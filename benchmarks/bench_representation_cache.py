"""Wall time of one source's transfers into several targets, with and without the cache.

Both arms train the same transfers (the paper's readout and a fresh target head on one frozen
source) for the same steps on the same in-memory batches (data loading is left out of both, so
the ratio isolates the frozen encoder's share); the cached arm reads the source representation
from a :class:`~taskonomy.tasks.representations.RepresentationCache` that the first target fills
and every later target reuses. The paper's regimes train 30-200 epochs per transfer, so the
encoder is paid once instead of ``epochs × targets`` times. Target: ≥ 5× faster with the cache.

    python benchmarks/bench_representation_cache.py [--encoder resnet50] [--resolution 128]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from taskonomy.tasks.build import build_task
from taskonomy.tasks.registry import get_spec
from taskonomy.tasks.testing import fake_batch
from taskonomy.tasks.transfer import TransferTask, register_task_run

TARGETS = ("normal", "depth_zbuffer", "room_layout", "class_scene", "vanishing_point",
           "edge_texture")


def batches_for(target: str, count: int, size: int, resolution: int) -> list[dict]:
    """Fixed batches for a target; images and keys are the same for every target."""
    out = []
    for i in range(count):
        batch = fake_batch(get_spec(target), size, resolution, seed=100 + i)
        rgb = fake_batch(get_spec("normal"), size, resolution, seed=100 + i)["rgb"]
        batch["rgb"] = rgb
        batch["__key__"] = [f"img{i:04d}_{j}" for j in range(size)]
        out.append(batch)
    return out


def train(model: TransferTask, batches: list[dict], epochs: int) -> None:
    optimizer = model.configure_optimizers()
    if isinstance(optimizer, dict):
        optimizer = optimizer["optimizer"]
    model.train()
    for _ in range(epochs):
        for batch in batches:
            optimizer.zero_grad()
            model.training_step(batch, 0).backward()
            optimizer.step()
        if model.cache is not None:
            model.cache.save()


def arm(runs: Path, cache: Path | None, args: argparse.Namespace,
        data: dict[str, list[dict]]) -> float:
    start = time.perf_counter()
    for target in args.targets:
        torch.manual_seed(0)
        model = TransferTask(target=target, sources=["reshading"], task_runs=str(runs),
                             cache_dir=str(cache) if cache else None, encoder=args.encoder,
                             resolution=args.resolution, decoder_width=args.decoder_width,
                             head_width=args.head_width, lr=1e-4, lr_milestone=None)
        model.log = lambda *a, **k: None  # type: ignore[method-assign]  # no Trainer here
        train(model, data[target], args.epochs)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--encoder", default="resnet50")
    parser.add_argument("--resolution", type=int, default=128)
    parser.add_argument("--decoder-width", type=float, default=0.25)
    parser.add_argument("--head-width", type=float, default=0.25)
    parser.add_argument("--batches", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--targets", nargs="+", default=list(TARGETS))
    args = parser.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    with tempfile.TemporaryDirectory() as tmp:
        runs = Path(tmp) / "runs"
        register_task_run(build_task("reshading", encoder=args.encoder,
                                     resolution=args.resolution, decoder_width=0.25), runs)
        data = {t: batches_for(t, args.batches, args.batch_size, args.resolution)
                for t in args.targets}
        uncached = arm(runs, None, args, data)
        cached = arm(runs, Path(tmp) / "cache", args, data)
    images = args.batches * args.batch_size
    print(f"one source ({args.encoder}, {args.resolution}px) → {len(args.targets)} targets, "
          f"{images} images × {args.epochs} epochs each, decoder width {args.decoder_width}")
    print(f"uncached: {uncached:8.1f} s")
    print(f"cached:   {cached:8.1f} s  (cache filled by the first target, reused by the rest)")
    print(f"speed-up: {uncached / cached:8.2f}x  (target ≥ 5x)")


if __name__ == "__main__":
    main()
