"""``taskonomy data synth``: write synthetic buildings in the released Taskonomy layout."""

from __future__ import annotations

import argparse
import sys
import time

COMMAND = ("data", "synth")
HELP = "Render procedural indoor buildings with every Taskonomy label (released layout)."
#: What an interrupt (Ctrl-C) leaves, printed in its place.
INTERRUPTED = "finished buildings are kept; repeat the command to render the rest"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the command's arguments."""
    parser.add_argument(
        "--out", required=True, help="output folder (new, empty, or a run to resume)",
    )
    parser.add_argument("--buildings", type=int, default=None,
                        help="number of buildings (default 3; not with --names or --splits)")
    parser.add_argument("--names", nargs="+", default=None,
                        help="explicit building names (instead of --buildings)")
    parser.add_argument("--resolution", type=int, default=256, help="image side in pixels")
    parser.add_argument("--seed", type=int, default=0, help="master seed (same seed, same bytes)")
    parser.add_argument("--workers", type=int, default=1, help="worker processes")
    parser.add_argument("--points", type=int, default=4, help="fixated points per building")
    parser.add_argument("--views", type=int, default=3, help="views per fixated point")
    parser.add_argument("--splits", default=None,
                        help="split CSV (id,train,val,test) assigning the named buildings")


def run(args: argparse.Namespace) -> int:
    """Synthesize the buildings and print a summary."""
    from taskonomy.datamodules.synth import read_split_csv, synthesize
    from taskonomy.datamodules.synth.dataset import SPLITS

    if args.buildings is not None and (args.names or args.splits is not None):
        # The names (or the split file) fix the count; a second count would be dropped.
        raise ValueError(
            f"--buildings {args.buildings} with --{'names' if args.names else 'splits'}: the "
            "building names fix the count; drop --buildings, or drop the names to render "
            "numbered buildings"
        )
    split_names = None
    buildings: int | list[str] = 3 if args.buildings is None else args.buildings
    if args.splits is not None:
        split_names = read_split_csv(args.splits)
        buildings = args.names or list(split_names)
    elif args.names:
        buildings = args.names
    start = time.perf_counter()
    manifest = synthesize(args.out, buildings=buildings, resolution=args.resolution,
                          seed=args.seed, workers=args.workers, points=args.points,
                          views=args.views, split_names=split_names, progress=True)
    seconds = time.perf_counter() - start
    count = len(manifest["buildings"])
    views = count * manifest["points"] * manifest["views"]
    print(f"{count} buildings, {views} views at {args.resolution}² in {args.out} "
          f"({seconds:.1f} s)")
    parts = {part: sum(1 for s in manifest["splits"].values() if s == part) for part in SPLITS}
    print("split: " + ", ".join(f"{n} {part}" for part, n in parts.items()))
    empty = [part for part, n in parts.items() if n == 0]
    if empty:
        print(f"warning: no {' or '.join(empty)} building: synthesize at least 3 buildings to "
              "give every split one (`taskonomy data pack` needs the buildings of the split it "
              "packs)", file=sys.stderr)
    return 0
