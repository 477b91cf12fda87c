"""Run records to and from Weights & Biases: the only module of the analysis that uses W&B.

**How a run logs itself** (training and transfer code call :func:`log_record` once the run
ends, with the same record they write to disk)::

    from taskonomy.analysis.wandb_source import log_record
    log_record(wandb_run, record)   # record: a finished RunRecord

This puts the record's identity in ``config["taskonomy"]`` (run id, role, target, sources,
regime), the resolved config in the rest of ``config``, the final metrics and status in the
summary, and the per-image test losses twice: in full as the run file :data:`LOSS_FILE`
(``{sample_key: loss}``, what the readers use) and as a ``wandb.Table`` named :data:`LOSS_TABLE`
with columns :data:`LOSS_TABLE_COLUMNS` for dashboards (W&B truncates logged tables to
``wandb.Table.MAX_ROWS`` rows, so readers use the table only when the file is absent).

**How analysis reads runs back**:

- :func:`read_offline_runs` — offline run folders (``wandb/offline-run-*``), through the
  ``wandb leet inspect --summary --json RUN_DIR`` command of wandb ≥ 0.31 (config, summary and
  state from the binary ``.wandb`` log) plus the loss table file the run wrote under ``files/``.
  A killed offline run loses its tail; local run records are the trusted source.
- :func:`read_project` — an online project ``entity/project`` through the public API
  (``wandb.Api()``): config, summary and the loss table file of each run.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import tempfile
import warnings
from collections import Counter
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from taskonomy.analysis.records import RecordScan, RunRecord, recency, utc_now
from taskonomy.datamodules.domains import atomic_write_bytes

#: Name of the logged per-image loss table.
LOSS_TABLE = "per_image_losses"
#: Columns of the per-image loss table.
LOSS_TABLE_COLUMNS = ("sample_key", "loss")
#: Run file (under the run's files) holding every per-image loss as ``{sample_key: loss}``.
LOSS_FILE = "per_image_losses.json"
#: Config section holding a run's identity.
CONFIG_KEY = "taskonomy"
#: Summary keys holding record fields that are not metrics.
SUMMARY_FIELDS = {f"{CONFIG_KEY}/{name}": name
                  for name in ("status", "checkpoint", "started_at", "finished_at", "error")}
_STATE_TO_STATUS = {"finished": "finished", "failed": "failed", "crashed": "failed",
                    "killed": "failed", "preempted": "failed", "running": "running",
                    "pending": "running", "preempting": "running"}


def log_record(run: Any, record: RunRecord) -> None:
    """Log a run record to a W&B run so that :func:`read_project` can rebuild it.

    Args:
        run: A ``wandb.Run`` (online or offline), e.g. ``WandbLogger.experiment``.
        record: The run's record, usually finished.
    """
    import wandb

    # The record's own config and metric names ride along: the run's summary also holds what
    # Lightning logged (per-epoch values), and a resumed run keeps the summary of its earlier
    # attempts.
    _log_config(run, record)
    run.summary.update(dict(record.metrics))
    for key, name in SUMMARY_FIELDS.items():
        run.summary[key] = getattr(record, name)  # None clears an earlier attempt's value
    loss_file = Path(run.dir) / LOSS_FILE
    atomic_write_bytes(loss_file, json.dumps(record.per_image_losses).encode("utf-8"))
    run.save(str(loss_file), base_path=run.dir, policy="now")
    rows = [[key, loss] for key, loss in record.per_image_losses.items()]
    run.log({LOSS_TABLE: wandb.Table(columns=list(LOSS_TABLE_COLUMNS), data=rows)})


def _identity(record: RunRecord) -> dict[str, Any]:
    # The config as JSON text, which reads back with its exact types (W&B stores a whole float
    # such as 0.0 as 0); the run table filters on the config's own keys, logged beside.
    return {"run_id": record.run_id, "role": record.role, "target": record.target,
            "sources": list(record.sources), "order": record.order, "regime": record.regime,
            "started_at": record.started_at,
            "schema_version": record.schema_version,
            "config_json": json.dumps(record.config, sort_keys=True),
            "metrics": sorted(record.metrics)}


def _dashboard(record: RunRecord) -> dict[str, Any]:
    """Top-level config keys to filter and group every kind of run by in W&B's run table.

    The same keys for task runs, transfers and baselines (a transfer given as ``--transfer``
    leaves the CLI's own ``target`` and ``sources`` options empty; these name what ran).
    """
    return {"role": record.role, "target": record.target,
            "sources": "+".join(record.sources), "order": record.order,
            "regime": record.regime}


def log_identity(run: Any, record: RunRecord) -> None:
    """Log a starting run's config and identity.

    A run killed before :func:`log_record` then still reads back as a taskonomy run (running or
    failed), not as a foreign one, and its dashboard shows its settings from the start.
    """
    _log_config(run, record)


def _log_config(run: Any, record: RunRecord) -> None:
    """The run's config, its identity and the dashboard keys (the latter win a name clash)."""
    run.config.update({**record.config, CONFIG_KEY: _identity(record), **_dashboard(record)},
                      allow_val_change=True)


def record_from_wandb(config: Mapping[str, Any], summary: Mapping[str, Any], state: str,
                      losses: Mapping[str, float], where: str) -> RunRecord:
    """Rebuild a record from a W&B run's config, summary, state and loss table.

    Raises:
        ValueError: The run was not logged with :func:`log_record` (no ``config["taskonomy"]``).
    """
    identity = config.get(CONFIG_KEY)
    if not isinstance(identity, Mapping):
        raise ValueError(
            f"{where}: config has no {CONFIG_KEY!r} section; log runs with "
            "taskonomy.analysis.wandb_source.log_record"
        )
    status = _STATE_TO_STATUS.get(state, "running")
    if status == "finished":
        status = str(summary.get(f"{CONFIG_KEY}/status", status))
    names = identity.get("metrics")
    metrics = {
        key: float(value) for key, value in summary.items()
        if not key.startswith("_") and key not in SUMMARY_FIELDS and key != LOSS_TABLE
        and isinstance(value, (int, float)) and not isinstance(value, bool)
        and (not isinstance(names, list) or key in names)
    }
    own_config = identity.get("config")
    exact = identity.get("config_json")
    if isinstance(exact, str):
        try:
            own_config = json.loads(exact)
        except ValueError:
            pass  # the mapping form is the next best
    if not isinstance(own_config, Mapping):  # logged before the record's config rode along
        own_config = {k: v for k, v in config.items() if k != CONFIG_KEY and not k.startswith("_")}
    fields = {name: summary.get(key) for key, name in SUMMARY_FIELDS.items()
              if name != "status" and summary.get(key) is not None}
    if "started_at" not in fields and isinstance(identity.get("started_at"), str):
        fields["started_at"] = identity["started_at"]  # logged at the start: killed runs too
    try:
        return RunRecord(
            run_id=str(identity["run_id"]), role=str(identity["role"]),
            target=str(identity["target"]), sources=tuple(identity.get("sources") or ()),
            regime=str(identity.get("regime", "full")), status=status,
            config=dict(own_config), metrics=metrics, per_image_losses=dict(losses),
            wandb=where, **fields,
        )
    except (KeyError, TypeError, ValueError) as error:
        raise ValueError(f"{where}: cannot rebuild a run record: {error}") from error


class IncompleteRunError(ValueError):
    """A run's per-image losses cannot be read back whole."""


def _read_loss_table(path: Path, summary: Mapping[str, Any]) -> dict[str, float]:
    data = json.loads(path.read_text(encoding="utf-8"))
    columns = data.get("columns", [])
    if list(columns) != list(LOSS_TABLE_COLUMNS):
        raise ValueError(f"{path}: loss table columns {columns}, expected {LOSS_TABLE_COLUMNS}")
    rows = data.get("data", [])
    entry = summary.get(LOSS_TABLE)
    logged = entry.get("nrows") if isinstance(entry, Mapping) else None
    if isinstance(logged, int) and logged != len(rows):
        # W&B keeps at most wandb.Table.MAX_ROWS rows of a logged table, silently.
        raise IncompleteRunError(
            f"{path}: the loss table holds {len(rows)} of the run's {logged} per-image losses "
            f"(W&B truncates logged tables) and the run has no {LOSS_FILE}; read this run from "
            "its local record instead"
        )
    return {str(key): float(loss) for key, loss in rows}


def _read_loss_file(path: Path) -> dict[str, float]:
    data = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object {{sample_key: loss}}")
    return {str(key): float(loss) for key, loss in data.items()}


def _table_path(summary: Mapping[str, Any]) -> str | None:
    entry = summary.get(LOSS_TABLE)
    if isinstance(entry, Mapping) and isinstance(entry.get("path"), str):
        return str(entry["path"])
    return None


# ---------------------------------------------------------------------------------- offline
def inspect_offline_run(run_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """The output of ``wandb leet inspect --summary --json RUN_DIR`` as a dict.

    Raises:
        FileNotFoundError: ``run_dir`` does not exist.
        ValueError: The command failed (its message is included) or printed no JSON.
    """
    path = Path(run_dir)
    if not path.exists():
        raise FileNotFoundError(f"offline W&B run folder {path} does not exist")
    command = [sys.executable, "-m", "wandb", "leet", "inspect", "--summary", "--json", str(path)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)
    if done.returncode != 0:
        from importlib.metadata import version

        installed = version("wandb")
        major_minor = tuple(int(p) for p in installed.split(".")[:2] if p.isdigit())
        cause = (f"this wandb is {installed}; reading offline runs needs wandb >= 0.31"
                 if major_minor < (0, 31) else
                 "the run's .wandb log is damaged or not a W&B log (a run killed while "
                 "writing can lose its tail); leave the folder out, or rerun that run")
        raise ValueError(
            f"`wandb leet inspect` failed on {path} (exit {done.returncode}): "
            f"{done.stderr.strip()[-500:]}; {cause}"
        )
    try:
        result = json.loads(done.stdout)
    except json.JSONDecodeError as error:
        raise ValueError(f"`wandb leet inspect` printed no JSON for {path}: {error}") from error
    if not isinstance(result, dict):
        raise ValueError(f"`wandb leet inspect` printed unexpected JSON for {path}")
    return result


def read_offline_run(run_dir: str | os.PathLike[str]) -> RunRecord:
    """Rebuild the record of one offline W&B run folder.

    Raises:
        FileNotFoundError: The folder or its loss table file is missing.
        ValueError: The run cannot be inspected or was not logged with :func:`log_record`.
    """
    path = Path(run_dir)
    info = inspect_offline_run(path)
    summary = info.get("summary") or {}
    losses: dict[str, float] = {}
    table = _table_path(summary)
    if (path / "files" / LOSS_FILE).is_file():
        losses = _read_loss_file(path / "files" / LOSS_FILE)
    elif table is not None:
        table_file = path / "files" / table
        if not table_file.is_file():
            raise FileNotFoundError(f"{path}: loss table {table_file} is missing")
        losses = _read_loss_table(table_file, summary)
    return record_from_wandb(info.get("config") or {}, summary, str(info.get("state", "")),
                             losses, str(path))


def find_offline_runs(path: str | os.PathLike[str]) -> list[Path]:
    """Offline run folders (holding a ``.wandb`` log) under ``path``, or ``path`` itself."""
    root = Path(path)
    if not root.exists():
        raise FileNotFoundError(f"W&B folder {root} does not exist")
    if any(root.glob("*.wandb")):
        return [root]
    # A wandb folder, a run folder (RUN/wandb/...) or a runs folder (RUNS/RUN/wandb/...); not
    # deeper, so a runs folder nested inside (a demo's) is not read as this one's.
    logs = [log for pattern in ("*/*.wandb", "wandb/*/*.wandb", "*/wandb/*/*.wandb")
            for log in root.glob(pattern)]
    return sorted({log.parent for log in logs
                   if not log.parent.is_symlink() and log.parent.name != "latest-run"
                   # runs set aside (RUNS/.stale) and other hidden folders are no results
                   and not any(part.startswith(".")
                               for part in log.parent.relative_to(root).parts)})


def read_offline_runs(path: str | os.PathLike[str], *,
                      statuses: Iterable[str] = ("finished",),
                      progress: bool = False) -> RecordScan:
    """Records of every offline run under ``path`` (a ``wandb`` folder or one run folder).

    Runs not logged with :func:`log_record` are counted as ``"foreign"`` in ``skipped``. Each
    run is read by a ``wandb`` subprocess (about a second); several run at once.

    Args:
        path: The folder.
        statuses: Statuses to keep; others are counted in ``skipped``.
        progress: Show a progress bar.
    """
    from concurrent.futures import ThreadPoolExecutor

    from rich.progress import Progress

    folders = find_offline_runs(path)

    def attempt(folder: Path) -> tuple[RunRecord | None, Exception | None]:
        try:
            return read_offline_run(folder), None
        except Exception as error:  # noqa: BLE001 - handed to _collect, which names it
            return None, error

    results = []
    with (ThreadPoolExecutor(max(1, min(4, os.cpu_count() or 1))) as pool,
          Progress(disable=not progress, transient=True) as bar):
        task = bar.add_task("reading offline W&B runs", total=len(folders))
        for result in pool.map(attempt, folders):
            results.append(result)
            bar.advance(task)

    def replay(record: RunRecord | None, error: Exception | None) -> RunRecord:
        if error is not None:
            raise error
        assert record is not None
        return record

    return _collect(((str(folder), lambda r=r, e=e: replay(r, e))
                     for folder, (r, e) in zip(folders, results, strict=True)), statuses)


# ----------------------------------------------------------------------------------- online
def read_project(project: str, *, api: Any = None, statuses: Iterable[str] = ("finished",)
                 ) -> RecordScan:
    """Records of the runs of an online W&B project through the public API.

    Args:
        project: ``entity/project``.
        api: A ``wandb.Api`` (created when ``None``; needs a login or ``WANDB_API_KEY``).
        statuses: Statuses to keep; others are counted in ``skipped``.

    Raises:
        ValueError: ``project`` is not ``entity/project``, or W&B has no API key here.
    """
    if project.count("/") != 1 or not all(project.split("/")):
        raise ValueError(f"W&B project must be 'entity/project', got {project!r}")
    if api is None:
        import wandb

        try:
            api = wandb.Api()
        except wandb.errors.UsageError as error:  # no key: a setup step, not a bug
            raise ValueError(f"reading the W&B project {project!r} needs a W&B login ({error}): "
                             "run `wandb login` or set WANDB_API_KEY; runs logged offline are "
                             "read with --wandb-offline RUNS instead") from None

    keep = set(statuses)

    def rebuild(run: Any) -> RunRecord:
        summary = dict(getattr(run.summary, "_json_dict", run.summary))
        config = dict(run.config)
        where = "/".join(run.path)
        # Identity and status first: a foreign run, or one whose status is not kept (crashed,
        # still running), needs no download, and may have no loss file at all.
        shell = record_from_wandb(config, summary, str(run.state), {}, where)
        if shell.status not in keep:
            return shell
        table = _table_path(summary)
        try:
            # Asked for by name, the server lists a missing file too, with an md5 of "0".
            found = [f for f in run.files(names=[LOSS_FILE])
                     if getattr(f, "name", None) == LOSS_FILE and getattr(f, "md5", None) != "0"]
            with tempfile.TemporaryDirectory() as tmp:
                if found:
                    found[0].download(root=tmp, replace=True)
                    losses = _read_loss_file(Path(tmp) / LOSS_FILE)
                elif table is not None:
                    run.file(table).download(root=tmp, replace=True)
                    losses = _read_loss_table(Path(tmp) / table, summary)
                else:
                    raise IncompleteRunError(
                        f"{where}: the run has neither {LOSS_FILE} nor a {LOSS_TABLE} table; "
                        "read it from its local record instead")
        except IncompleteRunError:
            raise
        except Exception as error:  # noqa: BLE001 - one unreadable run must not stop the scan
            raise IncompleteRunError(
                f"{where}: its per-image losses could not be read "
                f"({type(error).__name__}: {error}); read it from its local record instead"
            ) from error
        return dataclasses.replace(shell, per_image_losses=losses)

    return _collect(((f"{project}/{run.id}", lambda run=run: rebuild(run))
                     for run in api.runs(project, lazy=False)), keep)


def _started_before(attempt: RunRecord, finished: RunRecord, read_at: str) -> bool:
    """Whether an unfinished attempt started before a finished one ended (it is superseded).

    An attempt whose identity has no start time (logged by an earlier version) is rebuilt with
    the time of reading (``read_at`` or later): it counts as superseded, as nothing tells it
    apart from an attempt killed before the finished one.
    """
    if finished.finished_at is None or attempt.started_at >= read_at:
        return True
    return attempt.started_at < finished.finished_at


def _collect(readers: Iterable[tuple[str, Any]], statuses: Iterable[str] = ("finished",)
             ) -> RecordScan:
    keep = set(statuses)
    read_at = utc_now()
    records: dict[str, RunRecord] = {}
    skipped: Counter[str] = Counter()
    #: The attempts not kept, per run id (one killed before a later attempt of its run
    #: finished is superseded, not running).
    left: dict[str, list[RunRecord]] = {}
    first_error: Exception | None = None
    for where, read in readers:
        try:
            record = read()
        except IncompleteRunError as error:
            warnings.warn(str(error), stacklevel=2)
            skipped["incomplete"] += 1
            continue
        except (ValueError, FileNotFoundError) as error:
            if f"no {CONFIG_KEY!r} section" in str(error):
                skipped["foreign"] += 1  # a run of the project that is not a taskonomy run
                continue
            # One unreadable run (a corrupt log, a record that cannot be rebuilt) must not stop
            # the analysis of hundreds of others; it is named and counted.
            if not skipped["unreadable"]:
                first_error = error
            warnings.warn(f"{where}: skipped, unreadable: {error}", stacklevel=2)
            skipped["unreadable"] += 1
            continue
        if record.status not in keep:
            left.setdefault(record.run_id, []).append(record)
            continue
        earlier = records.get(record.run_id)
        if earlier is not None:
            # The same run trained again (deleted record, sweep agents' own W&B ids, a redone
            # stale transfer): the later finished one counts.
            skipped["superseded"] += 1
            if recency(record) < recency(earlier):
                continue
        records[record.run_id] = record
    for run_id, attempts in left.items():
        for attempt in attempts:
            kept = records.get(run_id)
            superseded = kept is not None and _started_before(attempt, kept, read_at)
            skipped["superseded" if superseded else attempt.status] += 1
    if not records and skipped["unreadable"] and sum(skipped.values()) == skipped["unreadable"]:
        # Not one run could be read: a tool problem (e.g. an old wandb), not a corrupt run.
        raise ValueError(f"no run could be read; the first error: {first_error}")
    return RecordScan([records[k] for k in sorted(records)], skipped)
