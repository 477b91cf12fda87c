"""``taskonomy weights import``: the authors' released PyTorch weights as finished task runs.

Example (the files of ``visualpriors``, downloaded once)::

    taskonomy weights import normal_encoder-f5e2….pth normal_decoder-8f18….pth
        depth_zbuffer_encoder-cc34….pth --runs_dir runs   (one line)

registers ``normal-visualpriors`` (with its decoder, so it can also be ``normal``'s ``self``
baseline) and ``depth_zbuffer-visualpriors`` (a source only) in the paper setting (``resnet50``,
256²); paper-setting transfers then read them like trained task runs.
"""

from __future__ import annotations

import argparse

from rich.console import Console

COMMAND = ("weights", "import")
HELP = ("register the authors' released PyTorch weights (visualpriors' <task>_encoder-*.pth "
        "and <task>_decoder-*.pth) as finished task runs that transfers can read")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the command's arguments."""
    parser.add_argument("files", nargs="+", metavar="FILE",
                        help="released weight files; the task and part are read from their names "
                             "(<task>_encoder-<hash>.pth, <task>_decoder-<hash>.pth)")
    parser.add_argument("--runs_dir", default="runs", help="runs folder to register them in")
    parser.add_argument("--task", default=None,
                        help="the task of files not named like the released ones: then FILE is "
                             "its encoder, optionally followed by its decoder")
    parser.add_argument("--run_id", default=None,
                        help="run id (one task only; default <task>-visualpriors); a run that was "
                             "not imported is never overwritten")
    parser.add_argument("--class_weights", default=None, metavar="FILE",
                        help="class weights of a class-weighted task (one task only; semantic "
                             "segmentation: the authors' semseg_prior_factor.npy), which its "
                             "transfers score with")


def run(args: argparse.Namespace) -> int:
    """Convert and register each task's weights."""
    from pathlib import Path

    from taskonomy.tasks.families.base import uses_class_weights
    from taskonomy.tasks.pretrained import import_visualpriors, released_pairs
    from taskonomy.tasks.registry import get_spec

    if args.task is not None:
        if len(args.files) > 2:
            raise ValueError("with --task, pass the task's encoder file and optionally its "
                             f"decoder file; got {len(args.files)} files")
        pairs = {args.task: {"encoder": Path(args.files[0]),
                             **({"decoder": Path(args.files[1])} if len(args.files) == 2 else {})}}
    else:
        pairs = released_pairs(args.files)
    for option in ("run_id", "class_weights"):
        if getattr(args, option) is not None and len(pairs) > 1:
            raise ValueError(f"--{option} is of one task, but the files are of {len(pairs)} "
                             "tasks; import that task alone")
    for task in pairs:  # every name, before any file is converted
        get_spec(task)
    console = Console()
    imported: list[str] = []
    for task, parts in sorted(pairs.items()):
        try:
            record = import_visualpriors(args.runs_dir, parts["encoder"], parts.get("decoder"),
                                         task=task, run_id=args.run_id,
                                         class_weights=args.class_weights)
        except (ValueError, FileNotFoundError) as error:
            if not imported:
                raise
            raise ValueError(f"{task}: {error} (imported already: {', '.join(imported)}; "
                             "import the rest once fixed)") from None
        imported.append(task)
        head = "with its decoder" if "decoder" in parts else "encoder only (a source, not `self`)"
        console.print(f"{task}: task run {record.run_id} in {args.runs_dir}, {head}")
        if uses_class_weights(get_spec(task)) and args.class_weights is None:
            console.print(f"[yellow]{task} is class-weighted: without --class_weights its "
                          "transfers and `self` baseline score an unweighted loss, unlike the "
                          "authors'[/yellow]")
    return 0
