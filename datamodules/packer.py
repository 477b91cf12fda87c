"""Pack per-view Taskonomy files (released, Omnidata or synthetic buildings) into shards.

The packer is resumable and safe to run on several machines at once:

1. A **plan** (``ROOT/{split}/plan.json``) fixes the sample keys of every shard: views grouped
   by building and point, the points of a building in visibility order (points that see each
   other close together, for non-fixated pose; :mod:`~taskonomy.datamodules.point_order`) or
   by number, cut into shards of about ``shard_size`` views without splitting the views of one
   fixated point. The first packer writes it; later runs and other parts read
   it, so everyone agrees on the shards. A root whose plan came from another source or building
   list is refused.
2. Each (shard, domain) is written to a temporary file and renamed when complete, then a small
   record (checksum, missing files) is written beside it. A shard with a record is never
   rewritten: rerunning resumes, and packing a new domain for existing keys adds one folder.
3. ``--part K/N`` packs the shards whose index is ``K-1`` modulo ``N``. Whichever part finishes
   the last shard writes ``manifest.json``; until then the split has no manifest and readers
   refuse it.

Every file is decoded once while packing; a missing or corrupt file becomes a ``.missing`` member
(see :mod:`taskonomy.datamodules.shards`) and is listed in the manifest's ``skipped``.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from taskonomy.datamodules.domains import (
    DOMAINS,
    atomic_write_bytes,
    decode_domain,
    encode_domain,
    get_domain,
)
from taskonomy.datamodules.layouts import (
    KNOWN_CORRUPT_BUILDINGS,
    SourceLayout,
    ViewRef,
    detect_layout,
    parse_key,
)
from taskonomy.datamodules.multiview import PARTNER_WINDOW
from taskonomy.datamodules.point_order import BuildingOrder, order_building
from taskonomy.datamodules.shards import (
    FORMAT,
    FORMAT_VERSION,
    ShardEntry,
    shard_file_name,
    write_domain_shard,
    write_manifest,
)
from taskonomy.datamodules.worker_pool import worker_pool

PLAN_NAME = "plan.json"
RECORDS_DIR = ".records"


@dataclass
class PackConfig:
    """What to pack.

    Attributes:
        source: Source folder (released, Omnidata or synthetic layout).
        out: Shard root.
        split: Name of the output split folder (``train``, ``val``, ``test``...).
        buildings: Buildings to pack (``None``: every building in the source).
        domains: Domains to pack (``None``: every domain found in the first building, or the
            plan's domains when resuming).
        shard_size: Target views per shard (a point's views are never split).
        workers: Parallel packing processes.
        part: ``(K, N)``: pack only shards with ``index % N == K - 1``.
        resume: Continue (or extend with new domains) a root packed from the same plan.
        include_corrupt: Also pack the buildings known to be corrupt in the released data.
        resolution: Resize images to this side at pack time (``None``: keep the files' bytes,
            lossless). Packing the released 512² images at the 256² training resolution cuts
            the bytes read and the PNG decoding per sample about 4×; see :func:`resize_file`.
        point_order: ``visibility`` (each building's points ordered so that points that see
            each other lie close in the stream) or ``number`` (point-number order).
    """

    source: Path
    out: Path
    split: str
    buildings: Sequence[str] | None = None
    domains: Sequence[str] | None = None
    shard_size: int = 1000
    workers: int = 1
    part: tuple[int, int] = (1, 1)
    resume: bool = False
    include_corrupt: bool = False
    resolution: int | None = None
    point_order: str = "visibility"


#: Accepted :attr:`PackConfig.point_order` values.
POINT_ORDERS = ("visibility", "number")


@dataclass
class PackResult:
    """What a pack run did."""

    split_dir: Path
    shards_written: int = 0
    shards_skipped: int = 0
    manifest: dict[str, Any] | None = None
    pending: int = 0
    skipped_files: list[dict[str, str]] = field(default_factory=list)
    point_order: dict[str, Any] = field(default_factory=dict)


def parse_part(text: str) -> tuple[int, int]:
    """Parse ``K/N`` (1-based part K of N).

    Raises:
        ValueError: not of the form ``K/N`` with ``1 <= K <= N``.
    """
    try:
        k_text, n_text = text.split("/")
        k, n = int(k_text), int(n_text)
    except ValueError:
        raise ValueError(f"--part must look like K/N (e.g. 2/4), got {text!r}") from None
    if not 1 <= k <= n:
        raise ValueError(f"--part {text}: K must be between 1 and N")
    return k, n


def plan_shards(views: Sequence[ViewRef], shard_size: int) -> list[list[ViewRef]]:
    """Cut views (grouped by point) into shards of about ``shard_size``, never splitting a point."""
    if shard_size < 1:
        raise ValueError(f"shard_size must be at least 1, got {shard_size}")
    shards: list[list[ViewRef]] = []
    current: list[ViewRef] = []
    for i, ref in enumerate(views):
        current.append(ref)
        last = i + 1 == len(views)
        point_ends = last or views[i + 1].point_key != ref.point_key
        if point_ends and len(current) >= shard_size:
            shards.append(current)
            current = []
    if current:
        shards.append(current)
    return shards


#: Identity entries a part or a resumed pack may change: where the source lies.
_MOVABLE = ("source",)


def _identity(config: PackConfig, layout: SourceLayout, buildings: list[str]) -> dict[str, Any]:
    return {
        "source": str(Path(config.source).resolve()),
        "layout": layout.kind,
        "split": config.split,
        "buildings_sha1": hashlib.sha1("\n".join(buildings).encode()).hexdigest(),
        "shard_size": config.shard_size,
        "resolution": config.resolution,
    }


def _image_resolution(layout: SourceLayout, views: Sequence[ViewRef]) -> int | None:
    for ref in views[:20]:
        try:
            image = decode_domain("rgb", layout.file_path(ref, "rgb").read_bytes())
        except (OSError, ValueError):
            continue
        return int(image.shape[0])
    return None


def _select_buildings(config: PackConfig, layout: SourceLayout) -> tuple[list[str], dict]:
    present = set(layout.buildings())
    # dict.fromkeys: a building named twice is packed once.
    wanted = (list(dict.fromkeys(config.buildings)) if config.buildings is not None
              else sorted(present))
    excluded = [] if config.include_corrupt else [b for b in wanted if b in KNOWN_CORRUPT_BUILDINGS]
    absent = [b for b in wanted if b not in present and b not in excluded]
    chosen = sorted(b for b in wanted if b in present and b not in excluded)
    unfinished = sorted(p.name for p in layout.root.glob(".partial-*") if p.is_dir()
                        and p.name.removeprefix(".partial-") in absent)
    if unfinished:  # the plan would leave those buildings of the split out for good
        raise ValueError(
            f"{layout.root} holds unfinished buildings ({', '.join(unfinished[:5])}"
            f"{', ...' if len(unfinished) > 5 else ''}): an interrupted `taskonomy data synth`. "
            "Repeat that command to finish them, then pack"
        )
    if not chosen:
        raise ValueError(
            f"none of the {len(wanted)} requested buildings are in {layout.root} "
            f"({layout.kind} layout, {len(present)} buildings: "
            f"{', '.join(sorted(present)[:10])}{'...' if len(present) > 10 else ''})"
        )
    return chosen, {"excluded_corrupt": excluded, "absent": absent}


def _check_moved_source(plan: dict[str, Any], layout: SourceLayout,
                        buildings: list[str]) -> None:
    """Refuse a source in another place unless it holds what the plan packs from the original.

    Its views (the rgb files) must be the planned ones, and each building must have the
    domain folders it had when the plan was made: the shards still to pack are read from it.

    Raises:
        ValueError: The plan predates per-building domain lists, or views or domain folders of
            the plan are missing from the source (or it has other views).
    """
    original = plan["identity"]["source"]
    known = plan.get("building_domains")
    if not isinstance(known, dict):
        raise ValueError(
            f"this split was planned from {original} by an earlier version, which did not "
            f"record each building's domains, so {layout.root} cannot be checked against it; "
            "pack it from the original path"
        )
    planned = {key for shard in plan["shards"] for key in shard}
    here = {ref.key for building in buildings for ref in layout.views(building)}
    if planned != here:
        missing, extra = sorted(planned - here), sorted(here - planned)
        raise ValueError(
            f"{layout.root} is not the source this split was planned from ({original}): "
            f"{len(missing)} of its views are missing here ({', '.join(missing[:3]) or 'none'}) "
            f"and {len(extra)} are extra ({', '.join(extra[:3]) or 'none'}); give a complete "
            "copy of that source"
        )
    lacking = [f"{building}/{domain}" for building in buildings
               for domain in known.get(building, ()) if domain in plan["domains"]
               and not layout.domain_dir(building, domain).is_dir()]
    if lacking:
        raise ValueError(
            f"{layout.root} lacks {len(lacking)} domain folder(s) that {original} has "
            f"({', '.join(lacking[:4])}{', …' if len(lacking) > 4 else ''}); the shards still to "
            "pack would get them as missing. Give a complete copy of that source"
        )


def _changed_buildings(plan: dict[str, Any], now: list[str], notes: dict[str, Any]) -> str:
    """How the source's buildings changed under the same request since a plan, in words.

    "" when the request itself changed (other buildings asked for), or nothing is known.
    """
    planned = plan.get("buildings")
    was_absent = (plan.get("notes") or {}).get("absent")
    if not isinstance(planned, list) or not isinstance(was_absent, list):
        return ""
    added, removed = sorted(set(now) - set(planned)), sorted(set(planned) - set(now))
    # The same buildings asked for: the added ones were absent then, the removed absent now.
    if not (set(added) <= set(was_absent) and set(removed) <= set(notes.get("absent", ()))):
        return ""

    def named(names: list[str]) -> str:
        return ", ".join(names[:6]) + (f" and {len(names) - 6} more" if len(names) > 6 else "")

    parts = ([f"now also {named(added)}"] if added else []) + (
        [f"no longer {named(removed)}"] if removed else [])
    return "; ".join(parts)


def _other_pack_hint(config: PackConfig, plan: dict[str, Any], buildings: list[str],
                     notes: dict[str, Any], diff: list[str]) -> str:
    """What to do when a split folder holds the plan of another pack (``diff``: what differs)."""
    options = {"shard_size": "--shard-size", "resolution": "--resolution", "split": "--split",
               "layout": "the source's layout"}
    # An option the original command left out is named as left out (it has no value to repeat).
    was = [f"{options[k]} {plan['identity'][k]}" if plan["identity"].get(k) is not None
           else f"no {options[k]}" for k in diff if k in options]
    if "buildings_sha1" in diff:
        was.append("the buildings of its --split-file (or --all-buildings)")
    hint = ("repeat the original command with --resume" if not config.resume else
            f"repeat the original command's options: it was packed with {', '.join(was)}")
    if diff != ["buildings_sha1"]:
        return hint
    listed = plan.get("buildings")
    planned: list[str] = listed if isinstance(listed, list) else []
    newly_corrupt = sorted(set(planned) & set(notes["excluded_corrupt"]))
    if newly_corrupt and set(planned) - set(buildings) == set(newly_corrupt) and set(
            buildings) <= set(planned):
        # Planned with a building this version knows to be corrupt (e.g. woodbine).
        return (f"{', '.join(newly_corrupt)} is now excluded as known to be corrupt; pass "
                "--include-corrupt to finish this pack as planned, or pack again into another "
                "--out without it")
    changed = _changed_buildings(plan, buildings, notes)
    if changed:
        # The same command over a source that gained or lost buildings (a download finished
        # since): the planned shards cannot take them.
        return (f"the source's buildings changed since it was planned ({changed}); a pack's "
                "shards are planned once, so pack the new buildings into another --out, or "
                "delete the folder and pack again")
    return hint


def _load_or_make_plan(config: PackConfig, progress: bool = False) -> dict[str, Any]:
    layout = detect_layout(config.source)
    buildings, notes = _select_buildings(config, layout)
    identity = _identity(config, layout, buildings)
    split_dir = Path(config.out) / config.split
    plan_path = split_dir / PLAN_NAME
    if plan_path.is_file():
        try:
            plan = json.loads(plan_path.read_text())
        except ValueError as error:
            raise ValueError(
                f"{plan_path} is not valid JSON ({error}); it fixes which views each shard "
                f"holds, so the packed shards of {split_dir} cannot be resumed without it. "
                "Restore it, or delete the split's folder and pack it again"
            ) from None
        # The source may lie elsewhere (another machine's mount or copy of it): the same layout,
        # split, buildings and sizes make the same pack, if it holds the same files.
        diff = [k for k in identity if k not in _MOVABLE and plan["identity"].get(k) != identity[k]]
        if diff:
            hint = _other_pack_hint(config, plan, buildings, notes, diff)
            raise ValueError(
                f"{split_dir} holds shards of another pack (differs in: {', '.join(diff)}; "
                f"packed from {plan['identity']['source']}). Choose another --out or --split, "
                f"or {hint}"
            )
        if plan["identity"]["source"] != identity["source"]:
            _check_moved_source(plan, layout, buildings)
        if not config.resume and config.part[1] == 1:  # parts of one pack share its plan
            raise FileExistsError(
                f"{split_dir} was already packed (or is being packed) from this source; pass "
                "--resume to finish it or to add domains"
            )
        return plan
    if config.domains is not None:
        domains = list(config.domains)
    else:  # every domain some building has (a building lacking one gets `.missing` members)
        domains = list(dict.fromkeys(d for b in buildings for d in layout.domains(b)))
    views, point_order = _ordered_views(config, layout, buildings, progress)
    if not views:
        raise ValueError(f"no rgb files found for the selected buildings in {layout.root}")
    shards = plan_shards(views, config.shard_size)
    plan = {
        "identity": identity,
        "domains": domains,
        "buildings": buildings,
        "building_domains": {b: layout.domains(b) for b in buildings},
        "notes": notes,
        "resolution": config.resolution or _image_resolution(layout, views),
        "source_resolution": _image_resolution(layout, views),
        "point_order": point_order,
        "shards": [[ref.key for ref in shard] for shard in shards],
    }
    atomic_write_bytes(plan_path, json.dumps(plan).encode())
    return plan


def _map_in_workers(function: Callable[..., Any], args: Sequence[tuple[Any, ...]],
                    workers: int) -> Iterator[Any]:
    """``function`` over argument tuples, in order; in ``workers`` processes when above 1."""
    if workers == 1 or not args:
        yield from (function(*job) for job in args)
        return
    with worker_pool(workers) as pool:
        yield from pool.map(function, *zip(*args, strict=True))


def _building_views(layout: SourceLayout, building: str, point_order: str) -> BuildingOrder:
    views = layout.views(building)
    if point_order == "number":
        return BuildingOrder(views, "none", 0, 0, 0)
    return order_building(layout, building, views)


def _ordered_views(config: PackConfig, layout: SourceLayout, buildings: list[str],
                   progress: bool) -> tuple[list[ViewRef], dict[str, Any]]:
    """Every selected view in packing order, and a summary of the order for the plan."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress

    bar = Progress("[progress.description]{task.description}", BarColumn(),
                   MofNCompleteColumn(), disable=not progress or len(buildings) < 2)
    orders: list[BuildingOrder] = []
    with bar:
        task = bar.add_task(f"planning {config.split} (buildings)", total=len(buildings))
        args = [(layout, building, config.point_order) for building in buildings]
        for order in _map_in_workers(_building_views, args, config.workers):
            orders.append(order)
            bar.advance(task)
    sources = sorted({o.source for o in orders})
    summary = {
        "kind": config.point_order,
        "graph": sources,
        "window": PARTNER_WINDOW,
        "points": sum(o.points for o in orders),
        "paired_by_number": sum(o.paired_before for o in orders),
        "paired": sum(o.paired for o in orders),
    }
    return [ref for o in orders for ref in o.views], summary


def _record_path(split_dir: Path, domain: str, index: int) -> Path:
    return split_dir / RECORDS_DIR / f"{domain}-{index:06d}.json"


def _packed_whole(split_dir: Path, split: str, domain: str, index: int) -> bool:
    """Whether a (shard, domain) is packed: its record exists and its shard has the recorded size.

    The size catches a shard cut short after packing (a copy or a sync interrupted), which
    would otherwise be kept by ``--resume``; hashing every shard would read the whole dataset.
    """
    shard = split_dir / domain / shard_file_name(split, index)
    try:
        record = json.loads(_record_path(split_dir, domain, index).read_text())
        return shard.stat().st_size == int(record["bytes"])
    except (OSError, ValueError, KeyError, TypeError):
        return False


#: Interpolation per image kind when resizing at pack time. Depth and labels take nearest
#: neighbours (averaging would mix missing 65535 depth with valid depth, or label ids).
_AREA_KINDS = ("rgb8",)
_AREA_DOMAINS = ("edge_texture", "edge_occlusion", "keypoints2d", "keypoints3d")


def resize_file(domain: str, value: Any, resolution: int) -> bytes:
    """Re-encode a decoded image file of ``domain`` at ``resolution``² (PNG stays lossless).

    Colour images and 16-bit responses are area-averaged; depth and label images take the
    pixel under each output pixel's centre (PIL's nearest, as the authors' label resizing and
    the datamodule's). Non-image domains are re-encoded unchanged.
    """
    import cv2

    spec = get_domain(domain)
    if spec.kind in ("json", "npy") or value.shape[0] == resolution:
        return encode_domain(domain, value)
    area = spec.kind in _AREA_KINDS or domain in _AREA_DOMAINS
    interpolation = cv2.INTER_AREA if area else cv2.INTER_NEAREST_EXACT
    resized = cv2.resize(value, (resolution, resolution), interpolation=interpolation)
    return encode_domain(domain, resized.astype(value.dtype))


def _read_entry(layout: SourceLayout, ref: ViewRef, domain: str,
                resolution: int | None = None) -> ShardEntry:
    path = layout.file_path(ref, domain)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return ShardEntry(ref.key, None, "missing file")
    except OSError as error:
        return ShardEntry(ref.key, None, f"unreadable: {error}")
    try:
        value = decode_domain(domain, data)
    except Exception as error:  # noqa: BLE001 - any decoder failure means a corrupt file
        return ShardEntry(ref.key, None, f"corrupt: {error}")
    if (resolution is not None and get_domain(domain).kind not in ("json", "npy")
            and value.shape[0] != resolution):
        try:
            data = resize_file(domain, value, resolution)
        except Exception as error:  # noqa: BLE001 - e.g. an unexpected bit depth
            return ShardEntry(ref.key, None, f"cannot resize {path}: {error}")
    return ShardEntry(ref.key, data)


def _pack_one(source: str, layout_kind: str, split_dir: str, split: str, index: int,
              domain: str, keys: list[str], resolution: int | None) -> dict[str, Any]:
    """Write one (shard, domain) and its record; runs in a worker process."""
    layout = SourceLayout(Path(source), layout_kind)
    entries = [_read_entry(layout, parse_key(key), domain, resolution) for key in keys]
    path = Path(split_dir) / domain / shard_file_name(split, index)
    stats = write_domain_shard(path, domain, entries)
    record = {
        "index": index,
        "domain": domain,
        **stats,
        "skipped": [{"key": e.key, "domain": domain, "reason": e.reason}
                    for e in entries if e.data is None],
    }
    atomic_write_bytes(_record_path(Path(split_dir), domain, index), json.dumps(record).encode())
    return record


def pack(config: PackConfig, *, progress: bool = True,
         on_progress: Callable[[int, int], None] | None = None) -> PackResult:
    """Pack (or resume packing) one split; see the module docstring.

    Returns:
        What was done; ``manifest`` is set when every shard of the split is complete;
        ``point_order`` summarizes the plan's point order.

    Raises:
        ValueError: unknown domains (valid ones listed), an unknown point order, an
            unrecognised source layout, no
            selected building in the source, or an output root packed from something else.
        FileExistsError: the split was already packed from this plan and ``resume`` is off.
    """
    for domain in config.domains or ():
        get_domain(domain)
    if config.workers < 1:
        raise ValueError(f"workers must be at least 1, got {config.workers}")
    if config.resolution is not None and config.resolution < 1:
        raise ValueError(f"resolution must be a positive side in pixels (e.g. 256), got "
                         f"{config.resolution}")
    if config.point_order not in POINT_ORDERS:
        raise ValueError(f"point_order must be one of {', '.join(POINT_ORDERS)}, got "
                         f"{config.point_order!r}")
    k, n = config.part
    plan = _load_or_make_plan(config, progress)
    split_dir = Path(config.out) / config.split
    domains = list(plan["domains"])
    for domain in config.domains or ():
        if domain not in domains:
            domains.append(domain)
    if domains != plan["domains"]:
        plan["domains"] = domains
        atomic_write_bytes(split_dir / PLAN_NAME, json.dumps(plan).encode())
    source = str(Path(config.source).resolve())  # this machine's place for it (may be moved)
    layout_kind = plan["identity"]["layout"]
    jobs = [
        (index, domain, keys)
        for index, keys in enumerate(plan["shards"])
        if index % n == k - 1
        for domain in domains
        if not _packed_whole(split_dir, config.split, domain, index)
    ]
    result = PackResult(split_dir=split_dir, point_order=plan.get("point_order", {}))
    result.shards_skipped = sum(1 for i in range(len(plan["shards"])) if i % n == k - 1) * len(
        domains) - len(jobs)
    _run_jobs(config, source, layout_kind, split_dir, jobs, result, progress, on_progress)
    result.manifest = finalize(config.out, config.split)
    if result.manifest is None:
        result.pending = sum(
            1 for i in range(len(plan["shards"])) for d in domains
            if not _record_path(split_dir, d, i).is_file()
        )
    return result


def _run_jobs(config: PackConfig, source: str, layout_kind: str, split_dir: Path,
              jobs: list[tuple[int, str, list[str]]], result: PackResult, progress: bool,
              on_progress: Callable[[int, int], None] | None) -> None:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    views = sum(len(keys) for _, _, keys in jobs)
    bar = Progress("[progress.description]{task.description}", BarColumn(),
                   MofNCompleteColumn(), TimeRemainingColumn(), disable=not progress)
    resolution = config.resolution
    args = [(source, layout_kind, str(split_dir), config.split, i, d, keys, resolution)
            for i, d, keys in jobs]
    done = 0
    with bar:
        task = bar.add_task(f"packing {config.split} (files)", total=views)

        def advance(record: dict[str, Any]) -> None:
            nonlocal done
            result.shards_written += 1
            result.skipped_files.extend(record["skipped"])
            done += record["count"]
            bar.update(task, completed=done)
            if on_progress is not None:
                on_progress(done, views)

        for record in _map_in_workers(_pack_one, args, config.workers):
            advance(record)


def _grouping(plan: dict[str, Any]) -> str:
    order = plan.get("point_order", {}).get("kind", "number")
    points = ("points that see each other close together" if order == "visibility"
              else "points by number")
    return (f"views grouped by building and point ({points}), views of a point by number; "
            "a shard never splits a point")


def finalize(out: str | os.PathLike[str], split: str) -> dict[str, Any] | None:
    """Write the split's manifest if every (shard, domain) of the plan is complete.

    Returns:
        The manifest, or ``None`` while shards are still missing (other parts still packing).
    """
    split_dir = Path(out) / split
    plan = json.loads((split_dir / PLAN_NAME).read_text())
    records: dict[str, list[dict[str, Any]]] = {d: [] for d in plan["domains"]}
    for domain in plan["domains"]:
        for index in range(len(plan["shards"])):
            path = _record_path(split_dir, domain, index)
            if not path.is_file():
                return None
            records[domain].append(json.loads(path.read_text()))
    manifest = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "split": split,
        "source": plan["identity"]["source"],
        "layout": plan["identity"]["layout"],
        "resolution": plan["resolution"],
        "source_resolution": plan.get("source_resolution"),
        "count": sum(len(keys) for keys in plan["shards"]),
        "buildings": plan["buildings"],
        "excluded_buildings": plan["notes"]["excluded_corrupt"],
        "absent_buildings": plan["notes"]["absent"],
        "grouping": _grouping(plan),
        "shards": [
            {"index": i, "file": shard_file_name(split, i), "count": len(keys), "keys": keys}
            for i, keys in enumerate(plan["shards"])
        ],
        "domains": {
            domain: {
                "count": sum(r["count"] for r in recs),
                "missing": sum(r["missing"] for r in recs),
                "bytes": sum(r["bytes"] for r in recs),
                "sha256": [r["sha256"] for r in recs],
                "description": DOMAINS[domain].description if domain in DOMAINS else "",
            }
            for domain, recs in records.items()
        },
        "skipped": [s for recs in records.values() for r in recs for s in r["skipped"]],
    }
    write_manifest(out, split, manifest)
    return manifest
