"""``taskonomy data inspect``: a contact sheet of every domain of a few views."""

from __future__ import annotations

import argparse

COMMAND = ("data", "inspect")
HELP = "Draw every domain of a few views of a building (released layout) into one PNG."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the command's arguments."""
    parser.add_argument("building_dir", metavar="BUILDING_DIR",
                        help="a building folder of the released layout (BUILDING/rgb/..., ...)")
    # A shard-root mode only needs another source of samples for save_contact_sheet.
    parser.add_argument("--out", required=True, help="PNG file to write")
    parser.add_argument("--views", type=int, default=4, help="views to show (rows)")
    parser.add_argument("--size", type=int, default=192, help="tile side in pixels")


def run(args: argparse.Namespace) -> int:
    """Write the sheet."""
    from taskonomy.datamodules.visualize import building_samples, save_contact_sheet

    if args.views < 1:
        raise ValueError(f"--views must be at least 1, got {args.views}")
    samples = building_samples(args.building_dir, args.views)
    path = save_contact_sheet(samples, args.out, size=args.size)
    print(f"wrote {path}")
    return 0
