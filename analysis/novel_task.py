"""Placing a novel task: rank its sources from its transfer runs and re-solve the taxonomy.

A task outside the dictionary (a plugin, or a new label set with few labels) is placed by
training only the transfers *into* it from dictionary tasks (plus, where available, its
``self``, ``random`` and ``pixels`` baselines). Its tournament is computed from those run
records exactly as for any target; being AHP-normalized per target, its affinities join the
dictionary's affinities (a results table of ours, or the shipped paper data) without rescaling
the others. They are on the base's scale only with about as many candidates as a base target
has: with fewer, each weighs more in the objective, and a warning says so
(:func:`candidate_scale_warning`). The taxonomy is then re-solved with the novel task among the
targets. As a source, a novel task needs its transfers ranked against every other candidate of
each target, which only a joint analysis of all records can do (:func:`source_use_note`).
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import pandas as pd

from taskonomy.analysis.affinities import AffinityResult, compute_affinities
from taskonomy.analysis.affinity_table import AffinityTable
from taskonomy.analysis.records import RunRecord
from taskonomy.analysis.taxonomy import DEFAULT_MAX_ORDER, NovelPlacement, place_novel_task
from taskonomy.solvers import print_note


@dataclass(frozen=True)
class NovelTaskResult:
    """A novel task placed in a taxonomy.

    Attributes:
        task: The novel task.
        ranking: Its candidates, highest affinity first: ``sources``, ``order``, ``affinity``,
            ``quality``, ``gain`` (+ CI columns with a bootstrap), ``n_images``.
        unknown_sources: Sources of its transfers that are not tasks of the base affinities;
            the taxonomy may still supervise them, but only the novel task can use them.
        table: The base affinities with the novel task's rows added.
        placement: The re-solved taxonomy (:class:`~taskonomy.analysis.taxonomy.NovelPlacement`).
        analysis: The novel task's tournament.
    """

    task: str
    ranking: pd.DataFrame
    unknown_sources: tuple[str, ...]
    table: AffinityTable
    placement: NovelPlacement
    analysis: AffinityResult

    def best_sources(self, k: int = 5) -> list[str]:
        """The ``k`` highest-affinity transfers (baselines excluded), as ``sources`` strings."""
        transfers = self.ranking[self.ranking["order"] > 0]
        return list(transfers["sources"].head(k))


def merge_target(base: AffinityTable, addition: AffinityTable, task: str) -> AffinityTable:
    """The base table with the rows of ``task`` from ``addition`` appended.

    Raises:
        ValueError: ``task`` is already a target of ``base``.
    """
    if task in base.targets():
        raise ValueError(
            f"{task!r} is already a target of the base affinities; a novel task needs a name "
            "the base affinities do not use as a target"
        )
    rows = addition.frame
    rows = rows[rows["target"] == task]
    frame = pd.concat([base.frame, rows], ignore_index=True)
    keep = [c for c in frame.columns if c in rows.columns and c in base.frame.columns]
    return AffinityTable.from_frame(frame[keep])


def candidate_scale_warning(base: AffinityTable, task: str, candidates: int) -> str | None:
    """A warning when the novel task has far fewer candidates than the base targets.

    AHP makes each target's affinities sum to 1, so with N candidates against the base targets'
    mean of M, each of its affinities weighs about M/N times as much in the taxonomy's
    objective: the solve then favours serving it. ``None`` when N is at least half of M.
    """
    sizes = [len(base.candidates(t)) for t in base.targets()]
    mean = sum(sizes) / len(sizes) if sizes else 0.0
    if not sizes or candidates <= 0 or candidates >= mean / 2:
        return None
    return (f"warning: the novel task {task!r} has {candidates} candidates against a mean of "
            f"{mean:.0f} per base target; its affinities sum to 1 over fewer candidates, so "
            f"each weighs about {mean / candidates:.0f}× a base target's in the taxonomy's "
            "objective. Record transfers into it from more sources for a placement on the "
            "base's scale")


def source_use_note(records: Sequence[RunRecord], task: str) -> str | None:
    """A note when records use the novel task as a source, which the placement cannot weigh.

    A source's affinity into a target comes from its tournament against the target's other
    candidates on the same test images. Base affinities (the paper's, or a results table) hold
    no per-image losses, so the novel task joins the taxonomy as a target only; analyzing all
    records together (``taskonomy analyze RUNS``) weighs it as a source too.
    """
    used = sorted({r.target for r in records
                   if r.role == "transfer" and task in r.sources and r.target != task})
    if not used:
        return None
    return (f"note: {len(used)} target(s) ({', '.join(used[:5])}{', …' if len(used) > 5 else ''})"
            f" have transfers from the novel task {task!r}; the base affinities hold no "
            "per-image losses to rank it against their other candidates, so this placement "
            f"uses {task!r} as a target only. To weigh it as a source too, analyze all records "
            "together (`taskonomy analyze RUNS`, with every candidate of those targets)")


def place_novel_task_from_records(records: Sequence[RunRecord], task: str,
                                  base: AffinityTable, budget: float, *,
                                  targets: Sequence[str] | None = None, regime: str | None = None,
                                  strict: bool = False, bootstrap: int = 0, seed: int = 0,
                                  solver: str = "highs", max_order: int = DEFAULT_MAX_ORDER,
                                  log: Callable[[str], None] | None = None,
                                  convention: str = "paper") -> NovelTaskResult:
    """Rank a novel task's sources from its run records and re-solve the taxonomy with it.

    Args:
        records: Finished run records holding the transfers into ``task`` (others are ignored).
        task: The novel task (the ``target`` of its transfer records).
        base: The dictionary's affinities, e.g. ``load_affinities("paper-2018-16k")``.
        budget: Supervision budget of the re-solved taxonomy.
        targets: Targets of the taxonomy besides ``task`` (default: all of ``base``).
        regime: Data regime of the novel task's transfers (default: the only one present).
        strict: Raise on mismatched sample keys.
        bootstrap: Bootstrap resamples for confidence intervals of its affinities.
        seed: Bootstrap seed.
        solver: ``highs`` (the default), ``gurobi`` or ``auto``.
        max_order: Highest transfer order in the taxonomy.
        log: Receives one-line solver messages (e.g. a Gurobi fallback).
        convention: The taxonomy's program (:func:`~taskonomy.analysis.taxonomy.build_problem`).

    Raises:
        ValueError: No transfer records into ``task``, ``task`` already a target of ``base``,
            fewer than two candidates, or key mismatches in strict mode.
        taskonomy.solvers.InfeasibleBudgetError: The budget cannot cover the targets.
    """
    own = [r for r in records if r.target == task]
    if not any(r.role == "transfer" for r in own):
        targets_seen = sorted({r.target for r in records if r.role == "transfer"})
        near = difflib.get_close_matches(task, targets_seen, n=1)
        typo = f" (did you mean {near[0]!r}?)" if near else ""
        raise ValueError(
            f"no transfer records into the novel task {task!r}{typo}. Record transfers whose "
            f"target is {task!r} (targets of transfers in these records: "
            f"{', '.join(targets_seen) or 'none'})"
        )
    if task in base.targets():
        merge_target(base, base, task)  # raises the explanatory error
    analysis = compute_affinities(own, targets=None, regime=regime, strict=strict,
                                  bootstrap=bootstrap, seed=seed)
    table = merge_target(base, analysis.table, task)
    ranking = analysis.tournaments[task].frame().rename(columns={"candidate": "sources"})
    orders = table.candidates(task).set_index("sources")["order"]
    ranking.insert(2, "order", [int(orders[s]) for s in ranking["sources"]])
    ranking = ranking.drop(columns="target").sort_values(
        "affinity", ascending=False, kind="stable").reset_index(drop=True)
    known = set(base.sources()) | set(base.targets())
    unknown = sorted({s for r in own if r.role == "transfer" for s in r.sources} - known)
    chosen = None if targets is None else [t for t in targets if t != task]
    warning = candidate_scale_warning(base, task, len(analysis.tournaments[task].candidates))
    for note in (warning, source_use_note(records, task)):
        if note:
            (log or print_note)(note)
    placement = place_novel_task(table, task, budget, targets=chosen, solver=solver,
                                 max_order=max_order, log=log, convention=convention)
    return NovelTaskResult(task, ranking, tuple(unknown), table, placement, analysis)
