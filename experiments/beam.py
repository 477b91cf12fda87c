"""Beam search over higher-order transfers, from first-order results (spec §4.4).

Per target, the first-order sources are ranked by their AHP affinity in the first-order
tournament (every first-order transfer into the target, ``random`` and ``self``); as in the
authors' ``ranked_first_order_transfers`` the target itself and the baselines are left out of the
ranking. Then:

- order 2 and order 3: every combination of the top-5 sources (C(5,2) = C(5,3) = 10);
- order 4: every combination of the top-6 (C(6,4) = 15);
- orders ≥ 5 (optional): beam width 1, the first k sources of the ranking.

The result is written as a W&B grid sweep file with a single parameter ``model.transfer`` whose
values are explicit ``"target:source+source"`` combinations (a grid is a product, so the
combinations themselves are the grid); the transfer CLI accepts that spelling.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Iterable, Mapping, Sequence
from itertools import combinations
from pathlib import Path
from typing import Any

import yaml

from taskonomy.analysis.affinities import (
    choose_regime,
    compute_affinities,
    record_targets,
    warn_stale_transfers,
)
from taskonomy.analysis.records import CONFIG_FILES_KEY, RunRecord
from taskonomy.datamodules.domains import atomic_write_bytes
from taskonomy.experiments.sweep_files import WANDB_PROJECT
from taskonomy.tasks.specs import BASELINES

#: Sources whose combinations make orders 2 and 3 (the authors' top-5).
TOP_LOW_ORDERS = 5
#: Sources whose combinations make order 4 (the authors' top-6).
TOP_ORDER_FOUR = 6

#: Decimal places of an affinity in the ranking: ties (equal per-image losses) sort by name, not
#: by floating-point noise in the AHP weights.
AFFINITY_DECIMALS = 9


class BeamWarning(UserWarning):
    """A target left out of the beam search (too few first-order results to rank)."""


#: Transfer CLI configs by setting, for the sweep file's command.
DEFAULT_CONFIG = "experiments/configs/transfer_cpu.yaml"


def first_order_records(records: Iterable[RunRecord]) -> list[RunRecord]:
    """Finished first-order transfers and baselines (higher orders are left out of the ranking)."""
    return [r for r in records if r.status == "finished"
            and (r.role in ("task", "baseline") or (r.role == "transfer" and r.order == 1))]


def rank_sources(records: Sequence[RunRecord], *, targets: Iterable[str] | None = None,
                 regime: str | None = None, include_target: bool = False
                 ) -> dict[str, list[str]]:
    """Per target, its first-order sources from best to worst AHP affinity.

    Args:
        records: Run records (first-order transfers into the targets, ``random``, ``self``).
        targets: Targets to rank for (default: every target with first-order transfers).
        regime: Data regime of the transfers (default: the only one present).
        include_target: Keep the target as a source of itself (the authors did not).

    The baselines are left out. The authors' ranking kept ``random`` (it entered a few of their
    top-6 sets); a random encoder as one of several sources is not a transfer this suite runs.
    Each target is ranked on its own: missing first-order transfers are named (a
    :class:`~taskonomy.analysis.affinities.MissingTransferWarning`), and by default a target
    with too few results to rank is left out with a :class:`BeamWarning` rather than stopping
    the others.

    Raises:
        ValueError: No first-order transfer records, several regimes and none chosen, a
            requested target that cannot be ranked (see
            :func:`~taskonomy.analysis.affinities.compute_affinities`), or no target ranked.
    """
    first = first_order_records(records)
    chosen_regime = choose_regime(first, regime)
    requested = targets is not None
    names = (list(dict.fromkeys(targets)) if targets is not None
             else record_targets([r for r in first if r.per_image_losses], chosen_regime))
    # One warning for all targets: ranking them one by one would repeat the scan per target.
    warn_stale_transfers(first, chosen_regime, names)
    ranking: dict[str, list[str]] = {}
    for target in names:
        try:
            result = compute_affinities(first, targets=[target], regime=chosen_regime,
                                        check_stale=False)
        except ValueError as error:
            if requested:
                raise
            warnings.warn(f"{target!r} is left out of the beam search: {error}", BeamWarning,
                          stacklevel=2)
            continue
        tournament = result.tournaments[target]
        scored = [
            (round(float(a), AFFINITY_DECIMALS), name)
            for name, a in zip(tournament.candidates, tournament.affinity, strict=True)
            if name not in BASELINES and (include_target or name != target)
        ]
        ranking[target] = [name for _, name in sorted(scored, key=lambda x: (-x[0], x[1]))]
    if not ranking:
        raise ValueError(f"no target of regime {chosen_regime!r} has first-order results enough "
                         "to rank its sources (see the warnings)")
    return ranking


def recorded_configs(records: Iterable[RunRecord], regime: str | None = None) -> list[str] | None:
    """The ``--config`` files the finished first-order transfers (of ``regime``) ran with.

    Paths inside the working directory come back relative to it, as sweep files name them.

    Returns:
        The files in order, or ``None`` when no record names its configs.

    Raises:
        ValueError: The transfers ran with different configs (each set listed).
    """
    found: set[tuple[str, ...]] = set()
    here = Path.cwd()
    for record in first_order_records(records):
        if record.role != "transfer" or (regime is not None and record.regime != regime):
            continue
        named = (record.config.get(CONFIG_FILES_KEY) if isinstance(record.config, dict)
                 else None)
        if isinstance(named, list) and named:
            paths = (Path(str(p)) for p in named)
            found.add(tuple(str(p.relative_to(here)) if p.is_relative_to(here) else str(p)
                            for p in paths))
    if len(found) > 1:
        listed = "; ".join(" + ".join(c) for c in sorted(found))
        raise ValueError(f"the first-order transfers ran with different configs ({listed}); "
                         "choose the higher orders' with --config")
    return list(found.pop()) if found else None


def beam_combinations(ranked: Sequence[str], max_order: int = 4) -> list[tuple[str, ...]]:
    """Higher-order source sets of one target from its ranked first-order sources.

    Orders 2 and 3 combine the top-5, order 4 the top-6, orders ≥ 5 take the first k sources;
    with fewer ranked sources the available ones are used. Each set is sorted; order 1 is not
    included (those are the first-order transfers already run).

    Raises:
        ValueError: ``max_order`` below 2.
    """
    if max_order < 2:
        raise ValueError(f"max order must be at least 2 (higher orders), got {max_order}")
    ranked = list(dict.fromkeys(ranked))
    out: list[tuple[str, ...]] = []
    for order in range(2, max_order + 1):
        if order <= 3:
            pool = ranked[:TOP_LOW_ORDERS]
        elif order == 4:
            pool = ranked[:TOP_ORDER_FOUR]
        else:
            if len(ranked) >= order:
                out.append(tuple(sorted(ranked[:order])))
            continue
        out.extend(tuple(sorted(c)) for c in combinations(pool, order))
    return list(dict.fromkeys(out))


def transfer_value(target: str, sources: Sequence[str]) -> str:
    """The ``model.transfer`` value of a combination: ``"target:a+b"``."""
    return f"{target}:{'+'.join(sorted(sources))}"


def beam_description(max_order: int) -> str:
    """How :func:`beam_combinations` chose the sets up to ``max_order``, in words."""
    parts = [f"order{'s 2-3' if max_order >= 3 else ' 2'} from the top-{TOP_LOW_ORDERS} sources"]
    if max_order >= 4:
        parts.append(f"order 4 from the top-{TOP_ORDER_FOUR}")
    if max_order >= 5:
        parts.append(f"order{'s 5-' + str(max_order) if max_order > 5 else ' 5'}: the top-k "
                     "sources")
    return ", ".join(parts)


def beam_sweep(transfers: dict[str, list[tuple[str, ...]]], *, name: str = "higher_order",
               config: str | Sequence[str] = DEFAULT_CONFIG, fixed: Sequence[str] = (),
               max_order: int = 4) -> dict[str, Any]:
    """The W&B grid sweep of the selected transfers (one ``model.transfer`` parameter).

    Args:
        transfers: Per target, the selected source sets.
        name: The sweep's name.
        config: The transfer config(s) of the command, in order.
        fixed: ``--key=value`` arguments every point takes after the config (the first-order
            sweep's overrides, e.g. ``--model.resolution=32``), so both orders run alike.
        max_order: The highest order selected (for the sweep's description).

    Raises:
        ValueError: No combination was selected.
    """
    configs = [config] if isinstance(config, str) else list(config)
    values = [transfer_value(t, s) for t, sets in transfers.items() for s in sets]
    if not values:
        raise ValueError(
            "the beam search selected no higher-order transfers; each target needs at least "
            "two ranked first-order sources"
        )
    sweep: dict[str, Any] = {
        "name": name,
        "description": "Higher-order transfers selected by beam search over first-order "
                       f"affinities ({beam_description(max_order)}).",
        # Runs of a sweep go to the sweep's project: W&B ignores the project that the
        # runs' own loggers name when an agent drives them.
        "project": WANDB_PROJECT,
        "program": "taskonomy",
        "method": "grid",
        "metric": {"name": "test/loss", "goal": "minimize"},
        "command": ["taskonomy", "transfer", "fit",
                    *[item for c in configs for item in ("--config", c)], *fixed, "${args}"],
        "parameters": {"model.transfer": {"values": values}},
    }
    return sweep


#: Settings the higher orders take from the first-order transfers they extend.
SHARED_SETTINGS = ("model.encoder", "model.resolution", "model.decoder_width", "model.head_width",
                   "model.lr", "data.root", "data.limit", "data.batch_size",
                   "trainer.max_epochs", "trainer.max_steps", "trainer.precision")

_ABSENT = object()


def _setting(config: Mapping[str, Any], key: str) -> Any:
    value: Any = config
    for part in key.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return _ABSENT
        value = value[part]
    return value


def settings_to_carry(records: Iterable[RunRecord], parsed: Mapping[str, Any],
                      keep: Iterable[str] = (), regime: str | None = None) -> list[str]:
    """``--key=value`` arguments that make the higher orders run like the first order.

    Args:
        records: Run records; their first-order transfers are compared.
        parsed: The config a point of the higher-order sweep resolves to.
        keep: Keys the user set for the higher orders (``--set``); they are not carried.
        regime: Compare only the first-order transfers of this data regime (the one ranked);
            ``None``: all of them.

    Returns:
        One argument per :data:`SHARED_SETTINGS` key on whose value all first-order transfers
        agree and the higher-order config differs (e.g. a first-order sweep run with
        ``--set model.resolution=32``).
    """
    from taskonomy.experiments.sweep_files import format_value

    first = [r for r in records if r.status == "finished" and r.role == "transfer"
             and r.order == 1 and isinstance(r.config, dict)
             and (regime is None or r.regime == regime)]
    kept = set(keep)
    carried = []
    for key in SHARED_SETTINGS:
        values = {json.dumps(_setting(r.config, key), sort_keys=True, default=str)
                  for r in first}
        value = _setting(first[0].config, key) if len(values) == 1 and first else _ABSENT
        if key in kept or value is _ABSENT or value == _setting(parsed, key):
            continue
        carried.append(f"--{key}={'null' if value is None else format_value(value)}")
    return carried


#: The first line of a sweep file that ``sweep beam`` wrote (it may replace only such files).
RANKING_HEADER = "# First-order ranking per target (best first), from AHP affinities:"


def ranking_comment(ranking: dict[str, list[str]]) -> str:
    """The per-target rankings as YAML comment lines (W&B rejects unknown top-level keys)."""
    lines = [RANKING_HEADER[2:]]
    lines += [f"  {t}: {', '.join(r)}" for t, r in ranking.items()]
    return "".join(f"# {line}\n" for line in lines)


def write_sweep(sweep: dict[str, Any], out: str | os.PathLike[str], header: str = "") -> Path:
    """Write a sweep file atomically (YAML, keys in insertion order, optional comment header)."""
    path = Path(out)
    text = header + yaml.safe_dump(sweep, sort_keys=False, width=100)
    atomic_write_bytes(path, text.encode("utf-8"))
    return path
