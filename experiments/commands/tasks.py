"""``taskonomy tasks``: print the task table."""

from __future__ import annotations

import argparse
import json

from rich.console import Console
from rich.table import Table

from taskonomy.tasks.registry import all_specs, get_registered

COMMAND = ("tasks",)
HELP = "List the tasks of the dictionary (name, family, domains, output, loss, role)."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the command's arguments."""
    parser.add_argument("--json", action="store_true", help="print the table as JSON")
    parser.add_argument("--resolution", type=int, default=256, help="resolution for output shapes")


def run(args: argparse.Namespace) -> int:
    """Print the table."""
    specs = all_specs()
    if args.json:
        rows = [
            {
                "name": s.name,
                "code_name": s.code_name,
                "family": s.family,
                "domains": list(s.domains),
                "output_shape": list(s.output_shape(args.resolution)),
                "encoding": s.encoding,
                "loss": s.loss,
                "metrics": list(s.metrics),
                "mask": s.mask,
                "views": s.views,
                "target": s.target,
                "origin": get_registered(s.name).origin,
            }
            for s in specs
        ]
        print(json.dumps(rows, indent=2))
        return 0
    table = Table(title=f"{len(specs)} tasks", show_lines=False)
    for column in ("task", "authors' name", "family", "domains", "output", "loss", "views", "role"):
        table.add_column(column)
    for s in specs:
        table.add_row(
            s.name,
            s.code_name,
            s.family,
            ", ".join(s.label_domains) or "rgb",
            "×".join(map(str, s.output_shape(args.resolution))),
            s.loss,
            str(s.views),
            "target+source" if s.target else "source-only",
        )
    console = Console(width=200)
    console.print(table)
    for s in specs:  # a plugin's task names its package, whose code makes its labels
        registered = get_registered(s.name)
        if registered.plugin:
            console.print(f"{s.name}: plugin {registered.origin}")
    return 0
