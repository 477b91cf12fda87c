"""The shard format: per-domain aligned webdataset tars and a manifest per split.

Layout of a shard root::

    ROOT/{split}/manifest.json
    ROOT/{split}/{domain}/{split}-{index:06d}.tar

Every domain folder of a split holds the same sample keys in the same order, shard by shard, so a
run opens only the domains it needs and a new domain (the labels of a novel task) is a new folder.
A tar member is ``{key}.{domain}.{ext}`` holding the released file bytes unchanged (lossless). A
file that was missing or corrupt at pack time is a member ``{key}.{domain}.missing`` whose bytes
are the reason, which keeps the folders aligned; readers treat it as an absent value.

Views are ordered by building, point and view, and a shard never splits the views of one fixated
point, so multi-view samples are formed while streaming (:mod:`taskonomy.datamodules.multiview`).
"""

from __future__ import annotations

import glob
import hashlib
import io
import json
import os
import tarfile
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from taskonomy.datamodules.domains import atomic_write_bytes, get_domain, publish_temporary

FORMAT = "taskonomy-shards"
FORMAT_VERSION = 1
MANIFEST_NAME = "manifest.json"
MISSING_EXT = "missing"


def is_url(root: str | os.PathLike[str]) -> bool:
    """Whether a shard root is a URL or ``pipe:`` command rather than a local folder."""
    text = str(root)
    return text.startswith("pipe:") or "://" in text


def shard_file_name(split: str, index: int) -> str:
    """File name of shard ``index`` of a split."""
    return f"{split}-{index:06d}.tar"


def split_location(root: str | os.PathLike[str], split: str) -> str:
    """Folder (or URL prefix) of one split."""
    return f"{str(root).rstrip('/')}/{split}"


def shard_location(root: str | os.PathLike[str], split: str, domain: str, index: int) -> str:
    """Path or URL of one domain's shard.

    For a ``pipe:`` root the shard path is appended to the command: the root
    ``pipe:curl -s https://host/root`` gives ``pipe:curl -s https://host/root/{split}/{domain}/
    {split}-{index:06d}.tar``.
    """
    return f"{split_location(root, split)}/{domain}/{shard_file_name(split, index)}"


def member_name(key: str, domain: str) -> str:
    """Tar member name of one sample's file of ``domain``."""
    return f"{key}.{domain}.{get_domain(domain).ext}"


def _open_stream(location: str) -> Any:
    if is_url(location):
        from webdataset.gopen import gopen

        return gopen(location, "rb")
    return open(location, "rb")  # noqa: SIM115 - closed by the caller


def read_bytes(location: str) -> bytes:
    """Read a whole local file or URL."""
    stream = _open_stream(location)
    try:
        return bytes(stream.read())
    finally:
        stream.close()


# ---------------------------------------------------------------------------------------------
# Manifest


def manifest_location(root: str | os.PathLike[str], split: str) -> str:
    """Path or URL of a split's manifest."""
    return f"{split_location(root, split)}/{MANIFEST_NAME}"


def read_manifest(root: str | os.PathLike[str], split: str) -> dict[str, Any]:
    """Read a split's manifest.

    Raises:
        FileNotFoundError: there is no manifest (the split was never packed, or not finished).
        ValueError: the file is not a manifest of this format.
    """
    location = manifest_location(root, split)
    if not is_url(location) and not Path(location).is_file():
        available = sorted(
            p.name for p in Path(root).iterdir() if (p / MANIFEST_NAME).is_file()
        ) if Path(root).is_dir() else []
        if (Path(root) / MANIFEST_NAME).is_file():  # a split's folder given as the root
            parent = Path(root).resolve().parent
            raise FileNotFoundError(
                f"{root} is the folder of one packed split ({Path(root).name!r}), not a shard "
                f"root: give the folder that holds the splits, e.g. --data.root={parent}"
            )
        raise FileNotFoundError(
            f"no shard manifest at {location}: split {split!r} has not been packed (or packing "
            f"is unfinished; rerun `taskonomy data pack ... --resume`). Packed splits under "
            f"{root}: {', '.join(available) or 'none'}"
        )
    try:
        manifest = json.loads(read_bytes(location))
    except ValueError as error:
        raise ValueError(
            f"{location} is not valid JSON ({error}): the manifest was damaged (a cut copy?). "
            f"Copy it again, or repack the split with `taskonomy data pack ... --resume`, "
            "which writes it anew"
        ) from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise ValueError(f"{location} is not a {FORMAT} manifest")
    if manifest.get("format_version") != FORMAT_VERSION:
        raise ValueError(
            f"{location} has format version {manifest.get('format_version')}; this code reads "
            f"version {FORMAT_VERSION}: repack the split"
        )
    return manifest


def write_manifest(root: str | os.PathLike[str], split: str, manifest: dict[str, Any]) -> Path:
    """Write a split's manifest atomically."""
    path = Path(manifest_location(root, split))
    atomic_write_bytes(path, json.dumps(manifest, indent=1, sort_keys=True).encode())
    return path


def manifest_keys(manifest: dict[str, Any]) -> list[str]:
    """All sample keys of a split in shard order."""
    return [key for shard in manifest["shards"] for key in shard["keys"]]


# ---------------------------------------------------------------------------------------------
# Writing


@dataclass(frozen=True)
class ShardEntry:
    """One member to write: the file bytes, or ``None`` with the reason it is missing."""

    key: str
    data: bytes | None
    reason: str = ""


def _tar_info(name: str, size: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size = size
    info.mode = 0o644
    info.mtime = 0  # deterministic tars: the same input gives the same checksum
    info.uname = info.gname = ""
    return info


def write_domain_shard(path: str | os.PathLike[str], domain: str,
                       entries: Iterable[ShardEntry]) -> dict[str, Any]:
    """Write one domain's shard atomically and return ``{"sha256", "bytes", "count", "missing"}``.

    The tar is written to a temporary file beside ``path`` and renamed when complete, so a
    killed packer never leaves a half shard under the final name. Temporary files of this
    shard that an earlier, killed writer left (SIGKILL, or SIGTERM, which runs no cleanup)
    are removed first: each can be as large as the shard.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    for stale in path.parent.glob(f".{glob.escape(path.name)}.*.tmp"):
        stale.unlink(missing_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    count = missing = 0
    try:
        with os.fdopen(fd, "wb") as handle, tarfile.open(fileobj=handle, mode="w",
                                                         format=tarfile.USTAR_FORMAT) as tar:
            for entry in entries:
                if entry.data is None:
                    name = f"{entry.key}.{domain}.{MISSING_EXT}"
                    payload = (entry.reason or "missing").encode()
                    missing += 1
                else:
                    name, payload = member_name(entry.key, domain), entry.data
                tar.addfile(_tar_info(name, len(payload)), io.BytesIO(payload))
                count += 1
        digest = hashlib.sha256(Path(tmp).read_bytes()).hexdigest()
        size = Path(tmp).stat().st_size
        publish_temporary(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return {"sha256": digest, "bytes": size, "count": count, "missing": missing}


def file_sha256(path: str | os.PathLike[str]) -> str:
    """SHA-256 of a local file or URL, streamed."""
    digest = hashlib.sha256()
    handle = _open_stream(str(path))
    try:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    finally:
        handle.close()
    return digest.hexdigest()


# ---------------------------------------------------------------------------------------------
# Reading


class MissingValue:
    """Stands for a domain file that was missing or corrupt at pack time."""

    __slots__ = ("reason",)

    def __init__(self, reason: str) -> None:
        self.reason = reason

    def __repr__(self) -> str:
        return f"MissingValue({self.reason!r})"


class ShardKeyMismatchError(ValueError):
    """Aligned domain shards disagree on a sample key (the shard root is inconsistent)."""


def iter_domain_shard(location: str, domain: str) -> Iterator[tuple[str, bytes | MissingValue]]:
    """Stream ``(key, bytes)`` pairs from one domain shard (local path or URL), in tar order.

    Raises:
        tarfile.ReadError, EOFError, OSError: the tar is truncated or unreadable (the caller's
            handler decides whether to skip the rest of the shard).
    """
    stream = _open_stream(location)
    try:
        with tarfile.open(fileobj=stream, mode="r|") as tar:
            for info in tar:
                if not info.isfile():
                    continue
                key, _, suffix = info.name.partition(".")
                member_domain, _, ext = suffix.partition(".")
                if member_domain != domain:
                    raise ValueError(
                        f"{location}: member {info.name!r} belongs to domain {member_domain!r}, "
                        f"not {domain!r}; the shard is in the wrong folder"
                    )
                handle = tar.extractfile(info)
                payload = handle.read() if handle is not None else b""
                if len(payload) != info.size:
                    raise EOFError(f"{location}: member {info.name!r} is truncated")
                if ext == MISSING_EXT:
                    yield key, MissingValue(payload.decode(errors="replace"))
                else:
                    yield key, payload
    finally:
        stream.close()


def iter_aligned_shard(locations: dict[str, str]) -> Iterator[dict[str, Any]]:
    """Zip one shard index across domains by key.

    Args:
        locations: domain → shard path or URL (same shard index in every domain folder).

    Yields:
        ``{"__key__": key, domain: bytes | MissingValue, ...}`` per sample.

    Raises:
        ShardKeyMismatchError: two domains disagree on the key at the same position; the
            message names both keys and both shards.
        EOFError: one domain's shard ends before the others (a tar cut at a member boundary
            reads as a shorter, valid archive), along with :func:`iter_domain_shard`'s errors.
    """
    domains = list(locations)
    iterators = [iter_domain_shard(locations[d], d) for d in domains]
    sentinel = ("<end of shard>", None)
    read = 0
    while True:
        items = [next(it, sentinel) for it in iterators]
        if all(item is sentinel for item in items):
            return
        ended = [d for d, item in zip(domains, items, strict=True) if item is sentinel]
        if ended:
            going_on = next(d for d, item in zip(domains, items, strict=True)
                            if item is not sentinel)
            raise EOFError(
                f"{locations[ended[0]]} ends after {read} samples while "
                f"{locations[going_on]} goes on: the shard is truncated"
            )
        first_key = items[0][0]
        for domain, item in zip(domains[1:], items[1:], strict=True):
            if item[0] != first_key:
                raise ShardKeyMismatchError(
                    f"aligned shards disagree: key {first_key!r} in {locations[domains[0]]} but "
                    f"{item[0]!r} in {locations[domain]}; repack the domain {domain!r} with "
                    "`taskonomy data pack --resume`"
                )
        sample: dict[str, Any] = {"__key__": first_key}
        for domain, item in zip(domains, items, strict=True):
            sample[domain] = item[1]
        read += 1
        yield sample
