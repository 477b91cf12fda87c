"""The representation cache: each frozen source's representation of the transfer data, on disk.

A transfer reads frozen encoders, so a source's representation of an image never changes. The
paper pre-extracted them once (``{task}_{split}_representations.pkl``); here they are memoized
lazily and shared by every readout that needs them (a source's transfers into all targets, and
every higher-order transfer containing it):

- one file per (source run, split, input kind):
  ``ROOT/<source run id>/<split>__<input kind>__r<resolution>.pt`` holding the sample keys, one
  ``K×8×h×w`` tensor (``K×V×8×h×w`` for multi-view inputs) and a fingerprint of the source
  checkpoint (a retrained source invalidates its file);
- the input kind is ``rgb``: one row per image, keyed by its view key, for single-image
  targets and for the views of multi-view targets alike (a unit's views are looked up one by
  one); ``views-<target>`` files keyed by whole units serve multi-view batches that do not say
  which views they hold;
- a key not yet in the file is encoded on first sight and added, so the training stream need not
  visit every key in one pass (the training subset is resampled);
- writes merge with what is on disk under a lock and replace the file atomically, so concurrent
  transfers of one sweep share it safely and a killed run never leaves a half-written file;
- in memory a store is one tensor plus a key → row index, read from disk once per process:
  a cached batch costs one ``index_select`` (no per-step file I/O, no per-key stacking);
- a store can be filled up front (:meth:`RepresentationStore.get` on an image-only pass) and
  then read by key alone (:meth:`RepresentationStore.take`), so batches need no images at all.

Targets' labels still come from the datamodule; only the representation comes from the cache.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import io
import os
import re
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import torch

from taskonomy.analysis.records import WEIGHTS_FINGERPRINT
from taskonomy.datamodules.domains import atomic_write_bytes

#: Version of the cache files; other versions are rebuilt. 2: the encoders' max-pool pads like
#: TF's SAME (the same weights now give other representations). 3: denoising and inpainting
#: sources read their own tasks' inputs (noisy, centre blanked). 4: that noise drawn with
#: torch on the images' device; the random encoder reads the plain image for every target.
CACHE_VERSION = 4

_SAFE = re.compile(r"[^A-Za-z0-9._=+-]+")


def weights_fingerprint(network: torch.nn.Module) -> str:
    """The identity of a network's weights: a hash of its state (names, shapes, values).

    Taken from the weights actually loaded, so a runs folder that is moved or copied keeps its
    cache and its transfers resume, and a checkpoint rewritten meanwhile cannot pass for them.
    """
    digest = hashlib.sha1()
    for name, tensor in sorted(network.state_dict().items()):
        value = tensor.detach().cpu().contiguous()
        if value.dtype in (torch.bfloat16, torch.float16):
            # A network held in half precision (``bf16-true``) is the same weights as the
            # fp32 copy a transfer loads them into.
            value = value.float()
        digest.update(f"{name}|{value.dtype}|{tuple(value.shape)}".encode())
        digest.update(value.reshape(-1).view(torch.uint8).numpy().tobytes())
    return WEIGHTS_FINGERPRINT + digest.hexdigest()[:20]


def cache_file(root: str | os.PathLike[str], source_id: str, split: str, input_kind: str,
               resolution: int) -> Path:
    """Where the representations of one (source run, split, input kind) live."""
    name = f"{_SAFE.sub('_', split)}__{_SAFE.sub('_', input_kind)}__r{int(resolution)}.pt"
    return Path(root) / _SAFE.sub("_", source_id) / name


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".lock"), "a+b") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _read(path: Path, fingerprint: str) -> tuple[list[str], torch.Tensor | None]:
    """Keys and stacked representations of a cache file; none when absent, stale or unreadable."""
    if not path.is_file():
        return [], None
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # noqa: BLE001 - any unreadable file is treated as absent
        return [], None  # a foreign or damaged file: rebuilt from scratch on the next save
    if (not isinstance(data, dict) or data.get("version") != CACHE_VERSION
            or data.get("fingerprint") != fingerprint):
        return [], None
    keys, values = [str(k) for k in data["keys"]], data["representations"]
    if not isinstance(values, torch.Tensor) or values.shape[0] != len(keys):
        return [], None
    return keys, values


def _first_positions(keys: Sequence[str]) -> dict[str, int]:
    """Each distinct key → its first position (a key repeated in a batch is encoded once)."""
    first: dict[str, int] = {}
    for i, key in enumerate(keys):
        first.setdefault(key, i)
    return first


class _KeyedTable:
    """Representations as rows of one growing tensor, with a key → row index.

    One tensor instead of a tensor per key: a batch is a single ``index_select`` and the file
    is written without restacking. Capacity doubles when full, so filling K keys batch by batch
    copies O(K) rows in total.
    """

    def __init__(self, keys: list[str], values: torch.Tensor | None) -> None:
        self.rows: dict[str, int] = {}
        self.keys: list[str] = []
        self._data = values
        self._size = 0
        if values is not None:
            first = _first_positions(keys)
            if len(first) != len(keys):  # duplicate keys in a file: keep the first rows
                self._data = values.index_select(0, torch.tensor(list(first.values())))
            self.rows = {key: row for row, key in enumerate(first)}
            self.keys = list(self.rows)
            self._size = len(self.keys)

    def __len__(self) -> int:
        return self._size

    def fits(self, values: torch.Tensor) -> bool:
        """Whether rows of ``values`` have this table's row shape (any shape fits an empty one)."""
        return self._data is None or values.shape[1:] == self._data.shape[1:]

    def add(self, keys: Sequence[str], values: torch.Tensor, origin: Path) -> None:
        """Append rows for keys not in the table (``values[i]`` belongs to ``keys[i]``)."""
        if self._data is not None and not self.fits(values):
            raise ValueError(
                f"representation cache {origin}: new representations of shape "
                f"{tuple(values.shape[1:])} do not match the stored "
                f"{tuple(self._data.shape[1:])}; delete the file to rebuild it"
            )
        fresh = [i for k, i in _first_positions(keys).items() if k not in self.rows]
        if not fresh:
            return
        if len(fresh) < len(keys):
            values = values.index_select(0, torch.tensor(fresh))
            keys = [keys[i] for i in fresh]
        needed = self._size + len(keys)
        if self._data is None or needed > self._data.shape[0]:
            capacity = max(needed, 2 * (0 if self._data is None else self._data.shape[0]), 64)
            grown = values.new_empty((capacity, *values.shape[1:]))
            if self._data is not None:
                grown[: self._size] = self._data[: self._size]
            self._data = grown
        self._data[self._size: needed] = values
        for offset, key in enumerate(keys):
            self.rows[key] = self._size + offset
            self.keys.append(key)
        self._size = needed

    def take(self, keys: Sequence[str]) -> torch.Tensor:
        """Rows of ``keys`` (all present), stacked in that order."""
        assert self._data is not None
        index = torch.tensor([self.rows[k] for k in keys], dtype=torch.long)
        return self._data.index_select(0, index)

    def values(self) -> torch.Tensor:
        """All rows, in :attr:`keys` order, as a tensor of exactly ``len(self)`` rows."""
        assert self._data is not None
        # A clone drops the spare capacity (torch.save writes a view's whole storage).
        data = self._data[: self._size]
        return data if self._size == self._data.shape[0] else data.clone()


class RepresentationStore:
    """The in-memory view of one cache file, filled lazily by a frozen encoder.

    The file is read once, when the store is opened; after that every batch is served from
    one in-memory tensor (no per-step file I/O) and only keys never seen are encoded.

    Args:
        path: The cache file (see :func:`cache_file`).
        fingerprint: Identity of the source checkpoint; a file with another is ignored.
        encode: Frozen encoder call: images ``B×…`` → representations ``B×…`` (no grad).
    """

    def __init__(self, path: Path, fingerprint: str,
                 encode: Callable[[torch.Tensor], torch.Tensor]) -> None:
        self.path = path
        self.fingerprint = fingerprint
        self.encode = encode
        self._table = _KeyedTable(*_read(path, fingerprint))
        self._new: set[str] = set()
        #: Representations computed by this store (cache misses) and served from memory (hits).
        self.misses = 0
        self.hits = 0

    def __len__(self) -> int:
        return len(self._table)

    def __contains__(self, key: object) -> bool:
        return key in self._table.rows

    def keys(self) -> list[str]:
        """Keys held in memory (read from the file or encoded here), in row order."""
        return list(self._table.keys)

    def missing(self, keys: Sequence[str]) -> list[str]:
        """The keys (in order, once each) that this store does not hold."""
        rows = self._table.rows
        return [k for k in _first_positions(keys) if k not in rows]

    def take(self, keys: Sequence[str], device: torch.device | str = "cpu") -> torch.Tensor:
        """Representations of keys that are all cached (no images needed).

        Raises:
            KeyError: Some keys are not cached; the message names the first ones and the file.
        """
        keys = [str(k) for k in keys]
        missing = self.missing(keys)
        if missing:
            raise KeyError(
                f"representation cache {self.path}: {len(missing)} of {len(keys)} keys are not "
                f"cached (first: {', '.join(missing[:3])}); fill the cache from the images "
                "first (batches without images can only be served from it)"
            )
        self.hits += len(keys)
        return self._table.take(keys).to(device, non_blocking=True)

    def reload(self) -> None:
        """Take in the keys other processes saved to the file since this store read it."""
        with _locked(self.path):
            disk_keys, disk_values = _read(self.path, self.fingerprint)
        if disk_values is not None and self._table.fits(disk_values):
            self._table.add(disk_keys, disk_values, self.path)

    def get(self, keys: Sequence[str], images: torch.Tensor) -> torch.Tensor:
        """Representations of a batch, encoding only the keys not cached yet.

        Args:
            keys: Sample keys of the batch (``len(keys) == images.shape[0]``).
            images: The batch's encoder inputs (used for the missing keys only).

        Returns:
            The stacked representations on ``images``' device.
        """
        if len(keys) != images.shape[0]:
            raise ValueError(
                f"representation cache: {len(keys)} sample keys for a batch of "
                f"{images.shape[0]} images; batches must carry one '__key__' per sample"
            )
        keys = [str(k) for k in keys]
        rows = self._table.rows
        missing = [i for k, i in _first_positions(keys).items() if k not in rows]
        if missing:
            index = torch.tensor(missing, device=images.device)
            with torch.no_grad():
                fresh = self.encode(images.index_select(0, index)).detach().float().cpu()
            fresh_keys = [keys[i] for i in missing]
            self._table.add(fresh_keys, fresh, self.path)
            self._new.update(fresh_keys)
        self.misses += len(missing)
        self.hits += len(keys) - len(missing)  # a repeat of a fresh key is served, not encoded
        return self._table.take(keys).to(images.device, non_blocking=True)

    @property
    def dirty(self) -> bool:
        """Whether this store holds representations the file does not have yet."""
        return bool(self._new)

    def save(self) -> None:
        """Merge the new representations into the file (locked, atomic replace).

        Keys another process wrote meanwhile are taken into memory too, so the file only grows.
        """
        if not self._new:
            return
        with _locked(self.path):
            disk_keys, disk_values = _read(self.path, self.fingerprint)
            if disk_values is not None and self._table.fits(disk_values):
                self._table.add(disk_keys, disk_values, self.path)
            payload: dict[str, Any] = {
                "version": CACHE_VERSION,
                "fingerprint": self.fingerprint,
                "keys": list(self._table.keys),
                "representations": self._table.values(),
            }
            buffer = io.BytesIO()
            torch.save(payload, buffer)
            atomic_write_bytes(self.path, buffer.getvalue())
        self._new.clear()


class RepresentationCache:
    """A folder of representation files, one per (source run, split, input kind, resolution).

    Args:
        root: The cache folder (created on the first save).
    """

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        self._stores: dict[Path, RepresentationStore] = {}
        self._by_args: dict[tuple[str, str, str, int, str], RepresentationStore] = {}

    def store(self, source_id: str, split: str, input_kind: str, resolution: int,
              fingerprint: str, encode: Callable[[torch.Tensor], torch.Tensor]
              ) -> RepresentationStore:
        """The (memoized) store of one source on one split."""
        # Looked up once per batch and source: the tuple avoids rebuilding the path each time.
        memo = (source_id, split, input_kind, resolution, fingerprint)
        store = self._by_args.get(memo)
        if store is None:
            path = cache_file(self.root, source_id, split, input_kind, resolution)
            store = self._stores.get(path)
            if store is None or store.fingerprint != fingerprint:
                store = self._stores[path] = RepresentationStore(path, fingerprint, encode)
            self._by_args[memo] = store
        return store

    def stores(self) -> list[RepresentationStore]:
        """Stores opened so far."""
        return list(self._stores.values())

    def save(self) -> None:
        """Save every store with new representations."""
        for store in self._stores.values():
            store.save()

    @property
    def misses(self) -> int:
        """Representations computed so far (over all stores)."""
        return sum(s.misses for s in self._stores.values())

    @property
    def hits(self) -> int:
        """Representations served from the cache so far (over all stores)."""
        return sum(s.hits for s in self._stores.values())
