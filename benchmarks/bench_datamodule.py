"""Benchmark the shard datamodule against reading the per-building PNG tree.

For a one-task run (rgb + depth_zbuffer + its mask) at 256² this prints:

1. samples/s from shards (TaskonomyDataModule, one process, one thread) vs from the
   per-building file tree (list the building folders, open and decode the same files per
   sample, same sample builder and batching), on the same samples, in the same process. The
   buildings are rendered at the released 512²; shards are compared both as packed losslessly
   (512²) and as packed at the training resolution (``--resolution 256``);
2. bytes read per sample from the aligned per-domain folders vs one tar holding all domains;
3. resident memory after each of 3 training epochs (must stay flat).

The data are synthetic buildings (``taskonomy.datamodules.synth``) packed into a temporary
root. Usage: ``python benchmarks/bench_datamodule.py [--buildings 2 --points 4 --views 3]``.
"""

from __future__ import annotations

import argparse
import gc
import tempfile
import time
from pathlib import Path

import numpy as np

from taskonomy.datamodules.datamodule import TaskonomyDataModule
from taskonomy.datamodules.domains import read_domain_file
from taskonomy.datamodules.layouts import detect_layout
from taskonomy.datamodules.packer import PackConfig, pack
from taskonomy.datamodules.shards import read_manifest
from taskonomy.datamodules.task_samples import collate_batch, make_task_sample

TASK = "depth_zbuffer"
BATCH = 8


def rss_mib(field: str = "VmRSS") -> float:
    """Resident memory (``VmRSS``) or its peak so far (``VmHWM``) in MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def from_tree(source: Path, resolution: int) -> int:
    """One pass over the building tree the way a per-file loader reads it."""
    layout = detect_layout(source)
    rng = np.random.default_rng(0)
    count = 0
    pending: list[dict] = []
    for building in layout.buildings():
        for ref in layout.views(building):
            decoded = {d: read_domain_file(layout.file_path(ref, d), d)
                       for d in ("rgb", "depth_zbuffer")}
            sample = {"__key__": ref.key,
                      TASK: make_task_sample(TASK, decoded, rng, resolution=resolution)}
            sample["rgb"] = sample[TASK]["input"]
            pending.append(sample)
            if len(pending) == BATCH:  # the same batching as the datamodule
                count += len(collate_batch(pending)["__key__"])
                pending = []
    return count + (len(collate_batch(pending)["__key__"]) if pending else 0)


def from_shards(root: Path | str, resolution: int) -> int:
    dm = TaskonomyDataModule(root, tasks=[TASK], resolution=resolution, batch_size=BATCH,
                             num_workers=0, train_split=None, test_split=None)
    return sum(len(batch["__key__"]) for batch in dm.val_dataloader())


def timed(fn, *args, repeats: int = 3) -> tuple[float, int]:
    best, count = float("inf"), 0
    for _ in range(repeats):
        start = time.perf_counter()
        count = fn(*args)
        best = min(best, time.perf_counter() - start)
    return best, count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--buildings", type=int, default=1)
    parser.add_argument("--points", type=int, default=4)
    parser.add_argument("--views", type=int, default=3)
    parser.add_argument("--resolution", type=int, default=256, help="training resolution")
    parser.add_argument("--source-resolution", type=int, default=512,
                        help="resolution of the rendered building files")
    parser.add_argument("--epoch-size", type=int, default=96)
    parser.add_argument("--rounds", type=int, default=5, help="interleaved timing rounds")
    args = parser.parse_args()

    import torch

    from taskonomy.datamodules.synth.dataset import synthesize

    torch.set_num_threads(1)  # per-core figures; DataLoader workers run one thread each too

    with tempfile.TemporaryDirectory() as tmp:
        source, root = Path(tmp) / "buildings", Path(tmp) / "shards"
        start = time.perf_counter()
        synthesize(source, buildings=args.buildings, resolution=args.source_resolution,
                   points=args.points, views=args.views, workers=1)
        print(f"synthesized {args.buildings} buildings in {time.perf_counter() - start:.1f}s")
        start = time.perf_counter()
        manifest = pack(PackConfig(source=source, out=root, split="val",
                                   shard_size=args.points * args.views), progress=False).manifest
        small_root = Path(tmp) / "shards_small"
        pack(PackConfig(source=source, out=small_root, split="val", resolution=args.resolution,
                        shard_size=args.points * args.views), progress=False)
        assert manifest is not None
        n = manifest["count"]
        print(f"packed {n} views, {len(manifest['domains'])} domains, in "
              f"{time.perf_counter() - start:.1f}s")

        # Interleaved rounds, best of each: the machine's load drifts between rounds.
        best = {"tree": (float("inf"), 0), "shards": (float("inf"), 0),
                "small": (float("inf"), 0)}
        for _ in range(args.rounds):
            for name, fn, where in (("tree", from_tree, source), ("shards", from_shards, root),
                                    ("small", from_shards, small_root)):
                seconds, count = timed(fn, where, args.resolution, repeats=1)
                best[name] = min(best[name], (seconds, count))
        (tree_s, tree_n), (shard_s, shard_n), (small_s, small_n) = best.values()
        assert tree_n == shard_n == small_n == n
        print(f"\n1. one-task run ({TASK}: rgb + depth + mask) at {args.resolution}², one core, "
              f"files at {args.source_resolution}²")
        print(f"   per-building PNG tree:          {tree_n / tree_s:8.1f} samples/s")
        print(f"   shards, lossless ({args.source_resolution}²):       "
              f"{shard_n / shard_s:8.1f} samples/s  ({tree_s / shard_s:.2f}x)")
        print(f"   shards packed at {args.resolution}²:         "
              f"{small_n / small_s:8.1f} samples/s  ({tree_s / small_s:.2f}x)")

        domains = read_manifest(small_root, "val")["domains"]
        needed = sum(domains[d]["bytes"] for d in ("rgb", "depth_zbuffer")) / n
        everything = sum(d["bytes"] for d in domains.values()) / n
        print(f"\n2. bytes read per sample (shards packed at {args.resolution}²)")
        print(f"   aligned folders (rgb + depth): {needed / 1024:8.1f} KiB")
        print(f"   one tar with all {len(domains)} domains: {everything / 1024:8.1f} KiB")
        print(f"   saving: {everything / needed:.1f}x fewer bytes")

        dm = TaskonomyDataModule(small_root, tasks=[TASK], resolution=args.resolution,
                                 batch_size=8,
                                 num_workers=0, train_split="val", val_split=None,
                                 test_split=None, epoch_size=args.epoch_size, shuffle_buffer=32)
        print(f"\n3. resident memory over 3 epochs of {args.epoch_size} samples")
        readings = []
        for epoch in range(3):
            batches = sum(1 for _ in dm.train_dataloader())
            gc.collect()
            readings.append(rss_mib())
            print(f"   epoch {epoch}: {batches} batches, RSS {readings[-1]:.1f} MiB, "
                  f"peak {rss_mib('VmHWM'):.1f} MiB")
        print(f"   growth epoch 0 → 2: {readings[2] - readings[0]:+.1f} MiB")


if __name__ == "__main__":
    main()
