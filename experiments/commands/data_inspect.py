"""``taskonomy data inspect``: a contact sheet of every domain of a few views.

``ROOT`` is a building folder of the released layout (``BUILDING/rgb/...``) or a source folder
of buildings (released or Omnidata layout; ``--building`` picks one), drawn from its files, or a
shard root (split folders with manifests), summarized and drawn from decoded shard samples by
:mod:`taskonomy.datamodules.shard_inspect`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

COMMAND = ("data", "inspect")
HELP = "Draw every domain of a few views of a building folder or shard root into one PNG."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the command's arguments."""
    parser.add_argument("building_dir", metavar="ROOT",
                        help="a building folder of the released layout (BUILDING/rgb/..., ...), "
                             "a source folder of buildings (released or Omnidata layout), or a "
                             "shard root")
    parser.add_argument("--out", default=None,
                        help="PNG file to write (required for a building folder; optional for a "
                             "shard root, which also prints a summary)")
    parser.add_argument("--building", default=None,
                        help="with a source folder (released or Omnidata layout) for ROOT: the "
                             "building to draw (default: the first)")
    parser.add_argument("--views", type=int, default=4, help="views to show (rows)")
    parser.add_argument("--size", type=int, default=192, help="tile side in pixels")
    parser.add_argument("--verify", action="store_true",
                        help="shard root only: also check every shard against the SHA-256 its "
                             "manifest lists (e.g. after copying the shards to another machine); "
                             "exits 1 if one is damaged or missing")


def run(args: argparse.Namespace) -> int:
    """Write the sheet (and, for a shard root, print its summary)."""
    from taskonomy.datamodules.shard_inspect import (
        inspect_shard_root,
        is_shard_root,
        is_split_folder,
    )
    from taskonomy.datamodules.visualize import write_contact_sheet
    from taskonomy.tasks.registry import task_names

    task_names()  # imports the task plugins, which register their label domains
    if args.views < 1:  # before anything is read, shard root or building
        raise ValueError(f"--views must be at least 1, got {args.views}")
    if args.out is not None and Path(args.out).suffix.lower() != ".png":
        raise ValueError(f"--out must end in .png (the contact sheet is a PNG), got {args.out}")
    folder = Path(args.building_dir)
    if is_split_folder(folder):
        raise ValueError(
            f"{folder} is one split of a shard root; give the shard root {folder.parent} "
            "(its summary covers every split)"
        )
    if is_shard_root(args.building_dir):
        return inspect_shard_root(args.building_dir, args.out, views=args.views, size=args.size,
                                  verify=args.verify)
    if args.verify:
        raise ValueError(f"--verify checks a shard root; {args.building_dir} is not one (no "
                         "SPLIT/manifest.json)")
    if args.out is None:
        raise ValueError("give --out sheet.png: the contact sheet of a building folder is a PNG")
    path = write_contact_sheet(args.building_dir, args.out, views=args.views, size=args.size,
                               building=args.building)
    print(f"wrote {path}")
    return 0
