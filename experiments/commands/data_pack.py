"""``taskonomy data pack``: pack per-view building files into per-domain aligned shards."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from rich.console import Console

from taskonomy.datamodules.layouts import detect_layout
from taskonomy.datamodules.packer import POINT_ORDERS, PackConfig, pack, parse_part
from taskonomy.datamodules.splits import SPLIT_NAMES, split_buildings

COMMAND = ("data", "pack")
HELP = "Pack released, Omnidata or synthetic buildings into per-domain aligned shards."
#: What an interrupt (Ctrl-C) leaves, printed in its place.
INTERRUPTED = "nothing is left half-written; repeat the command with --resume to finish the split"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the command's arguments."""
    parser.add_argument("source", type=Path, help="source folder (released/Omnidata/synthetic)")
    parser.add_argument("--out", type=Path, required=True, help="shard root to write")
    parser.add_argument(
        "--split-file", default=None,
        help=f"released split ({', '.join(SPLIT_NAMES)}) or an id,train,val,test CSV; "
             "default: the source's own train_val_test_*.csv if it has one (synthetic "
             "buildings), else none: then pass --all-buildings to pack every building",
    )
    parser.add_argument("--split", default="train",
                        help="part of the split file to pack (train, val, test, all; default: "
                             "train); also the output folder name")
    parser.add_argument("--domains", nargs="+", default=None,
                        help="domains to pack (default: all found); with --resume, extra "
                             "domains are added for the existing keys")
    parser.add_argument("--shard-size", type=int, default=1000, help="views per shard (target)")
    parser.add_argument("--workers", type=int, default=1, help="parallel packing processes")
    parser.add_argument("--resolution", type=int, default=None,
                        help="resize images to this side while packing (default: keep the "
                             "files unchanged, lossless); e.g. 256 for the released 512² data")
    parser.add_argument("--point-order", choices=POINT_ORDERS, default="visibility",
                        help="order of a building's points in the shards: visibility (points "
                             "that see each other close together, so non-fixated pose finds "
                             "its pairs in the stream; default) or number")
    parser.add_argument("--part", default="1/1", help="pack part K of N (K/N), for N machines")
    parser.add_argument("--resume", action="store_true",
                        help="continue an interrupted pack, or add domains to a packed split")
    parser.add_argument("--all-buildings", action="store_true",
                        help="without a split file, pack every building of the source into "
                             "--split (refused otherwise: test buildings would leak into train)")
    parser.add_argument("--include-corrupt", action="store_true",
                        help="also pack the buildings known to be corrupt in the released data")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    """Pack one split."""
    from taskonomy.tasks.registry import task_names

    task_names()  # imports the task plugins, which register their label domains
    buildings = None
    split_file = args.split_file
    if split_file is None:
        # Synthetic sources carry their own split CSV; use it when it is the only one.
        found = detect_layout(args.source).split_files()
        if len(found) == 1:
            split_file = found[0]
            Console().print(f"using the split file {split_file} of the source")
        elif found:
            raise ValueError(
                f"{args.source} holds {len(found)} split files "
                f"({', '.join(p.name for p in found)}); choose one with --split-file"
            )
    if split_file is not None:
        buildings = split_buildings(split_file, args.split)
        if not buildings:
            raise ValueError(
                f"split file {split_file} lists no {args.split!r} buildings; pack another part "
                "(--split), or give this one buildings (a synthetic source needs at least 3 "
                "buildings for every part to get one)"
            )
    elif not args.all_buildings:
        raise ValueError(
            f"no split file: every building of {args.source} would be packed into split "
            f"{args.split!r}. Pass --split-file (tiny, medium, full, fullplus or an "
            "id,train,val,test CSV) to pack one split's buildings, or --all-buildings to pack "
            "them all"
        )
    config = PackConfig(
        source=args.source, out=args.out, split=args.split, buildings=buildings,
        domains=args.domains, shard_size=args.shard_size, workers=args.workers,
        part=parse_part(args.part), resume=args.resume, include_corrupt=args.include_corrupt,
        resolution=args.resolution, point_order=args.point_order,
    )
    result = pack(config, progress=not args.quiet)
    console = Console()
    console.print(
        f"{result.split_dir}: wrote {result.shards_written} domain shards, "
        f"{result.shards_skipped} already complete, {len(result.skipped_files)} files skipped"
    )
    order = result.point_order
    if order.get("graph", ["none"]) != ["none"] and order.get("points"):
        console.print(
            f"point order {order['kind']}: {order['paired']} of {order['points']} points have a "
            f"non-fixated pose partner within {order['window']} points in the stream "
            f"({order['paired_by_number']} in point-number order)"
        )
    for item in result.skipped_files[:20]:
        console.print(f"  skipped {item['key']} {item['domain']}: {item['reason']}")
    if result.manifest is None:
        console.print(f"{result.pending} domain shards still pending (other parts); the "
                      "manifest is written by whichever part finishes last")
    else:
        m = result.manifest
        console.print(
            f"manifest: {m['count']} samples in {len(m['shards'])} shards, domains "
            f"{', '.join(m['domains'])}; excluded corrupt buildings: "
            f"{', '.join(m['excluded_buildings']) or 'none'}; absent from the source: "
            f"{len(m['absent_buildings'])}"
        )
        empty = [d for d, info in m["domains"].items() if info["count"] and
                 info["missing"] == info["count"]]
        if empty:
            print(f"warning: no sample of split {args.split!r} has a file of "
                  f"{', '.join(empty)}: every member is a missing-file marker. Check that the "
                  "source's buildings have those folders (a plugin's labels are written by the "
                  "plugin's own tools), or leave them out of --domains", file=sys.stderr)
        if m["absent_buildings"]:
            absent = m["absent_buildings"]
            # A pack is planned once: buildings downloaded later go into another pack.
            console.print(f"  absent: {', '.join(absent[:12])}{', …' if len(absent) > 12 else ''}"
                          " (not packed; this split's shards are planned without them)")
    return 0
