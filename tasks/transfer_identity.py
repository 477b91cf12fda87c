"""What a transfer run is: its target, its sources (sorted) or the baseline it runs.

Kept apart from :mod:`taskonomy.tasks.transfer` (the Lightning module) so that a sweep can name
and check its points without importing the training stack.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from taskonomy.tasks.registry import get_spec
from taskonomy.tasks.specs import BASELINES

#: What a :class:`~taskonomy.tasks.transfer.TransferTask` trains: a transfer or a baseline.
KINDS = ("transfer", "pixels", "random", "self")


@dataclass(frozen=True)
class TransferIdentity:
    """What a transfer run is, for its run record.

    Attributes:
        role: ``"transfer"`` or ``"baseline"``.
        target: The target task.
        sources: Sorted sources, or the baseline's name as a 1-tuple.
    """

    role: str
    target: str
    sources: tuple[str, ...]


def parse_transfer(text: str) -> tuple[str, list[str]]:
    """Parse ``"target:source+source"`` (or ``"target:pixels"``) into target and sources.

    Raises:
        ValueError: The text is not of that form.
    """
    target, sep, rest = text.partition(":")
    sources = rest.split("+")
    # An empty part ('a:b+') is refused: it would name the same transfer under another run id.
    if not sep or not target or not all(s.strip() for s in sources):
        raise ValueError(
            f"transfer {text!r} must read 'target:source[+source...]', e.g. "
            "'normal:reshading+depth_zbuffer' or 'normal:pixels'"
        )
    return target, sources


def resolve_identity(target: str | None, sources: Sequence[str] | None, kind: str = "transfer",
                     transfer: str | None = None) -> TransferIdentity:
    """Check and normalize what a transfer run is from its arguments (see :class:`TransferTask`).

    Raises:
        ValueError: No target, an unknown kind or task, sources for a baseline, baselines or
            duplicates among sources, or ``transfer`` contradicting ``target``/``sources``.
    """
    source_list = list(sources or [])
    if transfer is not None:
        parsed_target, parsed = parse_transfer(transfer)
        if target is not None and target != parsed_target:
            raise ValueError(
                f"--model.transfer={transfer} names target {parsed_target!r} but "
                f"--model.target={target}; give one of them"
            )
        if source_list and sorted(source_list) != sorted(parsed):
            raise ValueError(
                f"--model.transfer={transfer} and --model.sources={source_list} disagree; "
                "give one of them"
            )
        target = parsed_target
        source_list = parsed
    if target is None:
        raise ValueError("no target: set --model.target=TASK (or --model.transfer=T:S+S)")
    if not get_spec(target).target:  # checked here too, so a sweep is rejected before it runs
        raise ValueError(
            f"task {target!r} is source-only (the paper never reads out into it); "
            "choose a target task (`taskonomy tasks` lists their roles)"
        )
    if kind == "transfer" and len(source_list) == 1 and source_list[0] in BASELINES:
        # A baseline name as the only source selects it: sweep grids over target × sources.
        kind, source_list = source_list[0], []
    if kind not in KINDS:
        raise ValueError(f"unknown kind {kind!r}; valid kinds: {', '.join(KINDS)}")
    if kind == "transfer":
        if not source_list:
            raise ValueError(
                f"a transfer into {target!r} needs sources: --model.sources=[a,b]"
            )
        bad = [s for s in source_list if s in BASELINES]
        if bad:
            raise ValueError(
                f"{bad} are baselines, not sources; use --model.kind={bad[0]} instead"
            )
        if len(set(source_list)) != len(source_list):
            raise ValueError(f"duplicate sources in {source_list}")
        for name in source_list:
            get_spec(name)  # unknown names list the valid ones
    elif source_list:
        raise ValueError(
            f"the {kind!r} baseline takes no sources (got {source_list}); drop "
            "--model.sources or use --model.kind=transfer"
        )
    if kind == "transfer":
        return TransferIdentity("transfer", target, tuple(sorted(source_list)))
    return TransferIdentity("baseline", target, (kind,))
