"""Run records: what every training, transfer and baseline run leaves behind for analysis.

A run writes one JSON record, atomically, at ``RUNS_DIR/<run_id>/record.json``::

    from taskonomy.analysis.records import RunRecord, write_record

    record = RunRecord(run_id="normal__from__reshading__16k", role="transfer", target="normal",
                       sources=("reshading",), regime="16k", config=resolved_config)
    write_record(record, runs_dir)                 # status "running" while it trains
    ...
    record = record.finished(metrics={"test/loss": 0.21}, per_image_losses=losses,
                             checkpoint="checkpoints/last.ckpt")
    write_record(record, runs_dir)                 # status "finished"

Roles: ``task`` (a target's own fully supervised network, no sources; its per-image test losses
are the ``self`` candidate of that target), ``transfer`` (frozen ``sources`` read out into
``target``), ``baseline`` (``sources`` is one of ``("pixels",)``, ``("random",)``, ``("self",)``).
The per-image losses are keyed by sample key, so candidates are compared image by image.
Offline W&B loses the tail of a killed run; the record is what analysis trusts.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import warnings
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pandas as pd

from taskonomy.datamodules.domains import atomic_write_bytes
from taskonomy.tasks.specs import BASELINES

#: Version of the JSON layout; readers refuse newer versions.
SCHEMA_VERSION = 1

#: File name of a record inside its run folder.
RECORD_FILE = "record.json"

ROLES = ("task", "transfer", "baseline")
STATUSES = ("running", "finished", "failed")

#: Separator of source names in a candidate name (``"depth_zbuffer+normal"``).
SOURCE_SEPARATOR = "+"

_RUN_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._=+-]*$")


def utc_now() -> str:
    """The current time as an ISO-8601 UTC string (the timestamp format of records)."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def candidate_name(sources: Iterable[str]) -> str:
    """The name of a tournament candidate: sorted source names joined by ``+``.

    Baselines keep their own name (``("self",)`` → ``"self"``).
    """
    return SOURCE_SEPARATOR.join(sorted(sources))


@dataclass(frozen=True)
class RunRecord:
    """The record of one run.

    Attributes:
        run_id: Unique id; also the run's folder name (letters, digits, ``._=+-``).
        role: ``"task"``, ``"transfer"`` or ``"baseline"``.
        target: The task the run predicts (may be a novel task not in the dictionary).
        sources: Source tasks of a transfer (sorted on construction); ``()`` for a task run;
            ``("pixels",)``, ``("random",)`` or ``("self",)`` for a baseline.
        regime: Data regime of the run, e.g. ``"full"``, ``"1k"``, ``"16k"``, or any name.
        status: ``"running"``, ``"finished"`` or ``"failed"``.
        config: The resolved configuration (JSON-serializable).
        metrics: Final metrics, keyed by logged name (``"test/loss"``).
        checkpoint: Path of the final checkpoint, or ``None``.
        per_image_losses: Test loss per sample key.
        wandb: W&B run path (``entity/project/id``) or offline run folder, or ``None``.
        started_at: ISO-8601 UTC start time.
        finished_at: ISO-8601 UTC end time, or ``None`` while running.
        error: The error message of a failed run.
        order: Number of sources (0 for tasks and baselines); derived, not set by callers.
        schema_version: Version of the JSON layout.
    """

    run_id: str
    role: str
    target: str
    sources: tuple[str, ...] = ()
    regime: str = "full"
    status: str = "running"
    config: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    checkpoint: str | None = None
    per_image_losses: dict[str, float] = field(default_factory=dict)
    wandb: str | None = None
    started_at: str = field(default_factory=utc_now)
    finished_at: str | None = None
    error: str | None = None
    order: int = field(default=0, init=False)
    schema_version: int = SCHEMA_VERSION

    def __post_init__(self) -> None:
        where = f"run record {self.run_id!r}"
        if not isinstance(self.run_id, str) or not _RUN_ID_RE.match(self.run_id):
            raise ValueError(
                f"{where}: run_id must be letters, digits and '._=+-' (it names a folder)"
            )
        if self.role not in ROLES:
            raise ValueError(f"{where}: unknown role {self.role!r}; valid roles: {ROLES}")
        if self.status not in STATUSES:
            raise ValueError(f"{where}: unknown status {self.status!r}; valid: {STATUSES}")
        if not self.target or self.target in BASELINES:
            raise ValueError(f"{where}: target must be a task name, got {self.target!r}")
        sources = tuple(sorted(str(s) for s in self.sources))
        if len(set(sources)) != len(sources):
            raise ValueError(f"{where}: duplicate sources {sources}")
        if self.role == "task" and sources:
            raise ValueError(f"{where}: a task run has no sources; use role 'transfer'")
        if self.role == "baseline" and (len(sources) != 1 or sources[0] not in BASELINES):
            raise ValueError(
                f"{where}: a baseline's sources must be one of "
                f"{[(b,) for b in BASELINES]}, got {sources}"
            )
        if self.role == "transfer":
            if not sources:
                raise ValueError(f"{where}: a transfer needs at least one source")
            if set(sources) & set(BASELINES):
                raise ValueError(
                    f"{where}: baseline names {BASELINES} are not transfer sources; "
                    "write a record with role 'baseline' instead"
                )
        if self.schema_version > SCHEMA_VERSION:
            raise ValueError(
                f"{where}: schema version {self.schema_version} is newer than this reader "
                f"({SCHEMA_VERSION}); upgrade taskonomy"
            )
        losses = {str(k): float(v) for k, v in self.per_image_losses.items()}
        bad = [k for k, v in losses.items() if not math.isfinite(v)]
        if bad:
            raise ValueError(
                f"{where}: {len(bad)} per-image losses are not finite (e.g. sample {bad[0]!r}); "
                "a diverged run should be recorded with status 'failed'"
            )
        object.__setattr__(self, "sources", sources)
        object.__setattr__(self, "per_image_losses", losses)
        object.__setattr__(self, "metrics", {str(k): _number(v) for k, v in self.metrics.items()})
        object.__setattr__(self, "order", len(sources) if self.role == "transfer" else 0)

    @property
    def candidate(self) -> str:
        """This run's name in its target's tournament (``"self"`` for a task run)."""
        if self.role == "task":
            return "self"
        return candidate_name(self.sources)

    def finished(self, *, metrics: Mapping[str, float], per_image_losses: Mapping[str, float],
                 checkpoint: str | None = None) -> RunRecord:
        """A copy of this record marked finished, with its results."""
        return dataclasses.replace(
            self, status="finished", metrics=dict(metrics),
            per_image_losses=dict(per_image_losses), checkpoint=checkpoint,
            finished_at=utc_now(), error=None,
        )

    def failed(self, error: str) -> RunRecord:
        """A copy of this record marked failed with an error message."""
        return dataclasses.replace(self, status="failed", error=error, finished_at=utc_now())

    def to_dict(self) -> dict[str, Any]:
        """The JSON-ready form of the record."""
        data = dataclasses.asdict(self)
        data["sources"] = list(self.sources)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RunRecord:
        """Build a record from its JSON form.

        Raises:
            ValueError: Missing or unknown fields, or invalid values.
        """
        data = dict(data)
        data.pop("order", None)  # derived from role and sources
        names = {f.name for f in dataclasses.fields(cls) if f.init}
        missing = sorted({"run_id", "role", "target"} - set(data))
        if missing:
            raise ValueError(f"missing fields {missing}")
        unknown = sorted(set(data) - names)
        if unknown:
            raise ValueError(f"unknown fields {unknown}; valid fields: {sorted(names)}")
        data["sources"] = tuple(data.get("sources") or ())
        return cls(**data)


def _number(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def _json_default(value: Any) -> Any:
    """Plain forms of the non-JSON values a resolved config commonly holds."""
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if hasattr(value, "item") and callable(value.item):  # numpy scalars
        return value.item()
    if isinstance(value, (set, frozenset)):
        return sorted(value)
    raise TypeError(f"object of type {type(value).__name__} is not JSON serializable")


def record_path(runs_dir: str | os.PathLike[str], run_id: str) -> Path:
    """The conventional path of a run's record: ``runs_dir/<run_id>/record.json``."""
    return Path(runs_dir) / run_id / RECORD_FILE


def write_record(record: RunRecord, runs_dir: str | os.PathLike[str]) -> Path:
    """Write a record atomically (temp file + rename) to its conventional path.

    Rewriting the record of the same run (running → finished) replaces it; a reader never sees
    a half-written file.

    Returns:
        The path of the record file.
    """
    path = record_path(runs_dir, record.run_id)
    try:
        text = json.dumps(record.to_dict(), indent=1, sort_keys=True, allow_nan=True,
                          default=_json_default)
    except TypeError as error:
        raise ValueError(
            f"run record {record.run_id!r}: config or metrics are not JSON-serializable "
            f"({error}); pass plain values (numbers, strings, lists, dicts)"
        ) from error
    atomic_write_bytes(path, text.encode("utf-8"))
    return path


def read_record(path: str | os.PathLike[str]) -> RunRecord:
    """Read one record file.

    Raises:
        FileNotFoundError: The file does not exist.
        ValueError: The file is not a valid record; the message names the file.
    """
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise ValueError(
            f"{path}: not valid JSON ({error}); rerun that run with the same arguments to "
            "rewrite it, or delete its folder"
        ) from error
    if not isinstance(data, dict):
        raise ValueError(f"{path}: a run record must be a JSON object")
    try:
        return RunRecord.from_dict(data)
    except (ValueError, TypeError) as error:
        raise ValueError(f"{path}: invalid run record: {error}") from error


#: The ``skipped`` entry of :class:`RecordScan` counting malformed record files.
UNREADABLE = "unreadable"


class UnreadableRecordWarning(UserWarning):
    """A run record file could not be read and was skipped."""


@dataclass
class RecordScan:
    """The result of scanning a runs folder.

    Attributes:
        records: Records with an accepted status, sorted by run id.
        skipped: Number of records skipped per status (``unreadable``: malformed files).
        unreadable: Why each malformed record file was skipped (the message names the file).
    """

    records: list[RunRecord]
    skipped: Counter[str]
    unreadable: list[str] = field(default_factory=list)

    def describe(self) -> str:
        """A one-line summary, e.g. ``"12 records; skipped 2 running, 1 failed"``."""
        text = f"{len(self.records)} records"
        if self.skipped:
            text += "; skipped " + ", ".join(f"{n} {s}" for s, n in sorted(self.skipped.items()))
        return text


def scan_records(runs_dir: str | os.PathLike[str], *,
                 statuses: Iterable[str] = ("finished",)) -> RecordScan:
    """Read every ``RUNS/<run_id>/record.json`` of a runs folder (hidden folders aside).

    Args:
        runs_dir: The runs folder.
        statuses: Statuses to keep; the others are counted in ``skipped``.

    A malformed record file (cut short, edited by hand) is skipped with a warning naming it,
    so one bad file does not stop every run and analysis of the folder; rerunning its run
    rewrites it.

    Raises:
        FileNotFoundError: ``runs_dir`` does not exist.
        NotADirectoryError: ``runs_dir`` is a file.
        ValueError: Two files hold the same run id.
    """
    root = Path(runs_dir)
    if root.is_file():
        raise NotADirectoryError(f"{root} is a file, not a runs folder; pass the folder that "
                                 f"training wrote (it holds <run_id>/{RECORD_FILE})")
    if not root.is_dir():
        raise FileNotFoundError(
            f"runs folder {root} does not exist; pass the folder that training wrote "
            f"(it holds <run_id>/{RECORD_FILE})"
        )
    keep = set(statuses)
    records: dict[str, tuple[Path, RunRecord]] = {}
    skipped: Counter[str] = Counter()
    unreadable: list[str] = []
    # Only RUNS/<run_id>/record.json: a runs folder nested inside (another study, a demo) is
    # not this one's, and transfers must not take their sources from it.
    for path in sorted(root.glob(f"*/{RECORD_FILE}")):
        if path.parent.name.startswith("."):
            continue  # executor state and runs set aside (.sweeps, .stale) are no results
        try:
            record = read_record(path)
        except (ValueError, OSError) as error:
            skipped[UNREADABLE] += 1
            unreadable.append(str(error))
            warnings.warn(f"skipped an unreadable run record: {error}", UnreadableRecordWarning,
                          stacklevel=2)
            continue
        if record.run_id in records:
            raise ValueError(
                f"run id {record.run_id!r} appears twice: {records[record.run_id][0]} and {path}; "
                "remove one of them"
            )
        if record.status not in keep:
            skipped[record.status] += 1
            continue
        records[record.run_id] = (path, record)
    return RecordScan([records[k][1] for k in sorted(records)], skipped, unreadable)


def recency(record: RunRecord) -> tuple[str, str]:
    """Sort key of runs that claim the same thing: the later finished one last."""
    return record.finished_at or "", record.run_id


def network_setting(record: RunRecord) -> tuple[Any, Any]:
    """``(resolution, encoder)`` of a run's model config; ``None`` where it does not say."""
    model = record.config.get("model") if isinstance(record.config, dict) else None
    model = model if isinstance(model, dict) else {}
    return model.get("resolution"), model.get("encoder")


#: Config key of a finished task run's record holding its encoder's weight fingerprint.
ENCODER_FINGERPRINT_KEY = "encoder_fingerprint"
#: Key of a record's config listing the ``--config`` files the run was started with (absolute;
#: the dumped config leaves them out): ``sweep beam`` runs higher orders with the same ones.
CONFIG_FILES_KEY = "config_files"
#: Key of a record's config naming where its plugin tasks came from (entry point, package and
#: version): a plugin's code is not part of a run's identity, so the record keeps its version.
TASK_ORIGINS_KEY = "task_origins"
#: Prefix of content fingerprints of weights (earlier versions used a file's path, size and
#: mtime, which say nothing of the weights).
WEIGHTS_FINGERPRINT = "weights:"


def latest_task_runs(records: Iterable[RunRecord], *, resolution: Any = None,
                     encoder: Any = None) -> dict[str, RunRecord]:
    """The latest finished task run of each task (the sources transfers read).

    Args:
        records: Run records of any kind.
        resolution: Only task runs trained at this resolution (``None``: any).
        encoder: Only task runs of this encoder architecture (``None``: any). One runs folder
            may hold task runs of several settings (the CPU and the paper one); a transfer
            reads the sources of its own.
    """
    latest: dict[str, RunRecord] = {}
    for record in records:
        if record.role == "task" and record.status == "finished":
            trained_at, architecture = network_setting(record)
            if resolution is not None and trained_at is not None and trained_at != resolution:
                continue
            if encoder is not None and architecture is not None and architecture != encoder:
                continue
            best = latest.get(record.target)
            if best is None or recency(record) > recency(best):
                latest[record.target] = record
    return latest


class TaskRunIndex:
    """The latest finished task runs of a set of records, per setting, computed once each.

    Args:
        records: Run records of any kind (typically one runs folder's).
    """

    def __init__(self, records: Iterable[RunRecord]) -> None:
        self.records = list(records)
        self._latest: dict[tuple[Any, Any], dict[str, RunRecord]] = {}

    def latest(self, resolution: Any = None, encoder: Any = None) -> dict[str, RunRecord]:
        """:func:`latest_task_runs` of the records, for a setting (``None``: any)."""
        key = (resolution, encoder)
        if key not in self._latest:
            self._latest[key] = latest_task_runs(self.records, resolution=resolution,
                                                 encoder=encoder)
        return self._latest[key]

    def stale_sources(self, record: RunRecord) -> list[tuple[str, str, str]]:
        """:func:`stale_sources` of a record, against the task runs of its own setting."""
        return stale_sources(record, self.latest(*network_setting(record)))


def stale_sources(record: RunRecord, latest: Mapping[str, RunRecord]
                  ) -> list[tuple[str, str, str]]:
    """The sources of a finished transfer that were retrained after it ran.

    Args:
        record: A transfer's (or ``self`` baseline's) record: its ``config.source_runs`` names
            the task runs it read.
        latest: The latest finished task run of each task in the record's setting
            (:func:`latest_task_runs` with its :func:`network_setting`).

    Returns:
        ``(source task, run it used, latest run)`` per retrained source.
    """
    used = record.config.get("source_runs") if record.role in ("transfer", "baseline") else None
    if not isinstance(used, dict) or record.sources == ("random",):
        # A random encoder is no task run: records of earlier versions named it after the
        # target, whose task run then looked like a retrained source.
        return []
    stale = []
    for task, source in sorted(used.items()):
        run_id = source.get("run_id") if isinstance(source, dict) else None
        now = latest.get(task)
        if not run_id or now is None:
            continue
        if now.run_id != run_id:
            stale.append((task, str(run_id), now.run_id))
            continue
        # The same run trained further in place (``--run_id`` with more steps): its weights
        # changed under the same id. Compared only where both sides recorded a fingerprint.
        was, is_now = str(source.get("fingerprint") or ""), encoder_fingerprint(now)
        if other_weights(was, is_now):
            stale.append((task, f"{run_id} (weights {_short(was)})",
                          f"{run_id} (weights {_short(is_now)}, trained further)"))
    return stale


def other_weights(was: str, now: str) -> bool:
    """Whether two weight fingerprints name different weights.

    Only content fingerprints (``weights:…``) compare: those of earlier versions named a
    checkpoint's path and mtime, which change when a runs folder moves, and an empty one is
    unknown.
    """
    return (was.startswith(WEIGHTS_FINGERPRINT) and now.startswith(WEIGHTS_FINGERPRINT)
            and was != now)


def encoder_fingerprint(record: RunRecord) -> str:
    """The fingerprint of a finished task run's encoder weights; ``""`` where not recorded.

    Task runs record it (``config.encoder_fingerprint``) when they finish, and transfers record
    the fingerprint of the weights they loaded, so a task run trained further under the same
    run id makes its transfers stale.
    """
    value = record.config.get(ENCODER_FINGERPRINT_KEY) if record.role == "task" else None
    return value if isinstance(value, str) else ""


def _short(fingerprint: str) -> str:
    return fingerprint.rpartition(":")[2][:8]


def read_records(runs_dir: str | os.PathLike[str]) -> list[RunRecord]:
    """Finished records of a runs folder; warns with counts of skipped unfinished ones."""
    scan = scan_records(runs_dir)
    if scan.skipped:
        warnings.warn(f"{runs_dir}: {scan.describe()}", stacklevel=2)
    return scan.records


def flatten_config(config: Mapping[str, Any], prefix: str = "config.") -> dict[str, Any]:
    """Flatten a nested config to dotted keys (lists become JSON text so cells stay scalar)."""
    flat: dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten_config(value, prefix=f"{name}."))
        elif isinstance(value, (list, tuple)):
            flat[name] = json.dumps(list(value))
        else:
            flat[name] = value
    return flat


#: Leading columns of :func:`records_to_frame`.
RECORD_COLUMNS = ("run_id", "role", "target", "sources", "candidate", "order", "regime", "status",
                  "n_images", "checkpoint", "wandb", "started_at", "finished_at", "error")


def records_to_frame(records: Iterable[RunRecord]) -> pd.DataFrame:
    """A tidy table with one row per run.

    Columns: :data:`RECORD_COLUMNS` (``sources`` joined by ``+``), then one column per final
    metric under its logged name (``test/loss``), then the flattened config
    (``config.optimizer.lr``). Rows are sorted by run id.
    """
    rows = []
    for r in records:
        row: dict[str, Any] = {
            "run_id": r.run_id, "role": r.role, "target": r.target,
            "sources": candidate_name(r.sources), "candidate": r.candidate, "order": r.order,
            "regime": r.regime, "status": r.status, "n_images": len(r.per_image_losses),
            "checkpoint": r.checkpoint, "wandb": r.wandb, "started_at": r.started_at,
            "finished_at": r.finished_at, "error": r.error,
        }
        row.update(r.metrics)
        row.update(flatten_config(r.config))
        rows.append(row)
    frame = pd.DataFrame(rows, columns=None if rows else list(RECORD_COLUMNS))
    if rows:
        extra = sorted(c for c in frame.columns if c not in RECORD_COLUMNS)
        metrics = [c for c in extra if not c.startswith("config.")]
        configs = [c for c in extra if c.startswith("config.")]
        frame = frame[list(RECORD_COLUMNS) + metrics + configs]
        frame = frame.sort_values("run_id", ignore_index=True)
    return frame
