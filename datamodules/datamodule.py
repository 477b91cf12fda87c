"""``TaskonomyDataModule``: streaming training data from per-domain aligned shards.

- Opens only the domain folders its tasks need and zips them by key (a mismatch is an error
  naming both keys). A missing domain folder is an error before training starts.
- Train: shards resampled with replacement, samples shuffled in a buffer, ``epoch_size``
  samples per epoch as whole batches per rank, dealt to its loader workers.
- Val/test: every shard read once, in order, split over ranks then workers, so every sample
  key comes exactly once across the whole job; keys travel in the batch.
- Bad samples (truncated shards, corrupt files, missing labels) are warned about, counted and
  skipped; :class:`SkippedSamplesCallback` logs the count at every epoch end.
- ``limit`` keeps a fixed, seeded subset of the training keys (the 1k/16k transfer regimes).
- Each loader process keeps the encoded (still compressed) samples of the shards it has read
  whole in memory, up to ``memory_mb``, and serves later passes from there: a small regime
  subset or a validation split is read from disk once instead of once per epoch (reading a
  subset means walking every tar member of every shard that holds one of its keys).
- Cached inputs (transfers whose frozen representations are cached by sample key):
  :meth:`TaskonomyDataModule.use_cached_inputs` leaves the ``rgb`` domain out of a split's
  streams (its shards are never opened), so batches carry keys and labels only;
  :meth:`~TaskonomyDataModule.image_dataloader` reads only ``rgb``, once, to fill such a cache.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import multiprocessing
import random
import tarfile
import warnings
import zlib
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from taskonomy.datamodules.domains import DOMAINS, get_domain
from taskonomy.datamodules.layouts import parse_key
from taskonomy.datamodules.multiview import (
    MULTIVIEW_TASKS,
    build_units,
    context_blocks,
    group_by_point,
)
from taskonomy.datamodules.selfsupervised import LabelSets
from taskonomy.datamodules.shards import (
    ShardKeyMismatchError,
    is_url,
    iter_aligned_shard,
    manifest_keys,
    read_manifest,
    shard_location,
)
from taskonomy.datamodules.task_samples import (
    BadSampleError,
    collate_batch,
    decode_sample,
    domain_tensor,
    make_task_sample,
)

log = logging.getLogger(__name__)


#: Streams whose skips are counted apart: the three roles, and one-off image passes (cache
#: fills). Validation runs inside a training epoch, so one shared count would mix them.
SKIP_STREAMS = ("train", "val", "test", "images")


class UpsampledDataWarning(UserWarning):
    """The shards hold smaller images than the run reads: it trains on enlarged images."""


def _shared_count(value: int) -> Any:
    # A spawn-context lock travels to processes started by fork (DataLoader workers) and by
    # spawn (ddp_spawn, spawned workers) alike; a fork-context one refuses the latter.
    return multiprocessing.get_context("spawn").Value("q", value)


class SkipCounter:
    """Counts skipped samples per stream across DataLoader worker processes (shared integers)."""

    def __init__(self) -> None:
        self._values = {name: _shared_count(0) for name in SKIP_STREAMS}

    def __getstate__(self) -> dict[str, Any]:
        # Shared memory travels only to processes being started (DataLoader workers); any
        # other pickling (ddp_spawn, deepcopy) carries the current counts into a new counter.
        from multiprocessing.context import get_spawning_popen

        if get_spawning_popen() is not None:
            return {"values": self._values}
        return {"counts": {name: int(value.value) for name, value in self._values.items()}}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self._values = state.get("values") or {
            name: _shared_count(count) for name, count in state["counts"].items()}

    def add(self, reason: str, stream: str = "train") -> None:
        """Count one skipped sample of a stream and warn with its reason."""
        value = self._values[stream]
        with value.get_lock():
            value.value += 1
        warnings.warn(f"skipped a bad sample: {reason}", RuntimeWarning, stacklevel=2)

    def stream(self, name: str) -> StreamSkips:
        """The counter of one stream (``train``, ``val``, ``test`` or ``images``)."""
        if name not in self._values:
            raise ValueError(f"unknown stream {name!r}; streams: {', '.join(SKIP_STREAMS)}")
        return StreamSkips(self, name)

    @property
    def count(self) -> int:
        """Skipped samples of all streams since their last :meth:`reset`."""
        return sum(int(value.value) for value in self._values.values())

    def reset(self, stream: str | None = None) -> int:
        """Return the count of one stream (default: all of them) and set it to 0."""
        total = 0
        for name, value in self._values.items():
            if stream is None or name == stream:
                with value.get_lock():
                    total += int(value.value)
                    value.value = 0
        return total


@dataclass(frozen=True)
class StreamSkips:
    """One stream's view of a :class:`SkipCounter`: what a :class:`ShardStream` counts into."""

    counter: SkipCounter
    name: str

    def add(self, reason: str) -> None:
        """Count one skipped sample of this stream and warn with its reason."""
        self.counter.add(reason, self.name)


def task_domains(tasks: Sequence[str]) -> list[str]:
    """Domains the given tasks read, in :data:`DOMAINS` order.

    Raises:
        ValueError: an unknown task (the message lists valid tasks).
    """
    from taskonomy.tasks.registry import get_spec

    needed = {d for task in tasks for d in get_spec(task).domains} | {"rgb"}
    return [d for d in DOMAINS if d in needed] + sorted(needed - set(DOMAINS))


def labels_need_rgb(task: str) -> bool:
    """Whether a task's labels (not only its input) are made from the ``rgb`` file.

    True for the self-supervised tasks (autoencoding, denoising, colorization, ...) and, to be
    safe, for plugin tasks, whose sample builders may read any domain.
    """
    from taskonomy.tasks.registry import get_registered

    registered = get_registered(task)
    return not registered.spec.label_domains or registered.plugin


# Stand-ins for the image where a stream delivers labels only (cached inputs): the sample
# builders make an input from them, which the stream drops. Zero-stride views cost no memory.
def _no_image(resolution: int) -> np.ndarray:
    return np.broadcast_to(np.zeros((), np.float32), (3, resolution, resolution))


def _no_rgb_file(resolution: int) -> np.ndarray:
    return np.broadcast_to(np.zeros((), np.uint8), (resolution, resolution, 3))


def _node_info(rank: int | None, world_size: int | None) -> tuple[int, int]:
    if rank is not None and world_size is not None:
        return rank, world_size
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def _point_rank(key: str, world: int) -> int:
    """The rank that counts a skipped view of a point read by every rank (a hash of the point)."""
    return zlib.crc32(parse_key(key).point_key.encode("utf-8")) % world


def _stable_seed(*parts: object) -> int:
    digest = hashlib.sha256("|".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:8], "little")


class ShardStream(IterableDataset):
    """The sample stream of one split (used through :class:`TaskonomyDataModule`).

    Args:
        root: Shard root (local folder, URL or ``pipe:`` prefix).
        split: Split folder name.
        domains: Domains to open.
        tasks: Tasks whose samples are made (empty: only ``rgb`` and the raw domains).
        resolution: Training resolution.
        shards: Shard indices of this split to read.
        keep: Keys to keep (``None``: all).
        train: Resampled and shuffled with a fixed epoch length, or deterministic single pass.
        epoch_size: Samples per epoch over all ranks and workers (train only).
        seed: Base seed.
        counter: The stream's share of the datamodule's skipped-sample counter.
        shuffle_buffer: Samples in the shuffle buffer (train only).
        rank, world_size: Override the distributed rank (default: from ``torch.distributed``).
        jigsaw_tile: Jigsaw tile size.
        label_sets: The ab bins and jigsaw permutations the labels index (default: shipped).
        raw_domains: Domains delivered as ``sample["domains"][d]`` in stored units.
        batch_size, num_workers: The DataLoader's; a training epoch gives every worker a whole
            number of batches, so ``len(dataloader)`` is exact.
        memory_mb: Encoded samples kept in memory per process (MiB; 0: none), shard by shard.
        cached_inputs: Keys whose encoder inputs are cached elsewhere (``None``: off). When set,
            samples carry no ``rgb`` and no task ``input`` (``rgb`` must not be in ``domains``),
            and a sample (a view, for multi-view tasks) whose key is not in it is skipped and
            counted, as one with an unreadable image would be.
        eval_blocks: Shards read together in evaluation, the unit handed to ranks and workers
            (``None``: each shard alone); multi-view units never span two blocks.
        shard_counts: Samples per shard index, as the manifest lists them; a shard that ends
            early (a tar cut at a member boundary reads as a valid, shorter archive) is
            counted as truncated.
    """

    def __init__(self, root: str, split: str, domains: Sequence[str], tasks: Sequence[str],
                 resolution: int, shards: Sequence[int], keep: frozenset[str] | None,
                 train: bool, epoch_size: int, seed: int, counter: StreamSkips,
                 shuffle_buffer: int = 256, rank: int | None = None,
                 world_size: int | None = None, jigsaw_tile: int | None = None,
                 label_sets: LabelSets | None = None,
                 raw_domains: Sequence[str] = (), batch_size: int = 1,
                 num_workers: int = 0, cached_inputs: frozenset[str] | None = None,
                 memory_mb: float = 0,
                 eval_blocks: Sequence[Sequence[int]] | None = None,
                 shard_counts: dict[int, int] | None = None) -> None:
        super().__init__()
        self.shard_counts = dict(shard_counts or {})
        self.eval_blocks = eval_blocks
        self.cached_inputs = cached_inputs
        if memory_mb < 0:
            raise ValueError(f"memory_mb must be ≥ 0 (0 keeps nothing in memory), got {memory_mb}")
        self.memory_bytes = int(memory_mb * 2**20)
        #: Shard index → the kept samples of a shard read whole (see ``memory_mb``).
        self._memory: dict[int, list[dict[str, Any]]] = {}
        self._memory_used = 0
        self.batch_size, self.num_workers = batch_size, num_workers
        self.raw_domains = [d for d in raw_domains if d != "rgb"]
        self.root, self.split = root, split
        self.domains, self.tasks = list(domains), list(tasks)
        self.resolution, self.shards, self.keep = resolution, list(shards), keep
        self.train, self.epoch_size, self.seed = train, epoch_size, seed
        self.counter, self.shuffle_buffer = counter, shuffle_buffer
        # Resolved here, in the trainer's process: a DataLoader worker started by spawn or
        # forkserver (macOS, Python ≥ 3.14, `multiprocessing_context`) has no process group,
        # and would read every rank's share as rank 0 of 1.
        self.rank, self.world_size = _node_info(rank, world_size)
        self.jigsaw_tile = jigsaw_tile
        self.label_sets = label_sets
        self.multiview = any(t in MULTIVIEW_TASKS for t in self.tasks)
        self._iterations = 0
        #: Epochs trained before this stream's first one (a run resumed from a checkpoint
        #: continues the epoch sequence instead of replaying its first epochs' samples).
        self.first_epoch = 0
        self._dry_shards = 0
        self._leftover: list[dict[str, Any]] = []
        #: Which views' skips this stream counts (``None``: all of them).
        self._counts_view: Callable[[str], bool] | None = None
        #: Whether this stream counts an unreadable shard (one reader of a shared block does).
        self._counts_shards = True

    # -- shard selection ----------------------------------------------------------------------

    def _worker(self) -> tuple[int, int, int, int, str]:
        rank, world = self.rank, self.world_size
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        # A new DataLoader iterator draws a fresh base seed, but persistent workers keep the
        # first epoch's: the count of this copy's iterations tells their epochs apart. Without
        # workers the count alone does (the same streams as before persistent workers counted).
        epoch = self.first_epoch + self._iterations
        epoch_seed = f"{info.seed}:{epoch}" if info is not None else str(epoch)
        return rank, world, worker, workers, epoch_seed

    def _eval_plan(self) -> tuple[list[list[int]], tuple[int, int] | None]:
        """This worker's evaluation blocks of shards, and its share of a common sequence.

        Blocks (single shards, or context blocks for multi-view tasks) go round-robin over
        ranks first, then over a rank's workers, so every rank gets a share. With fewer blocks
        than ranks, every worker of every rank reads every block, and keeps every n-th sample
        (or unit) of that common sequence, n = ranks × workers, taken ranks first: a rank
        without test samples would hang the others in the end-of-epoch reduction, and so a
        split with at least as many samples as ranks gives each rank some. Either way each test
        image (or unit) is seen once.

        Returns:
            The blocks to read, and ``(slot, n)`` (keep the samples whose position modulo n is
            slot) or ``None`` (keep every sample of the blocks).
        """
        rank, world, worker, workers, _ = self._worker()
        blocks = ([list(b) for b in self.eval_blocks] if self.eval_blocks is not None
                  else [[s] for s in self.shards])
        if len(blocks) < world:
            return blocks, (worker * world + rank, world * workers)
        by_rank = [b for i, b in enumerate(blocks) if i % world == rank]
        return [b for i, b in enumerate(by_rank) if i % workers == worker], None

    def _train_shards(self, rng: random.Random) -> Iterator[int]:
        self._dry_shards = 0
        while True:
            # Every sample of every shard failing would loop forever: stop with an error.
            # The count restarts whenever a finished sample leaves the stream (__iter__).
            if self._dry_shards > 2 * len(self.shards) + 8:
                units = (" or formed no multi-view unit (a multi-view task needs several views "
                         "of a point in the split)" if self.multiview else "")
                raise RuntimeError(
                    f"no usable sample in {self._dry_shards} shards of split {self.split!r} "
                    f"under {self.root}: every sample was skipped (see the warnings){units}"
                )
            self._dry_shards += 1
            yield self.shards[rng.randrange(len(self.shards))]

    # -- reading ------------------------------------------------------------------------------

    def _raw_samples(self, shard_ids: Iterator[int] | list[int]) -> Iterator[dict[str, Any]]:
        for index in shard_ids:
            if index in self._memory:
                yield from self._memory[index]
                continue
            locations = {d: shard_location(self.root, self.split, d, index) for d in self.domains}
            room = self.memory_bytes - self._memory_used
            kept: list[dict[str, Any]] | None = [] if room > 0 else None
            kept_bytes = 0
            read = 0
            try:
                for sample in iter_aligned_shard(locations):
                    read += 1
                    if self.keep is None or sample["__key__"] in self.keep:
                        if kept is not None:
                            kept_bytes += sum(len(v) for v in sample.values()
                                              if isinstance(v, bytes))
                            # Past the budget: stop holding this shard (memory_mb is a cap).
                            kept = kept if kept_bytes <= room else None
                        if kept is not None:
                            kept.append(sample)
                        yield sample
                expected = self.shard_counts.get(index, read)
                if read < expected:
                    raise EOFError(f"it ends after {read} of its {expected} samples")
                # Only a shard read to its end is kept (a consumer may stop mid-shard).
                if kept is not None:
                    self._remember(index, kept)
            except ShardKeyMismatchError:
                raise
            except (tarfile.TarError, EOFError, OSError, ValueError) as error:
                if not self._counts_shards:
                    continue
                self.counter.add(f"shard {index} of {self.split} is unreadable from here on "
                                 f"({type(error).__name__}: {error}); repack it with "
                                 "`taskonomy data pack ... --resume`")

    def _remember(self, index: int, samples: list[dict[str, Any]]) -> None:
        size = sum(len(v) for s in samples for v in s.values() if isinstance(v, bytes))
        if self._memory_used + size <= self.memory_bytes:
            self._memory[index] = samples
            self._memory_used += size

    def _skip_view(self, key: str, message: str) -> None:
        """Count a skipped view, unless another rank counts it.

        Ranks that read the same blocks count the views of their own points only (the counts
        are summed over ranks); a view without a usable key counts everywhere.
        """
        try:
            counted = self._counts_view is None or self._counts_view(key)
        except ValueError:
            counted = True
        if counted:
            self.counter.add(message)

    def _decoded(self, raw: Iterator[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        for sample in raw:
            try:
                yield decode_sample(sample)
            except BadSampleError as error:
                self._skip_view(str(sample.get("__key__", "")), str(error))

    def _single(self, decoded: dict[str, Any], rng: np.random.Generator,
                tasks: Sequence[str]) -> dict[str, Any]:
        out: dict[str, Any] = {"__key__": decoded["__key__"]}
        for task in tasks:
            out[task] = make_task_sample(task, decoded, rng, resolution=self.resolution,
                                         jigsaw_tile=self.jigsaw_tile,
                                         label_sets=self.label_sets)
        if self.raw_domains:
            tensors = {}
            for domain in self.raw_domains:
                tensor = domain_tensor(domain, decoded.get(domain), self.resolution)
                if tensor is None and get_domain(domain).kind != "json":
                    raise BadSampleError(f"sample {decoded['__key__']}: no usable {domain!r}")
                if tensor is not None:
                    tensors[domain] = tensor
            out["domains"] = tensors
        return out

    def _samples(self, decoded: Iterator[dict[str, Any]], rng_for: Any,
                 keep_unit: Callable[[str], bool] | None = None) -> Iterator[dict[str, Any]]:
        """Task samples of decoded views (multi-view units where a multi-view task is served).

        ``keep_unit`` picks multi-view units by their first view's key (a rank keeps its
        points; the other views stay in the context of negatives and partners).
        """
        from taskonomy.datamodules.encodings import rgb_encoding

        if self.cached_inputs is not None:
            yield from self._samples_without_images(decoded, rng_for, keep_unit)
            return
        if not self.multiview:
            for item in decoded:
                try:
                    if item.get("rgb") is None:
                        raise BadSampleError(f"sample {item['__key__']}: no usable 'rgb' file")
                    item["__rgb__"] = rgb_encoding(item["rgb"], self.resolution)
                    sample = self._single(item, rng_for(item["__key__"]), self.tasks)
                    sample["rgb"] = torch.from_numpy(item["__rgb__"])
                except BadSampleError as error:
                    self.counter.add(str(error))
                    continue
                yield sample
            return
        single_tasks = [t for t in self.tasks if t not in MULTIVIEW_TASKS]
        for unit in build_units(group_by_point(decoded), self.tasks, rng_for):
            if keep_unit is not None and not keep_unit(unit["views"][0]["__key__"]):
                continue
            rng = rng_for(unit["__key__"])
            first = {**unit["views"][0], "__key__": unit["__key__"]}
            try:
                if first.get("rgb") is None:
                    raise BadSampleError(f"sample {first['__key__']}: no usable 'rgb' file")
                # Single-view tasks configured beside multi-view ones use the unit's first view.
                first["__rgb__"] = rgb_encoding(first["rgb"], self.resolution)
                sample = self._single(first, rng, single_tasks)
                self._add_multi_view(sample, unit, rng)
                sample["rgb"] = torch.from_numpy(first["__rgb__"])
            except BadSampleError as error:
                self.counter.add(str(error))
                continue
            yield sample

    def _add_multi_view(self, sample: dict[str, Any], unit: dict[str, Any],
                        rng: np.random.Generator) -> None:
        """Add the multi-view tasks' samples of a unit.

        ``view_index`` locates each task's views in the ``+``-joined unit key (a view's key
        names its image, e.g. in a representation cache).
        """
        for task in self.tasks:
            if task in MULTIVIEW_TASKS:
                roles = unit["roles"][task]
                views = [unit["views"][i] for i in roles]
                sample[task] = make_task_sample(task, {"views": views}, rng,
                                                resolution=self.resolution)
                sample[task]["view_index"] = torch.tensor(roles, dtype=torch.long)

    def _samples_without_images(self, decoded: Iterator[dict[str, Any]], rng_for: Any,
                                keep_unit: Callable[[str], bool] | None = None
                                ) -> Iterator[dict[str, Any]]:
        """Keys and labels only: the inputs are cached elsewhere (``cached_inputs``)."""
        assert self.cached_inputs is not None
        cached, r = self.cached_inputs, self.resolution

        def with_cached_input(items: Iterator[dict[str, Any]]) -> Iterator[dict[str, Any]]:
            for item in items:
                if item["__key__"] not in cached:
                    self._skip_view(item["__key__"],
                                    f"sample {item['__key__']}: its input is not cached "
                                     "(its image could not be read when the cache was filled)")
                    continue
                # Multi-view builders stack view images (stand-ins here); single-view ones take
                # the ready encoding. Either way the inputs are dropped below.
                item["rgb"], item["__rgb__"] = _no_rgb_file(r), _no_image(r)
                yield item

        def without_inputs(sample: dict[str, Any]) -> dict[str, Any]:
            for task in self.tasks:
                sample[task].pop("input", None)
            return sample

        if not self.multiview:
            for item in with_cached_input(decoded):
                try:
                    sample = self._single(item, rng_for(item["__key__"]), self.tasks)
                except BadSampleError as error:
                    self.counter.add(str(error))
                    continue
                yield without_inputs(sample)
            return
        single_tasks = [t for t in self.tasks if t not in MULTIVIEW_TASKS]
        for unit in build_units(group_by_point(with_cached_input(decoded)), self.tasks, rng_for):
            if keep_unit is not None and not keep_unit(unit["views"][0]["__key__"]):
                continue
            rng = rng_for(unit["__key__"])
            first = {**unit["views"][0], "__key__": unit["__key__"]}
            try:
                sample = self._single(first, rng, single_tasks)
                self._add_multi_view(sample, unit, rng)
            except BadSampleError as error:
                self.counter.add(str(error))
                continue
            yield without_inputs(sample)

    def _rank_batches(self, world: int) -> int:
        # Whole batches per rank, enough for ``epoch_size`` samples over all ranks: a rank's
        # epoch is never short (rounding down dropped up to a batch per worker, a quarter of a
        # 1k regime's epoch on 8 workers), nor more than a batch per rank long.
        return -(-self.epoch_size // (world * self.batch_size))

    def _per_worker(self, world: int, workers: int, worker: int) -> int:
        # The rank's batches dealt to its workers (some get one fewer, or none: the loader
        # takes batches from the others). Rounding each worker's share up to a whole batch
        # made an epoch of at least world × workers batches: 2048 images of a 1k regime on 8
        # GPUs. Train shards are resampled, so a worker never runs dry.
        batches = self._rank_batches(world)
        return (batches // workers + int(worker < batches % workers)) * self.batch_size

    def __len__(self) -> int:
        """Training samples per rank and epoch (evaluation streams have no length)."""
        if not self.train:
            raise TypeError("evaluation streams read every shard once and have no fixed length")
        return self._rank_batches(self.world_size) * self.batch_size

    def __iter__(self) -> Iterator[dict[str, Any]]:
        rank, world, worker, workers, epoch_seed = self._worker()
        self._iterations += 1
        if not self.train:
            def eval_rng(key: str) -> np.random.Generator:
                return np.random.default_rng(_stable_seed(self.seed, key))

            blocks, share = self._eval_plan()
            position = itertools.count()

            def mine(key: str) -> bool:
                # Called once per sample (single-view) or unit (multi-view), in stream order.
                return share is None or next(position) % share[1] == share[0]

            def counts(key: str) -> bool:  # one of the readers of a view counts its skip
                return _point_rank(key, world * workers) == worker * world + rank

            # Ranks reading the same blocks (fewer blocks than ranks) decode every view; a
            # skipped view is counted by one of them.
            self._counts_view = counts if share is not None and self.multiview else None
            self._counts_shards = share is None or share[0] == 0
            for block in blocks:
                # Multi-view units are built within one context block (see context_blocks),
                # so an evaluation split has the same units however many ranks and workers
                # read it, and runs at any parallelism compare.
                raw = self._raw_samples(block)
                if not self.multiview:
                    raw = (s for s in raw if mine(str(s["__key__"])))
                yield from self._samples(self._decoded(raw), eval_rng, keep_unit=mine)
            return
        base = _stable_seed(self.seed, rank, worker, epoch_seed)
        shard_rng = random.Random(base)
        sample_rng = np.random.default_rng(base)
        per_worker = self._per_worker(world, workers, worker)
        if per_worker == 0:
            return
        stream = self._samples(self._decoded(self._raw_samples(self._train_shards(shard_rng))),
                               lambda _key: sample_rng)
        # The shuffle buffer's leftovers carry over to the next epoch of this stream (the same
        # object without workers or with persistent ones): refilling it from scratch would make
        # and throw away a buffer of samples per epoch, doubling a small regime's decoding.
        buffer, self._leftover = self._leftover, []
        produced = 0
        for sample in stream:
            self._dry_shards = 0
            buffer.append(sample)
            if len(buffer) < self.shuffle_buffer:
                continue
            sample = buffer.pop(shard_rng.randrange(len(buffer)))
            produced += 1
            if produced >= per_worker:
                # Kept before the last yield: Lightning stops after len(dataloader) batches and
                # never resumes the generator past it.
                self._leftover = buffer
                yield sample
                return
            yield sample


def select_subset(keys: Sequence[str], limit: int, seed: int,
                  by_point: bool = False) -> frozenset[str]:
    """A fixed subset of ``limit`` keys (the 1k/16k regimes) in a seeded order.

    Args:
        keys: The split's sample keys (``building__point__view``).
        limit: How many to keep.
        seed: The order's seed.
        by_point: Take whole fixated points with all their views (the last one only in part,
            to hit ``limit`` exactly), for the multi-view tasks (pose, matching, egomotion):
            picking views one by one leaves almost no point with two. Single-view tasks pick
            views one by one, which spreads the images over more places.
    """
    if limit <= 0:
        raise ValueError(f"limit must be positive, got {limit}")
    if limit > len(keys):
        raise ValueError(f"limit {limit} exceeds the {len(keys)} samples of the split")
    if not by_point:
        order = np.random.default_rng(seed).permutation(len(keys))[:limit]
        return frozenset(keys[i] for i in order)
    points: dict[str, list[str]] = {}
    for key in sorted(keys):
        points.setdefault(parse_key(key).point_key, []).append(key)
    groups = list(points.values())
    chosen: list[str] = []
    for index in np.random.default_rng(seed).permutation(len(groups)):
        chosen.extend(groups[index][: limit - len(chosen)])
        if len(chosen) >= limit:
            break
    return frozenset(chosen)


class TaskonomyDataModule(L.LightningDataModule):
    """Lightning datamodule over a shard root (see the module docstring).

    Args:
        root: Shard root: a local folder, a URL prefix or a ``pipe:`` command prefix.
        tasks: Tasks whose samples each batch holds (``batch[task]``).
        domains: Domains delivered as ``batch["domains"][d]`` in their stored units (besides
            or instead of tasks).
        resolution: Training resolution (files are resized on the fly).
        batch_size: Samples per batch.
        num_workers: DataLoader worker processes.
        train_split, val_split, test_split: Split folder names (``None`` disables one).
        limit: Keep a fixed subset of this many training samples (1k/16k regimes).
        epoch_size: Training samples per epoch over all ranks (default: the training count).
        seed: Seed of the subset, the shuffling and the self-supervised randomness.
        shuffle_buffer: Training shuffle buffer in samples.
        jigsaw_tile: Jigsaw tile size (default: ``resolution``).
        ab_bins: Colorization's 313 ab bin centres: a 313×2 ``.npy`` file such as the authors'
            ``pts_in_hull.npy``, or a list (default: the suite's set).
        jigsaw_permutations: Jigsaw's 100 permutations: a 100×9 ``.npy`` file such as the
            authors' ``jigsaw_max_hamming_set.npy``, or a list (default: the suite's set).
        rank, world_size: Simulate a distributed rank (tests); default from torch.distributed.
        memory_mb: Encoded samples each loader process keeps in memory after reading their
            shards whole (MiB; 0: read from disk every epoch). With it, every loader keeps its
            workers between passes so the memory is reused.
    """

    def __init__(self, root: str | Path, tasks: Sequence[str] = (),
                 domains: Sequence[str] = (), resolution: int = 256, batch_size: int = 32,
                 num_workers: int = 2, train_split: str | None = "train",
                 val_split: str | None = "val", test_split: str | None = "test",
                 limit: int | None = None, epoch_size: int | None = None, seed: int = 0,
                 shuffle_buffer: int = 256, jigsaw_tile: int | None = None,
                 ab_bins: str | list[list[float]] | None = None,
                 jigsaw_permutations: str | list[list[int]] | None = None,
                 rank: int | None = None, world_size: int | None = None,
                 memory_mb: float = 512) -> None:
        super().__init__()
        # Read and checked now, so a wrong file fails before any run starts.
        self.label_sets = LabelSets.load(ab_bins, jigsaw_permutations)
        if memory_mb < 0:
            raise ValueError(f"memory_mb must be ≥ 0 (0 keeps nothing in memory), got {memory_mb}")
        self.memory_mb = memory_mb
        self.root = str(root)
        self.tasks = list(tasks)
        for domain in domains:
            if domain not in DOMAINS:
                raise ValueError(f"unknown domain {domain!r}; valid domains: {', '.join(DOMAINS)}")
        self.requested_domains = list(domains)
        self.domains = list(dict.fromkeys(task_domains(self.tasks) + list(domains)))
        if resolution < 8:
            raise ValueError(f"resolution must be at least 8, got {resolution}")
        if limit is not None and limit < 1:
            raise ValueError(f"data.limit must be at least 1 (or null: the whole split), got "
                             f"{limit}")
        if batch_size < 1:  # before the run exists (the loader would say so once it does)
            raise ValueError(f"data.batch_size must be at least 1, got {batch_size}")
        if num_workers < 0:
            raise ValueError(f"data.num_workers must be ≥ 0 (0 reads in the main process), "
                             f"got {num_workers}")
        self.resolution, self.batch_size, self.num_workers = resolution, batch_size, num_workers
        self.splits = {"train": train_split, "val": val_split, "test": test_split}
        self.limit, self.epoch_size, self.seed = limit, epoch_size, seed
        self.shuffle_buffer, self.jigsaw_tile = shuffle_buffer, jigsaw_tile
        self.rank, self.world_size = rank, world_size
        self.skipped = SkipCounter()
        self.manifests: dict[str, dict[str, Any]] = {}
        self._images_identity: dict[str, str] = {}
        #: Split → keys whose encoder inputs are cached (see :meth:`use_cached_inputs`).
        self.cached_inputs: dict[str, frozenset[str]] = {}

    def _check_split(self, split: str) -> dict[str, Any]:
        manifest = read_manifest(self.root, split)
        packed = set(manifest["domains"])
        for domain in self.domains:
            folder = f"{self.root.rstrip('/')}/{split}/{domain}"
            if domain not in packed or (not is_url(self.root) and not Path(folder).is_dir()):
                raise FileNotFoundError(
                    f"domain folder {folder} is missing (needed by tasks "
                    f"{', '.join(self.tasks) or 'rgb'}); packed domains of {split!r}: "
                    f"{', '.join(sorted(packed))}. Pack it with `taskonomy data pack SRC --out "
                    f"{self.root} --split {split} --domains {domain} --resume`"
                )
        packed_at = manifest.get("resolution")
        if isinstance(packed_at, int) and packed_at < self.resolution:
            warnings.warn(
                f"split {split!r} of {self.root} holds {packed_at}² images, and the run reads "
                f"them at {self.resolution}²: every image and label is enlarged, which adds no "
                f"detail. Train at {packed_at} (--model.resolution={packed_at}), or pack the "
                f"source again at --resolution {self.resolution}",
                UpsampledDataWarning, stacklevel=2,
            )
        return manifest

    def setup(self, stage: str | None = None) -> None:
        """Read and check the manifests of the splits this stage uses."""
        stages = {"fit": ("train", "val"), "validate": ("val",), "test": ("test",),
                  "predict": ("test",)}
        for role in stages.get(stage or "fit", ("train", "val", "test")):
            split = self.splits[role]
            if split is not None and split not in self.manifests:
                self.manifests[split] = self._check_split(split)
            if role == "train" and split is not None and self.limit is not None:
                count = int(self.manifests[split]["count"])
                if self.limit > count:  # found here, before a run exists, not when training
                    raise ValueError(f"data.limit {self.limit} exceeds the {count} samples of "
                                     f"split {split!r}; lower it or pack more buildings")

    def _manifest(self, role: str) -> tuple[str, dict[str, Any]]:
        split = self.splits[role]
        if split is None:
            raise ValueError(f"no {role} split configured")
        if split not in self.manifests:
            self.manifests[split] = self._check_split(split)
        return split, self.manifests[split]

    def images_identity(self, role: str) -> str:
        """The split a role reads, tagged with a hash of its packed images (``val@1a2b3c4d5e``).

        What is computed from the images and kept (the transfers' representation cache) keys
        on it: two data roots that reuse sample keys (regenerated synthetic buildings, another
        packing resolution) never share entries.
        """
        split, manifest = self._manifest(role)
        if split not in self._images_identity:  # asked for every batch of a cached transfer
            digests = manifest["domains"].get("rgb", {}).get("sha256", [])
            payload = json.dumps([manifest.get("resolution"), digests])
            self._images_identity[split] = (
                f"{split}@{hashlib.sha1(payload.encode()).hexdigest()[:10]}")
        return self._images_identity[split]

    def _role_subset(self, role: str, manifest: dict[str, Any]) -> frozenset[str] | None:
        if role == "train" and self.limit is not None:
            return select_subset(manifest_keys(manifest), self.limit, self.seed,
                                 by_point=any(t in MULTIVIEW_TASKS for t in self.tasks))
        return None

    def role_keys(self, role: str) -> list[str]:
        """Sample (view) keys a role's stream reads, in shard order.

        The ``limit`` subset for ``train``, every key of the split otherwise.
        """
        _, manifest = self._manifest(role)
        keep = self._role_subset(role, manifest)
        return [k for k in manifest_keys(manifest) if keep is None or k in keep]

    def _stream(self, role: str) -> ShardStream:
        stream = self._make_stream(role)
        if role == "train" and self.trainer is not None:
            # Set before the loader starts workers; a resumed fit has restored its epoch here.
            stream.first_epoch = int(self.trainer.current_epoch)
        return stream

    def _make_stream(self, role: str) -> ShardStream:
        split, manifest = self._manifest(role)
        keep = self._role_subset(role, manifest)
        shards = [s["index"] for s in manifest["shards"]]
        count = manifest["count"]
        if keep is not None:
            shards = [s["index"] for s in manifest["shards"] if keep.intersection(s["keys"])]
            count = len(keep)
        cached = self.cached_inputs.get(split)
        blocks = None
        if role != "train" and any(t in MULTIVIEW_TASKS for t in self.tasks):
            chosen = set(shards)
            blocks = context_blocks([s for s in manifest["shards"] if s["index"] in chosen], keep)
        return ShardStream(
            self.root, split, [d for d in self.domains if cached is None or d != "rgb"],
            self.tasks, self.resolution, shards, keep,
            train=role == "train", epoch_size=self.epoch_size or count, seed=self.seed,
            counter=self.skipped.stream(role), shuffle_buffer=min(self.shuffle_buffer, count),
            rank=self.rank, world_size=self.world_size, jigsaw_tile=self.jigsaw_tile,
            label_sets=self.label_sets, raw_domains=self.requested_domains,
            batch_size=self.batch_size,
            num_workers=self.num_workers, cached_inputs=cached, memory_mb=self.memory_mb,
            eval_blocks=blocks, shard_counts={s["index"]: s["count"] for s in manifest["shards"]},
        )

    def use_cached_inputs(self, keys: Mapping[str, Collection[str]] | None) -> bool:
        """Leave ``rgb`` out of the streams of splits whose encoder inputs are cached by key.

        For a transfer whose frozen representations are all in a cache, the images are not
        needed: the ``rgb`` shards of those splits are not opened, batches carry ``__key__``
        (and ``view_index`` for multi-view tasks) and the labels, but neither ``rgb`` nor task
        ``input``, and a sample whose key is not in ``keys`` is skipped and counted.

        Args:
            keys: Split name → keys whose inputs are cached (merged with earlier calls);
                ``None`` turns the mode off for every split.

        Returns:
            Whether ``rgb`` is left out: ``False`` (and nothing changes) when a task's labels
            are made from the image (e.g. autoencoding) or ``rgb`` was requested by name.
        """
        if keys is None:
            self.cached_inputs = {}
            return False
        if "rgb" in self.requested_domains or any(labels_need_rgb(t) for t in self.tasks):
            return False
        for split, split_keys in keys.items():
            self.cached_inputs[split] = frozenset(split_keys)
        return True

    def image_dataloader(self, role: str, keys: Collection[str] | None = None, *,
                         whole: bool = False) -> DataLoader:
        """One deterministic pass over a role's images: batches of ``__key__`` and ``rgb``.

        Only the ``rgb`` domain is opened, one sample per view (never multi-view units), and only
        shards holding a wanted key are read.

        Args:
            role: ``train``, ``val`` or ``test`` (``train``: its ``limit`` subset).
            keys: Read only these keys of the role (default: all of them).
            whole: Read every wanted key in this process (default: this rank's and worker's
                share, as the evaluation streams split shards).
        """
        split, manifest = self._manifest(role)
        wanted = frozenset(self.role_keys(role) if keys is None
                           else set(keys).intersection(self.role_keys(role)))
        shards = [s["index"] for s in manifest["shards"] if wanted.intersection(s["keys"])]
        stream = ShardStream(
            self.root, split, ["rgb"], [], self.resolution, shards, wanted, train=False,
            epoch_size=len(wanted), seed=self.seed, counter=self.skipped.stream("images"),
            rank=0 if whole else self.rank, world_size=1 if whole else self.world_size,
            batch_size=self.batch_size, num_workers=0 if whole else self.num_workers,
            shard_counts={s["index"]: s["count"] for s in manifest["shards"]},
        )
        # Its own generator: iterating must not draw from the global RNG, or a run that reads
        # images first (to fill a cache) would train with other dropout masks than one that
        # does not.
        return DataLoader(stream, batch_size=self.batch_size,
                          num_workers=0 if whole else self.num_workers,
                          collate_fn=collate_batch, pin_memory=torch.cuda.is_available(),
                          generator=torch.Generator().manual_seed(self.seed))

    def _loader(self, role: str) -> DataLoader:
        return DataLoader(self._stream(role), batch_size=self.batch_size,
                          num_workers=self.num_workers, collate_fn=collate_batch,
                          pin_memory=torch.cuda.is_available(),
                          drop_last=role == "train",
                          # workers (and the samples they keep in memory) live across epochs
                          persistent_workers=self.num_workers > 0 and self.memory_mb > 0)

    def train_dataloader(self) -> DataLoader:
        """Resampled, shuffled training batches."""
        return self._loader("train")

    def val_dataloader(self) -> DataLoader:
        """Deterministic validation batches, each key once across ranks and workers."""
        return self._loader("val")

    def test_dataloader(self) -> DataLoader:
        """Deterministic test batches, each key once across ranks and workers."""
        return self._loader("test")


class SkippedSamplesCallback(L.Callback):
    """Logs ``data/skipped`` (bad samples skipped during the epoch) at every epoch end."""

    def _report(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        datamodule = getattr(trainer, "datamodule", None)
        counter = getattr(datamodule, "skipped", None)
        if not isinstance(counter, SkipCounter):
            return
        count = counter.reset(stage)
        # Summed over ranks: each rank counts the samples it skipped itself.
        pl_module.log(f"data/skipped_{stage}", float(count), on_epoch=True, sync_dist=True,
                      reduce_fx="sum")
        if count:
            log.warning("%d bad samples were skipped during this %s epoch", count, stage)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Report training skips."""
        self._report(trainer, pl_module, "train")

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Report validation skips."""
        self._report(trainer, pl_module, "val")

    def on_test_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Report test skips."""
        self._report(trainer, pl_module, "test")
