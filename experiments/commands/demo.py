"""``taskonomy demo``: synthesize, pack, train, transfer, analyze and report, resumably."""

from __future__ import annotations

import argparse

COMMAND = ("demo",)
HELP = ("run the whole pipeline on synthetic data (tasks, transfers, baselines, beam, analysis, "
        "taxonomies, HTML report); rerun to resume")
#: What an interrupt (Ctrl-C) leaves, printed in its place.
INTERRUPTED = "finished stages and runs are kept; run the same command again to continue"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the command's arguments."""
    parser.add_argument("--out", default="demo", help="output folder (default: ./demo)")
    parser.add_argument("--tasks", default=None,
                        help="comma-separated task set (default: depth_zbuffer, "
                             "depth_euclidean, normal, reshading, inpainting)")
    parser.add_argument("--full", action="store_true",
                        help="all registered tasks at 64 px (hours on a CPU)")
    parser.add_argument("--quick", action="store_true",
                        help="a minimal end-to-end check: 3 tasks, a handful of steps")
    parser.add_argument("--workers", type=int, default=2, help="runs at once (default: 2)")
    parser.add_argument("--task-steps", type=int, default=None,
                        help="optimizer steps per task network")
    parser.add_argument("--wandb", action="store_true",
                        help="log every run to W&B (offline unless WANDB_MODE=online)")


def run(args: argparse.Namespace) -> int:
    """Run the demo; exit status 1 when a sanity check fails (``--quick``: shown only)."""
    from rich.console import Console

    from taskonomy.experiments.demo import QUICK, DemoError, run_demo

    if args.full and args.quick:
        raise ValueError("--full and --quick exclude each other; choose one")
    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()] if args.tasks else None
    if args.tasks is not None and not tasks:
        raise ValueError("--tasks is empty; give task names separated by commas")
    overrides = {}
    if args.task_steps is not None:
        overrides["task_steps"] = args.task_steps
    if args.wandb:
        overrides["wandb"] = True
    try:
        result = run_demo(args.out, tasks, full=args.full, workers=args.workers,
                          settings=QUICK if args.quick else None, **overrides)
    except DemoError as error:
        Console(stderr=True).print(f"[red]demo stopped:[/] {error}")
        return 1
    failed = [c for c in result.sanity if not c.passed]
    if failed and args.quick:
        # A handful of steps on 2 test buildings checks the pipeline, not the science.
        Console(stderr=True).print("[yellow]note:[/] --quick trains for a handful of steps on "
                                   "2 test buildings: its sanity checks are shown, not required")
        return 0
    return 1 if failed else 0
