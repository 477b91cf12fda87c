"""``taskonomy sweep beam``: write the higher-order transfer sweep from first-order results.

Example: ``taskonomy sweep beam --runs runs --max-order 4 --out sweeps/higher_order.yaml``.
"""

from __future__ import annotations

import argparse
import contextlib
import io
from pathlib import Path

from rich.console import Console

COMMAND = ("sweep", "beam")
HELP = ("write the higher-order transfer sweep file by beam search over first-order "
        "affinities (orders 2-3 from the top-5 sources, 4 from the top-6)")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the command's arguments."""
    parser.add_argument("--runs", required=True, help="runs folder with first-order records")
    parser.add_argument("--max-order", type=int, default=4, help="highest transfer order (≥ 2)")
    parser.add_argument("--out", required=True, help="sweep file to write (YAML)")
    parser.add_argument("--regime", default=None,
                        help="data regime of the transfers (default: the only one present)")
    parser.add_argument("--targets", nargs="+", default=None,
                        help="targets (default: every target with first-order transfers)")
    parser.add_argument("--config", default=None,
                        help="transfer config of the sweep's command (default: the one the "
                             "first-order transfers ran with, else "
                             "experiments/configs/transfer_cpu.yaml)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="fixed argument of every point, as the first-order sweep had it "
                             "(e.g. --set model.resolution=32; repeatable)")
    parser.add_argument("--name", default=None, help="sweep name (default: the file stem)")
    parser.add_argument("--include-target", action="store_true",
                        help="let a target be a source of its own higher-order transfers")


def run(args: argparse.Namespace) -> int:
    """Rank, select and write the sweep file."""
    from taskonomy.analysis.affinities import choose_regime
    from taskonomy.analysis.records import read_records
    from taskonomy.experiments.beam import (
        DEFAULT_CONFIG,
        RANKING_HEADER,
        beam_combinations,
        beam_sweep,
        first_order_records,
        rank_sources,
        ranking_comment,
        recorded_configs,
        write_sweep,
    )
    from taskonomy.experiments.commands.sweep_run import extra_arguments

    if args.max_order < 2:
        raise ValueError(f"--max-order must be at least 2, got {args.max_order}")
    records = read_records(args.runs)
    ranking = rank_sources(records, targets=args.targets, regime=args.regime,
                           include_target=args.include_target)
    transfers = {t: beam_combinations(r, args.max_order) for t, r in ranking.items()}
    out = Path(args.out)
    if out.is_file() and not out.read_text(errors="replace").startswith(RANKING_HEADER):
        raise FileExistsError(f"--out {out} exists and was not written by sweep beam; choose "
                              "another path, or delete it first")
    # The settings of the regime ranked: 16k transfers must not run as the 1k ones did.
    regime = choose_regime(first_order_records(records), args.regime)
    # The higher orders run as the first order did: its config (the paper's trains on other
    # splits, schedule and devices than the CPU default), unless one is chosen.
    recorded = None if args.config else recorded_configs(records, regime)
    if args.config:
        config = [args.config]
    elif recorded:
        missing = [c for c in recorded if not Path(c).is_file()]
        if missing:
            raise ValueError(
                f"the first-order transfers ran with {', '.join(missing)}, not found from "
                f"{Path.cwd()}; run sweep beam from the project folder, or pass --config "
                "(this machine's copy)")
        config = recorded
        Console().print(f"config of the higher orders (the first order's): {' + '.join(config)}",
                        highlight=False)
    else:
        config = [DEFAULT_CONFIG]
        Console(stderr=True).print(
            f"[yellow]the first-order records name no config (written before records listed "
            f"them): the higher orders use {DEFAULT_CONFIG}; for paper-setting results pass "
            "--config experiments/configs/transfer_paper.yaml[/yellow]", highlight=False)
    fixed = extra_arguments(args.set)
    sweep = beam_sweep(transfers, name=args.name or out.stem, config=config, fixed=fixed,
                       max_order=args.max_order)
    carried = _carried_settings(records, sweep, fixed, regime)
    if carried:
        sweep = beam_sweep(transfers, name=args.name or out.stem, config=config,
                           fixed=[*fixed, *carried], max_order=args.max_order)
        Console().print("settings of the first-order transfers, carried over (a --set of the "
                        "same key overrides): " + " ".join(carried))
    path = write_sweep(sweep, out, header=ranking_comment(ranking))
    total = sum(len(v) for v in transfers.values())
    Console().print(f"{total} higher-order transfers for {len(transfers)} targets → {path}")
    return 0


def _carried_settings(records: list, sweep: dict, fixed: list[str], regime: str) -> list[str]:
    """The first-order settings the sweep's points would otherwise run without."""
    from taskonomy.experiments.beam import settings_to_carry
    from taskonomy.experiments.commands.sweep_run import _lightning_checker

    command = [str(item) for item in sweep["command"] if item != "${args}"]
    first = sweep["parameters"]["model.transfer"]["values"][0]
    checker = _lightning_checker("transfer")
    assert checker is not None
    said = io.StringIO()
    try:
        with contextlib.redirect_stderr(said), contextlib.redirect_stdout(io.StringIO()):
            parsed = checker.parsed_config([*command[2:], f"--model.transfer={first}"])
    except (SystemExit, ValueError) as error:
        lines = [line for line in said.getvalue().splitlines() if line.strip()]
        reason = str(error) if isinstance(error, ValueError) else (
            lines[-1] if lines else "rejected by the transfer CLI")
        raise ValueError(f"the sweep's command {' '.join(command)} would not run ({reason}); "
                         "fix --config or --set. No sweep file was written") from None
    keys = [argument[2:].split("=", 1)[0] for argument in fixed]
    return settings_to_carry(records, parsed, keep=keys, regime=regime)
