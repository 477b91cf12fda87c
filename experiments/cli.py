"""The ``taskonomy`` console script.

Subcommands are modules in :mod:`taskonomy.experiments.commands`. Each module defines:

- ``COMMAND``: a tuple naming the command, e.g. ``("tasks",)`` or ``("data", "synth")``;
- ``HELP``: a one-line description;
- either ``add_arguments(parser)`` and ``run(args) -> int`` (argparse commands), or
  ``PASSTHROUGH = True`` and ``main(argv) -> int`` for commands that parse their own
  arguments (the LightningCLI entry points).

A command that is not built yet has no module, so it is absent from ``--help``. Bad input
raises ``ValueError`` (or a ``FileNotFoundError``/``FileExistsError``) whose message names the
problem and the fix; the script prints it and exits with status 2.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

from taskonomy.experiments import commands as commands_package


def _command_modules() -> list[ModuleType]:
    modules = []
    for info in sorted(pkgutil.iter_modules(commands_package.__path__), key=lambda i: i.name):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{commands_package.__name__}.{info.name}")
        if hasattr(module, "COMMAND"):
            modules.append(module)
    return modules


def build_parser(modules: Sequence[ModuleType]) -> argparse.ArgumentParser:
    """Build the argparse tree for every command module."""
    parser = argparse.ArgumentParser(
        prog="taskonomy",
        description="Task taxonomies (Zamir et al., CVPR 2018) with PyTorch Lightning.",
    )
    top = parser.add_subparsers(dest="command", metavar="COMMAND")
    groups: dict[str, argparse._SubParsersAction] = {}
    for module in modules:
        path = tuple(module.COMMAND)
        if len(path) == 1:
            sub = top.add_parser(path[0], help=module.HELP, description=module.HELP)
        else:
            group, name = path
            if group not in groups:
                group_parser = top.add_parser(group, help=f"{group} commands")
                groups[group] = group_parser.add_subparsers(dest="subcommand", metavar="SUBCOMMAND")
            sub = groups[group].add_parser(name, help=module.HELP, description=module.HELP)
        if getattr(module, "PASSTHROUGH", False):
            sub.add_argument("argv", nargs=argparse.REMAINDER, help="arguments of the command")
        else:
            module.add_arguments(sub)
        sub.set_defaults(_module=module)
    return parser


#: The suite's own source folder: its warnings are messages to the user, not code to debug.
_SUITE_ROOT = Path(__file__).resolve().parents[1]


def _format_warning(message: Warning | str, category: type[Warning], filename: str,
                    lineno: int, line: str | None = None) -> str:
    """The suite's warnings as one ``Category: message`` line, without a line of source."""
    path = Path(filename).resolve()
    # (An environment inside the project folder holds the third-party packages.)
    if path.is_relative_to(_SUITE_ROOT) and not path.is_relative_to(Path(sys.prefix).resolve()):
        return f"{category.__name__}: {message}\n"
    return _DEFAULT_FORMAT_WARNING(message, category, filename, lineno, line)


_DEFAULT_FORMAT_WARNING = warnings.formatwarning


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``taskonomy`` console script."""
    previous = warnings.formatwarning
    warnings.formatwarning = _format_warning
    try:
        return _main(argv)
    finally:
        warnings.formatwarning = previous


def _main(argv: Sequence[str] | None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    modules = _command_modules()
    # Pass-through commands (LightningCLI) get their arguments untouched, ``--help`` included.
    for module in modules:
        path = list(module.COMMAND)
        if getattr(module, "PASSTHROUGH", False) and argv[: len(path)] == path:
            return int(module.main(argv[len(path) :]) or 0)
    parser = build_parser(modules)
    args = parser.parse_args(argv)
    chosen: ModuleType | None = getattr(args, "_module", None)
    if chosen is None:
        parser.print_help()
        return 0 if not argv else 2
    try:
        return int(chosen.run(args) or 0)
    except (ValueError, FileNotFoundError, FileExistsError, NotADirectoryError) as error:
        # Bad input anywhere in the suite raises one of these with a message that names the
        # problem and the fix; the user gets that message, not a traceback.
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        hint = getattr(chosen, "INTERRUPTED", "repeat the command to run it again")
        print(f"\ninterrupted: {hint}", file=sys.stderr)
        return 130  # 128 + SIGINT, as a shell reports it


if __name__ == "__main__":
    sys.exit(main())
