"""The representation cache: each frozen source's representation of the transfer data, on disk.

A transfer reads frozen encoders, so a source's representation of an image never changes. The
paper pre-extracted them once (``{task}_{split}_representations.pkl``); here they are memoized
lazily and shared by every readout that needs them (a source's transfers into all targets, and
every higher-order transfer containing it):

- one file per (source run, split, input kind):
  ``ROOT/<source run id>/<split>__<input kind>__r<resolution>.pt`` holding the sample keys, one
  ``K×8×h×w`` tensor (``K×V×8×h×w`` for multi-view inputs) and a fingerprint of the source
  checkpoint (a retrained source invalidates its file);
- the input kind is ``rgb`` for single-image targets and ``views-<target>`` for multi-view
  targets (their sample units, and so their keys, depend on the target);
- a key not yet in the file is encoded on first sight and added, so the training stream need not
  visit every key in one pass (the training subset is resampled);
- writes merge with what is on disk under a lock and replace the file atomically, so concurrent
  transfers of one sweep share it safely and a killed run never leaves a half-written file.

Targets' labels still come from the datamodule; only the representation comes from the cache.
"""

from __future__ import annotations

import contextlib
import fcntl
import io
import os
import re
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import torch

from taskonomy.datamodules.domains import atomic_write_bytes

#: Version of the cache file layout; other versions are rebuilt.
CACHE_VERSION = 1

_SAFE = re.compile(r"[^A-Za-z0-9._=+-]+")


def checkpoint_fingerprint(path: str | os.PathLike[str]) -> str:
    """A cheap identity of a checkpoint file: its resolved path, size and modification time."""
    p = Path(path).resolve()
    stat = p.stat()
    return f"{p}|{stat.st_size}|{stat.st_mtime_ns}"


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


def _read(path: Path, fingerprint: str) -> dict[str, torch.Tensor]:
    """Key → representation from a cache file; empty when absent, stale or unreadable."""
    if not path.is_file():
        return {}
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # noqa: BLE001 - any unreadable file is treated as absent
        return {}  # a foreign or damaged file: rebuilt from scratch on the next save
    if (not isinstance(data, dict) or data.get("version") != CACHE_VERSION
            or data.get("fingerprint") != fingerprint):
        return {}
    keys, values = data["keys"], data["representations"]
    return {str(k): values[i] for i, k in enumerate(keys)}


class RepresentationStore:
    """The in-memory view of one cache file, filled lazily by a frozen encoder.

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
        self.entries: dict[str, torch.Tensor] = _read(path, fingerprint)
        self._new: set[str] = set()
        #: Representations computed by this store (cache misses) and served from memory (hits).
        self.misses = 0
        self.hits = 0

    def __len__(self) -> int:
        return len(self.entries)

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
        missing = [i for i, k in enumerate(keys) if str(k) not in self.entries]
        if missing:
            index = torch.tensor(missing, device=images.device)
            with torch.no_grad():
                fresh = self.encode(images.index_select(0, index)).detach().float().cpu()
            for row, i in enumerate(missing):
                key = str(keys[i])
                self.entries[key] = fresh[row].clone()
                self._new.add(key)
        self.misses += len(missing)
        self.hits += len(keys) - len(missing)
        return torch.stack([self.entries[str(k)] for k in keys]).to(images.device)

    @property
    def dirty(self) -> bool:
        """Whether this store holds representations the file does not have yet."""
        return bool(self._new)

    def save(self) -> None:
        """Merge the new representations into the file (locked, atomic replace)."""
        if not self._new:
            return
        with _locked(self.path):
            merged = _read(self.path, self.fingerprint)
            merged.update({k: self.entries[k] for k in self._new})
            keys = sorted(merged)
            payload: dict[str, Any] = {
                "version": CACHE_VERSION,
                "fingerprint": self.fingerprint,
                "keys": keys,
                "representations": torch.stack([merged[k] for k in keys]),
            }
            buffer = io.BytesIO()
            torch.save(payload, buffer)
            atomic_write_bytes(self.path, buffer.getvalue())
        for key, value in merged.items():
            self.entries.setdefault(key, value)
        self._new.clear()


class RepresentationCache:
    """A folder of representation files, one per (source run, split, input kind, resolution).

    Args:
        root: The cache folder (created on the first save).
    """

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        self._stores: dict[Path, RepresentationStore] = {}

    def store(self, source_id: str, split: str, input_kind: str, resolution: int,
              fingerprint: str, encode: Callable[[torch.Tensor], torch.Tensor]
              ) -> RepresentationStore:
        """The (memoized) store of one source on one split."""
        path = cache_file(self.root, source_id, split, input_kind, resolution)
        if path not in self._stores:
            self._stores[path] = RepresentationStore(path, fingerprint, encode)
        return self._stores[path]

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
