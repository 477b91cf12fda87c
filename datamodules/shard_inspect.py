"""Inspect a shard root: counts, per-domain statistics, skipped items, decoded views.

``taskonomy data inspect ROOT`` uses :func:`inspect_shard_root` when ``ROOT`` is a shard root
(:func:`is_shard_root`): it prints :func:`inspect_shards`' summary and writes the contact sheet
of a few decoded views (:func:`shard_samples`, in the form the building contact sheet takes).
"""

from __future__ import annotations

import json
import os
import tarfile
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

from taskonomy.datamodules.domains import DOMAINS, decode_domain
from taskonomy.datamodules.layouts import parse_key
from taskonomy.datamodules.multiview import group_by_point
from taskonomy.datamodules.shards import (
    MANIFEST_NAME,
    MissingValue,
    file_sha256,
    iter_aligned_shard,
    read_manifest,
    shard_location,
)

PLAN_NAME = "plan.json"


def is_shard_root(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` holds packed (or partly packed) splits."""
    root = Path(path)
    return root.is_dir() and any(
        (child / MANIFEST_NAME).is_file() or (child / PLAN_NAME).is_file()
        for child in root.iterdir() if child.is_dir()
    )


def is_split_folder(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is one packed (or partly packed) split of a shard root."""
    folder = Path(path)
    return (folder / MANIFEST_NAME).is_file() or (folder / PLAN_NAME).is_file()


def _value_stats(domain: str, values: list[Any]) -> dict[str, Any]:
    arrays = [np.asarray(v) for v in values if isinstance(v, np.ndarray)]
    if not arrays:
        kinds = sorted({type(v).__name__ for v in values})
        fields = sorted({k for v in values if isinstance(v, dict) for k in v})
        return {"kind": ",".join(kinds), "fields": len(fields)}
    stacked = np.concatenate([a.reshape(-1) for a in arrays]).astype(np.float64)
    stats = {"dtype": str(arrays[0].dtype), "shape": list(arrays[0].shape),
             "min": float(stacked.min()), "max": float(stacked.max()),
             "mean": float(stacked.mean())}
    if domain.startswith("depth"):
        stats["missing_fraction"] = float((stacked == 65535).mean())
    return stats


def _sample_stats(root: str, split: str, manifest: dict[str, Any], domains: list[str],
                  limit: int) -> dict[str, dict[str, Any]]:
    values: dict[str, list[Any]] = {d: [] for d in domains}
    errors: dict[str, int] = {d: 0 for d in domains}
    for shard in manifest["shards"]:
        locations = {d: shard_location(root, split, d, shard["index"]) for d in domains}
        try:
            for sample in iter_aligned_shard(locations):
                for domain in domains:
                    raw = sample[domain]
                    if isinstance(raw, MissingValue):
                        continue
                    try:
                        values[domain].append(decode_domain(domain, raw))
                    except ValueError:
                        errors[domain] += 1
                if len(values[domains[0]]) >= limit:
                    break
        except (OSError, EOFError, tarfile.TarError, ValueError):
            continue  # statistics of the readable shards; `inspect --verify` names the others
        if len(values[domains[0]]) >= limit:
            break
    # A domain no installed package registers (its plugin is gone) cannot be decoded.
    return {d: {**(_value_stats(d, values[d]) if d in DOMAINS else
                   {"kind": "unregistered: install its plugin"}),
                "sampled": len(values[d]), "decode_errors": errors[d]} for d in domains}


def inspect_shards(root: str | os.PathLike[str], *, stats_samples: int = 16) -> dict[str, Any]:
    """Summary of every split under a shard root.

    Returns:
        ``{"root", "splits": {split: {...}}}``; a finished split has ``count``, ``shards``,
        ``resolution``, ``buildings``, ``excluded_buildings``, ``absent_buildings``,
        ``skipped`` (count), ``skipped_items`` (first 20) and ``domains`` (count, missing,
        bytes, bytes per sample, value statistics over the first ``stats_samples`` samples);
        an unfinished one has ``status: "packing"`` and the number of shards planned.

    Raises:
        FileNotFoundError: ``root`` holds no packed split.
    """
    base = Path(root)
    if not is_shard_root(base):
        raise FileNotFoundError(
            f"{base} is not a shard root (no SPLIT/{MANIFEST_NAME}); pack one with "
            "`taskonomy data pack SRC --out ROOT`"
        )
    splits: dict[str, Any] = {}
    for child in sorted(p for p in base.iterdir() if p.is_dir()):
        if not (child / MANIFEST_NAME).is_file():
            if (child / PLAN_NAME).is_file():
                plan = json.loads((child / PLAN_NAME).read_text())
                splits[child.name] = {"status": "packing", "shards": len(plan["shards"]),
                                      "domains": plan["domains"]}
            continue
        manifest = read_manifest(base, child.name)
        domains = list(manifest["domains"])
        stats = _sample_stats(str(base), child.name, manifest, domains, stats_samples)
        count = max(1, manifest["count"])
        splits[child.name] = {
            "status": "complete",
            "count": manifest["count"],
            "shards": len(manifest["shards"]),
            "resolution": manifest["resolution"],
            "buildings": len(manifest["buildings"]),
            "excluded_buildings": manifest["excluded_buildings"],
            "absent_buildings": manifest["absent_buildings"],
            "skipped": len(manifest["skipped"]),
            "skipped_items": manifest["skipped"][:20],
            "domains": {
                d: {"count": info["count"], "missing": info["missing"], "bytes": info["bytes"],
                    "bytes_per_sample": info["bytes"] / count, **stats[d]}
                for d, info in manifest["domains"].items()
            },
        }
    return {"root": str(base), "splits": splits}


def print_shard_summary(summary: dict[str, Any], console: Console | None = None) -> None:
    """Print :func:`inspect_shards`' summary as tables."""
    console = console or Console(width=160)
    for split, info in summary["splits"].items():
        if info["status"] != "complete":
            console.print(f"[bold]{split}[/]: still packing ({info['shards']} shards planned)")
            continue
        console.print(
            f"[bold]{split}[/]: {info['count']} samples in {info['shards']} shards from "
            f"{info['buildings']} buildings at {info['resolution']}²; {info['skipped']} files "
            f"skipped; excluded corrupt buildings: {', '.join(info['excluded_buildings']) or '-'}"
            f"; absent: {len(info['absent_buildings'])}"
        )
        table = Table(show_lines=False)
        for column in ("domain", "files", "missing", "KiB/sample", "dtype", "shape", "min",
                       "max", "mean"):
            table.add_column(column)
        for domain, d in info["domains"].items():
            table.add_row(domain, str(d["count"]), str(d["missing"]),
                          f"{d['bytes_per_sample'] / 1024:.1f}", d.get("dtype", d.get("kind", "")),
                          "×".join(map(str, d.get("shape", []))),
                          *(f"{d[k]:.3g}" if k in d else "" for k in ("min", "max", "mean")))
        console.print(table)
        for item in info["skipped_items"]:
            console.print(f"  skipped {item['key']} {item['domain']}: {item['reason']}")


def shard_samples(root: str | os.PathLike[str], split: str | None = None,
                  views: int = 4) -> list[dict[str, Any]]:
    """Decoded views of a split for a contact sheet, one view per fixated point.

    Each sample maps a domain to its decoded value (missing files are absent) plus ``key``
    (``point_P_view_V``, prefixed by the building).

    Raises:
        FileNotFoundError: no packed split (``split=None`` takes the first one).
    """
    base = Path(root)
    if split is None:
        finished = sorted(p.name for p in base.iterdir() if (p / MANIFEST_NAME).is_file())
        if not finished:
            raise FileNotFoundError(f"{base} holds no finished split")
        split = finished[0]
    manifest = read_manifest(base, split)
    domains = list(manifest["domains"])
    chosen: list[dict[str, Any]] = []

    def raw_samples():
        for shard in manifest["shards"]:
            yield from iter_aligned_shard(
                {d: shard_location(base, split, d, shard["index"]) for d in domains})

    for group in group_by_point(raw_samples()):
        raw = group[0]
        ref = parse_key(raw["__key__"])
        sample: dict[str, Any] = {"key": f"{ref.building} point_{ref.point}_view_{ref.view}"}
        for domain in domains:
            if not isinstance(raw[domain], MissingValue):
                try:
                    sample[domain] = decode_domain(domain, raw[domain])
                except ValueError:
                    continue
        chosen.append(sample)
        if len(chosen) >= views:
            break
    return chosen


def verify_shards(root: str | os.PathLike[str], *, progress: bool = True
                  ) -> tuple[int, list[tuple[str, str]]]:
    """Check every shard of every finished split against the SHA-256 its manifest lists.

    For a shard root copied to another machine, where a damaged shard would otherwise show up
    only as samples skipped during training.

    Returns:
        The number of shards checked, and ``(split, line)`` per shard that is missing or
        differs.
    """
    from rich.progress import BarColumn, DownloadColumn, Progress, TimeRemainingColumn

    base = str(root)
    checks: list[tuple[str, str, int, str]] = []
    total = 0
    for child in sorted(p for p in Path(base).iterdir() if (p / MANIFEST_NAME).is_file()):
        manifest = read_manifest(base, child.name)
        for domain, info in manifest["domains"].items():
            total += int(info["bytes"])
            checks += [(child.name, domain, s["index"], info["sha256"][n])
                       for n, s in enumerate(manifest["shards"])]
    problems = []
    bar = Progress("[progress.description]{task.description}", BarColumn(), DownloadColumn(),
                   TimeRemainingColumn(), disable=not progress)
    with bar:
        task = bar.add_task("verifying shards", total=total)
        for split, domain, index, expected in checks:
            location = shard_location(base, split, domain, index)
            try:
                size = Path(location).stat().st_size
                actual = file_sha256(location)
            except OSError as error:
                problems.append((split, f"{location}: unreadable ({error})"))
                continue
            bar.advance(task, size)
            if actual != expected:
                problems.append((split, f"{location}: its SHA-256 differs from the manifest's"))
    return len(checks), problems


def repack_hint(root: str | os.PathLike[str], split: str) -> str:
    """The ``data pack --resume`` command that repairs a split, from its plan.

    The plan does not say which split file chose the buildings, so that option is named as
    one to repeat; the options the plan records are filled in.
    """
    manifest = read_manifest(str(root), split)
    from taskonomy.datamodules.packer import PLAN_NAME

    plan_path = Path(str(root)) / split / PLAN_NAME
    identity: dict[str, Any] = {}
    if plan_path.is_file():
        identity = json.loads(plan_path.read_text()).get("identity", {})
    options = [f"--split {split}", f"--shard-size {identity.get('shard_size', 1000)}"]
    if identity.get("resolution"):
        options.append(f"--resolution {identity['resolution']}")
    return (f"taskonomy data pack {manifest.get('source', 'SRC')} --out {root} "
            f"{' '.join(options)} --split-file SPLIT_FILE --resume")


def inspect_shard_root(root: str | os.PathLike[str], out: str | os.PathLike[str] | None,
                       *, views: int = 4, size: int = 192, verify: bool = False) -> int:
    """Print the summary of a shard root and, if ``out`` is given, write its contact sheet.

    Args:
        root: The shard root.
        out: PNG file for the contact sheet (``None``: none).
        views: Views (rows) of the sheet.
        size: Tile side in pixels.
        verify: Also check every shard's SHA-256 (:func:`verify_shards`).

    Returns:
        The ``run`` status of the inspect command: 1 when a verified shard is missing or
        differs, 0 otherwise.
    """
    print_shard_summary(inspect_shards(root))
    if verify:
        checked, problems = verify_shards(root)
        if problems:
            print(f"{len(problems)} of {checked} shards are damaged or missing:")
            for _, line in problems:
                print(f"  {line}")
            print("delete them and repack with the original pack command plus --resume (it "
                  "rewrites only missing shards and shards cut short; SPLIT_FILE: the split "
                  "file the split was packed with, or --all-buildings), or copy them again:")
            for split in sorted({split for split, _ in problems}):
                print(f"  {repack_hint(root, split)}")
            return 1
        print(f"verified {checked} shards: every SHA-256 matches the manifest")
    if out is not None:
        import cv2

        from taskonomy.datamodules.domains import atomic_write_bytes
        from taskonomy.datamodules.visualize import contact_sheet

        sheet = contact_sheet(shard_samples(root, views=views), size)
        ok, data = cv2.imencode(".png", cv2.cvtColor(sheet, cv2.COLOR_RGB2BGR))
        if not ok:
            raise ValueError(f"could not encode a contact sheet of shape {sheet.shape}")
        atomic_write_bytes(out, data.tobytes())
        print(f"wrote {out}")
    return 0
