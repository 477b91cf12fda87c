"""Run records → per-target tournaments → an :class:`AffinityTable` (affinity, quality, gain).

Candidates of a target t in a data regime R (``"1k"``, ``"16k"``, ...):

- every finished ``transfer`` record into t in R (name: sorted sources joined by ``+``);
- the ``random`` baseline record of t in R;
- ``self``: a ``("self",)`` baseline record of t in R if there is one, else t's ``task`` record
  (its fully supervised network, usually trained in regime ``full``), evaluated on the test set;
- ``pixels`` (gain reference only): the ``("pixels",)`` baseline record of t in R.

When the same candidate has several finished records, the latest (by ``finished_at``) wins and
a warning names the others. A transfer whose record names source task runs (``source_runs`` in
its config) other than the latest finished run of that task was trained on an encoder that has
since been retrained: a warning lists those transfers.
"""

from __future__ import annotations

import warnings
from collections import Counter
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass, field
from itertools import combinations

import pandas as pd
from rich.progress import Progress

from taskonomy.analysis.affinity_table import AffinityTable
from taskonomy.analysis.records import (
    RunRecord,
    TaskRunIndex,
    candidate_name,
    recency,
)
from taskonomy.analysis.winrates import PIXELS, SELF, Tournament, tournament
from taskonomy.tasks.registry import task_names


class DuplicateRunWarning(UserWarning):
    """Several finished runs claim the same candidate; the latest is used."""


class MissingTransferWarning(UserWarning):
    """A requested target lacks first-order transfers from sources that other targets have."""


class MissingBaselineWarning(UserWarning):
    """A target lacks its ``self`` or ``pixels`` baseline: its quality or gain is undefined."""


class NoLossesWarning(UserWarning):
    """Finished records without per-image losses (e.g. a failed upload) are left out."""


class StaleSourceWarning(UserWarning):
    """Transfers were trained on source task runs that have since been superseded."""


def stale_transfers(records: Iterable[RunRecord]) -> list[tuple[RunRecord, str, str, str]]:
    """Finished transfers whose recorded source run is not that task's latest finished run.

    Returns:
        ``(transfer record, source task, run it used, latest run)`` per stale source.
    """
    records = [r for r in records if r.status == "finished"]
    index = TaskRunIndex(records)
    return [(r, task, old, new) for r in records for task, old, new in index.stale_sources(r)]


def transfer_regimes(records: Iterable[RunRecord]) -> list[str]:
    """Data regimes of the transfer and baseline records, sorted."""
    return sorted({r.regime for r in records if r.role in ("transfer", "baseline")})


def choose_regime(records: Sequence[RunRecord], regime: str | None = None) -> str:
    """The data regime to analyze: ``regime`` if given, else the only one present.

    Raises:
        ValueError: No transfer records, an absent regime, or several regimes and none chosen
            (the regimes present are listed).
    """
    present = transfer_regimes(records)
    if not present:
        raise ValueError(
            "no transfer or baseline records found; analysis needs finished transfer runs "
            "(role 'transfer') into each target"
        )
    if regime is None:
        if len(present) > 1:
            raise ValueError(
                f"records hold several data regimes {present}; choose one with --regime"
            )
        return present[0]
    if regime not in present:
        raise ValueError(f"no transfer records in regime {regime!r}; regimes present: {present}")
    return regime


def _latest(found: list[RunRecord], what: str) -> RunRecord:
    if len(found) > 1:
        found = sorted(found, key=recency)
        others = ", ".join(r.run_id for r in found[:-1])
        warnings.warn(
            f"{what}: {len(found)} finished runs; using {found[-1].run_id!r}, ignoring {others}",
            DuplicateRunWarning, stacklevel=3,
        )
    return found[-1]


def candidate_records(records: Iterable[RunRecord], target: str, regime: str
                      ) -> dict[str, RunRecord]:
    """The record behind each candidate of ``target`` in ``regime`` (``pixels`` included).

    Returns:
        Candidate name → record, transfers first (by order, then name), then ``random``,
        ``self``, ``pixels`` where present.
    """
    groups: dict[str, list[RunRecord]] = {}
    task_runs: list[RunRecord] = []
    for r in records:
        if r.target != target or r.status != "finished":
            continue
        if r.role == "task":
            task_runs.append(r)
        elif r.regime == regime:
            groups.setdefault(r.candidate, []).append(r)
    if SELF not in groups and task_runs:
        # The task network is trained on the full data, whatever the transfer regime.
        full = [r for r in task_runs if r.regime == "full"] or task_runs
        groups[SELF] = full
    chosen = {name: _latest(found, f"candidate {name!r} of target {target!r}")
              for name, found in groups.items()}
    transfers = sorted((n for n in chosen if chosen[n].role == "transfer"),
                       key=lambda n: (chosen[n].order, n))
    baselines = [n for n in ("random", SELF, PIXELS) if n in chosen]
    return {name: chosen[name] for name in transfers + baselines}


def record_targets(records: Iterable[RunRecord], regime: str) -> list[str]:
    """Targets with at least one finished transfer record in ``regime``, sorted."""
    return sorted({r.target for r in records
                   if r.role == "transfer" and r.regime == regime and r.status == "finished"})


def check_task_names(names: Iterable[str], records: Iterable[RunRecord], what: str) -> None:
    """Raise if a name is neither a registered task nor a task of the records.

    Raises:
        ValueError: Names the unknown tasks and lists the valid ones.
    """
    known = list(task_names())
    seen = {r.target for r in records} | {s for r in records if r.role == "transfer"
                                          for s in r.sources}
    valid = known + sorted(seen - set(known))
    unknown = [n for n in names if n not in valid]
    if unknown:
        raise ValueError(f"unknown {what} {unknown}; valid task names: {', '.join(valid)}")


def missing_transfers(records: Sequence[RunRecord], targets: Iterable[str],
                      sources: Iterable[str], regime: str, *, max_order: int = 1
                      ) -> list[tuple[tuple[str, ...], str]]:
    """(sources, target) pairs of order ≤ ``max_order`` without a finished transfer record.

    A target among its own sources (the authors' t→t) is expected only where the records hold
    such a transfer at all: a study that runs none (the demo) misses none.
    """
    present = {(r.sources, r.target) for r in records
               if r.role == "transfer" and r.regime == regime and r.status == "finished"}
    into_itself = any(target in combo for combo, target in present)
    source_list = sorted(set(sources))
    missing = []
    for target in targets:
        for order in range(1, max_order + 1):
            for combo in combinations(source_list, order):
                if (combo, target) not in present and (into_itself or target not in combo):
                    missing.append((combo, target))
    return missing


def describe_pairs(pairs: Sequence[tuple[tuple[str, ...], str]], limit: int = 30) -> str:
    """``"a → t, a+b → t, ..."`` for messages, shortened after ``limit`` pairs."""
    text = ", ".join(f"{candidate_name(s)} → {t}" for s, t in pairs[:limit])
    if len(pairs) > limit:
        text += f", ... ({len(pairs) - limit} more)"
    return text


@dataclass
class AffinityResult:
    """The affinities of a set of run records.

    Attributes:
        table: The affinity table (contract of :mod:`taskonomy.analysis.affinity_table`).
        tournaments: Per target, its tournament (win rates, quality, gain, intervals).
        regime: The data regime analyzed.
        records: Per target, candidate name → the record used.
    """

    table: AffinityTable
    tournaments: dict[str, Tournament]
    regime: str
    records: dict[str, dict[str, RunRecord]] = field(default_factory=dict)

    def candidates_frame(self) -> pd.DataFrame:
        """All targets' candidate rows (affinity, quality, gain, CIs, images compared)."""
        frames = [t.frame() for t in self.tournaments.values()]
        return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()

    def alignment_frame(self) -> pd.DataFrame:
        """Per target: images compared, the union of keys, keys missing per candidate.

        ``n_gain_images`` counts the images the gain compares on (those ``pixels`` has).
        """
        rows = []
        for target, t in self.tournaments.items():
            rows.append({
                "target": target, "n_images": t.n_images, "n_union": t.alignment.n_union,
                "n_dropped": t.alignment.n_dropped,
                "missing": "; ".join(f"{k}: {v}" for k, v in sorted(t.alignment.missing.items())),
                "n_gain_images": t.gain_images,
            })
        return pd.DataFrame(rows)


def warn_stale_transfers(records: Sequence[RunRecord], regime: str,
                         targets: Collection[str]) -> None:
    """Warn (:class:`StaleSourceWarning`) of the transfers into ``targets`` read stale sources.

    Args:
        records: Finished run records.
        regime: The data regime analyzed.
        targets: The targets analyzed.
    """
    stale = [item for item in stale_transfers(records)
             if item[0].regime == regime and item[0].target in targets]
    if stale:
        listed = "; ".join(f"{r.run_id} ({task}: trained on {old}, latest {new})"
                           for r, task, old, new in stale[:10])
        more = f" and {len(stale) - 10} more" if len(stale) > 10 else ""
        warnings.warn(
            f"{len(stale)} task run(s) were retrained after the transfers (or self baselines) "
            f"that read them ran: {listed}{more}. For a study on one set of encoders, rerun "
            "their sweep with `taskonomy sweep run FILE --redo-stale` (or delete those run "
            "folders and rerun it)", StaleSourceWarning, stacklevel=3,
        )


def compute_affinities(records: Sequence[RunRecord], *, targets: Iterable[str] | None = None,
                       regime: str | None = None, strict: bool = False, bootstrap: int = 0,
                       level: float = 0.95, seed: int = 0, progress: bool = False,
                       check_stale: bool = True) -> AffinityResult:
    """Compute the tournament of every target and stack them into an affinity table.

    Args:
        records: Finished run records (other statuses are ignored).
        targets: Targets to analyze (default: every target with transfer records).
        regime: Data regime (default: the only one present).
        strict: Raise on mismatched sample keys instead of comparing on shared keys.
        bootstrap: Bootstrap resamples of the test images for confidence intervals (0: none).
        level: Confidence level of the intervals.
        seed: Bootstrap seed.
        progress: Show a progress bar.
        check_stale: Warn of transfers that read since-retrained sources
            (:func:`warn_stale_transfers`); off for a caller that warns once for many calls.

    Raises:
        ValueError: Unknown target names (valid names listed); a requested target without
            transfer records (the missing first-order pairs listed); a target with fewer than two
            candidates; mismatched keys in strict mode.
    """
    records = [r for r in records if r.status == "finished"]
    finished = records
    empty = [r.run_id for r in records if not r.per_image_losses and r.role != "task"]
    if empty:
        # A task run may be a source only (registered without a test); others need losses.
        warnings.warn(
            f"{len(empty)} finished run(s) have no per-image test losses and are left out: "
            f"{', '.join(empty[:10])}{' ...' if len(empty) > 10 else ''} (rerun their test, or "
            "re-log their records)", NoLossesWarning, stacklevel=2)
    records = [r for r in records if r.per_image_losses]
    regime = choose_regime(records, regime)
    available = record_targets(records, regime)
    if targets is None:
        chosen = available
    else:
        chosen = list(dict.fromkeys(targets))
        check_task_names(chosen, records, "target(s)")
        absent = [t for t in chosen if t not in available]
        if absent:
            seen_sources = sorted({s for r in records if r.role == "transfer" for s in r.sources})
            pairs = missing_transfers(records, absent, seen_sources, regime)
            raise ValueError(
                f"no transfer records into {absent} in regime {regime!r}; missing: "
                f"{describe_pairs(pairs) or 'every transfer (no sources recorded at all)'}"
            )
        seen_sources = sorted({s for r in records if r.role == "transfer"
                               and r.regime == regime for s in r.sources})
        gaps = missing_transfers(records, chosen, seen_sources, regime)
        if gaps:
            warnings.warn(
                f"{len(gaps)} first-order transfers are missing for the requested targets: "
                f"{describe_pairs(gaps)}; their tournaments leave them out",
                MissingTransferWarning, stacklevel=2,
            )
    if not chosen:
        held = Counter(r.role for r in records if r.regime == regime)
        what = ", ".join(f"{n} {role} run(s)" for role, n in sorted(held.items())) or "nothing"
        raise ValueError(
            f"no finished transfer records in regime {regime!r} (it holds {what}); win rates "
            "compare transfers into a target with its baselines: run the first-order transfer "
            "sweep (sweeps/transfers_first_order_*.yaml) first"
        )
    if check_stale:
        warn_stale_transfers(finished, regime, chosen)
    tournaments: dict[str, Tournament] = {}
    used: dict[str, dict[str, RunRecord]] = {}
    rows = []
    with Progress(disable=not progress, transient=True) as bar:
        task = bar.add_task("win rates and AHP", total=len(chosen))
        for target in chosen:
            found = candidate_records(records, target, regime)
            losses = {name: r.per_image_losses for name, r in found.items()}
            result = tournament(target, losses, strict=strict, bootstrap=bootstrap, level=level,
                                seed=seed)
            tournaments[target] = result
            used[target] = found
            frame = result.frame().rename(columns={"candidate": "sources"})
            rows.append(frame)
            bar.advance(task)
    lacking = [f"{name} → {target}" for target in chosen for name in (SELF, PIXELS)
               if name not in used[target]]
    if lacking:
        warnings.warn(
            f"{len(lacking)} baseline run(s) are missing: {', '.join(lacking)}; without its "
            "self baseline a target's quality is undefined (NaN), without its pixels baseline "
            "its gain. Run them (the transfer sweeps list them as points)",
            MissingBaselineWarning, stacklevel=2)
    table_frame = pd.concat(rows, ignore_index=True)
    columns = ["target", "sources", "affinity", "quality", "gain"]
    if bootstrap > 0:
        columns += ["affinity_low", "affinity_high"]
    table = AffinityTable.from_frame(table_frame[columns])
    return AffinityResult(table, tournaments, regime, used)
